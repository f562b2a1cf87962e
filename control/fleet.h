// This box's agent in the fleet registry: it keeps /qosvisor/hosts/<host> in etcd under a lease
// it renews (the record vanishes within the lease's TTL when the daemon dies, at once when it
// stops), publishes the box's load there, and reads the other boxes' records.
//
// It runs on a thread of its own, never on a data-plane lcore. When etcd cannot be reached the
// box goes on switching and running its VMs; the agent says so (connected false, the last
// error), tries again at most a second apart, and registers anew (a new lease) once etcd answers.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "control/etcd_client.h"
#include "control/fleet_thread.h"

namespace qosvisor::control {

// One VM a box runs, as the fleet's planner sees it.
struct FleetVm {
  std::string name;
  uint32_t vcpus = 0;
  uint64_t memory_bytes = 0;
  uint64_t uplink_bps = 0;          // what it sends into the switch
  uint64_t changed_pages = 0;       // pages it changed lately: what a migration would send again
  double pages_per_second = 0;      // its page-change rate
  std::vector<std::string> groups;  // the anti-affinity groups it belongs to, by this box's rules
  // Only a running or paused VM can migrate; a created or stopped one holds its budget still.
  std::string state = "running";
  bool operator==(const FleetVm&) const = default;
};

// What a box has given out: VMs placed on it, their vCPUs and memory, and what its uplinks send.
struct FleetLoad {
  uint32_t vms = 0;
  uint32_t vcpus = 0;
  uint64_t memory_bytes = 0;
  uint64_t uplink_bps = 0;
  std::vector<FleetVm> vm_list;  // the record's "vms"
};

// One box's record in the registry.
struct FleetHost {
  std::string name;
  std::string migration_address;  // its migration.listen; empty: it takes no migrations
  uint32_t budget_vcpus = 0;
  uint64_t budget_memory_bytes = 0;
  uint64_t budget_uplink_bps = 0;
  FleetLoad load;
  std::map<std::string, std::string> labels;
  int64_t updated_unix_ms = 0;  // its last publication, by its own clock
  bool alive = false;           // held by a lease, so kept alive by a running daemon
};

// The record's JSON as kept in etcd, and back (errors name the field at fault).
nlohmann::json FleetHostJson(const FleetHost& host);
Result<FleetHost> ParseFleetHost(const std::string& text);

class FleetAgent {
 public:
  static constexpr std::string_view kHostsPrefix = "/qosvisor/hosts/";
  using LoadFn = std::function<FleetLoad()>;

  // `load` is called on the agent's thread at every publication; it must be thread-safe.
  FleetAgent(const config::Fleet& fleet, std::string migration_address, LoadFn load);
  ~FleetAgent();  // Stop()
  FleetAgent(const FleetAgent&) = delete;
  FleetAgent& operator=(const FleetAgent&) = delete;

  // Starts the agent's thread; registering happens there (Start does not wait for etcd).
  void Start();
  // Ends the thread and revokes the lease, so the box leaves the registry at once.
  void Stop();

  // host, connected, endpoint, lease id, last error, registered since, last publish, counts.
  nlohmann::json StatusJson() const;
  // Every box in the registry; records that cannot be read are skipped with a warning.
  Result<std::vector<FleetHost>> Hosts();
  // One box, or an error naming it when it is not registered.
  Result<FleetHost> Host(const std::string& name);

  bool connected() const { return connected_.load(); }
  uint64_t registrations() const { return registrations_.load(); }
  const std::string& instance() const { return instance_; }

 private:
  void Loop();
  // Grants a lease and writes the record, unless another live daemon holds the name.
  Status Register();
  Status Publish();
  Status KeepAlive();
  std::string RecordText(const FleetLoad& load) const;
  std::string Key() const { return std::string(kHostsPrefix) + fleet_.host; }
  void Connected(const std::string& endpoint);
  void Failed(const std::string& what, const Status& status);

  config::Fleet fleet_;
  std::string migration_address_;
  LoadFn load_;
  std::string instance_;  // tells this daemon's record from another's that took the same name
  EtcdClient etcd_;

  FleetThread thread_;
  std::atomic<bool> connected_{false};
  std::atomic<uint64_t> registrations_{0};
  std::atomic<int64_t> lease_{0};
  // A lease given up after a failure that may still hold the record; the agent's thread only.
  int64_t stale_lease_ = 0;
  mutable std::mutex mu_;  // guards what follows
  std::string endpoint_;
  std::string last_error_;
  int64_t registered_unix_ms_ = 0;
  int64_t last_publish_unix_ms_ = 0;
  FleetLoad last_load_;
};

}  // namespace qosvisor::control
