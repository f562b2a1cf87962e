// qosgen's run and ndr steps below the command line: flags and workload files → a validated plan
// (errors name the flag or file:line:col), and NDR trials over the generator's ports.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/workload.h"
#include "dataplane/mempool.h"
#include "dataplane/port.h"
#include "pktgen/enqueue_stamps.h"
#include "pktgen/gen_port.h"
#include "pktgen/ndr.h"
#include "pktgen/port_runner.h"

namespace qosvisor::app {

// The flags shared by `qosgen run` and `qosgen ndr`, as written (empty: not given).
struct GenFlags {
  std::string port;
  std::string rx_port;
  std::vector<std::string> classes;  // --class
  std::string workload;              // --workload FILE
  std::string rate, load, sender_rate, mss, seed, duration, drain;
  std::string arrival;  // poisson | constant | onoff=ON/OFF, for every class
  std::string vlan, dst_mac, dst_ip;
  std::string link_rate, link_buffer;
  std::string link_wait;  // how long to wait for the ports' links (default 10s)
  std::string poll;       // busy | sleep=DURATION
  std::string transport;  // open | window | homa
  std::string window, rtt_bytes, overcommit, rto;
  bool realtime = false;
  bool exact_load = false;
};

struct GenPlan {
  pktgen::WorkloadSpec spec;
  pktgen::RunOptions options;
  pktgen::GenPortSpec port;
  std::optional<pktgen::GenPortSpec> rx_port;
  nlohmann::json description;  // what was asked for, for the JSON document
  uint64_t link_wait_ns = 10'000'000'000;
};

// Every problem at once, one per line; exit status 2 material.
Result<GenPlan> BuildPlan(const GenFlags& flags);

// A loaded workload file as the generator's spec.
pktgen::WorkloadSpec SpecFromWorkload(const config::Workload& w);

// "1%" → 0.01, "0.5" → 0.5 (a bare number is a fraction); `flag` names the option in errors.
Result<double> ParseFraction(const std::string& text, const std::string& flag);

// Opened ports for a plan: senders (one per sender in the spec; all the same port) and receiver
// (nullptr for a null sink without --rx-port).
struct OpenPorts {
  std::unique_ptr<dataplane::Port> tx;
  std::unique_ptr<dataplane::Port> rx;  // only when --rx-port was given
  pktgen::PortEndpoints endpoints;
  // Held while the receiver takes the kernel's receive times (see enqueue_stamps.h).
  std::optional<pktgen::EnqueueStamps> enqueue_stamps;
};
Result<OpenPorts> OpenPlanPorts(const GenPlan& plan, dataplane::Mempool& pool);

// Waits until every opened port reports its link up (memif and virtio_user connect to the
// appliance first); an error naming the port after `timeout_ns`.
Status WaitForLinks(const OpenPorts& ports, uint64_t timeout_ns);

// One NDR trial: the plan's workload at `rate_bps` total offered (constant-rate arrivals, as
// RFC 2544 asks) for `trial_ns`.
Result<pktgen::NdrTrial> RunNdrTrial(const GenPlan& plan, const pktgen::PortEndpoints& ports,
                                     uint64_t rate_bps, uint64_t trial_ns);

}  // namespace qosvisor::app
