// The fleet agent's loop (register, keep the lease alive, publish, start again after a failure)
// and the host record's JSON.
#include "control/fleet.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

namespace qosvisor::control {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kFirstRetry = std::chrono::milliseconds(100);
constexpr auto kLongestRetry = std::chrono::milliseconds(1000);

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string NewInstanceId() {
  std::random_device random;
  const uint64_t id = (static_cast<uint64_t>(random()) << 32) ^ random();
  return fmt::format("{:016x}", id);
}

json LoadJson(const FleetLoad& l) {
  return {{"vms", l.vms},
          {"vcpus", l.vcpus},
          {"memory_bytes", l.memory_bytes},
          {"uplink_bps", l.uplink_bps}};
}

// A field of a record another daemon wrote: present and of the expected type, or an error.
template <typename T>
Result<T> Field(const json& object, const char* path, const char* key) {
  auto it = object.find(key);
  const bool fits = it != object.end() && (std::is_same_v<T, std::string> ? it->is_string()
                                           : std::is_integral_v<T> ? it->is_number_unsigned()
                                                                   : false);
  if (!fits) {
    return Status::Error(fmt::format("{}{} is missing or not {}", path, key,
                                     std::is_same_v<T, std::string> ? "a string"
                                                                    : "a non-negative integer"));
  }
  if constexpr (std::is_integral_v<T>) {
    if (it->get<uint64_t>() > std::numeric_limits<T>::max()) {
      return Status::Error(fmt::format("{}{} is out of range", path, key));
    }
  }
  return it->get<T>();
}

json VmJson(const FleetVm& vm) {
  return {{"name", vm.name},
          {"vcpus", vm.vcpus},
          {"memory_bytes", vm.memory_bytes},
          {"uplink_bps", vm.uplink_bps},
          {"changed_pages", vm.changed_pages},
          {"pages_per_second", vm.pages_per_second},
          {"groups", vm.groups},
          {"state", vm.state}};
}

Result<FleetVm> ParseFleetVm(const json& j, const std::string& path) {
  if (!j.is_object()) return Status::Error(fmt::format("{} is not an object", path));
  const std::string dot = path + ".";
  auto name = Field<std::string>(j, dot.c_str(), "name");
  auto vcpus = Field<uint32_t>(j, dot.c_str(), "vcpus");
  auto memory = Field<uint64_t>(j, dot.c_str(), "memory_bytes");
  auto uplink = Field<uint64_t>(j, dot.c_str(), "uplink_bps");
  auto changed = Field<uint64_t>(j, dot.c_str(), "changed_pages");
  for (const Status& s :
       {name.status(), vcpus.status(), memory.status(), uplink.status(), changed.status()}) {
    if (!s.ok()) return s;
  }
  FleetVm vm{*name, *vcpus, *memory, *uplink, *changed, 0, {}};
  auto rate = j.find("pages_per_second");
  if (rate == j.end() || !rate->is_number() || rate->get<double>() < 0) {
    return Status::Error(
        fmt::format("{}pages_per_second is missing or not a non-negative number", dot));
  }
  vm.pages_per_second = rate->get<double>();
  auto groups = j.find("groups");
  if (groups == j.end() || !groups->is_array()) {
    return Status::Error(fmt::format("{}groups is missing or not a list", dot));
  }
  for (const json& g : *groups) {
    if (!g.is_string()) return Status::Error(fmt::format("{}groups holds a non-string", dot));
    vm.groups.push_back(g.get<std::string>());
  }
  // Absent in records of daemons that published no state: those listed running VMs only.
  if (auto state = j.find("state"); state != j.end()) {
    if (!state->is_string()) return Status::Error(fmt::format("{}state is not a string", dot));
    vm.state = state->get<std::string>();
  }
  return vm;
}

// The record's "vms": absent in records of daemons that predate it, which read as none.
Result<std::vector<FleetVm>> ParseFleetVms(const json& record) {
  std::vector<FleetVm> vms;
  auto list = record.find("vms");
  if (list == record.end()) return vms;
  if (!list->is_array()) return Status::Error("vms is not a list");
  for (size_t i = 0; i < list->size(); ++i) {
    auto vm = ParseFleetVm((*list)[i], fmt::format("vms[{}]", i));
    if (!vm.ok()) return vm.status();
    vms.push_back(std::move(vm).value());
  }
  return vms;
}

Result<const json*> Object(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_object()) {
    return Status::Error(fmt::format("{} is missing or not an object", key));
  }
  return &*it;
}

}  // namespace

