// `qosctl images` and the result of `qosctl vm NAME premigrate`: frozen images held here for
// other hosts, images sent from here, and what a pre-migration copied where.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace qosvisor::app {

std::string FormatImages(const nlohmann::json& images);
// The finished premigrate (or drop-image) job's result, one line per host.
std::string FormatPremigration(const nlohmann::json& job);

}  // namespace qosvisor::app
