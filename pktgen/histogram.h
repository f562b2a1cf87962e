// Log-linear histogram (HDR style): 64 linear sub-buckets per power of two, so any percentile is
// within 1/64 (1.6%) of the true value, with constant memory and O(1) recording; no sorting.
#pragma once

#include <array>
#include <cstdint>

namespace qosvisor::pktgen {

class Histogram {
 public:
  static constexpr int kSubBits = 6;
  static constexpr int kSub = 1 << kSubBits;
  static constexpr int kBuckets = (64 - kSubBits + 1) * kSub;

  void Record(uint64_t value, uint64_t count = 1) {
    counts_[Index(value)] += count;
    total_ += count;
    if (value > max_) max_ = value;
    if (value < min_) min_ = value;
    sum_ += static_cast<double>(value) * static_cast<double>(count);
  }
  void Merge(const Histogram& other);

  uint64_t count() const { return total_; }
  uint64_t max() const { return total_ ? max_ : 0; }
  uint64_t min() const { return total_ ? min_ : 0; }
  double mean() const { return total_ ? sum_ / static_cast<double>(total_) : 0.0; }
  // The smallest recorded bucket value v with P(X <= v) >= q (q in [0, 1]); the bucket's upper
  // edge, clamped to the observed maximum.
  uint64_t Percentile(double q) const;

  // Bucket index and edges, exposed for CSV output.
  static int Index(uint64_t v) {
    if (v < kSub) return static_cast<int>(v);
    const int exp = 63 - __builtin_clzll(v);  // >= kSubBits
    const int shift = exp - kSubBits;
    return (shift + 1) * kSub + static_cast<int>((v >> shift) - kSub);
  }
  static uint64_t LowerEdge(int index);
  static uint64_t UpperEdge(int index);  // inclusive
  uint64_t CountAt(int index) const { return counts_[index]; }

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t total_ = 0;
  uint64_t max_ = 0;
  uint64_t min_ = UINT64_MAX;
  double sum_ = 0;
};

}  // namespace qosvisor::pktgen
