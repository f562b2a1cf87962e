// The message table: lookups after inserts and erases (backward-shift deletion keeps every probe
// run intact), capacity, reserved slots and idle reclamation.
#include "sched/message_table.h"

#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <random>

#include "fake_mbufs.h"

namespace qosvisor::sched {

TEST_CASE("message table agrees with std::map through inserts and erases", "[message_table]") {
  MessageTable t(1000, 3);
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
  CHECK(t.ReclaimIdle(1'000, 10, 16) == 2);  // both empty since time 0
  CHECK(t.live() == 0);
  CHECK((t[0].flags & kMsgDefault) != 0);
  CHECK((t[1].flags & kMsgDefault) != 0);
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
  CHECK(t.ReclaimIdle(100, 50, 8) == 1);
  CHECK(t.Find(3) == kNoId);
  CHECK(t.Find(1) == busy);
  CHECK(t.Find(2) == recent);
  CHECK(t[busy].PopFront() == fake);
}

TEST_CASE("idle reclamation sweeps only the slots that were ever used", "[message_table]") {
  // A large table with three messages: their slots are the lowest, and the sweep turns around
  // after them instead of walking the whole table between visits.
  MessageTable t(100'000, 1);
  for (uint64_t id : {7, 8, 9}) REQUIRE(t.Insert(id, 0) != kNoId);
  CHECK(t.ReclaimIdle(1'000, 10, 2) == 2);
  CHECK(t.ReclaimIdle(1'000, 10, 2) == 1);
  CHECK(t.live() == 0);
  // Slots freed and handed out again keep the sweep as short.
  for (uint64_t id : {17, 18, 19}) REQUIRE(t.Insert(id, 0) != kNoId);
  uint32_t freed = 0;
  for (int call = 0; call < 3; ++call) freed += t.ReclaimIdle(1'000, 10, 2);
  CHECK(freed == 3);
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

}  // namespace qosvisor::sched
