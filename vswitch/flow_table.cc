// Flow table construction over the OVS shim, and the exact-match cache in front of it.
#include "vswitch/flow_table.h"

#include <fmt/format.h>

#include <atomic>

namespace qosvisor::vswitch {
namespace {

std::atomic<uint64_t> g_next_generation{1};

}  // namespace

Result<std::shared_ptr<const FlowTable>> FlowTable::Build(
    const std::vector<FlowRule>& rules, const std::vector<std::string>& port_names) {
  std::vector<qv_ovs_port_name> ports;
  for (size_t i = 0; i < port_names.size(); ++i) {
    ports.push_back({port_names[i].c_str(), static_cast<uint32_t>(i + 1)});
  }
  qv_ovs_table* raw = qv_ovs_table_new();
  std::shared_ptr<FlowTable> table(
      new FlowTable(raw, g_next_generation.fetch_add(1, std::memory_order_relaxed)));
  char error[512];
  if (qv_ovs_table_add(raw, "priority=0,actions=NORMAL", nullptr, 0, kDefaultRuleCookie, error,
                       sizeof(error)) != 0) {
    return Status::Error(fmt::format("default rule: {}", error));
  }
  for (const FlowRule& rule : rules) {
    if (qv_ovs_table_add(raw, rule.text.c_str(), ports.data(), ports.size(), rule.cookie, error,
                         sizeof(error)) != 0) {
      return Status::Error(fmt::format("flow '{}': {}", rule.text, error));
    }
  }
  if (qv_ovs_table_in_port_only(raw)) {
    table->ResolvePerPort(port_names.size());
  }
  return std::shared_ptr<const FlowTable>(std::move(table));
}

void FlowTable::ResolvePerPort(size_t ports) {
  // Any frame stands for all of them here; an all-zero one is as good as another.
  const uint8_t frame[64] = {};
  by_in_port_.assign(ports + 1, nullptr);
  for (size_t p = 1; p <= ports; ++p) {
    by_in_port_[p] = Lookup(frame, sizeof(frame), static_cast<uint32_t>(p));
  }
}

FlowTable::~FlowTable() { qv_ovs_table_free(table_); }

size_t FlowTable::size() const { return qv_ovs_table_size(table_); }

const FlowActions* FlowTable::Lookup(const uint8_t* frame, uint32_t length,
                                     uint32_t in_port) const {
  return qv_ovs_table_lookup(table_, frame, length, in_port);
}

const FlowActions* FlowCache::Lookup(const FlowTable& table, const FlowKey& key,
                                     const uint8_t* frame, uint32_t length) {
  if (key.words == 0) {
    ++uncacheable_;
    return table.Lookup(frame, length, key.in_port);
  }
  const uint64_t generation = table.generation();
  Entry& a = entries_[First(key)];
  if (a.generation == generation && a.key == key) {
    ++hits_;
    return a.actions;
  }
  Entry& b = entries_[Second(key)];
  if (b.generation == generation && b.key == key) {
    ++hits_;
    return b.actions;
  }
  ++misses_;
  // An entry of another table (an older one, or another bridge's on this lcore) first; else
  // either, alternately.
  Entry& e = a.generation != generation   ? a
             : b.generation != generation ? b
             : (misses_ & 1) != 0         ? a
                                          : b;
  e.actions = table.Lookup(frame, length, key.in_port);
  e.generation = generation;
  e.key = key;
  return e.actions;
}

const FlowActions* FlowCache::Lookup(const FlowTable& table, const uint8_t* frame, uint32_t length,
                                     const ParsedPacket& parsed, uint32_t in_port) {
  FlowKey key;
  BuildFlowKey(frame, length, length, parsed, in_port, key);
  return Lookup(table, key, frame, length);
}

}  // namespace qosvisor::vswitch
