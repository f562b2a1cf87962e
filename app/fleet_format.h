// qosctl's text for the fleet's placement commands: where `place` puts a VM, and the moves of a
// `rebalance` plan (planned, or as its job ran them).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace qosvisor::app {

// `command` is "place" or "rebalance"; `reply` the daemon's reply (for a rebalance that ran, its
// job's final description).
std::string FormatPlacement(const std::string& command, const nlohmann::json& reply);

}  // namespace qosvisor::app
