// C++ face of the Open vSwitch flow parser: checks one ovs-ofctl rule against a bridge's ports.
// Config validation uses it so that a rule that OVS would reject never reaches the switch.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace qosvisor::config {

// Parses 'rule' with port names numbered 1..n in the order of 'port_names'. Returns the rule as
// OVS prints it back, or the parser's reason as the error message.
Result<std::string> CheckFlowRule(std::string_view rule,
                                  const std::vector<std::string>& port_names);

// The N of every "set_queue:N" action in a (normalized) rule, in order.
std::vector<uint32_t> SetQueueIds(std::string_view rule);

}  // namespace qosvisor::config
