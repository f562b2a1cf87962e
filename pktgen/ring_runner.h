// Runs a workload in-process against ring ports: the generator writes frames into the rings the
// switch receives from, the analyser reads the ring the uplink sends to. This is qosgen's ring
// mode, used by `qosvisor run --traffic` and by tests; no second process or NIC is needed.
#pragma once

#include <atomic>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/status.h"
#include "pktgen/traffic.h"

struct rte_mempool;
struct rte_ring;

namespace qosvisor::pktgen {

struct RingEndpoints {
  std::vector<rte_ring*> senders;   // one per WorkloadSpec sender: frames go in here
  rte_ring* receiver = nullptr;     // frames come out of here
  rte_ring* receiver_tx = nullptr;  // optional: where the receiver announces its MAC address
  rte_mempool* pool = nullptr;
};

struct RunOptions {
  uint64_t duration_ns = 2'000'000'000;
  uint64_t drain_ns = 500'000'000;    // after the last arrival, wait at most this for stragglers
  std::atomic<bool>* stop = nullptr;  // optional early stop
  // Called about every 500 ms with the report so far (for a progress line).
  std::function<void(double elapsed_s, const Generator&, const Analyser&)> progress;
};

struct RunResult {
  nlohmann::json report;
  uint64_t generated_packets = 0;
  uint64_t backpressure_waits = 0;  // times a sender ring was full
};

Result<RunResult> RunOverRings(const WorkloadSpec& spec, const RingEndpoints& rings,
                               const RunOptions& options);

}  // namespace qosvisor::pktgen
