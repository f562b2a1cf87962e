/* Example showing that writing to the context is harmless: the program gets a per-packet copy,
 * so zeroing its header bytes changes nothing in the frame that is forwarded. */
#include "ebpf_abi.h"

QV_EBPF_PROGRAM(writes_context) {
  /* DPDK's verifier allows stores through the argument; the cast away from const is the point. */
  struct qv_ebpf_ctx* scratch = (struct qv_ebpf_ctx*)ctx;
  scratch->dst_port = 0;
  scratch->wire_len = 0;
#pragma unroll
  for (int i = 0; i < 64; i += 8) *(qv_u64*)(scratch->hdr + i) = 0;
  return QV_EBPF_RESULT(3, 0, 0);
}
