// The uplink stage, on the uplink's own worker: packets other workers handed over through its ring
// join what was staged here, go to the scheduler, and leave as the pacer allows.
#include <rte_mbuf.h>
#include <rte_prefetch.h>
#include <rte_ring.h>

#include "common/packet_meta.h"
#include "common/tsan.h"
#include "vswitch/switch.h"
#include "vswitch/switch_inl.h"

namespace qosvisor::vswitch {

void Switch::TakeHandoff(Uplink& up) {
  if (up.handoff == nullptr) return;
  // A bounded number of bursts per poll, so that producers cannot starve the sending side.
  for (int round = 0; round < 8; ++round) {
    const unsigned n = rte_ring_dequeue_burst(
        up.handoff, reinterpret_cast<void**>(up.pending.pkts + up.pending.count),
        kMaxBurst - up.pending.count, nullptr);
    if (n != 0) TsanPacketsIn();
    // Their lines were last written on another core: ask for all of them before any is used.
    for (unsigned i = up.pending.count; i < up.pending.count + n; ++i) {
      rte_prefetch0(up.pending.pkts[i]);
      rte_prefetch0(Meta(up.pending.pkts[i]));
    }
    up.pending.count = static_cast<uint16_t>(up.pending.count + n);
    if (!up.pending.full()) return;
    FlushUplink(up);
  }
}

void Switch::ServeUplink(Uplink& up, uint64_t now) {
  // Packets the port refused last time go first, so the scheduler's order is kept on the wire.
  if (up.stalled.count != 0) {
    ports_[up.port]->Send(up.stalled);
    if (up.stalled.count != 0) return;
  }
  up.scheduler->Dequeue(up.stalled, now);
  Capture(up.port, up.stalled.pkts, up.stalled.count);  // all new: the batch was empty
  if (up.stalled.count != 0) ports_[up.port]->Send(up.stalled);
}

}  // namespace qosvisor::vswitch
