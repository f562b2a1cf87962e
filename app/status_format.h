// Tables of the control API's replies: `ports` and `stats` (shared by qosctl and the summary
// `qosvisor run` prints when it stops), and qosctl's status, vms, apps, quota, jobs, job, bridges,
// flows, classes and hosts (uplinks: uplinks_format.h).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace qosvisor::app {

std::string FormatPorts(const nlohmann::json& ports);
std::string FormatStats(const nlohmann::json& stats);
std::string FormatStatus(const nlohmann::json& status);
std::string FormatVms(const nlohmann::json& vms);
std::string FormatApps(const nlohmann::json& apps);
std::string FormatQuota(const nlohmann::json& quota);
std::string FormatJobs(const nlohmann::json& jobs);
std::string FormatJob(const nlohmann::json& job);
std::string FormatBridges(const nlohmann::json& bridges);
std::string FormatFlows(const nlohmann::json& flows);
std::string FormatClasses(const nlohmann::json& classes);
// The fleet registry's hosts: load against budget, migration address, labels.
std::string FormatHosts(const nlohmann::json& hosts);
// The table for `command`'s reply; the JSON itself for replies without one.
std::string FormatReply(const std::string& command, const nlohmann::json& reply);

}  // namespace qosvisor::app
