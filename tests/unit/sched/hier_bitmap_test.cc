// The hierarchical FFS bitmap against std::set at one to four levels: first, last, next, prev,
// with ids clustered (words fill and empty) and scattered (the summary levels carry the search).
#include "sched/hier_bitmap.h"

#include <catch2/catch.hpp>
#include <random>
#include <set>

namespace qosvisor::sched {

TEST_CASE("hierarchical bitmap agrees with an ordered set", "[hier_bitmap]") {
  uint32_t n = GENERATE(64u, 100u, 4096u, 4097u, 262144u, 1u << 24);
  HierBitmap bm(n);
  std::set<uint32_t> ref;
  std::mt19937_64 rng(n);
  CHECK(bm.Empty());
  CHECK(bm.First() == HierBitmap::kNone);
  CHECK(bm.Last() == HierBitmap::kNone);
  for (int step = 0; step < 4000; ++step) {
    // Cluster some ids so words fill and empty, scatter others across the range.
    uint32_t i = (step % 3 == 0) ? static_cast<uint32_t>(rng() % std::min<uint32_t>(n, 200))
                                 : static_cast<uint32_t>(rng() % n);
    if (rng() % 2) {
      bm.Set(i);
      ref.insert(i);
    } else {
      bm.Clear(i);
      ref.erase(i);
    }
    REQUIRE(bm.Empty() == ref.empty());
    REQUIRE(bm.Test(i) == (ref.count(i) == 1));
    REQUIRE(bm.First() == (ref.empty() ? HierBitmap::kNone : *ref.begin()));
    REQUIRE(bm.Last() == (ref.empty() ? HierBitmap::kNone : *ref.rbegin()));
    uint32_t q = static_cast<uint32_t>(rng() % n);
    auto next = ref.lower_bound(q);
    REQUIRE(bm.Next(q) == (next == ref.end() ? HierBitmap::kNone : *next));
    auto prev = ref.upper_bound(q);
    REQUIRE(bm.Prev(q) == (prev == ref.begin() ? HierBitmap::kNone : *std::prev(prev)));
  }
}

TEST_CASE("hierarchical bitmap edges: both ends of the range", "[hier_bitmap]") {
  HierBitmap bm(1u << 18);
  bm.Set(0);
  bm.Set((1u << 18) - 1);
  CHECK(bm.Next(1) == (1u << 18) - 1);
  CHECK(bm.Prev((1u << 18) - 2) == 0);
  CHECK(bm.Next((1u << 18)) == HierBitmap::kNone);
  bm.Clear(0);
  CHECK(bm.Prev((1u << 18) - 2) == HierBitmap::kNone);
  CHECK(bm.First() == (1u << 18) - 1);
}

}  // namespace qosvisor::sched
