// MAC learning for a bridge: (VLAN, MAC) → port, with aging. Owned by the lcore that switches
// the bridge's traffic (single writer, no locks).
#pragma once

#include <cstdint>
#include <cstring>

#include "common/aging_table.h"

namespace qosvisor::vswitch {

class MacTable {
 public:
  MacTable(uint32_t capacity, uint64_t aging_tsc) : table_(capacity, aging_tsc) {}

  void Learn(const uint8_t* mac, uint16_t vlan, uint16_t port, uint64_t now) {
    if (mac[0] & 1) return;  // never learn a group address as a source
    bool inserted;
    uint16_t& where = table_.Upsert(Key(mac, vlan), now, inserted);
    if (!inserted && where != port) ++moves_;
    where = port;
  }
  // The port where mac was last seen on vlan, or -1 (unknown, aged out, or a group address).
  int Lookup(const uint8_t* mac, uint16_t vlan, uint64_t now) {
    if (mac[0] & 1) return -1;
    const uint16_t* port = table_.Find(Key(mac, vlan), now);
    return port != nullptr ? *port : -1;
  }
  uint32_t CountLive(uint64_t now) const { return table_.CountLive(now); }
  uint64_t moves() const { return moves_; }

 private:
  static uint64_t Key(const uint8_t* mac, uint16_t vlan) {
    uint64_t key = 0;
    std::memcpy(&key, mac, 6);
    return key | (uint64_t{vlan} + 1) << 48;  // +1 keeps every key nonzero
  }
  AgingTable<uint16_t> table_;
  uint64_t moves_ = 0;
};

}  // namespace qosvisor::vswitch
