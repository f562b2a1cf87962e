// The reply of the control command `uplinks` as terminal tables (qosctl uplinks).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace qosvisor::app {

std::string FormatUplinks(const nlohmann::json& uplinks);

}  // namespace qosvisor::app
