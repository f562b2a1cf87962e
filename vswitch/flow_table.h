// A bridge's OpenFlow table: rules in ovs-ofctl syntax held in the Open vSwitch classifier, and
// a per-lcore exact-match cache in front of it. Tables are immutable once built; a changed rule
// set is a new table with a new generation, which invalidates every cache entry at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "vswitch/flow_key.h"
#include "vswitch/ovs/ovs_flow_shim.h"
#include "vswitch/packet_parser.h"

namespace qosvisor::vswitch {

using FlowActions = qv_ovs_actions;

struct FlowRule {
  std::string text;     // ovs-ofctl syntax
  uint32_t cookie = 0;  // the caller's id for the rule (e.g. its index in the config)
};

inline constexpr uint32_t kDefaultRuleCookie = UINT32_MAX;

class FlowTable {
 public:
  // Builds a table from rules whose port names are numbered 1..n in `port_names` order. Like an
  // Open vSwitch bridge, the table starts with "priority=0,actions=NORMAL" (cookie
  // kDefaultRuleCookie), which a rule with the same match and priority replaces.
  static Result<std::shared_ptr<const FlowTable>> Build(const std::vector<FlowRule>& rules,
                                                        const std::vector<std::string>& port_names);
  ~FlowTable();
  FlowTable(const FlowTable&) = delete;
  FlowTable& operator=(const FlowTable&) = delete;

  // The classifier itself, without the cache (about 150-300 ns: use a FlowCache per lcore).
  const FlowActions* Lookup(const uint8_t* frame, uint32_t length, uint32_t in_port) const;
  uint64_t generation() const { return generation_; }
  size_t size() const;
  // When no rule looks at more than the input port (a plain L2 bridge, port-to-port rules),
  // ActionsOfPort answers for every frame from in_port (nullptr: drop), so the data path needs
  // no key, hash or cache.
  bool in_port_only() const { return !by_in_port_.empty(); }
  const FlowActions* ActionsOfPort(uint32_t in_port) const {
    return in_port < by_in_port_.size() ? by_in_port_[in_port] : nullptr;
  }

 private:
  FlowTable(qv_ovs_table* table, uint64_t generation) : table_(table), generation_(generation) {}
  void ResolvePerPort(size_t ports);
  qv_ovs_table* table_;
  uint64_t generation_;
  std::vector<const FlowActions*> by_in_port_;  // indexed by OpenFlow port (0 unused)
};

// Exact-match cache from FlowKey to the classifier's answer. Owned by one lcore; not
// thread-safe. Entries carry the table generation, so a new table invalidates them all at once.
// Each key has two candidate entries (as Open vSwitch's EMC): with one, two busy flows whose
// hashes collide would evict each other on every frame.
class FlowCache {
 public:
  static constexpr uint32_t kEntries = 4096;
  static constexpr uint32_t kMask = kEntries - 1;

  // Starts loading the entries a key maps to; a burst prefetches all its entries before lookups.
  void Prefetch(const FlowKey& key) const {
    for (uint32_t slot : {First(key), Second(key)}) {
      __builtin_prefetch(&entries_[slot]);
      __builtin_prefetch(reinterpret_cast<const char*>(&entries_[slot]) + 64);
    }
  }
  const FlowActions* Lookup(const FlowTable& table, const FlowKey& key, const uint8_t* frame,
                            uint32_t length);
  // Key and lookup in one call (tests, fuzzing).
  const FlowActions* Lookup(const FlowTable& table, const uint8_t* frame, uint32_t length,
                            const ParsedPacket& parsed, uint32_t in_port);
  // A key's two candidate entries.
  static uint32_t First(const FlowKey& key) { return static_cast<uint32_t>(key.hash) & kMask; }
  static uint32_t Second(const FlowKey& key) {
    const uint32_t s = static_cast<uint32_t>(key.hash >> 32) & kMask;
    return s != First(key) ? s : s ^ 1;
  }
  // Frames that reused the answer of the frame before them (same key) count as hits.
  void CountRepeats(uint32_t n) { hits_ += n; }
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }
  uint64_t uncacheable() const { return uncacheable_; }

 private:
  struct alignas(64) Entry {
    uint64_t generation = 0;  // 0: empty (tables start at generation 1)
    const FlowActions* actions = nullptr;
    FlowKey key;
  };
  std::unique_ptr<Entry[]> entries_ = std::make_unique<Entry[]>(kEntries);
  uint64_t hits_ = 0, misses_ = 0, uncacheable_ = 0;
};

}  // namespace qosvisor::vswitch
