// Validation of VM options and the create-time check against what the host has free.
// Messages name the VM and say what would fit, so the user can fix the config.
#include "hv/vm_options.h"

#include <fmt/format.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "common/units.h"

namespace qosvisor::hv {

Result<HostResources> ReadHostResources(const std::string& meminfo_path) {
  std::ifstream in(meminfo_path);
  if (!in) return Status::Error(fmt::format("cannot read {}", meminfo_path));
  HostResources host;
  std::string line;
  bool found = false;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key, unit;
    uint64_t value = 0;
    fields >> key >> value >> unit;
    if (key == "MemAvailable:") {
      host.mem_available_bytes = value * (unit == "kB" ? 1024 : 1);
      found = true;
      break;
    }
  }
  if (!found) return Status::Error(fmt::format("{} has no MemAvailable line", meminfo_path));
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  host.cpus = cpus > 0 ? static_cast<uint32_t>(cpus) : 1;
  return host;
}

Status ValidateVmOptions(const VmOptions& o) {
  if (o.name.empty()) return Status::Error("vm: name is empty");
  if (o.vcpus == 0 || o.vcpus > kMaxVcpus) {
    return Status::Error(
        fmt::format("vm '{}': vcpus {} is out of range 1..{}", o.name, o.vcpus, kMaxVcpus));
  }
  if (o.memory_bytes < (2ull << 20) || o.memory_bytes > kMaxMemoryBytes ||
      o.memory_bytes % 4096 != 0) {
    return Status::Error(
        fmt::format("vm '{}': memory {} must be a multiple of 4KiB between 2MiB and {}", o.name,
                    FormatSize(o.memory_bytes), FormatSize(kMaxMemoryBytes)));
  }
  if (o.image.empty()) return Status::Error(fmt::format("vm '{}': no image given", o.name));
  return Status::Ok();
}

Status CheckHostResources(const VmOptions& o, const HostResources& host, uint64_t committed_bytes,
                          std::optional<uint64_t> charge_bytes) {
  const uint64_t need = charge_bytes.value_or(o.memory_bytes);
  if (need > host.mem_available_bytes || committed_bytes > host.mem_available_bytes - need) {
    const std::string what = charge_bytes
                                 ? fmt::format("copy-on-write memory {} (of {})", FormatSize(need),
                                               FormatSize(o.memory_bytes))
                                 : fmt::format("memory {}", FormatSize(need));
    if (committed_bytes == 0) {
      return Status::Error(
          fmt::format("vm '{}': {} exceeds what the host has available ({} MemAvailable)", o.name,
                      what, FormatSize(host.mem_available_bytes)));
    }
    return Status::Error(fmt::format(
        "vm '{}': {} plus the {} of the VMs already created exceeds what the host has "
        "available ({} MemAvailable)",
        o.name, what, FormatSize(committed_bytes), FormatSize(host.mem_available_bytes)));
  }
  if (o.vcpus > host.cpus) {
    return Status::Error(fmt::format("vm '{}': {} vcpus but the host has {} CPUs online", o.name,
                                     o.vcpus, host.cpus));
  }
  return Status::Ok();
}

}  // namespace qosvisor::hv
