// Conformance of every rank-queue implementation against an exact reference (sort by key, FIFO
// among equal keys, largest-and-newest as max), in both the fixed and the circular (cFFS) form.
#include <algorithm>
#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "sched/ffs_rank_queue.h"
#include "sched/heap_rank_queue.h"

namespace qosvisor::sched {
namespace {

// The reference: a plain list searched linearly, with the shared rank -> key mapping.
class ReferenceQueue {
 public:
  explicit ReferenceQueue(const RankQueueConfig& c) : map_(c) {}
  bool Push(uint32_t id, uint64_t rank) {
    bool clamped;
    uint64_t key = map_.Map(rank, items_.empty(), &clamped);
    items_.push_back({key, seq_++, id});
    return clamped;
  }
  uint32_t PopMin() {
    size_t best = 0;
    for (size_t i = 1; i < items_.size(); ++i) {
      if (Before(items_[i], items_[best])) best = i;
    }
    uint32_t id = items_[best].id;
    map_.OnPopMin(items_[best].key);
    items_.erase(items_.begin() + static_cast<long>(best));
    return id;
  }
  uint32_t PeekMax() const {
    size_t best = 0;
    for (size_t i = 1; i < items_.size(); ++i) {
      if (Before(items_[best], items_[i])) best = i;
    }
    return items_[best].id;
  }
  void Remove(uint32_t id) {
    for (size_t i = 0; i < items_.size(); ++i) {
      if (items_[i].id == id) {
        items_.erase(items_.begin() + static_cast<long>(i));
        return;
      }
    }
  }
  uint64_t KeyOf(uint32_t id) const {
    for (const Item& it : items_) {
      if (it.id == id) return it.key;
    }
    return UINT64_MAX;
  }
  size_t size() const { return items_.size(); }
  uint64_t MinKey() const {
    uint64_t min = UINT64_MAX;
    for (const Item& it : items_) min = std::min(min, it.key);
    return min;
  }

