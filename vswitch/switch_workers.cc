// The workers' lcore loop and the control thread's wait for their quiescent states (DPDK's QSBR
// RCU): what the control thread unpublishes is freed only after every running worker has passed
// a poll boundary since.
#include <fmt/format.h>
#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>

#include <algorithm>

#include "common/tsan.h"
#include "common/tsc.h"
#include "vswitch/switch.h"

namespace qosvisor::vswitch {

void Switch::QsbrFree::operator()(rte_rcu_qsbr* v) const { rte_free(v); }

Status Switch::InitQuiescence() {
  const size_t size = rte_rcu_qsbr_get_memsize(workers());
  auto* v = static_cast<rte_rcu_qsbr*>(rte_zmalloc("qv_switch_qsbr", size, RTE_CACHE_LINE_SIZE));
  if (v == nullptr) {
    return Status::Error(
        fmt::format("switch: no memory for the workers' quiescence state "
                    "({} bytes of DPDK heap)",
                    size));
  }
  qsbr_.reset(v);
  if (rte_rcu_qsbr_init(v, workers()) != 0)
    return Status::Error("switch: rte_rcu_qsbr_init failed");
  for (uint16_t w = 0; w < workers(); ++w) rte_rcu_qsbr_thread_register(v, w);
  return Status::Ok();
}

void Switch::RunWorker(uint16_t worker, const std::atomic<bool>& stop) {
  rte_rcu_qsbr* v = qsbr_.get();
  rte_rcu_qsbr_thread_online(v, worker);
  SwitchCounters& counters = workers_[worker]->counters;
  const uint64_t hz = TscHz();
  const uint64_t over_100us = hz / 10'000, over_1ms = hz / 1'000;
  uint64_t last = ReadTsc();
  while (!stop.load(std::memory_order_relaxed)) {
    const uint64_t now = ReadTsc();
    const uint64_t gap = now - last;
    last = now;
    if (gap > over_100us) [[unlikely]] {
      ++counters.poll_gaps_over_100us;
      counters.poll_gaps_over_1ms += gap > over_1ms;
      counters.longest_poll_gap_ns = std::max(counters.longest_poll_gap_ns, TscToNs(gap, hz));
    }
    Poll(worker, now);
    TsanRelease(v);  // what this poll did happens before Quiesce() returns
    rte_rcu_qsbr_quiescent(v, worker);
  }
  rte_rcu_qsbr_thread_offline(v, worker);  // inline: its writes are this thread's, seen by TSan
  TsanRelease(v);  // for TakeSnapshot, Drain and the destructor once the lcore is joined
}

void Switch::Quiesce() {
  rte_rcu_qsbr_synchronize(qsbr_.get(), RTE_QSBR_THRID_INVALID);
  TsanAcquire(qsbr_.get());
}

}  // namespace qosvisor::vswitch
