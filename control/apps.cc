// Deploy and undeploy jobs, the apps table, and the quota the deploys under way hold.
#include "control/apps.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

namespace qosvisor::control {

using nlohmann::json;

namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(50);

bool FileHolds(const std::string& path, const std::string& text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream content;
  content << in.rdbuf();
  return content.str().find(text) != std::string::npos;
}

}  // namespace

Apps::App* Apps::FindLocked(const std::string& name) {
  for (App& a : apps_) {
    if (a.plan.app == name) return &a;
  }
  return nullptr;
}

void Apps::SetState(const std::string& app, const std::string& state) {
  std::lock_guard lock(mu_);
  if (App* a = FindLocked(app)) a->state = state;
}

void Apps::Forget(const std::string& app) {
  std::lock_guard lock(mu_);
  std::erase_if(apps_, [&](const App& a) { return a.plan.app == app; });
}

Result<uint64_t> Apps::Deploy(DeployPlan plan, VmOwner owner, std::vector<VmDemand> demands) {
  const std::string name = plan.app;
  std::lock_guard lock(mu_);
  if (FindLocked(name) != nullptr) {
    return Status::Error(fmt::format(
        "an app named '{}' exists already; undeploy it or deploy with another --name", name));
  }
  const std::map<std::string, QuotaCharge> existing = vms_.Charges();
  for (const PlannedVm* vm : plan.Vms()) {
    if (existing.contains(vm->name)) {
      return Status::Error(
          fmt::format("a vm named '{}' exists already; deploy with another --name", vm->name));
    }
  }
  owner.app = name;
  apps_.push_back(App{std::move(plan), std::move(owner), std::move(demands), "deploying", 0});
  // Under the lock: the job's first look at its app waits until the app knows its job.
  const uint64_t id = jobs_.Start(
      "deploy", name, [this, name](JobProgress& progress) { return RunDeploy(name, progress); });
  FindLocked(name)->job = id;
  return id;
}

Result<json> Apps::RunDeploy(const std::string& app, JobProgress& progress) {
  DeployPlan plan;
  VmOwner owner;
  {
    std::lock_guard lock(mu_);
    const App* a = FindLocked(app);
    if (a == nullptr) return Status::Error(fmt::format("app '{}' went away", app));
    plan = a->plan;
    owner = a->owner;
  }
  const uint64_t total = plan.VmCount();
  std::vector<std::string> created;
  auto fail = [&](const std::string& tier, const std::string& why) -> Status {
    progress.Phase(fmt::format("tier {} failed: rolling back", tier));
    const std::string problems = DestroyAll(created);
    Forget(app);
    std::vector<std::string> gone(created.rbegin(), created.rend());
    return Status::Error(
        fmt::format("deploy of {}: tier '{}' failed: {}; rolled back: {}{}", app, tier, why,
                    gone.empty() ? std::string("nothing had been created")
                                 : fmt::format("destroyed {}", fmt::join(gone, ", ")),
                    problems));
  };
  for (const auto& wave : plan.waves) {
    for (const PlannedTier& tier : wave) {
      for (const PlannedVm& vm : tier.vms) {
        progress.Phase(fmt::format("tier {}: creating {} ({} of {} VMs)", tier.name, vm.name,
                                   created.size() + 1, total));
        Status s = vms_.CreateFromTemplate(vm.name, vm.template_name, vm.overrides, owner);
        if (!s.ok()) return fail(tier.name, s.message());
        created.push_back(vm.name);
      }
    }
    for (const PlannedTier& tier : wave) {
      progress.Phase(tier.ready ? fmt::format("tier {}: waiting for '{}'", tier.name, *tier.ready)
                                : fmt::format("tier {}: waiting for its VMs to run", tier.name));
      for (const PlannedVm& vm : tier.vms) {
        if (Status s = WaitUp(vm.name, tier); !s.ok()) return fail(tier.name, s.message());
      }
      spdlog::info("app {}: tier {} up ({})", app, tier.name,
                   tier.ready ? fmt::format("its guests printed '{}'", *tier.ready)
                              : std::string("its VMs run"));
    }
  }
  SetState(app, "running");
  progress.Phase("running");
  return json{{"app", app}, {"blueprint", plan.blueprint}, {"vms", created}};
}

Result<bool> VmUp(VmManager& vms, const std::string& vm, const std::optional<std::string>& ready) {
  auto brief = vms.Brief(vm);
  if (!brief.ok()) return brief.status();
  if (brief->state != "running") {
    return Status::Error(fmt::format("vm '{}' is {} (last exit: {}) instead of running", vm,
                                     brief->state, brief->last_exit));
  }
  return !ready || FileHolds(brief->serial_log, *ready);
}

