// Builds test frames byte by byte (Ethernet/VLAN/IPv4/IPv6/TCP/UDP/ICMP/Homa).
#pragma once

#include <cstdint>
#include <vector>

#include "vswitch/packet_parser.h"

namespace qosvisor::vswitch::testing {

struct Frame {
  std::vector<uint8_t> bytes;
  void U8(uint8_t v) { bytes.push_back(v); }
  void U16(uint16_t v) {
    U8(v >> 8);
    U8(v & 0xff);
  }
  void U32(uint32_t v) {
    U16(v >> 16);
    U16(v & 0xffff);
  }
  void Zeros(size_t n) { bytes.insert(bytes.end(), n, 0); }
};

inline Frame Ethernet(uint16_t ether_type, int vlan = -1) {
  Frame f;
  for (uint8_t b : {0x02, 0, 0, 0, 0, 0x02}) f.U8(b);  // dst
  for (uint8_t b : {0x02, 0, 0, 0, 0, 0x01}) f.U8(b);  // src
  if (vlan >= 0) {
    f.U16(0x8100);
    f.U16(static_cast<uint16_t>(vlan));
  }
  f.U16(ether_type);
  return f;
}

// IPv4 header + L4 bytes; total length covers exactly l4_len bytes of payload.
inline void Ipv4(Frame& f, uint8_t proto, uint16_t l4_len, uint32_t src = 0x0a000001,
                 uint32_t dst = 0x0a000002) {
  f.U8(0x45);
  f.U8(0);
  f.U16(static_cast<uint16_t>(20 + l4_len));
  f.U32(0);
  f.U8(64);
  f.U8(proto);
  f.U16(0);
  f.U32(src);
  f.U32(dst);
}

inline Frame Udp4(uint16_t sport, uint16_t dport, uint16_t payload = 18, int vlan = -1) {
  Frame f = Ethernet(0x0800, vlan);
  Ipv4(f, 17, static_cast<uint16_t>(8 + payload));
  f.U16(sport);
  f.U16(dport);
  f.U16(static_cast<uint16_t>(8 + payload));
  f.U16(0);
  f.Zeros(payload);
  return f;
}

inline Frame Tcp4(uint16_t sport, uint16_t dport, uint32_t seq, uint8_t flags,
                  uint16_t payload = 6) {
  Frame f = Ethernet(0x0800);
  Ipv4(f, 6, static_cast<uint16_t>(20 + payload));
  f.U16(sport);
  f.U16(dport);
  f.U32(seq);
  f.U32(0);
  f.U8(0x50);
  f.U8(flags);
  f.U16(0xffff);
  f.U32(0);
  f.Zeros(payload);
  return f;
}

inline Frame Homa4(uint64_t rpc, uint32_t message_length, uint32_t offset, uint16_t payload = 100) {
  Frame f = Ethernet(0x0800);
  Ipv4(f, kIpProtoHoma, static_cast<uint16_t>(kHomaDataHeaderLen + payload));
  const size_t at = f.bytes.size();
  f.Zeros(kHomaDataHeaderLen + payload);
  WriteHomaHeader(f.bytes.data() + at, {4000, 5000, kHomaData, rpc, message_length, offset});
  return f;
}

// Ethernet + IPv6 (next header `next`) + `l4`.
inline Frame Ipv6Frame(uint8_t next, const std::vector<uint8_t>& l4) {
  Frame f = Ethernet(0x86dd);
  f.U32(0x60000000);
  f.U16(static_cast<uint16_t>(l4.size()));
  f.U8(next);
  f.U8(64);
  f.Zeros(15);
  f.U8(1);
  f.Zeros(15);
  f.U8(2);
  f.bytes.insert(f.bytes.end(), l4.begin(), l4.end());
  return f;
}
// A UDP header from port 1000 to `dport`, with no payload.
inline std::vector<uint8_t> UdpHeader(uint16_t dport) {
  return {0x03, 0xe8, static_cast<uint8_t>(dport >> 8), static_cast<uint8_t>(dport), 0, 8, 0, 0};
}

}  // namespace qosvisor::vswitch::testing
