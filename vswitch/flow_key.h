// The exact-match cache's key (FlowKey) and how a frame's key is built: every header byte the
// classifier can match on, loaded from the frame under masks kept per thread for the last shape
// of headers seen. The common case (a frame of the previous frame's shape) is inline, as every
// frame of a rule-looked-up burst pays for it; masks for a new shape, the hash, and frames that
// end near their buffer's end are in flow_key.cc.
#pragma once

#include <smmintrin.h>  // SSE4.1: keys are loaded, masked and compared 16 bytes at a time

#include <algorithm>
#include <bit>
#include <cstdint>

#include "vswitch/packet_parser.h"

namespace qosvisor::vswitch {

// As 64-bit words loaded straight from the frame, with the input port. Fields the classifier
// cannot match (IP ids, lengths, checksums, TCP sequence numbers, ...) are masked out so that all
// packets of a flow share one key; bytes past the matchable headers in its last word are zero,
// and the words past `words` are no part of it (equality and the hash read `words` words).
struct FlowKey {
  static constexpr uint32_t kMaxWords = 12;  // 96 header bytes: IPv6 + TCP behind one VLAN tag
  uint64_t w[kMaxWords];
  uint32_t words = 0;  // 0: the headers are too long to cache
  uint32_t in_port = 0;
  uint64_t hash = 0;

  bool operator==(const FlowKey& o) const {
    return hash == o.hash && words == o.words && in_port == o.in_port && SameWords(o, words);
  }
  // The first n words equal (n is passed in rather than read back from `words`, which may just
  // have been stored).
  bool SameWords(const FlowKey& o, uint32_t n) const {
    for (uint32_t i = n; i-- > 0;) {  // from the end: a host pair's flows differ in their ports
      if (w[i] != o.w[i]) return false;
    }
    return true;
  }
};

// Builds the key of a parsed frame. `readable` is how many bytes from `frame` may be read (the
// mbuf's buffer beyond the packet, at least `length`): with a little slack the words are loaded
// without copying the frame first.
void BuildFlowKey(const uint8_t* frame, uint32_t length, uint32_t readable,
                  const ParsedPacket& parsed, uint32_t in_port, FlowKey& key);
// BuildFlowKey for the frames of a burst in order: returns true, without hashing the key (it
// takes previous's hash), when it has the same words as `previous` (the key of the frame before;
// may be null, never `key` itself), whose answer the frame then shares.
inline bool BuildNextFlowKey(const uint8_t* frame, uint32_t length, uint32_t readable,
                             const ParsedPacket& parsed, uint32_t in_port,
                             const FlowKey* previous, FlowKey& key);

// BuildNextFlowKey's parts, for it alone (inline here, as every looked-up frame pays for it).
namespace flow_key {

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
// words past it too, so that a key's last vector holds nothing past its end). `words` ends at the
// last word any mask keeps.
struct KeyMasks {
  KeyShape shape;
  uint32_t words = 0;
  alignas(16) uint64_t m[FlowKey::kMaxWords] = {};
  // The parse fields of the frame whose key end these masks were made for, when that end
  // follows from them alone (see EndFollowsLayout); layout_b == 0 when none.
  uint64_t layout_a = 0;
  uint32_t layout_b = 0;
  uint32_t end = 0;
};

// Traffic comes in few shapes, mostly one after the other: the last one's masks are kept (per
// thread, as every data-plane lcore builds keys), so a key is loads and ANDs.
extern constinit thread_local KeyMasks t_masks;

// Where the headers are and which they are, and a TCP header's length: a nonzero key end is a
// function of these, except for ARP (it also needs the frame's length) and ICMPv6 (its type
// byte).
struct KeyLayout {
  uint64_t a;
  uint32_t b;  // never 0
};
inline KeyLayout LayoutOf(const uint8_t* frame, const ParsedPacket& p) {
  const uint32_t tcp_offset =
      p.ip_proto == kIpProtoTcp && p.l4_offset + 20u <= p.l3_end ? frame[p.l4_offset + 12] >> 4 : 0;
  return {uint64_t{p.ether_type} | uint64_t{p.l3_offset} << 16 | uint64_t{p.l4_offset} << 32 |
              uint64_t{p.l3_end} << 48,
          1u | uint32_t{p.ip_version} << 8 | uint32_t{p.ip_proto} << 16 | tcp_offset << 24};
}

// t_masks made for a frame of another layout than the last one's; false (t_masks unchanged) when
// the frame has no key.
bool MasksFor(const uint8_t* frame, const ParsedPacket& p, uint32_t length,
              const KeyLayout& layout);

// The key's words, masked, each 16 bytes compared with `previous`'s as they are stored: whether
// they all equal (never, without a previous key). The first three vectors hold the key of every
// untagged IPv4 frame without options; the other three are loaded only for longer keys (the masks
// clear what lies past a key's end in its last vector). Reads 96 bytes from `bytes` for the
// longest keys.
inline bool LoadMaskedWords(const uint8_t* bytes, const KeyMasks& masks, const FlowKey* previous,
                            FlowKey& key) {
  static_assert(sizeof(key.w) == 6 * sizeof(__m128i));
  // SAFETY: callers give 96 readable bytes (BuildNextFlowKey's check, or LoadCopiedWords's
  // buffer); masks.m is 16-byte aligned; __m128i may alias any type.
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

// LoadMaskedWords from a copy of the frame's key bytes: for a frame that ends near its buffer's
// end, past which nothing may be read.
bool LoadCopiedWords(const uint8_t* frame, const KeyMasks& masks, const FlowKey* previous,
                     FlowKey& key);

// The key's words hashed with its port (keyed per process).
uint64_t HashWords(const uint64_t* w, uint32_t words, uint32_t in_port);

}  // namespace flow_key

inline bool BuildNextFlowKey(const uint8_t* frame, uint32_t length, uint32_t readable,
                             const ParsedPacket& p, uint32_t in_port, const FlowKey* previous,
                             FlowKey& key) {
  using namespace flow_key;
  key.in_port = in_port;
  key.hash = 0;
  // Frames come in runs of one layout: the last one's end and masks serve the next.
  const KeyLayout layout = LayoutOf(frame, p);
  const KeyMasks& masks = t_masks;
  if ((layout.a != masks.layout_a || layout.b != masks.layout_b) &&
      !MasksFor(frame, p, length, layout)) {
    key.words = 0;
    return false;
  }
  // The word count and port are compared one by one: a load of both fields together, just after
  // they were stored one by one, would wait for both stores to retire (store forwarding fails).
  if (previous != nullptr && (previous->words != masks.words || previous->in_port != in_port)) {
    previous = nullptr;
  }
  const bool same = std::max(readable, length) >= sizeof(key.w)
                        ? LoadMaskedWords(frame, masks, previous, key)
                        : LoadCopiedWords(frame, masks, previous, key);
  const uint32_t words = masks.words;
  key.words = words;
  // (A repeat's key is whole too: a verdict that cannot be shared looks it up like any other.)
  key.hash = same ? previous->hash : HashWords(key.w, words, in_port);
  return same;
}

}  // namespace qosvisor::vswitch
