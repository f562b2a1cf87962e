// The appliance's part in placement and rebalancing: the leader election, the server for moves
// the leader asks of this box, the VMs this box publishes for the planner, and the commands
// `place VM` (any box) and `rebalance [--dry-run]` (the leader only: another box answers with an
// error naming the leader, so a plan is never made from two places at once).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "control/appliance.h"
#include "control/fleet.h"
#include "control/fleet_leader.h"
#include "control/fleet_moves.h"
#include "control/jobs.h"
#include "control/placement.h"
#include "control/vm_manager.h"

namespace qosvisor::control {

using nlohmann::json;

namespace {

// How long the leader waits for a move beyond the migration's own timeout (the source's job
// starting, its outcome reaching etcd).
constexpr auto kMoveSlack = std::chrono::seconds(30);

PlacementRules RulesOf(const config::Fleet& fleet) {
  return PlacementRules{fleet.anti_affinity, fleet.rebalance_choose};
}

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string MoveText(const PlannedMove& m) {
  return fmt::format("vm {} ({} -> {})", m.vm, m.from, m.to);
}

// What a plan that stopped at `failed` did and did not do, for the job's error.
std::string StoppedText(const std::string& plan_id, const std::vector<PlannedMove>& moves,
                        size_t failed, const std::string& why) {
  std::string done, untried;
  for (size_t i = 0; i < moves.size(); ++i) {
    std::string& list = i < failed ? done : untried;
    if (i == failed) continue;
    list += (list.empty() ? "" : ", ") + MoveText(moves[i]);
  }
  return fmt::format(
      "rebalance plan {} stopped at move {} of {}: {} failed: {}. Done: {}. Not "
      "tried: {}.",
      plan_id, failed + 1, moves.size(), MoveText(moves[failed]), why, done.empty() ? "none" : done,
      untried.empty() ? "none" : untried);
}

}  // namespace

void Appliance::StartFleetPlanning(const config::Config& config) {
  leader_ = std::make_unique<LeaderElection>(*config.fleet, fleet_->instance());
  leader_->Start();
  // Fleet and migration settings change only with a restart, so these copies stay right.
  move_server_ = std::make_unique<MoveServer>(
      *config.fleet, leader_->poll_interval(),
      [this, key = LoadMigrationKeyOf(config), migration = config.migration](
          const std::string& vm, const std::string& to) {
        return MigrateForFleet(vm, to, key, migration);
      });
  move_server_->Start();
}

void Appliance::StopFleetPlanning() {
  planning_stopped_ = true;
  if (move_server_) move_server_->Stop();  // after the move under way, if any
  // Gives up the lead now (the others take over at their next look); a rebalance job still
  // waiting sees it and stops.
  if (leader_) leader_->Stop();
}

std::vector<FleetVm> Appliance::FleetVms(const std::vector<config::AntiAffinityGroup>& groups,
                                         const SendRate& send_rate) {
  std::vector<FleetVm> out;
  if (!vms_) return out;
  // What the page tracker learnt: a VM it has not harvested yet counts as changing nothing.
  const std::map<std::string, hv::VmPageSummary> pages = vms_->PageSummaries();
  for (const json& row : vms_->ListJson()) {
    if (row["state"] == "suspended" || row["state"] == "migrated") continue;  // hold nothing here
    FleetVm vm;
    vm.name = row["name"].get<std::string>();
    vm.vcpus = row["vcpus"].get<uint32_t>();
    vm.memory_bytes = row["memory_bytes"].get<uint64_t>();
    vm.state = row["state"].get<std::string>();
    uint64_t bytes = 0;
    {
      std::lock_guard lock(switch_control_mu_);  // a reload may replace ports meanwhile
      for (const json& port : row["ports"]) {
        // What the guest sends enters the switch on its port.
        if (const dataplane::Port* p = FindPort(port.get<std::string>())) {
          bytes += p->Counters().rx_bytes;
        }
      }
    }
    vm.uplink_bps = send_rate(vm.name, bytes);
    if (auto it = pages.find(vm.name); it != pages.end()) {
      vm.changed_pages = it->second.changed_pages;
      vm.pages_per_second = it->second.pages_per_second;
    }
    for (const config::AntiAffinityGroup& g : groups) {
      if (std::find(g.vms.begin(), g.vms.end(), vm.name) != g.vms.end())
        vm.groups.push_back(g.name);
    }
    out.push_back(std::move(vm));
  }
  return out;
}

void Appliance::RegisterFleetCommands() {
  server_->Register("place", [this](const json& args) { return PlaceCommand(args); });
  server_->Register("rebalance", [this](const json& args) { return RebalanceCommand(args); });
}

Result<json> Appliance::PlaceCommand(const json& args) {
  if (!fleet_) return Status::Error("place needs a fleet: section in the configuration");
  auto vm = args.find("vm");
  if (vm == args.end() || !vm->is_string() || vm->get<std::string>().empty()) {
    return Status::Error("place needs a string argument 'vm': the VM to place");
  }
  auto hosts = fleet_->Hosts();
  if (!hosts.ok()) return Status::Error("cannot read the fleet registry: " + hosts.message());
  auto placement = PlaceVm(*hosts, RulesOf(*config_.fleet), vm->get<std::string>());
  if (!placement.ok()) return placement.status();
  for (const std::string& w : placement->warnings) spdlog::warn("place: {}", w);
  return PlacementJson(*placement);
}

Result<json> Appliance::RebalanceCommand(const json& args) {
  if (!fleet_) return Status::Error("rebalance needs a fleet: section in the configuration");
  auto dry = args.find("dry_run");
  if (dry != args.end() && !dry->is_boolean()) {
    return Status::Error("rebalance: 'dry_run' must be true or false");
  }
  const bool dry_run = dry != args.end() && dry->get<bool>();
  if (Status s = leader_->CheckLeading(); !s.ok()) {
    // Someone else leads: say where to go. Nobody, or no etcd: say that alone.
    auto holder = leader_->HolderNow();
    const bool elsewhere = holder.ok() && !holder->host.empty() && !holder->me;
    return Status::Error(elsewhere ? fmt::format("rebalance plans only on the daemon that leads "
                                                 "the fleet: {}; run it there",
                                                 s.message())
                                   : "rebalance: " + s.message());
  }
  auto hosts = fleet_->Hosts();
  if (!hosts.ok()) return Status::Error("cannot read the fleet registry: " + hosts.message());
  auto plan = PlanRebalance(*hosts, RulesOf(*config_.fleet));
  if (!plan.ok()) return Status::Error("rebalance: " + plan.message());
  for (const std::string& w : plan->warnings) spdlog::warn("rebalance: {}", w);
  const std::string plan_id = fmt::format("{}-{}", config_.fleet->host, UnixMs());
  json out = PlanJson(*plan);
  out["plan"] = plan_id;
  out["leader"] = config_.fleet->host;
  out["dry_run"] = dry_run;
  if (dry_run || plan->moves.empty()) return out;
  MoveWait wait;
  wait.poll = leader_->poll_interval();
  wait.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::nanoseconds(config_.migration.timeout_ns)) +
                 kMoveSlack;
  const uint64_t id =
      jobs_->Start("rebalance", plan_id,
                   [this, moves = plan->moves, plan_id, wait, out,
                    etcd = config_.fleet->etcd](JobProgress& p) mutable -> Result<json> {
                     return ExecutePlan(plan_id, moves, wait, etcd, out, p);
                   });
  return json{{"job", id}};
}

