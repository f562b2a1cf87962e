// The per-packet steps and small helpers that more than one stage of the switch inlines, for the
// switch_*.cc files only: an inline function must be defined in every file that calls it.
#pragma once

#include <rte_mbuf.h>

#include <cstdint>

#include "common/packet_batch.h"
#include "common/tsan.h"
#include "vswitch/switch.h"

namespace qosvisor::vswitch {

// Mbufs go back to the pool, from which another thread (an in-process generator) may take them:
// the TSan hand-off is released first, as before a send.
inline void FreePacket(rte_mbuf* m) {
  TsanPacketsOut();
  rte_pktmbuf_free(m);
}
inline void FreePackets(rte_mbuf* const* pkts, uint16_t n) {
  if (n == 0) return;
  TsanPacketsOut();
  // (rte_pktmbuf_free_bulk takes a non-const array it does not write.)
  rte_pktmbuf_free_bulk(const_cast<rte_mbuf**>(pkts), n);
}
inline void FreeBatch(PacketBatch& b) {
  FreePackets(b.pkts, b.count);
  b.count = 0;
}

inline bool VlanAllowed(const uint64_t* bits, uint16_t vlan) {
  return (bits[vlan >> 6] >> (vlan & 63)) & 1;
}

inline bool Switch::Carries(const Member& m, uint16_t vlan) {
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

void Switch::Capture(uint16_t port, rte_mbuf* const* pkts, uint16_t n) {
  CaptureTap* tap = captures_[port].load(std::memory_order_acquire);
  if (tap != nullptr && n != 0) [[unlikely]]
    CopyToTap(*tap, pkts, n);
}

inline void Switch::FlushPort(Worker& w, uint16_t port) {
  PacketBatch& tx = port_state_[port].tx;
  if (tx.count == 0) return;
  Capture(port, tx.pkts, tx.count);
  ports_[port]->Send(tx);
  w.counters.tx_dropped += tx.count;
  FreeBatch(tx);
}

inline void Switch::FlushUplink(Uplink& up) {
  if (up.pending.count == 0) return;
  if (up.restaging) [[unlikely]] Restage(up, up.pending);
  up.scheduler->Enqueue(up.pending);
}

inline void Switch::CheckUplinkChange(Worker& w, uint16_t uplink, uint64_t now) {
  Uplink& up = *uplinks_[uplink];
  if (up.restaging) [[unlikely]] FinishRestaging(up);
  UplinkChange* change = up.change.load(std::memory_order_acquire);
  if (change != nullptr) [[unlikely]] ApplyUplinkChange(w, uplink, *change, now);
}

int Switch::LearnAndLookup(Bridge& bridge, const uint8_t* frame, uint16_t vlan, int in_member,
                           uint64_t now) {
  const MemberSet& members = bridge.members.get();
  bridge.macs->Learn(frame + 6, vlan, MacValue(in_member, members[in_member].incarnation), now);
  const int found = bridge.macs->Lookup(frame, vlan, now);
  // Learned on an earlier holder of that port number (since removed): as good as unknown.
  return found < 0 ? -1 : MemberOfMacValue(members, found);
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
    const MemberSet& members = bridge.members.get();
    for (uint16_t i = 0; i < members.size(); ++i) {
      if (Carries(members[i], v.vlan)) add_output(i);
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

void Switch::Forward(Worker& w, rte_mbuf* m, const PortState& in, Bridge& bridge,
                     const FlowActions* actions, const Stage& st, uint64_t now) {
  Verdict v;
  Decide(m, in, bridge, actions, st, now, v);
  w.counters.flooded += v.floods;
  Deliver(w, m, bridge, v, st.parsed, now);
}

}  // namespace qosvisor::vswitch