Status Apps::WaitUp(const std::string& vm, const PlannedTier& tier) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::nanoseconds(tier.ready_timeout_ns);
  for (;;) {
    auto up = VmUp(vms_, vm, tier.ready);
    if (!up.ok()) return up.status();
    if (*up) return Status::Ok();
    if (stopping_.load()) return Status::Error("the appliance is stopping");
    if (std::chrono::steady_clock::now() >= deadline) {
      auto brief = vms_.Brief(vm);
      return Status::Error(fmt::format(
          "vm '{}' did not print '{}' on its serial line within {:.1f} s (see {})", vm, *tier.ready,
          static_cast<double>(tier.ready_timeout_ns) / 1e9,
          brief.ok() ? brief->serial_log : std::string("its serial log")));
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

std::string Apps::DestroyAll(const std::vector<std::string>& created) {
  std::string problems;
  for (auto it = created.rbegin(); it != created.rend(); ++it) {
    if (Status s = vms_.Act(*it, "destroy"); !s.ok()) {
      problems += fmt::format("; {} could not be destroyed: {}", *it, s.message());
    }
  }
  return problems;
}

Result<uint64_t> Apps::Undeploy(const std::string& app, const Caller& caller) {
  {
    std::lock_guard lock(mu_);
    App* a = FindLocked(app);
    if (a == nullptr) return Status::Error(fmt::format("no app named '{}' (see qosctl apps)", app));
    if (!caller.privileged && a->owner.uid != caller.uid) {
      return Status::Error(fmt::format(
          "permission denied: app '{}' belongs to {} (uid {}); {} may undeploy only its own apps",
          app, a->owner.name, a->owner.uid, caller.Describe()));
    }
    if (a->state != "running") {
      return Status::Error(
          fmt::format("app '{}' is {} (job {}); wait for it to finish", app, a->state, a->job));
    }
    a->state = "undeploying";
  }
  const uint64_t id = jobs_.Start(
      "undeploy", app, [this, app](JobProgress& progress) { return RunUndeploy(app, progress); });
  std::lock_guard lock(mu_);
  if (App* a = FindLocked(app)) a->job = id;
  return id;
}

Result<json> Apps::RunUndeploy(const std::string& app, JobProgress& progress) {
  std::vector<std::string> names;
  {
    std::lock_guard lock(mu_);
    const App* a = FindLocked(app);
    if (a == nullptr) return Status::Error(fmt::format("app '{}' went away", app));
    for (const PlannedVm* vm : a->plan.Vms()) names.push_back(vm->name);
  }
  const std::map<std::string, QuotaCharge> existing = vms_.Charges();
  std::erase_if(names, [&](const std::string& n) { return !existing.contains(n); });
  progress.Phase(fmt::format("destroying {} VMs", names.size()));
  if (std::string problems = DestroyAll(names); !problems.empty()) {
    SetState(app, "running");
    return Status::Error(fmt::format("undeploy of {}{}", app, problems));
  }
  Forget(app);
  std::vector<std::string> gone(names.rbegin(), names.rend());
  return json{{"app", app}, {"destroyed", gone}};
}

std::vector<std::pair<std::string, QuotaCharge>> Apps::Pending() {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, QuotaCharge>> out;
  for (const App& a : apps_) {
    if (a.state != "deploying") continue;
    const std::vector<const PlannedVm*> vms = a.plan.Vms();
    for (size_t i = 0; i < vms.size() && i < a.demands.size(); ++i) {
      out.emplace_back(vms[i]->name, QuotaCharge{a.owner.charged, a.demands[i]});
    }
  }
  return out;
}

json Apps::ListJson() {
  std::vector<App> apps;
  {
    std::lock_guard lock(mu_);
    apps = apps_;
  }
  json out = json::array();
  for (const App& a : apps) {
    json tiers = json::array();
    for (const auto& wave : a.plan.waves) {
      for (const PlannedTier& t : wave) {
        json vms = json::array();
        for (const PlannedVm& vm : t.vms) {
          auto brief = vms_.Brief(vm.name);
          vms.push_back({{"name", vm.name}, {"state", brief.ok() ? brief->state : "absent"}});
        }
        tiers.push_back({{"name", t.name}, {"vms", vms}});
      }
    }
    out.push_back({{"name", a.plan.app},
                   {"blueprint", a.plan.blueprint},
                   {"owner", a.owner.name},
                   {"owner_uid", a.owner.uid},
                   {"state", a.state},
                   {"job", a.job},
                   {"tiers", tiers}});
  }
  return out;
}

}  // namespace qosvisor::control
