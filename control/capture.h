// qosctl capture: a port's packets, both ways, written to a pcap file off the data-plane lcore.
// The lcore only copies each burst into a small pool of its own and a ring (dropping, and
// counting, what does not fit); a job thread writes the copies with libpcap, stamped with the
// time the switch saw them, until the count or the duration is reached.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "control/jobs.h"
#include "vswitch/switch.h"

namespace qosvisor::control {

struct CaptureRequest {
  std::string port;
  std::string file;
  uint64_t count = 0;        // stop after this many packets (0: no limit)
  uint64_t duration_ns = 0;  // stop after this long (0: no limit); one of them is required
};

// Checks a request before a job is started for it (the error names what is wrong).
Status ValidateCapture(const CaptureRequest& request);
// Captures until the request's end; `switch_mu` serializes the switch's control calls.
Result<nlohmann::json> RunCapture(vswitch::Switch& sw, std::mutex& switch_mu,
                                  const CaptureRequest& request, JobProgress& progress);

}  // namespace qosvisor::control
