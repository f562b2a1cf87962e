// The appliance's side of pre-migration: `vm NAME premigrate [HOST...]` (a job copying the
// frozen image NAME's fork family shares to each host, in the migration class and paced to
// migration.bandwidth; by default to every other host of the fleet registry), `--drop` asking
// them to remove it, `images` and `images rm ID`, and dropping an image from the hosts holding
// it once no VM here uses it any more.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "control/appliance.h"
#include "control/control_server.h"
#include "control/fleet.h"
#include "control/jobs.h"
#include "control/vm_manager.h"

namespace qosvisor::control {
namespace {

using json = nlohmann::json;
constexpr auto kConnectTimeout = std::chrono::milliseconds(5000);

// The hosts an image goes to: those named, or every other live host of the registry that
// takes migrations.
Result<std::vector<std::string>> HostsOf(const json& args, FleetAgent* fleet,
                                         const std::optional<config::Fleet>& self) {
  std::vector<std::string> hosts;
  if (args.contains("to")) {
    if (!args["to"].is_array()) return Status::Error("premigrate: 'to' must be a list of hosts");
    for (const json& h : args["to"]) {
      if (!h.is_string() || h.get<std::string>().empty()) {
        return Status::Error("premigrate: every host in 'to' must be a non-empty string");
      }
      hosts.push_back(h.get<std::string>());
    }
  }
  if (!hosts.empty()) return hosts;
  if (fleet == nullptr) {
    return Status::Error("premigrate needs the hosts to copy to: this box has no fleet: registry "
                         "to find them in");
  }
  auto registry = fleet->Hosts();
  if (!registry.ok()) return registry.status();
  for (const FleetHost& h : *registry) {
    if (h.alive && !h.migration_address.empty() && h.name != self->host) hosts.push_back(h.name);
  }
  if (hosts.empty()) return Status::Error("premigrate: no other host in the fleet takes migrations");
  return hosts;
}

}  // namespace

// An image goes to disk on the host, so no VM budget applies: only where its listener is.
Result<Appliance::MigrationTarget> Appliance::ResolveListener(const std::string& dest) {
  if (fleet_) {
    if (auto host = fleet_->Host(dest); host.ok()) {
      if (host->migration_address.empty()) {
        return Status::Error(fmt::format("host '{}' has no migration listener", dest));
      }
      return MigrationTarget{dest, host->migration_address};
    }
  }
  hv::VmOptions nothing;  // the fallbacks of ResolveDestination: hosts: entries, host:port
  return ResolveDestination(dest, nothing);
}

Result<json> Appliance::PremigrateCommand(const json& args, const std::string& name) {
  auto key = LoadMigrationKeyOf(config_);
  if (!key.ok()) return key.status();
  auto hosts = HostsOf(args, fleet_.get(), config_.fleet);
  if (!hosts.ok()) return hosts.status();
  std::vector<MigrationTarget> targets;
  for (const std::string& h : *hosts) {
    auto target = ResolveListener(h);
    if (!target.ok()) return target.status();
    targets.push_back(*target);
  }
  const bool drop = args.value("drop", false);
  // How the hosts holding the image know where it came from.
  const std::string self = config_.fleet ? config_.fleet->host : config_.migration.listen;
  const uint64_t rate = args.contains("rate") && args["rate"].is_number_unsigned()
                            ? args["rate"].get<uint64_t>()
                            : config_.migration.bandwidth_bps;
  const auto timeout =
      std::chrono::milliseconds(std::min<uint64_t>(config_.migration.timeout_ns / 1'000'000, 10000));
  VmManager* vms = vms_.get();
  const uint64_t id = jobs_->Start(
      drop ? "drop-image" : "premigrate", name,
      [vms, name, targets, key = *key, drop, self, rate, timeout](JobProgress& p) -> Result<json> {
        json done = json::array();
        std::vector<std::string> failed;
        for (const MigrationTarget& t : targets) {
          auto one = [&]() -> Result<json> {
            p.Phase(fmt::format("connecting to {} ({})", t.name, t.address));
            auto fd = hv::ConnectTcp(t.address, kConnectTimeout);
            if (!fd.ok()) return fd.status();
            auto channel = hv::MigrationChannel::Handshake(std::move(fd).value(), key,
                                                           hv::MigrationRole::kSource,
                                                           kConnectTimeout);
            if (!channel.ok()) return channel.status();
            if (!drop) {
              return vms->Premigrate(name, *channel, t.name, self, rate, timeout, ProgressOf(p));
            }
            auto family = vms->ImageIdOf(name);
            if (!family.ok()) return family.status();
            return vms->DropPremigrated(*family, *channel, t.name, timeout);
          }();
          if (one.ok()) {
            done.push_back(*one);
          } else {
            failed.push_back(fmt::format("{}: {}", t.name, one.message()));
          }
        }
        if (!failed.empty()) {
          return Status::Error(fmt::format("vm '{}': {} of {} hosts failed: {}", name,
                                           failed.size(), targets.size(),
                                           fmt::join(failed, "; ")));
        }
        return json{{"vm", name}, {"hosts", done}};
      });
  return json{{"job", id}};
}

// Images sent from here whose family has no VM here any more go from the hosts holding them.
void Appliance::DropUnusedImages() {
  if (!vms_) return;
  const auto unused = vms_->UnusedPremigrations();
  if (unused.empty()) return;  // the usual case: no key file read every second
  auto key = LoadMigrationKeyOf(config_);
  for (const auto& [id, hosts] : unused) {
    if (!key.ok()) {
      spdlog::warn("image {}: cannot ask {} to drop it: {}", id, fmt::join(hosts, ", "),
                   key.message());
      continue;
    }
    std::vector<MigrationTarget> targets;
    for (const std::string& h : hosts) {
      if (auto t = ResolveListener(h); t.ok()) targets.push_back(*t);
    }
    VmManager* vms = vms_.get();
    jobs_->Start("drop-image", id, [vms, id, targets, key = *key](JobProgress& p) -> Result<json> {
      json done = json::array();
      for (const MigrationTarget& t : targets) {
        p.Phase(fmt::format("asking {} to drop image {}", t.name, id));
        auto fd = hv::ConnectTcp(t.address, kConnectTimeout);
        if (!fd.ok()) continue;  // it goes down with its host, or on request there
        auto channel = hv::MigrationChannel::Handshake(std::move(fd).value(), key,
                                                       hv::MigrationRole::kSource, kConnectTimeout);
        if (!channel.ok()) continue;
        auto dropped = vms->DropPremigrated(id, *channel, t.name, kConnectTimeout);
        if (dropped.ok()) done.push_back(*dropped);
      }
      return json{{"image", id}, {"hosts", done}};
    });
  }
}

void Appliance::RegisterImageCommands() {
  server_->Register("images", [this](const json& args, const Caller& caller) -> Result<json> {
    if (!vms_) return Status::Error("this configuration has no vms");
    const std::string action = args.value("action", "list");
    if (action == "list") return vms_->ImagesJson();
    if (action != "rm") return Status::Error(fmt::format("images: unknown action '{}'", action));
    if (!caller.privileged) {
      return Status::Error(fmt::format("permission denied: {} may not remove images",
                                       caller.Describe()));
    }
    auto removed = vms_->RemoveImage(args.value("id", ""));
    if (!removed.ok()) return removed.status();
    return json{{"result", *removed}};
  });
}

}  // namespace qosvisor::control
