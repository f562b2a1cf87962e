// Blueprints across the fleet: what etcd holds for an app whose VMs run on several hosts, and the
// pure placement of its tiers' VMs on the hosts with room.
//
//   /qosvisor/apps/<app>                 the plan: blueprint, owner, coordinator, state, tiers in
//                                        creation order, each VM with its template and host
//   /qosvisor/assign/<host>/<app>/<vm>   what <host> must create and how far it got: requested,
//                                        creating, running, ready, failed (+ reason), destroying,
//                                        destroyed
//
// Both are written by the box that deploys (the coordinator) and, while a deploy or an undeploy
// runs, held by that box's lease (see fleet_deploy.h for what follows from it).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "control/fleet.h"

namespace qosvisor::control {

inline constexpr std::string_view kAppsPrefix = "/qosvisor/apps/";
inline constexpr std::string_view kAssignPrefix = "/qosvisor/assign/";

struct FleetAppVm {
  std::string name;  // <app>-<tier>-<i>
  std::string template_name;
  std::map<std::string, std::string> overrides;  // as `vm create --set`: the tier's class
  std::string host;                              // empty until placed
  uint32_t vcpus = 0;                            // what placement counts against budgets
  uint64_t memory_bytes = 0;
};

struct FleetAppTier {
  std::string name;
  uint32_t wave = 0;  // tiers of wave w start once every VM of waves before w is ready
  std::optional<std::string> ready;  // the template's ready line
  uint64_t ready_timeout_ns = 0;
  std::vector<FleetAppVm> vms;
};

struct FleetApp {
  std::string name;
  std::string blueprint;
  std::string coordinator;  // the host whose deploy or undeploy runs, or ran last
  std::string owner;
  uint32_t owner_uid = 0;
  std::string state = "deploying";  // deploying, running, rolling-back, undeploying
  std::vector<FleetAppTier> tiers;  // wave by wave, the blueprint's order inside a wave

  // Every VM in the order the deploy creates them.
  std::vector<const FleetAppVm*> Vms() const;
  uint32_t Waves() const;
};

// What one host must make for an app: one VM. The host writes its progress into the same key.
struct Assignment {
  std::string app;
  std::string blueprint;
  std::string tier;
  std::string vm;
  std::string host;
  std::string template_name;
  std::map<std::string, std::string> overrides;
  std::string owner;
  uint32_t owner_uid = 0;
  std::optional<std::string> ready;
  uint64_t ready_timeout_ns = 0;
  std::string state = "requested";
  std::string reason;      // failed: why
  int64_t created_ms = 0;  // unix ms when the host had made the VM
  int64_t ready_ms = 0;    // unix ms when the host saw it up
};

std::string AppKey(const std::string& app);
std::string AssignHostPrefix(const std::string& host);
std::string AssignKey(const std::string& host, const std::string& app, const std::string& vm);

nlohmann::json FleetAppJson(const FleetApp& app);
nlohmann::json AssignmentJson(const Assignment& a);
// Records another daemon wrote: anything but what the functions above write is refused, naming
// the field at fault.
Result<FleetApp> ParseFleetApp(const std::string& text);
Result<Assignment> ParseAssignment(const std::string& text);

// The assignment of `vm` of `tier` of `app`.
Assignment AssignmentOf(const FleetApp& app, const FleetAppTier& tier, const FleetAppVm& vm);

// Refuses VM names some host of the fleet already runs, naming the VM and the host.
Status CheckVmNamesFree(const std::vector<FleetHost>& hosts, const FleetApp& app);

// Chooses a host for every VM of `app`: live hosts with room in their published budget (vCPUs,
// memory) minus their load and what this plan put there already. Each tier is spread over the
// hosts by round-robin over the hosts sorted by free room (the lower of the free vCPU and free
// memory shares, most free first; ties by name), skipping a host the VM does not fit. When some
// VM fits nowhere the error names it and every host's free room, and nothing is placed.
Status PlaceFleetApp(const std::vector<FleetHost>& hosts, FleetApp& app);

}  // namespace qosvisor::control
