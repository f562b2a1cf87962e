// Reload on `qosctl reload` and SIGHUP: the file read again, validated, compared, and what
// changed applied live (flow rules, VMs added and removed, templates); a change this version
// cannot apply live is named and then nothing is applied, so the running box never ends up half
// way between two configurations.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "config/loader.h"
#include "control/appliance.h"
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
  const ReloadPlan plan = PlanReload(config_, *loaded.config);
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
  for (const std::string& bridge : plan.bridges_with_new_flows) {
    for (const vswitch::BridgeSpec& b : spec->bridges) {
      if (b.name != bridge) continue;
      std::lock_guard lock(switch_control_mu_);
      if (Status s = switch_->ReplaceFlows(bridge, b.flows); !s.ok()) return s;
      spdlog::info("bridge {}: {} flow rules from the file", bridge, b.flows.size());
    }
  }
  for (const std::string& vm : plan.vms_removed) {
    if (Status s = vms_->RemoveConfigured(vm); !s.ok()) return s;
  }
  config_ = next;
  vms_->SetConfig(next);
  for (const std::string& vm : plan.vms_added) {
    if (Status s = vms_->AddConfigured(next, vm); !s.ok()) return s;
  }
  return Status::Ok();
}

}  // namespace qosvisor::control