json FleetHostJson(const FleetHost& h) {
  json vms = json::array();
  for (const FleetVm& vm : h.load.vm_list) vms.push_back(VmJson(vm));
  return {{"name", h.name},
          {"migration_address", h.migration_address},
          {"budget",
           {{"vcpus", h.budget_vcpus},
            {"memory_bytes", h.budget_memory_bytes},
            {"uplink_bps", h.budget_uplink_bps}}},
          {"labels", h.labels},
          {"load", LoadJson(h.load)},
          {"vms", std::move(vms)},
          {"updated_unix_ms", h.updated_unix_ms},
          {"alive", h.alive}};
}

Result<FleetHost> ParseFleetHost(const std::string& text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::Error("the record is not a JSON object");
  FleetHost h;
  auto budget = Object(j, "budget");
  auto load = Object(j, "load");
  if (!budget.ok()) return budget.status();
  if (!load.ok()) return load.status();
  auto name = Field<std::string>(j, "", "name");
  auto migration = Field<std::string>(j, "", "migration_address");
  auto updated = Field<uint64_t>(j, "", "updated_unix_ms");
  auto vcpus = Field<uint32_t>(**budget, "budget.", "vcpus");
  auto memory = Field<uint64_t>(**budget, "budget.", "memory_bytes");
  auto uplink = Field<uint64_t>(**budget, "budget.", "uplink_bps");
  auto vms = Field<uint32_t>(**load, "load.", "vms");
  auto used_vcpus = Field<uint32_t>(**load, "load.", "vcpus");
  auto used_memory = Field<uint64_t>(**load, "load.", "memory_bytes");
  auto used_uplink = Field<uint64_t>(**load, "load.", "uplink_bps");
  for (const Status& s :
       {name.status(), migration.status(), updated.status(), vcpus.status(), memory.status(),
        uplink.status(), vms.status(), used_vcpus.status(), used_memory.status(),
        used_uplink.status()}) {
    if (!s.ok()) return s;
  }
  h.name = *name;
  h.migration_address = *migration;
  h.updated_unix_ms = static_cast<int64_t>(*updated);
  h.budget_vcpus = *vcpus;
  h.budget_memory_bytes = *memory;
  h.budget_uplink_bps = *uplink;
  auto vm_list = ParseFleetVms(j);
  if (!vm_list.ok()) return vm_list.status();
  h.load = {*vms, *used_vcpus, *used_memory, *used_uplink, std::move(vm_list).value()};
  if (auto labels = j.find("labels"); labels != j.end()) {
    if (!labels->is_object()) return Status::Error("labels is not an object");
    for (const auto& [k, v] : labels->items()) {
      if (!v.is_string()) return Status::Error(fmt::format("labels.{} is not a string", k));
      h.labels[k] = v.get<std::string>();
    }
  }
  return h;
}

FleetAgent::FleetAgent(const config::Fleet& fleet, std::string migration_address, LoadFn load)
    : fleet_(fleet),
      migration_address_(std::move(migration_address)),
      load_(std::move(load)),
      instance_(NewInstanceId()),
      etcd_(EtcdOptions{fleet.etcd}) {}

FleetAgent::~FleetAgent() { Stop(); }

void FleetAgent::Start() {
  thread_.Start([this] { Loop(); });
}

void FleetAgent::Stop() {
  thread_.Stop();
  if (stale_lease_ != 0) (void)etcd_.LeaseRevoke(stale_lease_);
  stale_lease_ = 0;
  const int64_t lease = lease_.exchange(0);
  if (lease == 0) return;
  // Revoking takes the record with it: the fleet sees the box leave now, not a TTL later.
  if (Status s = etcd_.LeaseRevoke(lease); !s.ok()) {
    spdlog::warn("fleet: could not revoke lease {} (the host record goes when it expires): {}",
                 lease, s.message());
  } else {
    spdlog::info("fleet: host {} left the registry (lease {} revoked)", fleet_.host, lease);
  }
  connected_ = false;
}

