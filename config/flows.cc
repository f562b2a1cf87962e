// Wraps qv_ovs_flow_check (C, over the Open vSwitch library) for config validation, and finds
// the queue ids a rule sends to, which must name classes.
#include "config/flows.h"

#include <array>
#include <cctype>

#include "vswitch/ovs/ovs_flow_shim.h"

namespace qosvisor::config {

Result<std::string> CheckFlowRule(std::string_view rule,
                                  const std::vector<std::string>& port_names) {
  const std::string text(rule);
  std::vector<qv_ovs_port_name> ports;
  ports.reserve(port_names.size());
  for (size_t i = 0; i < port_names.size(); ++i) {
    ports.push_back(qv_ovs_port_name{port_names[i].c_str(), static_cast<uint32_t>(i + 1)});
  }
  // Rules are one line each; 4 KiB holds any rule a person writes in YAML.
  std::array<char, 4096> normalized{};
  std::array<char, 1024> error{};
  if (qv_ovs_flow_check(text.c_str(), ports.data(), ports.size(), normalized.data(),
                        normalized.size(), error.data(), error.size()) != 0) {
    return Status::Error(error.data());
  }
  return std::string(normalized.data());
}

std::vector<uint32_t> SetQueueIds(std::string_view rule) {
  constexpr std::string_view kAction = "set_queue:";
  std::vector<uint32_t> ids;
  for (size_t pos = rule.find(kAction); pos != std::string_view::npos;
       pos = rule.find(kAction, pos + 1)) {
    uint64_t id = 0;
    size_t i = pos + kAction.size();
    bool any = false;
    for (; i < rule.size() && std::isdigit(static_cast<unsigned char>(rule[i])); ++i) {
      id = id * 10 + static_cast<uint64_t>(rule[i] - '0');
      if (id > UINT32_MAX) break;
      any = true;
    }
    if (any) ids.push_back(static_cast<uint32_t>(id));
  }
  return ids;
}

}  // namespace qosvisor::config
