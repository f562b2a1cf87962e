// Comparing two configurations section by section, through config::Format, and the switch
// specifications they build, uplink by uplink.
#include "control/reload.h"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>

#include "config/loader.h"
#include "control/switch_builder.h"

namespace qosvisor::control {
namespace {

using C = config::Config;

// The normalized YAML of the part of `c` that `keep` copies into an otherwise empty Config.
std::string Text(const C& c, const std::function<void(C&)>& keep) {
  C part;
  part.base_dir = c.base_dir;
  part.dataplane = config::Dataplane{};
  part.control = config::Control{};
  keep(part);
  return config::Format(part);
}

std::string FlowsOf(const C& c, const std::string& bridge) {
  std::string out;
  for (const config::Flow& f : c.flows) {
    if (f.bridge == bridge) out += fmt::format("{}|{}\n", f.table, f.rule);
  }
  return out;
}

// Whether both lists hold the same set of keys (names, ports).
template <typename T, typename Key>
bool SameKeys(const std::vector<T>& a, const std::vector<T>& b, Key key) {
  std::set<std::string> x, y;
  for (const T& i : a) x.insert(key(i));
  for (const T& i : b) y.insert(key(i));
  return x == y;
}

template <typename T>
const T* Named(const std::vector<T>& items, const std::string& name) {
  auto it = std::find_if(items.begin(), items.end(), [&](const T& i) { return i.name == name; });
  return it == items.end() ? nullptr : &*it;
}

// A class with its message rule, as one text.
std::string ClassText(const C& c, const config::TrafficClass& tc) {
  return Text(c, [&](C& p) {
    p.classes = {tc};
    for (const config::MessageRule& r : c.messages) {
      if (r.class_name == tc.name) p.messages.push_back(r);
    }
  });
}

std::string UplinkText(const C& c, const config::Uplink& u) {
  return Text(c, [&](C& p) {
    p.classes = c.classes;  // tenants name them
    p.uplinks = {u};
  });
}

class Planner {
 public:
  Planner(const C& a, const C& b, ReloadPlan& plan) : a_(a), b_(b), plan_(plan) {}

  void Restart(const std::string& what) {
    plan_.changes.push_back(what + " (needs a restart)");
    plan_.needs_restart.push_back(what);
  }
  void Live(const std::string& what) { plan_.changes.push_back(what); }

  void Settings() {
    if (Text(a_, [&](C& p) { p.dataplane = a_.dataplane; }) !=
        Text(b_, [&](C& p) { p.dataplane = b_.dataplane; })) {
      Restart("dataplane settings changed");
    }
    if (Text(a_, [&](C& p) { p.control = a_.control; }) !=
        Text(b_, [&](C& p) { p.control = b_.control; })) {
      Restart("control settings changed");
    }
    // The fleet agent's lease and record, and the migration listener's socket, are made once.
    if (Text(a_, [&](C& p) { p.fleet = a_.fleet; }) != Text(b_, [&](C& p) { p.fleet = b_.fleet; })) {
      Restart("fleet settings changed");
    }
    if (Text(a_, [&](C& p) { p.migration = a_.migration; }) !=
        Text(b_, [&](C& p) { p.migration = b_.migration; })) {
      Restart("migration settings changed");
    }
    // The page tracker reads its settings at every harvest.
    if (!(a_.guest_memory == b_.guest_memory)) {
      Live("guest_memory: page tracking or huge-page policy changed");
    }
  }

  void Classes() {
    for (const config::TrafficClass& tc : b_.classes) {
      const config::TrafficClass* old = Named(a_.classes, tc.name);
      if (old == nullptr) {
        Live(fmt::format("class {}: added", tc.name));
      } else if (ClassText(a_, *old) != ClassText(b_, tc)) {
        Live(fmt::format("class {}: changed (policy, weight, rate, deadline or message rule)",
                         tc.name));
      }
    }
    for (const config::TrafficClass& tc : a_.classes) {
      if (Named(b_.classes, tc.name) == nullptr) {
        Live(fmt::format("class {}: removed (its queued packets are dropped as reconfigured)",
                         tc.name));
      }
    }
  }

