// The appliance's object graph built from a validated Config: EAL, mempool, ports, and the
// control API. Building is all-or-nothing: on any error nothing stays started.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "control/fleet.h"
#include "control/vm_manager.h"
#include "dataplane/cpu_isolation.h"
#include "dataplane/eal.h"
#include "dataplane/mempool.h"
#include "dataplane/port.h"
#include "vswitch/switch.h"

namespace qosvisor::control {

class Apps;
class AssignServer;
class ControlServer;
class FleetAgent;
class LeaderElection;
class MoveServer;
struct FleetVm;
struct MoveWait;
struct PlannedMove;
class JobProgress;
class MigrationListener;
class PageTracker;
class Jobs;
struct Caller;
struct DeployPlan;
struct ReloadMember;
struct ReloadPlan;
class MetricsServer;
class VmManager;

struct ApplianceOptions {
  std::string config_path;         // shown by `status`
  std::string socket_override;     // non-empty: listen here instead of control.socket
  std::string vm_log_dir;          // VM serial logs; default: the control socket's directory
  std::string file_prefix_suffix;  // appended to dataplane.file_prefix (tests run in parallel)
};

class Appliance {
 public:
  static Result<std::unique_ptr<Appliance>> Build(const config::Config& config,
                                                  const ApplianceOptions& options);
  ~Appliance();

  // Serves the control socket until Stop() (from a handler or a signal) or until the deadline.
  void Run(uint64_t duration_ns);
  void Stop() { stop_.store(true, std::memory_order_relaxed); }
  // Async-signal-safe (SIGHUP): the serving loop reloads the configuration file at its next turn.
  void RequestReload() { reload_requested_.store(true, std::memory_order_relaxed); }
  // Reads the configuration file again and applies what changed (see reload.h); with dry_run
  // only says what would change. Control thread.
  Result<nlohmann::json> Reload(bool dry_run);

  nlohmann::json StatusJson() const;
  nlohmann::json PortsJson() const;
  // Switch counters and, per uplink, per-class scheduler statistics; an error when a data-plane
  // lcore does not answer in time.
  Result<nlohmann::json> StatsJson();
  // The Prometheus text exposition of status, ports, stats and VMs (metrics.h).
  std::string MetricsText();
  // Starts/stops the data-plane lcore loop (Run starts it; the destructor stops it).
  void StartDataplane();
  void StopDataplane();
  // Stops the VMs and the data plane and frees the switch and the ports, which return every
  // mbuf they hold. Returns how many mbufs did not come back to the pool (0 unless one leaked).
  // The destructor calls it too; afterwards only the destructor may follow.
  uint32_t TearDown();
  uint32_t pool_capacity() const { return pool_->capacity(); }
  vswitch::Switch& network_switch() { return *switch_; }
  rte_mempool* pool() const { return pool_->get(); }
  const std::vector<std::string>& startup_log() const { return startup_log_; }
  dataplane::Port* FindPort(const std::string& name) const;
  const std::string& socket_path() const;

