// The switching pipeline: per-burst port polling, parse, VLAN, flow actions, L2 learning,
// scheduled uplinks. Data path: no locks, no allocation, no exceptions.
#include "vswitch/switch.h"

#include <fmt/format.h>
#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_errno.h>
#include <rte_prefetch.h>
#include <rte_ring.h>

#include <algorithm>
#include <bit>
#include <thread>

#include "common/packet_meta.h"
#include "common/tsc.h"

namespace qosvisor::vswitch {
namespace {

// Preamble + start delimiter (8), FCS (4) and inter-frame gap (12): what a frame costs the wire
// beyond the bytes DPDK counts.
constexpr uint32_t kWireOverhead = 24;

void FreeBatch(PacketBatch& b) {
  rte_pktmbuf_free_bulk(b.pkts, b.count);
  b.count = 0;
}

bool VlanAllowed(const uint64_t* bits, uint16_t vlan) {
  return (bits[vlan >> 6] >> (vlan & 63)) & 1;
}

// Makes the frame carry `vlan` (0: untagged), inserting, rewriting or removing the outer tag
// (802.1Q, or 802.1ad, whose type is kept when its VLAN is rewritten).
bool SetVlan(rte_mbuf* m, uint16_t vlan) {
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  // (A frame too short to hold the tag its type announces is forwarded only when unparsable
  // frames are: it counts as untagged, as its parse said.)
  const bool tagged = rte_pktmbuf_data_len(m) >= RTE_ETHER_HDR_LEN + 4 &&
                      (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN) ||
                       eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_QINQ));
  if (vlan == 0) {
    if (tagged) {
      // Move the MAC addresses forward over the tag, then drop the first 4 bytes.
      std::memmove(reinterpret_cast<uint8_t*>(eth) + 4, eth, 12);
      rte_pktmbuf_adj(m, 4);
    }
    return true;
  }
  if (tagged) {
    auto* vh = reinterpret_cast<rte_vlan_hdr*>(eth + 1);
    const uint16_t tci = rte_be_to_cpu_16(vh->vlan_tci);
    vh->vlan_tci = rte_cpu_to_be_16(static_cast<uint16_t>((tci & 0xf000) | vlan));
    return true;
  }
  m->vlan_tci = vlan;
  return rte_vlan_insert(&m) == 0;
}

}  // namespace

bool Switch::Carries(const Member& m, uint16_t vlan) {
  switch (m.mode) {
    case VlanMode::kAccess:
      return vlan == m.access_tag;
    case VlanMode::kTrunk:
      return vlan != 0 && VlanAllowed(m.trunk_bits, vlan);
    case VlanMode::kNone:
      return true;
  }
  return false;
}

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
}

Result<std::unique_ptr<Switch>> Switch::Create(const SwitchSpec& spec, rte_mempool* pool) {
  std::unique_ptr<Switch> sw(new Switch());
  sw->ports_ = spec.ports;
  sw->port_state_.resize(spec.ports.size());
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
      Member m{bm.port, bm.vlan_mode, bm.access_tag, {}};
      if (bm.trunk_tags.empty()) {
        std::fill(std::begin(m.trunk_bits), std::end(m.trunk_bits), ~0ull);
      }
      for (uint16_t tag : bm.trunk_tags) m.trunk_bits[(tag & 0xfff) >> 6] |= 1ull << (tag & 63);
      bridge->members.push_back(m);
      bridge->member_names.push_back(spec.ports[bm.port]->name());
    }
    bridge->macs = std::make_unique<MacTable>(bs.mac_table_size, NsToTsc(bs.mac_aging_ns, sw->hz_));
    auto table = FlowTable::Build(bs.flows, bridge->member_names);
    if (!table.ok()) return Status::Error(fmt::format("bridge '{}': {}", bs.name, table.message()));
    bridge->owner = *table;
    bridge->table.store(bridge->owner.get(), std::memory_order_release);
    sw->bridge_names_.push_back(bs.name);
    sw->bridges_.push_back(std::move(bridge));
  }
  Status assigned = sw->Assign(spec);
  if (!assigned.ok()) return assigned;
  return sw;
}

