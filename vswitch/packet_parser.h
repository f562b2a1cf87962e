// Header parsing for the switch: Ethernet, 802.1Q, IPv4/IPv6, TCP, UDP, ICMP and Homa (IP
// protocol 146). Frames are hostile input: every read is bounds-checked against the frame length.
#pragma once

#include <cstdint>

namespace qosvisor::vswitch {

// IP protocol numbers the parser and the cache key read.
inline constexpr uint8_t kIpProtoIcmp = 1, kIpProtoTcp = 6, kIpProtoUdp = 17, kIpProtoIcmp6 = 58;
inline constexpr uint8_t kIpProtoHoma = 146;
inline constexpr uint8_t kHomaData = 0x10;

enum class ParseStatus : uint8_t {
  kOk,
  kTruncated,  // a header announced by the frame does not fit in it
  kMalformed,  // a header has impossible values (IPv4 IHL < 5, total length < header, ...)
};

// Where the headers are and what they say; fields of absent layers are zero.
struct ParsedPacket {
  uint16_t ether_type = 0;  // after any VLAN tag
  uint16_t vlan_tci = 0;
  bool has_vlan = false;
  uint8_t ip_version = 0;  // 0: not IP
  uint8_t ip_proto = 0;
  uint8_t ip_tos = 0;
  uint8_t tcp_flags = 0;
  uint16_t l3_offset = 0;
  uint16_t l3_end = 0;  // IP: where the datagram ends (Ethernet padding may follow)
  uint16_t l4_offset = 0;
  uint16_t payload_offset = 0;
  uint32_t ip4_src = 0;  // host byte order
  uint32_t ip4_dst = 0;
  uint8_t ip6_src[16] = {};
  uint8_t ip6_dst[16] = {};
  uint16_t src_port = 0;  // TCP/UDP/Homa, host byte order
  uint16_t dst_port = 0;
  uint32_t tcp_seq = 0;
  // Homa DATA packets: the RPC and where this packet sits in its message.
  uint8_t homa_type = 0;
  uint64_t homa_rpc_id = 0;
  uint32_t homa_message_length = 0;
  uint32_t homa_offset = 0;
  // (The MAC addresses are not copied: they are the frame's first 12 bytes.)
};

// Parses as deep as the frame allows. A kTruncated or kMalformed result still describes the
// layers before the bad one, so a switch can forward at L2 what it cannot read at L4.
ParseStatus ParsePacket(const uint8_t* frame, uint32_t length, ParsedPacket& out);
// The same checks and verdict as ParsePacket, recording only the link layer (ether_type,
// has_vlan, vlan_tci, l3_offset; the other fields are left as they were): for frames that are
// forwarded at L2 but must still be counted and dropped when malformed.
ParseStatus CheckPacket(const uint8_t* frame, uint32_t length, ParsedPacket& out);

// The Homa header layout we read and write (HomaModule's): common header of 28 bytes, then for
// DATA packets message_length at +28 and the segment offset at +52; 56 bytes in all.
inline constexpr uint32_t kHomaDataHeaderLen = 56;
struct HomaFields {
  uint16_t src_port, dst_port;
  uint8_t type;
  uint64_t rpc_id;
  uint32_t message_length, offset;
};
// Writes a Homa DATA header at `at` (kHomaDataHeaderLen bytes); used by qosgen and tests.
void WriteHomaHeader(uint8_t* at, const HomaFields& fields);

}  // namespace qosvisor::vswitch
