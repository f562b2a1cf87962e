// Blueprints across the fleet, the appliance's part: the server that makes the VMs the fleet
// assigns to this box (with the single-box machinery: templates, owners, ready lines), and
// deploy, undeploy and apps on a box with fleet: (see fleet_deploy.h for the protocol).
#include <fmt/format.h>

#include <set>

#include "control/appliance.h"
#include "control/apps.h"
#include "control/blueprint_plan.h"
#include "control/control_server.h"
#include "control/fleet_apps.h"
#include "control/fleet_deploy.h"
#include "control/jobs.h"
#include "control/vm_manager.h"

namespace qosvisor::control {

using nlohmann::json;

namespace {

int64_t LeaseTtlSeconds(const config::Fleet& fleet) {
  return std::max<int64_t>(
      1, static_cast<int64_t>((fleet.lease_ttl_ns + 999'999'999) / 1'000'000'000));
}

FleetApp FleetAppOf(const DeployPlan& plan, const VmOwner& owner,
                    const std::vector<VmDemand>& demands, const std::string& coordinator) {
  FleetApp app;
  app.name = plan.app;
  app.blueprint = plan.blueprint;
  app.coordinator = coordinator;
  app.owner = owner.name;
  app.owner_uid = owner.uid;
  size_t i = 0;
  for (uint32_t wave = 0; wave < plan.waves.size(); ++wave) {
    for (const PlannedTier& t : plan.waves[wave]) {
      FleetAppTier tier{t.name, wave, t.ready, t.ready_timeout_ns, {}};
      for (const PlannedVm& vm : t.vms) {
        const VmDemand& d = demands.at(i++);
        tier.vms.push_back({vm.name, vm.template_name, vm.overrides, "", d.vcpus, d.memory_bytes});
      }
      app.tiers.push_back(std::move(tier));
    }
  }
  return app;
}

}  // namespace

void Appliance::StartAssignServer(const config::Config& config) {
  // The blueprints this box serves are those it started with: a host only checks that the
  // blueprint is known here; what it makes comes from the templates, which reloads keep current.
  std::set<std::string> blueprints;
  for (const config::Blueprint& b : config.blueprints) blueprints.insert(b.name);
  const std::string host = config.fleet->host;
  AssignedVmOps ops;
  ops.create = [this, blueprints, host](const Assignment& a) -> Status {
    if (!blueprints.contains(a.blueprint)) {
      return Status::Error(fmt::format(
          "its configuration has no blueprint '{}' (every host a fleet deploy uses needs the "
          "blueprint and its templates)",
          a.blueprint));
    }
    VmOwner owner{a.owner_uid, a.owner, {}, a.app};
    return vms_->CreateFromTemplate(a.vm, a.template_name, a.overrides, owner);
  };
  ops.up = [this](const Assignment& a) { return VmUp(*vms_, a.vm, a.ready); };
  ops.destroy = [this](const std::string& vm) { return vms_->Act(vm, "destroy"); };
  assign_server_ = std::make_unique<AssignServer>(*config.fleet, std::move(ops));
  assign_server_->Start();
}

Result<json> Appliance::FleetDeploy(const DeployPlan& plan, const VmOwner& owner,
                                    const std::vector<VmDemand>& demands) {
  const config::Fleet& fleet = *config_.fleet;
  FleetApp app = FleetAppOf(plan, owner, demands, fleet.host);
  auto refused = [&](const std::string& why) {
    return Status::Error(fmt::format("deploy of {} ({} VMs) refused, nothing was started: {}",
                                     app.name, demands.size(), why));
  };
  EtcdClient etcd(EtcdOptions{fleet.etcd});
  auto hosts = ReadFleetHosts(etcd);
  if (!hosts.ok()) return refused("cannot read the fleet registry: " + hosts.message());
  if (Status s = CheckFleetAppNameFree(etcd, app.name); !s.ok()) return s;
  if (Status s = CheckVmNamesFree(*hosts, app); !s.ok()) return refused(s.message());
  if (Status s = PlaceFleetApp(*hosts, app); !s.ok()) return refused(s.message());
  auto lease = ClaimFleetApp(etcd, app, LeaseTtlSeconds(fleet));
  if (!lease.ok()) return lease.status();
  const uint64_t id =
      jobs_->Start("deploy", app.name, [this, app, lease = *lease, fleet](JobProgress& progress) {
        EtcdClient etcd(EtcdOptions{fleet.etcd});
        FleetDeployWait wait;
        wait.lease_ttl_s = LeaseTtlSeconds(fleet);
        wait.hosts = [&etcd] { return ReadFleetHosts(etcd); };
        wait.still_valid = [this] {
          return apps_->stopping() ? Status::Error("the appliance is stopping") : Status::Ok();
        };
        wait.phase = [&progress](const std::string& phase) { progress.Phase(phase); };
        return RunFleetDeploy(etcd, app, lease, wait);
      });
  return json{{"job", id}};
}

Result<json> Appliance::FleetUndeploy(const std::string& name, const Caller& caller) {
  const config::Fleet& fleet = *config_.fleet;
  EtcdClient etcd(EtcdOptions{fleet.etcd});
  auto app = ReadFleetApp(etcd, name);
  if (!app.ok()) return app.status();
  if (!caller.privileged && app->owner_uid != caller.uid) {
    return Status::Error(fmt::format(
        "permission denied: app '{}' belongs to {} (uid {}); {} may undeploy only its own apps",
        name, app->owner, app->owner_uid, caller.Describe()));
  }
  auto lease = ClaimFleetUndeploy(etcd, name, fleet.host, LeaseTtlSeconds(fleet));
  if (!lease.ok()) return lease.status();
  const uint64_t id =
      jobs_->Start("undeploy", name, [name, lease = *lease, fleet](JobProgress& progress) {
        EtcdClient etcd(EtcdOptions{fleet.etcd});
        FleetDeployWait wait;
        wait.lease_ttl_s = LeaseTtlSeconds(fleet);
        wait.hosts = [&etcd] { return ReadFleetHosts(etcd); };
        wait.phase = [&progress](const std::string& phase) { progress.Phase(phase); };
        return RunFleetUndeploy(etcd, name, lease, wait);
      });
  return json{{"job", id}};
}

Result<json> Appliance::FleetAppsList() {
  EtcdClient etcd(EtcdOptions{config_.fleet->etcd});
  auto hosts = ReadFleetHosts(etcd);
  if (!hosts.ok())
    return Status::Error("cannot read the fleet's apps from etcd: " + hosts.message());
  auto apps = FleetAppsJson(etcd, *hosts);
  if (!apps.ok()) return Status::Error("cannot read the fleet's apps from etcd: " + apps.message());
  return apps;
}

}  // namespace qosvisor::control
