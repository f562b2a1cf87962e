/* The contract between qosvisor and a user's eBPF message-identification program: the read-only
 * context the program gets per packet and how its 64-bit return value is read. C, for both sides.
 */
#ifndef QOSVISOR_VSWITCH_EBPF_ABI_H_
#define QOSVISOR_VSWITCH_EBPF_ABI_H_

/*
 * Writing a program
 * -----------------
 *   #include "ebpf_abi.h"
 *   QV_EBPF_PROGRAM(classify) { ... return QV_EBPF_PASS; }
 * compiled with `clang -target bpf -O2 -g -c prog.c -o prog.o`. qosvisor opens the object with
 * libbpf (no kernel involved) and runs it with DPDK 22.11's rte_bpf, JIT-compiled to x86-64.
 *
 * What DPDK's verifier accepts (anything else is refused at load, with the instruction number):
 *   - straight-line code and forward jumps only: no loops (unroll with `#pragma unroll` and a
 *     constant bound), no bpf-to-bpf calls (mark helpers `static inline`);
 *   - no maps, no global or static variables, no string/array constants (.rodata, .data, .bss);
 *   - no helper calls;
 *   - reads of `ctx` only inside the struct. For a variable offset into the header copy use
 *     QV_EBPF_HDR_AT(ctx, off) after checking `off + n <= ctx->hdr_len`: the verifier bounds an
 *     AND mask but learns only unsigned ranges from comparisons, and needs both, so a plain
 *     `if (off > N) return` is not enough (it reports "memory boundary violation").
 *
 * The context is a copy made for this packet. Writing to it is harmless (the packet cannot be
 * changed from here) but pointless: nothing reads it back.
 *
 * Multi-byte fields of the context are in host byte order; hdr[] holds the frame's first bytes
 * exactly as on the wire (network byte order).
 */

typedef __UINT8_TYPE__ qv_u8;
typedef __UINT16_TYPE__ qv_u16;
typedef __UINT32_TYPE__ qv_u32;
typedef __UINT64_TYPE__ qv_u64;

/* Declares a program: QV_EBPF_PROGRAM(classify) { ... return QV_EBPF_PASS; } puts function
 * `classify(const struct qv_ebpf_ctx *ctx)` in ELF section "qosvisor", where libbpf finds it. */
#define QV_EBPF_PROGRAM(name) \
  __attribute__((section("qosvisor"), used)) qv_u64 name(const struct qv_ebpf_ctx* ctx)

/* How many leading bytes of the frame the context carries: Ethernet + VLAN + IPv6 + TCP with
 * options still leaves room for an application header. */
#define QV_EBPF_HDR_BYTES 128 /* a power of two: QV_EBPF_HDR_AT masks with it */
#define QV_EBPF_HDR_SLACK 16

struct qv_ebpf_ctx {
  qv_u32 wire_len;    /* bytes of the whole frame */
  qv_u32 hdr_len;     /* valid bytes in hdr[]: min(wire_len, QV_EBPF_HDR_BYTES) */
  qv_u32 payload_len; /* bytes after the L4 header (0 when there is no L4 header) */
  qv_u16 ether_type;  /* after any VLAN tag, e.g. 0x0800 */
  qv_u16 vlan_tci;    /* 0 unless has_vlan */
  qv_u16 l3_offset;   /* offsets into the frame (and into hdr[] when < hdr_len); 0 = absent */
  qv_u16 l4_offset;
  qv_u16 payload_offset;
  qv_u16 src_port; /* TCP/UDP/Homa; 0 otherwise */
  qv_u16 dst_port;
  qv_u8 has_vlan;   /* 1 when the frame carried an 802.1Q tag */
  qv_u8 ip_version; /* 4, 6, or 0 for non-IP */
  qv_u8 ip_proto;   /* 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 146 Homa, ... */
  qv_u8 ip_tos;     /* IPv4 TOS / IPv6 traffic class */
  qv_u8 tcp_flags;
  qv_u8 parse_ok; /* 1 when every header the frame announced was read; 0 when truncated
                     or malformed (the fields above then describe the layers before) */
  qv_u32 ip4_src; /* IPv4 addresses; 0 for IPv6 */
  qv_u32 ip4_dst;
  /* The frame's first hdr_len bytes, then zeros. Starts at offset 40 (8-byte aligned). The
   * QV_EBPF_HDR_SLACK bytes past QV_EBPF_HDR_BYTES are always zero: they let a read of up to
   * that many bytes at QV_EBPF_HDR_AT(ctx, any offset) stay inside the context. */
  qv_u8 hdr[QV_EBPF_HDR_BYTES + QV_EBPF_HDR_SLACK];
};

/* &hdr[off], in the form DPDK's verifier can prove in bounds for reads of up to
 * QV_EBPF_HDR_SLACK bytes. The mask changes nothing once `off + n <= ctx->hdr_len` holds. */
#define QV_EBPF_HDR_AT(ctx, off) ((ctx)->hdr + ((off) & (QV_EBPF_HDR_BYTES - 1)))

/*
 * The result (the program's return value, 64 bits):
 *   bits  0-15  queue / class id to put the packet in; QV_EBPF_KEEP_QUEUE (0xFFFF) keeps the one
 *               the flow table chose
 *   bits 16-31  message size hint in KiB, rounded up (0 = unknown; 0xFFFF means >= 64 MiB - 1 KiB)
 *   bits 32-63  application message id (0 = none: qosvisor falls back to one message per
 *               datagram). Ids are per flow: qosvisor mixes in the 5-tuple, so two clients both
 *               sending message 7 do not share a queue.
 * Return QV_EBPF_PASS to change nothing.
 */
#define QV_EBPF_KEEP_QUEUE 0xFFFFu
#define QV_EBPF_RESULT(queue, size_kib, message_id)                       \
  (((qv_u64)((queue)&0xFFFFu)) | (((qv_u64)((size_kib)&0xFFFFu)) << 16) | \
   (((qv_u64)((message_id)&0xFFFFFFFFu)) << 32))
#define QV_EBPF_PASS QV_EBPF_RESULT(QV_EBPF_KEEP_QUEUE, 0, 0)

/* Bytes -> the size hint field, rounded up and saturated. */
#define QV_EBPF_SIZE_KIB(bytes) \
  ((qv_u64)(bytes) >= 0xFFFFull * 1024 ? 0xFFFFu : (qv_u32)(((qv_u64)(bytes) + 1023) / 1024))

#endif /* QOSVISOR_VSWITCH_EBPF_ABI_H_ */
