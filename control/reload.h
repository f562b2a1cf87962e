// Reload: the configuration file read again and compared with the running one, section by
// section on their normalized form (so moving a key or a comment is no change). What can change
// live is applied; what cannot yet is named, and then nothing is applied.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"

namespace qosvisor::control {

// A port joining or leaving a bridge, or changing its VLAN settings there.
struct ReloadMember {
  std::string bridge;
  std::string port;
};

struct ReloadPlan {
  std::vector<std::string> changes;        // every difference, one line each
  std::vector<std::string> needs_restart;  // the differences this version cannot apply live
  std::vector<std::string> bridges_with_new_flows;
  std::vector<std::string> uplinks_rebuilt;  // their ports: new classes, tree, rates or buffers
  std::vector<ReloadMember> ports_added, ports_removed, vlans_changed;
  std::vector<std::string> vms_added, vms_removed;
  bool empty() const { return changes.empty(); }
};

// Fails only when `next` validated but cannot be turned into the switch's specification.
Result<ReloadPlan> PlanReload(const config::Config& running, const config::Config& next);

}  // namespace qosvisor::control
