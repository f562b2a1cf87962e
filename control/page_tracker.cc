#include "control/page_tracker.h"

#include <chrono>

#include "control/vm_manager.h"

namespace qosvisor::control {

PageTracker::PageTracker(VmManager& vms, const config::GuestMemory& settings)
    : vms_(vms), settings_(settings) {}

PageTracker::~PageTracker() { Stop(); }

void PageTracker::Start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
}

void PageTracker::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void PageTracker::Update(const config::GuestMemory& settings) {
  {
    std::lock_guard lock(mu_);
    settings_ = settings;
  }
  wake_.notify_all();
}

void PageTracker::Loop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    const config::GuestMemory settings = settings_;
    lock.unlock();
    // With tracking off this turns each VM's log off once and keeps their last counters.
    vms_.HarvestPages(settings);
    lock.lock();
    // Periods are counted from the end of a harvest: a slow one never queues the next.
    wake_.wait_for(lock, std::chrono::nanoseconds(settings.track_period_ns),
                   [&] { return stop_ || !(settings_ == settings); });
  }
}

}  // namespace qosvisor::control
