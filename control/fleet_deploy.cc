// Fleet deploys through etcd: the host's assignment server, and the coordinator's deploy,
// rollback and undeploy.
#include "control/fleet_deploy.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

namespace qosvisor::control {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// The worker looks again this often without a watch event: a missed event costs no more.
constexpr auto kIdleLook = 1000ms;
constexpr auto kBusyLook = 100ms;
constexpr auto kWatchTimeout = 1000ms;

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool IsCreated(const std::string& state) {
  return state == "creating" || state == "running" || state == "ready";
}

}  // namespace

// ---- the host's side --------------------------------------------------------------------------

AssignServer::AssignServer(const config::Fleet& fleet, AssignedVmOps ops)
    : fleet_(fleet),
      ops_(std::move(ops)),
      etcd_(EtcdOptions{fleet.etcd}),
      watch_etcd_(EtcdOptions{fleet.etcd, kWatchTimeout}) {}

AssignServer::~AssignServer() { Stop(); }

void AssignServer::Start() {
  if (worker_.joinable()) return;
  stop_ = false;
  watcher_ = std::thread([this] { WatchLoop(); });
  worker_ = std::thread([this] { WorkLoop(); });
}

void AssignServer::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  if (worker_.joinable()) worker_.join();
}

size_t AssignServer::vms_made() const {
  std::lock_guard lock(mu_);
  return made_.size();
}

void AssignServer::Wake() {
  {
    std::lock_guard lock(mu_);
    changed_ = true;
  }
  wake_.notify_all();
}

void AssignServer::WatchLoop() {
  while (!stop_.load()) {
    // Returns only when stopping or when no endpoint answers (the worker says why).
    (void)watch_etcd_.Watch(
        AssignHostPrefix(fleet_.host), 0, [this](const EtcdWatchEvent&) { Wake(); }, stop_);
    std::unique_lock lock(mu_);
    wake_.wait_for(lock, kIdleLook, [this] { return stop_.load(); });
  }
}

void AssignServer::WorkLoop() {
  while (!stop_.load()) {
    auto busy = ReconcileOnce();
    if (!busy.ok() && busy.message() != last_error_) {
      spdlog::warn("fleet apps: cannot read this host's assignments: {}", busy.message());
    }
    last_error_ = busy.ok() ? "" : busy.message();
    std::unique_lock lock(mu_);
    wake_.wait_for(lock, busy.ok() && *busy ? kBusyLook : kIdleLook,
                   [this] { return stop_.load() || changed_; });
    changed_ = false;
  }
}

Result<bool> AssignServer::ReconcileOnce() {
  auto range = etcd_.RangePrefix(AssignHostPrefix(fleet_.host));
  if (!range.ok()) return range.status();
  bool waiting = false;
  for (const EtcdKeyValue& kv : range->kvs) {
    if (stop_.load()) return waiting;
    auto a = ParseAssignment(kv.value);
    if (!a.ok()) {
      // Said once per version of the key, not at every look.
      if (warned_.insert(fmt::format("{}@{}", kv.key, kv.mod_revision)).second) {
        spdlog::warn("fleet apps: ignoring the assignment {}: {}", kv.key, a.message());
      }
      continue;
    }
    waiting = Step(kv, std::move(a).value()) || waiting;
  }
  DestroyOrphans(range->kvs);
  return waiting;
}

bool AssignServer::Step(const EtcdKeyValue& kv, Assignment a) {
  if (a.host != fleet_.host || kv.key != AssignKey(fleet_.host, a.app, a.vm)) {
    if (a.state == "failed" || a.state == "destroyed") return false;
    const std::string read = kv.value;
    a.reason = fmt::format("the assignment {} names vm '{}' of app '{}' on host '{}'", kv.key, a.vm,
                           a.app, a.host);
    a.state = a.state == "destroying" ? "destroyed" : "failed";
    (void)Update(kv, read, a);
    return false;
  }
  bool mine = false;
  {
    std::lock_guard lock(mu_);
    auto it = made_.find(a.vm);
    mine = it != made_.end() && it->second.key == kv.key;
  }
  if (a.state == "requested") {
    Create(kv, std::move(a));
    return true;
  }
  if (a.state == "destroying") {
    Destroy(kv, std::move(a));
    return false;
  }
  if (IsCreated(a.state) && !mine) {
    const std::string read = kv.value;
    a.state = "failed";
    a.reason =
        fmt::format("vm '{}' is gone from host {} (its daemon restarted?)", a.vm, fleet_.host);
    (void)Update(kv, read, a);
    return false;
  }
  return a.state == "running" && CheckUp(kv, std::move(a));
}

