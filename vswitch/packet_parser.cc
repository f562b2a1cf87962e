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
//
// Each header is read through a pointer to its own start, with the bytes left from there: the
// reads are then at constant offsets, whether or not a VLAN tag came first.

// L4 parse shared by IPv4 and IPv6. `h` is the L4 header at frame offset `l4`; `avail` bytes of
// the IP payload follow it inside the frame.
template <bool kFields>
ParseStatus ParseL4(const uint8_t* h, uint32_t l4, uint32_t avail, uint8_t proto,
                    ParsedPacket& out) {
  switch (proto) {
    case kIpProtoTcp: {
      if (avail < 20) return ParseStatus::kTruncated;
      const uint32_t data_off = (h[12] >> 4) * 4u;
      if constexpr (kFields) {
        out.src_port = Be16(h);
        out.dst_port = Be16(h + 2);
        out.tcp_seq = Be32(h + 4);
      }
      if (data_off < 20) return ParseStatus::kMalformed;
      if (avail < data_off) return ParseStatus::kTruncated;
      if constexpr (kFields) {
        out.tcp_flags = h[13];
        out.payload_offset = static_cast<uint16_t>(l4 + data_off);
      }
      return ParseStatus::kOk;
    }
    case kIpProtoUdp:
      if (avail < 8) return ParseStatus::kTruncated;
      if constexpr (kFields) {
        out.src_port = Be16(h);
        out.dst_port = Be16(h + 2);
      }
      if (Be16(h + 4) < 8) return ParseStatus::kMalformed;
      if constexpr (kFields) out.payload_offset = static_cast<uint16_t>(l4 + 8);
      return ParseStatus::kOk;
    case kIpProtoIcmp:
    case kIpProtoIcmp6:
      if (avail < 4) return ParseStatus::kTruncated;
      if constexpr (kFields) out.payload_offset = static_cast<uint16_t>(l4 + 4);
      return ParseStatus::kOk;
    case kIpProtoHoma: {
      if (avail < 28) return ParseStatus::kTruncated;
      const uint8_t type = h[13];
      if constexpr (kFields) {
        out.src_port = Be16(h);
        out.dst_port = Be16(h + 2);
        out.homa_type = type;
        out.homa_rpc_id = Be64(h + 20);
      }
      if (type != kHomaData) {
        if constexpr (kFields) out.payload_offset = static_cast<uint16_t>(l4 + 28);
        return ParseStatus::kOk;
      }
      if (avail < kHomaDataHeaderLen) return ParseStatus::kTruncated;
      if constexpr (kFields) {
        out.homa_message_length = Be32(h + 28);
        out.homa_offset = Be32(h + 52);
        out.payload_offset = static_cast<uint16_t>(l4 + kHomaDataHeaderLen);
      }
      return ParseStatus::kOk;
    }
    default:
      if constexpr (kFields) out.payload_offset = static_cast<uint16_t>(l4);
      return ParseStatus::kOk;
  }
}

// `h` is the IPv4 header at frame offset `l3`, with `left` bytes of the frame from there.
template <bool kFields>
ParseStatus ParseIpv4(const uint8_t* h, uint32_t l3, uint32_t left, ParsedPacket& out) {
  if (left < 20) return ParseStatus::kTruncated;
  if ((h[0] >> 4) != 4) return ParseStatus::kMalformed;
  const uint32_t ihl = (h[0] & 0x0f) * 4u;
  const uint32_t total = Be16(h + 2);
  if (ihl < 20 || total < ihl) return ParseStatus::kMalformed;
  if (left < ihl) return ParseStatus::kTruncated;
  const uint8_t proto = h[9];
  const uint32_t l4 = l3 + ihl;
  if constexpr (kFields) {
    out.ip_version = 4;
    out.ip_tos = h[1];
    out.ip_proto = proto;
    out.ip4_src = Be32(h + 12);
    out.ip4_dst = Be32(h + 16);
    out.l4_offset = static_cast<uint16_t>(l4);
  }
  // Ethernet padding may follow the datagram; a datagram longer than the frame is truncated.
  if (left < total) return ParseStatus::kTruncated;
  if constexpr (kFields) out.l3_end = static_cast<uint16_t>(l3 + total);
  const bool later_fragment = (Be16(h + 6) & 0x1fff) != 0;
  if (later_fragment) {
    if constexpr (kFields) out.payload_offset = static_cast<uint16_t>(l4);  // no L4 header here
    return ParseStatus::kOk;
  }
  return ParseL4<kFields>(h + ihl, l4, total - ihl, proto, out);
}

template <bool kFields>
ParseStatus ParseIpv6(const uint8_t* h, uint32_t l3, uint32_t left, ParsedPacket& out) {
  if (left < 40) return ParseStatus::kTruncated;
  if ((h[0] >> 4) != 6) return ParseStatus::kMalformed;
  const uint8_t proto = h[6];
  if constexpr (kFields) {
    out.ip_version = 6;
    out.ip_tos = static_cast<uint8_t>((Be16(h) >> 4) & 0xff);
    out.ip_proto = proto;
    std::memcpy(out.ip6_src, h + 8, 16);
    std::memcpy(out.ip6_dst, h + 24, 16);
    out.l4_offset = static_cast<uint16_t>(l3 + 40);
  }
  const uint32_t payload = Be16(h + 4);
  if (left < 40 + payload) return ParseStatus::kTruncated;
  if constexpr (kFields) out.l3_end = static_cast<uint16_t>(l3 + 40 + payload);
  return ParseL4<kFields>(h + 40, l3 + 40, payload, proto, out);
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
      return ParseIpv4<kFields>(f + l3, l3, length - l3, out);
    case kEtherIpv6:
      return ParseIpv6<kFields>(f + l3, l3, length - l3, out);
    default:
      if constexpr (kFields) out.payload_offset = static_cast<uint16_t>(l3);
      return ParseStatus::kOk;
  }
}

// An untagged IPv4 datagram without options, not a later fragment, carrying a whole UDP header:
// most frames. A few loads tell, and the full checks would find it well formed.
bool PlainUdp4(const uint8_t* f, uint32_t length) {
  constexpr uint32_t kL3 = 14, kL4 = kL3 + 20;
  if (length < kL4 + 8 || Be16(f + 12) != kEtherIpv4 || f[kL3] != 0x45 ||
      f[kL3 + 9] != kIpProtoUdp) {
    return false;
  }
  const uint32_t total = Be16(f + kL3 + 2);
  return total >= 20 + 8 && total <= length - kL3 && (Be16(f + kL3 + 6) & 0x1fff) == 0 &&
         Be16(f + kL4 + 4) >= 8;
}

}  // namespace

ParseStatus ParsePacket(const uint8_t* f, uint32_t length, ParsedPacket& out) {
  return ParseFrame<true>(f, length, out);
}

ParseStatus CheckPacket(const uint8_t* f, uint32_t length, ParsedPacket& out) {
  if (PlainUdp4(f, length)) {  // what ParseFrame<false> records for it
    out.ether_type = kEtherIpv4;
    out.vlan_tci = 0;
    out.has_vlan = false;
    out.l3_offset = 14;
    return ParseStatus::kOk;
  }
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
