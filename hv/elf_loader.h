// ELF64 x86-64 loader for direct 64-bit entry: validates an image against the guest's memory and
// copies its PT_LOAD segments to their physical addresses. Errors name the image and the problem.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "hv/guest_memory.h"

namespace qosvisor::hv {

struct ElfSegment {
  uint64_t gpa;  // p_paddr: guests are identity mapped
  uint64_t file_offset;
  uint64_t file_size;
  uint64_t mem_size;  // >= file_size; the rest is zeroed
  bool executable;
};

struct ElfImage {
  uint64_t entry = 0;
  std::vector<ElfSegment> segments;   // sorted by gpa, non-overlapping
  std::optional<uint32_t> pvh_entry;  // XEN_ELFNOTE_PHYS32_ENTRY, if the image has the note
  uint64_t lowest_gpa() const { return segments.front().gpa; }
  uint64_t highest_gpa() const { return segments.back().gpa + segments.back().mem_size; }
};

// Checks `file` (named `what` in errors) for a loadable image in `mem_size` bytes of guest memory:
// ELF64, little endian, x86-64, ET_EXEC, headers inside the file, at least one PT_LOAD, segments
// inside the file and inside [QV_BOOT_AREA_END, mem_size), not overlapping, entry inside an
// executable segment.
Result<ElfImage> ParseElf(std::span<const uint8_t> file, uint64_t mem_size,
                          const std::string& what);

// Copies the segments of an image ParseElf accepted into guest memory (and zeroes their bss).
Status CopyElfToGuest(const ElfImage& image, std::span<const uint8_t> file, GuestMemory& mem);

// Reads the whole file at `path`; the error names the path.
Result<std::vector<uint8_t>> ReadImageFile(const std::string& path);

// ReadImageFile + ParseElf + CopyElfToGuest.
Result<ElfImage> LoadElfFile(const std::string& path, GuestMemory& mem);

}  // namespace qosvisor::hv