  void Uplinks() {
    if (!SameKeys(a_.uplinks, b_.uplinks, [](const config::Uplink& u) { return u.port; })) {
      Restart("uplinks added or removed");
      return;
    }
    for (const config::Uplink& u : b_.uplinks) {
      auto old = std::find_if(a_.uplinks.begin(), a_.uplinks.end(),
                              [&](const config::Uplink& o) { return o.port == u.port; });
      if (UplinkText(a_, *old) != UplinkText(b_, u)) {
        Live(fmt::format("uplink {}: rates, pacing, buffers or tenant tree changed", u.port));
      }
    }
  }

  void Ports() {
    for (const config::Port& p : b_.ports) {
      if (p.implicit) continue;
      const config::Port* old = Named(a_.ports, p.name);
      if (old != nullptr &&
          Text(a_, [&](C& c) { c.ports = {*old}; }) != Text(b_, [&](C& c) { c.ports = {p}; })) {
        Restart(fmt::format("port {}: its driver or arguments changed", p.name));
      } else if (old == nullptr && BridgeOf(b_, p.name).empty()) {
        Restart(fmt::format("port {}: added in no bridge", p.name));
      }
    }
    for (const config::Port& p : a_.ports) {
      if (!p.implicit && Named(b_.ports, p.name) == nullptr && BridgeOf(a_, p.name).empty()) {
        Restart(fmt::format("port {}: removed from no bridge", p.name));
      }
    }
  }

  void Bridges() {
    if (!SameKeys(a_.bridges, b_.bridges, [](const config::Bridge& b) { return b.name; })) {
      Restart("bridges added or removed");
      return;
    }
    for (const config::Bridge& br : b_.bridges) {
      const config::Bridge& old = *Named(a_.bridges, br.name);
      if (old.mac_aging_ns != br.mac_aging_ns || old.mac_table_size != br.mac_table_size) {
        Restart(fmt::format("bridge {}: MAC table settings changed", br.name));
      }
      Members(old, br);
    }
  }

  void Flows() {
    for (const config::Bridge& br : b_.bridges) {
      if (FlowsOf(a_, br.name) != FlowsOf(b_, br.name)) {
        plan_.bridges_with_new_flows.push_back(br.name);
        Live(fmt::format("bridge {}: flow rules replaced", br.name));
      }
    }
  }

  void Vms() {
    for (const config::Vm& vm : b_.vms) {
      const config::Vm* old = Named(a_.vms, vm.name);
      if (old == nullptr) {
        plan_.vms_added.push_back(vm.name);
        Live(fmt::format("vm {}: added", vm.name));
      } else if (Text(a_, [&](C& p) {
                   p.templates = a_.templates;
                   p.vms = {*old};
                 }) != Text(b_, [&](C& p) {
                   p.templates = b_.templates;
                   p.vms = {vm};
                 })) {
        Restart(fmt::format("vm {}: changed (remove it in one reload, add it back in the next)",
                            vm.name));
      }
    }
    for (const config::Vm& vm : a_.vms) {
      if (Named(b_.vms, vm.name) == nullptr) {
        plan_.vms_removed.push_back(vm.name);
        Live(fmt::format("vm {}: removed", vm.name));
      }
    }
  }

  void Rest() {
    if (Text(a_, [&](C& p) { p.templates = a_.templates; }) !=
        Text(b_, [&](C& p) { p.templates = b_.templates; })) {
      Live("templates changed (used by the next vm create)");
    }
    if (Text(a_, [&](C& p) {
          p.blueprints = a_.blueprints;
          p.hosts = a_.hosts;
        }) != Text(b_, [&](C& p) {
          p.blueprints = b_.blueprints;
          p.hosts = b_.hosts;
        })) {
      Live("blueprints or hosts changed (used by the next deploy)");
    }
    if (Text(a_, [&](C& p) { p.quotas = a_.quotas; }) !=
        Text(b_, [&](C& p) { p.quotas = b_.quotas; })) {
      Live("quotas changed (checked at the next vm create or deploy; VMs already made stay)");
    }
  }

