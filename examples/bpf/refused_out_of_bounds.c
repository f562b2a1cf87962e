/* Example of a program qosvisor refuses: it indexes the header copy with an offset bounded only
 * by a comparison, which DPDK's verifier cannot use to prove the read stays in the context. The
 * fix is QV_EBPF_HDR_AT(ctx, off), as in app_message.c. */
#include "ebpf_abi.h"

QV_EBPF_PROGRAM(refused_out_of_bounds) {
  const qv_u32 off = ctx->payload_offset;
  if (off >= QV_EBPF_HDR_BYTES) return QV_EBPF_PASS;
  return QV_EBPF_RESULT(ctx->hdr[off] & 3, 0, 0);
}
