// MAC learning for a bridge: (VLAN, MAC) → port, with aging. Owned by the lcore that switches
// the bridge's traffic (single writer, no locks).
#pragma once

#include <cstdint>
#include <cstring>

#include "common/aging_table.h"

namespace qosvisor::vswitch {

class MacTable {
 public:
  static constexpr uint32_t kAgeSlots = AgingTable<uint16_t>::kAgeSlots;

  MacTable(uint32_t capacity, uint64_t aging_tsc) : table_(capacity, aging_tsc) {}

  void Learn(const uint8_t* mac, uint16_t vlan, uint16_t port, uint64_t now) {
    if (mac[0] & 1) return;  // never learn a group address as a source
    const uint64_t key = Key(mac, vlan);
    // A burst mostly repeats its flows: the same fact at the same instant changes nothing.
    if (key == last_learned_.key && port == last_learned_.port && now == last_learned_.now) return;
    bool inserted;
    uint16_t& where = table_.Upsert(key, now, inserted);
    if (inserted || where != port) last_lookup_.key = 0;  // an answer may have changed
    if (!inserted && where != port) ++moves_;
    where = port;
    last_learned_ = {key, now, port};
  }
  // The port where mac was last seen on vlan, or -1 (unknown, aged out, or a group address).
  int Lookup(const uint8_t* mac, uint16_t vlan, uint64_t now) {
    if (mac[0] & 1) return -1;
    const uint64_t key = Key(mac, vlan);
    if (key == last_lookup_.key && now == last_lookup_.now) return last_lookup_.port;
    const uint16_t* port = table_.Find(key, now);
    const int answer = port != nullptr ? *port : -1;
    last_lookup_ = {key, now, answer};
    return answer;
  }
  // Reclaims aged-out addresses, a bounded number per call; the owner calls it every poll.
  void Age(uint64_t now) { table_.Age(now); }
  // Addresses held (O(1)): one that aged out is no longer found at once, and leaves the count
  // when Age() or a lookup reclaims it.
  uint32_t size() const { return table_.size(); }
  uint32_t capacity() const { return table_.capacity(); }
  uint64_t moves() const { return moves_; }
  uint64_t evictions() const { return table_.evictions(); }  // live addresses replaced
  // Calls f(mac, vlan, value, seen) for every live address (a full scan: dumps only).
  template <typename F>
  void ForEach(uint64_t now, F&& f) const {
    table_.ForEachLive(now, [&](uint64_t key, uint16_t value, uint64_t seen) {
      uint8_t mac[6];
      std::memcpy(mac, &key, 6);
      f(mac, static_cast<uint16_t>((key >> 48) - 1), value, seen);
    });
  }

 private:
  static uint64_t Key(const uint8_t* mac, uint16_t vlan) {
    // Two loads combined in registers: a 6-byte copy into a zeroed word would stall the load
    // that reads the word back.
    uint32_t low;
    uint16_t high;
    std::memcpy(&low, mac, 4);
    std::memcpy(&high, mac + 4, 2);
    return low | uint64_t{high} << 32 | (uint64_t{vlan} + 1) << 48;  // +1: never zero
  }
  AgingTable<uint16_t> table_;
  uint64_t moves_ = 0;
  // The last learning and lookup, valid while `now` is unchanged and the table gave no other
  // answer since (key 0 never occurs).
  struct {
    uint64_t key = 0, now = 0;
    uint16_t port = 0;
  } last_learned_;
  struct {
    uint64_t key = 0, now = 0;
    int port = -1;
  } last_lookup_;
};

}  // namespace qosvisor::vswitch