// Bridges, then uplinks, dealt to the workers round robin; ports in no bridge go to worker 0.
Status Switch::Assign(const SwitchSpec& spec) {
  const uint16_t n = workers();
  uint32_t next = 0;
  for (uint16_t b = 0; b < bridges_.size(); ++b) {
    Worker& w = *workers_[next++ % n];
    bridge_owner_.push_back(w.index);
    w.bridges.push_back(b);
    for (const Member& m : bridges_[b]->members) w.rx_ports.push_back(m.port);
  }
  for (uint16_t p = 0; p < ports_.size(); ++p) {
    if (port_state_[p].bridge < 0) workers_[0]->rx_ports.push_back(p);
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
  Uplink up;
  up.port = us.port;
  up.owner = owner;
  up.scheduler = std::move(sched).value();
  up.default_class = us.default_class;
  uint32_t max_queue = 0;
  for (uint32_t q : us.class_queues) max_queue = std::max(max_queue, q);
  up.class_of_queue.assign(max_queue + 1, -1);
  for (size_t c = 0; c < us.class_queues.size(); ++c) {
    up.class_of_queue[us.class_queues[c]] = static_cast<int32_t>(c);
    ClassSpec cs;  // a queue without a class spec is identified as datagrams
    for (const ClassSpec& candidate : spec.classes) {
      if (candidate.queue == us.class_queues[c]) cs = candidate;
    }
    up.classes.push_back(UplinkClass{cs.mode, NsToTsc(cs.idle_ns, hz_), nullptr});
    if (cs.mode == MessageMode::kEbpf) {
      auto prog = EbpfClassifier::Load(cs.ebpf_object, cs.ebpf_program);
      if (!prog.ok()) {
        return Status::Error(fmt::format("class with queue {}: {}", cs.queue, prog.message()));
      }
      up.classes.back().ebpf = prog->get();
      ebpf_.push_back(std::move(prog).value());
    }
  }
  if (us.default_class >= std::max<size_t>(us.class_queues.size(), 1)) {
    return Status::Error(
        fmt::format("uplink '{}': default class {} out of range", name, us.default_class));
  }
  if (up.classes.empty()) up.classes.emplace_back();  // everything in one datagram class
  // Only the uplink port's own bridge outputs to it: a ring when that bridge runs elsewhere.
  const int bridge = port_state_[us.port].bridge;
  if (bridge >= 0 && bridge_owner_[bridge] != owner) {
    static std::atomic<uint32_t> ring_id{0};
    up.handoff = rte_ring_create(fmt::format("qv_handoff{}", ring_id++).c_str(),
                                 std::bit_ceil(std::max<uint32_t>(spec.handoff_ring_size, 64)),
                                 SOCKET_ID_ANY, RING_F_SC_DEQ);
    if (up.handoff == nullptr) {
      return Status::Error(fmt::format("uplink '{}': cannot create its hand-off ring: {}", name,
                                       rte_strerror(rte_errno)));
    }
  }
  port_state_[us.port].uplink = static_cast<int>(uplinks_.size());
  workers_[owner]->uplinks.push_back(static_cast<uint16_t>(uplinks_.size()));
  uplinks_.push_back(std::move(up));
  return Status::Ok();
}

Switch::~Switch() {
  Drain();
  for (Uplink& up : uplinks_) rte_ring_free(up.handoff);
}

void Switch::OnSchedDrop(void* worker, rte_mbuf* const* pkts, uint16_t count) {
  static_cast<Worker*>(worker)->counters.sched_dropped += count;
  rte_pktmbuf_free_bulk(const_cast<rte_mbuf**>(pkts), count);
}

void Switch::Poll(uint64_t now) {
  for (uint16_t w = 0; w < workers(); ++w) Poll(w, now);
}

void Switch::Poll(uint16_t worker, uint64_t now) {
  Worker& w = *workers_[worker];
  for (uint16_t p : w.rx_ports) {
    PacketBatch rx;
    if (ports_[p]->Recv(rx) != 0) SwitchBurst(w, rx, p, now);
  }
  for (uint16_t p : w.rx_ports) FlushPort(w, p);
  FlushHandoffs(w);
  for (uint16_t u : w.uplinks) {
    Uplink& up = uplinks_[u];
    TakeHandoff(up);
    FlushUplink(up);
    ServeUplink(up, now);
  }
  if (w.snapshot_requested.load(std::memory_order_acquire) !=
      w.snapshot_served.load(std::memory_order_relaxed)) {
    FillSnapshot(w, w.snapshot, now);
    w.snapshot_served.store(w.snapshot_requested.load(std::memory_order_relaxed),
                            std::memory_order_release);
  }
  w.epoch.store(w.epoch.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

// In two passes over the burst, so that memory latency overlaps instead of adding up: each frame
// is parsed (its headers requested a few frames ahead) and its cache slot requested, then the
// lookups and actions run on what has arrived by then. NORMAL from a plain member looks nothing
// up, and takes one pass.
void Switch::SwitchBurst(Worker& w, PacketBatch& rx, uint16_t in_port, uint64_t now) {
  w.counters.rx_packets += rx.count;
  const PortState& in = port_state_[in_port];
  if (in.bridge < 0) {
    w.counters.no_bridge += rx.count;
    FreeBatch(rx);
    return;
  }
  Bridge& bridge = *bridges_[in.bridge];
  const FlowTable* table = bridge.table.load(std::memory_order_acquire);
  const uint32_t of_port = in.member + 1u;
  // A table that looks at nothing but the input port gives one answer for the whole burst.
  const FlowActions* actions = table->in_port_only() ? table->ActionsOfPort(of_port) : nullptr;
  const BurstRoute route =
      table->in_port_only() ? RouteOf(bridge, in, actions) : BurstRoute{Route::kLookup, 0};
  const Member& member = bridge.members[in.member];
  for (uint16_t i = 0; i < rx.count && i < kAhead; ++i) {
    rte_prefetch0(rte_pktmbuf_mtod(rx.pkts[i], void*));
  }
  if (route.route == Route::kNormal) {  // needs no lookups: checked and switched in one pass
    SwitchNormal(w, rx, in, bridge, member, of_port, actions, now);
    rx.count = 0;
    return;
  }
  const Stage* previous = nullptr;  // the last frame kept
  for (uint16_t i = 0; i < rx.count; ++i) {
    if (i + kAhead < rx.count) rte_prefetch0(rte_pktmbuf_mtod(rx.pkts[i + kAhead], void*));
    if (Classify(w, rx.pkts[i], member, of_port, route.route, previous, w.stage[i])) {
      previous = &w.stage[i];
    } else {
      rx.pkts[i] = nullptr;
    }
  }
  switch (route.route) {
    case Route::kOnePort:
      SendAllTo(w, rx, in, bridge, actions, route.port, now);
      break;
    case Route::kNormal:  // (switched above)
      break;
    case Route::kEachFrame:
      for (uint16_t i = 0; i < rx.count; ++i) {
        if (rx.pkts[i] != nullptr) Forward(w, rx.pkts[i], in, bridge, actions, w.stage[i], now);
      }
      break;
    case Route::kLookup:
      LookUpAndForward(w, rx, in, bridge, *table, now);
      break;
  }
  rx.count = 0;
}

// Each frame's actions from the flow cache (or the classifier), except that a frame with the
// previous frame's key takes the previous frame's verdict. Runs of frames for one port are
// appended to its TX batch together.
void Switch::LookUpAndForward(Worker& w, PacketBatch& rx, const PortState& in, Bridge& bridge,
                              const FlowTable& table, uint64_t now) {
  Verdict v;
  bool decided = false;
  uint32_t repeats = 0, flooded = 0;
  TxRun run;
  for (uint16_t i = 0; i < rx.count; ++i) {
    rte_mbuf* m = rx.pkts[i];
    if (m == nullptr) continue;
    const Stage& st = w.stage[i];
    if (st.repeat && decided && v.shareable) {
      ++repeats;
    } else {
      const FlowActions* actions = w.cache.Lookup(
          table, st.key, rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m));
      Decide(m, in, bridge, actions, st, now, v);
      PlanEgress(bridge, st.parsed, v);
      decided = true;
    }
    flooded += v.floods;
    if (Gather(w, rx, run, v.egress == Egress::kTx ? v.port : -1, m)) continue;
    if (v.egress == Egress::kUplink) {
      StageForUplink(w, m, v.uplink, st.parsed, now);
    } else {
      Deliver(w, m, bridge, v, st.parsed, now);
    }
  }
  Gather(w, rx, run, -1, nullptr);
  w.cache.CountRepeats(repeats);
  w.counters.flooded += flooded;
}

// The one member (1-based) an action list outputs to when it does nothing else and names it
// once (0: not that shape; a port named twice gets two copies).
uint32_t Switch::OnlyOutput(const FlowActions& actions) {
  if (actions.n != 1 || actions.a[0].type != QV_OVS_OUTPUT) return 0;
  return actions.a[0].arg;
}

// Members that carry every VLAN and no scheduler pass frames between them as they came (but
// for priority tags, see KeepsItsTag), so whole bursts between them need no per-frame VLAN or
// uplink decisions.
bool Switch::PlainMember(const Member& m) const {
  return m.mode == VlanMode::kNone && port_state_[m.port].uplink < 0;
}

// Output removes a priority tag (VLAN 0) between plain members; other frames keep theirs.
bool Switch::KeepsItsTag(const Stage& st) { return !st.parsed.has_vlan || st.vlan != 0; }

Switch::BurstRoute Switch::RouteOf(const Bridge& bridge, const PortState& in,
                                   const FlowActions* actions) const {
  if (actions == nullptr || bridge.members[in.member].mode != VlanMode::kNone) {
    return {Route::kEachFrame, 0};
  }
  if (actions->n == 1 && actions->a[0].type == QV_OVS_NORMAL) return {Route::kNormal, 0};
  const uint32_t out = OnlyOutput(*actions);
  if (out == 0 || out > bridge.members.size() || out - 1 == static_cast<uint32_t>(in.member) ||
      !PlainMember(bridge.members[out - 1])) {
    return {Route::kEachFrame, 0};
  }
  return {Route::kOnePort, bridge.members[out - 1].port};
}

// Every frame of the burst (those Classify kept) to one port, unchanged; a priority-tagged frame
// takes the per-frame path, after the frames before it.
void Switch::SendAllTo(Worker& w, PacketBatch& rx, const PortState& in, Bridge& bridge,
                       const FlowActions* actions, uint16_t port, uint64_t now) {
  TxRun run;
  for (uint16_t i = 0; i < rx.count; ++i) {
    rte_mbuf* m = rx.pkts[i];
    if (m == nullptr) continue;
    if (Gather(w, rx, run, KeepsItsTag(w.stage[i]) ? port : -1, m)) continue;
    ForwardOneByOne(w, m, in, bridge, actions, w.stage[i], now);
  }
  Gather(w, rx, run, -1, nullptr);
}

// The per-frame path for a frame of a whole-burst route: it may need more of the headers than
// the checks-only parse recorded.
void Switch::ForwardOneByOne(Worker& w, rte_mbuf* m, const PortState& in, Bridge& bridge,
                             const FlowActions* actions, Stage& st, uint64_t now) {
  ParsePacket(rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m), st.parsed);
  Forward(w, m, in, bridge, actions, st, now);
}

// Appends to a port's TX batch in bulk, sending each time it reaches a burst. (Pushing frame by
// frame chains every frame through the batch's count in memory.)
void Switch::AppendTx(Worker& w, uint16_t port, rte_mbuf* const* pkts, uint16_t n) {
  if (n == 0) return;  // (and `port` may then be no port at all)
  PacketBatch& tx = port_state_[port].tx;
  while (n != 0) {
    const uint16_t k = std::min<uint16_t>(n, static_cast<uint16_t>(burst_ - tx.count));
    std::memcpy(tx.pkts + tx.count, pkts, k * sizeof(*pkts));
    tx.count = static_cast<uint16_t>(tx.count + k);
    pkts += k;
    n = static_cast<uint16_t>(n - k);
    if (tx.count >= burst_) FlushPort(w, port);
  }
}

// Gathers `m` into the run for `port` (≥ 0), or, with port -1, ends the run for a frame that
// takes another way; a frame for another port ends the run too. Ending a run appends its frames
// to their port's TX batch first, so every port keeps the frames' order. Returns whether `m` was
// gathered.
bool Switch::Gather(Worker& w, PacketBatch& rx, TxRun& run, int port, rte_mbuf* m) {
  if (port < 0 || port != run.port) {
    if (run.n != 0) AppendTx(w, static_cast<uint16_t>(run.port), rx.pkts, run.n);
    run = {0, port};
    if (port < 0) return false;
  }
  rx.pkts[run.n++] = m;
  return true;
}

// NORMAL from a plain member: check the frame (Classify), learn the source, forward to where the
// destination was learnt, or flood. Frames that repeat the previous frame's addresses (most of a
// burst) reuse its answer, and runs of frames for one port are appended to its TX batch
// together; copies (floods to several ports), outputs to VLAN-mapped members or to uplinks take
// the general path.
void Switch::SwitchNormal(Worker& w, PacketBatch& rx, const PortState& in, Bridge& bridge,
                          const Member& member, uint32_t of_port, const FlowActions* normal,
                          uint64_t now) {
  uint64_t last_addr = 0;
  uint32_t last_addr_hi = 0;
  uint16_t last_vlan = 0;
  int last_port = -1;  // -1: the previous frame took the general path, or there was none
  bool last_flooded = false;
  uint32_t flooded = 0;
  TxRun run;
  for (uint16_t i = 0; i < rx.count; ++i) {
    if (i + kAhead < rx.count) rte_prefetch0(rte_pktmbuf_mtod(rx.pkts[i + kAhead], void*));
    rte_mbuf* m = rx.pkts[i];
    Stage& st = w.stage[i];
    if (!Classify(w, m, member, of_port, Route::kNormal, nullptr, st)) continue;
    const auto* frame = rte_pktmbuf_mtod(m, const uint8_t*);
    uint64_t addr;
    uint32_t addr_hi;
    std::memcpy(&addr, frame, 8);
    std::memcpy(&addr_hi, frame + 8, 4);
    if (last_port < 0 || addr != last_addr || addr_hi != last_addr_hi || st.vlan != last_vlan) {
      last_addr = addr;
      last_addr_hi = addr_hi;
      last_vlan = st.vlan;
      const int dst = LearnAndLookup(bridge, frame, st.vlan, in.member, now);
      last_flooded = dst < 0;
      const int out = last_flooded ? SoleFloodMember(bridge, in.member, st.vlan) : dst;
      last_port = out >= 0 && out != in.member && PlainMember(bridge.members[out])
                      ? bridge.members[out].port
                      : -1;
    }
    if (Gather(w, rx, run, KeepsItsTag(st) ? last_port : -1, m)) {
      flooded += last_flooded;
      continue;
    }
    ForwardOneByOne(w, m, in, bridge, normal, st, now);
  }
  Gather(w, rx, run, -1, nullptr);
  w.counters.flooded += flooded;
}

// The member a flood from `in_member` on `vlan` reaches when it reaches exactly one, else -1.
int Switch::SoleFloodMember(const Bridge& bridge, int in_member, uint16_t vlan) {
  int sole = -1;
  for (int i = 0; i < static_cast<int>(bridge.members.size()); ++i) {
    if (i == in_member || !Carries(bridge.members[i], vlan)) continue;
    if (sole >= 0) return -1;
    sole = i;
  }
  return sole;
}

// Parse (only the checks when the burst is forwarded at L2 as a whole), VLAN ingress and (when
// the table needs one) the cache key; false when the frame was dropped (and freed).
bool Switch::Classify(Worker& w, rte_mbuf* m, const Member& member, uint32_t of_port,
                      Route route, const Stage* previous, Stage& st) {
  const auto* frame = rte_pktmbuf_mtod(m, const uint8_t*);
  const uint32_t len = rte_pktmbuf_data_len(m);
  const bool at_l2 = route == Route::kOnePort || route == Route::kNormal;
  const ParseStatus status =
      at_l2 ? CheckPacket(frame, len, st.parsed) : ParsePacket(frame, len, st.parsed);
  if (status != ParseStatus::kOk) {
    (status == ParseStatus::kTruncated ? w.counters.truncated : w.counters.malformed)++;
    if (!forward_unparsable_ || len < RTE_ETHER_HDR_LEN) {
      rte_pktmbuf_free(m);
      return false;
    }
  }
  if (!IngressVlan(member, st.parsed, st.vlan)) {
    ++w.counters.vlan_dropped;
    rte_pktmbuf_free(m);
    return false;
  }
  st.repeat = false;
  if (route != Route::kLookup) return true;
  if (status != ParseStatus::kOk) {
    // Forwarded although unparsable: the classifier may read what the parse did not vouch for,
    // so the frame is not cached.
    st.key.words = 0;
    st.key.in_port = of_port;
    return true;
  }
  // Frames of one flow often come together: a frame with the previous frame's key needs no hash
  // and no cache lookup.
  st.repeat = BuildNextFlowKey(frame, len, m->buf_len - m->data_off, st.parsed, of_port,
                               previous != nullptr ? &previous->key : nullptr, st.key);
  if (!st.repeat && st.key.words != 0) w.cache.Prefetch(st.key);
  return true;
}

void Switch::Forward(Worker& w, rte_mbuf* m, const PortState& in, Bridge& bridge,
                     const FlowActions* actions, const Stage& st, uint64_t now) {
  Verdict v;
  Decide(m, in, bridge, actions, st, now, v);
  w.counters.flooded += v.floods;
  Deliver(w, m, bridge, v, st.parsed, now);
}

// Runs the actions without sending anything. Frames with one flow key (the same headers from the
// same port) get the same verdict when the actions hold one NORMAL at most: learning their
// source changes nothing between them, and the lookup gives the same answer. (A second NORMAL,
// on another VLAN, learns after the first looked up, and may evict what it found.)
void Switch::Decide(rte_mbuf* m, const PortState& in, Bridge& bridge, const FlowActions* actions,
                    const Stage& st, uint64_t now, Verdict& v) {
  // Outputs are collected first: a packet going to several ports is copied for all but the last.
  v.n_out = 0;
  v.vlan = st.vlan;
  v.queue = in.default_queue;
  v.floods = 0;
  uint32_t normals = 0;
  auto push_output = [&](uint16_t member_index) {
    if (v.n_out < Verdict::kMaxOutputs) v.outputs[v.n_out++] = member_index;
  };
  auto add_output = [&](uint16_t member_index) {  // (never back out of the input port)
    if (member_index != in.member) push_output(member_index);
  };
  // A flood reaches the members that carry the packet's VLAN; the others are not in its domain.
  auto flood = [&] {
    ++v.floods;
    for (uint16_t i = 0; i < bridge.members.size(); ++i) {
      if (Carries(bridge.members[i], v.vlan)) add_output(i);
    }
  };
  for (uint32_t a = 0; actions != nullptr && a < actions->n; ++a) {
    const qv_ovs_action& act = actions->a[a];
    switch (act.type) {
      case QV_OVS_SET_QUEUE:
        v.queue = static_cast<int>(act.arg);
        break;
      case QV_OVS_SET_VLAN:
        v.vlan = static_cast<uint16_t>(act.arg & 0xfff);
        break;
      case QV_OVS_STRIP_VLAN:
        v.vlan = 0;
        break;
      case QV_OVS_OUTPUT:
        if (act.arg >= 1 && act.arg <= bridge.members.size()) {
          add_output(static_cast<uint16_t>(act.arg - 1));
        }
        break;
      case QV_OVS_IN_PORT:
        push_output(static_cast<uint16_t>(in.member));
        break;
      case QV_OVS_FLOOD:
        flood();
        break;
      case QV_OVS_NORMAL: {
        ++normals;
        const int dst =
            LearnAndLookup(bridge, rte_pktmbuf_mtod(m, const uint8_t*), v.vlan, in.member, now);
        if (dst < 0) {
          flood();
        } else {
          add_output(static_cast<uint16_t>(dst));
        }
        break;
      }
      default:
        break;
    }
  }
  v.shareable = normals <= 1;
}

// Whether the frames of a verdict can go to their one port with no per-frame decision: no VLAN
// tag to add, change or remove, no drop. Such a frame is then appended to the port's TX batch
// or, on an uplink, identified and staged for the scheduler.
void Switch::PlanEgress(const Bridge& bridge, const ParsedPacket& p, Verdict& v) {
  v.egress = Egress::kGeneral;
  if (v.n_out != 1) return;
  const Member& out = bridge.members[v.outputs[0]];
  const int egress_vlan = EgressVlan(out, v.vlan);
  if (egress_vlan != 0 || p.has_vlan) return;
  const PortState& ps = port_state_[out.port];
  v.port = out.port;
  if (ps.uplink < 0) {
    v.egress = Egress::kTx;
    return;
  }
  v.egress = Egress::kUplink;
  Uplink& up = uplinks_[ps.uplink];
  const int cls = ClassOf(up, v.queue);
  v.uplink = {&up, &up.classes[cls], static_cast<uint16_t>(ps.uplink), cls};
}

void Switch::Deliver(Worker& w, rte_mbuf* m, Bridge& bridge, const Verdict& v,
                     const ParsedPacket& parsed, uint64_t now) {
  if (v.n_out == 0) {
    ++w.counters.flow_dropped;
    rte_pktmbuf_free(m);
    return;
  }
  for (uint16_t o = 0; o + 1 < v.n_out; ++o) {
    rte_mbuf* copy = rte_pktmbuf_copy(m, pool_, 0, UINT32_MAX);
    if (copy == nullptr) {
      ++w.counters.copy_failed;
      continue;
    }
    Output(w, copy, bridge.members[v.outputs[o]], v.vlan, v.queue, parsed, now);
  }
  Output(w, m, bridge.members[v.outputs[v.n_out - 1]], v.vlan, v.queue, parsed, now);
}

int Switch::LearnAndLookup(Bridge& bridge, const uint8_t* frame, uint16_t vlan, int in_member,
                           uint64_t now) {
  bridge.macs->Learn(frame + 6, vlan, static_cast<uint16_t>(in_member), now);
  return bridge.macs->Lookup(frame, vlan, now);
}

bool Switch::IngressVlan(const Member& in, const ParsedPacket& p, uint16_t& vlan) {
  const uint16_t tagged_vid = p.has_vlan ? (p.vlan_tci & 0xfff) : 0;
  switch (in.mode) {
    case VlanMode::kAccess:
      vlan = in.access_tag;
      return !p.has_vlan;
    case VlanMode::kTrunk:
      vlan = tagged_vid;
      return p.has_vlan ? VlanAllowed(in.trunk_bits, vlan) : false;
    case VlanMode::kNone:
      vlan = tagged_vid;
      return true;
  }
  return false;
}

// The VLAN a frame of `vlan` leaves `out` with (0: untagged), or -1 when `out` does not carry it.
int Switch::EgressVlan(const Member& out, uint16_t vlan) {
  switch (out.mode) {
    case VlanMode::kAccess:
      return vlan == out.access_tag ? 0 : -1;
    case VlanMode::kTrunk:
      return vlan != 0 && VlanAllowed(out.trunk_bits, vlan) ? vlan : -1;
    case VlanMode::kNone:
      return vlan;
  }
  return -1;
}

void Switch::Output(Worker& w, rte_mbuf* m, const Member& out, uint16_t vlan, int queue,
                    const ParsedPacket& p, uint64_t now) {
  const int egress_vlan = EgressVlan(out, vlan);
  if (egress_vlan < 0) {
    ++w.counters.vlan_dropped;
    rte_pktmbuf_free(m);
    return;
  }
  // Copies and the original still carry the frame as received: the parse says whether it is tagged.
  if ((egress_vlan != 0 || p.has_vlan) && !SetVlan(m, static_cast<uint16_t>(egress_vlan))) {
    ++w.counters.vlan_dropped;
    rte_pktmbuf_free(m);
    return;
  }
  PortState& ps = port_state_[out.port];
  if (ps.uplink >= 0) {
    const auto uplink = static_cast<uint16_t>(ps.uplink);
    ToUplink(w, m, uplink, ClassOf(uplinks_[uplink], queue), p, now);
    return;
  }
  // One frame: a push (AppendTx's bulk loop, not inlined here, costs this per-frame path ~10
  // cycles a frame).
  ps.tx.Push(m);
  if (ps.tx.count >= burst_) FlushPort(w, out.port);
}

// The uplink class of a set_queue id; frames with no queue, or one no class is bound to, take the
// uplink's default class.
int Switch::ClassOf(const Uplink& up, int queue) {
  const int cls = queue >= 0 && static_cast<size_t>(queue) < up.class_of_queue.size()
                      ? up.class_of_queue[queue]
                      : -1;
  return cls < 0 ? up.default_class : cls;
}

void Switch::ToUplink(Worker& w, rte_mbuf* m, uint16_t uplink, int cls, const ParsedPacket& p,
                      uint64_t now) {
  Uplink& up = uplinks_[uplink];
  StageForUplink(w, m, {&up, &up.classes[cls], uplink, cls}, p, now);
}

// Classification and message identification run here, on the bridge's worker, so that the
// uplink's owner only schedules.
void Switch::StageForUplink(Worker& w, rte_mbuf* m, const UplinkTarget& t, const ParsedPacket& p,
                            uint64_t now) {
  Uplink& up = *t.up;
  const UplinkClass& uc = *t.rules;
  int cls = t.cls;
  const uint32_t wire_len = rte_pktmbuf_pkt_len(m) + kWireOverhead;
  const MessageIdentity id =
      uc.ebpf != nullptr ? RunEbpf(w, *uc.ebpf, m, up, cls, p, wire_len, now)
                         : w.identifier->Identify(uc.mode, p, wire_len, uc.idle_tsc, now);
  // `next` and `rank` are the scheduler's to write.
  PacketMeta& meta = *Meta(m);
  meta.message_id = id.id;
  meta.arrival_tsc = now;
  meta.message_size = id.size;
  meta.message_offset = id.offset;
  meta.message_slot = kNoMessageSlot;
  meta.wire_len = wire_len;
  meta.class_id = static_cast<uint16_t>(cls);
  meta.flags = id.last ? kMetaLastOfMessage : 0;
  if (up.owner != w.index) {
    PacketBatch& staged = w.to_uplink[t.index];
    staged.Push(m);
    if (staged.full()) FlushHandoffs(w);
    return;
  }
  up.pending.Push(m);
  if (up.pending.count >= burst_) FlushUplink(up);
}

// The class's program sees a copy of the headers; it may pick another class (by queue id) and
// name the message and its size. Without a message id the packet is its own message.
MessageIdentity Switch::RunEbpf(Worker& w, const EbpfClassifier& prog, rte_mbuf* m, Uplink& up,
                                int& cls, const ParsedPacket& p, uint32_t wire_len,
                                uint64_t now) {
  FillEbpfContext(rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m), p, true,
                  w.ebpf_ctx);
  const EbpfDecision d = DecodeEbpfResult(prog.Run(w.ebpf_ctx));
  ++w.counters.ebpf_runs;
  if (d.sets_queue()) {
    const int chosen = d.queue < up.class_of_queue.size() ? up.class_of_queue[d.queue] : -1;
    if (chosen < 0) {
      ++w.counters.ebpf_unknown_queue;
    } else if (chosen != cls) {
      ++w.counters.ebpf_reclassified;
      cls = chosen;
    }
  }
  MessageIdentity id = EbpfMessageIdentity(d, p);
  if (id.id == 0) return w.identifier->Identify(MessageMode::kDatagram, p, wire_len, 0, now);
  return id;
}

