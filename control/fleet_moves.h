// Moves of a rebalance plan, handed from the leader to the hosts that carry them out through
// etcd alone. The leader writes /qosvisor/moves/<source-host>/<vm> (the plan's id, destination,
// state "requested") under its leader lease and waits; the source host's MoveServer, looking at
// its own prefix, marks it "running", migrates the VM and writes "done" or "failed" with the
// reason; the leader reads the outcome and removes the key before the next move.
//
// The lease ties a move to the lead: when the leader dies its requests vanish, a source that
// finishes one writes its outcome only if the request still exists (else logs it), and the next
// leader plans afresh from the hosts' records.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "config/config.h"
#include "control/etcd_client.h"
#include "control/fleet_thread.h"

namespace qosvisor::control {

struct MoveRecord {
  std::string plan;  // the plan's id
  std::string vm;
  std::string from;
  std::string to;
  std::string leader;               // the host that asked
  std::string state = "requested";  // requested, running, done, failed
  std::string error;                // failed: why
  nlohmann::json result;            // done: the migration's result
};

inline constexpr std::string_view kMovesPrefix = "/qosvisor/moves/";
std::string MoveKey(const std::string& from, const std::string& vm);
nlohmann::json MoveRecordJson(const MoveRecord& move);
Result<MoveRecord> ParseMoveRecord(const std::string& text);

// The leader's side: ask for a move and wait for its outcome.
struct MoveWait {
  std::chrono::milliseconds poll{200};
  // A request no host marks running within this long is given up (its host may be gone).
  std::chrono::milliseconds pickup{10000};
  std::chrono::milliseconds timeout{120000};  // the whole move
  // Ok while it is still sensible to wait (this daemon leads, the source host lives).
  std::function<Status()> still_valid = [] { return Status::Ok(); };
};

// Writes the request (refused when one for the VM exists), waits for "done" or "failed" and
// removes the key. The record as it ended, or an error when the wait itself failed (etcd, the
// lead lost, the request vanished, the timeout).
Result<MoveRecord> RunMoveThroughEtcd(EtcdClient& etcd, const MoveRecord& request, int64_t lease,
                                      const MoveWait& wait);

// The source host's side: its own requests, carried out one at a time on a thread of its own.
class MoveServer {
 public:
  // Migrates `vm` to fleet host `to`; its result, or why it failed. Called on the server's thread.
  using RunMove =
      std::function<Result<nlohmann::json>(const std::string& vm, const std::string& to)>;

  MoveServer(const config::Fleet& fleet, std::chrono::milliseconds poll, RunMove run);
  ~MoveServer();  // Stop()
  MoveServer(const MoveServer&) = delete;
  MoveServer& operator=(const MoveServer&) = delete;

  void Start();
  void Stop();  // waits for a move under way
  uint64_t moves_done() const { return done_.load(); }

 private:
  void Loop();
  Status ServeOnce();
  void Serve(const EtcdKeyValue& kv, MoveRecord move);
  // Writes `move` over the request, unless the request is gone (its leader's lease ended).
  Status Update(const EtcdKeyValue& kv, const MoveRecord& move);

  config::Fleet fleet_;
  std::chrono::milliseconds poll_;
  RunMove run_;
  EtcdClient etcd_;
  FleetThread thread_;
  std::atomic<uint64_t> done_{0};
  std::string last_error_;  // the thread's only
};

}  // namespace qosvisor::control
