// The message table: lookups after inserts and erases (backward-shift deletion keeps every probe
// run intact), capacity, reserved slots, idle reclamation, and ids chosen to collide.
#include "sched/message_table.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <random>

#include "fake_mbufs.h"

namespace qosvisor::sched {

constexpr HashKey kTestKey{0x243F6A8885A308D3ull, 0x13198A2E03707345ull};

// `count` ids whose homes all coincide under the multiplicative hash an unkeyed table would use
// (id * golden ratio, top bits): what a sender who knows that hash sends.
std::vector<uint64_t> IdsCollidingUnkeyed(uint32_t index_bits, uint32_t count) {
  const uint64_t golden = 0x9E3779B97F4A7C15ull;
  uint64_t inverse = golden;  // Newton's iteration for golden^-1 mod 2^64
  for (int i = 0; i < 5; ++i) inverse *= 2 - golden * inverse;
  std::vector<uint64_t> ids;
  for (uint64_t j = 0; j < count; ++j) ids.push_back(((0x5ull << (64 - index_bits)) | j) * inverse);
  for (uint64_t id : ids) REQUIRE(((id * golden) >> (64 - index_bits)) == 0x5);
  return ids;
}

// `count` ids with the same home under `key` in table `t`, found by trying ids in turn.
std::vector<uint64_t> IdsWithOneHome(const MessageTable& t, uint32_t count) {
  std::vector<uint64_t> ids;
  const uint32_t home = t.IndexOf(1);
  for (uint64_t id = 1; ids.size() < count; ++id) {
    if (t.IndexOf(id) == home) ids.push_back(id);
  }
  return ids;
}

TEST_CASE("message table agrees with std::map through inserts and erases", "[message_table]") {
  MessageTable t(1000, 3, kTestKey);
  std::map<uint64_t, uint32_t> ref;
  std::mt19937_64 rng(11);
  for (int step = 0; step < 50'000; ++step) {
    // Few distinct ids so that probe runs collide and deletions shift entries back.
    uint64_t id = rng() % 1500;
    auto it = ref.find(id);
    if (it == ref.end()) {
      uint32_t slot = t.Insert(id, 7);
      if (ref.size() == 997) {
        REQUIRE(slot == kNoId);  // 1000 slots minus 3 reserved
        continue;
      }
      REQUIRE(slot != kNoId);
      REQUIRE(slot >= 3);
      REQUIRE(t[slot].message_id == id);
      REQUIRE(t[slot].class_id == 7);
      ref[id] = slot;
    } else if (rng() % 2) {
      t.Erase(it->second);
      ref.erase(it);
    }
    REQUIRE(t.live() == ref.size());
    uint64_t probe = rng() % 1500;
    auto r = ref.find(probe);
    REQUIRE(t.Find(probe) == (r == ref.end() ? kNoId : r->second));
  }
  for (auto& [id, slot] : ref) REQUIRE(t.Find(id) == slot);
}

TEST_CASE("reserved slots are never handed out nor reclaimed", "[message_table]") {
  MessageTable t(4, 2);
  CHECK((t[0].flags & kMsgDefault) != 0);
  uint32_t a = t.Insert(100, 0);
  uint32_t b = t.Insert(200, 0);
  CHECK(a >= 2);
  CHECK(b >= 2);
  CHECK(t.Insert(300, 0) == kNoId);
  const uint32_t timeouts[] = {10, 10};
  CHECK(t.ReclaimIdle(1'000, timeouts, 16) == 2);  // both empty since time 0
  CHECK(t.live() == 0);
  CHECK((t[0].flags & kMsgDefault) != 0);
  CHECK((t[1].flags & kMsgDefault) != 0);
}

TEST_CASE("a one-packet message takes a slot that no lookup finds", "[message_table]") {
  MessageTable t(4, 1, kTestKey);
  const uint32_t indexed = t.Insert(7, 0);
  const uint32_t lone = t.InsertUnindexed(7, 0);  // the same id again, as a sender's duplicate
  const uint32_t other = t.InsertUnindexed(8, 0);
  REQUIRE(indexed != kNoId);
  REQUIRE(lone != kNoId);
  REQUIRE(other != kNoId);
  CHECK(t.Find(7) == indexed);
  CHECK(t.Find(8) == kNoId);
  CHECK(t[lone].message_id == 7);
  CHECK(t[lone].flags == (kMsgInUse | kMsgUnindexed));
  CHECK(t.live() == 3);
  CHECK(t.InsertUnindexed(9, 0) == kNoId);  // full
  CHECK(t.free_slots() == 0);
  // Freeing it leaves the index alone: the indexed message with its id is still found.
  t.Erase(lone);
  CHECK(t.Find(7) == indexed);
  CHECK(t.live() == 2);
  t.EraseFrom(other, kNoId);
  CHECK(t.live() == 1);
  CHECK(t.free_slots() == 2);
  t.Erase(indexed);
  CHECK(t.Find(7) == kNoId);
  CHECK(t.live() == 0);
  CHECK(t.Insert(9, 0) != kNoId);
}

TEST_CASE("idle reclamation frees only empty messages past the timeout", "[message_table]") {
  MessageTable t(8, 0);
  uint32_t busy = t.Insert(1, 0);
  uint32_t recent = t.Insert(2, 0);
  uint32_t idle = t.Insert(3, 0);
  testing::FakePool pool(1);
  rte_mbuf* fake = pool.Get(0);
  t[busy].PushBack(fake);
  t[busy].last_active = 0;
  t[recent].last_active = 95;
  t[idle].last_active = 10;
  const uint32_t timeouts[] = {50};
  CHECK(t.ReclaimIdle(100, timeouts, 8) == 1);
  CHECK(t.Find(3) == kNoId);
  CHECK(t.Find(1) == busy);
  CHECK(t.Find(2) == recent);
  CHECK(t[busy].PopFront() == fake);
}

TEST_CASE("idle reclamation sweeps only the slots that were ever used", "[message_table]") {
  // A large table with three messages: their slots are the lowest, and the sweep turns around
  // after them instead of walking the whole table between visits.
  MessageTable t(100'000, 1);
  const uint32_t timeouts[] = {10};
  for (uint64_t id : {7, 8, 9}) REQUIRE(t.Insert(id, 0) != kNoId);
  CHECK(t.ReclaimIdle(1'000, timeouts, 2) == 2);
  CHECK(t.ReclaimIdle(1'000, timeouts, 2) == 1);
  CHECK(t.live() == 0);
  // Slots freed and handed out again keep the sweep as short.
  for (uint64_t id : {17, 18, 19}) REQUIRE(t.Insert(id, 0) != kNoId);
  uint32_t freed = 0;
  for (int call = 0; call < 2; ++call) freed += t.ReclaimIdle(1'000, timeouts, 2);
  CHECK(freed == 3);
}

TEST_CASE("idle reclamation keeps each class's timeout, and 0 keeps a class's messages",
          "[message_table]") {
  MessageTable t(16, 2);
  const uint32_t timeouts[] = {0, 10};
  const uint32_t kept = t.Insert(1, 0);
  const uint32_t freed = t.Insert(2, 1);
  const uint32_t young = t.Insert(3, 1);
  t[young].last_active = 995;
  CHECK(t.ReclaimIdle(1'000, timeouts, 16) == 1);
  CHECK(t.Find(1) == kept);
  CHECK(t.Find(2) == kNoId);
  CHECK(t.Find(3) == young);
  (void)freed;
}

TEST_CASE("idle reclamation keeps a message whose last arrival is stamped after now",
          "[message_table]") {
  // Packets handed over from another lcore carry that lcore's arrival times, which may be a
  // little later than the time the uplink's poll began: such a message is young, not 2^32 old.
  MessageTable t(8, 0);
  const uint32_t timeouts[] = {10};
  const uint32_t slot = t.Insert(1, 0);
  t[slot].last_active = 1'003;
  CHECK(t.ReclaimIdle(1'000, timeouts, 8) == 0);
  CHECK(t.ReclaimIdle(1'014, timeouts, 8) == 1);
}

TEST_CASE("a message's FIFO: inline ring first, then the overflow list, order kept",
          "[message_table]") {
  testing::FakePool pool(40);
  MessageState m;
  std::deque<rte_mbuf*> ref;
  std::mt19937_64 rng(2);
  size_t next = 0;
  for (int step = 0; step < 2000; ++step) {
    if ((rng() % 3 != 0 || ref.empty()) && ref.size() < 30) {
      rte_mbuf* p = pool.Get(next++ % pool.size());
      m.PushBack(p);
      ref.push_back(p);
    } else {
      REQUIRE(m.front() == ref.front());
      if (ref.size() > 1) REQUIRE(m.at(1) == ref[1]);
      REQUIRE(m.PopFront() == ref.front());
      ref.pop_front();
    }
    REQUIRE(m.empty() == ref.empty());
    REQUIRE((m.overflow_head != nullptr) == (ref.size() > kInlinePackets));
  }
}


TEST_CASE("ids colliding under an unkeyed hash spread under the keyed one", "[message_table]") {
  MessageTable t(4096, 0);  // 8192 index entries: 13 bits
  const std::vector<uint64_t> ids = IdsCollidingUnkeyed(13, 2000);
  uint32_t longest = 0;
  for (uint64_t id : ids) {
    REQUIRE(t.Insert(id, 0) != kNoId);
    longest = std::max(longest, t.ProbeDistance(id));
  }
  // Unkeyed, the 2000th id would sit 1999 entries from its home and every lookup would walk there.
  CHECK(longest < kMaxProbe);
  for (uint64_t id : ids) CHECK(t.Find(id) != kNoId);
}

TEST_CASE("consecutive ids stay within the probe window under any key", "[message_table]") {
  // Consecutive ids (what a sender numbering its messages sends) under 300 keys drawn like the
  // per-process ones, a quarter of the index full: a random hash keeps every run there under 32
  // (about 20 at worst); a hash that spreads them like a Weyl sequence with a poor multiplier
  // (the bare folded multiply did, for about one key in twenty) makes longer ones.
  std::mt19937_64 rng(2024);
  for (int k = 0; k < 300; ++k) {
    const HashKey key{rng(), rng() | 1};
    MessageTable t(4096, 1, key);  // 8192 index entries
    uint32_t longest = 0;
    for (uint64_t id = 1; id <= 2048; ++id) {
      REQUIRE(t.Insert(id, 0) != kNoId);
      longest = std::max(longest, t.ProbeDistance(id));
    }
    INFO("key " << key.k0 << ", " << key.k1);
    CHECK(longest < 32);
  }
}

TEST_CASE("an id whose probe window is full is refused, and others still fit", "[message_table]") {
  MessageTable t(4096, 0, kTestKey);
  const std::vector<uint64_t> ids = IdsWithOneHome(t, kMaxProbe + 1);
  for (uint32_t i = 0; i < kMaxProbe; ++i) {
    REQUIRE(t.Insert(ids[i], 0) != kNoId);
    CHECK(t.ProbeDistance(ids[i]) == i);
  }
  CHECK(t.Insert(ids[kMaxProbe], 0) == kNoId);
  CHECK(t.free_slots() == 4096 - kMaxProbe);
  CHECK(t.Find(ids[kMaxProbe]) == kNoId);
  // Erasing one makes room; backward shifts keep every entry within its window.
  t.Erase(t.Find(ids[3]));
  REQUIRE(t.Insert(ids[kMaxProbe], 0) != kNoId);
  for (uint32_t i = 0; i <= kMaxProbe; ++i) {
    if (i != 3) CHECK(t.ProbeDistance(ids[i]) < kMaxProbe);
  }
}

}  // namespace qosvisor::sched
