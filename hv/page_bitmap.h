// Bitmaps of guest pages (bit i of word i / 64 = page i), as KVM's dirty log and the VMM's own
// trackers give them.
#pragma once

#include <bit>
#include <cstdint>
#include <vector>

namespace qosvisor::hv {

inline uint64_t CountBits(const std::vector<uint64_t>& bitmap) {
  uint64_t n = 0;
  for (uint64_t w : bitmap) n += static_cast<uint64_t>(std::popcount(w));
  return n;
}

// into |= from; `into` grows to from's size if it is shorter.
inline void OrInto(std::vector<uint64_t>& into, const std::vector<uint64_t>& from) {
  if (from.size() > into.size()) into.resize(from.size(), 0);
  for (size_t i = 0; i < from.size(); ++i) into[i] |= from[i];
}

// The numbers of the set bits, in ascending order.
inline std::vector<uint64_t> SetBits(const std::vector<uint64_t>& bitmap) {
  std::vector<uint64_t> out;
  out.reserve(CountBits(bitmap));
  for (size_t i = 0; i < bitmap.size(); ++i) {
    for (uint64_t w = bitmap[i]; w != 0; w &= w - 1) {
      out.push_back(i * 64 + static_cast<uint64_t>(std::countr_zero(w)));
    }
  }
  return out;
}

}  // namespace qosvisor::hv
