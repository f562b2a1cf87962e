// The page tracker's part of the VM manager: each VM's changed pages harvested into its
// counters, the huge-page policy applied from them, and what they say to `vm NAME pages`, the
// metrics and placement.
#include <fmt/format.h>

#include "control/vm_manager.h"

namespace qosvisor::control {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using hv::PageHeat;

// Collapsing copies a region onto a huge page (~0.5 ms each); a harvest does at most this many
// a VM, so that a large VM's first decisions do not hold the manager's lock for long.
constexpr size_t kCollapsesPerHarvest = 32;

bool Trackable(const hv::Vm& vm) {
  const hv::VmState s = vm.state();
  return s == hv::VmState::kRunning || s == hv::VmState::kPaused;
}

}  // namespace

void VmManager::HarvestPages(const config::GuestMemory& settings) {
  std::lock_guard lock(mu_);
  for (Entry& e : vms_) {
    if (!e.vm || !e.busy.empty()) continue;  // a long operation owns the VM meanwhile
    HarvestEntry(e, settings);
  }
}

void VmManager::HarvestEntry(Entry& e, const config::GuestMemory& settings) {
  constexpr auto kTracker = hv::Vm::ChangeReader::kPageTracker;
  hv::Vm& vm = *e.vm;
  Entry::PageTracking& t = e.pages;
  const bool wanted = settings.track && Trackable(vm);
  if (!wanted) {
    // A stopped VM keeps the counters it had, for `pages`; its log is off until it runs again.
    if (vm.tracking(kTracker)) (void)vm.TrackChanges(kTracker, false);
    return;
  }
  const bool fresh = t.vm != &vm || !t.heat ||
                     t.heat->counter_max() != (1u << settings.counter_bits) - 1;
  if (fresh || !vm.tracking(kTracker)) {
    if (Status s = vm.TrackChanges(kTracker, true); !s.ok()) {
      t.error = s.message();
      return;
    }
    if (fresh) {
      t = Entry::PageTracking{};
      t.vm = &vm;
      t.heat = std::make_unique<PageHeat>(vm.memory().size(), settings.counter_bits);
      t.applied.assign(t.heat->regions(), -1);
    }
    t.last_harvest = Clock::now();
    (void)vm.TakeChangedPages(kTracker);  // a clean interval from here
    return;
  }
  auto changed = vm.TakeChangedPages(kTracker);
  if (!changed.ok()) {
    t.error = changed.message();
    return;
  }
  const auto now = Clock::now();
  t.heat->Add(*changed, std::chrono::duration<double>(now - t.last_harvest).count());
  t.last_harvest = now;
  if (auto populated = vm.memory().PopulatedPages(); populated.ok()) {
    t.heat->SetPopulated(*populated);
  }
  t.error.clear();
  ApplyHugePolicy(e, settings.huge_pages);
}

void VmManager::ApplyHugePolicy(Entry& e, config::HugePagePolicy policy) {
  const hv::HugePolicy mode = policy == config::HugePagePolicy::kAll   ? hv::HugePolicy::kAll
                              : policy == config::HugePagePolicy::kOff ? hv::HugePolicy::kOff
                                                                       : hv::HugePolicy::kAuto;
  Status s = hv::ApplyHugePolicy(e.vm->memory(), *e.pages.heat, mode, e.pages.applied,
                                 kCollapsesPerHarvest);
  // EAGAIN and the like: the region is tried again at the next harvest.
  if (!s.ok()) e.pages.error = fmt::format("vm '{}': {}", e.name, s.message());
}

json VmManager::PageSummaryJson(const Entry& e) {
  const Entry::PageTracking& t = e.pages;
  if (!t.heat) return json{{"tracked", false}};
  const hv::VmPageSummary s = t.heat->Summary();
  uint32_t hot = 0, huge = 0;
  for (size_t r = 0; r < t.heat->regions(); ++r) {
    hot += t.heat->Heat(r) == hv::RegionHeat::kHot ? 1 : 0;
    huge += t.applied[r] == 1 ? 1 : 0;
  }
  return json{{"tracked", true},
              {"harvests", t.heat->harvests()},
              {"changed_pages", s.changed_pages},
              {"pages_per_second", s.pages_per_second},
              {"regions", t.heat->regions()},
              {"hot_regions", hot},
              {"huge_regions", huge}};
}

Result<json> VmManager::PagesJson(const std::string& name) {
  std::lock_guard lock(mu_);
  Entry* e = FindLocked(name);
  if (e == nullptr) return Status::Error(fmt::format("no vm named '{}'", name));
  json out = PageSummaryJson(*e);
  out["name"] = name;
  out["state"] = StateOf(*e);
  const Entry::PageTracking& t = e->pages;
  if (!t.heat) {
    out["why"] = e->vm ? "the page tracker has not harvested it yet (it tracks running and paused "
                         "VMs, once a period)"
                       : "suspended: its memory is on disk";
    return out;
  }
  out["counter_max"] = t.heat->counter_max();
  out["memory"] = e->vm ? (e->vm->memory().shared() ? "own" : "copy-on-write") : "suspended";
  if (e->vm) {
    if (auto bytes = e->vm->memory().HugeBackedBytes(); bytes.ok()) {
      out["huge_backed_bytes"] = *bytes;
    }
  }
  if (!t.error.empty()) out["error"] = t.error;
  json regions = json::array();
  for (size_t r = 0; r < t.heat->regions(); ++r) {
    regions.push_back({{"start", r * PageHeat::kRegionBytes},
                       {"counter", t.heat->counter(r)},
                       {"heat", hv::RegionHeatName(t.heat->Heat(r))},
                       {"changed", t.heat->last_changed(r)},
                       {"populated", t.heat->populated_pages(r)},
                       {"recent", t.heat->recent_harvests(r)},
                       {"decision", hv::HugeDecisionName(t.heat->DecideHuge(r))},
                       {"huge", t.applied[r] == 1}});
  }
  out["region_list"] = std::move(regions);
  return out;
}

std::map<std::string, hv::VmPageSummary> VmManager::PageSummaries() {
  std::lock_guard lock(mu_);
  std::map<std::string, hv::VmPageSummary> out;
  for (const Entry& e : vms_) {
    if (e.pages.heat) out[e.name] = e.pages.heat->Summary();
  }
  return out;
}

}  // namespace qosvisor::control
