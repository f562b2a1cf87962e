// Hierarchical find-first-set bitmap (Eiffel's FFS): which of up to 64^4 buckets are non-empty.
// Every query reads one 64-bit word per level, so it costs the same at 64 and at 16M buckets.
#pragma once

#include <cstddef>
#include <cstdint>

#include "sched/page_memory.h"

namespace qosvisor::sched {

class HierBitmap {
 public:
  static constexpr int kMaxLevels = 4;
  static constexpr uint32_t kNone = UINT32_MAX;

  HierBitmap() = default;
  explicit HierBitmap(uint32_t num_bits, PageOptions pages = {}) { Reset(num_bits, pages); }

  void Reset(uint32_t num_bits, PageOptions pages = {}) {
    num_bits_ = num_bits;
    levels_ = 0;
    uint32_t n = num_bits;
    size_t total = 0;
    // Level 0 holds one bit per bucket; each level above one bit per word of the level below.
    do {
      n = (n + 63) / 64;
      offset_[levels_] = static_cast<uint32_t>(total);
      words_[levels_] = n;
      total += n;
      ++levels_;
    } while (n > 1 && levels_ < kMaxLevels);
    bits_ = PageArray<uint64_t>(total, pages);  // zeroed
  }

  uint32_t size() const { return num_bits_; }
  PageKind page_kind() const { return bits_.kind(); }
  size_t bytes() const { return bits_.bytes(); }
  bool Empty() const { return Word(levels_ - 1, 0) == 0; }
  bool Test(uint32_t i) const { return (Word(0, i >> 6) >> (i & 63)) & 1; }

  void Set(uint32_t i) {
    for (int l = 0; l < levels_; ++l) {
      uint64_t& w = Word(l, i >> 6);
      bool was_zero = w == 0;
      w |= uint64_t{1} << (i & 63);
      if (!was_zero) return;  // the summary bits above are already set
      i >>= 6;
    }
  }

  void Clear(uint32_t i) {
    for (int l = 0; l < levels_; ++l) {
      uint64_t& w = Word(l, i >> 6);
      w &= ~(uint64_t{1} << (i & 63));
      if (w != 0) return;  // the word still has members, the summary stays set
      i >>= 6;
    }
  }

  uint32_t First() const {
    uint64_t top = Word(levels_ - 1, 0);
    return top == 0 ? kNone
                    : Descend(levels_ - 1, static_cast<uint32_t>(__builtin_ctzll(top)), true);
  }
  uint32_t Last() const {
    uint64_t top = Word(levels_ - 1, 0);
    return top == 0 ? kNone
                    : Descend(levels_ - 1, static_cast<uint32_t>(63 - __builtin_clzll(top)), false);
  }

  // Smallest set bit >= pos, or kNone.
  uint32_t Next(uint32_t pos) const {
    if (pos >= num_bits_) return kNone;
    uint32_t idx = pos;
    for (int l = 0; l < levels_; ++l) {
      uint32_t wi = idx >> 6;
      if (wi >= words_[l]) return kNone;
      uint64_t w = Word(l, wi) & (~uint64_t{0} << (idx & 63));
      if (w != 0) return Descend(l, (wi << 6) | static_cast<uint32_t>(__builtin_ctzll(w)), true);
      idx = wi + 1;  // continue with the next word, found through the level above
    }
    return kNone;
  }

  // Largest set bit <= pos, or kNone.
  uint32_t Prev(uint32_t pos) const {
    if (pos >= num_bits_) pos = num_bits_ - 1;
    int64_t idx = pos;
    for (int l = 0; l < levels_; ++l) {
      if (idx < 0) return kNone;
      uint32_t wi = static_cast<uint32_t>(idx) >> 6;
      uint64_t w = Word(l, wi) & (~uint64_t{0} >> (63 - (idx & 63)));
      if (w != 0) {
        return Descend(l, (wi << 6) | static_cast<uint32_t>(63 - __builtin_clzll(w)), false);
      }
      idx = static_cast<int64_t>(wi) - 1;
    }
    return kNone;
  }

 private:
  uint64_t& Word(int level, uint32_t i) { return bits_[offset_[level] + i]; }
  uint64_t Word(int level, uint32_t i) const { return bits_[offset_[level] + i]; }

  // `idx` is a set bit at `level`; walks down taking the lowest (or highest) set bit of each
  // word below it, which exists because summary bits are set exactly for non-zero words.
  uint32_t Descend(int level, uint32_t idx, bool lowest) const {
    while (level > 0) {
      --level;
      uint64_t w = Word(level, idx);
      idx = (idx << 6) | (lowest ? static_cast<uint32_t>(__builtin_ctzll(w))
                                 : static_cast<uint32_t>(63 - __builtin_clzll(w)));
    }
    return idx;
  }

  PageArray<uint64_t> bits_;
  uint32_t offset_[kMaxLevels] = {};
  uint32_t words_[kMaxLevels] = {};
  uint32_t num_bits_ = 0;
  int levels_ = 0;
};

}  // namespace qosvisor::sched