void AssignServer::Create(const EtcdKeyValue& kv, Assignment a) {
  a.state = "creating";
  const std::string creating = Update(kv, kv.value, a);
  if (creating.empty()) return;  // the coordinator asked for something else meanwhile
  if (Status s = ops_.create(a); !s.ok()) {
    a.state = "failed";
    a.reason =
        fmt::format("host {}: vm '{}' could not be created: {}", fleet_.host, a.vm, s.message());
    spdlog::warn("fleet app {}: {}", a.app, a.reason);
    (void)Update(kv, creating, a);
    return;
  }
  {
    std::lock_guard lock(mu_);
    made_[a.vm] = Made{kv.key, a.app, Clock::now() + std::chrono::nanoseconds(a.ready_timeout_ns)};
  }
  spdlog::info("fleet app {}: vm {} created for tier {}", a.app, a.vm, a.tier);
  a.state = "running";
  a.created_ms = UnixMs();
  // Should this fail the key changed or went: the next look destroys the VM.
  (void)Update(kv, creating, a);
}

bool AssignServer::CheckUp(const EtcdKeyValue& kv, Assignment a) {
  const std::string read = kv.value;
  auto up = ops_.up(a);
  Clock::time_point deadline;
  {
    std::lock_guard lock(mu_);
    deadline = made_.at(a.vm).ready_deadline;
  }
  if (up.ok() && *up) {
    a.state = "ready";
    a.ready_ms = UnixMs();
    spdlog::info("fleet app {}: vm {} of tier {} up", a.app, a.vm, a.tier);
  } else if (!up.ok()) {
    a.state = "failed";
    a.reason = fmt::format("host {}: {}", fleet_.host, up.message());
  } else if (Clock::now() >= deadline) {
    a.state = "failed";
    a.reason = fmt::format("host {}: vm '{}' did not print '{}' on its serial line within {:.1f} s",
                           fleet_.host, a.vm, a.ready.value_or(""),
                           static_cast<double>(a.ready_timeout_ns) / 1e9);
  } else {
    return true;
  }
  if (a.state == "failed") spdlog::warn("fleet app {}: {}", a.app, a.reason);
  (void)Update(kv, read, a);
  return false;
}

void AssignServer::Destroy(const EtcdKeyValue& kv, Assignment a) {
  bool mine = false;
  {
    std::lock_guard lock(mu_);
    auto it = made_.find(a.vm);
    mine = it != made_.end() && it->second.key == kv.key;
  }
  if (mine) {
    if (Status s = ops_.destroy(a.vm); !s.ok()) {
      spdlog::warn("fleet app {}: vm '{}' could not be destroyed (trying again): {}", a.app, a.vm,
                   s.message());
      return;
    }
    std::lock_guard lock(mu_);
    made_.erase(a.vm);
  }
  spdlog::info("fleet app {}: vm {} destroyed{}", a.app, a.vm,
               mine ? "" : " (it had not been made here)");
  const std::string read = kv.value;
  a.state = "destroyed";
  // The coordinator tells what was destroyed from what never existed by the reason.
  a.reason = mine ? "" : "nothing had been made here";
  (void)Update(kv, read, a);
}

void AssignServer::DestroyOrphans(const std::vector<EtcdKeyValue>& present) {
  std::set<std::string> keys;
  for (const EtcdKeyValue& kv : present) keys.insert(kv.key);
  std::vector<std::pair<std::string, Made>> orphans;
  {
    std::lock_guard lock(mu_);
    for (const auto& [vm, made] : made_) {
      if (!keys.contains(made.key)) orphans.emplace_back(vm, made);
    }
  }
  for (const auto& [vm, made] : orphans) {
    if (Status s = ops_.destroy(vm); !s.ok()) {
      spdlog::warn(
          "fleet app {}: vm '{}', whose assignment is gone, could not be destroyed "
          "(trying again): {}",
          made.app, vm, s.message());
      continue;
    }
    spdlog::info(
        "fleet app {}: vm {} destroyed: its assignment {} is gone (the app's "
        "coordinator left or removed it)",
        made.app, vm, made.key);
    std::lock_guard lock(mu_);
    made_.erase(vm);
  }
}