 private:
  Appliance() = default;
  Status Start(const config::Config& config, const ApplianceOptions& options);
  void RegisterCommands();
  void RegisterVmCommands();
  void RegisterSwitchCommands();
  Result<nlohmann::json> BridgesJson();
  Result<nlohmann::json> FlowsCommand(const nlohmann::json& args);
  Result<nlohmann::json> ClassesJson();
  Result<nlohmann::json> FdbJson(const std::string& bridge);
  // `uplinks`: per uplink (args "uplink": one port) its queue, drops, waits, the "top" messages
  // holding the backlog and the spread of queued ranks (appliance_uplinks.cc).
  Result<nlohmann::json> UplinksJson(const nlohmann::json& args);
  nlohmann::json UplinkJson(size_t uplink, const vswitch::Switch::Snapshot& snap,
                            uint32_t top) const;
  Result<nlohmann::json> CaptureCommand(const nlohmann::json& args);
  // The switch calls VmManager makes, serialized: they may come from job threads.
  SwitchAccess MakeSwitchAccess();
  Result<vswitch::PortJoin> AttachmentOf(const std::string& port) const;
  Result<nlohmann::json> VmJob(const nlohmann::json& args, const std::string& name,
                               const std::string& action);
  Result<nlohmann::json> VmCreate(const nlohmann::json& args, const std::string& name,
                                  const Caller& caller);
  // Refuses destroying another user's VM (unless privileged) or one VM of an app.
  Status MayDestroy(const std::string& name, const Caller& caller);
  // Blueprints: deploy, undeploy, apps; and the caller's quotas (appliance_apps.cc).
  void RegisterAppCommands();
  Result<nlohmann::json> DeployCommand(const nlohmann::json& args, const Caller& caller);
  Result<nlohmann::json> QuotaJson(const Caller& caller);
  // What every VM is charged to quotas, with the VMs deploys under way have yet to make.
  std::vector<QuotaCharge> QuotaInUse();
  // The owner of VMs `caller` asks for: privileged callers are charged to no quota, others to
  // every quota that binds them, once `asked` fits all of them.
  Result<VmOwner> OwnerFor(const Caller& caller, const std::vector<VmDemand>& asked);
  // Blueprints across the fleet (appliance_fleet_apps.cc): the server that makes what deploys
  // assign to this box, and deploy, undeploy and apps on a box with fleet:.
  void StartAssignServer(const config::Config& config);
  Result<nlohmann::json> FleetDeploy(const DeployPlan& plan, const VmOwner& owner,
                                     const std::vector<VmDemand>& demands);
  Result<nlohmann::json> FleetUndeploy(const std::string& app, const Caller& caller);
  Result<nlohmann::json> FleetAppsList();
  std::unique_ptr<AssignServer> assign_server_;

