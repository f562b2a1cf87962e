// Apps: blueprints deployed on this box. A deploy creates every tier's VMs from their templates,
// wave by wave (see blueprint_plan.h), waits for each wave to run and, where its template gives
// a ready line, for every guest to print it on its serial line; if a tier fails, the VMs this
// deploy made are destroyed in reverse order and the error names the tier and why. Deploys and
// undeploys run as jobs. While a deploy runs, the VMs it has yet to make count against the
// owner's quotas, so a request made meanwhile cannot take what the deploy was granted.
#pragma once

#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "control/blueprint_plan.h"
#include "control/control_server.h"
#include "control/jobs.h"
#include "control/quota.h"
#include "control/vm_manager.h"

namespace qosvisor::control {

// True once `vm` runs and, with a `ready` line, its serial log holds it; false while it runs and
// the line has not come; an error when it does not run (naming its state and last exit).
Result<bool> VmUp(VmManager& vms, const std::string& vm, const std::optional<std::string>& ready);

class Apps {
 public:
  Apps(VmManager& vms, Jobs& jobs) : vms_(vms), jobs_(jobs) {}

  // Registers the app (refusing a name in use, or VM names taken) and starts its deploy job;
  // `demands` holds one entry per VM of plan.Vms(). Returns the job id.
  Result<uint64_t> Deploy(DeployPlan plan, VmOwner owner, std::vector<VmDemand> demands);
  // Destroys the app's VMs in reverse order, as a job. Only root, the box's user or the app's
  // owner may.
  Result<uint64_t> Undeploy(const std::string& app, const Caller& caller);
  nlohmann::json ListJson();
  // The VMs deploys under way have yet to make, by name, with what they will be charged.
  std::vector<std::pair<std::string, QuotaCharge>> Pending();
  // Deploys waiting for a guest give up (and roll back): the appliance is going down.
  void Stop() { stopping_.store(true); }
  bool stopping() const { return stopping_.load(); }

 private:
  struct App {
    DeployPlan plan;
    VmOwner owner;
    std::vector<VmDemand> demands;
    std::string state;  // deploying | running | undeploying
    uint64_t job = 0;
  };
  Result<nlohmann::json> RunDeploy(const std::string& app, JobProgress& progress);
  // Waits until `vm` runs and, with a ready line, until its serial log holds it.
  Status WaitUp(const std::string& vm, const PlannedTier& tier);
  // Destroys `created` newest first; returns what went wrong with any of them.
  std::string DestroyAll(const std::vector<std::string>& created);
  Result<nlohmann::json> RunUndeploy(const std::string& app, JobProgress& progress);
  App* FindLocked(const std::string& name);
  void SetState(const std::string& app, const std::string& state);
  void Forget(const std::string& app);

  VmManager& vms_;
  Jobs& jobs_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::vector<App> apps_;  // guarded by mu_
};

}  // namespace qosvisor::control
