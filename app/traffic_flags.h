// Command-line description of an in-process workload ("--class rpc:homa:5000:W1:0.2:0:0"), shared
// by `qosvisor run --traffic` and qosgen. Errors name the flag and the part that is wrong.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "pktgen/traffic.h"

namespace qosvisor::app {

// NAME:FRAMING:DST_PORT:SIZES:SHARE:TENANT:SENDER, where FRAMING is udp|homa|tcp and SIZES is a
// built-in workload (W1..W5), fixed=SIZE or uniform=MIN-MAX (sizes with units, e.g. 64KiB).
Result<pktgen::ClassWorkload> ParseClassFlag(const std::string& text);

// The demo workload for examples/edge-default.yaml: Homa RPCs (W1) and TCP bulk (W4) of tenant
// gold from gen0, best-effort UDP (W2) of tenant silver from gen1.
std::vector<pktgen::ClassWorkload> DemoClasses();

// A table of the report for a terminal.
std::string FormatReport(const nlohmann::json& report);

}  // namespace qosvisor::app
