// The bridge stage: a burst from one port is checked, parsed and admitted by VLAN, then routed as
// a whole (to one port, or NORMAL: MAC learning and flooding) or handed to the flow stage.
#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_prefetch.h>

#include <cstring>

#include "vswitch/switch.h"
#include "vswitch/switch_inl.h"

namespace qosvisor::vswitch {

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
  // Frames sent to one plain port as a whole are only checked, never staged for an uplink; all
  // others here are parsed in full and may be (kNormal has returned above).
  const bool deep = route.route != Route::kOnePort;
  for (uint16_t i = 0; deep && i < rx.count && i < kAhead; ++i) PrefetchRestOfFrame(rx.pkts[i]);
  const Stage* previous = nullptr;  // the last frame kept
  for (uint16_t i = 0; i < rx.count; ++i) {
    if (i + kAhead < rx.count) {
      rte_prefetch0(rte_pktmbuf_mtod(rx.pkts[i + kAhead], void*));
      if (deep) PrefetchRestOfFrame(rx.pkts[i + kAhead]);
    }
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

// Beyond a frame's first line, what the parse and an uplink's staging touch: the frame's next
// line when it reaches one (a Homa header, IPv6 and TCP) and the packet metadata. A frame that
// waited in a queue for long comes back with all of them cold.
void Switch::PrefetchRestOfFrame(const rte_mbuf* m) {
  const auto* frame = rte_pktmbuf_mtod(m, const char*);
  const uintptr_t into_line = reinterpret_cast<uintptr_t>(frame) % RTE_CACHE_LINE_SIZE;
  if (into_line + rte_pktmbuf_data_len(m) > RTE_CACHE_LINE_SIZE) {
    rte_prefetch0(frame + (RTE_CACHE_LINE_SIZE - into_line));
  }
  rte_prefetch0_write(Meta(m));
}

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
      const MemberSet& members = bridge.members.get();
      last_port =
          out >= 0 && out != in.member && PlainMember(members[out]) ? members[out].port : -1;
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
  const MemberSet& members = bridge.members.get();
  for (int i = 0; i < static_cast<int>(members.size()); ++i) {
    if (i == in_member || !Carries(members[i], vlan)) continue;
    if (sole >= 0) return -1;
    sole = i;
  }
  return sole;
}

// Parse (only the checks when the burst is forwarded at L2 as a whole), VLAN ingress and (when
// the table needs one) the cache key; false when the frame was dropped (and freed).
bool Switch::Classify(Worker& w, rte_mbuf* m, const Member& member, uint32_t of_port, Route route,
                      const Stage* previous, Stage& st) {
  const auto* frame = rte_pktmbuf_mtod(m, const uint8_t*);
  const uint32_t len = rte_pktmbuf_data_len(m);
  const bool at_l2 = route == Route::kOnePort || route == Route::kNormal;
  const ParseStatus status =
      at_l2 ? CheckPacket(frame, len, st.parsed) : ParsePacket(frame, len, st.parsed);
  if (status != ParseStatus::kOk) {
    (status == ParseStatus::kTruncated ? w.counters.truncated : w.counters.malformed)++;
    if (!forward_unparsable_ || len < RTE_ETHER_HDR_LEN) {
      FreePacket(m);
      return false;
    }
  }
  if (!IngressVlan(member, st.parsed, st.vlan)) {
    ++w.counters.vlan_dropped;
    FreePacket(m);
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

bool Switch::IngressVlan(const Member& in, const ParsedPacket& p, uint16_t& vlan) {
  const uint16_t tagged_vid = p.has_vlan ? (p.vlan_tci & 0xfff) : 0;
  // Most members carry every VLAN: their mode is tested first, by one predicted compare.
  if (in.mode == VlanMode::kNone) [[likely]] {
    vlan = tagged_vid;
    return true;
  }
  if (in.mode == VlanMode::kAccess) {
    vlan = in.access_tag;
    return !p.has_vlan;
  }
  vlan = tagged_vid;  // kTrunk
  return p.has_vlan && VlanAllowed(in.trunk_bits, vlan);
}

}  // namespace qosvisor::vswitch
