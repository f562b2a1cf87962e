// Homa, tcp-gap and datagram message identification.
#include "vswitch/message_identifier.h"

#include <cstring>

namespace qosvisor::vswitch {
namespace {

using namespace message_hash;

constexpr uint8_t kTcpFin = 0x01, kTcpRst = 0x04;

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + kGolden + (h << 6) + (h >> 2);
  h *= 0xff51afd7ed558ccdull;
  return h ^ (h >> 32);
}

}  // namespace

uint64_t message_hash::Ip6AddressWord(const ParsedPacket& p) {
  uint64_t words[4];
  std::memcpy(words, p.ip6_src, 16);
  std::memcpy(words + 2, p.ip6_dst, 16);
  return Mix(Mix(Mix(words[0], words[1]), words[2]), words[3]);
}

uint64_t FlowHash(const ParsedPacket& p) {
  const uint64_t ports_proto = uint64_t{p.ip_proto} << 32 | uint64_t{p.src_port} << 16 | p.dst_port;
  return Combine(AddressWord(p), ports_proto);
}

MessageIdentity MessageIdentifier::IdentifyOther(MessageMode mode, const ParsedPacket& p,
                                                 uint32_t wire_len, uint64_t idle_tsc,
                                                 uint64_t now_tsc) {
  // (Homa DATA packets never get here: Identify handles them; other Homa packets are datagrams.)
  if (mode == MessageMode::kTcpGap && p.ip_proto == 6 && p.payload_offset != 0) {
    return TcpGap(p, wire_len, idle_tsc, now_tsc);
  }
  return Datagram(wire_len);
}

MessageIdentity MessageIdentifier::TcpGap(const ParsedPacket& p, uint32_t wire_len,
                                          uint64_t idle_tsc, uint64_t now_tsc) {
  const uint64_t flow = FlowHash(p) | 1;  // nonzero key
  bool inserted;
  uint64_t last_tsc;
  FlowState& s = flows_.Upsert(flow, now_tsc, inserted, last_tsc);
  if (inserted || now_tsc - last_tsc > idle_tsc) {
    s.burst = inserted ? now_tsc : s.burst + 1;
    s.bytes = 0;
    ++tcp_messages_;
  }
  MessageIdentity m;
  m.id = kKindTcp | (Mix(flow, s.burst) & kIdMask);
  m.offset = s.bytes;
  s.bytes += wire_len;
  // Never whole, not even a burst of one FIN: a retransmitted FIN, or any segment within `idle`
  // of it, carries the same id.
  m.last = (p.tcp_flags & (kTcpFin | kTcpRst)) != 0;
  return m;
}

MessageIdentity MessageIdentifier::Datagram(uint32_t wire_len) {
  MessageIdentity m;
  m.id = kKindDatagram | (next_datagram_++ & kIdMask);
  m.size = wire_len;
  m.last = true;
  m.whole = true;
  return m;
}

}  // namespace qosvisor::vswitch
