#include "hv/page_heat.h"

#include <algorithm>
#include <bit>
#include <numeric>

#include "hv/guest_memory.h"
#include "hv/page_bitmap.h"

namespace qosvisor::hv {
namespace {

// Changed pages of `region` in a page bitmap: 512 pages are 8 whole words.
uint32_t RegionBits(const std::vector<uint64_t>& bitmap, size_t region) {
  constexpr size_t kWords = PageHeat::kPagesPerRegion / 64;
  uint32_t n = 0;
  for (size_t w = region * kWords; w < (region + 1) * kWords && w < bitmap.size(); ++w) {
    n += static_cast<uint32_t>(std::popcount(bitmap[w]));
  }
  return n;
}

}  // namespace

const char* RegionHeatName(RegionHeat heat) {
  switch (heat) {
    case RegionHeat::kCold: return "cold";
    case RegionHeat::kWarm: return "warm";
    case RegionHeat::kHot: return "hot";
  }
  return "?";
}

const char* HugeDecisionName(HugeDecision decision) {
  return decision == HugeDecision::kHuge ? "huge" : "small";
}

PageHeat::PageHeat(uint64_t memory_bytes, uint32_t counter_bits)
    : counter_bits_(std::clamp<uint32_t>(counter_bits, 2, 16)),
      counter_max_((1u << counter_bits_) - 1) {
  const size_t n = (memory_bytes + kRegionBytes - 1) / kRegionBytes;
  counters_.assign(n, 0);
  history_.assign(n, 0);
  populated_.assign(n, 0);
  last_changed_.assign(n, 0);
}

void PageHeat::Add(const std::vector<uint64_t>& changed, double seconds) {
  // A region rewritten whole adds half the counter's range, so that halving and adding settles
  // a steadily rewritten region at the maximum.
  const uint32_t half_range = (counter_max_ + 1) / 2;
  for (size_t r = 0; r < counters_.size(); ++r) {
    const uint32_t n = RegionBits(changed, r);
    const uint32_t add = (n * half_range + kPagesPerRegion - 1) / kPagesPerRegion;
    counters_[r] = static_cast<uint16_t>(std::min(counter_max_, (counters_[r] >> 1) + add));
    history_[r] = static_cast<uint8_t>((history_[r] << 1) | (n > 0 ? 1 : 0));
    last_changed_[r] = static_cast<uint16_t>(n);
  }
  window_.push_back(changed);
  window_seconds_.push_back(seconds);
  while (window_.size() > counter_bits_) {
    window_.pop_front();
    window_seconds_.pop_front();
  }
  ++harvests_;
}

void PageHeat::SetPopulated(const std::vector<uint64_t>& populated) {
  for (size_t r = 0; r < populated_.size(); ++r) {
    populated_[r] = static_cast<uint16_t>(RegionBits(populated, r));
  }
}

uint32_t PageHeat::recent_harvests(size_t region) const {
  const uint32_t seen = std::min<uint64_t>(harvests_, 8);
  const uint32_t mask = seen >= 8 ? 0xff : (1u << seen) - 1;
  return static_cast<uint32_t>(std::popcount(static_cast<uint32_t>(history_[region]) & mask));
}

RegionHeat PageHeat::Heat(size_t region) const {
  const uint32_t c = counters_[region];
  if (c == 0) return RegionHeat::kCold;
  return c >= (counter_max_ + 1) / 4 ? RegionHeat::kHot : RegionHeat::kWarm;
}

HugeDecision PageHeat::DecideHuge(size_t region) const {
  const bool dense = populated_[region] >= kPagesPerRegion * 7 / 8;
  const uint32_t seen = static_cast<uint32_t>(std::min<uint64_t>(harvests_, 8));
  const bool steady = seen > 0 && recent_harvests(region) * 2 >= seen;
  return dense && steady ? HugeDecision::kHuge : HugeDecision::kSmall;
}

VmPageSummary PageHeat::Summary() const {
  VmPageSummary s;
  if (window_.empty()) return s;
  std::vector<uint64_t> distinct;
  uint64_t total = 0;
  for (const auto& bitmap : window_) {
    OrInto(distinct, bitmap);
    total += CountBits(bitmap);
  }
  s.changed_pages = CountBits(distinct);
  const double seconds = std::accumulate(window_seconds_.begin(), window_seconds_.end(), 0.0);
  s.pages_per_second = seconds > 0 ? static_cast<double>(total) / seconds : 0;
  return s;
}

std::vector<uint32_t> PageHeat::ColdestFirst() const {
  std::vector<uint32_t> order(counters_.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return counters_[a] < counters_[b]; });
  return order;
}

Status ApplyHugePolicy(GuestMemory& memory, const PageHeat& heat, HugePolicy policy,
                       std::vector<int8_t>& applied, size_t max_collapses) {
  if (policy == HugePolicy::kOff || !memory.shared()) return Status::Ok();
  applied.resize(heat.regions(), -1);
  Status last = Status::Ok();
  size_t collapses = 0;
  for (size_t r = 0; r < heat.regions() && collapses < max_collapses; ++r) {
    const bool huge = policy == HugePolicy::kAll || heat.DecideHuge(r) == HugeDecision::kHuge;
    if (applied[r] == (huge ? 1 : 0)) continue;
    if (!huge && applied[r] == -1) {
      applied[r] = 0;  // small is how memory starts; nothing to undo
      continue;
    }
    if (huge) ++collapses;
    if (Status s = memory.AdviseHuge(r * PageHeat::kRegionBytes, huge); !s.ok()) {
      last = s;
      continue;
    }
    applied[r] = huge ? 1 : 0;
  }
  return last;
}

}  // namespace qosvisor::hv
