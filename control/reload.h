// Reload: the configuration file read again and compared with the running one, section by
// section on their normalized form (so moving a key or a comment is no change). What can change
// live is applied; what cannot yet is named, and then nothing is applied.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace qosvisor::control {

struct ReloadPlan {
  std::vector<std::string> changes;        // every difference, one line each
  std::vector<std::string> needs_restart;  // the differences this version cannot apply live
  std::vector<std::string> bridges_with_new_flows;
  std::vector<std::string> vms_added, vms_removed;
  bool empty() const { return changes.empty(); }
};

ReloadPlan PlanReload(const config::Config& running, const config::Config& next);

}  // namespace qosvisor::control
