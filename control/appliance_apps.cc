// The appliance's blueprint commands (deploy, undeploy, apps; across the fleet with fleet:, see
// appliance_fleet_apps.cc), the caller's quota, and who new VMs belong to and which quotas they
// are charged to.
#include <fmt/format.h>

#include "control/access.h"
#include "control/appliance.h"
#include "control/apps.h"
#include "control/blueprint_plan.h"
#include "control/control_server.h"
#include "control/jobs.h"
#include "control/vm_manager.h"

namespace qosvisor::control {

using nlohmann::json;

std::vector<QuotaCharge> Appliance::QuotaInUse() {
  std::map<std::string, QuotaCharge> charges = vms_->Charges();
  // A VM a deploy has made already is in both lists: it counts once.
  for (auto& [name, charge] : apps_->Pending()) charges.emplace(name, std::move(charge));
  std::vector<QuotaCharge> out;
  for (auto& [name, charge] : charges) out.push_back(std::move(charge));
  return out;
}

Result<VmOwner> Appliance::OwnerFor(const Caller& caller, const std::vector<VmDemand>& asked) {
  VmOwner owner{static_cast<uint32_t>(caller.uid), caller.name, {}, {}};
  if (caller.privileged) return owner;
  auto charged = CheckQuotas(config_.quotas, caller, QuotaInUse(), asked);
  if (!charged.ok()) return charged.status();
  owner.charged = std::move(charged).value();
  return owner;
}

Result<json> Appliance::DeployCommand(const json& args, const Caller& caller) {
  auto blueprint = args.find("blueprint");
  if (blueprint == args.end() || !blueprint->is_string()) {
    return Status::Error("deploy needs a string argument 'blueprint'");
  }
  std::string app = blueprint->get<std::string>();
  if (auto name = args.find("name"); name != args.end()) {
    if (!name->is_string()) return Status::Error("deploy: 'name' must be a string");
    app = name->get<std::string>();
  }
  auto plan = PlanDeploy(config_, blueprint->get<std::string>(), app);
  if (!plan.ok()) return plan.status();
  // Every VM's size (and whether its template can make it) before anything starts.
  std::vector<VmDemand> demands;
  for (const PlannedVm* vm : plan->Vms()) {
    auto demand = vms_->DemandOf(vm->template_name, vm->overrides);
    if (!demand.ok()) return Status::Error(fmt::format("{}: {}", vm->name, demand.message()));
    demands.push_back(std::move(demand).value());
  }
  auto owner = OwnerFor(caller, demands);
  if (!owner.ok()) {
    return Status::Error(fmt::format("deploy of {} ({} VMs) refused, nothing was started: {}", app,
                                     demands.size(), owner.message()));
  }
  if (config_.fleet) return FleetDeploy(*plan, *owner, demands);
  auto job = apps_->Deploy(std::move(plan).value(), std::move(owner).value(), std::move(demands));
  if (!job.ok()) return job.status();
  return json{{"job", *job}};
}

Result<json> Appliance::QuotaJson(const Caller& caller) {
  const std::vector<QuotaCharge> in_use = QuotaInUse();
  json quotas = json::array();
  for (const config::Quota* q : QuotasFor(config_.quotas, caller)) {
    const std::string label = QuotaLabel(*q);
    json used = {{"vms", 0}, {"vcpus", 0}, {"memory_bytes", 0}, {"disk_bytes", 0}};
    for (const QuotaCharge& c : in_use) {
      if (std::find(c.charged.begin(), c.charged.end(), label) == c.charged.end()) continue;
      used["vms"] = used["vms"].get<uint64_t>() + 1;
      used["vcpus"] = used["vcpus"].get<uint64_t>() + c.demand.vcpus;
      used["memory_bytes"] = used["memory_bytes"].get<uint64_t>() + c.demand.memory_bytes;
      used["disk_bytes"] = used["disk_bytes"].get<uint64_t>() + c.demand.disk_bytes;
    }
    json limits = json::object();
    if (q->vms) limits["vms"] = *q->vms;
    if (q->vcpus) limits["vcpus"] = *q->vcpus;
    if (q->memory_bytes) limits["memory_bytes"] = *q->memory_bytes;
    if (q->disk_bytes) limits["disk_bytes"] = *q->disk_bytes;
    if (q->classes) limits["classes"] = *q->classes;
    quotas.push_back({{"quota", label}, {"limits", limits}, {"in_use", used}});
  }
  return json{{"user", caller.name},
              {"uid", caller.uid},
              {"privileged", caller.privileged},
              {"quotas", quotas}};
}

void Appliance::RegisterAppCommands() {
  apps_ = std::make_unique<Apps>(*vms_, *jobs_);
  server_->SetAdmission(AdmitCommand);
  server_->Register("deploy", [this](const json& args, const Caller& caller) {
    return DeployCommand(args, caller);
  });
  server_->Register("undeploy", [this](const json& args, const Caller& caller) -> Result<json> {
    auto name = args.find("name");
    if (name == args.end() || !name->is_string()) {
      return Status::Error("undeploy needs a string argument 'name' (the app)");
    }
    if (config_.fleet) return FleetUndeploy(name->get<std::string>(), caller);
    auto job = apps_->Undeploy(name->get<std::string>(), caller);
    if (!job.ok()) return job.status();
    return json{{"job", *job}};
  });
  server_->Register("apps", [this](const json&) -> Result<json> {
    return config_.fleet ? FleetAppsList() : apps_->ListJson();
  });
  // With fleet:, this box makes what deploys anywhere in the fleet assign to it.
  if (config_.fleet) StartAssignServer(config_);
  server_->Register("quota",
                    [this](const json&, const Caller& caller) { return QuotaJson(caller); });
}

}  // namespace qosvisor::control
