// Where VMs of the fleet should run: which host a VM should go to (`place`), and the moves that
// bring every host within its budget and every anti-affinity group apart (`rebalance`).
//
// Pure functions of the registry's records: no etcd, no clock, no KVM, so they are tested on
// made-up fleets. The VM that leaves a host is the cheapest to move by the configured rule (by
// default the one that changed the fewest pages, as a live migration sends those again); its
// destination is the host with room whose VMs change their pages at the lowest rate, so VMs
// that write much memory end up spread apart.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "control/fleet.h"

namespace qosvisor::control {

struct PlannedMove {
  std::string vm;
  std::string from;
  std::string to;
  std::string reason;  // why it leaves, why it goes there
  uint64_t changed_pages = 0;
  double pages_per_second = 0;
};

struct RebalancePlan {
  std::vector<PlannedMove> moves;     // in the order they are to run; none: nothing to do
  std::vector<std::string> warnings;  // e.g. group members found on no host
};

struct Placement {
  std::string vm;
  std::string from;  // where it runs now
  std::string to;
  std::string reason;
  std::vector<std::string> warnings;
};

struct PlacementRules {
  std::vector<config::AntiAffinityGroup> anti_affinity;  // joined with the groups VMs publish
  config::LeaveRule choose = config::LeaveRule::kFewestChangedPages;
};

// The moves that leave no host over its budget (vCPUs, memory, uplink) and no two members of an
// anti-affinity group on one host; an error naming the host and why when some cannot be found.
// Only live hosts that take migrations receive VMs.
Result<RebalancePlan> PlanRebalance(const std::vector<FleetHost>& hosts,
                                    const PlacementRules& rules);

// The host `vm` (running somewhere in the fleet) should go to; an error when it runs nowhere or
// no other host has room for it.
Result<Placement> PlaceVm(const std::vector<FleetHost>& hosts, const PlacementRules& rules,
                          const std::string& vm);

nlohmann::json MoveJson(const PlannedMove& move);
nlohmann::json PlanJson(const RebalancePlan& plan);
nlohmann::json PlacementJson(const Placement& placement);

}  // namespace qosvisor::control
