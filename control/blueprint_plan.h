// A blueprint turned into what one deploy does: the VMs of every tier, named <app>-<tier>-<i>,
// in waves that respect depends_on. Pure planning, checked before anything starts.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"

namespace qosvisor::control {

struct PlannedVm {
  std::string name;  // <app>-<tier>-<i>, i from 1
  std::string template_name;
  std::map<std::string, std::string> overrides;  // as `vm create --set`: the tier's class
};

struct PlannedTier {
  std::string name;
  std::vector<PlannedVm> vms;
  // The template's ready line: the tier is up once every VM printed it (none: once they run).
  std::optional<std::string> ready;
  uint64_t ready_timeout_ns = config::kDefaultReadyTimeoutNs;
};

struct DeployPlan {
  std::string app;
  std::string blueprint;
  // Every tier of a wave depends only on tiers of earlier waves; tiers keep the blueprint's
  // order inside a wave. A wave starts once the earlier ones are up.
  std::vector<std::vector<PlannedTier>> waves;

  size_t VmCount() const;
  // Every planned VM, in the order the deploy creates them.
  std::vector<const PlannedVm*> Vms() const;
};

// Names a VM's name may use: 1 to 32 letters, digits, '-' or '_' (it names files and ports).
bool IsVmName(const std::string& name);

// The plan for deploying `blueprint` of `config` as app `app`; errors name the blueprint, the
// tier or the name at fault.
Result<DeployPlan> PlanDeploy(const config::Config& config, const std::string& blueprint,
                              const std::string& app);

}  // namespace qosvisor::control
