// Fake mbufs for scheduler tests: {struct rte_mbuf; PacketMeta} laid out as the real private area,
// so sched/ runs without the EAL and tests can check exactly which packets came out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/packet_batch.h"
#include "common/packet_meta.h"

namespace qosvisor::sched::testing {

struct FakeMbuf {
  alignas(64) unsigned char mbuf[kMbufStructSize];  // stands in for struct rte_mbuf
  PacketMeta meta;
};
static_assert(offsetof(FakeMbuf, meta) == kMbufStructSize);

class FakePool {
 public:
  explicit FakePool(size_t n) : bufs_(n) {}
  rte_mbuf* Get(size_t i) {
    // SAFETY: sched/ only reaches the PacketMeta behind the mbuf through Meta(), which is where
    // FakeMbuf keeps it; nothing dereferences the rte_mbuf part.
    return reinterpret_cast<rte_mbuf*>(&bufs_[i]);
  }
  size_t IndexOf(rte_mbuf* m) const {
    return static_cast<size_t>(reinterpret_cast<FakeMbuf*>(m) - bufs_.data());
  }
  size_t size() const { return bufs_.size(); }

 private:
  std::vector<FakeMbuf> bufs_;
};

// A drop sink that records what the scheduler dropped, in order.
struct DropLog {
  std::vector<rte_mbuf*> pkts;
  static void Sink(void* self, rte_mbuf* const* pkts, uint16_t n) {
    auto* log = static_cast<DropLog*>(self);
    log->pkts.insert(log->pkts.end(), pkts, pkts + n);
  }
};

}  // namespace qosvisor::sched::testing
