// A discrete-event simulation of one uplink driven by the real scheduler on a virtual clock
// (1 TSC cycle = 1 ns): message arrivals, the link serializing packets, per-message completion.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "common/size_distribution.h"
#include "common/status.h"
#include "sched/config.h"

namespace qosvisor::sim {

// Traffic of one class: its share of the message arrivals and its message sizes.
struct ClassTraffic {
  uint16_t class_id = 0;
  double arrival_weight = 1.0;  // Poisson mode: fraction of arrivals (normalised over classes)
  SizeDistribution sizes = SizeDistribution::Fixed(1460);
  bool size_known = true;  // whether packets carry message_size (srpt needs it)
  // Saturate mode: keep this many of the class's messages queued at all times.
  uint32_t backlog_messages = 0;
};

struct SimConfig {
  sched::SchedulerConfig sched;  // tsc_hz is forced to 1e9 (virtual nanoseconds)
  std::vector<ClassTraffic> traffic;
  // Open loop: Poisson arrivals at `load` x rate_bps (wire bytes), `num_messages` in all.
  // Closed loop (saturate = true): each class keeps backlog_messages queued until `duration_ns`.
  bool saturate = false;
  double load = 0.8;
  uint64_t num_messages = 10'000;
  uint64_t duration_ns = 0;  // stop generating after this (0 = no time limit)
  uint32_t mtu_payload = 1460;
  uint32_t header_bytes = 40;  // wire_len = payload + header_bytes
  uint64_t seed = 1;
  // Extra messages at fixed times (for starvation tests): {arrival_ns, class, size}.
  struct Scheduled {
    uint64_t arrival_ns;
    uint16_t class_id;
    uint64_t size;
  };
  std::vector<Scheduled> scheduled;
  // Periodic messages: every `period_ns` from `start_ns` to `end_ns`, one of `size` bytes.
  struct Periodic {
    uint64_t start_ns, end_ns, period_ns;
    uint16_t class_id;
    uint64_t size;
  };
  std::vector<Periodic> periodic;
  bool use_heap = false;  // run the binary-heap scheduler instead of FFS
};

struct MessageRecord {
  uint64_t id = 0;
  uint16_t class_id = 0;
  uint64_t size = 0;  // payload bytes
  uint32_t packets = 0;
  uint64_t wire_bytes = 0;
  uint64_t arrival_ns = 0;
  uint64_t completion_ns = 0;  // 0 = not complete
  uint32_t dropped = 0;        // packets the scheduler dropped
  // Completion time / time to send it alone on the idle line at rate_bps.
  double Slowdown(uint64_t rate_bps) const;
};

struct SimResult {
  std::vector<MessageRecord> messages;
  uint64_t end_ns = 0;
  uint64_t packets_sent = 0;
  uint64_t packets_dropped = 0;
  // Wire bytes the link sent, per class and per tenant, in [measure_from_ns, measure_to_ns).
  std::vector<uint64_t> class_bytes;
  std::vector<uint64_t> tenant_bytes;
  uint64_t measure_from_ns = 0;
  uint64_t measure_to_ns = 0;
};

// Runs the simulation; `measure_from_ns`/`measure_to_ns` bound the throughput window
// (0, 0 = the whole run). Deterministic for a seed.
Result<SimResult> Run(const SimConfig& config, uint64_t measure_from_ns = 0,
                      uint64_t measure_to_ns = 0);

// The p-th percentile (0..100, nearest rank) of the slowdowns of complete messages whose size is
// in [min_size, max_size]; returns -1 when there are none.
double SlowdownPercentile(const SimResult& r, uint64_t rate_bps, double p, uint64_t min_size,
                          uint64_t max_size);

}  // namespace qosvisor::sim
