// Direct 64-bit entry, set up by the VMM: GDT + TSS (with an all-open I/O bitmap so ring-3 guest
// code can do port I/O here, where IOPL is ignored), 2 MiB identity page tables, control registers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "hv/boot_abi.h"
#include "hv/guest_memory.h"

namespace qosvisor::hv {

struct E820Entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;  // QV_E820_RAM or QV_E820_RESERVED
};

// The guest's physical memory map: RAM below the EBDA, the legacy hole, RAM from 1 MiB up.
std::vector<E820Entry> BuildE820(uint64_t mem_bytes);

// Writes GDT, TSS, page tables, boot info (e820, cmdline, tsc_khz) into guest memory.
Status WriteBootArea(GuestMemory& mem, const std::string& cmdline, uint64_t tsc_khz);

// Puts a vCPU in 64-bit mode at `entry` with rdi = boot info and rsi = the Linux zero page.
Status ConfigureLongModeVcpu(int vcpu_fd, uint64_t entry);

}  // namespace qosvisor::hv
