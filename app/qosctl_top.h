// qosctl top: a live view of ports, classes and uplinks, refreshed every second with rates from
// the difference between two samples; `q` (or Ctrl-C) quits.
#pragma once

#include <string>

namespace qosvisor::app {

// Runs until `q`; returns qosctl's exit code (3 when the daemon stops answering).
int RunTop(const std::string& socket);

}  // namespace qosvisor::app
