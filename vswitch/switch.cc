// The switching pipeline: per-burst port polling, parse, VLAN, flow actions, L2 learning,
// scheduled uplinks. Data path: no locks, no allocation, no exceptions.
#include "vswitch/switch.h"

#include <fmt/format.h>
#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_prefetch.h>

#include <algorithm>
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

// Makes the frame carry `vlan` (0: untagged), inserting, rewriting or removing the 802.1Q tag.
bool SetVlan(rte_mbuf* m, uint16_t vlan) {
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  const bool tagged = eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN);
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
  sw->identifier_ = std::make_unique<MessageIdentifier>(spec.flow_state_capacity,
                                                        NsToTsc(60'000'000'000, sw->hz_));

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

  for (const UplinkSpec& us : spec.uplinks) {
    if (us.port >= spec.ports.size()) return Status::Error("uplink port out of range");
    auto sched = sched::Scheduler::Create(us.scheduler, &Switch::OnSchedDrop, sw.get());
    if (!sched.ok()) {
      return Status::Error(
          fmt::format("uplink '{}': {}", spec.ports[us.port]->name(), sched.message()));
    }
    Uplink up;
    up.port = us.port;
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
      up.class_mode.push_back(cs.mode);
      up.class_idle_tsc.push_back(NsToTsc(cs.idle_ns, sw->hz_));
      up.class_ebpf.push_back(nullptr);
      if (cs.mode == MessageMode::kEbpf) {
        auto prog = EbpfClassifier::Load(cs.ebpf_object, cs.ebpf_program);
        if (!prog.ok()) {
          return Status::Error(fmt::format("class with queue {}: {}", cs.queue, prog.message()));
        }
        up.class_ebpf.back() = prog->get();
        sw->ebpf_.push_back(std::move(prog).value());
      }
    }
    if (us.default_class >= std::max<size_t>(us.class_queues.size(), 1)) {
      return Status::Error(fmt::format("uplink '{}': default class {} out of range",
                                       spec.ports[us.port]->name(), us.default_class));
    }
    if (up.class_mode.empty()) {
      up.class_mode.push_back(MessageMode::kDatagram);
      up.class_idle_tsc.push_back(0);
      up.class_ebpf.push_back(nullptr);
    }
    sw->port_state_[us.port].uplink = static_cast<int>(sw->uplinks_.size());
    sw->uplinks_.push_back(std::move(up));
  }
  return sw;
}

Switch::~Switch() { Drain(); }

void Switch::OnSchedDrop(void* self, rte_mbuf* const* pkts, uint16_t count) {
  static_cast<Switch*>(self)->counters_.sched_dropped += count;
  rte_pktmbuf_free_bulk(const_cast<rte_mbuf**>(pkts), count);
}

