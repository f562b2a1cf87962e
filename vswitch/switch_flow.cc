// The flow stage: a frame's actions (flow cache, shared verdicts) and where they send it: copies,
// egress VLAN tags, a port's TX batch, or, identified as a message, an uplink's queue or ring.
#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <algorithm>
#include <cstring>

#include "common/packet_meta.h"
#include "common/tsan.h"
#include "vswitch/switch.h"
#include "vswitch/switch_inl.h"

namespace qosvisor::vswitch {
namespace {

// Preamble + start delimiter (8), FCS (4) and inter-frame gap (12): what a frame costs the wire
// beyond the bytes DPDK counts.
constexpr uint32_t kWireOverhead = 24;

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

// ForwardOneByOne (for the bridge's whole-burst routes) and the staging for uplinks are here, with
// the loops that call them, rather than in switch_bridge.cc and switch_uplink.cc: a call into
// another file loses what GCC knows of the callee (the registers it clobbers, the memory it
// touches), and the burst loops around these calls would spill more.

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

// The per-frame path for a frame of a whole-burst route: it may need more of the headers than
// the checks-only parse recorded.
void Switch::ForwardOneByOne(Worker& w, rte_mbuf* m, const PortState& in, Bridge& bridge,
                             const FlowActions* actions, Stage& st, uint64_t now) {
  ParsePacket(rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m), st.parsed);
  Forward(w, m, in, bridge, actions, st, now);
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
  v.uplink = TargetOf(static_cast<uint16_t>(ps.uplink), v.queue);
}

void Switch::Deliver(Worker& w, rte_mbuf* m, Bridge& bridge, const Verdict& v,
                     const ParsedPacket& parsed, uint64_t now) {
  if (v.n_out == 0) {
    ++w.counters.flow_dropped;
    FreePacket(m);
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
    FreePacket(m);
    return;
  }
  // Copies and the original still carry the frame as received: the parse says whether it is tagged.
  if ((egress_vlan != 0 || p.has_vlan) && !SetVlan(m, static_cast<uint16_t>(egress_vlan))) {
    ++w.counters.vlan_dropped;
    FreePacket(m);
    return;
  }
  PortState& ps = port_state_[out.port];
  if (ps.uplink >= 0) {
    ToUplink(w, m, static_cast<uint16_t>(ps.uplink), queue, p, now);
    return;
  }
  // One frame: a push (AppendTx's bulk loop, not inlined here, costs this per-frame path ~10
  // cycles a frame).
  ps.tx.Push(m);
  if (ps.tx.count >= burst_) FlushPort(w, out.port);
}

// The uplink class of a set_queue id; frames with no queue, or one no class is bound to, take the
// uplink's default class.
int Switch::ClassOf(const UplinkRules& rules, int queue) {
  const int cls = queue >= 0 && static_cast<size_t>(queue) < rules.class_of_queue.size()
                      ? rules.class_of_queue[queue]
                      : -1;
  return cls < 0 ? rules.default_class : cls;
}

Switch::UplinkTarget Switch::TargetOf(uint16_t uplink, int queue) {
  Uplink& up = *uplinks_[uplink];
  const UplinkRules& rules = *up.rules.load(std::memory_order_acquire);
  const int cls = ClassOf(rules, queue);
  return {&up, &rules.classes[cls], uplink, cls, rules.generation, &rules};
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

void Switch::ToUplink(Worker& w, rte_mbuf* m, uint16_t uplink, int queue, const ParsedPacket& p,
                      uint64_t now) {
  StageForUplink(w, m, TargetOf(uplink, queue), p, now);
}

// Classification and message identification run here, on the bridge's worker, so that the
// uplink's owner only schedules.
void Switch::StageForUplink(Worker& w, rte_mbuf* m, const UplinkTarget& t, const ParsedPacket& p,
                            uint64_t now) {
  Uplink& up = *t.up;
  const UplinkClass& uc = *t.rules;
  int cls = t.cls;
  const uint32_t wire_len = rte_pktmbuf_pkt_len(m) + kWireOverhead;
  const MessageIdentity id = uc.ebpf != nullptr
                                 ? RunEbpf(w, *uc.ebpf, m, *t.table, cls, p, wire_len, now)
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
  // (An identity that an eBPF program names is never whole: the program may leave offsets at 0.)
  meta.flags = static_cast<uint16_t>((id.last ? kMetaLastOfMessage : 0) |
                                     (id.whole ? kMetaWholeMessage : 0));
  meta.rules_generation = t.generation;
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
MessageIdentity Switch::RunEbpf(Worker& w, const EbpfClassifier& prog, rte_mbuf* m,
                                const UplinkRules& rules, int& cls, const ParsedPacket& p, uint32_t wire_len, uint64_t now) {
  FillEbpfContext(rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m), p, true,
                  w.ebpf_ctx);
  const EbpfDecision d = DecodeEbpfResult(prog.Run(w.ebpf_ctx));
  ++w.counters.ebpf_runs;
  if (d.sets_queue()) {
    const int chosen =
        d.queue < rules.class_of_queue.size() ? rules.class_of_queue[d.queue] : -1;
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

void Switch::FlushHandoffs(Worker& w) {
  for (uint16_t u = 0; u < w.to_uplink.size(); ++u) {
    PacketBatch& staged = w.to_uplink[u];
    if (staged.count == 0) continue;
    TsanPacketsOut();
    const unsigned n = rte_ring_enqueue_burst(
        uplinks_[u]->handoff, reinterpret_cast<void* const*>(staged.pkts), staged.count, nullptr);
    staged.Consume(static_cast<uint16_t>(n));
    w.counters.handoff_dropped += staged.count;
    FreeBatch(staged);
  }
}

}  // namespace qosvisor::vswitch
