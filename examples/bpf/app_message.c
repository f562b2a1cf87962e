/* Example eBPF program: read an application RPC header at the start of a UDP payload and report
 * its message id and total size, so srpt can rank by bytes left; small messages get queue 0. */
#include "ebpf_abi.h"

#define IPPROTO_UDP 17

/* The application's header, big-endian, first in every datagram of a message:
 *   u16 magic = 0x5156 ('QV')   u16 flags (unused here)
 *   u32 message id              u32 message length in bytes (whole message, all datagrams) */
#define APP_MAGIC 0x5156
#define APP_HEADER_LEN 12
#define SMALL_MESSAGE_BYTES (16 * 1024)

/* Loads assembled byte by byte: no alignment assumptions, and no bswap helper needed. */
static inline __attribute__((always_inline)) qv_u32 be16_at(const qv_u8* p) {
  return ((qv_u32)p[0] << 8) | p[1];
}
static inline __attribute__((always_inline)) qv_u32 be32_at(const qv_u8* p) {
  return ((qv_u32)p[0] << 24) | ((qv_u32)p[1] << 16) | ((qv_u32)p[2] << 8) | p[3];
}

QV_EBPF_PROGRAM(app_message) {
  if (ctx->ip_proto != IPPROTO_UDP || ctx->payload_len < APP_HEADER_LEN) return QV_EBPF_PASS;
  const qv_u32 off = ctx->payload_offset;
  /* The header must lie in the copied bytes; QV_EBPF_HDR_AT is the form of &hdr[off] that DPDK's
   * verifier can prove stays inside the context. */
  if (off + APP_HEADER_LEN > ctx->hdr_len) return QV_EBPF_PASS;
  const qv_u8* h = QV_EBPF_HDR_AT(ctx, off);
  if (be16_at(h) != APP_MAGIC) return QV_EBPF_PASS;
  const qv_u32 id = be32_at(h + 4);
  const qv_u32 length = be32_at(h + 8);
  const qv_u32 queue = length != 0 && length <= SMALL_MESSAGE_BYTES ? 0 : QV_EBPF_KEEP_QUEUE;
  return QV_EBPF_RESULT(queue, QV_EBPF_SIZE_KIB(length), id);
}