std::string AssignServer::Update(const EtcdKeyValue& kv, const std::string& read,
                                 const Assignment& a) {
  const std::string value = AssignmentJson(a).dump();
  // Unchanged since read (same creation, same value): never over a coordinator's newer request,
  // never bringing back a key its lease took.
  auto written = etcd_.Txn(
      {EtcdCompare::CreateRevision(kv.key, kv.create_revision), EtcdCompare::Value(kv.key, read)},
      {EtcdOp::Put(kv.key, value, kv.lease)});
  if (!written.ok()) {
    spdlog::warn("fleet app {}: cannot write vm '{}' {}: {}", a.app, a.vm, a.state,
                 written.message());
    return "";
  }
  return *written ? value : "";
}

// ---- the coordinator's side -------------------------------------------------------------------

namespace {

struct Placed {
  std::string tier;
  std::string vm;
  std::string host;
  std::string Key(const std::string& app) const { return AssignKey(host, app, vm); }
  std::string Text() const { return fmt::format("{} (on {})", vm, host); }
};

std::vector<Placed> PlacedVms(const FleetApp& app) {
  std::vector<Placed> out;
  for (const FleetAppTier& t : app.tiers) {
    for (const FleetAppVm& vm : t.vms) out.push_back({t.name, vm.name, vm.host});
  }
  return out;
}

// One deploy's or undeploy's use of etcd under its lease.
class Coordinator {
 public:
  Coordinator(EtcdClient& etcd, std::string app, int64_t lease, const FleetDeployWait& wait)
      : etcd_(etcd), app_(std::move(app)), lease_(lease), wait_(wait) {}

  // Renews the lease when a third of its TTL went by; an error once it is lost.
  Status KeepLease() {
    const auto now = Clock::now();
    if (now - renewed_ < std::chrono::seconds(wait_.lease_ttl_s) / 3) return Status::Ok();
    auto ttl = etcd_.LeaseKeepAliveOnce(lease_);
    if (ttl.ok() && *ttl > 0) {
      renewed_ = now;
      return Status::Ok();
    }
    if (ttl.ok() || now - renewed_ >= std::chrono::seconds(wait_.lease_ttl_s)) {
      return Status::Error(fmt::format(
          "this box's lease on app {} in etcd ended{}: its keys are gone, and every host destroys "
          "what it made for it",
          app_, ttl.ok() ? "" : " (" + ttl.message() + ")"));
    }
    return Status::Ok();  // etcd did not answer this time; the lease may still hold
  }

  // Whether `host` is in the registry with a live daemon; true when the registry cannot be read
  // (a lost etcd shows in the lease instead).
  bool HostAlive(const std::string& host) {
    const auto now = Clock::now();
    if (now - hosts_read_ >= wait_.poll) {  // one read of the registry per look
      auto hosts = wait_.hosts();
      hosts_ok_ = hosts.ok();
      if (hosts.ok()) hosts_ = std::move(hosts).value();
      hosts_read_ = now;
    }
    return !hosts_ok_ || std::any_of(hosts_.begin(), hosts_.end(),
                                     [&](const FleetHost& h) { return h.name == host && h.alive; });
  }

  // The assignment now; nullopt when its key is gone.
  Result<std::optional<std::pair<EtcdKeyValue, Assignment>>> Read(const std::string& key) {
    using Found = std::optional<std::pair<EtcdKeyValue, Assignment>>;
    auto range = etcd_.Range(key);
    if (!range.ok()) return range.status();
    if (range->kvs.empty()) return Found();
    auto a = ParseAssignment(range->kvs.front().value);
    if (!a.ok()) return Status::Error(fmt::format("{}: {}", key, a.message()));
    return Found(std::pair{range->kvs.front(), std::move(a).value()});
  }

