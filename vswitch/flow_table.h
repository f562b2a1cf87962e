// A bridge's OpenFlow table: rules in ovs-ofctl syntax held in the Open vSwitch classifier, and
// a per-lcore exact-match cache in front of it. Tables are immutable once built; a changed rule
// set is a new table with a new generation, which invalidates every cache entry at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
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

 private:
  FlowTable(qv_ovs_table* table, uint64_t generation) : table_(table), generation_(generation) {}
  qv_ovs_table* table_;
  uint64_t generation_;
};

// Exact-match cache keyed by the input port and every header byte the classifier can match on
// (fields it cannot match, such as IP ids, checksums and TCP sequence numbers, are masked out so
// that all packets of a flow share one entry). Owned by one lcore; not thread-safe.
class FlowCache {
 public:
  static constexpr uint32_t kEntries = 4096;
  static constexpr uint32_t kMaxKey = 96;

  const FlowActions* Lookup(const FlowTable& table, const uint8_t* frame, uint32_t length,
                            const ParsedPacket& parsed, uint32_t in_port);
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }
  uint64_t uncacheable() const { return uncacheable_; }

 private:
  struct Entry {
    uint64_t generation = 0;  // 0: empty (tables start at generation 1)
    uint64_t hash = 0;
    const FlowActions* actions = nullptr;
    uint16_t key_len = 0;
    uint8_t key[kMaxKey];
  };
  std::unique_ptr<Entry[]> entries_ = std::make_unique<Entry[]>(kEntries);
  uint64_t hits_ = 0, misses_ = 0, uncacheable_ = 0;
};

// The cache key for a frame; returns its length, or 0 when the headers are too long to cache.
uint32_t FlowCacheKey(const uint8_t* frame, uint32_t length, const ParsedPacket& parsed,
                      uint32_t in_port, uint8_t (&key)[FlowCache::kMaxKey]);

}  // namespace qosvisor::vswitch
