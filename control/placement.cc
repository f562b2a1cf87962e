// The placement planner: a copy of the fleet's figures that each planned move updates, the first
// rule still broken, the cheapest VM to fix it and the host it goes to.
#include "control/placement.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <tuple>

namespace qosvisor::control {
namespace {

using nlohmann::json;
using Groups = std::map<std::string, std::set<std::string>>;  // group -> its VMs

// A host as the plan leaves it so far.
struct Slot {
  const FleetHost* host = nullptr;
  uint32_t vcpus = 0;
  uint64_t memory_bytes = 0;
  uint64_t uplink_bps = 0;
  std::vector<FleetVm> vms;

  const std::string& name() const { return host->name; }
  bool Accepts() const { return host->alive && !host->migration_address.empty(); }
  double PageRate() const {
    double sum = 0;
    for (const FleetVm& vm : vms) sum += vm.pages_per_second;
    return sum;
  }
  double FreeMemoryShare() const {
    if (host->budget_memory_bytes == 0) return 0;
    const uint64_t used = std::min(memory_bytes, host->budget_memory_bytes);
    return static_cast<double>(host->budget_memory_bytes - used) /
           static_cast<double>(host->budget_memory_bytes);
  }
};

// A host breaking a rule, and the VMs whose leaving would help, cheapest first.
struct Violation {
  size_t slot = 0;
  std::string what;  // "is over its vCPU budget (3 of 2)"
  std::vector<FleetVm> candidates;
};

std::string Mib(uint64_t bytes) { return fmt::format("{}MiB", bytes >> 20); }

std::vector<Slot> SlotsOf(const std::vector<FleetHost>& hosts) {
  std::vector<Slot> slots;
  for (const FleetHost& h : hosts) {
    slots.push_back(Slot{&h, h.load.vcpus, h.load.memory_bytes, h.load.uplink_bps, h.load.vm_list});
  }
  std::sort(slots.begin(), slots.end(),
            [](const Slot& a, const Slot& b) { return a.name() < b.name(); });
  return slots;
}

// The configured groups joined with the memberships the hosts publish (each box by its own
// configuration), so a rule written on any box holds wherever its VMs run.
Groups GroupsOf(const std::vector<Slot>& slots, const PlacementRules& rules) {
  Groups groups;
  for (const config::AntiAffinityGroup& g : rules.anti_affinity) {
    groups[g.name].insert(g.vms.begin(), g.vms.end());
  }
  for (const Slot& s : slots) {
    for (const FleetVm& vm : s.vms) {
      for (const std::string& g : vm.groups) groups[g].insert(vm.name);
    }
  }
  return groups;
}

std::vector<std::string> UnknownMembers(const std::vector<Slot>& slots,
                                        const PlacementRules& rules) {
  std::set<std::string> running;
  for (const Slot& s : slots) {
    for (const FleetVm& vm : s.vms) running.insert(vm.name);
  }
  std::vector<std::string> warnings;
  for (const config::AntiAffinityGroup& g : rules.anti_affinity) {
    for (const std::string& name : g.vms) {
      if (!running.contains(name)) {
        warnings.push_back(fmt::format(
            "anti-affinity group '{}': vm '{}' runs on no host of the fleet", g.name, name));
      }
    }
  }
  return warnings;
}

// The cost of moving `vm` by the rule, then its memory (what pre-copy sends at least), then its
// name so that equal VMs are taken in a fixed order.
auto CostOf(const FleetVm& vm, config::LeaveRule rule) {
  double primary = 0;
  switch (rule) {
    case config::LeaveRule::kFewestChangedPages:
      primary = static_cast<double>(vm.changed_pages);
      break;
    case config::LeaveRule::kLowestPageRate:
      primary = vm.pages_per_second;
      break;
    case config::LeaveRule::kSmallestMemory:
      primary = static_cast<double>(vm.memory_bytes);
      break;
  }
  return std::make_tuple(primary, vm.memory_bytes, vm.name);
}

std::string CostText(const FleetVm& vm, config::LeaveRule rule) {
  switch (rule) {
    case config::LeaveRule::kFewestChangedPages:
      return fmt::format("the fewest changed pages ({})", vm.changed_pages);
    case config::LeaveRule::kLowestPageRate:
      return fmt::format("the lowest page-change rate ({:.0f} pages/s)", vm.pages_per_second);
    case config::LeaveRule::kSmallestMemory:
      break;
  }
  return fmt::format("the least memory ({})", Mib(vm.memory_bytes));
}

bool Movable(const FleetVm& vm) { return vm.state == "running" || vm.state == "paused"; }

// The VMs of `slot` that can migrate and whose leaving `helps`, cheapest first.
template <typename Pred>
std::vector<FleetVm> CheapestFirst(const Slot& slot, config::LeaveRule rule, Pred helps) {
  std::vector<FleetVm> out;
  for (const FleetVm& vm : slot.vms) {
    if (Movable(vm) && helps(vm)) out.push_back(vm);
  }
  std::sort(out.begin(), out.end(), [rule](const FleetVm& a, const FleetVm& b) {
    return CostOf(a, rule) < CostOf(b, rule);
  });
  return out;
}

std::optional<Violation> OverBudget(const std::vector<Slot>& slots, config::LeaveRule rule) {
  for (size_t i = 0; i < slots.size(); ++i) {
    const Slot& s = slots[i];
    const FleetHost& h = *s.host;
    if (!h.alive) continue;
    if (s.vcpus > h.budget_vcpus) {
      return Violation{i,
                       fmt::format("is over its vCPU budget ({} of {})", s.vcpus, h.budget_vcpus),
                       CheapestFirst(s, rule, [](const FleetVm& vm) { return vm.vcpus > 0; })};
    }
    if (s.memory_bytes > h.budget_memory_bytes) {
      return Violation{
          i,
          fmt::format("is over its memory budget ({} of {})", Mib(s.memory_bytes),
                      Mib(h.budget_memory_bytes)),
          CheapestFirst(s, rule, [](const FleetVm& vm) { return vm.memory_bytes > 0; })};
    }
    if (s.uplink_bps > h.budget_uplink_bps) {
      return Violation{i,
                       fmt::format("is over its uplink budget ({} of {} bit/s)", s.uplink_bps,
                                   h.budget_uplink_bps),
                       CheapestFirst(s, rule, [](const FleetVm& vm) { return vm.uplink_bps > 0; })};
    }
  }
  return std::nullopt;
}

std::optional<Violation> GroupTogether(const std::vector<Slot>& slots, const Groups& groups,
                                       config::LeaveRule rule) {
  for (size_t i = 0; i < slots.size(); ++i) {
    if (!slots[i].host->alive) continue;
    for (const auto& [group, members] : groups) {
      auto in_group = [&members](const FleetVm& vm) { return members.contains(vm.name); };
      // Every member counts against the rule; only those that can migrate may fix it.
      std::vector<std::string> names;
      for (const FleetVm& vm : slots[i].vms) {
        if (in_group(vm)) names.push_back(vm.name);
      }
      if (names.size() < 2) continue;
      return Violation{i,
                       fmt::format("runs {} VMs of anti-affinity group '{}' ({})", names.size(),
                                   group, fmt::join(names, ", ")),
                       CheapestFirst(slots[i], rule, in_group)};
    }
  }
  return std::nullopt;
}

// Why `slot` cannot take `vm`, or nullopt when it can.
std::optional<std::string> WhyNot(const Slot& slot, const FleetVm& vm, const Groups& groups) {
  const FleetHost& h = *slot.host;
  if (!h.alive) return fmt::format("{} is not alive", h.name);
  if (h.migration_address.empty()) return fmt::format("{} takes no migrations", h.name);
  if (slot.vcpus + vm.vcpus > h.budget_vcpus) {
    return fmt::format("{} has {} of {} vCPUs free", h.name,
                       h.budget_vcpus - std::min(slot.vcpus, h.budget_vcpus), h.budget_vcpus);
  }
  if (slot.memory_bytes + vm.memory_bytes > h.budget_memory_bytes) {
    return fmt::format(
        "{} has {} of {} memory free", h.name,
        Mib(h.budget_memory_bytes - std::min(slot.memory_bytes, h.budget_memory_bytes)),
        Mib(h.budget_memory_bytes));
  }
  if (slot.uplink_bps + vm.uplink_bps > h.budget_uplink_bps) {
    return fmt::format("{} has {} of {} uplink bit/s free", h.name,
                       h.budget_uplink_bps - std::min(slot.uplink_bps, h.budget_uplink_bps),
                       h.budget_uplink_bps);
  }
  for (const auto& [group, members] : groups) {
    if (!members.contains(vm.name)) continue;
    for (const FleetVm& other : slot.vms) {
      if (other.name != vm.name && members.contains(other.name)) {
        return fmt::format("{} runs {} of anti-affinity group '{}'", h.name, other.name, group);
      }
    }
  }
  return std::nullopt;
}

struct Destination {
  size_t slot = 0;
  size_t with_room = 0;  // how many hosts could have taken it
};

// The host with room whose VMs change the fewest pages per second (high-rate VMs spread apart),
// then the one with the most memory free; `why_not` collects why the others cannot.
std::optional<Destination> BestDestination(const std::vector<Slot>& slots, const FleetVm& vm,
                                           size_t from, const Groups& groups,
                                           std::vector<std::string>& why_not) {
  std::optional<Destination> best;
  size_t with_room = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    if (i == from) continue;
    if (auto why = WhyNot(slots[i], vm, groups)) {
      why_not.push_back(*why);
      continue;
    }
    ++with_room;
    auto better = [&](size_t a, size_t b) {
      return std::make_tuple(slots[a].PageRate(), -slots[a].FreeMemoryShare()) <
             std::make_tuple(slots[b].PageRate(), -slots[b].FreeMemoryShare());
    };
    if (!best || better(i, best->slot)) best = Destination{i, 0};
  }
  if (best) best->with_room = with_room;
  return best;
}

void Apply(std::vector<Slot>& slots, size_t from, size_t to, const FleetVm& vm) {
  Slot& a = slots[from];
  Slot& b = slots[to];
  a.vcpus -= std::min(a.vcpus, vm.vcpus);
  a.memory_bytes -= std::min(a.memory_bytes, vm.memory_bytes);
  a.uplink_bps -= std::min(a.uplink_bps, vm.uplink_bps);
  std::erase_if(a.vms, [&](const FleetVm& v) { return v.name == vm.name; });
  b.vcpus += vm.vcpus;
  b.memory_bytes += vm.memory_bytes;
  b.uplink_bps += vm.uplink_bps;
  b.vms.push_back(vm);
}

std::string VmText(const FleetVm& vm) {
  return fmt::format("{} ({} vCPU{}, {})", vm.name, vm.vcpus, vm.vcpus == 1 ? "" : "s",
                     Mib(vm.memory_bytes));
}

// One move that fixes (part of) `v`, or why there is none.
Result<PlannedMove> MoveFor(std::vector<Slot>& slots, const Violation& v, const Groups& groups,
                            config::LeaveRule rule) {
  const std::string& from = slots[v.slot].name();
  std::vector<std::string> failures;
  for (size_t c = 0; c < v.candidates.size(); ++c) {
    const FleetVm& vm = v.candidates[c];
    std::vector<std::string> why_not;
    auto dest = BestDestination(slots, vm, v.slot, groups, why_not);
    if (!dest) {
      failures.push_back(fmt::format("{}: {}", VmText(vm),
                                     why_not.empty()
                                         ? "there is no other host"
                                         : fmt::format("{}", fmt::join(why_not, "; "))));
      continue;
    }
    const Slot& to = slots[dest->slot];
    PlannedMove move{vm.name, from, to.name(), "", vm.changed_pages, vm.pages_per_second};
    move.reason = fmt::format(
        "{} {}; {} has {} there{}; {} has room and the lowest page-change rate of the {} "
        "host{} with room ({:.0f} pages/s)",
        from, v.what, vm.name, CostText(vm, rule), c == 0 ? "" : " of the VMs that fit elsewhere",
        to.name(), dest->with_room, dest->with_room == 1 ? "" : "s", to.PageRate());
    Apply(slots, v.slot, dest->slot, vm);
    return move;
  }
  if (v.candidates.empty()) {
    return Status::Error(
        fmt::format("host {} {}, but none of its VMs whose leaving would help can migrate (only "
                    "running or paused VMs do)",
                    from, v.what));
  }
  return Status::Error(fmt::format("host {} {} and none of its VMs fits elsewhere: {}", from,
                                   v.what, fmt::join(failures, ". ")));
}

}  // namespace

