// Tables of the control API's `ports` and `stats` replies, shared by qosctl and the summary
// `qosvisor run` prints when it stops.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace qosvisor::app {

std::string FormatPorts(const nlohmann::json& ports);
std::string FormatStats(const nlohmann::json& stats);

}  // namespace qosvisor::app