  // Uplinks whose scheduler or class rules the two specifications build differently.
  Status RebuiltUplinks() {
    auto before = BuildSwitchSpec(a_);
    auto after = BuildSwitchSpec(b_);
    if (!after.ok()) return after.status();
    if (!before.ok() || plan_.needs_restart.size() != 0) return Status::Ok();
    for (size_t i = 0; i < b_.uplinks.size(); ++i) {
      const std::string& port = b_.uplinks[i].port;
      for (size_t j = 0; j < a_.uplinks.size(); ++j) {
        if (a_.uplinks[j].port != port) continue;
        vswitch::UplinkSpec next = after->uplinks[i], now = before->uplinks[j];
        next.port = now.port = 0;
        if (next != now || ClassesOf(*after, next) != ClassesOf(*before, now)) {
          plan_.uplinks_rebuilt.push_back(port);
        }
      }
    }
    return Status::Ok();
  }

 private:
  static std::string BridgeOf(const C& c, const std::string& port) {
    for (const config::Bridge& br : c.bridges) {
      for (const config::BridgePort& bp : br.ports) {
        if (bp.port == port) return br.name;
      }
    }
    return "";
  }

  static std::vector<vswitch::ClassSpec> ClassesOf(const vswitch::SwitchSpec& spec,
                                                   const vswitch::UplinkSpec& up) {
    std::vector<vswitch::ClassSpec> out;
    for (const vswitch::ClassSpec& cs : spec.classes) {
      if (std::find(up.class_queues.begin(), up.class_queues.end(), cs.queue) !=
          up.class_queues.end()) {
        out.push_back(cs);
      }
    }
    return out;
  }

  static const config::BridgePort* MemberNamed(const config::Bridge& br, const std::string& port) {
    for (const config::BridgePort& bp : br.ports) {
      if (bp.port == port && !bp.implicit) return &bp;
    }
    return nullptr;
  }

  void Members(const config::Bridge& old, const config::Bridge& br) {
    for (const config::BridgePort& bp : br.ports) {
      if (bp.implicit) continue;
      const config::BridgePort* was = MemberNamed(old, bp.port);
      if (was == nullptr && Named(a_.ports, bp.port) != nullptr) {
        Restart(fmt::format("port {}: moved into bridge {}", bp.port, br.name));
      } else if (was == nullptr) {
        plan_.ports_added.push_back({br.name, bp.port});
        Live(fmt::format("bridge {}: port {} added", br.name, bp.port));
      } else if (was->vlan != bp.vlan) {
        plan_.vlans_changed.push_back({br.name, bp.port});
        Live(fmt::format("bridge {}: port {}: VLAN settings changed", br.name, bp.port));
      }
    }
    for (const config::BridgePort& bp : old.ports) {
      if (bp.implicit || MemberNamed(br, bp.port) != nullptr) continue;
      if (Named(b_.ports, bp.port) != nullptr) {
        Restart(fmt::format("port {}: moved out of bridge {}", bp.port, br.name));
      } else {
        plan_.ports_removed.push_back({br.name, bp.port});
        Live(fmt::format("bridge {}: port {} removed", br.name, bp.port));
      }
    }
  }

  const C& a_;
  const C& b_;
  ReloadPlan& plan_;
};

}  // namespace

Result<ReloadPlan> PlanReload(const C& a, const C& b) {
  ReloadPlan plan;
  Planner p(a, b, plan);
  p.Settings();
  p.Ports();
  p.Bridges();
  p.Classes();
  p.Uplinks();
  p.Flows();
  p.Vms();
  p.Rest();
  if (Status s = p.RebuiltUplinks(); !s.ok()) return s;
  return plan;
}

}  // namespace qosvisor::control
