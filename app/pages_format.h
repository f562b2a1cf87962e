// `qosctl vm NAME pages`: what the page tracker learnt of a VM's memory, one line per 2 MiB
// region, and on a terminal a heat strip of the whole memory above it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace qosvisor::app {

std::string FormatPages(const nlohmann::json& pages, bool terminal);

}  // namespace qosvisor::app
