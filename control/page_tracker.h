// The page tracker: a thread of its own (never a data-plane lcore) that, every
// guest_memory.track_period, has the VM manager harvest each VM's changed pages into its
// counters and apply the huge-page policy. A reload may change the settings; they take effect
// at the next harvest.
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>

#include "config/config.h"

namespace qosvisor::control {

class VmManager;

class PageTracker {
 public:
  PageTracker(VmManager& vms, const config::GuestMemory& settings);
  ~PageTracker();  // Stop()
  PageTracker(const PageTracker&) = delete;
  PageTracker& operator=(const PageTracker&) = delete;

  void Start();
  void Stop();
  void Update(const config::GuestMemory& settings);

 private:
  void Loop();

  VmManager& vms_;
  std::mutex mu_;  // guards settings_ and stop_, and wakes the thread
  std::condition_variable wake_;
  config::GuestMemory settings_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace qosvisor::control
