// The thread each fleet agent (registry, leader election, move server) runs its loop on: started
// once, stopped from another thread, which also cuts short the loop's sleeps so that a stop
// never waits out a poll interval or a retry.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace qosvisor::control {

class FleetThread {
 public:
  FleetThread() = default;
  ~FleetThread();  // Stop()
  FleetThread(const FleetThread&) = delete;
  FleetThread& operator=(const FleetThread&) = delete;

  // Runs `loop` on a new thread, unless one runs already.
  void Start(std::function<void()> loop);
  // Tells the loop to end, wakes its sleep and waits for it.
  void Stop();
  // Sleeps until `deadline` or Stop(); false when stopping. The loop's thread only.
  bool SleepUntil(std::chrono::steady_clock::time_point deadline);
  bool stopping() const { return stop_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  std::thread thread_;
};

}  // namespace qosvisor::control
