/* Example of a program qosvisor refuses: it loops over the header bytes, and DPDK's verifier
 * accepts no backward jump. Loading it shows the verifier's reason and instruction number. */
#include "ebpf_abi.h"

QV_EBPF_PROGRAM(refused_loop) {
  qv_u32 sum = 0;
  /* The bound comes from the packet, so the compiler cannot unroll this into straight code. */
  for (qv_u32 i = 0; i < ctx->hdr_len && i < QV_EBPF_HDR_BYTES; ++i) sum += ctx->hdr[i];
  return QV_EBPF_RESULT(sum & 1, 0, 0);
}