  // Asks the hosts to destroy `vms` one at a time, in the order given, and removes their keys.
  // Returns the VMs destroyed; `problems` gets what did not go as asked.
  std::vector<std::string> TearDown(const std::vector<Placed>& vms, std::string& problems) {
    std::vector<std::string> destroyed;
    for (const Placed& p : vms) {
      wait_.phase(fmt::format("destroying {}", p.Text()));
      const std::string key = p.Key(app_);
      auto read = Read(key);
      if (read.ok() && !*read) continue;  // never written, or already gone
      if (read.ok() && (*read)->second.state != "requested" && HostAlive(p.host)) {
        const Outcome outcome = DestroyOne(p, (*read)->first, (*read)->second);
        if (outcome == Outcome::kDestroyed) destroyed.push_back(p.Text());
        if (outcome == Outcome::kUnconfirmed) {
          problems += fmt::format(
              "; {} was not confirmed destroyed within {} s: its host destroys "
              "it once it sees its assignment gone",
              p.Text(), wait_.destroy.count() / 1000);
        }
      } else if (!read.ok()) {
        problems += fmt::format("; {}: {}", p.Text(), read.message());
      }
      if (auto gone = etcd_.DeleteRange(key); !gone.ok()) {
        problems +=
            fmt::format("; {} stays in etcd until this box's lease ends: {}", key, gone.message());
      }
    }
    return destroyed;
  }

  void Release() {
    (void)etcd_.DeleteRange(AppKey(app_));
    (void)etcd_.LeaseRevoke(lease_);
  }

 private:
  enum class Outcome { kDestroyed, kNothingMade, kUnconfirmed };

  // Writes "destroying" and waits for the host's "destroyed".
  Outcome DestroyOne(const Placed& p, const EtcdKeyValue& kv, Assignment a) {
    a.state = "destroying";
    auto asked = etcd_.Txn({EtcdCompare::CreateRevision(kv.key, kv.create_revision)},
                           {EtcdOp::Put(kv.key, AssignmentJson(a).dump(), kv.lease)});
    if (!asked.ok() || !*asked) return Outcome::kUnconfirmed;
    const auto deadline = Clock::now() + wait_.destroy;
    while (Clock::now() < deadline) {
      if (!KeepLease().ok()) return Outcome::kUnconfirmed;
      auto now = Read(kv.key);
      if (now.ok() && !*now) return Outcome::kDestroyed;
      if (now.ok() && (*now)->second.state == "destroyed") {
        return (*now)->second.reason.empty() ? Outcome::kDestroyed : Outcome::kNothingMade;
      }
      if (!HostAlive(p.host)) return Outcome::kDestroyed;  // its VMs went with its daemon
      std::this_thread::sleep_for(wait_.poll);
    }
    return Outcome::kUnconfirmed;
  }

  EtcdClient& etcd_;
  std::string app_;
  int64_t lease_;
  const FleetDeployWait& wait_;
  Clock::time_point renewed_ = Clock::now();
  std::vector<FleetHost> hosts_;
  bool hosts_ok_ = false;
  Clock::time_point hosts_read_{};
};

// A deploy under way: writes waves, waits for them, rolls back.
class Deploy {
 public:
  Deploy(EtcdClient& etcd, FleetApp app, int64_t lease, const FleetDeployWait& wait)
      : etcd_(etcd),
        app_(std::move(app)),
        lease_(lease),
        wait_(wait),
        coordinator_(etcd, app_.name, lease, wait) {}

  Result<json> Run() {
    for (uint32_t wave = 0; wave < app_.Waves(); ++wave) {
      if (Status s = StartWave(wave); !s.ok()) return s;
      if (Status s = WaitWave(wave); !s.ok()) return s;
    }
    if (Status s = Detach(); !s.ok()) return RollBack("", s.message());
    json hosts = json::object();
    std::vector<std::string> names;
    for (const Placed& p : PlacedVms(app_)) {
      hosts[p.vm] = p.host;
      names.push_back(p.vm);
    }
    wait_.phase("running");
    return json{
        {"app", app_.name}, {"blueprint", app_.blueprint}, {"vms", names}, {"hosts", hosts}};
  }

 private:
  Status StartWave(uint32_t wave) {
    for (const FleetAppTier& tier : app_.tiers) {
      if (tier.wave != wave) continue;
      for (const FleetAppVm& vm : tier.vms) {
        wait_.phase(fmt::format("tier {}: assigning {} to host {}", tier.name, vm.name, vm.host));
        const std::string key = AssignKey(vm.host, app_.name, vm.name);
        auto written = etcd_.Txn(
            {EtcdCompare::CreateRevision(key, 0)},
            {EtcdOp::Put(key, AssignmentJson(AssignmentOf(app_, tier, vm)).dump(), lease_)});
        if (!written.ok()) return RollBack(tier.name, written.message());
        if (!*written) {
          return RollBack(tier.name, fmt::format("{} exists already (a VM of an earlier app of "
                                                 "that name not yet cleaned up on {}?)",
                                                 key, vm.host));
        }
        written_.push_back({tier.name, vm.name, vm.host});
      }
    }
    return Status::Ok();
  }

