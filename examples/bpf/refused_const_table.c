/* Example of a program qosvisor refuses: its lookup table is a constant array, which the compiler
 * puts in .rodata; programs get no globals, constant or not. Write the table as a switch. */
#include "ebpf_abi.h"

static const qv_u16 kQueueByPrecedence[8] = {1, 1, 2, 2, 0, 0, 0, 0};

QV_EBPF_PROGRAM(refused_const_table) {
  return QV_EBPF_RESULT(kQueueByPrecedence[(ctx->ip_tos >> 5) & 7], 0, 0);
}
