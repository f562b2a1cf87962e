// Flow table construction over the OVS shim, and the exact-match cache in front of it.
#include "vswitch/flow_table.h"

#include <fmt/format.h>
#include <smmintrin.h>  // SSE4.1: keys are loaded, masked and compared 16 bytes at a time

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <random>

namespace qosvisor::vswitch {
namespace {

std::atomic<uint64_t> g_next_generation{1};

constexpr uint16_t kEtherArp = 0x0806, kEtherRarp = 0x8035, kEtherMpls = 0x8847,
                   kEtherMplsMulticast = 0x8848, kEtherNsh = 0x894f;
constexpr uint16_t kEtherTypeMin = 0x0600;  // below: an 802.3 length (LLC, maybe SNAP)
constexpr uint8_t kProtoIcmp = 1, kProtoIgmp = 2, kProtoTcp = 6, kProtoUdp = 17, kProtoIcmp6 = 58,
                  kProtoSctp = 132;
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
    case kProtoTcp: {
      // OVS reads the ports and flags only when the datagram holds the whole header its data
      // offset announces, which the (masked) total length decides: check it here.
      end += 20;
      if (end > p.l3_end) return 0;
      const uint32_t header = (frame[p.l4_offset + 12] >> 4) * 4u;
      if (header < 20 || p.l4_offset + header > p.l3_end) return 0;
      break;
    }
    case kProtoUdp:
    case kProtoIcmp:
    case kProtoIgmp:
      end += 8;
      break;
    case kProtoSctp:
      end += 12;
      break;
    case kProtoIcmp6:
      if (p.l3_end >= end + 1 && (frame[end] == kNdSolicit || frame[end] == kNdAdvert)) return 0;
      end += 8;
      break;
    default:
      if (p.ip_version == 6 && Ipv6ExtensionHeader(p.ip_proto)) return 0;
      break;
  }
  return end <= p.l3_end ? end : 0;
}

// What decides which key bytes are kept: where the headers are and which ones they are.
struct KeyShape {
  uint16_t l3 = 0xffff, l4 = 0, end = 0;
  uint8_t ip_version = 0, ip_proto = 0;
  // Compared as one word: shapes are compared on every frame.
  bool operator==(const KeyShape& o) const {
    return std::bit_cast<uint64_t>(*this) == std::bit_cast<uint64_t>(o);
  }
};
static_assert(sizeof(KeyShape) == 8);

// The words' masks for a shape: the per-packet fields and the bytes past `end` cleared (whole
// words past it too, so that keys can be loaded, masked and compared at their full size).
struct KeyMasks {
  KeyShape shape;
  uint32_t words = 0;
  alignas(16) uint64_t m[FlowKey::kMaxWords];
  // The parse fields of the frame whose key end these masks were made for, when that end
  // follows from them alone (see EndFollowsLayout); layout_b == 0 when none.
  uint64_t layout_a = 0;
  uint32_t layout_b = 0;
  uint32_t end = 0;
};

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
      case kProtoTcp:
        ClearBytes(out.m, words, l4 + 4, 8);   // seq, ack
        ClearBytes(out.m, words, l4 + 14, 6);  // window, checksum, urgent pointer
        break;
      case kProtoUdp:
        ClearBytes(out.m, words, l4 + 4, 4);  // length, checksum
        break;
      case kProtoSctp:
        ClearBytes(out.m, words, l4 + 4, 8);  // verification tag, checksum
        break;
      case kProtoIcmp:
      case kProtoIcmp6:
        ClearBytes(out.m, words, l4 + 2, 6);  // checksum, rest of header
        break;
      case kProtoIgmp:
        ClearBytes(out.m, words, l4 + 2, 2);  // checksum (the group address is matchable)
        break;
      default:
        break;
    }
  }
}

// Traffic comes in few shapes, mostly one after the other: the last one's masks are kept (per
// thread, as every data-plane lcore builds keys), so a key is loads and ANDs.
thread_local KeyMasks t_masks;

void KeepMasksFor(const KeyShape& shape) {
  if (!(t_masks.shape == shape)) ComputeMasks(shape, t_masks);
}

