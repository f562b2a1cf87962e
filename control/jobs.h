// Long control operations (VM snapshot, restore, fork, suspend, resume of a suspended VM) run as
// jobs: the request returns {"job": ID} at once and the work goes on in a thread of its own,
// reporting its phase and progress, which `jobs` and `job ID` read. A job's failure is its
// result; it never takes the control socket down.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace qosvisor::control {

// What a job's work tells the world while it runs; thread-safe.
class JobProgress {
 public:
  void Phase(std::string phase);
  void Bytes(uint64_t done, uint64_t total);
  // Figures of the job's own, shown under "detail" (a migration's round, dirty rate, ...).
  void Detail(nlohmann::json detail);

 private:
  friend class Jobs;
  mutable std::mutex mu_;
  std::string phase_ = "starting";
  uint64_t done_ = 0, total_ = 0;
  nlohmann::json detail_;
};

class Jobs {
 public:
  using Work = std::function<Result<nlohmann::json>(JobProgress& progress)>;
  ~Jobs();  // waits for running jobs

  // Starts `work` on its own thread; returns the job's id (1, 2, ...).
  uint64_t Start(std::string kind, std::string target, Work work);
  nlohmann::json List() const;
  Result<nlohmann::json> Get(uint64_t id) const;
  // Jobs kept once finished (the oldest finished ones go first).
  static constexpr size_t kKeepFinished = 64;

 private:
  struct Job {
    uint64_t id = 0;
    std::string kind, target;
    std::chrono::steady_clock::time_point started, ended;
    JobProgress progress;
    bool finished = false;  // guarded by Jobs::mu_
    Result<nlohmann::json> result = Status::Error("running");
    std::thread thread;
  };
  nlohmann::json Describe(const Job& job) const;  // mu_ held
  void Prune();                                   // mu_ held

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Job>> jobs_;
  uint64_t next_id_ = 1;
};

}  // namespace qosvisor::control
