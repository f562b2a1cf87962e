// Which daemon plans for the fleet: the one holding /qosvisor/leader in etcd, a key created only
// when absent and held by that daemon's lease. The leader renews its lease every third of
// fleet.lease_ttl; the others read the key at short intervals and try to take it when it is
// gone. A leader that stops revokes its lease (another takes over at its next look); one that
// dies loses the key when the lease expires, within lease_ttl, and another takes it then.
//
// Its own thread and lease, apart from the registry agent's: a box keeps its host record while
// it campaigns, and giving up the lead never takes the record with it.
#pragma once

#include <atomic>
#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "config/config.h"
#include "control/etcd_client.h"
#include "control/fleet_thread.h"

namespace qosvisor::control {

class LeaderElection {
 public:
  static constexpr std::string_view kLeaderKey = "/qosvisor/leader";

  // `instance` tells this daemon from another that took the same host name.
  LeaderElection(const config::Fleet& fleet, std::string instance);
  ~LeaderElection();  // Stop()
  LeaderElection(const LeaderElection&) = delete;
  LeaderElection& operator=(const LeaderElection&) = delete;

  void Start();
  // Ends the thread and, when leading, revokes the lease so that another daemon leads at once.
  void Stop();

  bool leading() const { return leading_.load(); }
  // The lease the leader key is held by while this daemon leads (0 otherwise): what the leader
  // writes under lives only as long as its lead.
  int64_t lease() const { return leading_.load() ? lease_.load() : 0; }
  // The leading host as last seen ("" when none was seen).
  std::string leader() const;
  // Reads the key now, for decisions that must not rest on the last look: who holds it (host
  // empty: nobody right now) and whether that is this daemon; an error when etcd cannot be
  // reached.
  struct Holder {
    std::string host;
    bool me = false;
  };
  Result<Holder> HolderNow();
  // Ok while this daemon holds the key, else an error naming who leads, or that nobody does, or
  // that etcd cannot be reached.
  Status CheckLeading();
  // leader, leading, since when, the last error.
  nlohmann::json StatusJson() const;

  // How often followers look at the key (a tenth of the TTL, 100 ms to 1 s).
  std::chrono::milliseconds poll_interval() const { return poll_; }

 private:
  void Loop();
  Status Campaign();
  Status Renew();
  std::string Value() const;
  void Lost(const std::string& why);
  void SetLeader(const std::string& host);

  config::Fleet fleet_;
  std::string instance_;
  std::chrono::milliseconds poll_;
  EtcdClient etcd_;
  FleetThread thread_;
  std::atomic<bool> leading_{false};
  std::atomic<int64_t> lease_{0};
  mutable std::mutex mu_;  // guards what follows
  std::string leader_;
  std::string last_error_;
  int64_t leading_since_unix_ms_ = 0;
};

}  // namespace qosvisor::control
