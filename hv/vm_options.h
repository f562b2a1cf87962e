// What it takes to create a VM, as plain values (control/ maps config::Vm onto these), and the
// host-resource check done at create time.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace qosvisor::hv {

// A vflash disk (virtio-blk backed by a file on the host's flash).
struct VflashOptions {
  std::string path;             // backing file; created if missing
  uint64_t size_bytes = 0;      // size when the disk has no metadata yet (0: the file's size)
  std::string id;               // GET_ID answer, at most 20 bytes; default: the file's name
  uint64_t max_size_bytes = 0;  // how far Resize may grow it; 0: as far as the file system has room
};

// A virtio-net NIC. Its backend is a switch port of driver `vm`: once the VM runs, control/ calls
// dataplane::VmPort::Attach(vm.nic(i)) and the port's lcore services the queues.
struct VirtioNetOptions {
  std::array<uint8_t, 6> mac = {0x52, 0x54, 0x00, 0x00, 0x00, 0x01};
};

enum class BootProtocol {
  kAuto,  // ELF64: direct 64-bit entry (rdi = qosvisor boot info, rsi = Linux zero page, so a
          // vmlinux boots too); bzImage: Linux 64-bit boot protocol
  kPvh,   // ELF with a XEN_ELFNOTE_PHYS32_ENTRY note: 32-bit PVH entry, ebx = hvm_start_info
};

struct VmOptions {
  std::string name;  // used in messages, the memfd name and the console prefix
  uint32_t vcpus = 1;
  uint64_t memory_bytes = 64ull << 20;  // multiple of 4 KiB, 2 MiB .. kMaxMemoryBytes
  std::string image;                    // ELF64 x86-64 image or Linux bzImage
  std::string initrd;                   // optional initramfs (Linux)
  BootProtocol boot = BootProtocol::kAuto;
  std::string cmdline;                      // written to the boot-info page for the guest
  std::string serial_log;                   // per-VM serial log path; empty: no log file
  uint64_t serial_log_max_bytes = 1 << 20;  // then renamed to serial_log + ".1", started afresh
  bool serial_console = false;              // also copy serial lines to stdout, prefixed "[name] "
  bool prefault_memory = false;  // MAP_POPULATE guest memory (slower create, faster guest)
  // How long Stop() waits for the guest to honour the shutdown request before forcing it.
  std::chrono::milliseconds shutdown_timeout{3000};
  std::optional<VflashOptions> disk;  // at most one vflash disk
  std::vector<VirtioNetOptions> nics;
  // Where MemAvailable is read for the host-memory check (tests point it at a fake).
  std::string meminfo_path = "/proc/meminfo";
  // Tests only: runs on each vCPU thread once its syscall filter is in place, before the guest.
  std::function<void(uint32_t vcpu)> vcpu_thread_test_hook;
};

// One memory slot below the 32-bit MMIO hole, identity mapped by the boot page tables.
inline constexpr uint64_t kMaxMemoryBytes = 3ull << 30;
inline constexpr uint32_t kMaxVcpus = 64;

struct HostResources {
  uint64_t mem_available_bytes = 0;  // MemAvailable from /proc/meminfo
  uint32_t cpus = 0;                 // online CPUs
};

// Reads MemAvailable from `meminfo_path` and the online CPU count.
Result<HostResources> ReadHostResources(const std::string& meminfo_path = "/proc/meminfo");

// Option ranges, and whether this host can hold the VM: its memory plus `committed_bytes` (the
// memory of this process's other live VMs, which MemAvailable does not show until guests touch
// it) against MemAvailable, and its vCPUs against the host's CPUs.
Status ValidateVmOptions(const VmOptions& options);
// `charge_bytes` is what the new VM takes for itself when that is not its whole memory (a
// copy-on-write VM starts with a small reserve and grows as it writes).
Status CheckHostResources(const VmOptions& options, const HostResources& host,
                          uint64_t committed_bytes = 0,
                          std::optional<uint64_t> charge_bytes = std::nullopt);

}  // namespace qosvisor::hv