void FleetAgent::Loop() {
  const auto keepalive_every = std::chrono::nanoseconds(fleet_.lease_ttl_ns) / 3;
  const auto publish_every = std::chrono::nanoseconds(fleet_.publish_interval_ns);
  auto retry = std::chrono::duration_cast<Clock::duration>(kFirstRetry);
  Clock::time_point next_keepalive, next_publish;
  while (!thread_.stopping()) {
    Status s = Status::Ok();
    const char* what = "registering";
    if (lease_.load() == 0) {
      s = Register();
      next_keepalive = Clock::now() + keepalive_every;
      next_publish = Clock::now() + publish_every;
    } else if (!thread_.SleepUntil(std::min(next_keepalive, next_publish))) {
      break;
    } else if (Clock::now() >= next_keepalive) {
      what = "keeping the lease alive";
      s = KeepAlive();
      next_keepalive = Clock::now() + keepalive_every;
    } else {
      what = "publishing the load";
      s = Publish();
      next_publish = Clock::now() + publish_every;
    }
    if (s.ok()) {
      retry = kFirstRetry;
      continue;
    }
    // Whatever failed, the lease may be gone by the time etcd answers again: start afresh.
    // The old lease, if it lives on, is revoked once the new one holds the record.
    Failed(what, s);
    if (!thread_.SleepUntil(Clock::now() + retry)) break;
    retry = std::min<Clock::duration>(retry * 2, kLongestRetry);
  }
}

std::string FleetAgent::RecordText(const FleetLoad& load) const {
  FleetHost h;
  h.name = fleet_.host;
  h.migration_address = migration_address_;
  h.budget_vcpus = fleet_.budget_vcpus;
  h.budget_memory_bytes = fleet_.budget_memory_bytes;
  h.budget_uplink_bps = fleet_.budget_uplink_bps;
  h.load = load;
  h.labels = fleet_.labels;
  h.updated_unix_ms = UnixMs();
  json record = FleetHostJson(h);
  record.erase("alive");  // the lease says that, not the record
  record["instance"] = instance_;
  record["version"] = QOSVISOR_VERSION;
  return record.dump();
}