Result<RebalancePlan> PlanRebalance(const std::vector<FleetHost>& hosts,
                                    const PlacementRules& rules) {
  std::vector<Slot> slots = SlotsOf(hosts);
  const Groups groups = GroupsOf(slots, rules);
  RebalancePlan plan;
  plan.warnings = UnknownMembers(slots, rules);
  size_t vm_count = 0;
  for (const Slot& s : slots) vm_count += s.vms.size();
  // Every move ends one VM's part in a broken rule without starting another, so a VM moves at
  // most once per rule it breaks; the bound only guards against a planner bug looping.
  const size_t limit = (vm_count + 1) * (groups.size() + 4);
  for (size_t round = 0; round < limit; ++round) {
    std::optional<Violation> v = OverBudget(slots, rules.choose);
    if (!v) v = GroupTogether(slots, groups, rules.choose);
    if (!v) return plan;
    auto move = MoveFor(slots, *v, groups, rules.choose);
    if (!move.ok()) {
      return Status::Error(fmt::format(
          "{}{}", move.message(),
          plan.moves.empty() ? ""
                             : fmt::format(" (after {} planned move{})", plan.moves.size(),
                                           plan.moves.size() == 1 ? "" : "s")));
    }
    plan.moves.push_back(std::move(move).value());
  }
  return Status::Error(fmt::format("the plan did not settle after {} moves", limit));
}

