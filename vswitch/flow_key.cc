// Building flow keys: the masks for each shape of headers, how far the classifier reads, the
// keyed hash, and frames that end near their buffer's end (flow_key.h has the common case).
#include "vswitch/flow_key.h"

#include <cstring>
#include <random>

namespace qosvisor::vswitch {
namespace flow_key {

constinit thread_local KeyMasks t_masks;

namespace {

constexpr uint16_t kEtherArp = 0x0806, kEtherRarp = 0x8035, kEtherMpls = 0x8847,
                   kEtherMplsMulticast = 0x8848, kEtherNsh = 0x894f;
constexpr uint16_t kEtherTypeMin = 0x0600;  // below: an 802.3 length (LLC, maybe SNAP)
constexpr uint8_t kIpProtoIgmp = 2, kIpProtoSctp = 132;
constexpr uint8_t kNdSolicit = 135, kNdAdvert = 136;

// Per-process random multipliers, so that nobody can aim traffic at one cache slot.
struct HashSeeds {
  uint64_t k[FlowKey::kMaxWords + 2];
  HashSeeds() {
    std::random_device rd;
    for (uint64_t& v : k) v = (uint64_t{rd()} << 32 | rd()) | 1;
  }
};
const HashSeeds g_seeds;

// Clears n ≤ 8 bytes at byte `offset` of the key, when they are inside it.
void ClearBytes(uint64_t* w, uint32_t words, uint32_t offset, uint32_t n) {
  const uint32_t i = offset / 8, shift = (offset % 8) * 8;
  const unsigned __int128 field = static_cast<unsigned __int128>(~0ull >> (64 - 8 * n)) << shift;
  if (i < words) w[i] &= ~static_cast<uint64_t>(field);
  if (i + 1 < words) w[i + 1] &= ~static_cast<uint64_t>(field >> 64);
}

// IPv6 extension headers Open vSwitch walks through to find the transport header.
bool Ipv6ExtensionHeader(uint8_t next) {
  return next == 0 || next == 43 || next == 44 || next == 51 || next == 60;
}

// How far the classifier reads into the frame (Open vSwitch's flow extraction, for which the
// key must hold every byte it looks at): TCP/UDP/SCTP ports and TCP flags, ICMP and IGMP type and
// code (and IGMP's group), the ARP/RARP body, else the L3 header. OVS reads a transport header
// only when the datagram holds all of it (8 bytes for ICMP, 12 for SCTP), so the key ends
// there. 0: not cacheable, because the classifier reads what a fixed prefix cannot show (LLC/SNAP,
// MPLS and NSH headers, IPv6 extension headers, neighbour discovery options) or the frame or
// datagram ends before the transport header does; such frames always ask the classifier.
uint32_t MatchableEnd(const uint8_t* frame, const ParsedPacket& p, uint32_t length) {
  const uint16_t type = p.ether_type;
  if (type < kEtherTypeMin || type == kEtherMpls || type == kEtherMplsMulticast ||
      type == kEtherNsh) {
    return 0;
  }
  if (type == kEtherArp || type == kEtherRarp) {
    const uint32_t end = p.l3_offset + 28u;
    return end <= length ? end : 0;
  }
  if (p.ip_version == 0) return p.l3_offset;
  uint32_t end = p.l4_offset;
  switch (p.ip_proto) {
    case kIpProtoTcp: {
      // OVS reads the ports and flags only when the datagram holds the whole header its data
      // offset announces, which the (masked) total length decides: check it here.
      end += 20;
      if (end > p.l3_end) return 0;
      const uint32_t header = (frame[p.l4_offset + 12] >> 4) * 4u;
      if (header < 20 || p.l4_offset + header > p.l3_end) return 0;
      break;
    }
    case kIpProtoUdp:
    case kIpProtoIcmp:
    case kIpProtoIgmp:
      end += 8;
      break;
    case kIpProtoSctp:
      end += 12;
      break;
    case kIpProtoIcmp6:
      if (p.l3_end >= end + 1 && (frame[end] == kNdSolicit || frame[end] == kNdAdvert)) return 0;
      end += 8;
      break;
    default:
      if (p.ip_version == 6 && Ipv6ExtensionHeader(p.ip_proto)) return 0;
      break;
  }
  return end <= p.l3_end ? end : 0;
}

void ComputeMasks(const KeyShape& s, KeyMasks& out) {
  out.shape = s;
  out.words = (s.end + 7u) / 8;
  for (uint32_t i = 0; i < FlowKey::kMaxWords; ++i) out.m[i] = i < out.words ? ~0ull : 0;
  if (s.end % 8 != 0) out.m[out.words - 1] = ~0ull >> (64 - 8 * (s.end % 8));
  const uint32_t words = out.words, l3 = s.l3, l4 = s.l4;
  if (s.ip_version == 4) {
    ClearBytes(out.m, words, l3 + 2, 4);   // total length, id
    ClearBytes(out.m, words, l3 + 10, 2);  // checksum
  } else if (s.ip_version == 6) {
    ClearBytes(out.m, words, l3 + 4, 2);  // payload length
  }
  if (s.ip_version != 0) {
    switch (s.ip_proto) {
      case kIpProtoTcp:
        ClearBytes(out.m, words, l4 + 4, 8);   // seq, ack
        ClearBytes(out.m, words, l4 + 14, 6);  // window, checksum, urgent pointer
        break;
      case kIpProtoUdp:
        ClearBytes(out.m, words, l4 + 4, 4);  // length, checksum
        break;
      case kIpProtoSctp:
        ClearBytes(out.m, words, l4 + 4, 8);  // verification tag, checksum
        break;
      case kIpProtoIcmp:
      case kIpProtoIcmp6:
        ClearBytes(out.m, words, l4 + 2, 6);  // checksum, rest of header
        break;
      case kIpProtoIgmp:
        ClearBytes(out.m, words, l4 + 2, 2);  // checksum (the group address is matchable)
        break;
      default:
        break;
    }
  }
  // Words that only masked fields fill are zero in every key of the shape: leave them out, so
  // that keys are shorter to load, compare and hash (IPv4 TCP's last word is the window,
  // checksum and urgent pointer).
  while (out.words > 1 && out.m[out.words - 1] == 0) --out.words;
}

void KeepMasksFor(const KeyShape& shape) {
  if (!(t_masks.shape == shape)) ComputeMasks(shape, t_masks);
}

bool EndFollowsLayout(const ParsedPacket& p) {
  return p.ether_type != kEtherArp && p.ether_type != kEtherRarp && p.ip_proto != kIpProtoIcmp6;
}

}  // namespace

// NH-style: word pairs multiplied independently (no chain through the words), folded to 64
// bits, then mixed so that every bit reaches the low bits used as the slot index.
uint64_t HashWords(const uint64_t* w, uint32_t words, uint32_t in_port) {
  const uint64_t* k = g_seeds.k;
  uint64_t h = (uint64_t{in_port} << 32 | words) * k[FlowKey::kMaxWords];
  for (uint32_t i = 0; i < words; i += 2) {
    const uint64_t second = i + 1 < words ? w[i + 1] : 0;
    const unsigned __int128 p = static_cast<unsigned __int128>(w[i] ^ k[i]) * (second ^ k[i + 1]);
    h += static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
  }
  h ^= h >> 31;
  h *= k[FlowKey::kMaxWords + 1];
  return h ^ (h >> 29);
}

bool MasksFor(const uint8_t* frame, const ParsedPacket& p, uint32_t length,
              const KeyLayout& layout) {
  const uint32_t end = MatchableEnd(frame, p, length);
  if (end == 0 || end > FlowKey::kMaxWords * 8) return false;
  KeepMasksFor(KeyShape{p.l3_offset, p.l4_offset, static_cast<uint16_t>(end), p.ip_version,
                        p.ip_version != 0 ? p.ip_proto : uint8_t{0}});
  t_masks.layout_a = layout.a;
  t_masks.layout_b = EndFollowsLayout(p) ? layout.b : 0;
  t_masks.end = end;
  return true;
}

bool LoadCopiedWords(const uint8_t* frame, const KeyMasks& masks, const FlowKey* previous,
                     FlowKey& key) {
  // masks.end is at most sizeof(key.w): MasksFor refuses longer ends (before any word is left
  // out), and this copy relies on it.
  uint8_t bytes[sizeof(key.w)] = {};
  std::memcpy(bytes, frame, masks.end);
  return LoadMaskedWords(bytes, masks, previous, key);
}

}  // namespace flow_key

void BuildFlowKey(const uint8_t* frame, uint32_t length, uint32_t readable, const ParsedPacket& p,
                  uint32_t in_port, FlowKey& key) {
  BuildNextFlowKey(frame, length, readable, p, in_port, nullptr, key);
}

}  // namespace qosvisor::vswitch