// Runs the moves one at a time through etcd and stops at the first that fails.
Result<json> Appliance::ExecutePlan(const std::string& plan_id,
                                    const std::vector<PlannedMove>& moves, MoveWait wait,
                                    const std::vector<std::string>& endpoints, json out,
                                    JobProgress& progress) {
  EtcdClient etcd(EtcdOptions{endpoints});
  std::string source;  // the move's source host, which must stay alive while it runs
  wait.still_valid = [this, &source]() -> Status {
    if (planning_stopped_.load()) return Status::Error("this daemon is stopping");
    if (Status s = leader_->CheckLeading(); !s.ok()) {
      return Status::Error("this daemon lost the lead mid-plan (" + s.message() + ")");
    }
    if (auto host = fleet_->Host(source); !host.ok()) return host.status();
    return Status::Ok();
  };
  out["moves"] = json::array();
  for (size_t i = 0; i < moves.size(); ++i) {
    const PlannedMove& m = moves[i];
    progress.Phase(fmt::format("move {} of {}: {}", i + 1, moves.size(), MoveText(m)));
    source = m.from;
    MoveRecord request{plan_id, m.vm, m.from, m.to, out["leader"].get<std::string>()};
    auto outcome = leader_->lease() == 0
                       ? Result<MoveRecord>(Status::Error("this daemon no longer leads the fleet"))
                       : RunMoveThroughEtcd(etcd, request, leader_->lease(), wait);
    json row = MoveJson(m);
    if (!outcome.ok() || outcome->state != "done") {
      return Status::Error(
          StoppedText(plan_id, moves, i, outcome.ok() ? outcome->error : outcome.message()));
    }
    row["state"] = "done";
    row["result"] = outcome->result;
    out["moves"].push_back(std::move(row));
    progress.Bytes(i + 1, moves.size());
  }
  return out;
}

}  // namespace qosvisor::control