void Switch::Poll(uint64_t now) {
  for (uint16_t p = 0; p < ports_.size(); ++p) {
    PacketBatch rx;
    if (ports_[p]->Recv(rx) != 0) SwitchBurst(rx, p, now);
  }
  for (uint16_t p = 0; p < ports_.size(); ++p) FlushPort(p);
  for (Uplink& up : uplinks_) {
    FlushUplink(up);
    ServeUplink(up, now);
  }
  if (snapshot_requested_.load(std::memory_order_acquire) !=
      snapshot_served_.load(std::memory_order_relaxed)) {
    FillSnapshot(snapshot_, now);
    snapshot_served_.store(snapshot_requested_.load(std::memory_order_relaxed),
                           std::memory_order_release);
  }
  epoch_.store(epoch_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

// In stages over the whole burst, so that memory latency overlaps instead of adding up: every
// frame's headers are requested first, then each frame is parsed and its cache slot requested,
// then the lookups and actions run on what has arrived by then.
void Switch::SwitchBurst(PacketBatch& rx, uint16_t in_port, uint64_t now) {
  counters_.rx_packets += rx.count;
  const PortState& in = port_state_[in_port];
  if (in.bridge < 0) {
    counters_.no_bridge += rx.count;
    FreeBatch(rx);
    return;
  }
  Bridge& bridge = *bridges_[in.bridge];
  const FlowTable* table = bridge.table.load(std::memory_order_acquire);
  const uint32_t of_port = in.member + 1u;
  for (uint16_t i = 0; i < rx.count; ++i) rte_prefetch0(rte_pktmbuf_mtod(rx.pkts[i], void*));
  for (uint16_t i = 0; i < rx.count; ++i) {
    if (!Classify(rx.pkts[i], bridge.members[in.member], of_port, !table->in_port_only(),
                  stage_[i])) {
      rx.pkts[i] = nullptr;
    }
  }
  for (uint16_t i = 0; i < rx.count; ++i) {
    rte_mbuf* m = rx.pkts[i];
    if (m == nullptr) continue;
    const FlowActions* actions =
        table->in_port_only()
            ? table->ActionsOfPort(of_port)
            : cache_.Lookup(*table, stage_[i].key, rte_pktmbuf_mtod(m, const uint8_t*),
                            rte_pktmbuf_data_len(m));
    Forward(m, in, bridge, actions, stage_[i], now);
  }
  rx.count = 0;
}

// Parse, VLAN ingress and (when the table needs one) the cache key; false when the frame was
// dropped (and freed).
bool Switch::Classify(rte_mbuf* m, const Member& member, uint32_t of_port, bool needs_key,
                      Stage& st) {
  const auto* frame = rte_pktmbuf_mtod(m, const uint8_t*);
  const uint32_t len = rte_pktmbuf_data_len(m);
  const ParseStatus status = ParsePacket(frame, len, st.parsed);
  if (status != ParseStatus::kOk) {
    (status == ParseStatus::kTruncated ? counters_.truncated : counters_.malformed)++;
    if (!forward_unparsable_ || len < RTE_ETHER_HDR_LEN) {
      rte_pktmbuf_free(m);
      return false;
    }
  }
  if (!IngressVlan(member, st.parsed, st.vlan)) {
    ++counters_.vlan_dropped;
    rte_pktmbuf_free(m);
    return false;
  }
  if (needs_key) {
    BuildFlowKey(frame, len, m->buf_len - m->data_off, st.parsed, of_port, st.key);
    cache_.Prefetch(st.key);
  }
  return true;
}

void Switch::Forward(rte_mbuf* m, const PortState& in, Bridge& bridge, const FlowActions* actions,
                     const Stage& st, uint64_t now) {
  const ParsedPacket& parsed = st.parsed;
  uint16_t vlan = st.vlan;
  // Collect outputs first: a packet going to several ports is copied for all but the last.
  uint16_t outputs[64];
  uint16_t n_out = 0;
  int queue = in.default_queue;
  auto add_output = [&](uint16_t member_index) {
    if (member_index != in.member && n_out < 64) outputs[n_out++] = member_index;
  };
  // A flood reaches the members that carry the packet's VLAN; the others are not in its domain.
  auto flood = [&] {
    ++counters_.flooded;
    for (uint16_t i = 0; i < bridge.members.size(); ++i) {
      if (Carries(bridge.members[i], vlan)) add_output(i);
    }
  };
  for (uint32_t a = 0; actions != nullptr && a < actions->n; ++a) {
    const qv_ovs_action& act = actions->a[a];
    switch (act.type) {
      case QV_OVS_SET_QUEUE:
        queue = static_cast<int>(act.arg);
        break;
      case QV_OVS_SET_VLAN:
        vlan = static_cast<uint16_t>(act.arg & 0xfff);
        break;
      case QV_OVS_STRIP_VLAN:
        vlan = 0;
        break;
      case QV_OVS_OUTPUT:
        if (act.arg >= 1 && act.arg <= bridge.members.size()) {
          add_output(static_cast<uint16_t>(act.arg - 1));
        }
        break;
      case QV_OVS_IN_PORT:
        outputs[n_out++] = static_cast<uint16_t>(in.member);
        break;
      case QV_OVS_FLOOD:
        flood();
        break;
      case QV_OVS_NORMAL: {
        bridge.macs->Learn(parsed.src_mac, vlan, static_cast<uint16_t>(in.member), now);
        const int dst = bridge.macs->Lookup(parsed.dst_mac, vlan, now);
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
  if (n_out == 0) {
    ++counters_.flow_dropped;
    rte_pktmbuf_free(m);
    return;
  }
  for (uint16_t o = 0; o + 1 < n_out; ++o) {
    rte_mbuf* copy = rte_pktmbuf_copy(m, pool_, 0, UINT32_MAX);
    if (copy == nullptr) {
      ++counters_.copy_failed;
      continue;
    }
    Output(copy, bridge.members[outputs[o]], vlan, queue, parsed, now);
  }
  Output(m, bridge.members[outputs[n_out - 1]], vlan, queue, parsed, now);
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

void Switch::Output(rte_mbuf* m, const Member& out, uint16_t vlan, int queue, const ParsedPacket& p,
                    uint64_t now) {
  uint16_t egress_vlan = vlan;
  switch (out.mode) {
    case VlanMode::kAccess:
      if (vlan != out.access_tag) {
        ++counters_.vlan_dropped;
        rte_pktmbuf_free(m);
        return;
      }
      egress_vlan = 0;
      break;
    case VlanMode::kTrunk:
      if (vlan == 0 || !VlanAllowed(out.trunk_bits, vlan)) {
        ++counters_.vlan_dropped;
        rte_pktmbuf_free(m);
        return;
      }
      break;
    case VlanMode::kNone:
      break;
  }
  // Copies and the original still carry the frame as received: the parse says whether it is tagged.
  if ((egress_vlan != 0 || p.has_vlan) && !SetVlan(m, egress_vlan)) {
    ++counters_.vlan_dropped;
    rte_pktmbuf_free(m);
    return;
  }
  PortState& ps = port_state_[out.port];
  if (ps.uplink >= 0) {
    ToUplink(m, uplinks_[ps.uplink], queue, p, now);
    return;
  }
  ps.tx.Push(m);
  if (ps.tx.count >= burst_) FlushPort(out.port);
}

void Switch::ToUplink(rte_mbuf* m, Uplink& up, int queue, const ParsedPacket& p, uint64_t now) {
  int cls = queue >= 0 && static_cast<size_t>(queue) < up.class_of_queue.size()
                ? up.class_of_queue[queue]
                : -1;
  if (cls < 0) cls = up.default_class;
  const uint32_t wire_len = rte_pktmbuf_pkt_len(m) + kWireOverhead;
  const MessageIdentity id =
      up.class_ebpf[cls] != nullptr
          ? RunEbpf(*up.class_ebpf[cls], m, up, cls, p, wire_len, now)
          : identifier_->Identify(up.class_mode[cls], p, wire_len, up.class_idle_tsc[cls], now);
  PacketMeta& meta = *Meta(m);
  meta.next = nullptr;
  meta.message_id = id.id;
  meta.arrival_tsc = now;
  meta.rank = 0;
  meta.message_size = id.size;
  meta.message_offset = id.offset;
  meta.message_slot = kNoMessageSlot;
  meta.wire_len = wire_len;
  meta.class_id = static_cast<uint16_t>(cls);
  meta.flags = id.last ? kMetaLastOfMessage : 0;
  up.pending.Push(m);
  if (up.pending.count >= burst_) FlushUplink(up);
}

// The class's program sees a copy of the headers; it may pick another class (by queue id) and
// name the message and its size. Without a message id the packet is its own message.
MessageIdentity Switch::RunEbpf(const EbpfClassifier& prog, rte_mbuf* m, Uplink& up, int& cls,
                                const ParsedPacket& p, uint32_t wire_len, uint64_t now) {
  FillEbpfContext(rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m), p, true, ebpf_ctx_);
  const EbpfDecision d = DecodeEbpfResult(prog.Run(ebpf_ctx_));
  ++counters_.ebpf_runs;
  if (d.sets_queue()) {
    const int chosen = d.queue < up.class_of_queue.size() ? up.class_of_queue[d.queue] : -1;
    if (chosen < 0) {
      ++counters_.ebpf_unknown_queue;
    } else if (chosen != cls) {
      ++counters_.ebpf_reclassified;
      cls = chosen;
    }
  }
  MessageIdentity id = EbpfMessageIdentity(d, p);
  if (id.id == 0) return identifier_->Identify(MessageMode::kDatagram, p, wire_len, 0, now);
  return id;
}

void Switch::FlushPort(uint16_t port) {
  PacketBatch& tx = port_state_[port].tx;
  if (tx.count == 0) return;
  ports_[port]->Send(tx);
  counters_.tx_dropped += tx.count;
  FreeBatch(tx);
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
  for (Uplink& up : uplinks_) {
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

void Switch::FillSnapshot(Snapshot& out, uint64_t now) const {
  out.counters = counters_;
  out.counters.flow_cache_hits = cache_.hits();
  out.counters.flow_cache_misses = cache_.misses();
  out.uplinks.clear();
  for (const Uplink& up : uplinks_) out.uplinks.push_back(up.scheduler->Stats());
  out.learned_macs.clear();
  for (const auto& b : bridges_) out.learned_macs.push_back(b->macs->CountLive(now));
}

Switch::Snapshot Switch::TakeSnapshot(bool lcore_running) {
  if (!lcore_running) {
    Snapshot s;
    FillSnapshot(s, ReadTsc());
    return s;
  }
  const uint64_t ticket = snapshot_requested_.load(std::memory_order_relaxed) + 1;
  snapshot_requested_.store(ticket, std::memory_order_release);
  while (snapshot_served_.load(std::memory_order_acquire) < ticket) {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return snapshot_;
}

Status Switch::ReplaceFlows(const std::string& name, const std::vector<FlowRule>& rules) {
  ReclaimRetiredTables();
  for (auto& bridge : bridges_) {
    if (bridge->name != name) continue;
    auto table = FlowTable::Build(rules, bridge->member_names);
    if (!table.ok()) return Status::Error(fmt::format("bridge '{}': {}", name, table.message()));
    retired_.push_back({bridge->owner, epoch_.load(std::memory_order_acquire) + 1});
    bridge->owner = *table;
    bridge->table.store(bridge->owner.get(), std::memory_order_release);
    return Status::Ok();
  }
  return Status::Error(fmt::format("no bridge named '{}'", name));
}

void Switch::ReclaimRetiredTables() {
  const uint64_t now = epoch_.load(std::memory_order_acquire);
  std::erase_if(retired_, [now](const Retired& r) { return now > r.epoch; });
}

}  // namespace qosvisor::vswitch
