// Message identification: which message a packet belongs to, per class rule. Homa packets carry
// their RPC id, length and offset; TCP flows are cut into messages at idle gaps; datagrams are
// each a message of their own. (eBPF programs supply all three through their own hook.)
#pragma once

#include <cstdint>

#include "common/aging_table.h"
#include "vswitch/packet_parser.h"

namespace qosvisor::vswitch {

enum class MessageMode : uint8_t { kDatagram, kHoma, kTcpGap, kEbpf };

struct MessageIdentity {
  uint64_t id = 0;
  uint32_t size = 0;    // total bytes when known, else 0
  uint32_t offset = 0;  // bytes of the message before this packet, when known
  bool last = false;    // the sender says the message ends with this packet
  // The packet is the whole message and no other packet can carry its id (implies last): a
  // datagram, or a Homa message that one packet holds from offset 0.
  bool whole = false;
};

class MessageIdentifier {
 public:
  // flow_capacity: TCP flows tracked at once; flow_ttl_tsc: when an idle flow's state is dropped.
  MessageIdentifier(uint32_t flow_capacity, uint64_t flow_ttl_tsc)
      : flows_(flow_capacity, flow_ttl_tsc) {}

  // wire_len: bytes the frame takes on the wire (datagram sizes, tcp-gap byte counts); Homa reads
  // only the datagram's own lengths. idle_tsc: the tcp-gap threshold of the packet's class.
  // (Homa's few operations are inlined: every packet of a Homa class pays for a call otherwise.)
  MessageIdentity Identify(MessageMode mode, const ParsedPacket& p, uint32_t wire_len,
                           uint64_t idle_tsc, uint64_t now_tsc) {
    if (mode == MessageMode::kHoma && p.ip_proto == kIpProtoHoma && p.homa_type == kHomaData) {
      return Homa(p);
    }
    return IdentifyOther(mode, p, wire_len, idle_tsc, now_tsc);
  }

  uint64_t tcp_messages_started() const { return tcp_messages_; }

 private:
  // (When the flow was last seen is its entry's age in flows_.)
  struct FlowState {
    // Numbers the flow's bursts. It starts at the clock when the flow's state is made, and a
    // burst starts only after an idle gap of at least a cycle, so it never passes the clock: a
    // flow whose state was dropped (aging, eviction) and made again later numbers its bursts above
    // every one it had, and never takes back the id of a burst whose data may still wait.
    uint64_t burst = 0;
    uint32_t bytes = 0;
  };
  static MessageIdentity Homa(const ParsedPacket& p);
  MessageIdentity IdentifyOther(MessageMode mode, const ParsedPacket& p, uint32_t wire_len,
                                uint64_t idle_tsc, uint64_t now_tsc);
  MessageIdentity TcpGap(const ParsedPacket& p, uint32_t wire_len, uint64_t idle_tsc,
                         uint64_t now_tsc);
  MessageIdentity Datagram(uint32_t wire_len);

  AgingTable<FlowState> flows_;
  uint64_t next_datagram_ = 0;
  uint64_t tcp_messages_ = 0;
};

// A 64-bit mix of the 5-tuple (direction included) used for flow and message ids.
uint64_t FlowHash(const ParsedPacket& p);

namespace message_hash {

inline constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
// Ids of different kinds never collide: the top two bits say which kind made them.
inline constexpr uint64_t kKindHoma = 1ull << 62, kKindTcp = 2ull << 62, kKindDatagram = 3ull << 62;
inline constexpr uint64_t kIdMask = (1ull << 62) - 1;

uint64_t Ip6AddressWord(const ParsedPacket& p);

// Both addresses in one word for IPv4 (exact), hashed for IPv6.
inline uint64_t AddressWord(const ParsedPacket& p) {
  if (p.ip_version == 4) return uint64_t{p.ip4_src} << 32 | p.ip4_dst;
  return Ip6AddressWord(p);
}

// Hashes two words with independent multiplies, so that the latency is one multiply, not a
// chain of them: every packet of an uplink class pays it. For a fixed `a`, distinct `b` give
// distinct results (multiplying by an odd constant and the final xorshift are invertible).
inline uint64_t Combine(uint64_t a, uint64_t b) {
  const uint64_t h = (a * kGolden) ^ (b * 0xff51afd7ed558ccdull);
  return h ^ (h >> 29);
}

}  // namespace message_hash

inline MessageIdentity MessageIdentifier::Homa(const ParsedPacket& p) {
  using namespace message_hash;
  // An RPC id is unique per sender, so the sender's address and port are part of the message.
  MessageIdentity m;
  // The sender's port rides in the rpc id's word at an odd multiple: for one address pair and
  // port, distinct RPC ids give distinct words (ports could meet only ~2^45 RPC ids apart).
  const uint64_t rpc = p.homa_rpc_id + uint64_t{p.src_port} * 0xc2b2ae3d27d4eb4full;
  m.id = kKindHoma | (Combine(AddressWord(p), rpc) & kIdMask);
  m.size = p.homa_message_length;
  m.offset = p.homa_offset;
  // The segment is what the IP datagram carries after the Homa header: neither the preamble and
  // gap counted in wire lengths nor Ethernet padding, either of which could make the packet
  // before the last look like the last.
  const uint32_t payload = p.l3_end > p.payload_offset ? p.l3_end - p.payload_offset : 0;
  m.last = uint64_t{p.homa_offset} + payload >= p.homa_message_length;
  m.whole = m.last && p.homa_offset == 0;
  return m;
}

}  // namespace qosvisor::vswitch