 private:
  struct Item {
    uint64_t key, seq;
    uint32_t id;
  };
  static bool Before(const Item& a, const Item& b) {
    return a.key < b.key || (a.key == b.key && a.seq < b.seq);
  }
  RankKeyMap map_;
  std::vector<Item> items_;
  uint64_t seq_ = 0;
};

}  // namespace

TEMPLATE_TEST_CASE("rank queue matches the reference model", "[rank_queue]", FfsRankQueue,
                   HeapRankQueue) {
  struct Shape {
    uint32_t buckets;
    uint8_t shift;
    bool circular;
    uint64_t rank_span;  // how far ranks reach beyond the moving base
    bool log_scale = false;
  };
  Shape shape = GENERATE(
      Shape{64, 0, false, 80}, Shape{4096, 3, false, 40000}, Shape{64, 0, true, 90},
      Shape{4096, 2, true, 20000}, Shape{1u << 18, 6, true, 1u << 22},
      Shape{kLogBuckets, 0, false, 1ull << 40, true}, Shape{kLogBuckets, 0, false, 600, true});
  const uint32_t kIds = 300;
  RankQueueConfig qc{shape.buckets, shape.shift, shape.circular, shape.log_scale, kIds};
  std::vector<RankNode> nodes(kIds);
  TestType q(qc, RankNodes(nodes.data(), sizeof(RankNode)));
  ReferenceQueue ref(qc);
  std::vector<bool> inside(kIds, false);
  std::vector<uint32_t> present;
  std::mt19937_64 rng(shape.buckets * 7 + shape.circular);
  uint64_t clock = 0;  // circular queues get ranks around a moving time
  uint64_t clamps = 0;
  for (int step = 0; step < 20000; ++step) {
    int op = static_cast<int>(rng() % 10);
    if (op < 5 && present.size() < kIds) {
      uint32_t id;
      do id = static_cast<uint32_t>(rng() % kIds);
      while (inside[id]);
      uint64_t rank = (shape.circular ? clock : 0) + rng() % shape.rank_span;
      if (shape.circular && rng() % 8 == 0 && rank > 100) rank -= 100;  // a late arrival
      bool c1 = q.Push(id, rank);
      bool c2 = ref.Push(id, rank);
      REQUIRE(c1 == c2);
      clamps += c1;
      REQUIRE(q.KeyOf(id) == ref.KeyOf(id));
      inside[id] = true;
      present.push_back(id);
    } else if (op < 8 && !present.empty()) {
      uint32_t a = q.PopMin();
      uint32_t b = ref.PopMin();
      REQUIRE(a == b);
      inside[a] = false;
      present.erase(std::find(present.begin(), present.end(), a));
      clock += rng() % 64;
    } else if (op < 9 && !present.empty()) {
      uint32_t a = q.PeekMax();
      REQUIRE(a == ref.PeekMax());
      q.Remove(a);
      ref.Remove(a);
      inside[a] = false;
      present.erase(std::find(present.begin(), present.end(), a));
    } else if (!present.empty()) {
      uint32_t id = present[rng() % present.size()];
      q.Remove(id);
      ref.Remove(id);
      inside[id] = false;
      present.erase(std::find(present.begin(), present.end(), id));
    }
    REQUIRE(q.size() == ref.size());
    REQUIRE(q.Empty() == (ref.size() == 0));
    if (!present.empty()) {
      // PeekMin finds the smallest key without reading it from a node (FFS derives it from the
      // bucket), so it must be the reference's smallest key, not only the right element.
      REQUIRE(q.PeekMin() != kNoId);
      REQUIRE(q.KeyOf(q.PeekMin()) == ref.MinKey());
    }
  }
  // Drain: the whole remaining order must agree.
  while (ref.size() > 0) REQUIRE(q.PopMin() == ref.PopMin());
  CHECK(q.PopMin() == kNoId);
  CHECK(q.PeekMax() == kNoId);
  if (shape.buckets == 64) CHECK(clamps > 0);  // the small shapes do exercise clamping
  if (shape.log_scale) CHECK(clamps == 0);     // the log scale covers every rank
}

TEST_CASE("ffs rank queue: FIFO among equal ranks, max is the newest of the largest",
          "[rank_queue]") {
  std::vector<RankNode> nodes(8);
  FfsRankQueue q(RankQueueConfig{64, 0, false, false, 8},
                 RankNodes(nodes.data(), sizeof(RankNode)));
  CHECK_FALSE(q.Push(0, 5));
  CHECK_FALSE(q.Push(1, 5));
  CHECK_FALSE(q.Push(2, 9));
  CHECK_FALSE(q.Push(3, 9));
  CHECK(q.Push(4, 1000));  // beyond 64 buckets: clamped into the last one
  CHECK(q.KeyOf(4) == 63);
  CHECK(q.PeekMax() == 4);
  q.Remove(4);
  CHECK(q.PeekMax() == 3);
  CHECK(q.PopMin() == 0);
  CHECK(q.PopMin() == 1);
  CHECK(q.PopMin() == 2);
  CHECK(q.PopMin() == 3);
  CHECK(q.Empty());
}

// What srpt does: the minimum leaves and comes back with a smaller rank (its message's next
// packet), now and then a new element arrives anywhere, and the largest is evicted. The FFS queue
// keeps such a minimum in front of its buckets; order, max, removal and the peeks must still be
// the reference's.
TEMPLATE_TEST_CASE("rank queue matches the reference when the minimum returns smaller",
                   "[rank_queue]", FfsRankQueue, HeapRankQueue) {
  const bool log_scale = GENERATE(false, true);
  const uint32_t kIds = 200;
  RankQueueConfig qc{log_scale ? kLogBuckets : 4096, 0, false, log_scale, kIds};
  std::vector<RankNode> nodes(kIds);
  TestType q(qc, RankNodes(nodes.data(), sizeof(RankNode)));
  ReferenceQueue ref(qc);
  std::vector<uint64_t> rank_of(kIds, 0);
  std::vector<uint32_t> outside;
  for (uint32_t id = 0; id < kIds; ++id) outside.push_back(id);
  std::mt19937_64 rng(log_scale ? 11 : 12);
  auto push = [&](uint32_t id, uint64_t rank) {
    rank_of[id] = rank;
    REQUIRE(q.Push(id, rank) == ref.Push(id, rank));
    REQUIRE(q.KeyOf(id) == ref.KeyOf(id));
  };
  for (int step = 0; step < 20000; ++step) {
    const int op = static_cast<int>(rng() % 10);
    if (op < 3 && !outside.empty()) {
      const size_t k = rng() % outside.size();
      const uint32_t id = outside[k];
      outside.erase(outside.begin() + static_cast<long>(k));
      push(id, rng() % 4000);
    } else if (op < 9 && ref.size() > 0) {
      const uint32_t id = q.PopMin();
      REQUIRE(id == ref.PopMin());
      const uint64_t step_down = rng() % 3 == 0 ? 0 : 1 + rng() % 200;  // sometimes a tie
      if (rank_of[id] >= step_down && rng() % 6 != 0) {
        push(id, rank_of[id] - step_down);
      } else {
        outside.push_back(id);
      }
    } else if (ref.size() > 0) {
      const uint32_t id = q.PeekMax();
      REQUIRE(id == ref.PeekMax());
      q.Remove(id);
      ref.Remove(id);
      outside.push_back(id);
    }
    REQUIRE(q.size() == ref.size());
    if (ref.size() > 0) {
      REQUIRE(q.KeyOf(q.PeekMin()) == ref.MinKey());
      uint32_t next[8];
      const uint32_t known = q.PeekNext(next, 8);
      REQUIRE(known >= 1);
      REQUIRE(next[0] == q.PeekMin());
      REQUIRE(q.PeekAt(0) == q.PeekMin());
      for (uint32_t k = 1; k < known; ++k) {
        const uint32_t at = q.PeekAt(k);
        if (at != kNoId) REQUIRE(at == next[k]);
      }
    }
  }
  while (ref.size() > 0) REQUIRE(q.PopMin() == ref.PopMin());
  CHECK(q.Empty());
}

TEST_CASE("circular ffs: the window follows time and wraps around the buckets", "[rank_queue]") {
  std::vector<RankNode> nodes(4);
  FfsRankQueue q(RankQueueConfig{64, 0, true, false, 4}, RankNodes(nodes.data(), sizeof(RankNode)));
  for (uint64_t t = 1000; t < 1000 + 64 * 5; t += 7) {
    CHECK_FALSE(q.Push(1, t));
    CHECK_FALSE(q.Push(0, t + 60));  // near the far edge of the window: wraps in the buckets
    CHECK(q.PeekMax() == 0);
    CHECK(q.PopMin() == 1);
    CHECK(q.PopMin() == 0);
  }
  CHECK_FALSE(q.Push(2, 5000));
  CHECK_FALSE(q.Push(3, 4990));  // earlier, and the window still covers both: it moves down
  CHECK(q.KeyOf(3) == 4990);
  CHECK_FALSE(q.Push(1, 10));  // too early for the window: filed at the base, behind 3
  CHECK(q.KeyOf(1) == 4990);
  CHECK(q.PopMin() == 3);
  CHECK(q.PopMin() == 1);
  CHECK(q.PopMin() == 2);
}

TEST_CASE("log-scale keys are monotone, exact for small ranks, 0.8% coarse above", "[rank_queue]") {
  for (uint64_t r = 0; r < 256; ++r) CHECK(LogKey(r) == r);
  uint64_t prev = LogKey(255);
  std::mt19937_64 rng(3);
  std::vector<uint64_t> ranks;
  for (int i = 0; i < 10'000; ++i) ranks.push_back(rng() >> (rng() % 64));
  ranks.push_back(UINT64_MAX);
  std::sort(ranks.begin(), ranks.end());
  for (uint64_t r : ranks) {
    uint64_t k = LogKey(r);
    CHECK(k < kLogBuckets);
    if (r >= 256) CHECK(k >= prev);
    if (r >= 256) prev = k;
  }
  CHECK(LogKey(1460) != LogKey(1480));  // one packet of difference still counts
  CHECK(LogKey(1'000'000) == LogKey(1'003'000));
}

TEST_CASE("ffs rank queue: long runs of one key span chunks, removal anywhere keeps FIFO",
          "[rank_queue]") {
  // Few keys and many ids: every bucket's FIFO runs over several chunks, and ids are removed at
  // its head, its tail and in the middle, then pushed again. With as many keys as buckets and
  // few ids, buckets keep going between empty, one element inline and a chunk.
  const auto [kIds, kKeys] =
      GENERATE(std::pair<uint32_t, uint64_t>{400, 3}, std::pair<uint32_t, uint64_t>{48, 64});
  std::vector<RankNode> nodes(kIds);
  FfsRankQueue q(RankQueueConfig{64, 0, false, false, kIds},
                 RankNodes(nodes.data(), sizeof(RankNode)));
  std::map<uint64_t, std::deque<uint32_t>> ref;  // key -> FIFO
  std::vector<bool> inside(kIds, false);
  std::mt19937_64 rng(11);
  auto ref_size = [&ref] {
    size_t n = 0;
    for (auto& [k, d] : ref) n += d.size();
    return n;
  };
  for (int step = 0; step < 30000; ++step) {
    const int op = static_cast<int>(rng() % 10);
    const uint32_t id = static_cast<uint32_t>(rng() % kIds);
    if (op < 5 && !inside[id]) {
      const uint64_t key = rng() % kKeys;
      q.Push(id, key);
      ref[key].push_back(id);
      inside[id] = true;
    } else if (op < 7 && !q.Empty()) {
      auto it = ref.begin();
      while (it->second.empty()) ++it;
      // The hint agrees with the order pops will give, as far as it reaches.
      uint32_t ahead[8];
      const uint32_t n = q.PeekNext(ahead, 8);
      REQUIRE(n >= 1);
      std::vector<uint32_t> order;
      for (auto jt = it; jt != ref.end() && order.size() < n; ++jt) {
        for (uint32_t x : jt->second) {
          if (order.size() < n) order.push_back(x);
        }
      }
      for (uint32_t k = 0; k < n; ++k) REQUIRE(ahead[k] == order[k]);
      // PeekAt names the k-th pick whenever it lies in the front or the minimum's bucket (here
      // runs of one key span chunks), and is never wrong.
      std::vector<uint32_t> picks;
      for (auto jt = it; jt != ref.end() && picks.size() < 13; ++jt) {
        for (uint32_t x : jt->second) {
          if (picks.size() < 13) picks.push_back(x);
        }
      }
      REQUIRE(q.PeekAt(0) == q.PeekMin());
      for (uint32_t k = 0; k < 13; ++k) {
        const uint32_t at = q.PeekAt(k);
        if (at == kNoId) continue;
        REQUIRE(k < picks.size());
        REQUIRE(at == picks[k]);
      }
      if (it->second.size() >= 13) REQUIRE(q.PeekAt(12) == picks[12]);
      const uint32_t got = q.PopMin();
      REQUIRE(got == it->second.front());
      it->second.pop_front();
      inside[got] = false;
    } else if (inside[id]) {
      const uint64_t key = q.KeyOf(id);
      auto& d = ref[key];
      d.erase(std::find(d.begin(), d.end(), id));
      q.Remove(id);
      inside[id] = false;
    }
    REQUIRE(q.size() == ref_size());
    if (!q.Empty()) {
      auto last = ref.rbegin();
      while (last->second.empty()) ++last;
      REQUIRE(q.PeekMax() == last->second.back());
    }
  }
}

TEST_CASE(
    "ffs rank queue: a lone element of its key takes no chunk, a second takes one until "
    "the bucket empties",
    "[rank_queue]") {
  const uint32_t kIds = 64;
  std::vector<RankNode> nodes(kIds);
  FfsRankQueue q(RankQueueConfig{64, 0, false, false, kIds},
                 RankNodes(nodes.data(), sizeof(RankNode)));
  // One element per key: all inline.
  for (uint32_t id = 0; id < 8; ++id) CHECK_FALSE(q.Push(id, 10 + id));
  CHECK(q.ChunksHeld() == 0);
  CHECK(q.PeekMin() == 0);
  CHECK(q.PeekMax() == 7);
  CHECK(q.PeekSecond() == 1);
  uint32_t ahead[8];
  // The front (id 0, the first pushed and below every other key), then the first two
  // non-empty buckets, one element each.
  REQUIRE(q.PeekNext(ahead, 8) == 3);
  CHECK(ahead[0] == 0);
  CHECK(ahead[1] == 1);
  CHECK(ahead[2] == 2);
  q.Remove(7);  // an inline max
  CHECK(q.PeekMax() == 6);
  q.Remove(3);  // an inline element in the middle
  CHECK(q.PopMin() == 0);
  CHECK(q.ChunksHeld() == 0);

  // A second element of key 11 (id 1 is there inline): both move into one chunk, FIFO kept.
  CHECK_FALSE(q.Push(20, 11));
  CHECK(q.ChunksHeld() == 1);
  CHECK(q.PeekMin() == 1);
  REQUIRE(q.PeekNext(ahead, 4) == 3);  // the chunked bucket, then the inline one after it
  CHECK(ahead[0] == 1);
  CHECK(ahead[1] == 20);
  CHECK(ahead[2] == 2);
  CHECK(q.PopMin() == 1);
  // Down to one element the bucket keeps its chunk, so swinging between one and two is free.
  CHECK(q.ChunksHeld() == 1);
  CHECK_FALSE(q.Push(21, 11));
  CHECK(q.ChunksHeld() == 1);
  CHECK(q.PopMin() == 20);
  CHECK(q.PopMin() == 21);
  // Empty again: the chunk went back, and the next element of that key is inline.
  CHECK(q.ChunksHeld() == 0);
  CHECK_FALSE(q.Push(22, 11));
  CHECK(q.ChunksHeld() == 0);
  CHECK(q.PopMin() == 22);
  for (uint32_t id : {2u, 4u, 5u, 6u}) CHECK(q.PopMin() == id);
  CHECK(q.Empty());

  // A long run of one key spans chunks, and gives them all back as it drains, from both ends.
  for (uint32_t id = 30; id < 60; ++id) CHECK_FALSE(q.Push(id, 40));
  CHECK(q.ChunksHeld() == 3);  // 14 + 14 + 2
  CHECK(q.PeekMax() == 59);
  q.Remove(59);
  q.Remove(58);
  CHECK(q.ChunksHeld() == 2);
  CHECK(q.PeekMax() == 57);
  for (uint32_t id = 30; id < 44; ++id) CHECK(q.PopMin() == id);
  CHECK(q.ChunksHeld() == 1);
  q.Remove(50);  // from the middle of the remaining chunk
  for (uint32_t id = 44; id < 58; ++id) {
    if (id != 50) CHECK(q.PopMin() == id);
  }
  CHECK(q.Empty());
  CHECK(q.ChunksHeld() == 0);
}

}  // namespace qosvisor::sched