// Where the headers are and which they are, and a TCP header's length: a nonzero MatchableEnd is
// a function of these, except for ARP (it also needs the frame's length) and ICMPv6 (its type
// byte).
struct KeyLayout {
  uint64_t a;
  uint32_t b;  // never 0
};
KeyLayout LayoutOf(const uint8_t* frame, const ParsedPacket& p) {
  const uint32_t tcp_offset =
      p.ip_proto == kProtoTcp && p.l4_offset + 20u <= p.l3_end ? frame[p.l4_offset + 12] >> 4 : 0;
  return {uint64_t{p.ether_type} | uint64_t{p.l3_offset} << 16 | uint64_t{p.l4_offset} << 32 |
              uint64_t{p.l3_end} << 48,
          1u | uint32_t{p.ip_version} << 8 | uint32_t{p.ip_proto} << 16 | tcp_offset << 24};
}
bool EndFollowsLayout(const ParsedPacket& p) {
  return p.ether_type != kEtherArp && p.ether_type != kEtherRarp && p.ip_proto != kProtoIcmp6;
}

// The key's words, masked, each 16 bytes compared with `previous`'s as they are stored: whether
// they all equal (never, without a previous key). The first three vectors hold every IPv4 key
// but TCP's; the other three are loaded only for longer keys (the masks clear what lies past a
// key's end in its last vector).
bool LoadMaskedWords(const uint8_t* bytes, const KeyMasks& masks, const FlowKey* previous,
                     FlowKey& key) {
  static_assert(sizeof(key.w) == 6 * sizeof(__m128i));
  const auto* in = reinterpret_cast<const __m128i*>(bytes);
  const auto* m = reinterpret_cast<const __m128i*>(masks.m);
  auto* out = reinterpret_cast<__m128i*>(key.w);
  const auto* was = reinterpret_cast<const __m128i*>(previous != nullptr ? previous->w : key.w);
  __m128i diff = _mm_setzero_si128();
  auto vector = [&](int i) {
    const __m128i k = _mm_and_si128(_mm_loadu_si128(in + i), _mm_load_si128(m + i));
    _mm_storeu_si128(out + i, k);
    diff = _mm_or_si128(diff, _mm_xor_si128(k, _mm_loadu_si128(was + i)));
  };
  vector(0);
  vector(1);
  vector(2);
  if (masks.words > 6) {
    vector(3);
    vector(4);
    vector(5);
  }
  return previous != nullptr && _mm_testz_si128(diff, diff) != 0;
}

}  // namespace

Result<std::shared_ptr<const FlowTable>> FlowTable::Build(
    const std::vector<FlowRule>& rules, const std::vector<std::string>& port_names) {
  std::vector<qv_ovs_port_name> ports;
  for (size_t i = 0; i < port_names.size(); ++i) {
    ports.push_back({port_names[i].c_str(), static_cast<uint32_t>(i + 1)});
  }
  qv_ovs_table* raw = qv_ovs_table_new();
  std::shared_ptr<FlowTable> table(
      new FlowTable(raw, g_next_generation.fetch_add(1, std::memory_order_relaxed)));
  char error[512];
  if (qv_ovs_table_add(raw, "priority=0,actions=NORMAL", nullptr, 0, kDefaultRuleCookie, error,
                       sizeof(error)) != 0) {
    return Status::Error(fmt::format("default rule: {}", error));
  }
  for (const FlowRule& rule : rules) {
    if (qv_ovs_table_add(raw, rule.text.c_str(), ports.data(), ports.size(), rule.cookie, error,
                         sizeof(error)) != 0) {
      return Status::Error(fmt::format("flow '{}': {}", rule.text, error));
    }
  }
  if (qv_ovs_table_in_port_only(raw)) {
    table->ResolvePerPort(port_names.size());
  }
  return std::shared_ptr<const FlowTable>(std::move(table));
}

void FlowTable::ResolvePerPort(size_t ports) {
  // Any frame stands for all of them here; an all-zero one is as good as another.
  const uint8_t frame[64] = {};
  by_in_port_.assign(ports + 1, nullptr);
  for (size_t p = 1; p <= ports; ++p) {
    by_in_port_[p] = Lookup(frame, sizeof(frame), static_cast<uint32_t>(p));
  }
}

FlowTable::~FlowTable() { qv_ovs_table_free(table_); }

size_t FlowTable::size() const { return qv_ovs_table_size(table_); }

