// Deploying an app across the fleet through etcd alone (keys: fleet_apps.h).
//
// The coordinator (the box `qosctl deploy` ran on) claims /qosvisor/apps/<app> under a lease of
// its own, writes each wave's assignments under the same lease, and waits until every VM of the
// wave is ready on its host before writing the next wave. Each host's AssignServer watches
// /qosvisor/assign/<host>/ on threads of its own, creates what is assigned to it and writes how
// far it got. Once every tier is up the coordinator writes the plan and the assignments again
// without a lease: the app outlives the box that deployed it.
//
// Rolling back (a tier failed, a host left, the coordinator stops) and undeploying (which first
// moves every key under the undeploying box's lease) ask the hosts to destroy the VMs one at a
// time, newest first, and remove each key once its host says "destroyed".
//
// When the coordinator dies mid-deploy, or mid-undeploy, its lease expires within lease_ttl and
// takes the plan and the assignments with it; every host destroys the VMs it made for keys that
// are gone. A host whose daemon restarts has lost its VMs: it marks their assignments failed.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "control/etcd_client.h"
#include "control/fleet.h"
#include "control/fleet_apps.h"

namespace qosvisor::control {

// What a host does with the VMs assigned to it; the appliance backs these with its VmManager.
// Called on the AssignServer's worker thread.
struct AssignedVmOps {
  // Creates and starts the VM; the error says why not (no such blueprint or template in this
  // host's configuration, the name is taken, the image is missing, ...).
  std::function<Status(const Assignment&)> create;
  // True once the VM runs and, with a ready line, its guest printed it; false while waiting; an
  // error once it cannot come up (it stopped, crashed).
  std::function<Result<bool>(const Assignment&)> up;
  std::function<Status(const std::string& vm)> destroy;
};

class AssignServer {
 public:
  AssignServer(const config::Fleet& fleet, AssignedVmOps ops);
  ~AssignServer();  // Stop()
  AssignServer(const AssignServer&) = delete;
  AssignServer& operator=(const AssignServer&) = delete;

  void Start();
  // Ends both threads; the VMs made stay (the appliance's teardown stops them).
  void Stop();
  // The VMs this host made for fleet apps and still holds.
  size_t vms_made() const;

 private:
  struct Made {
    std::string key;
    std::string app;
    std::chrono::steady_clock::time_point ready_deadline;
  };
  void WatchLoop();
  void WorkLoop();
  // One look at every assignment of this host; true when some VM is still coming up.
  Result<bool> ReconcileOnce();
  // Carries one assignment one step further; true when it waits for its VM to come up.
  bool Step(const EtcdKeyValue& kv, Assignment a);
  void Create(const EtcdKeyValue& kv, Assignment a);
  bool CheckUp(const EtcdKeyValue& kv, Assignment a);
  void Destroy(const EtcdKeyValue& kv, Assignment a);
  // Destroys what this host made for keys that are gone (their lease ended or they were removed).
  void DestroyOrphans(const std::vector<EtcdKeyValue>& present);
  // Writes `a` over the key only if it still holds what was read (the coordinator may have asked
  // for something else meanwhile, or the key may be gone); the value written, or empty.
  std::string Update(const EtcdKeyValue& kv, const std::string& read, const Assignment& a);
  void Wake();

  config::Fleet fleet_;
  AssignedVmOps ops_;
  EtcdClient etcd_;
  EtcdClient watch_etcd_;  // shorter timeout: a stop is noticed within half of it
  std::thread watcher_, worker_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool changed_ = false;              // guarded by mu_
  std::map<std::string, Made> made_;  // by VM name; guarded by mu_ (written by the worker only)
  std::string last_error_;            // the worker's only
  std::set<std::string> warned_;      // junk assignments said once (key@revision); the worker's
};

// How a coordinator waits and when it gives up.
struct FleetDeployWait {
  std::chrono::milliseconds poll{100};
  // An assignment its host does not take up within this long is given up (its daemon is gone, or
  // too old to serve assignments).
  std::chrono::milliseconds pickup{10000};
  // Beyond a wave's longest ready timeout: creating VMs, the hosts' turns.
  std::chrono::milliseconds slack{30000};
  // A VM its host does not destroy within this long is left to the host (its key removed).
  std::chrono::milliseconds destroy{30000};
  int64_t lease_ttl_s = 10;
  // The registry now (who is alive); the appliance reads its agent's view.
  std::function<Result<std::vector<FleetHost>>()> hosts;
  // Ok while it is sensible to go on (the appliance is not stopping).
  std::function<Status()> still_valid = [] { return Status::Ok(); };
  std::function<void(const std::string&)> phase = [](const std::string&) {};
};

// Ok when no app of the fleet has the name `app`, else an error naming the one that has it.
Status CheckFleetAppNameFree(EtcdClient& etcd, const std::string& app);

// Claims the app's name in the fleet: grants a lease and creates /qosvisor/apps/<app> under it
// when no app has the name. The lease, or an error naming the app in the way.
Result<int64_t> ClaimFleetApp(EtcdClient& etcd, const FleetApp& app, int64_t lease_ttl_s);

// Runs a claimed deploy: wave by wave, rolling back everywhere when something fails. The result
// names the VMs and their hosts; the error names the tier, the VM, the host and why, and what the
// rollback destroyed.
Result<nlohmann::json> RunFleetDeploy(EtcdClient& etcd, FleetApp app, int64_t lease,
                                      const FleetDeployWait& wait);

// The app's plan, or an error naming it when the fleet has no such app.
Result<FleetApp> ReadFleetApp(EtcdClient& etcd, const std::string& app);

// Takes every key of the app under a new lease (so that the hosts clean up should this box die)
// and returns it; refused unless the app is running.
Result<int64_t> ClaimFleetUndeploy(EtcdClient& etcd, const std::string& app,
                                   const std::string& coordinator, int64_t lease_ttl_s);
Result<nlohmann::json> RunFleetUndeploy(EtcdClient& etcd, const std::string& app, int64_t lease,
                                        const FleetDeployWait& wait);

// The registry as etcd holds it now, without an agent (a deploy job may outlive this box's agent
// at shutdown); records that cannot be read are left out.
Result<std::vector<FleetHost>> ReadFleetHosts(EtcdClient& etcd);

// Every app of the fleet with, per VM, its host and the state its host reported; records that
// cannot be read are skipped with a warning.
Result<nlohmann::json> FleetAppsJson(EtcdClient& etcd, const std::vector<FleetHost>& hosts);

}  // namespace qosvisor::control
