// Builds and runs the appliance from a Config; answers status/ports/stop on the control socket.
#include "control/appliance.h"

#include <fmt/format.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdio>
#include <filesystem>

#include "common/tsan.h"
#include "common/tsc.h"
#include "common/units.h"
#include "control/apps.h"
#include "control/control_server.h"
#include "control/fleet_deploy.h"
#include "control/fleet_leader.h"
#include "control/fleet_moves.h"
#include "control/jobs.h"
#include "control/migration_listener.h"
#include "control/metrics.h"
#include "control/page_tracker.h"
#include "control/switch_builder.h"
#include "control/vm_manager.h"

namespace qosvisor::control {
namespace {

using nlohmann::json;

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

dataplane::PortOptions PortOptionsFrom(const config::Port& port) {
  dataplane::PortOptions o;
  o.name = port.name;
  o.driver = ToDataplane(port.driver);
  o.args = port.args;
  if (port.mac) o.mac = port.mac->bytes;
  return o;
}

dataplane::Driver ToDataplane(config::Driver d) {
  switch (d) {
    case config::Driver::kRing:
      return dataplane::Driver::kRing;
    case config::Driver::kNull:
      return dataplane::Driver::kNull;
    case config::Driver::kTap:
      return dataplane::Driver::kTap;
    case config::Driver::kAfPacket:
      return dataplane::Driver::kAfPacket;
    case config::Driver::kAfXdp:
      return dataplane::Driver::kAfXdp;
    case config::Driver::kMemif:
      return dataplane::Driver::kMemif;
    case config::Driver::kVhostUser:
      return dataplane::Driver::kVhostUser;
    case config::Driver::kPcap:
      return dataplane::Driver::kPcap;
    case config::Driver::kVm:
      return dataplane::Driver::kVm;
  }
  return dataplane::Driver::kRing;
}

dataplane::Hugepages ToDataplane(config::Hugepages h) {
  switch (h) {
    case config::Hugepages::kAuto:
      return dataplane::Hugepages::kAuto;
    case config::Hugepages::kOn:
      return dataplane::Hugepages::kOn;
    case config::Hugepages::kOff:
      return dataplane::Hugepages::kOff;
  }
  return dataplane::Hugepages::kAuto;
}

Result<std::unique_ptr<Appliance>> Appliance::Build(const config::Config& config,
                                                    const ApplianceOptions& options) {
  std::unique_ptr<Appliance> appliance(new Appliance());
  // On failure the half-built appliance is destroyed here, which stops whatever did start.
  if (Status s = appliance->Start(config, options); !s.ok()) return s;
  return appliance;
}

Status Appliance::Start(const config::Config& config, const ApplianceOptions& options) {
  config_path_ = options.config_path;
  started_ns_ = NowNs();
  // The control socket first: a second instance must fail before it touches the data plane.
  const std::string socket =
      options.socket_override.empty() ? config.control.socket : options.socket_override;
  auto server = ControlServer::Listen(socket, ListenOptions{config.control.group});
  if (!server.ok()) return server.status();
  server_ = std::move(server).value();

  dataplane::EalOptions eal;
  eal.dataplane_lcores = config.dataplane.lcores;
  eal.memory_bytes = config.dataplane.memory_bytes;
  eal.hugepages = ToDataplane(config.dataplane.hugepages);
  eal.file_prefix = config.dataplane.file_prefix + options.file_prefix_suffix;
  auto started = dataplane::Eal::Start(eal);
  if (!started.ok()) return started.status();
  eal_ = std::move(started).value();
  startup_log_.push_back(fmt::format(
      "EAL up: {} data-plane lcore(s), {} memory, hugepages {}", eal_->WorkerLcores().size(),
      FormatSize(config.dataplane.memory_bytes), eal_->hugepages() ? "on" : "off (--no-huge)"));
  if (config.dataplane.isolate) {
    if (Status s = IsolateWorkers(); !s.ok()) return s;
  }

  auto pool = dataplane::Mempool::Create("qv_pool", config.dataplane.mbufs);
  if (!pool.ok()) return pool.status();
  pool_ = std::move(pool).value();
  startup_log_.push_back(fmt::format("mempool: {} mbufs", pool_->capacity()));

  for (const config::Port& p : config.ports) {
    auto port = dataplane::CreatePort(PortOptionsFrom(p), *pool_);
    if (!port.ok()) return port.status();
    startup_log_.push_back(fmt::format("port {} ({}): link {}", p.name, config::ToString(p.driver),
                                       (*port)->LinkUp() ? "up" : "down"));
    ports_.push_back(std::move(port).value());
  }
  auto spec = BuildSwitchSpec(config);
  if (!spec.ok()) return spec.status();
  spec->workers = static_cast<uint16_t>(std::max<size_t>(eal_->WorkerLcores().size(), 1));
  for (const auto& port : ports_) spec->ports.push_back(port.get());
  spec->spare_ports = static_cast<uint16_t>(config.dataplane.spare_ports);
  spec_ = *spec;
  config_ = config;
  auto sw = vswitch::Switch::Create(*spec, pool_->get());
  if (!sw.ok()) return sw.status();
  switch_ = std::move(sw).value();
  for (const vswitch::BridgeSpec& b : spec->bridges) {
    startup_log_.push_back(fmt::format("bridge {}: {} ports, {} flow rules (+ default NORMAL)",
                                       b.name, b.members.size(), b.flows.size()));
  }
  for (const vswitch::UplinkSpec& u : spec->uplinks) {
    uplink_ports_.push_back(ports_[u.port]->name());
    uplink_class_names_.emplace_back();
    for (const auto& c : u.scheduler.classes) uplink_class_names_.back().push_back(c.name);
    std::string classes;
    for (const auto& c : u.scheduler.classes) {
      classes +=
          fmt::format("{}{}={}", classes.empty() ? "" : ", ", c.name, sched::PolicyName(c.policy));
    }
    startup_log_.push_back(fmt::format("uplink {}: line {}, paced at {}, buffer {}, classes: {}",
                                       ports_[u.port]->name(), FormatRate(u.scheduler.rate_bps),
                                       FormatRate(u.scheduler.pacing_bps),
                                       FormatSize(u.scheduler.buffer_bytes), classes));
  }
  {
    // Even with no VMs configured: snapshots may be restored into a box that had none.
    const std::string log_dir = options.vm_log_dir.empty()
                                    ? std::filesystem::path(server_->path()).parent_path().string()
                                    : options.vm_log_dir;
    auto vms = VmManager::Create(config, MakeSwitchAccess(), pool_->get(), log_dir);
    if (!vms.ok()) return vms.status();
    vms_ = std::move(vms).value();
  }
  jobs_ = std::make_unique<Jobs>();
  page_tracker_ = std::make_unique<PageTracker>(*vms_, config.guest_memory);
  page_tracker_->Start();
  if (Status s = StartMigrationListener(config); !s.ok()) return s;
  if (migration_listener_) {
    startup_log_.push_back(fmt::format("migration: listening on {}", config.migration.listen));
  }
  RegisterCommands();
  if (config.control.metrics) {
    auto metrics = MetricsServer::Start(*config.control.metrics, [this] { return MetricsText(); });
    if (!metrics.ok()) return metrics.status();
    metrics_ = std::move(metrics).value();
    startup_log_.push_back(fmt::format("metrics: http://{}/metrics", *config.control.metrics));
  }
  // Last: the box registers in the fleet once everything it reports on exists.
  if (Status s = StartFleet(config); !s.ok()) return s;
  startup_log_.push_back(fmt::format("control socket: {}", server_->path()));
  return Status::Ok();
}

// The workers' CPUs, as the EAL pinned their lcores, are kept for them.
Status Appliance::IsolateWorkers() {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  for (unsigned lcore : eal_->WorkerLcores()) {
    const rte_cpuset_t lcore_cpus = rte_lcore_cpuset(lcore);
    CPU_OR(&cpus, &cpus, &lcore_cpus);
  }
  auto isolation = dataplane::CpuIsolation::Start(cpus);
  if (!isolation.ok()) return Status::Error("dataplane." + isolation.status().message());
  isolation_ = std::move(isolation).value();
  startup_log_.push_back("isolated " + isolation_->Describe());
  return Status::Ok();
}

Appliance::~Appliance() {
  TearDown();
  isolation_.reset();  // once the workers have stopped
  pool_.reset();
  server_.reset();
  eal_.reset();
}

uint32_t Appliance::TearDown() {
  StopFleetPlanning();  // first: the lead goes to another box, a move under way ends here
  fleet_.reset();    // the box leaves the fleet registry at once (its lease is revoked)
  metrics_.reset();  // no scrape may reach what goes next
  migration_listener_.reset();  // an incoming VM not yet committed is cut off and removed
  if (apps_) apps_->Stop();  // deploys waiting for a guest give up and roll back
  page_tracker_.reset();  // before the VMs it harvests
  jobs_.reset();     // running jobs finish first: they use the VMs, the apps and the switch
  assign_server_.reset();  // after the jobs (a deploy's rollback has it destroy), before the VMs
  apps_.reset();
  vms_.reset();      // NICs detached from their ports (and let go by the lcores), then the VMs stop
  StopDataplane();
  switch_.reset();  // queued packets go back to the pool
  ports_.clear();   // ports return their mbufs before the pool goes
  return pool_ ? pool_->capacity() - pool_->available() : 0;
}

void Appliance::RegisterCommands() {
  server_->Register("status", [this](const json&) -> Result<json> { return StatusJson(); });
  server_->Register("ports", [this](const json&) -> Result<json> { return PortsJson(); });
  server_->Register("stats", [this](const json&) -> Result<json> { return StatsJson(); });
  server_->Register("hosts", [this](const json&) { return HostsJson(); });
  server_->Register("vms", [this](const json&) -> Result<json> {
    return vms_ ? vms_->ListJson() : json::array();
  });
  RegisterVmCommands();
  RegisterImageCommands();
  RegisterSwitchCommands();
  RegisterAppCommands();
  RegisterFleetCommands();
  server_->Register("stop", [this](const json&) -> Result<json> {
    Stop();
    return json{{"stopping", true}};
  });
}

void Appliance::Run(uint64_t duration_ns) {
  StartDataplane();
  if (vms_ && !vms_started_) {
    vms_started_ = true;
    std::vector<std::string> log;
    Status s = vms_->StartAutostart(log);
    for (const std::string& line : log) spdlog::info("{}", line);
    if (!s.ok()) spdlog::error("{}", s.message());
  }
  // systemd (Type=notify): the switch forwards and the control socket is about to answer.
  sd_notify(0, "READY=1\nSTATUS=switching");
  const uint64_t deadline = duration_ns == 0 ? UINT64_MAX : NowNs() + duration_ns;
  uint64_t next_housekeeping = 0;
  while (!stop_.load(std::memory_order_relaxed) && NowNs() < deadline) {
    server_->ServeOnce(100);
    if (NowNs() >= next_housekeeping) {
      DropUnusedImages();  // pre-migrated images whose family has left this box
      next_housekeeping = NowNs() + 1'000'000'000ull;
    }
    if (reload_requested_.exchange(false)) {
      sd_notify(0, "RELOADING=1");
      auto reloaded = Reload(/*dry_run=*/false);  // logs what it did or why it did not
      sd_notify(0, reloaded.ok() ? "READY=1\nSTATUS=reloaded" : "READY=1\nSTATUS=reload refused");
    }
  }
}

struct Appliance::LcoreArg {
  Appliance* self;
  uint16_t worker;
};

int Appliance::LcoreMain(void* arg) {
  const auto* a = static_cast<const LcoreArg*>(arg);
  TsanAcquire(a);  // handed over through EAL's launch, which TSan cannot see
  a->self->switch_->RunWorker(a->worker, a->self->lcore_stop_);
  return 0;
}

// One switch worker per data-plane lcore.
void Appliance::StartDataplane() {
  if (lcore_running_) return;
  const std::vector<unsigned> lcores = eal_->WorkerLcores();
  if (lcores.empty()) return;  // callers poll the switch themselves (tests)
  lcore_stop_ = false;
  lcore_args_.clear();
  for (uint16_t w = 0; w < switch_->workers() && w < lcores.size(); ++w) {
    lcore_args_.push_back(std::make_unique<LcoreArg>(LcoreArg{this, w}));
  }
  for (size_t i = 0; i < lcore_args_.size(); ++i) {
    TsanRelease(lcore_args_[i].get());
    if (rte_eal_remote_launch(&Appliance::LcoreMain, lcore_args_[i].get(), lcores[i]) != 0) {
      StopDataplane();
      return;
    }
    launched_lcores_.push_back(lcores[i]);
  }
  lcore_running_ = true;
}

void Appliance::StopDataplane() {
  lcore_stop_ = true;
  for (unsigned lcore : launched_lcores_) rte_eal_wait_lcore(lcore);
  launched_lcores_.clear();
  lcore_running_ = false;
}

Result<json> Appliance::StatsJson() {
  std::lock_guard lock(stats_mu_);
  auto taken = switch_->TakeSnapshot(lcore_running_);
  if (!taken.ok()) return taken.status();
  const vswitch::Switch::Snapshot& snap = *taken;
  const vswitch::SwitchCounters& c = snap.counters;
  json out;
  out["switch"] = {{"rx_packets", c.rx_packets},
                   {"malformed", c.malformed},
                   {"truncated", c.truncated},
                   {"vlan_dropped", c.vlan_dropped},
                   {"no_bridge", c.no_bridge},
                   {"flow_dropped", c.flow_dropped},
                   {"flooded", c.flooded},
                   {"copy_failed", c.copy_failed},
                   {"tx_dropped", c.tx_dropped},
                   {"sched_dropped", c.sched_dropped},
                   {"flow_cache_hits", c.flow_cache_hits},
                   {"flow_cache_misses", c.flow_cache_misses},
                   {"ebpf_runs", c.ebpf_runs},
                   {"ebpf_reclassified", c.ebpf_reclassified},
                   {"ebpf_unknown_queue", c.ebpf_unknown_queue},
                   {"handoff_dropped", c.handoff_dropped},
                   {"poll_gaps_over_100us", c.poll_gaps_over_100us},
                   {"poll_gaps_over_1ms", c.poll_gaps_over_1ms},
                   {"longest_poll_gap_us", c.longest_poll_gap_ns / 1000}};
  // Upper bounds of the classes' wait buckets (wait_counts), the last one open.
  const double hz = static_cast<double>(TscHz());
  json bounds = json::array();
  for (int b = 0; b + 1 < sched::kSojournBuckets; ++b) {
    bounds.push_back(static_cast<double>(uint64_t{1} << (b + sched::kSojournShift)) / hz);
  }
  out["wait_bucket_le_seconds"] = bounds;
  json bridges = json::array();
  for (size_t b = 0; b < snap.learned_macs.size(); ++b) {
    bridges.push_back(
        json{{"name", switch_->bridge_names()[b]}, {"learned_macs", snap.learned_macs[b]}});
  }
  out["bridges"] = bridges;
  json uplinks = json::array();
  for (size_t u = 0; u < snap.uplinks.size(); ++u) {
    const sched::SchedulerStats& st = snap.uplinks[u];
    json classes = json::array();
    for (size_t i = 0; i < st.classes.size(); ++i) {
      const sched::ClassStats& cs = st.classes[i];
      classes.push_back({{"class", i < uplink_class_names_[u].size() ? uplink_class_names_[u][i]
                                                                      : fmt::format("class{}", i)},
                         {"enqueued_packets", cs.enqueued_packets},
                         {"enqueued_bytes", cs.enqueued_bytes},
                         {"dequeued_packets", cs.dequeued_packets},
                         {"dequeued_bytes", cs.dequeued_bytes},
                         {"dropped_packets", cs.dropped_packets()},
                         {"dropped_worst", cs.dropped_worst},
                         {"dropped_tail", cs.dropped_tail},
                         {"dropped_message_limit", cs.dropped_message_limit},
                         {"table_full_fallback", cs.table_full_fallback},
                         {"probe_limit_fallback", cs.probe_limit_fallback},
                         {"queued_packets", cs.queued_packets},
                         {"queued_bytes", cs.queued_bytes},
                         {"wait_counts", cs.sojourn},
                         {"wait_sum_seconds", static_cast<double>(cs.sojourn_cycles) / hz}});
    }
    const sched::SchedulerConfig& sc = spec_.uplinks[u].scheduler;
    uplinks.push_back({{"port", uplink_ports_[u]},
                       {"rate_bytes_per_second", sc.rate_bps / 8},
                       {"pacing_bytes_per_second", sc.pacing_bps / 8},
                       {"max_messages", sc.max_messages},
                       {"live_messages", st.live_messages},
                       {"idle_burst_packets", st.idle_burst_packets},
                       {"dropped_reconfigured", st.dropped_reconfigured},
                       {"queued_packets", st.total.queued_packets},
                       {"classes", classes}});
  }
  out["uplinks"] = uplinks;
  return out;
}

std::string Appliance::MetricsText() {
  MetricsInput in;
  in.status = StatusJson();
  in.ports = PortsJson();
  auto stats = StatsJson();
  if (stats.ok()) in.stats = std::move(stats).value();  // else the exposition says so
  in.vms = vms_ ? vms_->ListJson() : json::array();
  return RenderMetrics(in);
}

json Appliance::StatusJson() const {
  return json{{"config", config_path_},
              {"uptime_s", static_cast<double>(NowNs() - started_ns_) / 1e9},
              {"eal_args", eal_->args()},
              {"hugepages", eal_->hugepages()},
              {"mbufs_total", pool_->capacity()},
              {"mbufs_free", pool_->available()},
              {"ports", ports_.size()},
              {"fleet", FleetStatusJson()},
              {"migration", MigrationStatusJson()}};
}

json Appliance::PortsJson() const {
  json out = json::array();
  auto row = [&out](const dataplane::Port* port) {
    const dataplane::PortCounters c = port->Counters();
    out.push_back({{"name", port->name()},
                   {"driver", dataplane::DriverName(port->driver())},
                   {"link", port->LinkUp() ? "up" : "down"},
                   {"rx_packets", c.rx_packets},
                   {"rx_bytes", c.rx_bytes},
                   {"tx_packets", c.tx_packets},
                   {"tx_bytes", c.tx_bytes},
                   {"rx_missed", c.rx_missed},
                   {"rx_errors", c.rx_errors},
                   {"tx_errors", c.tx_errors}});
  };
  for (const auto& port : ports_) row(port.get());
  // Ports of VMs restored or forked while running, under the manager's lock so none goes away.
  if (vms_) vms_->ForEachOwnPort(row);
  return out;
}

dataplane::Port* Appliance::FindPort(const std::string& name) const {
  for (const auto& port : ports_) {
    if (port->name() == name) return port.get();
  }
  return nullptr;
}

const std::string& Appliance::socket_path() const { return server_->path(); }

}  // namespace qosvisor::control