Result<Placement> PlaceVm(const std::vector<FleetHost>& hosts, const PlacementRules& rules,
                          const std::string& vm_name) {
  std::vector<Slot> slots = SlotsOf(hosts);
  const Groups groups = GroupsOf(slots, rules);
  std::vector<std::string> names;
  for (size_t i = 0; i < slots.size(); ++i) {
    names.push_back(slots[i].name());
    for (const FleetVm& vm : slots[i].vms) {
      if (vm.name != vm_name) continue;
      std::vector<std::string> why_not;
      auto dest = BestDestination(slots, vm, i, groups, why_not);
      if (!dest) {
        return Status::Error(fmt::format("no host can take vm '{}' ({}): {}", vm_name, VmText(vm),
                                         why_not.empty()
                                             ? "there is no other host"
                                             : fmt::format("{}", fmt::join(why_not, "; "))));
      }
      const Slot& to = slots[dest->slot];
      Placement p{
          vm_name, slots[i].name(), to.name(),
          fmt::format("{} has room and the lowest page-change rate of the {} host{} with "
                      "room ({:.0f} pages/s)",
                      to.name(), dest->with_room, dest->with_room == 1 ? "" : "s", to.PageRate()),
          UnknownMembers(slots, rules)};
      return p;
    }
  }
  return Status::Error(
      fmt::format("vm '{}' runs on no host of the fleet (hosts: {})", vm_name,
                  names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", "))));
}

json MoveJson(const PlannedMove& m) {
  return {{"vm", m.vm},
          {"from", m.from},
          {"to", m.to},
          {"reason", m.reason},
          {"changed_pages", m.changed_pages},
          {"pages_per_second", m.pages_per_second}};
}

json PlanJson(const RebalancePlan& plan) {
  json moves = json::array();
  for (const PlannedMove& m : plan.moves) moves.push_back(MoveJson(m));
  return {{"moves", moves}, {"warnings", plan.warnings}};
}

json PlacementJson(const Placement& p) {
  return {
      {"vm", p.vm}, {"from", p.from}, {"to", p.to}, {"reason", p.reason}, {"warnings", p.warnings}};
}

}  // namespace qosvisor::control
