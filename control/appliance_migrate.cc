// The appliance's side of live migration: the listener VMs arrive at, and `vm NAME migrate
// DEST`, a job that finds the destination (the fleet registry, the configuration's hosts:, or
// host:port), checks that it has room, connects, authenticates and hands the VM over.
#include <fmt/format.h>

#include <chrono>
#include <thread>

#include "control/appliance.h"
#include "control/fleet.h"
#include "control/jobs.h"
#include "control/migration_listener.h"
#include "control/vm_manager.h"

namespace qosvisor::control {
namespace {

using json = nlohmann::json;
constexpr auto kConnectTimeout = std::chrono::milliseconds(5000);

hv::MigrationTuning TuningOf(const config::Migration& m) {
  hv::MigrationTuning t;
  t.downtime = std::chrono::milliseconds(m.downtime_ns / 1'000'000);
  t.timeout = std::chrono::milliseconds(m.timeout_ns / 1'000'000);
  t.bandwidth_bps = m.bandwidth_bps;
  // A peer silent for this long is gone (a cut link shows as nothing but silence).
  t.message_timeout = std::min(t.message_timeout, t.timeout);
  return t;
}

bool LooksLikeHostPort(const std::string& s) {
  const size_t colon = s.rfind(':');
  return colon != std::string::npos && colon + 1 < s.size() &&
         s.find_first_not_of("0123456789", colon + 1) == std::string::npos;
}

}  // namespace

Status Appliance::StartMigrationListener(const config::Config& config) {
  if (config.migration.listen.empty()) return Status::Ok();
  if (!vms_) {
    return Status::Error("migration.listen: this configuration has no VMs to migrate (no vms:, "
                         "templates: or blueprints:)");
  }
  auto key = LoadMigrationKeyOf(config);
  if (!key.ok()) return key.status();
  vms_->RemoveUnfinishedIncoming();
  IncomingPolicy policy;
  // The budget as loaded: fleet: never changes without a restart, and the listener's thread must
  // not read config_, which a reload replaces.
  policy.admit = [this, fleet = config.fleet](const VmDemand& demand) {
    return AdmitIncoming(fleet, demand);
  };
  policy.message_timeout = TuningOf(config.migration).message_timeout;
  auto listener = MigrationListener::Start(config.migration.listen, *key, vms_.get(), policy);
  if (!listener.ok()) return listener.status();
  migration_listener_ = std::move(listener).value();
  return Status::Ok();
}

Result<hv::MigrationKey> Appliance::LoadMigrationKeyOf(const config::Config& config) {
  if (config.migration.key_file.empty()) {
    return Status::Error("migration.key_file is not set: both ends of a migration need the key");
  }
  auto key = hv::LoadMigrationKey(config.Resolve(config.migration.key_file));
  if (!key.ok()) return Status::Error("migration.key_file: " + key.message());
  return key;
}

// A box in a fleet takes in no more than the budget it offers the fleet.
Status Appliance::AdmitIncoming(const std::optional<config::Fleet>& fleet,
                                const VmDemand& demand) {
  if (!fleet) return Status::Ok();
  const FleetLoad load = CurrentLoad();
  const config::Fleet& f = *fleet;
  if (load.vcpus + demand.vcpus > f.budget_vcpus) {
    return Status::Error(fmt::format("this host's budget has {} of {} vCPUs free; the VM needs {}",
                                     f.budget_vcpus - std::min(load.vcpus, f.budget_vcpus),
                                     f.budget_vcpus, demand.vcpus));
  }
  if (load.memory_bytes + demand.memory_bytes > f.budget_memory_bytes) {
    return Status::Error(fmt::format(
        "out of memory: this host's budget has {} of {} bytes free; the VM needs {}",
        f.budget_memory_bytes - std::min(load.memory_bytes, f.budget_memory_bytes),
        f.budget_memory_bytes, demand.memory_bytes));
  }
  return Status::Ok();
}

Result<Appliance::MigrationTarget> Appliance::FleetTarget(const FleetHost& host,
                                                          const hv::VmOptions& vm) {
  const std::string& dest = host.name;
  if (host.migration_address.empty()) {
    return Status::Error(fmt::format("host '{}' has no migration listener", dest));
  }
  const uint32_t free_vcpus = host.budget_vcpus - std::min(host.load.vcpus, host.budget_vcpus);
  const uint64_t free_memory =
      host.budget_memory_bytes - std::min(host.load.memory_bytes, host.budget_memory_bytes);
  if (vm.vcpus > free_vcpus || vm.memory_bytes > free_memory) {
    return Status::Error(fmt::format(
        "host '{}' has {} vCPUs and {} bytes of memory free in its budget; vm '{}' needs {} "
        "and {}",
        dest, free_vcpus, free_memory, vm.name, vm.vcpus, vm.memory_bytes));
  }
  return MigrationTarget{dest, host.migration_address};
}

Result<Appliance::MigrationTarget> Appliance::ResolveDestination(const std::string& dest,
                                                                 const hv::VmOptions& vm) {
  if (fleet_) {
    // Not found in the registry (or no etcd): perhaps an entry of hosts: or host:port.
    if (auto host = fleet_->Host(dest); host.ok()) return FleetTarget(*host, vm);
  }
  for (const config::Host& h : config_.hosts) {
    if (h.name == dest) return MigrationTarget{dest, fmt::format("{}:{}", h.address, h.port)};
  }
  if (LooksLikeHostPort(dest)) return MigrationTarget{dest, dest};
  return Status::Error(fmt::format(
      "unknown destination '{}': not a host in the fleet registry{}, not in hosts:, and not "
      "host:port",
      dest, fleet_ ? "" : " (no fleet: section)"));
}

Result<json> Appliance::MigrateCommand(const json& args, const std::string& name) {
  if (!args.contains("to") || !args["to"].is_string() || args["to"].get<std::string>().empty()) {
    return Status::Error("migrate needs a string argument 'to': a fleet host, a hosts: entry or "
                         "host:port");
  }
  const std::string dest = args["to"].get<std::string>();
  auto key = LoadMigrationKeyOf(config_);
  if (!key.ok()) return key.status();
  auto options = vms_->OptionsOf(name);
  if (!options.ok()) return options.status();
  auto target = ResolveDestination(dest, *options);
  if (!target.ok()) return target.status();
  return json{{"job", StartMigrateJob(name, *target, *key, TuningOf(config_.migration))}};
}

// Thread-safe: the move server starts migrations from its own thread.
uint64_t Appliance::StartMigrateJob(const std::string& name, const MigrationTarget& target,
                                    const hv::MigrationKey& key,
                                    const hv::MigrationTuning& tuning) {
  VmManager* vms = vms_.get();
  return jobs_->Start(
      "migrate", name,
      [vms, name, tuning, key, target](JobProgress& p) -> Result<json> {
        p.Phase(fmt::format("connecting to {} ({})", target.name, target.address));
        auto fd = hv::ConnectTcp(target.address, kConnectTimeout);
        if (!fd.ok()) return Status::Error(fmt::format("vm '{}' stays here: {}", name, fd.message()));
        auto channel = hv::MigrationChannel::Handshake(std::move(fd).value(), key,
                                                       hv::MigrationRole::kSource, kConnectTimeout);
        if (!channel.ok()) {
          return Status::Error(fmt::format("vm '{}' stays here: {}", name, channel.message()));
        }
        return vms->MigrateOut(name, *channel, tuning, target.name, ProgressOf(p));
      });
}

Result<json> Appliance::MigrateForFleet(const std::string& name, const std::string& dest,
                                        const Result<hv::MigrationKey>& key,
                                        const config::Migration& migration) {
  if (!key.ok()) return key.status();
  auto options = vms_->OptionsOf(name);
  if (!options.ok()) return options.status();
  auto host = fleet_->Host(dest);
  if (!host.ok()) return host.status();
  auto target = FleetTarget(*host, *options);
  if (!target.ok()) return target.status();
  const uint64_t id = StartMigrateJob(name, *target, *key, TuningOf(migration));
  for (;;) {
    auto job = jobs_->Get(id);
    if (!job.ok()) return job.status();
    if ((*job)["state"] == "done") return (*job)["result"];
    if ((*job)["state"] == "failed") return Status::Error((*job)["error"].get<std::string>());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

FleetLoad Appliance::CurrentLoad() {
  FleetLoad load;
  if (vms_) {
    for (const json& vm : vms_->ListJson()) {
      if (vm["state"] == "suspended" || vm["state"] == "migrated") continue;  // hold nothing here
      ++load.vms;
      load.vcpus += vm["vcpus"].get<uint32_t>();
      load.memory_bytes += vm["memory_bytes"].get<uint64_t>();
    }
  }
  return load;
}

json Appliance::MigrationStatusJson() const {
  if (!migration_listener_) return nullptr;
  return migration_listener_->StatusJson();
}

}  // namespace qosvisor::control
