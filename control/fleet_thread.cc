// Starting, stopping and waking a fleet agent's thread.
#include "control/fleet_thread.h"

namespace qosvisor::control {

FleetThread::~FleetThread() { Stop(); }

void FleetThread::Start(std::function<void()> loop) {
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread(std::move(loop));
}

void FleetThread::Stop() {
  {
    // Under the lock: a loop between its check and its wait would otherwise miss the wake-up.
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool FleetThread::SleepUntil(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  wake_.wait_until(lock, deadline, [this] { return stop_.load(); });
  return !stop_.load();
}

}  // namespace qosvisor::control
