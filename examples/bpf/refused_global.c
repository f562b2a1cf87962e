/* Example of a program qosvisor refuses: it counts packets in a global variable. Programs get no
 * globals and no maps (DPDK's rte_bpf has neither); per-packet state lives in locals. */
#include "ebpf_abi.h"

static qv_u64 packets_seen;

QV_EBPF_PROGRAM(refused_global) {
  packets_seen++;
  return QV_EBPF_RESULT(packets_seen & 1, 0, 0);
}
