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
};

class MessageIdentifier {
 public:
  // flow_capacity: TCP flows tracked at once; flow_ttl_tsc: when an idle flow's state is dropped.
  MessageIdentifier(uint32_t flow_capacity, uint64_t flow_ttl_tsc)
      : flows_(flow_capacity, flow_ttl_tsc) {}

  // wire_len: bytes of the frame; idle_tsc: the tcp-gap threshold of the packet's class.
  MessageIdentity Identify(MessageMode mode, const ParsedPacket& p, uint32_t wire_len,
                           uint64_t idle_tsc, uint64_t now_tsc);

  uint64_t tcp_messages_started() const { return tcp_messages_; }

 private:
  struct FlowState {
    uint64_t last_tsc = 0;
    uint32_t burst = 0;
    uint32_t bytes = 0;
  };
  MessageIdentity Homa(const ParsedPacket& p, uint32_t wire_len);
  MessageIdentity TcpGap(const ParsedPacket& p, uint32_t wire_len, uint64_t idle_tsc,
                         uint64_t now_tsc);
  MessageIdentity Datagram(uint32_t wire_len);

  AgingTable<FlowState> flows_;
  uint64_t next_datagram_ = 0;
  uint64_t tcp_messages_ = 0;
};

// A 64-bit mix of the 5-tuple (direction included) used for flow and message ids.
uint64_t FlowHash(const ParsedPacket& p);

}  // namespace qosvisor::vswitch
