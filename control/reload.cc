// Comparing two configurations section by section, through config::Format.
#include "control/reload.h"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <set>

#include "config/loader.h"

namespace qosvisor::control {
namespace {

// The normalized YAML of the part of `c` that `keep` copies into an otherwise empty Config.
std::string Text(const config::Config& c, const std::function<void(config::Config&)>& keep) {
  config::Config part;
  part.base_dir = c.base_dir;
  part.dataplane = config::Dataplane{};
  part.control = config::Control{};
  keep(part);
  return config::Format(part);
}

std::string FlowsOf(const config::Config& c, const std::string& bridge) {
  std::string out;
  for (const config::Flow& f : c.flows) {
    if (f.bridge == bridge) out += fmt::format("{}|{}\n", f.table, f.rule);
  }
  return out;
}

template <typename T>
std::set<std::string> Names(const std::vector<T>& items) {
  std::set<std::string> out;
  for (const T& i : items) out.insert(i.name);
  return out;
}

}  // namespace

ReloadPlan PlanReload(const config::Config& a, const config::Config& b) {
  ReloadPlan plan;
  auto restart = [&](const std::string& what) {
    plan.changes.push_back(what + " (needs a restart)");
    plan.needs_restart.push_back(what);
  };
  using C = config::Config;
  if (Text(a, [&](C& p) { p.dataplane = a.dataplane; }) !=
      Text(b, [&](C& p) { p.dataplane = b.dataplane; })) {
    restart("dataplane settings changed");
  }
  if (Text(a, [&](C& p) { p.control = a.control; }) !=
      Text(b, [&](C& p) { p.control = b.control; })) {
    restart("control settings changed");
  }
  // Explicit ports only: Format leaves VMs' implicit ports out, they follow their VMs.
  if (Text(a, [&](C& p) { p.ports = a.ports; }) != Text(b, [&](C& p) { p.ports = b.ports; })) {
    restart("ports added, removed or changed");
  }
  if (Text(a, [&](C& p) { p.bridges = a.bridges; }) !=
      Text(b, [&](C& p) { p.bridges = b.bridges; })) {
    restart("bridges or their VLAN settings changed");
  }
  if (Text(a, [&](C& p) {
        p.classes = a.classes;
        p.messages = a.messages;
      }) != Text(b, [&](C& p) {
        p.classes = b.classes;
        p.messages = b.messages;
      })) {
    restart("classes or message rules changed");
  }
  if (Text(a, [&](C& p) { p.uplinks = a.uplinks; }) !=
      Text(b, [&](C& p) { p.uplinks = b.uplinks; })) {
    restart("uplinks (rates, pacing, buffers, tenant trees) changed");
  }
  for (const config::Bridge& br : b.bridges) {
    if (FlowsOf(a, br.name) != FlowsOf(b, br.name)) {
      plan.bridges_with_new_flows.push_back(br.name);
      plan.changes.push_back(fmt::format("bridge {}: flow rules replaced", br.name));
    }
  }
  if (Text(a, [&](C& p) { p.templates = a.templates; }) !=
      Text(b, [&](C& p) { p.templates = b.templates; })) {
    plan.changes.push_back("templates changed (used by the next vm create)");
  }
  const auto old_vms = Names(a.vms), new_vms = Names(b.vms);
  for (const config::Vm& vm : b.vms) {
    if (!old_vms.contains(vm.name)) {
      plan.vms_added.push_back(vm.name);
      plan.changes.push_back(fmt::format("vm {}: added", vm.name));
      continue;
    }
    const auto old = std::find_if(a.vms.begin(), a.vms.end(),
                                  [&](const config::Vm& v) { return v.name == vm.name; });
    if (Text(a, [&](C& p) {
          p.templates = a.templates;
          p.vms = {*old};
        }) != Text(b, [&](C& p) {
          p.templates = b.templates;
          p.vms = {vm};
        })) {
      restart(fmt::format("vm {}: changed (remove it in one reload, add it back in the next)",
                          vm.name));
    }
  }
  for (const config::Vm& vm : a.vms) {
    if (!new_vms.contains(vm.name)) {
      plan.vms_removed.push_back(vm.name);
      plan.changes.push_back(fmt::format("vm {}: removed", vm.name));
    }
  }
  if (Text(a, [&](C& p) {
        p.blueprints = a.blueprints;
        p.hosts = a.hosts;
      }) != Text(b, [&](C& p) {
        p.blueprints = b.blueprints;
        p.hosts = b.hosts;
      })) {
    plan.changes.push_back("blueprints or hosts changed (kept for later use)");
  }
  return plan;
}

}  // namespace qosvisor::control
