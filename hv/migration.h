// Live migration of a VM's memory, disk and state over an authenticated MigrationChannel.
//
// The source copies every page that may hold data while the guest runs, then, round after
// round, the pages and disk blocks changed meanwhile (KVM's dirty log plus the devices' own
// writes), until what is left would take no longer than the downtime budget at the rate the
// link has shown. When the guest dirties memory faster than the link drains it, the vCPUs are
// throttled (auto-converge): paused for a growing share of every period. Then the VM pauses,
// the last pages and the vCPU, VM and device state go, and the destination applies them.
//
// What happens around this (the offer, creating the VM, its switch ports, who keeps the VM
// when something fails) belongs to control/; this file moves bytes and state only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "hv/migration_stream.h"
#include "hv/page_heat.h"
#include "hv/snapshot_file.h"
#include "hv/vm.h"

namespace qosvisor::hv {

struct MigrationTuning {
  std::chrono::milliseconds downtime{50};    // the pause the guest may notice
  std::chrono::milliseconds timeout{60000};  // the whole migration
  std::chrono::milliseconds message_timeout{10000};  // one frame, either way
  uint64_t bandwidth_bps = 0;  // pre-copy's cap; 0: none. Stop-and-copy goes at link speed
  uint32_t max_rounds = 30;  // then stop-and-copy whatever is left (reported as not converged)
  size_t batch_pages = 256;  // pages per frame (1 MiB)
  // What the page tracker learnt of the VM's memory before the migration, when it was tracking.
  // With it (and `order_by_heat`), pre-copy sends cold regions first and hot ones last, and
  // holds a round's hot pages back for the next round (so for stop-and-copy, at the latest) when
  // all of them fit half the downtime budget at the link's rate: they would change again and go
  // again. The migration goes on learning from its own rounds either way.
  std::optional<PageHeat> heat;
  bool order_by_heat = true;
  // The destination maps this VM's frozen base image (pre-migrated): round 0 sends only the
  // pages the VM wrote over it. Only for a copy-on-write VM.
  bool base_at_destination = false;
};

struct MigrationProgress {
  std::string phase;  // pre-copy | stop-and-copy
  uint32_t round = 0;
  uint64_t bytes_sent = 0;
  uint64_t pages_left = 0;  // changed pages found at the last harvest
  double dirty_pages_per_second = 0;
  double link_bytes_per_second = 0;
  double expected_downtime_ms = 0;
  uint32_t throttle_percent = 0;
};
using MigrationProgressFn = std::function<void(const MigrationProgress&)>;

struct MigrationResult {
  uint32_t rounds = 0;
  uint64_t bytes_sent = 0;  // everything the channel sent, framing included
  uint64_t pages_sent = 0;  // counting a page once per time it was sent
  uint64_t zero_pages_sent = 0;
  uint64_t disk_blocks_sent = 0;
  uint64_t final_pages = 0;           // sent while the VM was paused
  uint64_t pages_held_back = 0;       // hot pages a round left for a later one (counted per round)
  double paused_ms = 0;               // from the pause to the last byte sent (source's share)
  double expected_downtime_ms = 0;    // the estimate that ended pre-copy
  double precopy_ms = 0;
  uint32_t max_throttle_percent = 0;
  bool converged = true;  // false: max_rounds ran out and the rest went in stop-and-copy
};

// Source side. `vm` is running or paused; the channel is authenticated and the destination has
// accepted the offer. Returns with the VM paused and everything sent (the last frame is
// kComplete): the caller then waits for the destination to say it runs the VM. On an error
// the VM runs (or stays paused) as before and tracking is off.
Result<MigrationResult> SendVm(Vm& vm, MigrationChannel& channel, const MigrationTuning& tuning,
                               const MigrationProgressFn& progress);

// Destination side: fills `vm` (made by Vm::CreateIncoming from the offer) with what arrives,
// until kComplete; then applies the state and leaves the VM paused. `received` is called with
// the bytes received so far. An error names the frame or section at fault.
Status ReceiveVm(Vm& vm, MigrationChannel& channel, std::chrono::milliseconds message_timeout,
                 const std::function<void(uint64_t received)>& received);

// The state sections as one payload and back (each section's bounds checked).
std::vector<uint8_t> EncodeSections(const std::vector<Section>& sections);
Result<std::vector<Section>> DecodeSections(std::span<const uint8_t> payload);

}  // namespace qosvisor::hv
