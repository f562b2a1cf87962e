// The on-disk form of a VM snapshot: a directory holding `state.qvsnap` (a versioned header and
// checksummed sections: config, VM-wide KVM state, one per vCPU, one per device, the memory
// index) and `memory.img` (a sparse file as large as guest memory holding only pages that are
// not zero). The state file is written last and renamed into place, so a snapshot that exists is
// complete. Every read is checked: a truncated, corrupted, wrong-version or wrong-architecture
// snapshot is refused with the part that is wrong named, before anything is created from it.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "hv/guest_memory.h"

namespace qosvisor::hv {

inline constexpr uint32_t kSnapshotVersion = 1;
inline constexpr uint32_t kSnapshotArchX86_64 = 62;  // ELF's EM_X86_64
inline constexpr const char* kSnapshotStateFile = "state.qvsnap";
inline constexpr const char* kSnapshotMemoryFile = "memory.img";

enum class SectionKind : uint32_t {
  kConfig = 1,  // the VM's options and its switch attachment (JSON text)
  kVm = 2,      // irqchip, PIT, kvmclock
  kVcpu = 3,    // one per vCPU, index = vCPU number
  kDevice = 4,  // one per device, index = position in the VM's device list
  kMemory = 5,  // memory size and the checksummed extents of the memory file
};

struct Section {
  SectionKind kind;
  uint32_t index = 0;
  std::vector<uint8_t> payload;
};

// A random non-zero 64-bit value: frozen image ids and guest generation ids.
uint64_t RandomNonZero64();

// "vcpu 1", "device 0", "config", ... for error messages.
std::string SectionName(SectionKind kind, uint32_t index);

// Writes `sections` to `path` through a temporary file, fsynced and renamed.
Status WriteStateFile(const std::string& path, const std::vector<Section>& sections);
// Reads and checks the header and every section's bounds and checksum.
Result<std::vector<Section>> ReadStateFile(const std::string& path);

// A run of non-zero pages in the memory file.
struct MemoryExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint32_t crc = 0;
};

struct MemoryIndex {
  uint64_t memory_bytes = 0;
  std::vector<MemoryExtent> extents;
  uint64_t data_bytes() const;
};

std::vector<uint8_t> EncodeMemoryIndex(const MemoryIndex& index);
Result<MemoryIndex> DecodeMemoryIndex(std::span<const uint8_t> payload);

// Called with bytes examined so far and the total, for job progress.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

// Writes guest memory to `path` as a sparse file holding the pages that are not zero, or only
// the pages set in `only_pages` (one bit per 4 KiB page) when it is given.
Result<MemoryIndex> WriteMemoryImage(const GuestMemory& memory, const std::string& path,
                                     const std::vector<uint64_t>* only_pages,
                                     const ProgressFn& progress);
// Checks that `path` holds exactly the data `index` describes: its size, every extent's checksum
// and no data outside the extents. Reads the extents (cost grows with data, not memory size).
Status VerifyMemoryImage(const std::string& path, const MemoryIndex& index);
// Copies the extents of a verified image into guest memory (a diff over a base image).
Status ApplyMemoryImage(const std::string& path, const MemoryIndex& index, GuestMemory& memory);

}  // namespace qosvisor::hv
