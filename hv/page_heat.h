// What a VM's memory does, learnt from its changed pages: one multi-bit saturating counter per
// 2 MiB region, aged at every harvest the way page-walk reference counters are (shift right,
// add what was seen), so a region's counter says how much of it changes and how recently.
//
// A harvest adds ceil(changed pages / 4) to the halved counter (8-bit counters; wider or
// narrower ones scale the same way): a region rewritten whole every period climbs to the
// maximum and stays there, one changed once halves back to 0 within counter-bits harvests, and
// a steady trickle settles at twice its increment. The counters feed the huge-page decision,
// the order in which a migration sends memory, and placement (a VM's changed pages and rate).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "common/status.h"

namespace qosvisor::hv {

// What placement needs of a VM's memory.
struct VmPageSummary {
  uint64_t changed_pages = 0;    // distinct 4 KiB pages changed over the tracker's window
  double pages_per_second = 0;   // changed pages per second, smoothed over the window
};

// How a region's heat is read.
enum class RegionHeat : uint8_t { kCold, kWarm, kHot };
// Whether a huge page backs a region: the policy's decision for it.
enum class HugeDecision : uint8_t { kSmall, kHuge };
const char* RegionHeatName(RegionHeat heat);
const char* HugeDecisionName(HugeDecision decision);

class PageHeat {
 public:
  static constexpr uint64_t kPageBytes = 4096;
  static constexpr uint64_t kRegionBytes = 2ull << 20;
  static constexpr uint32_t kPagesPerRegion = kRegionBytes / kPageBytes;

  // `counter_bits` in [2, 16]: the counters' width, and so how many harvests they remember.
  PageHeat(uint64_t memory_bytes, uint32_t counter_bits = 8);

  // One harvest: the pages changed since the previous one (bit per 4 KiB page), `seconds` apart.
  void Add(const std::vector<uint64_t>& changed, double seconds);
  // The pages that hold something (bit per page), for the density the huge-page policy reads.
  void SetPopulated(const std::vector<uint64_t>& populated);

  size_t regions() const { return counters_.size(); }
  uint32_t counter_max() const { return counter_max_; }
  uint32_t counter(size_t region) const { return counters_[region]; }
  // Harvests (of the last 8) in which the region changed at all.
  uint32_t recent_harvests(size_t region) const;
  uint32_t populated_pages(size_t region) const { return populated_[region]; }
  // Pages of the region changed at the last harvest.
  uint32_t last_changed(size_t region) const { return last_changed_[region]; }
  uint64_t harvests() const { return harvests_; }

  // Cold: no change within the counters' memory. Hot: at least a quarter of the maximum, i.e.
  // about an eighth of its pages rewritten every period, steadily.
  RegionHeat Heat(size_t region) const;
  // Huge where it pays: densely populated (7/8 of its pages: a sparse region would waste most
  // of a 2 MiB page) and steadily used (changed in at least half of the recent harvests: a
  // dense but idle region gains nothing from fewer TLB and page-table misses and would only cost
  // the copy that collapsing it takes). A region rewritten whole every period counts as steady:
  // bench_pages measures such a region, written at random, 1.5 times as fast on a huge page, and
  // still faster while the tracker write-protects it. Everything else stays small.
  HugeDecision DecideHuge(size_t region) const;

  VmPageSummary Summary() const;
  // Regions in the order a migration should send them: coldest first, ties by address.
  std::vector<uint32_t> ColdestFirst() const;

 private:
  uint32_t counter_bits_;
  uint32_t counter_max_;
  std::vector<uint16_t> counters_;
  std::vector<uint8_t> history_;  // bit i: changed at the harvest i back
  std::vector<uint16_t> populated_;
  std::vector<uint16_t> last_changed_;
  // The last counter_bits harvests' bitmaps and durations: the window of Summary().
  std::deque<std::vector<uint64_t>> window_;
  std::deque<double> window_seconds_;
  uint64_t harvests_ = 0;
};

// Applies a huge-page policy to guest memory region by region: kAuto backs what DecideHuge
// says, kAll every region, kOff leaves memory as the kernel keeps it. `applied` (one entry per
// region: -1 not yet, 0 small, 1 huge) remembers what was done, so a region costs a madvise only
// when its decision changes; at most `max_collapses` regions are collapsed per call (each copies
// 2 MiB). A region that fails (EAGAIN: pages busy) is left for the next call; the last such
// error is returned.
enum class HugePolicy : uint8_t { kAuto, kOff, kAll };
class GuestMemory;
Status ApplyHugePolicy(GuestMemory& memory, const PageHeat& heat, HugePolicy policy,
                       std::vector<int8_t>& applied, size_t max_collapses);

}  // namespace qosvisor::hv
