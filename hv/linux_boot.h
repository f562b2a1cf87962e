// Linux boot structures: the x86 zero page (boot_params) for 64-bit entry, bzImage parsing for
// the 64-bit boot protocol, and PVH's hvm_start_info for ELF images with the Xen PVH note.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "hv/guest_memory.h"

namespace qosvisor::hv {

// Zero page and PVH start info share this page (a VM uses one protocol per boot).
inline constexpr uint64_t kZeroPageGpa = 0x7000;
inline constexpr uint64_t kPvhStartInfoGpa = 0x7000;
inline constexpr uint64_t kKernelLoadGpa = 0x100000;

struct InitrdPlacement {
  uint64_t gpa = 0;
  uint64_t size = 0;
};

// A bzImage checked for the 64-bit boot protocol.
struct BzImage {
  std::vector<uint8_t> setup_header;  // bytes 0x1f1.. of the image, copied into the zero page
  uint64_t payload_offset = 0;        // protected-mode kernel: loaded at kKernelLoadGpa
  uint64_t payload_size = 0;
  uint64_t entry = 0;  // 64-bit entry: load address + 0x200
  uint32_t initrd_addr_max = 0;
};

bool LooksLikeBzImage(std::span<const uint8_t> file);
// Errors name the image: no "HdrS" magic, protocol older than 2.12 (no 64-bit entry), no
// XLF_KERNEL_64, truncated, larger than memory.
Result<BzImage> ParseBzImage(std::span<const uint8_t> file, uint64_t mem_size,
                             const std::string& what);

// Places an initrd of `size` bytes as high as the kernel allows and memory holds, page aligned,
// above `lowest_free`.
Result<InitrdPlacement> PlaceInitrd(uint64_t size, uint64_t mem_size, uint64_t lowest_free,
                                    uint32_t initrd_addr_max);

// Writes boot_params at kZeroPageGpa: e820 map, cmdline pointer (QV_BOOT_CMDLINE_GPA, already
// written), initrd, and the bzImage's setup header if there is one.
Status WriteZeroPage(GuestMemory& mem, uint32_t cmdline_size,
                     const std::optional<InitrdPlacement>& initrd,
                     std::span<const uint8_t> setup_header);

// Writes hvm_start_info (with memory map and an initrd module) at kPvhStartInfoGpa.
Status WritePvhStartInfo(GuestMemory& mem, const std::optional<InitrdPlacement>& initrd);

// Puts a vCPU in 32-bit flat protected mode at `entry` with ebx = start info (PVH).
Status ConfigurePvhVcpu(int vcpu_fd, uint32_t entry);

}  // namespace qosvisor::hv