Status FleetAgent::Register() {
  const auto ttl_s = static_cast<int64_t>((fleet_.lease_ttl_ns + 999'999'999) / 1'000'000'000);
  auto lease = etcd_.LeaseGrant(ttl_s);
  if (!lease.ok()) return lease.status();
  const FleetLoad load = load_();
  const std::string record = RecordText(load);
  const std::string key = Key();
  auto done = etcd_.Txn({EtcdCompare::CreateRevision(key, 0)}, {EtcdOp::Put(key, record, *lease)});
  std::string holder;
  if (done.ok() && !*done) {
    // The name is taken: by this daemon's earlier lease (etcd was away), or by another daemon.
    auto held = etcd_.Range(key);
    if (!held.ok()) {
      done = held.status();
    } else if (!held->kvs.empty()) {
      const EtcdKeyValue& kv = held->kvs.front();
      const json other = json::parse(kv.value, nullptr, /*allow_exceptions=*/false);
      holder = other.is_object() ? other.value("instance", "") : "";
      if (holder == instance_) {
        done = etcd_.Txn({EtcdCompare::ModRevision(key, kv.mod_revision)},
                         {EtcdOp::Put(key, record, *lease)});
      }
    }
  }
  if (!done.ok() || !*done) {
    (void)etcd_.LeaseRevoke(*lease);  // best effort: it would expire anyway
    if (!done.ok()) return done.status();
    return Status::Error(
        holder.empty() || holder == instance_
            ? fmt::format("the record {} changed while registering; trying again", key)
            : fmt::format("fleet.host '{}' is held by another live qosvisor (instance {}); give "
                          "this box another name, or stop that daemon",
                          fleet_.host, holder));
  }
  lease_.store(*lease);
  if (stale_lease_ != 0) {
    (void)etcd_.LeaseRevoke(stale_lease_);  // holds nothing now; gone early rather than later
    stale_lease_ = 0;
  }
  registrations_.fetch_add(1);
  {
    std::lock_guard lock(mu_);
    registered_unix_ms_ = UnixMs();
    last_publish_unix_ms_ = registered_unix_ms_;
    last_load_ = load;
  }
  Connected(etcd_.endpoint());
  spdlog::info("fleet: host {} registered at {} in etcd {} (lease {}, ttl {}s)", fleet_.host, key,
               etcd_.endpoint(), *lease, ttl_s);
  return Status::Ok();
}

Status FleetAgent::KeepAlive() {
  const int64_t lease = lease_.load();
  auto ttl = etcd_.LeaseKeepAliveOnce(lease);
  if (!ttl.ok()) return ttl.status();
  if (*ttl == 0) {
    lease_.store(0);
    return Status::Error(fmt::format("lease {} is gone (it expired while etcd could not be "
                                     "reached, or was revoked); registering again",
                                     lease));
  }
  Connected(etcd_.endpoint());
  return Status::Ok();
}

Status FleetAgent::Publish() {
  const FleetLoad load = load_();
  if (Status s = etcd_.Put(Key(), RecordText(load), lease_.load()); !s.ok()) return s;
  std::lock_guard lock(mu_);
  last_publish_unix_ms_ = UnixMs();
  last_load_ = load;
  return Status::Ok();
}

void FleetAgent::Connected(const std::string& endpoint) {
  std::lock_guard lock(mu_);
  if (!connected_.exchange(true) && !last_error_.empty()) {
    spdlog::info("fleet: etcd {} answers again", endpoint);
  }
  endpoint_ = endpoint;
}

void FleetAgent::Failed(const std::string& what, const Status& status) {
  if (const int64_t lease = lease_.exchange(0); lease != 0) stale_lease_ = lease;
  std::lock_guard lock(mu_);
  const bool was_connected = connected_.exchange(false);
  // Said once per outage in the log (and again when the reason changes); the status always has
  // the latest.
  if (was_connected || last_error_ != status.message()) {
    spdlog::warn("fleet: {} failed; the box keeps running and tries again: {}", what,
                 status.message());
  }
  last_error_ = status.message();
}

json FleetAgent::StatusJson() const {
  std::lock_guard lock(mu_);
  return {{"host", fleet_.host},
          {"instance", instance_},
          {"connected", connected_.load()},
          {"endpoint", endpoint_},
          {"endpoints", fleet_.etcd},
          {"lease_id", lease_.load()},
          {"lease_ttl_s", static_cast<double>(fleet_.lease_ttl_ns) / 1e9},
          {"last_error", last_error_},
          {"registered_since_unix_ms", registered_unix_ms_},
          {"last_publish_unix_ms", last_publish_unix_ms_},
          {"registrations", registrations_.load()},
          {"load", LoadJson(last_load_)}};
}

Result<std::vector<FleetHost>> FleetAgent::Hosts() {
  auto range = etcd_.RangePrefix(std::string(kHostsPrefix));
  if (!range.ok()) return range.status();
  std::vector<FleetHost> hosts;
  for (const EtcdKeyValue& kv : range->kvs) {
    const std::string name = kv.key.substr(kHostsPrefix.size());
    auto host = ParseFleetHost(kv.value);
    if (host.ok() && host->name != name) {
      host = Status::Error(fmt::format("it names itself '{}'", host->name));
    }
    if (!host.ok()) {
      spdlog::warn("fleet: skipping the record {} in etcd: {}", kv.key, host.message());
      continue;
    }
    host->alive = kv.lease != 0;
    hosts.push_back(std::move(host).value());
  }
  return hosts;
}

Result<FleetHost> FleetAgent::Host(const std::string& name) {
  const std::string key = std::string(kHostsPrefix) + name;
  auto range = etcd_.Range(key);
  if (!range.ok()) return range.status();
  if (range->kvs.empty()) {
    return Status::Error(fmt::format("no host '{}' in the fleet registry (etcd {}, key {})", name,
                                     etcd_.endpoint(), key));
  }
  auto host = ParseFleetHost(range->kvs.front().value);
  if (!host.ok()) {
    return Status::Error(fmt::format("the fleet record of host '{}' ({}) cannot be read: {}",
                                     name, key, host.message()));
  }
  host->alive = range->kvs.front().lease != 0;
  return host;
}

}  // namespace qosvisor::control
