// An uplink reconfigured while it runs (a reload that changes classes, message rules, the
// scheduler tree, rates or buffers). The control thread builds the new scheduler and class rules;
// the uplink's owner, at the start of its next poll, hands the old scheduler's queues to the new
// one (as they are when ranking does not change, else by moving every queued packet) and
// publishes the rules, so the scheduler is never touched by two threads. Packets
// that other workers classified under the old rules and that arrive later through the hand-off
// ring are given their class under the new ones on the way in ("restaging"), until every worker
// has moved on and the ring has been seen empty.
#include <fmt/format.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <thread>

#include "common/packet_meta.h"
#include "common/tsan.h"
#include "common/tsc.h"
#include "vswitch/switch.h"
#include "vswitch/switch_inl.h"

namespace qosvisor::vswitch {
namespace {

// The class index, under `next`, of each class of the previous rules: by name.
std::vector<int32_t> ClassesByName(const std::vector<std::string>& previous,
                                   const std::vector<std::string>& next) {
  std::vector<int32_t> out(previous.size(), -1);
  for (size_t i = 0; i < previous.size(); ++i) {
    for (size_t j = 0; j < next.size(); ++j) {
      if (previous[i] == next[j]) out[i] = static_cast<int32_t>(j);
    }
  }
  return out;
}

}  // namespace

Result<Switch::UplinkReload> Switch::ReconfigureUplink(const std::string& port,
                                                       const UplinkSpec& spec,
                                                       const std::vector<ClassSpec>& classes,
                                                       bool lcore_running,
                                                       std::chrono::milliseconds timeout) {
  int found = -1;
  for (size_t u = 0; u < uplinks_.size(); ++u) {
    if (ports_[uplinks_[u]->port]->name() == port) found = static_cast<int>(u);
  }
  if (found < 0) return Status::Error(fmt::format("no uplink on port '{}'", port));
  const auto u = static_cast<uint16_t>(found);
  Uplink& up = *uplinks_[u];
  auto sched = sched::Scheduler::Create(spec.scheduler, &Switch::OnSchedDrop,
                                        workers_[up.owner].get());
  if (!sched.ok()) return Status::Error(fmt::format("uplink '{}': {}", port, sched.message()));
  auto made = MakeUplinkRules(port, spec, classes);
  if (!made.ok()) return made.status();
  std::shared_ptr<UplinkRules> rules = std::move(made).value();
  const UplinkRules& previous = *up.rules_owner;
  rules->generation = static_cast<uint8_t>(previous.generation + 1);
  rules->class_of_previous = ClassesByName(previous.class_names, rules->class_names);

  UplinkChange change;
  change.scheduler = std::move(sched).value();
  change.rules = rules.get();
  change.before.classes.resize(previous.class_names.size());
  change.snapshot_classes.resize(rules->class_names.size());
  change.snapshot_detail.Reserve(rules->class_names.size(), kDetailTopMessages);
  if (!lcore_running) {
    ApplyUplinkChange(*workers_[up.owner], u, change, ReadTsc());
  } else {
    up.change.store(&change, std::memory_order_release);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!change.done.load(std::memory_order_acquire)) {
      if (std::chrono::steady_clock::now() > deadline) {
        UplinkChange* expected = &change;
        // Withdrawn before the owner took it: nothing changed. Otherwise it is under way.
        if (up.change.compare_exchange_strong(expected, nullptr)) {
          return Status::Error(fmt::format(
              "uplink '{}': its worker did not poll within {} ms; nothing changed", port,
              timeout.count()));
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  Retire(std::move(up.rules_owner));
  up.rules_owner = std::move(rules);
  // Every worker that classified under the old rules has finished that poll: what it handed over
  // is in the ring, and the owner stops restaging once it has seen the ring empty.
  if (lcore_running) Quiesce();
  up.settled.store(true, std::memory_order_release);
  ReclaimRetiredTables();
  return change.outcome;
}

void Switch::ApplyUplinkChange(Worker& w, uint16_t u, UplinkChange& change, uint64_t now) {
  Uplink& up = *uplinks_[u];
  DrainHandoffIntoScheduler(up);
  sched::Scheduler& old = *up.scheduler;
  old.StatsInto(change.before);  // sized by the control thread: nothing allocated here
  const UplinkRules& rules = *change.rules;
  change.outcome.queued_packets = old.queued_packets();
  change.outcome.in_place = change.scheduler->AdoptQueues(old);
  if (!change.outcome.in_place) MoveQueuedPackets(old, change, now);
  change.scheduler->ContinueFrom(change.before, rules.class_of_previous, change.gone);
  std::swap(up.scheduler, change.scheduler);
  // An inspection under way read the old tree: it starts again on the new one.
  if (w.inspection.active && w.inspection.uplink == u) w.inspection.active = false;
  std::swap(w.snapshot.uplinks[u].classes, change.snapshot_classes);
  std::swap(w.snapshot.details[u], change.snapshot_detail);
  up.generation = rules.generation;
  up.restaging = true;
  up.settled.store(false, std::memory_order_relaxed);
  up.rules.store(&rules, std::memory_order_release);
  up.change.store(nullptr, std::memory_order_relaxed);
  change.done.store(true, std::memory_order_release);
}

// The new tree inherits what the old one's policies remember, then takes its packets: each round
// steps a virtual clock far enough that neither the pacer nor a paced class holds a packet back;
// a message's packets leave in their order, and the new scheduler ranks them.
void Switch::MoveQueuedPackets(sched::Scheduler& old, UplinkChange& change, uint64_t now) {
  const UplinkRules& rules = *change.rules;
  change.scheduler->InheritPolicyState(old, rules.class_of_previous);
  PacketBatch out, moving, gone;
  uint64_t t = now;
  while (old.queued_packets() != 0) {
    t += hz_ * 1000;
    old.Dequeue(out, t);
    for (uint16_t i = 0; i < out.count; ++i) {
      rte_mbuf* m = out.pkts[i];
      PacketMeta& pm = *Meta(m);
      const int32_t cls =
          pm.class_id < rules.class_of_previous.size() ? rules.class_of_previous[pm.class_id] : -1;
      if (cls < 0) {
        gone.Push(m);
        continue;
      }
      pm.class_id = static_cast<uint16_t>(cls);
      pm.rules_generation = rules.generation;
      pm.message_slot = kNoMessageSlot;  // a slot of the old table
      moving.Push(m);
    }
    out.count = 0;
    if (moving.count != 0) change.scheduler->Enqueue(moving);
    change.gone += gone.count;
    FreeBatch(gone);
  }
}

// What was classified for the uplink before the change waits in its old scheduler, so that it
// moves with the rest: the ring is read up to what it held at the start (its capacity).
void Switch::DrainHandoffIntoScheduler(Uplink& up) {
  FlushUplink(up);
  if (up.handoff == nullptr) return;
  for (unsigned taken = 0; taken <= rte_ring_get_capacity(up.handoff);) {
    const unsigned n = rte_ring_dequeue_burst(up.handoff, reinterpret_cast<void**>(up.pending.pkts),
                                              kMaxBurst, nullptr);
    if (n == 0) return;
    TsanPacketsIn();
    up.pending.count = static_cast<uint16_t>(n);
    FlushUplink(up);
    taken += n;
  }
}

void Switch::Restage(Uplink& up, PacketBatch& batch) {
  const UplinkRules& rules = *up.rules.load(std::memory_order_relaxed);  // the owner wrote it
  const auto previous = static_cast<uint8_t>(up.generation - 1);
  uint16_t kept = 0;
  uint64_t gone = 0;
  for (uint16_t i = 0; i < batch.count; ++i) {
    rte_mbuf* m = batch.pkts[i];
    PacketMeta& pm = *Meta(m);
    if (pm.rules_generation != up.generation) {
      const int32_t cls = pm.rules_generation == previous &&
                                  pm.class_id < rules.class_of_previous.size()
                              ? rules.class_of_previous[pm.class_id]
                              : -1;
      if (cls < 0) {
        FreePacket(m);
        ++gone;
        continue;
      }
      pm.class_id = static_cast<uint16_t>(cls);
      pm.rules_generation = up.generation;
    }
    batch.pkts[kept++] = m;
  }
  batch.count = kept;
  if (gone != 0) up.scheduler->AddReconfiguredDrops(gone);
}

void Switch::FinishRestaging(Uplink& up) {
  if (!up.settled.load(std::memory_order_acquire)) return;
  if (up.handoff != nullptr && rte_ring_count(up.handoff) != 0) return;
  up.restaging = false;
}

}  // namespace qosvisor::vswitch
