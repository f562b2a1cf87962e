// Job threads, their progress, and the JSON that `jobs` and `job ID` answer with.
#include "control/jobs.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace qosvisor::control {

using nlohmann::json;

void JobProgress::Phase(std::string phase) {
  std::lock_guard lock(mu_);
  phase_ = std::move(phase);
  done_ = total_ = 0;
}

void JobProgress::Bytes(uint64_t done, uint64_t total) {
  std::lock_guard lock(mu_);
  done_ = done;
  total_ = total;
}

void JobProgress::Detail(json detail) {
  std::lock_guard lock(mu_);
  detail_ = std::move(detail);
}

Jobs::~Jobs() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    for (auto& job : jobs_) threads.push_back(std::move(job->thread));
  }
  for (auto& t : threads) {
    if (t.joinable()) t.join();
  }
}

uint64_t Jobs::Start(std::string kind, std::string target, Work work) {
  std::lock_guard lock(mu_);
  Prune();
  auto job = std::make_unique<Job>();
  Job* j = job.get();
  j->id = next_id_++;
  j->kind = std::move(kind);
  j->target = std::move(target);
  j->started = std::chrono::steady_clock::now();
  spdlog::info("job {}: {} of {} started", j->id, j->kind, j->target);
  j->thread = std::thread([this, j, work = std::move(work)] {
    Result<json> result = work(j->progress);
    if (result.ok()) {
      spdlog::info("job {}: {} of {} done", j->id, j->kind, j->target);
    } else {
      spdlog::warn("job {}: {} of {} failed: {}", j->id, j->kind, j->target, result.message());
    }
    std::lock_guard done(mu_);
    j->result = std::move(result);
    j->ended = std::chrono::steady_clock::now();
    j->finished = true;
  });
  jobs_.push_back(std::move(job));
  return j->id;
}

void Jobs::Prune() {
  size_t finished = 0;
  for (const auto& j : jobs_) finished += j->finished;
  for (auto it = jobs_.begin(); finished > kKeepFinished && it != jobs_.end();) {
    if ((*it)->finished) {
      if ((*it)->thread.joinable()) (*it)->thread.join();
      it = jobs_.erase(it);
      --finished;
    } else {
      ++it;
    }
  }
}

json Jobs::Describe(const Job& job) const {
  const auto end = job.finished ? job.ended : std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(end - job.started).count();
  json out = {{"id", job.id},
              {"kind", job.kind},
              {"vm", job.target},
              {"state", !job.finished     ? "running"
                        : job.result.ok() ? "done"
                                          : "failed"},
              {"elapsed_s", elapsed}};
  {
    std::lock_guard lock(job.progress.mu_);
    out["phase"] = job.progress.phase_;
    out["bytes_done"] = job.progress.done_;
    out["bytes_total"] = job.progress.total_;
    out["rate_bytes_per_s"] = elapsed > 0 ? static_cast<double>(job.progress.done_) / elapsed : 0.0;
    if (!job.progress.detail_.is_null()) out["detail"] = job.progress.detail_;
  }
  if (job.finished) {
    if (job.result.ok()) {
      out["result"] = job.result.value();
    } else {
      out["error"] = job.result.message();
    }
  }
  return out;
}

json Jobs::List() const {
  std::lock_guard lock(mu_);
  json out = json::array();
  for (const auto& j : jobs_) out.push_back(Describe(*j));
  return out;
}

Result<json> Jobs::Get(uint64_t id) const {
  std::lock_guard lock(mu_);
  for (const auto& j : jobs_) {
    if (j->id == id) return Describe(*j);
  }
  return Status::Error(
      fmt::format("no job {} (finished jobs are kept, the last {})", id, kKeepFinished));
}

}  // namespace qosvisor::control
