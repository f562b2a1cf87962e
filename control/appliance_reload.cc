// Reload on `qosctl reload` and SIGHUP: the file read again, validated, compared, and what
// changed applied live (bridge members and VLANs, flow rules, uplinks' classes and scheduler
// trees, VMs added and removed, templates, blueprints, quotas); a change this version cannot
// apply live is named and then nothing is applied, so the running box never ends up half way
// between two configurations.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "config/loader.h"
#include "control/appliance.h"
#include "control/page_tracker.h"
#include "control/reload.h"
#include "control/switch_builder.h"
#include "control/vm_manager.h"

namespace qosvisor::control {

using nlohmann::json;

Result<json> Appliance::Reload(bool dry_run) {
  config::LoadResult loaded = config::LoadFromFile(config_path_);
  if (!loaded.ok()) {
    spdlog::warn("reload of {} refused, the running configuration stays:\n{}", config_path_,
                 loaded.ErrorText());
    return Status::Error(fmt::format("{}: {} error(s); the running configuration stays\n{}",
                                     config_path_, loaded.errors.size(), loaded.ErrorText()));
  }
  auto planned = PlanReload(config_, *loaded.config);
  if (!planned.ok()) {
    return Status::Error(fmt::format("{}: {}; the running configuration stays", config_path_,
                                     planned.message()));
  }
  const ReloadPlan& plan = *planned;
  json out = {{"config", config_path_},
              {"changes", plan.changes},
              {"needs_restart", plan.needs_restart},
              {"dry_run", dry_run}};
  if (dry_run) return out;
  if (!plan.needs_restart.empty()) {
    std::string list;
    for (const auto& r : plan.needs_restart) list += "\n  " + r;
    spdlog::warn("reload of {}: nothing applied; these changes need a restart:{}", config_path_,
                 list);
    return Status::Error(
        fmt::format("nothing was applied: these changes need a restart (or "
                    "undo them in the file):{}",
                    list));
  }
  if (Status s = ApplyReload(*loaded.config, plan); !s.ok()) {
    spdlog::error("reload of {}: {}", config_path_, s.message());
    return s;
  }
  spdlog::info("reload of {}: {} change(s) applied", config_path_, plan.changes.size());
  out["applied"] = true;
  return out;
}

Status Appliance::ApplyReload(const config::Config& next, const ReloadPlan& plan) {
  auto spec = BuildSwitchSpec(next);
  if (!spec.ok()) return spec.status();
  // Ports join before the rules that name them, and leave after the rules that named them.
  for (const ReloadMember& m : plan.ports_added) {
    if (Status s = AddConfiguredPort(next, m.port); !s.ok()) return s;
  }
  for (const ReloadMember& m : plan.vlans_changed) {
    if (Status s = ApplyVlan(next, m); !s.ok()) return s;
  }
  for (const std::string& bridge : plan.bridges_with_new_flows) {
    for (const vswitch::BridgeSpec& b : spec->bridges) {
      if (b.name != bridge) continue;
      std::lock_guard lock(switch_control_mu_);
      if (Status s = switch_->ReplaceFlows(bridge, b.flows); !s.ok()) return s;
      spdlog::info("bridge {}: {} flow rules from the file", bridge, b.flows.size());
    }
  }
  for (const ReloadMember& m : plan.ports_removed) {
    if (Status s = RemoveConfiguredPort(m.port); !s.ok()) return s;
  }
  for (const std::string& port : plan.uplinks_rebuilt) {
    if (Status s = RebuildUplink(next, *spec, port); !s.ok()) return s;
  }
  for (const std::string& vm : plan.vms_removed) {
    if (Status s = vms_->RemoveConfigured(vm); !s.ok()) return s;
  }
  config_ = next;
  vms_->SetConfig(next);
  if (page_tracker_) page_tracker_->Update(next.guest_memory);
  for (const std::string& vm : plan.vms_added) {
    if (Status s = vms_->AddConfigured(next, vm); !s.ok()) return s;
  }
  return Status::Ok();
}

Status Appliance::AddConfiguredPort(const config::Config& next, const std::string& name) {
  auto p = std::find_if(next.ports.begin(), next.ports.end(),
                        [&](const config::Port& c) { return c.name == name; });
  if (p == next.ports.end()) return Status::Error(fmt::format("no port named '{}'", name));
  auto port = dataplane::CreatePort(PortOptionsFrom(*p), *pool_);
  if (!port.ok()) return Status::Error(fmt::format("port {}: {}", name, port.message()));
  auto join = AttachmentIn(next, name);
  if (!join.ok()) return join.status();
  join->port = port->get();
  std::lock_guard lock(switch_control_mu_);
  auto number = switch_->AddPort(*join);
  if (!number.ok()) return number.status();
  spdlog::info("bridge {}: port {} joined as OpenFlow port {}", join->bridge, name, *number);
  ports_.push_back(std::move(port).value());
  return Status::Ok();
}

Status Appliance::RemoveConfiguredPort(const std::string& name) {
  std::lock_guard lock(switch_control_mu_);
  if (Status s = switch_->RemovePort(name); !s.ok()) return s;
  // The switch no longer reaches it: the port may go, returning the mbufs it holds.
  std::erase_if(ports_, [&](const auto& p) { return p->name() == name; });
  spdlog::info("port {}: removed", name);
  return Status::Ok();
}

Status Appliance::ApplyVlan(const config::Config& next, const ReloadMember& m) {
  auto join = AttachmentIn(next, m.port);
  if (!join.ok()) return join.status();
  std::lock_guard lock(switch_control_mu_);
  if (Status s = switch_->SetPortVlan(m.port, join->vlan_mode, join->access_tag, join->trunk_tags);
      !s.ok()) {
    return s;
  }
  spdlog::info("bridge {}: port {}: VLAN settings applied", m.bridge, m.port);
  return Status::Ok();
}

Status Appliance::RebuildUplink(const config::Config& next, const vswitch::SwitchSpec& spec,
                                const std::string& port) {
  auto u = std::find(uplink_ports_.begin(), uplink_ports_.end(), port);
  auto c = std::find_if(next.uplinks.begin(), next.uplinks.end(),
                        [&](const config::Uplink& x) { return x.port == port; });
  if (u == uplink_ports_.end() || c == next.uplinks.end()) {
    return Status::Error(fmt::format("no uplink on port '{}'", port));
  }
  const vswitch::UplinkSpec& us = spec.uplinks[c - next.uplinks.begin()];
  // No statistics request meanwhile: the owner swaps its snapshot storage for the new classes,
  // and StatsJson names them from what is set below.
  std::lock_guard stats(stats_mu_);
  vswitch::Switch::UplinkReload reload;
  {
    std::lock_guard lock(switch_control_mu_);
    auto r = switch_->ReconfigureUplink(port, us, spec.classes, lcore_running_);
    if (!r.ok()) return r.status();
    reload = *r;
  }
  const size_t index = u - uplink_ports_.begin();
  spec_.uplinks[index].scheduler = us.scheduler;
  spec_.uplinks[index].class_queues = us.class_queues;
  uplink_class_names_[index].clear();
  for (const auto& cls : us.scheduler.classes) uplink_class_names_[index].push_back(cls.name);
  spdlog::info("uplink {}: scheduler rebuilt, {} classes; {} queued packets {}", port,
               us.scheduler.classes.size(), reload.queued_packets,
               reload.in_place ? "kept in place" : "moved");
  return Status::Ok();
}

}  // namespace qosvisor::control
