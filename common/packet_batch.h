// A burst of mbufs, the unit of work on the data path (DPDK burst style: counts, not exceptions).
#pragma once

#include <cstdint>

struct rte_mbuf;

namespace qosvisor {

inline constexpr uint16_t kMaxBurst = 32;

struct PacketBatch {
  rte_mbuf* pkts[kMaxBurst];
  uint16_t count = 0;

  bool full() const { return count == kMaxBurst; }
  void Push(rte_mbuf* m) { pkts[count++] = m; }
  // Drops the first n packets (sent or consumed) and moves the rest to the front.
  void Consume(uint16_t n) {
    for (uint16_t i = n; i < count; ++i) pkts[i - n] = pkts[i];
    count = static_cast<uint16_t>(count - n);
  }
};

}  // namespace qosvisor