const FlowActions* FlowTable::Lookup(const uint8_t* frame, uint32_t length,
                                     uint32_t in_port) const {
  return qv_ovs_table_lookup(table_, frame, length, in_port);
}

namespace {

// The masked words; the hash is left to the caller. Returns key.words (0: no key), and in `same`
// whether the key equals `previous` (null: none).
uint32_t LoadFlowKey(const uint8_t* frame, uint32_t length, uint32_t readable,
                     const ParsedPacket& p, uint32_t in_port, const FlowKey* previous, FlowKey& key,
                     bool& same) {
  same = false;
  key.in_port = in_port;
  key.hash = 0;
  // Frames come in runs of one layout: the last one's end and masks serve the next.
  const KeyLayout layout = LayoutOf(frame, p);
  uint32_t end = t_masks.end;
  if (layout.a != t_masks.layout_a || layout.b != t_masks.layout_b) {
    end = MatchableEnd(frame, p, length);
    if (end == 0 || end > FlowKey::kMaxWords * 8) {
      key.words = 0;
      return 0;
    }
    KeepMasksFor(KeyShape{p.l3_offset, p.l4_offset, static_cast<uint16_t>(end), p.ip_version,
                          p.ip_version != 0 ? p.ip_proto : uint8_t{0}});
    const bool reusable = EndFollowsLayout(p);
    t_masks.layout_a = layout.a;
    t_masks.layout_b = reusable ? layout.b : 0;
    t_masks.end = end;
  }
  const KeyMasks& masks = t_masks;
  // The word count and port are compared one by one: a load of both fields together, just after
  // they were stored one by one, would wait for both stores to retire (store forwarding fails).
  if (previous != nullptr && (previous->words != masks.words || previous->in_port != in_port)) {
    previous = nullptr;
  }
  if (std::max(readable, length) >= sizeof(key.w)) {
    same = LoadMaskedWords(frame, masks, previous, key);
  } else {  // the frame ends near its buffer's end: copy rather than read past it
    uint8_t bytes[sizeof(key.w)] = {};
    std::memcpy(bytes, frame, end);
    same = LoadMaskedWords(bytes, masks, previous, key);
  }
  key.words = masks.words;
  return masks.words;
}

}  // namespace

void BuildFlowKey(const uint8_t* frame, uint32_t length, uint32_t readable, const ParsedPacket& p,
                  uint32_t in_port, FlowKey& key) {
  BuildNextFlowKey(frame, length, readable, p, in_port, nullptr, key);
}

bool BuildNextFlowKey(const uint8_t* frame, uint32_t length, uint32_t readable,
                      const ParsedPacket& p, uint32_t in_port, const FlowKey* previous,
                      FlowKey& key) {
  bool same;
  const uint32_t words = LoadFlowKey(frame, length, readable, p, in_port, previous, key, same);
  if (words == 0 || same) return same;
  key.hash = HashWords(key.w, words, in_port);
  return false;
}

const FlowActions* FlowCache::Lookup(const FlowTable& table, const FlowKey& key,
                                     const uint8_t* frame, uint32_t length) {
  if (key.words == 0) {
    ++uncacheable_;
    return table.Lookup(frame, length, key.in_port);
  }
  const uint64_t generation = table.generation();
  Entry& a = entries_[First(key)];
  if (a.generation == generation && a.key == key) {
    ++hits_;
    return a.actions;
  }
  Entry& b = entries_[Second(key)];
  if (b.generation == generation && b.key == key) {
    ++hits_;
    return b.actions;
  }
  ++misses_;
  // An entry of another table (an older one, or another bridge's on this lcore) first; else
  // either, alternately.
  Entry& e = a.generation != generation   ? a
             : b.generation != generation ? b
             : (misses_ & 1) != 0         ? a
                                          : b;
  e.actions = table.Lookup(frame, length, key.in_port);
  e.generation = generation;
  e.key = key;
  return e.actions;
}

const FlowActions* FlowCache::Lookup(const FlowTable& table, const uint8_t* frame, uint32_t length,
                                     const ParsedPacket& parsed, uint32_t in_port) {
  FlowKey key;
  BuildFlowKey(frame, length, length, parsed, in_port, key);
  return Lookup(table, key, frame, length);
}

}  // namespace qosvisor::vswitch
