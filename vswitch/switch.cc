// The switch's frame: building it from a SwitchSpec (bridges, uplinks, workers and what each
// owns), a worker's poll through the stages, and returning every held packet at the end.
#include "vswitch/switch.h"

#include <fmt/format.h>
#include <rte_errno.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <algorithm>
#include <bit>

#include "common/tsan.h"
#include "common/tsc.h"
#include "vswitch/switch_inl.h"

namespace qosvisor::vswitch {

Result<std::unique_ptr<Switch>> Switch::Create(const SwitchSpec& spec, rte_mempool* pool) {
  std::unique_ptr<Switch> sw(new Switch());
  // Sized once for the ports that may join later: the lcore indexes these without locks.
  sw->ports_ = spec.ports;
  sw->ports_.resize(spec.ports.size() + spec.spare_ports, nullptr);
  sw->port_state_.resize(sw->ports_.size());
  sw->captures_ = std::make_unique<std::atomic<CaptureTap*>[]>(sw->ports_.size());
  for (size_t p = 0; p < spec.port_default_queue.size() && p < spec.ports.size(); ++p) {
    sw->port_state_[p].default_queue = spec.port_default_queue[p];
  }
  sw->pool_ = pool;
  sw->burst_ = std::clamp<uint16_t>(spec.burst, 1, kMaxBurst);
  sw->forward_unparsable_ = spec.forward_unparsable;
  sw->hz_ = TscHz();
  const uint16_t workers = std::max<uint16_t>(spec.workers, 1);
  for (uint16_t i = 0; i < workers; ++i) {
    auto w = std::make_unique<Worker>();
    w->index = i;
    w->identifier = std::make_unique<MessageIdentifier>(spec.flow_state_capacity,
                                                        NsToTsc(60'000'000'000, sw->hz_));
    sw->workers_.push_back(std::move(w));
  }
  if (Status s = sw->InitQuiescence(); !s.ok()) return s;

  for (size_t b = 0; b < spec.bridges.size(); ++b) {
    const BridgeSpec& bs = spec.bridges[b];
    auto bridge = std::make_unique<Bridge>();
    bridge->name = bs.name;
    if (bs.members.size() > kMaxBridgePorts) {
      return Status::Error(fmt::format("bridge '{}': {} ports, at most {}", bs.name,
                                       bs.members.size(), kMaxBridgePorts));
    }
    auto members = std::make_shared<MemberSet>();
    for (size_t i = 0; i < bs.members.size(); ++i) {
      const BridgeMember& bm = bs.members[i];
      if (bm.port >= spec.ports.size()) {
        return Status::Error(fmt::format("bridge '{}': member {} is not a port", bs.name, bm.port));
      }
      PortState& ps = sw->port_state_[bm.port];
      if (ps.bridge >= 0) {
        return Status::Error(
            fmt::format("port '{}' is in two bridges", spec.ports[bm.port]->name()));
      }
      ps.bridge = static_cast<int>(b);
      ps.member = static_cast<int>(i);
      members->list.push_back(MakeMember(bm.port, bm.vlan_mode, bm.access_tag, bm.trunk_tags, 0));
      members->names.push_back(spec.ports[bm.port]->name());
    }
    bridge->macs = std::make_unique<MacTable>(bs.mac_table_size, NsToTsc(bs.mac_aging_ns, sw->hz_));
    auto table = FlowTable::Build(bs.flows, members->names);
    bridge->members.Publish(std::move(members));
    if (!table.ok()) return Status::Error(fmt::format("bridge '{}': {}", bs.name, table.message()));
    bridge->owner = *table;
    bridge->rules = bs.flows;
    bridge->table.store(bridge->owner.get(), std::memory_order_release);
    sw->bridge_names_.push_back(bs.name);
    sw->bridges_.push_back(std::move(bridge));
  }
  Status assigned = sw->Assign(spec);
  if (!assigned.ok()) return assigned;
  sw->PrepareSnapshots();
  return sw;
}

// Bridges, then uplinks, dealt to the workers round robin; ports in no bridge go to worker 0.
Status Switch::Assign(const SwitchSpec& spec) {
  const uint16_t n = workers();
  uint32_t next = 0;
  std::vector<std::vector<uint16_t>> rx(n);
  for (uint16_t b = 0; b < bridges_.size(); ++b) {
    Worker& w = *workers_[next++ % n];
    bridge_owner_.push_back(w.index);
    w.bridges.push_back(b);
    for (const Member& m : bridges_[b]->members.get().list) rx[w.index].push_back(m.port);
  }
  for (uint16_t p = 0; p < ports_.size(); ++p) {
    if (ports_[p] != nullptr && port_state_[p].bridge < 0) rx[0].push_back(p);
  }
  for (uint16_t i = 0; i < n; ++i) {
    PublishRx(*workers_[i], std::make_shared<const std::vector<uint16_t>>(std::move(rx[i])));
  }
  for (const UplinkSpec& us : spec.uplinks) {
    Status s = CreateUplink(spec, us, static_cast<uint16_t>(next++ % n));
    if (!s.ok()) return s;
  }
  for (auto& w : workers_) w->to_uplink.resize(uplinks_.size());
  return Status::Ok();
}

Status Switch::CreateUplink(const SwitchSpec& spec, const UplinkSpec& us, uint16_t owner) {
  if (us.port >= spec.ports.size()) return Status::Error("uplink port out of range");
  const std::string& name = spec.ports[us.port]->name();
  auto sched = sched::Scheduler::Create(us.scheduler, &Switch::OnSchedDrop, workers_[owner].get());
  if (!sched.ok()) return Status::Error(fmt::format("uplink '{}': {}", name, sched.message()));
  auto rules = MakeUplinkRules(name, us, spec.classes);
  if (!rules.ok()) return rules.status();
  auto up = std::make_unique<Uplink>();
  up->port = us.port;
  up->owner = owner;
  up->scheduler = std::move(sched).value();
  up->rules_owner = std::move(rules).value();
  up->rules.store(up->rules_owner.get(), std::memory_order_release);
  // Only the uplink port's own bridge outputs to it: a ring when that bridge runs elsewhere.
  const int bridge = port_state_[us.port].bridge;
  if (bridge >= 0 && bridge_owner_[bridge] != owner) {
    static std::atomic<uint32_t> ring_id{0};
    up->handoff = rte_ring_create(fmt::format("qv_handoff{}", ring_id++).c_str(),
                                  std::bit_ceil(std::max<uint32_t>(spec.handoff_ring_size, 64)),
                                  SOCKET_ID_ANY, RING_F_SC_DEQ);
    if (up->handoff == nullptr) {
      return Status::Error(fmt::format("uplink '{}': cannot create its hand-off ring: {}", name,
                                       rte_strerror(rte_errno)));
    }
  }
  port_state_[us.port].uplink = static_cast<int>(uplinks_.size());
  workers_[owner]->uplinks.push_back(static_cast<uint16_t>(uplinks_.size()));
  uplinks_.push_back(std::move(up));
  return Status::Ok();
}

Result<std::shared_ptr<Switch::UplinkRules>> Switch::MakeUplinkRules(
    const std::string& name, const UplinkSpec& us, const std::vector<ClassSpec>& classes) const {
  auto rules = std::make_shared<UplinkRules>();
  rules->default_class = us.default_class;
  uint32_t max_queue = 0;
  for (uint32_t q : us.class_queues) max_queue = std::max(max_queue, q);
  rules->class_of_queue.assign(max_queue + 1, -1);
  for (size_t c = 0; c < us.class_queues.size(); ++c) {
    rules->class_of_queue[us.class_queues[c]] = static_cast<int32_t>(c);
    ClassSpec cs;  // a queue without a class spec is identified as datagrams
    for (const ClassSpec& candidate : classes) {
      if (candidate.queue == us.class_queues[c]) cs = candidate;
    }
    rules->classes.push_back(UplinkClass{cs.mode, NsToTsc(cs.idle_ns, hz_), nullptr});
    if (cs.mode == MessageMode::kEbpf) {
      auto prog = EbpfClassifier::Load(cs.ebpf_object, cs.ebpf_program);
      if (!prog.ok()) {
        return Status::Error(fmt::format("class with queue {}: {}", cs.queue, prog.message()));
      }
      rules->classes.back().ebpf = prog->get();
      rules->programs.push_back(std::move(prog).value());
    }
  }
  if (us.default_class >= std::max<size_t>(us.class_queues.size(), 1)) {
    return Status::Error(
        fmt::format("uplink '{}': default class {} out of range", name, us.default_class));
  }
  if (rules->classes.empty()) rules->classes.emplace_back();  // everything in one datagram class
  for (const sched::ClassConfig& c : us.scheduler.classes) rules->class_names.push_back(c.name);
  return rules;
}

Switch::~Switch() {
  Drain();
  for (auto& up : uplinks_) rte_ring_free(up->handoff);
}

void Switch::OnSchedDrop(void* worker, rte_mbuf* const* pkts, uint16_t count) {
  static_cast<Worker*>(worker)->counters.sched_dropped += count;
  FreePackets(pkts, count);
}

void Switch::Poll(uint64_t now) {
  for (uint16_t w = 0; w < workers(); ++w) Poll(w, now);
}

void Switch::Poll(uint16_t worker, uint64_t now) {
  Worker& w = *workers_[worker];
  const std::vector<uint16_t>& rx_ports = *w.rx_ports.load(std::memory_order_acquire);
  for (uint16_t p : rx_ports) {
    PacketBatch rx;
    if (ports_[p]->Recv(rx) == 0) continue;
    Capture(p, rx.pkts, rx.count);
    SwitchBurst(w, rx, p, now);
  }
  for (uint16_t p : rx_ports) FlushPort(w, p);
  FlushHandoffs(w);
  for (uint16_t u : w.uplinks) {
    CheckUplinkChange(w, u, now);
    Uplink& up = *uplinks_[u];
    TakeHandoff(up);
    FlushUplink(up);
    ServeUplink(up, now);
  }
  for (uint16_t b : w.bridges) bridges_[b]->macs->Age(now);
  // The ticket is read once: a request that arrives while an earlier one is being served is
  // answered at a later poll, with a copy taken after it was made (see ServeSnapshot).
  const uint64_t ticket = w.snapshot_requested.load(std::memory_order_acquire);
  if (ticket != w.snapshot_served.load(std::memory_order_relaxed)) ServeSnapshot(w, ticket);
  w.epoch.store(w.epoch.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

void Switch::Drain() {
  TsanAcquire(qsbr_.get());  // called once the workers' lcores stopped (see TakeSnapshot)
  for (uint16_t p = 0; p < port_state_.size(); ++p) FreeBatch(port_state_[p].tx);
  for (auto& w : workers_) {
    for (PacketBatch& staged : w->to_uplink) FreeBatch(staged);
  }
  for (auto& uplink : uplinks_) {
    Uplink& up = *uplink;
    if (up.handoff != nullptr) {
      void* m;
      while (rte_ring_dequeue(up.handoff, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
    }
    FreeBatch(up.pending);
    FreeBatch(up.stalled);
    // Everything queued goes back to the pool: step a virtual clock far enough each round that
    // neither the pacer nor a paced class holds anything back.
    PacketBatch out;
    uint64_t t = ReadTsc();
    while (up.scheduler->queued_packets() != 0) {
      t += hz_ * 1000;
      up.scheduler->Dequeue(out, t);
      FreeBatch(out);
    }
  }
}

}  // namespace qosvisor::vswitch
