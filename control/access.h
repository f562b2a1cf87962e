// Who may send which command: root and the user qosvisor runs as may send everything; other
// members of control.group only the self-service commands of one table (access.cc): the read-only
// ones, and creating and destroying their own VMs and apps within their quotas.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "control/control_server.h"

namespace qosvisor::control {

// The control server's admission: ok, or a refusal naming the rule.
Status AdmitCommand(const std::string& command, const nlohmann::json& args, const Caller& caller);

// The self-service commands, for messages and help: "status, ports, ..., vm create, ...".
std::string SelfServiceCommands();

}  // namespace qosvisor::control
