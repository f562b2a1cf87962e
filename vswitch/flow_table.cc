// Flow table construction over the OVS shim, and the exact-match cache in front of it.
#include "vswitch/flow_table.h"

#include <fmt/format.h>

#include <atomic>
#include <cstring>

namespace qosvisor::vswitch {
namespace {

std::atomic<uint64_t> g_next_generation{1};

constexpr uint16_t kEtherArp = 0x0806;

uint64_t HashKey(const uint8_t* key, uint32_t len) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ len;
  uint32_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    std::memcpy(&w, key + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, key + i, len - i);
  h = (h ^ tail) * 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 29);
}

void Zero(uint8_t* key, uint32_t key_len, uint32_t offset, uint32_t n) {
  if (offset + n <= key_len) std::memset(key + offset, 0, n);
}

}  // namespace

Result<std::shared_ptr<const FlowTable>> FlowTable::Build(
    const std::vector<FlowRule>& rules, const std::vector<std::string>& port_names) {
  std::vector<qv_ovs_port_name> ports;
  for (size_t i = 0; i < port_names.size(); ++i) {
    ports.push_back({port_names[i].c_str(), static_cast<uint32_t>(i + 1)});
  }
  qv_ovs_table* raw = qv_ovs_table_new();
  std::shared_ptr<const FlowTable> table(
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
  return table;
}

FlowTable::~FlowTable() { qv_ovs_table_free(table_); }

size_t FlowTable::size() const { return qv_ovs_table_size(table_); }

const FlowActions* FlowTable::Lookup(const uint8_t* frame, uint32_t length,
                                     uint32_t in_port) const {
  return qv_ovs_table_lookup(table_, frame, length, in_port);
}

uint32_t FlowCacheKey(const uint8_t* frame, uint32_t length, const ParsedPacket& p,
                      uint32_t in_port, uint8_t (&key)[FlowCache::kMaxKey]) {
  // How far the classifier reads: L4 ports/flags for TCP/UDP/ICMP, the ARP body, else L3.
  uint32_t end = p.l3_offset;
  if (p.ether_type == kEtherArp) end = p.l3_offset + 28u;
  if (p.ip_version != 0) {
    end = p.l4_offset;
    if (p.ip_proto == 6) end = p.l4_offset + 20u;
    if (p.ip_proto == 17) end = p.l4_offset + 8u;
    if (p.ip_proto == 1 || p.ip_proto == 58) end = p.l4_offset + 4u;
  }
  if (end > length) end = length;
  if (end + 4 > FlowCache::kMaxKey) return 0;
  std::memcpy(key, &in_port, 4);
  std::memcpy(key + 4, frame, end);
  const uint32_t len = end + 4;
  const uint32_t l3 = 4u + p.l3_offset, l4 = 4u + p.l4_offset;
  if (p.ip_version == 4) {
    Zero(key, len, l3 + 2, 4);   // total length, id
    Zero(key, len, l3 + 10, 2);  // checksum
  } else if (p.ip_version == 6) {
    Zero(key, len, l3 + 4, 2);  // payload length
  }
  if (p.ip_version != 0) {
    if (p.ip_proto == 6) {
      Zero(key, len, l4 + 4, 8);   // seq, ack
      Zero(key, len, l4 + 14, 6);  // window, checksum, urgent pointer
    } else if (p.ip_proto == 17) {
      Zero(key, len, l4 + 4, 4);  // length, checksum
    } else if (p.ip_proto == 1 || p.ip_proto == 58) {
      Zero(key, len, l4 + 2, 2);  // checksum
    }
  }
  return len;
}

const FlowActions* FlowCache::Lookup(const FlowTable& table, const uint8_t* frame, uint32_t length,
                                     const ParsedPacket& parsed, uint32_t in_port) {
  uint8_t key[kMaxKey];
  const uint32_t len = FlowCacheKey(frame, length, parsed, in_port, key);
  if (len == 0) {
    ++uncacheable_;
    return table.Lookup(frame, length, in_port);
  }
  const uint64_t hash = HashKey(key, len);
  Entry& e = entries_[hash & (kEntries - 1)];
  if (e.generation == table.generation() && e.hash == hash && e.key_len == len &&
      std::memcmp(e.key, key, len) == 0) {
    ++hits_;
    return e.actions;
  }
  ++misses_;
  const FlowActions* actions = table.Lookup(frame, length, in_port);
  e.generation = table.generation();
  e.hash = hash;
  e.key_len = static_cast<uint16_t>(len);
  std::memcpy(e.key, key, len);
  e.actions = actions;
  return actions;
}

}  // namespace qosvisor::vswitch