  uint64_t LongestReadyNs(uint32_t wave) const {
    uint64_t ns = 0;
    for (const FleetAppTier& t : app_.tiers) {
      if (t.wave == wave) ns = std::max(ns, t.ready_timeout_ns);
    }
    return ns;
  }

  Status WaitWave(uint32_t wave) {
    const auto started = Clock::now();
    const auto deadline = started + std::chrono::nanoseconds(LongestReadyNs(wave)) + wait_.slack;
    for (;;) {
      if (Status s = wait_.still_valid(); !s.ok()) return RollBack("", s.message());
      if (Status s = coordinator_.KeepLease(); !s.ok()) return RollBack("", s.message());
      size_t ready = 0, total = 0;
      for (const Placed& p : written_) {
        if (TierWave(p.tier) != wave) continue;
        ++total;
        auto done = CheckVm(p, Clock::now() - started);
        if (!done.ok()) return RollBack(p.tier, done.message());
        ready += *done ? 1 : 0;
      }
      wait_.phase(
          fmt::format("wave {} of {}: {} of {} VMs ready", wave + 1, app_.Waves(), ready, total));
      if (ready == total) break;
      if (Clock::now() > deadline) {
        return RollBack(
            "", fmt::format(
                    "wave {} was not ready within {} s", wave + 1,
                    std::chrono::duration_cast<std::chrono::seconds>(deadline - started).count()));
      }
      std::this_thread::sleep_for(wait_.poll);
    }
    for (const FleetAppTier& t : app_.tiers) {
      if (t.wave != wave) continue;
      std::vector<std::string> where;
      for (const FleetAppVm& vm : t.vms) where.push_back(fmt::format("{} on {}", vm.name, vm.host));
      spdlog::info("app {}: tier {} up across the fleet ({})", app_.name, t.name,
                   fmt::join(where, ", "));
    }
    return Status::Ok();
  }

  uint32_t TierWave(const std::string& tier) const {
    for (const FleetAppTier& t : app_.tiers) {
      if (t.name == tier) return t.wave;
    }
    return 0;
  }

  // True once ready; an error naming the VM and its host once it cannot be.
  Result<bool> CheckVm(const Placed& p, Clock::duration waited) {
    auto read = coordinator_.Read(p.Key(app_.name));
    if (!read.ok()) return read.status();
    if (!*read) {
      return Status::Error(fmt::format("the assignment of {} vanished from etcd", p.Text()));
    }
    const Assignment& a = (*read)->second;
    if (a.state == "failed") return Status::Error(a.reason);
    if (!coordinator_.HostAlive(p.host)) {
      return Status::Error(
          fmt::format("host {} left the fleet registry while making {}", p.host, p.vm));
    }
    if (a.state == "requested" && waited > wait_.pickup) {
      return Status::Error(fmt::format(
          "host {} did not take up {} within {} s (is its daemon running, with the fleet apps "
          "server?)",
          p.host, p.vm, wait_.pickup.count() / 1000));
    }
    return a.state == "ready";
  }

  // The app outlives this box: the plan and its assignments without a lease.
  Status Detach() {
    app_.state = "running";
    std::vector<EtcdCompare> compare;
    std::vector<EtcdOp> puts{EtcdOp::Put(AppKey(app_.name), FleetAppJson(app_).dump())};
    for (const Placed& p : written_) {
      auto range = etcd_.Range(p.Key(app_.name));
      if (!range.ok()) return range.status();
      if (range->kvs.empty()) return Status::Error(p.Key(app_.name) + " vanished");
      const EtcdKeyValue& kv = range->kvs.front();
      compare.push_back(EtcdCompare::ModRevision(kv.key, kv.mod_revision));
      puts.push_back(EtcdOp::Put(kv.key, kv.value));
    }
    auto done = etcd_.Txn(compare, puts);
    if (!done.ok()) return done.status();
    if (!*done) return Status::Error("an assignment changed while the deploy finished");
    (void)etcd_.LeaseRevoke(lease_);
    return Status::Ok();
  }