void Switch::FlushPort(Worker& w, uint16_t port) {
  PacketBatch& tx = port_state_[port].tx;
  if (tx.count == 0) return;
  ports_[port]->Send(tx);
  w.counters.tx_dropped += tx.count;
  FreeBatch(tx);
}

void Switch::FlushHandoffs(Worker& w) {
  for (uint16_t u = 0; u < w.to_uplink.size(); ++u) {
    PacketBatch& staged = w.to_uplink[u];
    if (staged.count == 0) continue;
    const unsigned n = rte_ring_enqueue_burst(uplinks_[u].handoff,
                                              reinterpret_cast<void* const*>(staged.pkts),
                                              staged.count, nullptr);
    staged.Consume(static_cast<uint16_t>(n));
    w.counters.handoff_dropped += staged.count;
    FreeBatch(staged);
  }
}

void Switch::TakeHandoff(Uplink& up) {
  if (up.handoff == nullptr) return;
  // A bounded number of bursts per poll, so that producers cannot starve the sending side.
  for (int round = 0; round < 8; ++round) {
    const unsigned n = rte_ring_dequeue_burst(
        up.handoff, reinterpret_cast<void**>(up.pending.pkts + up.pending.count),
        kMaxBurst - up.pending.count, nullptr);
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

void Switch::FlushUplink(Uplink& up) {
  if (up.pending.count != 0) up.scheduler->Enqueue(up.pending);
}

void Switch::ServeUplink(Uplink& up, uint64_t now) {
  // Packets the port refused last time go first, so the scheduler's order is kept on the wire.
  if (up.stalled.count != 0) {
    ports_[up.port]->Send(up.stalled);
    if (up.stalled.count != 0) return;
  }
  up.scheduler->Dequeue(up.stalled, now);
  if (up.stalled.count != 0) ports_[up.port]->Send(up.stalled);
}

void Switch::Drain() {
  for (uint16_t p = 0; p < port_state_.size(); ++p) FreeBatch(port_state_[p].tx);
  for (auto& w : workers_) {
    for (PacketBatch& staged : w->to_uplink) FreeBatch(staged);
  }
  for (Uplink& up : uplinks_) {
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

// The parts of a snapshot `w` owns: its counters, its uplinks' statistics, its bridges' MACs.
void Switch::FillSnapshot(const Worker& w, Snapshot& out, uint64_t now) const {
  out.counters = w.counters;
  out.counters.flow_cache_hits = w.cache.hits();
  out.counters.flow_cache_misses = w.cache.misses();
  out.uplinks.resize(uplinks_.size());
  for (uint16_t u : w.uplinks) out.uplinks[u] = uplinks_[u].scheduler->Stats();
  out.learned_macs.resize(bridges_.size());
  for (uint16_t b : w.bridges) out.learned_macs[b] = bridges_[b]->macs->CountLive(now);
}

Switch::Snapshot Switch::Merge() const {
  Snapshot all;
  all.uplinks.resize(uplinks_.size());
  all.learned_macs.resize(bridges_.size());
  for (const auto& w : workers_) {
    all.counters.Add(w->snapshot.counters);
    for (uint16_t u : w->uplinks) all.uplinks[u] = w->snapshot.uplinks[u];
    for (uint16_t b : w->bridges) all.learned_macs[b] = w->snapshot.learned_macs[b];
  }
  return all;
}

Switch::Snapshot Switch::TakeSnapshot(bool lcore_running) {
  if (!lcore_running) {
    const uint64_t now = ReadTsc();
    for (auto& w : workers_) FillSnapshot(*w, w->snapshot, now);
    return Merge();
  }
  std::vector<uint64_t> tickets;
  for (auto& w : workers_) {
    tickets.push_back(w->snapshot_requested.load(std::memory_order_relaxed) + 1);
    w->snapshot_requested.store(tickets.back(), std::memory_order_release);
  }
  for (size_t i = 0; i < workers_.size(); ++i) {
    while (workers_[i]->snapshot_served.load(std::memory_order_acquire) < tickets[i]) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  return Merge();
}

uint64_t Switch::polls() const {
  uint64_t least = UINT64_MAX;
  for (const auto& w : workers_) least = std::min(least, w->epoch.load(std::memory_order_acquire));
  return least;
}

Status Switch::ReplaceFlows(const std::string& name, const std::vector<FlowRule>& rules) {
  ReclaimRetiredTables();
  for (auto& bridge : bridges_) {
    if (bridge->name != name) continue;
    auto table = FlowTable::Build(rules, bridge->member_names);
    if (!table.ok()) return Status::Error(fmt::format("bridge '{}': {}", name, table.message()));
    Retired r{bridge->owner, {}};
    for (const auto& w : workers_) r.epochs.push_back(w->epoch.load(std::memory_order_acquire) + 1);
    retired_.push_back(std::move(r));
    bridge->owner = *table;
    bridge->table.store(bridge->owner.get(), std::memory_order_release);
    return Status::Ok();
  }
  return Status::Error(fmt::format("no bridge named '{}'", name));
}

void Switch::ReclaimRetiredTables() {
  std::erase_if(retired_, [this](const Retired& r) {
    for (size_t i = 0; i < workers_.size(); ++i) {
      if (workers_[i]->epoch.load(std::memory_order_acquire) <= r.epochs[i]) return false;
    }
    return true;
  });
}

}  // namespace qosvisor::vswitch
