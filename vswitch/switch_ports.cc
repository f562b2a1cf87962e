// Ports that join and leave a running switch (VMs restored, forked or created after start): the
// control thread publishes new member sets and receive lists the way flow tables are published,
// and waits for the workers' quiescent states before a removed port may go. Also the capture tap
// a port's worker copies its packets into while `qosctl capture` runs.
#include <fmt/format.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "common/packet_meta.h"
#include "common/tsc.h"
#include "vswitch/switch.h"
#include "vswitch/switch_inl.h"

namespace qosvisor::vswitch {

void Switch::PublishRx(Worker& w, std::shared_ptr<const std::vector<uint16_t>> rx) {
  auto old = std::move(w.rx_owner);
  w.rx_owner = std::move(rx);
  w.rx_ports.store(w.rx_owner.get(), std::memory_order_release);
  if (old) Retire(std::move(old));
}

Switch::Member Switch::MakeMember(uint16_t port, VlanMode mode, uint16_t access_tag,
                                  const std::vector<uint16_t>& trunk_tags, uint8_t incarnation) {
  Member m{port, mode, access_tag, incarnation, {}};
  if (trunk_tags.empty()) std::fill(std::begin(m.trunk_bits), std::end(m.trunk_bits), ~0ull);
  for (uint16_t tag : trunk_tags) m.trunk_bits[(tag & 0xfff) >> 6] |= 1ull << (tag & 63);
  return m;
}

Status Switch::PublishMembers(Bridge& bridge, std::shared_ptr<const MemberSet> members) {
  auto table = FlowTable::Build(bridge.rules, members->names);
  if (!table.ok()) return table.status();
  Retire(bridge.members.Publish(std::move(members)));
  Retire(bridge.owner);
  bridge.owner = *table;
  bridge.table.store(bridge.owner.get(), std::memory_order_release);
  return Status::Ok();
}

Result<uint32_t> Switch::AddPort(const PortJoin& join) {
  ReclaimRetiredTables();
  if (join.port == nullptr) return Status::Error("add port: no port given");
  const std::string& name = join.port->name();
  for (const auto* p : ports_) {
    if (p != nullptr && p->name() == name) {
      return Status::Error(fmt::format("add port '{}': the switch has a port of that name", name));
    }
  }
  int b = -1;
  for (size_t i = 0; i < bridges_.size(); ++i) {
    if (bridges_[i]->name == join.bridge) b = static_cast<int>(i);
  }
  if (b < 0) {
    return Status::Error(fmt::format("add port '{}': no bridge named '{}'", name, join.bridge));
  }
  auto slot = std::find(ports_.begin(), ports_.end(), nullptr);
  if (slot == ports_.end()) {
    return Status::Error(
        fmt::format("add port '{}': the switch holds {} ports, its most "
                    "(dataplane.spare_ports sets the room for added ports)",
                    name, ports_.size()));
  }
  Bridge& bridge = *bridges_[b];
  auto members = std::make_shared<MemberSet>(bridge.members.get());
  // The first removed slot is reused (its MAC entries are told apart by the incarnation).
  size_t m = 0;
  while (m < members->size() && (*members)[m].access_tag != kRemovedTag) ++m;
  if (m == kMaxBridgePorts) {
    return Status::Error(fmt::format("add port '{}': bridge '{}' holds {} ports, its most", name,
                                     join.bridge, kMaxBridgePorts));
  }
  const auto p = static_cast<uint16_t>(slot - ports_.begin());
  const uint8_t incarnation = m < members->size() ? (*members)[m].incarnation + 1 : 0;
  Member member = MakeMember(p, join.vlan_mode, join.access_tag, join.trunk_tags, incarnation);
  if (m < members->size()) {
    members->list[m] = member;
    members->names[m] = name;
  } else {
    members->list.push_back(member);
    members->names.push_back(name);
  }
  // The port's state is written before anything that leads the lcore to it is published.
  PortState& ps = port_state_[p];
  ps.bridge = b;
  ps.member = static_cast<int>(m);
  ps.uplink = -1;
  ps.default_queue = join.default_queue;
  *slot = join.port;
  if (Status s = PublishMembers(bridge, std::move(members)); !s) {
    ps = PortState{};
    *slot = nullptr;
    return Status::Error(fmt::format("add port '{}': {}", name, s.message()));
  }
  Worker& owner = *workers_[bridge_owner_[b]];
  auto rx = std::make_shared<std::vector<uint16_t>>(*owner.rx_owner);
  rx->push_back(p);
  PublishRx(owner, std::move(rx));
  return static_cast<uint32_t>(m + 1);
}

Status Switch::RemovePort(const std::string& name) {
  auto slot = std::find_if(ports_.begin(), ports_.end(), [&](const dataplane::Port* p) {
    return p != nullptr && p->name() == name;
  });
  if (slot == ports_.end()) return Status::Error(fmt::format("no port named '{}'", name));
  const auto p = static_cast<uint16_t>(slot - ports_.begin());
  PortState& ps = port_state_[p];
  if (ps.uplink >= 0) {
    return Status::Error(
        fmt::format("port '{}' is an uplink: it stays while the switch runs", name));
  }
  if (ps.bridge >= 0) {
    Bridge& bridge = *bridges_[ps.bridge];
    auto members = std::make_shared<MemberSet>(bridge.members.get());
    Member& gone = members->list[ps.member];
    gone.mode = VlanMode::kAccess;
    gone.access_tag = kRemovedTag;
    members->names[ps.member].clear();
    if (Status s = PublishMembers(bridge, std::move(members)); !s) {
      return Status::Error(
          fmt::format("remove port '{}': bridge '{}': {} (change its flow rules "
                      "first)",
                      name, bridge.name, s.message()));
    }
  }
  for (auto& w : workers_) {
    const auto& current = *w->rx_owner;
    if (std::find(current.begin(), current.end(), p) == current.end()) continue;
    auto rx = std::make_shared<std::vector<uint16_t>>(current);
    std::erase(*rx, p);
    PublishRx(*w, std::move(rx));
  }
  // After this no poll that could still reach the port is under way.
  Quiesce();
  FreeBatch(ps.tx);
  ps = PortState{};
  *slot = nullptr;
  ReclaimRetiredTables();
  return Status::Ok();
}

Status Switch::SetPortVlan(const std::string& name, VlanMode mode, uint16_t access_tag,
                           const std::vector<uint16_t>& trunk_tags) {
  ReclaimRetiredTables();
  auto slot = std::find_if(ports_.begin(), ports_.end(), [&](const dataplane::Port* p) {
    return p != nullptr && p->name() == name;
  });
  if (slot == ports_.end()) return Status::Error(fmt::format("no port named '{}'", name));
  const PortState& ps = port_state_[slot - ports_.begin()];
  if (ps.bridge < 0) return Status::Error(fmt::format("port '{}' is in no bridge", name));
  Bridge& bridge = *bridges_[ps.bridge];
  auto members = std::make_shared<MemberSet>(bridge.members.get());
  Member& m = members->list[ps.member];
  // The same incarnation: addresses learned on the port stay its own, on whatever VLAN they were.
  m = MakeMember(m.port, mode, access_tag, trunk_tags, m.incarnation);
  if (Status s = PublishMembers(bridge, std::move(members)); !s) {
    return Status::Error(fmt::format("port '{}': {}", name, s.message()));
  }
  return Status::Ok();
}

void Switch::CopyToTap(CaptureTap& tap_ref, rte_mbuf* const* pkts, uint16_t n) {
  CaptureTap* tap = &tap_ref;
  rte_mbuf* copies[kMaxBurst];
  uint16_t k = 0;
  const uint64_t now = ReadTsc();
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* c = rte_pktmbuf_copy(pkts[i], tap->pool, 0, UINT32_MAX);
    if (c == nullptr) continue;
    Meta(c)->arrival_tsc = now;  // when the switch saw it, for the capture's timestamps
    copies[k++] = c;
  }
  const unsigned queued =
      rte_ring_enqueue_burst(tap->ring, reinterpret_cast<void**>(copies), k, nullptr);
  if (queued < k) rte_pktmbuf_free_bulk(copies + queued, k - queued);
  if (queued < n) tap->dropped.fetch_add(n - queued, std::memory_order_relaxed);
}

Status Switch::StartCapture(const std::string& name, CaptureTap* tap) {
  for (size_t p = 0; p < ports_.size(); ++p) {
    if (ports_[p] == nullptr || ports_[p]->name() != name) continue;
    CaptureTap* none = nullptr;
    if (!captures_[p].compare_exchange_strong(none, tap, std::memory_order_acq_rel)) {
      return Status::Error(fmt::format("port '{}' is being captured already", name));
    }
    return Status::Ok();
  }
  return Status::Error(fmt::format("no port named '{}'", name));
}

void Switch::StopCapture(const std::string& name) {
  for (size_t p = 0; p < ports_.size(); ++p) {
    if (ports_[p] != nullptr && ports_[p]->name() == name) {
      captures_[p].store(nullptr, std::memory_order_release);
    }
  }
  Quiesce();  // no worker copies into the tap any more
}

}  // namespace qosvisor::vswitch