  Status RollBack(const std::string& tier, const std::string& why) {
    wait_.phase(tier.empty() ? "rolling back" : fmt::format("tier {} failed: rolling back", tier));
    app_.state = "rolling-back";
    (void)etcd_.Put(AppKey(app_.name), FleetAppJson(app_).dump(), lease_);
    std::string problems;
    std::vector<Placed> newest_first(written_.rbegin(), written_.rend());
    const std::vector<std::string> destroyed = coordinator_.TearDown(newest_first, problems);
    coordinator_.Release();
    spdlog::warn("app {}: deploy failed ({}); rolled back across the fleet", app_.name, why);
    return Status::Error(
        fmt::format("deploy of {}: {}{}; rolled back: {}{}", app_.name,
                    tier.empty() ? "" : fmt::format("tier '{}' failed: ", tier), why,
                    destroyed.empty() ? std::string("nothing had been created")
                                      : fmt::format("destroyed {}", fmt::join(destroyed, ", ")),
                    problems));
  }

  EtcdClient& etcd_;
  FleetApp app_;
  int64_t lease_;
  const FleetDeployWait& wait_;
  Coordinator coordinator_;
  std::vector<Placed> written_;  // in creation order
};

}  // namespace

Result<int64_t> ClaimFleetApp(EtcdClient& etcd, const FleetApp& app, int64_t lease_ttl_s) {
  auto lease = etcd.LeaseGrant(lease_ttl_s);
  if (!lease.ok()) return lease.status();
  const std::string key = AppKey(app.name);
  auto created = etcd.Txn({EtcdCompare::CreateRevision(key, 0)},
                          {EtcdOp::Put(key, FleetAppJson(app).dump(), *lease)});
  if (created.ok() && *created) return lease;
  (void)etcd.LeaseRevoke(*lease);
  if (!created.ok()) return created.status();
  Status taken = CheckFleetAppNameFree(etcd, app.name);
  return taken.ok() ? Status::Error(
                          fmt::format("app '{}' was in the way for a moment; try again", app.name))
                    : taken;
}

Status CheckFleetAppNameFree(EtcdClient& etcd, const std::string& app) {
  auto range = etcd.Range(AppKey(app));
  if (!range.ok()) return range.status();
  if (range->kvs.empty()) return Status::Ok();
  auto other = ParseFleetApp(range->kvs.front().value);
  return Status::Error(fmt::format(
      "an app named '{}' exists already in the fleet{}; undeploy it or deploy with another --name",
      app,
      other.ok() ? fmt::format(" (blueprint {}, {}, coordinated by host {})", other->blueprint,
                               other->state, other->coordinator)
                 : ""));
}

Result<json> RunFleetDeploy(EtcdClient& etcd, FleetApp app, int64_t lease,
                            const FleetDeployWait& wait) {
  return Deploy(etcd, std::move(app), lease, wait).Run();
}

Result<FleetApp> ReadFleetApp(EtcdClient& etcd, const std::string& app) {
  const std::string key = AppKey(app);
  auto range = etcd.Range(key);
  if (!range.ok()) return range.status();
  if (range->kvs.empty()) {
    return Status::Error(fmt::format("no app named '{}' in the fleet (see qosctl apps)", app));
  }
  auto parsed = ParseFleetApp(range->kvs.front().value);
  if (!parsed.ok()) {
    return Status::Error(fmt::format("the fleet's record of app '{}' ({}) cannot be read: {}", app,
                                     key, parsed.message()));
  }
  return parsed;
}

Result<int64_t> ClaimFleetUndeploy(EtcdClient& etcd, const std::string& app,
                                   const std::string& coordinator, int64_t lease_ttl_s) {
  auto range = etcd.Range(AppKey(app));
  if (!range.ok()) return range.status();
  auto plan = ReadFleetApp(etcd, app);
  if (!plan.ok()) return plan.status();
  if (range->kvs.empty()) return Status::Error(fmt::format("app '{}' went away", app));
  if (plan->state != "running") {
    return Status::Error(
        fmt::format("app '{}' is {} (coordinated by host {}); wait for it to finish", app,
                    plan->state, plan->coordinator));
  }
  plan->state = "undeploying";
  plan->coordinator = coordinator;
  auto lease = etcd.LeaseGrant(lease_ttl_s);
  if (!lease.ok()) return lease.status();
  std::vector<EtcdCompare> compare{
      EtcdCompare::ModRevision(AppKey(app), range->kvs.front().mod_revision)};
  std::vector<EtcdOp> puts{EtcdOp::Put(AppKey(app), FleetAppJson(*plan).dump(), *lease)};
  for (const Placed& p : PlacedVms(*plan)) {
    auto kv = etcd.Range(p.Key(app));
    if (!kv.ok()) return kv.status();
    if (kv->kvs.empty()) continue;
    compare.push_back(EtcdCompare::ModRevision(kv->kvs.front().key, kv->kvs.front().mod_revision));
    puts.push_back(EtcdOp::Put(kv->kvs.front().key, kv->kvs.front().value, *lease));
  }
  auto claimed = etcd.Txn(compare, puts);
  if (claimed.ok() && *claimed) return lease;
  (void)etcd.LeaseRevoke(*lease);
  if (!claimed.ok()) return claimed.status();
  return Status::Error(fmt::format("app '{}' changed while its undeploy began; try again", app));
}

