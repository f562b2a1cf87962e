// Drives a workload through ports: the generator sends bursts out of one port per sender, the
// analyser receives on another (or the same) port, optionally behind an emulated bottleneck.
// qosgen runs it over DPDK ethdevs (memif, virtio_user, af_packet, tap, pcap, null, ring).
#pragma once

#include <atomic>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/status.h"
#include "dataplane/port.h"
#include "pktgen/traffic.h"

struct rte_mempool;

namespace qosvisor::pktgen {

struct PortEndpoints {
  std::vector<dataplane::Port*> senders;  // one per WorkloadSpec sender
  dataplane::Port* receiver = nullptr;    // nullptr: nothing is received (a sink test)
  rte_mempool* pool = nullptr;            // where the generator's frames come from
  // Send one broadcast from the receiver's MAC out of `receiver` first, so a learning switch
  // knows where the receiver is before the first message.
  bool announce = false;
  // Whether frames arrive stamped in DPDK's timestamp field, and in which clock: the kernel's
  // receive time (pcap on a live interface: microseconds of CLOCK_REALTIME), or the TSC (a ring
  // port that stamps departures in this process). Frames are then measured at those times.
  enum class Stamps : uint8_t { kNone, kRealtimeMicros, kTsc };
  Stamps receiver_stamps = Stamps::kNone;
};

struct RunOptions {
  uint64_t duration_ns = 2'000'000'000;
  // After the last arrival, at most this long to send what is left; then, sending stopped, at
  // most as long again for what is on its way.
  uint64_t drain_ns = 500'000'000;
  std::atomic<bool>* stop = nullptr;  // optional early stop
  // Called about every `progress_ns` with the state so far (for a progress line).
  std::function<void(double elapsed_s, const Generator&, const Analyser&)> progress;
  uint64_t progress_ns = 500'000'000;
  // Receive-side link emulation (0: off): frames are measured when they leave a FIFO of
  // `link_buffer_bytes` drained at `link_bps`.
  uint64_t link_bps = 0;
  uint64_t link_buffer_bytes = 1 << 20;
  // How the loop waits between polls. 0: it busy-polls (highest rates). Otherwise it sleeps this
  // long after every round, so that on a box where the switch and the generator share cores the
  // loop is runnable only briefly and, with `realtime`, is never kept off its core by a
  // time-shared neighbour: every received frame is stamped within a sleep of its arrival.
  uint64_t poll_sleep_ns = 0;
  bool realtime = false;  // SCHED_FIFO for the loop (needs CAP_SYS_NICE); only with a sleep
  // Probe the unloaded path first (a few ms) and measure slowdown against it, as Homa does; off:
  // slowdown is against the message's bytes at the bottleneck rate alone.
  bool measure_unloaded = true;
  // Scale the arrival schedule so the run offers exactly the load asked for
  // (WorkloadSpec::exact_load_ns over the duration).
  bool exact_load = false;
};

struct RunResult {
  nlohmann::json report;
  uint64_t generated_packets = 0;
  uint64_t backpressure_waits = 0;  // times a sender could not take a whole burst
};

Result<RunResult> RunOverPorts(const WorkloadSpec& spec, const PortEndpoints& ports,
                               const RunOptions& options);

}  // namespace qosvisor::pktgen
