// Quotas: what a non-root member of control.group may create over the control socket. A quota
// names a user or a group (config::Quota); a caller is bound by its user's quota and by those of
// all its groups, and each VM it creates is charged to every one of them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "control/control_server.h"

namespace qosvisor::control {

// What one VM takes from a quota.
struct VmDemand {
  uint32_t vcpus = 0;
  uint64_t memory_bytes = 0;
  uint64_t disk_bytes = 0;
  std::vector<std::string> classes;  // its NICs' classes; a NIC without a class adds none
};

// A VM that exists (or that a deploy under way will make) and the quotas it counts against.
struct QuotaCharge {
  std::vector<std::string> charged;  // labels of quotas: "user alice", "group devs"
  VmDemand demand;
};

// "user alice" or "group devs".
std::string QuotaLabel(const config::Quota& quota);

// The quotas that bind `caller`: its user's, and those of every group it is in.
std::vector<const config::Quota*> QuotasFor(const std::vector<config::Quota>& quotas,
                                            const Caller& caller);

// Whether `caller` may add the VMs `asked` to what `in_use` charges already. Returns the labels
// of the quotas that bind it (what the new VMs are to be charged to), or a refusal that names
// the quota and the figures, e.g. "quota of group devs: vcpus 4, in use 3, asked 2".
Result<std::vector<std::string>> CheckQuotas(const std::vector<config::Quota>& quotas,
                                             const Caller& caller,
                                             const std::vector<QuotaCharge>& in_use,
                                             const std::vector<VmDemand>& asked);

}  // namespace qosvisor::control
