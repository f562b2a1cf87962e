// MAC learning: per-VLAN entries, aging, group addresses, moves, a flood of new addresses, and the
// count of addresses held.
#include "vswitch/mac_table.h"

#include <catch2/catch.hpp>

namespace qosvisor::vswitch {

TEST_CASE("learned addresses are found on their VLAN until they age out", "[mac]") {
  MacTable t(1024, /*aging=*/100);
  const uint8_t a[6] = {0x02, 0, 0, 0, 0, 0xaa};
  t.Learn(a, 10, 3, /*now=*/1000);
  CHECK(t.Lookup(a, 10, 1050) == 3);
  CHECK(t.Lookup(a, 20, 1050) == -1);  // another VLAN is another table
  CHECK(t.Lookup(a, 10, 1101) == -1);  // aged out
  t.Learn(a, 10, 4, 1200);
  CHECK(t.Lookup(a, 10, 1200) == 4);
  t.Learn(a, 10, 5, 1210);
  CHECK(t.Lookup(a, 10, 1210) == 5);
  CHECK(t.moves() == 1);
}

TEST_CASE("answers within one instant follow every change the instant made", "[mac]") {
  // A burst shares one timestamp; repeated facts are skipped, but a move or a new neighbour
  // that evicts an entry must show in the very next lookup.
  MacTable t(8, 1000);
  const uint8_t a[6] = {0x02, 0, 0, 0, 0, 0xa};
  CHECK(t.Lookup(a, 1, 50) == -1);
  t.Learn(a, 1, 3, 50);
  CHECK(t.Lookup(a, 1, 50) == 3);
  t.Learn(a, 1, 3, 50);
  CHECK(t.Lookup(a, 1, 50) == 3);
  t.Learn(a, 1, 4, 50);  // moved within the burst
  CHECK(t.Lookup(a, 1, 50) == 4);
  CHECK(t.moves() == 1);
  CHECK(t.Lookup(a, 2, 50) == -1);  // another VLAN is another key
  // Fill the 8-slot table with other addresses at the same instant: if `a` is evicted, the
  // lookup says so rather than repeating the remembered answer.
  uint8_t other[6] = {0x02, 0, 0, 0, 1, 0};
  bool evicted = false;
  for (uint8_t i = 0; i < 32 && !evicted; ++i) {
    other[5] = i;
    t.Learn(other, 1, 1, 50);
    evicted = t.Lookup(a, 1, 50) == -1;
  }
  // A remembered answer would have hidden the eviction; a later instant asks the table itself.
  CHECK(evicted);
  CHECK(t.Lookup(a, 1, 51) == -1);
}

TEST_CASE("group addresses are never learned nor found", "[mac]") {
  MacTable t(64, 100);
  const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  const uint8_t mcast[6] = {0x01, 0x00, 0x5e, 0, 0, 1};
  t.Learn(bcast, 0, 1, 0);
  t.Learn(mcast, 0, 1, 0);
  CHECK(t.Lookup(bcast, 0, 0) == -1);
  CHECK(t.Lookup(mcast, 0, 0) == -1);
  CHECK(t.size() == 0);
}

TEST_CASE("a flood of new addresses evicts stale ones and never fails", "[mac]") {
  MacTable t(256, 1'000'000);
  uint8_t mac[6] = {0x02, 0, 0, 0, 0, 0};
  for (uint32_t i = 0; i < 100'000; ++i) {
    std::memcpy(mac + 2, &i, 4);
    t.Learn(mac, 1, static_cast<uint16_t>(i % 7), i);
  }
  CHECK(t.size() <= 256);
  CHECK(t.evictions() > 0);
  const uint32_t last = 99'999;
  std::memcpy(mac + 2, &last, 4);
  CHECK(t.Lookup(mac, 1, 100'000) == static_cast<int>(last % 7));  // the newest is kept
}

TEST_CASE("the count of addresses held follows learning, moves, eviction and aging", "[mac]") {
  MacTable t(8, /*aging=*/100);  // one probe window
  uint8_t mac[6] = {0x02, 0, 0, 0, 0, 0};
  auto learn = [&](uint8_t last, uint16_t port, uint64_t now) {
    mac[5] = last;
    t.Learn(mac, 1, port, now);
  };
  for (uint8_t i = 0; i < 3; ++i) learn(i, 1, 0);
  CHECK(t.size() == 3);
  learn(0, 2, 5);  // a move
  learn(1, 1, 5);  // seen again
  CHECK(t.size() == 3);
  for (uint8_t i = 10; i < 20; ++i) learn(i, 1, 10);
  CHECK(t.size() == 8);
  CHECK(t.evictions() == 3 + 10 - 8);
  // Aged out at 200: no longer found, and counted until reclaimed.
  // The last address learnt is certainly held; a lookup reclaims what it finds aged out.
  mac[5] = 19;
  CHECK(t.Lookup(mac, 1, 200) == -1);
  CHECK(t.size() == 7);
  t.Age(200);
  CHECK(t.size() == 0);
  learn(19, 1, 210);
  learn(19, 1, 400);  // aged out, then learnt again: one address
  CHECK(t.size() == 1);
  t.Age(400);
  CHECK(t.size() == 1);
}

TEST_CASE("aging reclaims a bounded number of slots per call, and all of them in a pass", "[mac]") {
  MacTable t(1024, /*aging=*/100);
  uint8_t mac[6] = {0x02, 0, 0, 0, 0, 0};
  for (uint16_t i = 0; i < 500; ++i) {
    std::memcpy(mac + 3, &i, 2);
    t.Learn(mac, 1, 1, 0);
  }
  const uint32_t learnt = t.size();
  CHECK(learnt > 400);  // (a full probe window replaces a few)
  t.Age(1000);
  CHECK(t.size() >= learnt - MacTable::kAgeSlots);
  for (uint64_t now = 1001; now < 1000 + 1024 / MacTable::kAgeSlots; ++now) t.Age(now);
  CHECK(t.size() == 0);
}

}  // namespace qosvisor::vswitch
