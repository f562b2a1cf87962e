// Deploy planning: tiers into dependency waves, VM names, the template's ready line per tier.
#include "control/blueprint_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace qosvisor::control {
namespace {

const config::Blueprint* FindBlueprint(const config::Config& config, const std::string& name) {
  for (const config::Blueprint& b : config.blueprints) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

const config::VmTemplate* FindTemplate(const config::Config& config, const std::string& name) {
  for (const config::VmTemplate& t : config.templates) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::string Known(const config::Config& config) {
  std::vector<std::string> names;
  for (const config::Blueprint& b : config.blueprints) names.push_back(b.name);
  return names.empty() ? "the configuration has none"
                       : fmt::format("defined: {}", fmt::join(names, ", "));
}

// Wave of each tier: 0 without dependencies, else one more than its latest dependency. Errors on
// a cycle (validation refuses them; a plan never trusts that).
Result<std::vector<size_t>> Waves(const config::Blueprint& b) {
  const size_t n = b.tiers.size();
  std::vector<size_t> wave(n, 0);
  std::vector<bool> placed(n, false);
  for (size_t done = 0; done < n;) {
    bool progress = false;
    for (size_t i = 0; i < n; ++i) {
      if (placed[i]) continue;
      size_t w = 0;
      bool ready = true;
      for (const std::string& dep : b.tiers[i].depends_on) {
        auto it = std::find_if(b.tiers.begin(), b.tiers.end(),
                               [&](const config::Tier& t) { return t.name == dep; });
        if (it == b.tiers.end()) {
          return Status::Error(
              fmt::format("blueprint '{}': tier '{}' depends on '{}', which it "
                          "does not have",
                          b.name, b.tiers[i].name, dep));
        }
        const size_t d = static_cast<size_t>(it - b.tiers.begin());
        ready = ready && placed[d];
        if (placed[d]) w = std::max(w, wave[d] + 1);
      }
      if (!ready) continue;
      wave[i] = w;
      placed[i] = true;
      progress = true;
      ++done;
    }
    if (!progress) {
      std::vector<std::string> stuck;
      for (size_t i = 0; i < n; ++i) {
        if (!placed[i]) stuck.push_back(b.tiers[i].name);
      }
      return Status::Error(fmt::format("blueprint '{}': tiers {} depend on each other in a cycle",
                                       b.name, fmt::join(stuck, ", ")));
    }
  }
  return wave;
}

Result<PlannedTier> PlanTier(const config::Config& config, const config::Tier& tier,
                             const std::string& app) {
  const config::VmTemplate* t = FindTemplate(config, tier.template_name);
  if (t == nullptr) {
    return Status::Error(
        fmt::format("tier '{}': no template named '{}'", tier.name, tier.template_name));
  }
  PlannedTier out;
  out.name = tier.name;
  out.ready = t->ready;
  out.ready_timeout_ns = t->ready_timeout_ns.value_or(config::kDefaultReadyTimeoutNs);
  for (uint32_t i = 1; i <= tier.count; ++i) {
    PlannedVm vm{fmt::format("{}-{}-{}", app, tier.name, i), tier.template_name, {}};
    if (!IsVmName(vm.name)) {
      return Status::Error(fmt::format(
          "tier '{}': VM name '{}' is not usable (VM names are <app>-<tier>-<i>: 1 to 32 "
          "letters, digits, '-' or '_'); deploy with a shorter --name",
          tier.name, vm.name));
    }
    if (tier.class_name) vm.overrides["class"] = *tier.class_name;
    out.vms.push_back(std::move(vm));
  }
  return out;
}

}  // namespace

bool IsVmName(const std::string& name) {
  return !name.empty() && name.size() <= 32 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

size_t DeployPlan::VmCount() const { return Vms().size(); }

std::vector<const PlannedVm*> DeployPlan::Vms() const {
  std::vector<const PlannedVm*> out;
  for (const auto& wave : waves) {
    for (const PlannedTier& tier : wave) {
      for (const PlannedVm& vm : tier.vms) out.push_back(&vm);
    }
  }
  return out;
}

Result<DeployPlan> PlanDeploy(const config::Config& config, const std::string& blueprint,
                              const std::string& app) {
  const config::Blueprint* b = FindBlueprint(config, blueprint);
  if (b == nullptr) {
    return Status::Error(fmt::format("no blueprint named '{}'; {}", blueprint, Known(config)));
  }
  if (!IsVmName(app)) {
    return Status::Error(fmt::format(
        "app name '{}': use 1 to 32 letters, digits, '-' or '_' (it starts its VMs' names)", app));
  }
  if (b->tiers.empty()) return Status::Error(fmt::format("blueprint '{}' has no tiers", blueprint));
  auto waves = Waves(*b);
  if (!waves.ok()) return waves.status();
  DeployPlan plan{app, blueprint, {}};
  plan.waves.resize(*std::max_element(waves->begin(), waves->end()) + 1);
  for (size_t i = 0; i < b->tiers.size(); ++i) {
    auto tier = PlanTier(config, b->tiers[i], app);
    if (!tier.ok()) return tier.status();
    plan.waves[(*waves)[i]].push_back(std::move(tier).value());
  }
  return plan;
}

}  // namespace qosvisor::control
