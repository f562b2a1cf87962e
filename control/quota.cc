// Quota checks: which quotas bind a caller, what is charged to each, and refusals that say which
// limit a request would pass and by how much.
#include "control/quota.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "common/units.h"

namespace qosvisor::control {
namespace {

struct Totals {
  uint64_t vms = 0, vcpus = 0, memory_bytes = 0, disk_bytes = 0;
};

Totals Sum(const std::vector<VmDemand>& demands) {
  Totals t;
  for (const VmDemand& d : demands) {
    t.vms += 1;
    t.vcpus += d.vcpus;
    t.memory_bytes += d.memory_bytes;
    t.disk_bytes += d.disk_bytes;
  }
  return t;
}

Totals ChargedTo(const std::string& label, const std::vector<QuotaCharge>& in_use) {
  std::vector<VmDemand> charged;
  for (const QuotaCharge& c : in_use) {
    if (std::find(c.charged.begin(), c.charged.end(), label) != c.charged.end()) {
      charged.push_back(c.demand);
    }
  }
  return Sum(charged);
}

// The first limit of `quota` that `used` + `asked` would pass, as a refusal.
std::optional<std::string> Exceeded(const config::Quota& quota, const Totals& used,
                                    const Totals& asked) {
  const std::string label = QuotaLabel(quota);
  auto count = [&](const char* what, std::optional<uint32_t> limit, uint64_t in_use,
                   uint64_t more) -> std::optional<std::string> {
    if (!limit || in_use + more <= *limit) return std::nullopt;
    return fmt::format("quota of {}: {} {}, in use {}, asked {}", label, what, *limit, in_use,
                       more);
  };
  auto bytes = [&](const char* what, std::optional<uint64_t> limit, uint64_t in_use,
                   uint64_t more) -> std::optional<std::string> {
    if (!limit || in_use + more <= *limit) return std::nullopt;
    return fmt::format("quota of {}: {} {}, in use {}, asked {}", label, what, FormatSize(*limit),
                       FormatSize(in_use), FormatSize(more));
  };
  if (auto why = count("vms", quota.vms, used.vms, asked.vms)) return why;
  if (auto why = count("vcpus", quota.vcpus, used.vcpus, asked.vcpus)) return why;
  if (auto why = bytes("memory", quota.memory_bytes, used.memory_bytes, asked.memory_bytes)) {
    return why;
  }
  return bytes("disk", quota.disk_bytes, used.disk_bytes, asked.disk_bytes);
}

std::optional<std::string> ClassRefused(const config::Quota& quota,
                                        const std::vector<VmDemand>& asked) {
  if (!quota.classes) return std::nullopt;
  const std::vector<std::string>& allowed = *quota.classes;
  for (const VmDemand& d : asked) {
    for (const std::string& c : d.classes) {
      if (std::find(allowed.begin(), allowed.end(), c) != allowed.end()) continue;
      return fmt::format("quota of {}: NIC class '{}' is not allowed ({})", QuotaLabel(quota), c,
                         allowed.empty() ? std::string("no class is")
                                         : fmt::format("allowed: {}", fmt::join(allowed, ", ")));
    }
  }
  return std::nullopt;
}

}  // namespace

std::string QuotaLabel(const config::Quota& quota) {
  return quota.user ? "user " + *quota.user : "group " + quota.group.value_or("");
}

std::vector<const config::Quota*> QuotasFor(const std::vector<config::Quota>& quotas,
                                            const Caller& caller) {
  std::vector<const config::Quota*> out;
  for (const config::Quota& q : quotas) {
    const bool binds =
        q.user ? *q.user == caller.name
               : q.group && std::find(caller.group_names.begin(), caller.group_names.end(),
                                      *q.group) != caller.group_names.end();
    if (binds) out.push_back(&q);
  }
  return out;
}

Result<std::vector<std::string>> CheckQuotas(const std::vector<config::Quota>& quotas,
                                             const Caller& caller,
                                             const std::vector<QuotaCharge>& in_use,
                                             const std::vector<VmDemand>& asked) {
  const std::vector<const config::Quota*> binding = QuotasFor(quotas, caller);
  if (binding.empty()) {
    return Status::Error(fmt::format(
        "permission denied: no quota names {} or one of its groups ({}), so it may create no "
        "VMs; add one under quotas: in the configuration",
        caller.Describe(),
        caller.group_names.empty() ? "none"
                                   : fmt::format("{}", fmt::join(caller.group_names, ", "))));
  }
  const Totals wanted = Sum(asked);
  std::vector<std::string> labels;
  for (const config::Quota* q : binding) {
    if (auto why = ClassRefused(*q, asked)) return Status::Error(*why);
    if (auto why = Exceeded(*q, ChargedTo(QuotaLabel(*q), in_use), wanted)) {
      return Status::Error(*why);
    }
    labels.push_back(QuotaLabel(*q));
  }
  return labels;
}

}  // namespace qosvisor::control