Result<json> RunFleetUndeploy(EtcdClient& etcd, const std::string& app, int64_t lease,
                              const FleetDeployWait& wait) {
  auto plan = ReadFleetApp(etcd, app);
  if (!plan.ok()) return plan.status();
  Coordinator coordinator(etcd, app, lease, wait);
  std::vector<Placed> vms = PlacedVms(*plan);
  std::reverse(vms.begin(), vms.end());
  std::string problems;
  const std::vector<std::string> destroyed = coordinator.TearDown(vms, problems);
  coordinator.Release();
  if (!problems.empty()) {
    return Status::Error(
        fmt::format("undeploy of {}: destroyed {}{}", app, fmt::join(destroyed, ", "), problems));
  }
  std::vector<std::string> names;
  for (const Placed& p : vms) names.push_back(p.vm);
  return json{{"app", app}, {"destroyed", names}};
}

Result<std::vector<FleetHost>> ReadFleetHosts(EtcdClient& etcd) {
  auto range = etcd.RangePrefix(std::string(FleetAgent::kHostsPrefix));
  if (!range.ok()) return range.status();
  std::vector<FleetHost> hosts;
  for (const EtcdKeyValue& kv : range->kvs) {
    if (auto host = ParseFleetHost(kv.value); host.ok()) {
      host->alive = kv.lease != 0;
      hosts.push_back(std::move(host).value());
    }
  }
  return hosts;
}

Result<json> FleetAppsJson(EtcdClient& etcd, const std::vector<FleetHost>& hosts) {
  auto plans = etcd.RangePrefix(std::string(kAppsPrefix));
  if (!plans.ok()) return plans.status();
  auto assigned = etcd.RangePrefix(std::string(kAssignPrefix));
  if (!assigned.ok()) return assigned.status();
  std::map<std::string, Assignment> by_key;
  for (const EtcdKeyValue& kv : assigned->kvs) {
    auto a = ParseAssignment(kv.value);
    if (a.ok()) {
      by_key[kv.key] = std::move(a).value();
    } else {
      spdlog::warn("apps: skipping the assignment {} in etcd: {}", kv.key, a.message());
    }
  }
  std::set<std::string> alive;
  for (const FleetHost& h : hosts) {
    if (h.alive) alive.insert(h.name);
  }
  json out = json::array();
  for (const EtcdKeyValue& kv : plans->kvs) {
    auto app = ParseFleetApp(kv.value);
    if (!app.ok()) {
      spdlog::warn("apps: skipping the app record {} in etcd: {}", kv.key, app.message());
      continue;
    }
    json tiers = json::array();
    for (const FleetAppTier& t : app->tiers) {
      json vms = json::array();
      for (const FleetAppVm& vm : t.vms) {
        auto it = by_key.find(AssignKey(vm.host, app->name, vm.name));
        json row = {{"name", vm.name},
                    {"host", vm.host},
                    {"host_alive", alive.contains(vm.host)},
                    {"state", it == by_key.end() ? "pending" : it->second.state}};
        if (it != by_key.end()) {
          row["reason"] = it->second.reason;
          row["created_ms"] = it->second.created_ms;
          row["ready_ms"] = it->second.ready_ms;
        }
        vms.push_back(row);
      }
      tiers.push_back({{"name", t.name}, {"wave", t.wave}, {"vms", vms}});
    }
    out.push_back({{"name", app->name},
                   {"blueprint", app->blueprint},
                   {"owner", app->owner},
                   {"owner_uid", app->owner_uid},
                   {"state", app->state},
                   {"coordinator", app->coordinator},
                   {"tiers", tiers}});
  }
  return out;
}

}  // namespace qosvisor::control
