// Turns the validated configuration into the switch's and the schedulers' plain specs: port
// indexes, bridge members with VLAN modes, flow rules, message identification per class, and
// one scheduler tree per uplink.
#pragma once

#include "common/status.h"
#include "config/config.h"
#include "sched/config.h"
#include "vswitch/switch.h"

namespace qosvisor::control {

// SwitchSpec::ports is left empty: the caller fills it with the ports it created, in the order
// of config.ports. Packets without set_queue (or with a queue the uplink does not carry) go to
// the uplink's class with queue 0 if it has one, else to its last class.
Result<vswitch::SwitchSpec> BuildSwitchSpec(const config::Config& config);

// The class of that name in `config`, or nullptr.
const config::TrafficClass* FindClass(const config::Config& config, const std::string& name);

// One uplink's scheduler tree; `class_queues` receives the queue id of each scheduler class.
sched::SchedulerConfig BuildSchedulerConfig(const config::Config& config,
                                            const config::Uplink& uplink,
                                            std::vector<uint32_t>& class_queues);

}  // namespace qosvisor::control
