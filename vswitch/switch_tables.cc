// Flow tables replaced while the data plane runs: the control thread publishes a new table and
// frees the old one (or an old member set or receive list) once every worker has passed a poll
// since the swap.
#include <fmt/format.h>

#include <memory>
#include <string>
#include <vector>

#include "vswitch/switch.h"

namespace qosvisor::vswitch {

Status Switch::ReplaceFlows(const std::string& name, const std::vector<FlowRule>& rules) {
  ReclaimRetiredTables();
  for (auto& bridge : bridges_) {
    if (bridge->name != name) continue;
    auto table = FlowTable::Build(rules, bridge->members.get().names);
    if (!table.ok()) return Status::Error(fmt::format("bridge '{}': {}", name, table.message()));
    Retire(bridge->owner);
    bridge->owner = *table;
    bridge->rules = rules;
    bridge->table.store(bridge->owner.get(), std::memory_order_release);
    return Status::Ok();
  }
  return Status::Error(fmt::format("no bridge named '{}'", name));
}

Result<std::vector<FlowRule>> Switch::Flows(const std::string& name) const {
  for (const auto& bridge : bridges_) {
    if (bridge->name == name) return bridge->rules;
  }
  return Status::Error(fmt::format("no bridge named '{}'", name));
}

Result<std::vector<std::string>> Switch::BridgePorts(const std::string& name) const {
  for (const auto& bridge : bridges_) {
    if (bridge->name == name) return bridge->members.get().names;
  }
  return Status::Error(fmt::format("no bridge named '{}'", name));
}

void Switch::Retire(std::shared_ptr<const void> object) {
  Retired r{std::move(object), {}};
  for (const auto& w : workers_) r.epochs.push_back(w->epoch.load(std::memory_order_acquire) + 1);
  retired_.push_back(std::move(r));
}

void Switch::ReclaimRetiredTables() {
  std::erase_if(retired_, [this](const Retired& r) {
    for (size_t i = 0; i < workers_.size(); ++i) {
      if (workers_[i]->epoch.load(std::memory_order_acquire) <= r.epochs[i]) return false;
    }
    return true;
  });
}

}  // namespace qosvisor::vswitch
