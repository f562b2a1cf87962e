// Bounds-checked header parsing; reads use memcpy so unaligned frames are fine.
#include "vswitch/packet_parser.h"

#include <arpa/inet.h>

#include <cstring>

#include "common/reset.h"

namespace qosvisor::vswitch {
namespace {

constexpr uint16_t kEtherIpv4 = 0x0800;
constexpr uint16_t kEtherIpv6 = 0x86DD;
constexpr uint16_t kEtherVlan = 0x8100;
constexpr uint16_t kEtherQinQ = 0x88A8;
constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kProtoUdp = 17;
constexpr uint8_t kProtoIcmp = 1;
constexpr uint8_t kProtoIcmp6 = 58;

uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t Be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
uint64_t Be64(const uint8_t* p) { return uint64_t{Be32(p)} << 32 | Be32(p + 4); }
void PutBe16(uint8_t* p, uint16_t v) {
  p[0] = v >> 8;
  p[1] = v & 0xff;
}
void PutBe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = v >> (24 - 8 * i);
}
void PutBe64(uint8_t* p, uint64_t v) {
  PutBe32(p, v >> 32);
  PutBe32(p + 4, static_cast<uint32_t>(v));
}

// The parse is written once for two callers: kFields records what the headers say; without it
// only the checks run (and the link-layer fields are kept), for paths that forward at L2 but
// must still count and drop malformed frames exactly as the full parse would.

// L4 parse shared by IPv4 and IPv6. `end` is where the IP payload ends inside the frame.
template <bool kFields>
ParseStatus ParseL4(const uint8_t* f, uint32_t l4, uint8_t proto, uint32_t end,
                    ParsedPacket& out) {
  switch (proto) {
    case kProtoTcp: {
      if (end < l4 + 20) return ParseStatus::kTruncated;
      const uint32_t data_off = (f[l4 + 12] >> 4) * 4u;
      if constexpr (kFields) {
        out.src_port = Be16(f + l4);
        out.dst_port = Be16(f + l4 + 2);
        out.tcp_seq = Be32(f + l4 + 4);
      }
      if (data_off < 20) return ParseStatus::kMalformed;
      if (end < l4 + data_off) return ParseStatus::kTruncated;
      if constexpr (kFields) {
        out.tcp_flags = f[l4 + 13];
        out.payload_offset = static_cast<uint16_t>(l4 + data_off);
      }
      return ParseStatus::kOk;
    }
    case kProtoUdp:
      if (end < l4 + 8) return ParseStatus::kTruncated;
      if constexpr (kFields) {
        out.src_port = Be16(f + l4);
        out.dst_port = Be16(f + l4 + 2);
      }
      if (Be16(f + l4 + 4) < 8) return ParseStatus::kMalformed;
      if constexpr (kFields) out.payload_offset = static_cast<uint16_t>(l4 + 8);
      return ParseStatus::kOk;
    case kProtoIcmp:
    case kProtoIcmp6:
      if (end < l4 + 4) return ParseStatus::kTruncated;
      if constexpr (kFields) out.payload_offset = static_cast<uint16_t>(l4 + 4);
      return ParseStatus::kOk;
    case kIpProtoHoma: {
      if (end < l4 + 28) return ParseStatus::kTruncated;
      const uint8_t type = f[l4 + 13];
      if constexpr (kFields) {
        out.src_port = Be16(f + l4);
        out.dst_port = Be16(f + l4 + 2);
        out.homa_type = type;
        out.homa_rpc_id = Be64(f + l4 + 20);
      }
      if (type != kHomaData) {
        if constexpr (kFields) out.payload_offset = static_cast<uint16_t>(l4 + 28);
        return ParseStatus::kOk;
      }
      if (end < l4 + kHomaDataHeaderLen) return ParseStatus::kTruncated;
      if constexpr (kFields) {
        out.homa_message_length = Be32(f + l4 + 28);
        out.homa_offset = Be32(f + l4 + 52);
        out.payload_offset = static_cast<uint16_t>(l4 + kHomaDataHeaderLen);
      }
      return ParseStatus::kOk;
    }
    default:
      if constexpr (kFields) out.payload_offset = static_cast<uint16_t>(l4);
      return ParseStatus::kOk;
  }
}

template <bool kFields>
ParseStatus ParseIpv4(const uint8_t* f, uint32_t length, uint32_t l3, ParsedPacket& out) {
  if (length < l3 + 20) return ParseStatus::kTruncated;
  if ((f[l3] >> 4) != 4) return ParseStatus::kMalformed;
  const uint32_t ihl = (f[l3] & 0x0f) * 4u;
  const uint32_t total = Be16(f + l3 + 2);
  if (ihl < 20 || total < ihl) return ParseStatus::kMalformed;
  if (length < l3 + ihl) return ParseStatus::kTruncated;
  const uint8_t proto = f[l3 + 9];
  const uint32_t l4 = l3 + ihl;
  if constexpr (kFields) {
    out.ip_version = 4;
    out.ip_tos = f[l3 + 1];
    out.ip_proto = proto;
    out.ip4_src = Be32(f + l3 + 12);
    out.ip4_dst = Be32(f + l3 + 16);
    out.l4_offset = static_cast<uint16_t>(l4);
  }
  // Ethernet padding may follow the datagram; a datagram longer than the frame is truncated.
  if (length < l3 + total) return ParseStatus::kTruncated;
  if constexpr (kFields) out.l3_end = static_cast<uint16_t>(l3 + total);
  const bool later_fragment = (Be16(f + l3 + 6) & 0x1fff) != 0;
  if (later_fragment) {
    if constexpr (kFields) out.payload_offset = static_cast<uint16_t>(l4);  // no L4 header here
    return ParseStatus::kOk;
  }
  return ParseL4<kFields>(f, l4, proto, l3 + total, out);
}

template <bool kFields>
ParseStatus ParseIpv6(const uint8_t* f, uint32_t length, uint32_t l3, ParsedPacket& out) {
  if (length < l3 + 40) return ParseStatus::kTruncated;
  if ((f[l3] >> 4) != 6) return ParseStatus::kMalformed;
  const uint8_t proto = f[l3 + 6];
  if constexpr (kFields) {
    out.ip_version = 6;
    out.ip_tos = static_cast<uint8_t>((Be16(f + l3) >> 4) & 0xff);
    out.ip_proto = proto;
    std::memcpy(out.ip6_src, f + l3 + 8, 16);
    std::memcpy(out.ip6_dst, f + l3 + 24, 16);
    out.l4_offset = static_cast<uint16_t>(l3 + 40);
  }
  const uint32_t end = l3 + 40 + Be16(f + l3 + 4);
  if (length < end) return ParseStatus::kTruncated;
  if constexpr (kFields) out.l3_end = static_cast<uint16_t>(end);
  return ParseL4<kFields>(f, l3 + 40, proto, end, out);
}

template <bool kFields>
ParseStatus ParseFrame(const uint8_t* f, uint32_t length, ParsedPacket& out) {
  if constexpr (kFields) {
    ResetToDefault(out);
  } else {
    out.ether_type = 0;
    out.vlan_tci = 0;
    out.has_vlan = false;
    out.l3_offset = 0;
  }
  if (length < 14) return ParseStatus::kTruncated;
  uint32_t offset = 12;
  uint16_t type = Be16(f + offset);
  if (type == kEtherVlan || type == kEtherQinQ) {
    if (length < 18) return ParseStatus::kTruncated;
    out.has_vlan = true;
    out.vlan_tci = Be16(f + 14);
    offset += 4;
    type = Be16(f + offset);
  }
  const uint32_t l3 = offset + 2;
  out.ether_type = type;
  out.l3_offset = static_cast<uint16_t>(l3);
  switch (type) {
    case kEtherIpv4:
      return ParseIpv4<kFields>(f, length, l3, out);
    case kEtherIpv6:
      return ParseIpv6<kFields>(f, length, l3, out);
    default:
      if constexpr (kFields) out.payload_offset = static_cast<uint16_t>(l3);
      return ParseStatus::kOk;
  }
}

}  // namespace

ParseStatus ParsePacket(const uint8_t* f, uint32_t length, ParsedPacket& out) {
  return ParseFrame<true>(f, length, out);
}

ParseStatus CheckPacket(const uint8_t* f, uint32_t length, ParsedPacket& out) {
  return ParseFrame<false>(f, length, out);
}

void WriteHomaHeader(uint8_t* at, const HomaFields& h) {
  std::memset(at, 0, kHomaDataHeaderLen);
  PutBe16(at, h.src_port);
  PutBe16(at + 2, h.dst_port);
  at[12] = static_cast<uint8_t>((kHomaDataHeaderLen / 4) << 4);  // doff
  at[13] = h.type;
  PutBe64(at + 20, h.rpc_id);
  PutBe32(at + 28, h.message_length);
  PutBe32(at + 52, h.offset);
}

}  // namespace qosvisor::vswitch
