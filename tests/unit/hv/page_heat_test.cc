// Page-change counters on synthetic dirty logs: aging, saturation, summaries, order, huge pages.
#include "hv/page_heat.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <vector>

using qosvisor::hv::HugeDecision;
using qosvisor::hv::PageHeat;
using qosvisor::hv::RegionHeat;

namespace {

constexpr uint64_t kMemory = 8ull << 20;  // four 2 MiB regions
constexpr uint32_t kRegionPages = PageHeat::kPagesPerRegion;

// A dirty log with `pages` pages changed at the start of `region`.
std::vector<uint64_t> Changed(std::initializer_list<std::pair<uint32_t, uint32_t>> region_pages) {
  std::vector<uint64_t> bitmap(kMemory / 4096 / 64, 0);
  for (auto [region, pages] : region_pages) {
    for (uint32_t p = 0; p < pages; ++p) {
      const uint64_t page = uint64_t{region} * kRegionPages + p;
      bitmap[page / 64] |= 1ull << (page % 64);
    }
  }
  return bitmap;
}

}  // namespace

TEST_CASE("a region rewritten whole every harvest climbs to the maximum and stays there",
          "[page-heat]") {
  PageHeat heat(kMemory);
  const std::vector<uint32_t> expected = {128, 192, 224, 240, 248, 252, 254, 255, 255, 255};
  for (uint32_t want : expected) {
    heat.Add(Changed({{1, kRegionPages}}), 1.0);
    CHECK(heat.counter(1) == want);
  }
  CHECK(heat.counter(0) == 0);
  CHECK(heat.Heat(1) == RegionHeat::kHot);
  CHECK(heat.Heat(0) == RegionHeat::kCold);
  CHECK(heat.last_changed(1) == kRegionPages);
}

TEST_CASE("an idle region ages by halving and is cold after counter-bits harvests",
          "[page-heat]") {
  PageHeat heat(kMemory);
  heat.Add(Changed({{2, kRegionPages}}), 1.0);
  const std::vector<uint32_t> expected = {64, 32, 16, 8, 4, 2, 1, 0};
  for (uint32_t want : expected) {
    heat.Add(Changed({}), 1.0);
    CHECK(heat.counter(2) == want);
  }
  CHECK(heat.Heat(2) == RegionHeat::kCold);
}

TEST_CASE("a steady trickle settles at twice its increment; one page still counts",
          "[page-heat]") {
  PageHeat heat(kMemory);
  for (int i = 0; i < 12; ++i) heat.Add(Changed({{0, 40}, {3, 1}}), 1.0);
  // 40 pages add ceil(40 * 128 / 512) = 10 a harvest: c = c / 2 + 10 settles at 19.
  CHECK(heat.counter(0) == 19);
  CHECK(heat.Heat(0) == RegionHeat::kWarm);
  CHECK(heat.counter(3) == 1);  // a single page is never rounded away
  CHECK(heat.Heat(3) == RegionHeat::kWarm);
}

TEST_CASE("narrower counters saturate at their own maximum and forget sooner", "[page-heat]") {
  PageHeat heat(kMemory, 4);
  CHECK(heat.counter_max() == 15);
  const std::vector<uint32_t> climb = {8, 12, 14, 15, 15};
  for (uint32_t want : climb) {
    heat.Add(Changed({{0, kRegionPages}}), 1.0);
    CHECK(heat.counter(0) == want);
  }
  const std::vector<uint32_t> age = {7, 3, 1, 0};
  for (uint32_t want : age) {
    heat.Add(Changed({}), 1.0);
    CHECK(heat.counter(0) == want);
  }
  // Widths outside [2, 16] are clamped, not trusted.
  CHECK(PageHeat(kMemory, 40).counter_max() == 65535);
  CHECK(PageHeat(kMemory, 0).counter_max() == 3);
}

TEST_CASE("the summary counts distinct changed pages over the window and their rate",
          "[page-heat]") {
  PageHeat heat(kMemory, 4);  // a window of 4 harvests
  CHECK(heat.Summary().changed_pages == 0);
  CHECK(heat.Summary().pages_per_second == 0);
  heat.Add(Changed({{0, 100}}), 0.5);
  heat.Add(Changed({{0, 50}, {1, 10}}), 0.5);  // the 50 are among the 100
  auto s = heat.Summary();
  CHECK(s.changed_pages == 110);
  CHECK(s.pages_per_second == 160.0);  // 160 changes in 1 s
  for (int i = 0; i < 4; ++i) heat.Add(Changed({{3, 8}}), 1.0);  // the first two leave the window
  s = heat.Summary();
  CHECK(s.changed_pages == 8);
  CHECK(s.pages_per_second == 8.0);
}

TEST_CASE("a migration's order is coldest region first, ties by address", "[page-heat]") {
  PageHeat heat(kMemory);
  heat.Add(Changed({{0, kRegionPages}, {2, 64}}), 1.0);
  const std::vector<uint32_t> want = {1, 3, 2, 0};
  CHECK(heat.ColdestFirst() == want);
}

TEST_CASE("huge pages go to dense, steadily used regions, not to sparse or idle ones",
          "[page-heat]") {
  PageHeat heat(kMemory);
  // Region 0: all present, a tenth rewritten each period (dense, steady). Region 1: 8 pages
  // present (sparse). Region 2: all present, rewritten whole each period (dense, steady, its
  // counter saturated). Region 3: all present, written once long ago (dense, idle).
  std::vector<uint64_t> populated = Changed({{0, kRegionPages}, {1, 8}, {2, kRegionPages},
                                             {3, kRegionPages}});
  heat.SetPopulated(populated);
  CHECK(heat.populated_pages(1) == 8);
  heat.Add(Changed({{3, kRegionPages}}), 1.0);
  for (int i = 0; i < 8; ++i) heat.Add(Changed({{0, 51}, {1, 8}, {2, kRegionPages}}), 1.0);
  CHECK(heat.DecideHuge(0) == HugeDecision::kHuge);
  CHECK(heat.DecideHuge(1) == HugeDecision::kSmall);
  CHECK(heat.DecideHuge(2) == HugeDecision::kHuge);
  CHECK(heat.counter(2) == heat.counter_max());
  CHECK(heat.DecideHuge(3) == HugeDecision::kSmall);
  CHECK(heat.recent_harvests(0) == 8);
  CHECK(heat.recent_harvests(3) == 0);
  // Steady means changed in at least half of the recent harvests.
  PageHeat now_and_then(kMemory);
  now_and_then.SetPopulated(populated);
  for (int i = 0; i < 8; ++i) now_and_then.Add(Changed({{0, i % 2 == 0 ? 100u : 0u}}), 1.0);
  CHECK(now_and_then.recent_harvests(0) == 4);
  CHECK(now_and_then.DecideHuge(0) == HugeDecision::kHuge);
  for (int i = 0; i < 2; ++i) now_and_then.Add(Changed({}), 1.0);
  CHECK(now_and_then.recent_harvests(0) == 3);
  CHECK(now_and_then.DecideHuge(0) == HugeDecision::kSmall);
  // Nothing is decided huge before the first harvest.
  PageHeat fresh(kMemory);
  fresh.SetPopulated(populated);
  CHECK(fresh.DecideHuge(0) == HugeDecision::kSmall);
}
