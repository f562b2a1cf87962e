// Statistics: each worker copies the counters and scheduler statistics it owns when the control
// thread asks, and the control thread merges the copies.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "common/tsan.h"
#include "common/tsc.h"
#include "vswitch/switch.h"

namespace qosvisor::vswitch {

void SwitchCounters::Add(const SwitchCounters& o) {
  rx_packets += o.rx_packets;
  malformed += o.malformed;
  truncated += o.truncated;
  vlan_dropped += o.vlan_dropped;
  no_bridge += o.no_bridge;
  flow_dropped += o.flow_dropped;
  flooded += o.flooded;
  copy_failed += o.copy_failed;
  tx_dropped += o.tx_dropped;
  sched_dropped += o.sched_dropped;
  ebpf_runs += o.ebpf_runs;
  ebpf_reclassified += o.ebpf_reclassified;
  ebpf_unknown_queue += o.ebpf_unknown_queue;
  flow_cache_hits += o.flow_cache_hits;
  flow_cache_misses += o.flow_cache_misses;
  handoff_dropped += o.handoff_dropped;
  poll_gaps_over_100us += o.poll_gaps_over_100us;
  poll_gaps_over_1ms += o.poll_gaps_over_1ms;
  longest_poll_gap_ns = std::max(longest_poll_gap_ns, o.longest_poll_gap_ns);
}

// Sizes each worker's snapshot for what it will copy there (a first Stats() per uplink gives its
// classes), so that FillSnapshot on the lcore only copies.
void Switch::PrepareSnapshots() {
  for (auto& w : workers_) {
    w->snapshot.uplinks.resize(uplinks_.size());
    for (uint16_t u : w->uplinks) w->snapshot.uplinks[u] = uplinks_[u]->scheduler->Stats();
    w->snapshot.learned_macs.resize(bridges_.size());
    uint32_t largest = 0;  // room for the largest MAC table it owns: the lcore only copies
    for (uint16_t b : w->bridges) largest = std::max(largest, bridges_[b]->macs->capacity());
    w->snapshot.fdb.reserve(largest);
    w->snapshot.details.resize(uplinks_.size());
    for (uint16_t u : w->uplinks) {
      w->snapshot.details[u].Reserve(uplinks_[u]->scheduler->config().classes.size(),
                                     kDetailTopMessages);
    }
  }
}

// The parts of a snapshot `w` owns: its counters, its uplinks' statistics, its bridges' MAC
// counts. On the worker's lcore when it runs: a copy of fixed size into storage PrepareSnapshots
// sized, with no allocation; a table is scanned only when a request asks for a MAC table dump or
// an uplink inspection.
void Switch::FillSnapshot(const Worker& w, Snapshot& out, bool inspect) const {
  out.counters = w.counters;
  out.counters.flow_cache_hits = w.cache.hits();
  out.counters.flow_cache_misses = w.cache.misses();
  for (uint16_t u : w.uplinks) uplinks_[u]->scheduler->StatsInto(out.uplinks[u]);
  for (uint16_t b : w.bridges) out.learned_macs[b] = bridges_[b]->macs->size();
  out.fdb.clear();
  const int fdb = w.fdb_requested.load(std::memory_order_acquire);
  if (fdb >= 0) FillFdb(w, fdb, out);
  const int detail = w.detail_requested.load(std::memory_order_acquire);
  if (inspect && detail >= 0) FillDetail(w, detail, out);
}

// On the worker's lcore: answers request `ticket`, at once unless it asks for an inspection of
// an uplink this worker owns, which goes on over polls (InspectOverPolls) and is answered, with
// the rest of the snapshot copied then, at the poll that ends it.
void Switch::ServeSnapshot(Worker& w, uint64_t ticket) {
  if (!InspectOverPolls(w, ticket)) return;
  FillSnapshot(w, w.snapshot, false);
  w.snapshot_served.store(ticket, std::memory_order_release);
  w.inspection.active = false;
}

// Whether the inspection the request asks for (if any, of this worker's uplinks) is complete.
// Requests come one at a time (TakeSnapshot), so a newer one means that the one a scan under way
// was for has given up waiting: the scan is dropped and the newer request served instead.
bool Switch::InspectOverPolls(Worker& w, uint64_t ticket) {
  Worker::Inspection& in = w.inspection;
  if (in.active && in.ticket != ticket) in.active = false;
  if (!in.active) {
    const int u = w.detail_requested.load(std::memory_order_acquire);
    if (!OwnsUplink(w, u)) return true;
    in.active = true;
    in.ticket = ticket;
    in.uplink = static_cast<uint16_t>(u);
    in.cursor = uplinks_[u]->scheduler->BeginInspection(w.snapshot.details[u], kDetailTopMessages,
                                                        kDetailRankSamples);
  }
  const sched::Scheduler& s = *uplinks_[in.uplink]->scheduler;
  sched::SchedulerDetail& out = w.snapshot.details[in.uplink];
  if (!s.InspectSlots(out, in.cursor, kInspectSlotsPerPoll)) return false;
  s.EndInspection(out, ReadTsc());
  return true;
}

// A scan of the uplink's message table (see Inspect), on request only.
void Switch::FillDetail(const Worker& w, int uplink, Snapshot& out) const {
  if (!OwnsUplink(w, uplink)) return;
  uplinks_[uplink]->scheduler->Inspect(out.details[uplink], kDetailTopMessages, kDetailRankSamples,
                                       ReadTsc());
}

void Switch::FillFdb(const Worker& w, int bridge, Snapshot& out) const {
  if (std::find(w.bridges.begin(), w.bridges.end(), bridge) == w.bridges.end()) return;
  const Bridge& br = *bridges_[bridge];
  const MemberSet& members = br.members.get();
  const uint64_t now = ReadTsc();
  br.macs->ForEach(now, [&](const uint8_t* mac, uint16_t vlan, uint16_t value, uint64_t seen) {
    // Learned on an earlier holder of a reused port number, or on a port since removed.
    const int member = MemberOfMacValue(members, value);
    if (member < 0 || members[member].access_tag == kRemovedTag) return;
    FdbEntry e{};
    std::memcpy(e.mac, mac, 6);
    e.vlan = vlan;
    e.ofport = static_cast<uint32_t>(member + 1);
    e.age_ns = TscToNs(now - seen, hz_);
    out.fdb.push_back(e);
  });
}

Switch::Snapshot Switch::Merge(int detail_uplink) const {
  Snapshot all;
  all.uplinks.resize(uplinks_.size());
  all.learned_macs.resize(bridges_.size());
  all.details.resize(uplinks_.size());
  for (const auto& w : workers_) {
    all.counters.Add(w->snapshot.counters);
    for (uint16_t u : w->uplinks) all.uplinks[u] = w->snapshot.uplinks[u];
    for (uint16_t b : w->bridges) all.learned_macs[b] = w->snapshot.learned_macs[b];
    all.fdb.insert(all.fdb.end(), w->snapshot.fdb.begin(), w->snapshot.fdb.end());
    for (uint16_t u : w->uplinks) {
      if (u == detail_uplink) all.details[u] = w->snapshot.details[u];
    }
  }
  return all;
}

// Each request carries a ticket one higher than the last. A worker that answers a request after
// it timed out answers with that older ticket, so the wait for the next request does not end
// until the copy made for it is complete; and once every worker has answered, none writes its
// copy again before the next request, so Merge reads copies no one is writing.
Result<Switch::Snapshot> Switch::TakeSnapshot(bool lcore_running, std::chrono::milliseconds timeout,
                                              int fdb_bridge, int detail_uplink) {
  if (detail_uplink >= static_cast<int>(uplinks_.size())) {
    return Status::Error(
        fmt::format("no uplink {} to inspect (there are {})", detail_uplink, uplinks_.size()));
  }
  for (auto& w : workers_) {
    w->fdb_requested.store(fdb_bridge, std::memory_order_relaxed);
    w->detail_requested.store(detail_uplink, std::memory_order_relaxed);
  }
  if (!lcore_running) {
    TsanAcquire(qsbr_.get());  // the workers' lcores were joined (by EAL, which TSan cannot see)
    for (auto& w : workers_) FillSnapshot(*w, w->snapshot, true);
    return Merge(detail_uplink);
  }
  std::vector<uint64_t> tickets;
  for (auto& w : workers_) {
    tickets.push_back(w->snapshot_requested.load(std::memory_order_relaxed) + 1);
    w->snapshot_requested.store(tickets.back(), std::memory_order_release);
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (size_t i = 0; i < workers_.size(); ++i) {
    while (workers_[i]->snapshot_served.load(std::memory_order_acquire) < tickets[i]) {
      if (std::chrono::steady_clock::now() >= deadline) {
        return Status::Error(fmt::format(
            "switch worker {} did not answer a statistics request within {} ms (lcore stalled?)", i,
            timeout.count()));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  return Merge(detail_uplink);
}

uint64_t Switch::polls() const {
  uint64_t least = UINT64_MAX;
  for (const auto& w : workers_) least = std::min(least, w->epoch.load(std::memory_order_acquire));
  return least;
}

}  // namespace qosvisor::vswitch
