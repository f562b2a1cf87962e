// Homa, tcp-gap and datagram message identification.
#include "vswitch/message_identifier.h"

#include <cstring>

namespace qosvisor::vswitch {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr uint8_t kTcpFin = 0x01, kTcpRst = 0x04;
// Ids of different kinds never collide: the top two bits say which kind made them.
constexpr uint64_t kKindHoma = 1ull << 62, kKindTcp = 2ull << 62, kKindDatagram = 3ull << 62;
constexpr uint64_t kIdMask = (1ull << 62) - 1;

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + kGolden + (h << 6) + (h >> 2);
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 32);
}

// Both addresses in one word for IPv4 (exact), hashed for IPv6.
uint64_t AddressWord(const ParsedPacket& p) {
  if (p.ip_version == 4) return uint64_t{p.ip4_src} << 32 | p.ip4_dst;
  uint64_t words[4];
  std::memcpy(words, p.ip6_src, 16);
  std::memcpy(words + 2, p.ip6_dst, 16);
  return Mix(Mix(Mix(words[0], words[1]), words[2]), words[3]);
}

// Hashes two words with independent multiplies, so that the latency is one multiply, not a
// chain of them: every packet of an uplink class pays it. For a fixed `a`, distinct `b` give
// distinct results (multiplying by an odd constant and the final xorshift are invertible).
uint64_t Combine(uint64_t a, uint64_t b) {
  const uint64_t h = (a * kGolden) ^ (b * 0xff51afd7ed558ccdull);
  return h ^ (h >> 29);
}

}  // namespace

uint64_t FlowHash(const ParsedPacket& p) {
  const uint64_t ports_proto =
      uint64_t{p.ip_proto} << 32 | uint64_t{p.src_port} << 16 | p.dst_port;
  return Combine(AddressWord(p), ports_proto);
}

MessageIdentity MessageIdentifier::Identify(MessageMode mode, const ParsedPacket& p,
                                            uint32_t wire_len, uint64_t idle_tsc,
                                            uint64_t now_tsc) {
  switch (mode) {
    case MessageMode::kHoma:
      if (p.ip_proto == kIpProtoHoma && p.homa_type == kHomaData) return Homa(p, wire_len);
      break;
    case MessageMode::kTcpGap:
      if (p.ip_proto == 6 && p.payload_offset != 0) return TcpGap(p, wire_len, idle_tsc, now_tsc);
      break;
    case MessageMode::kDatagram:
    case MessageMode::kEbpf:  // the eBPF hook fills the identity itself; this is its fallback
      break;
  }
  return Datagram(wire_len);
}

MessageIdentity MessageIdentifier::Homa(const ParsedPacket& p, uint32_t wire_len) {
  // An RPC id is unique per sender, so the sender's address and port are part of the message.
  MessageIdentity m;
  // The sender's port rides in the rpc id's word at an odd multiple: for one address pair and
  // port, distinct RPC ids give distinct words (ports could meet only ~2^45 RPC ids apart).
  const uint64_t rpc = p.homa_rpc_id + uint64_t{p.src_port} * 0xc2b2ae3d27d4eb4full;
  m.id = kKindHoma | (Combine(AddressWord(p), rpc) & kIdMask);
  m.size = p.homa_message_length;
  m.offset = p.homa_offset;
  const uint32_t header = p.payload_offset;
  const uint32_t payload = wire_len > header ? wire_len - header : 0;
  m.last = p.homa_offset + payload >= p.homa_message_length;
  return m;
}

MessageIdentity MessageIdentifier::TcpGap(const ParsedPacket& p, uint32_t wire_len,
                                          uint64_t idle_tsc, uint64_t now_tsc) {
  const uint64_t flow = FlowHash(p) | 1;  // nonzero key
  bool inserted;
  FlowState& s = flows_.Upsert(flow, now_tsc, inserted);
  if (inserted || now_tsc - s.last_tsc > idle_tsc) {
    if (!inserted) ++s.burst;
    s.bytes = 0;
    ++tcp_messages_;
  }
  s.last_tsc = now_tsc;
  MessageIdentity m;
  m.id = kKindTcp | (Mix(flow, s.burst) & kIdMask);
  m.offset = s.bytes;
  s.bytes += wire_len;
  m.last = (p.tcp_flags & (kTcpFin | kTcpRst)) != 0;
  return m;
}

MessageIdentity MessageIdentifier::Datagram(uint32_t wire_len) {
  MessageIdentity m;
  m.id = kKindDatagram | (next_datagram_++ & kIdMask);
  m.size = wire_len;
  m.last = true;
  return m;
}

}  // namespace qosvisor::vswitch
