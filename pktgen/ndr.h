// RFC 2544-style throughput search: binary search on the offered rate for the highest rate
// whose trial loses no more than a threshold (NDR at 0 loss, PDR above it).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "common/status.h"

namespace qosvisor::pktgen {

struct NdrTrial {
  uint64_t rate_bps = 0;  // offered
  uint64_t sent = 0;      // packets
  uint64_t received = 0;
  double loss = 0;  // fraction of sent packets not received
  bool pass = false;
};

struct NdrOptions {
  uint64_t min_bps = 1'000'000;
  uint64_t max_bps = 1'000'000'000;
  double precision = 0.01;  // stop when (high - low) <= precision × high
  double loss = 0;          // allowed loss fraction; 0 is NDR, more is PDR
};

struct NdrResult {
  bool found = false;     // false: even min_bps lost too much
  uint64_t rate_bps = 0;  // highest passing rate tried
  std::vector<NdrTrial> trials;
};

Status ValidateNdr(const NdrOptions& options);

// Runs `trial(rate)` (which fills sent and received) as often as the search needs; `on_trial`
// sees every finished trial (for per-trial lines). Stops at the first trial error.
Result<NdrResult> SearchNdr(const NdrOptions& options,
                            const std::function<Result<NdrTrial>(uint64_t rate_bps)>& trial,
                            const std::function<void(const NdrTrial&)>& on_trial = {});

}  // namespace qosvisor::pktgen
