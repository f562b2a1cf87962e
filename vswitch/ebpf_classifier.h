// The eBPF message-identification hook: a user's program, compiled with `clang -target bpf`, is
// opened with libbpf (no kernel) and run per packet by DPDK's rte_bpf, JIT-compiled on x86-64.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "common/status.h"
#include "vswitch/ebpf_abi.h"
#include "vswitch/message_identifier.h"
#include "vswitch/packet_parser.h"

struct rte_bpf;

namespace qosvisor::vswitch {

// What a program sees (see ebpf_abi.h): a per-packet copy, never the mbuf, because DPDK 22.11's
// verifier does not stop a program from writing through its argument.
using EbpfContext = qv_ebpf_ctx;
inline constexpr uint32_t kEbpfHeaderBytes = QV_EBPF_HDR_BYTES;
inline constexpr uint16_t kEbpfKeepQueue = QV_EBPF_KEEP_QUEUE;

// The ABI is shared with C programs compiled for another target; pin its layout here.
static_assert(sizeof(EbpfContext) == 184, "ebpf_abi.h: qv_ebpf_ctx layout changed");
static_assert(offsetof(EbpfContext, ip4_src) == 32, "ebpf_abi.h: qv_ebpf_ctx layout changed");
static_assert(offsetof(EbpfContext, hdr) == 40, "ebpf_abi.h: qv_ebpf_ctx layout changed");

// Fills `ctx` for one frame. `parse_ok` is whether ParsePacket returned kOk. Bytes of hdr[] past
// the frame (and the slack) are zeroed so that a program reading past hdr_len sees the same thing
// every time, not the previous packet.
inline void FillEbpfContext(const uint8_t* frame, uint32_t length, const ParsedPacket& p,
                            bool parse_ok, EbpfContext& ctx) {
  const uint32_t copied = length < kEbpfHeaderBytes ? length : kEbpfHeaderBytes;
  ctx.wire_len = length;
  ctx.hdr_len = copied;
  ctx.payload_len =
      p.payload_offset != 0 && length > p.payload_offset ? length - p.payload_offset : 0;
  ctx.ether_type = p.ether_type;
  ctx.vlan_tci = p.vlan_tci;
  ctx.l3_offset = p.l3_offset;
  ctx.l4_offset = p.l4_offset;
  ctx.payload_offset = p.payload_offset;
  ctx.src_port = p.src_port;
  ctx.dst_port = p.dst_port;
  ctx.has_vlan = p.has_vlan ? 1 : 0;
  ctx.ip_version = p.ip_version;
  ctx.ip_proto = p.ip_proto;
  ctx.ip_tos = p.ip_tos;
  ctx.tcp_flags = p.tcp_flags;
  ctx.parse_ok = parse_ok ? 1 : 0;
  ctx.ip4_src = p.ip4_src;
  ctx.ip4_dst = p.ip4_dst;
  if (copied == kEbpfHeaderBytes) [[likely]] {
    // Constant sizes: the compiler emits a few vector moves instead of calling memcpy/memset.
    std::memcpy(ctx.hdr, frame, kEbpfHeaderBytes);
    std::memset(ctx.hdr + kEbpfHeaderBytes, 0, sizeof(ctx.hdr) - kEbpfHeaderBytes);
  } else {
    if (copied != 0) std::memcpy(ctx.hdr, frame, copied);  // an empty frame may have no buffer
    std::memset(ctx.hdr + copied, 0, sizeof(ctx.hdr) - copied);
  }
}

// A program's result, decoded (encoding in ebpf_abi.h).
struct EbpfDecision {
  uint16_t queue = kEbpfKeepQueue;  // kEbpfKeepQueue: keep the flow table's queue/class
  uint32_t size_hint = 0;           // bytes (from the KiB hint), 0 = unknown
  uint32_t app_message_id = 0;      // 0 = none

  bool sets_queue() const { return queue != kEbpfKeepQueue; }
  bool has_message() const { return app_message_id != 0; }
};

inline EbpfDecision DecodeEbpfResult(uint64_t result) {
  EbpfDecision d;
  d.queue = static_cast<uint16_t>(result & 0xFFFF);
  d.size_hint = static_cast<uint32_t>((result >> 16) & 0xFFFF) * 1024u;
  d.app_message_id = static_cast<uint32_t>(result >> 32);
  return d;
}

// The message of a packet per the program. Application ids are only unique per sender, so the
// 5-tuple hash is mixed in; ids keep their top two bits zero, a kind the built-in identifiers
// (Homa, tcp-gap, datagram: kinds 1-3) never use, so they cannot collide with them. Returns id 0
// when the program named no message: the caller then falls back to MessageIdentifier (kEbpf).
inline MessageIdentity EbpfMessageIdentity(const EbpfDecision& d, const ParsedPacket& p) {
  MessageIdentity m;
  if (!d.has_message()) return m;
  uint64_t h = FlowHash(p) ^ (uint64_t{d.app_message_id} * 0x9E3779B97F4A7C15ull);
  h = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  m.id = h & ((1ull << 62) - 1);
  if (m.id == 0) m.id = 1;  // 0 means "no message" to callers
  m.size = d.size_hint;
  return m;
}

class EbpfClassifier {
 public:
  // Opens `object_path` (an ELF object from `clang -target bpf -O2 -c`) and loads the program
  // named `program` (function name, or else ELF section name; empty = the first program) into
  // rte_bpf. Control path only, one Load at a time: it briefly redirects DPDK's and libbpf's
  // logs (process-wide) to capture why a program was refused, and the message it returns
  // includes that text; another thread logging through rte_log meanwhile lands in that text.
  static Result<std::unique_ptr<EbpfClassifier>> Load(const std::string& object_path,
                                                      const std::string& program);

  ~EbpfClassifier();
  EbpfClassifier(const EbpfClassifier&) = delete;
  EbpfClassifier& operator=(const EbpfClassifier&) = delete;

  // True when the program runs as native x86-64 code; false means rte_bpf_exec interprets it
  // (about 10x slower), which Load reports in its log.
  bool jitted() const { return jit_ != nullptr; }
  const std::string& program_name() const { return program_name_; }
  const std::string& section_name() const { return section_name_; }
  uint32_t instruction_count() const { return instruction_count_; }

  // The per-packet call. `ctx` is scratch: the program may legally write to it, which is why it
  // is not const and why it must be a copy (FillEbpfContext), never packet memory. Thread-safe:
  // the program keeps no state, so several lcores may run one classifier at once.
  uint64_t Run(EbpfContext& ctx) const {
    if (jit_ != nullptr) [[likely]]
      return jit_(&ctx);
    return RunInterpreted(ctx);
  }

  // rte_bpf_exec: the interpreter, for comparison (benchmark) and when there is no JIT.
  uint64_t RunInterpreted(EbpfContext& ctx) const;

 private:
  EbpfClassifier() = default;

  rte_bpf* bpf_ = nullptr;
  uint64_t (*jit_)(void*) = nullptr;
  std::string program_name_;
  std::string section_name_;
  uint32_t instruction_count_ = 0;
};

}  // namespace qosvisor::vswitch
