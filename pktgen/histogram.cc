// Percentiles and bucket edges of the log-linear histogram.
#include "pktgen/histogram.h"

#include <algorithm>
#include <cmath>

namespace qosvisor::pktgen {

void Histogram::Merge(const Histogram& other) {
  for (int i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  total_ += other.total_;
  sum_ += other.sum_;
  max_ = std::max(max_, other.max_);
  min_ = std::min(min_, other.min_);
}

uint64_t Histogram::LowerEdge(int index) {
  if (index < kSub) return static_cast<uint64_t>(index);
  const int shift = index / kSub - 1;
  const uint64_t sub = static_cast<uint64_t>(index % kSub) + kSub;
  return sub << shift;
}

uint64_t Histogram::UpperEdge(int index) {
  if (index < kSub) return static_cast<uint64_t>(index);
  const int shift = index / kSub - 1;
  return LowerEdge(index) + ((uint64_t{1} << shift) - 1);
}

uint64_t Histogram::Percentile(double q) const {
  if (total_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const uint64_t rank =
      std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(total_))));
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) return std::min(std::max(UpperEdge(i), min_), max_);
  }
  return max_;
}

}  // namespace qosvisor::pktgen