  std::string config_path_;
  std::unique_ptr<dataplane::Eal> eal_;
  std::unique_ptr<dataplane::CpuIsolation> isolation_;  // dataplane.isolate; undone at exit
  std::unique_ptr<dataplane::Mempool> pool_;
  std::vector<std::unique_ptr<dataplane::Port>> ports_;
  std::unique_ptr<vswitch::Switch> switch_;
  std::unique_ptr<VmManager> vms_;
  std::unique_ptr<Jobs> jobs_;
  std::unique_ptr<Apps> apps_;
  std::unique_ptr<MetricsServer> metrics_;
  std::mutex stats_mu_;       // one statistics request to the workers at a time (control, metrics)
  vswitch::SwitchSpec spec_;  // as built, for the attachment of configured ports
  config::Config config_;     // as loaded
  uint32_t next_flow_cookie_ = 1u << 16;  // rules added live (configured ones: their index)
  std::mutex switch_control_mu_;
  std::unique_ptr<ControlServer> server_;
  struct LcoreArg;
  static int LcoreMain(void* arg);
  std::atomic<bool> lcore_stop_{false};
  std::atomic<bool> lcore_running_{false};
  std::vector<std::unique_ptr<LcoreArg>> lcore_args_;
  std::vector<unsigned> launched_lcores_;
  std::vector<std::string> startup_log_;
  std::vector<std::string> uplink_ports_;
  std::vector<std::vector<std::string>> uplink_class_names_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> reload_requested_{false};
  // Applies a plan's live part; the running configuration becomes `next`.
  Status ApplyReload(const config::Config& next, const ReloadPlan& plan);
  Status AddConfiguredPort(const config::Config& next, const std::string& name);
  Status RemoveConfiguredPort(const std::string& name);
  Status ApplyVlan(const config::Config& next, const ReloadMember& member);
  Status RebuildUplink(const config::Config& next, const vswitch::SwitchSpec& spec,
                       const std::string& port);
  // Live migration (appliance_migrate.cc): the listener VMs arrive at, and the migrate job.
  struct MigrationTarget {
    std::string name;     // as the user gave it
    std::string address;  // host:port of its migration listener
  };
  Status IsolateWorkers();
  Status StartMigrationListener(const config::Config& config);
  // Pre-migration (appliance_premigrate.cc).
  Result<MigrationTarget> ResolveListener(const std::string& dest);
  Result<nlohmann::json> PremigrateCommand(const nlohmann::json& args, const std::string& name);
  void DropUnusedImages();
  void RegisterImageCommands();
  static Result<hv::MigrationKey> LoadMigrationKeyOf(const config::Config& config);
  // Ok, or why the fleet budget this box offers leaves no room for `demand`.
  Status AdmitIncoming(const std::optional<config::Fleet>& fleet, const VmDemand& demand);
  // Where `dest` listens, refusing a fleet host without the budget for `vm`.
  Result<MigrationTarget> ResolveDestination(const std::string& dest, const hv::VmOptions& vm);
  Result<nlohmann::json> MigrateCommand(const nlohmann::json& args, const std::string& name);
  nlohmann::json MigrationStatusJson() const;
  // What this box carries now: VMs, their vCPUs and memory, the uplinks' load.
  FleetLoad CurrentLoad();
  // The fleet registry (appliance_fleet.cc): this box's agent, made when the configuration has
  // fleet:, the `hosts` command, and the fleet object of `status` (null without fleet:).
  Status StartFleet(const config::Config& config);
  uint64_t UplinkSentBytes();
  Result<nlohmann::json> HostsJson();
  nlohmann::json FleetStatusJson() const;
  // Placement and rebalancing (appliance_rebalance.cc): the leader election, the server for the
  // moves a leader asks of this box, `place` and `rebalance`.
  void StartFleetPlanning(const config::Config& config);
  void StopFleetPlanning();
  void RegisterFleetCommands();
  Result<nlohmann::json> PlaceCommand(const nlohmann::json& args);
  Result<nlohmann::json> RebalanceCommand(const nlohmann::json& args);
  Result<nlohmann::json> ExecutePlan(const std::string& plan_id,
                                     const std::vector<PlannedMove>& moves, MoveWait wait,
                                     const std::vector<std::string>& endpoints,
                                     nlohmann::json out, JobProgress& progress);
  // The VMs this box publishes for the planner; `send_rate` turns a VM's count of bytes sent
  // into bits per second. The registry agent's thread.
  using SendRate = std::function<uint64_t(const std::string& vm, uint64_t bytes)>;
  std::vector<FleetVm> FleetVms(const std::vector<config::AntiAffinityGroup>& groups,
                                const SendRate& send_rate);
  // Migrating for a leader's plan, from the move server's thread: the destination from the
  // registry, the key and tuning as loaded; waits for the job.
  Result<nlohmann::json> MigrateForFleet(const std::string& vm, const std::string& to,
                                         const Result<hv::MigrationKey>& key,
                                         const config::Migration& migration);
  Result<MigrationTarget> FleetTarget(const FleetHost& host, const hv::VmOptions& vm);
  uint64_t StartMigrateJob(const std::string& vm, const MigrationTarget& target,
                           const hv::MigrationKey& key, const hv::MigrationTuning& tuning);
  std::unique_ptr<LeaderElection> leader_;
  std::unique_ptr<MoveServer> move_server_;
  std::atomic<bool> planning_stopped_{false};
  std::unique_ptr<FleetAgent> fleet_;
  std::unique_ptr<MigrationListener> migration_listener_;
  std::unique_ptr<PageTracker> page_tracker_;
  bool vms_started_ = false;
  uint64_t started_ns_ = 0;
};

// Mapping of config enums onto the data plane's (kept here: config/ and dataplane/ are siblings).
dataplane::Driver ToDataplane(config::Driver driver);
dataplane::Hugepages ToDataplane(config::Hugepages hugepages);
dataplane::PortOptions PortOptionsFrom(const config::Port& port);
// How the port `name` of `config` joins its bridge (VLAN settings, the class of its VM NIC);
// PortJoin::port left empty.
Result<vswitch::PortJoin> AttachmentIn(const config::Config& config, const std::string& name);
// A job's progress as the VM operations report it.
OperationProgress ProgressOf(JobProgress& job);

}  // namespace qosvisor::control
