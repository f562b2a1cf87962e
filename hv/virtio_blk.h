// virtio-blk "vflash": a virtual disk backed by a file on the host's flash, with read, write,
// flush and get-id, and online resize through the control path (space first, metadata last,
// atomically). Disk and metadata files are created 0600: they hold the guest's data.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "hv/unique_fd.h"
#include "hv/virtio_mmio.h"
#include "hv/vm_options.h"

namespace qosvisor::hv {

struct VflashCounters {
  uint64_t reads = 0, writes = 0, flushes = 0, get_ids = 0;
  uint64_t bytes_read = 0, bytes_written = 0;
  uint64_t io_errors = 0;    // out-of-range sectors, bad lengths, host I/O errors
  uint64_t unsupported = 0;  // unknown request types
  uint64_t resizes = 0;
};

class VirtioBlk : public VirtioMmioDevice {
 public:
  static constexpr uint32_t kDeviceId = 2;
  static constexpr uint64_t kSectorSize = 512;

  // Opens (or creates) the disk. Its size comes from "<path>.meta" if present (and the file grows
  // to match, finishing a resize that a crash interrupted), else from options.size_bytes.
  static Result<std::unique_ptr<VirtioBlk>> Create(GuestMemory& mem, const VflashOptions& options);
  static std::string MetadataPath(const std::string& path) { return path + ".meta"; }

  // Grows the disk online, within options.max_size_bytes and the free space of the file system:
  // allocates the new space in the backing file, then commits the new size to the metadata file
  // (write, fsync, rename), then tells the guest with a config-change interrupt. If any step
  // fails, the file, the metadata and the guest's view stay as they were. Shrinking is refused.
  Status Resize(uint64_t new_size_bytes);

  uint64_t capacity_bytes() const;
  VflashCounters blk_counters() const;
  const std::string& path() const { return options_.path; }

  // Live migration moves the disk with the memory: the blocks of the file that hold data first,
  // then those the guest wrote since, in blocks of kTrackBlockBytes.
  static constexpr uint32_t kTrackBlockBytes = 64 * 1024;
  void TrackWrites(bool on);
  // Blocks written since the previous call (or since tracking began); reading clears them.
  std::vector<uint64_t> TakeWrittenBlocks();
  // Blocks of the backing file that may hold data (the rest are holes, read back as zeros).
  Result<std::vector<uint64_t>> AllocatedBlocks() const;
  // Reads block `block` (short at the end of the disk) / writes it, for the migration's copy.
  Result<std::vector<uint8_t>> ReadBlock(uint64_t block) const;
  Status WriteBlock(uint64_t block, std::span<const uint8_t> data);
  const char* name() const override { return "virtio-blk"; }

 protected:
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void OnNotify(uint16_t q) override;
  // The capacity the guest saw. A disk grown since is accepted (the guest is told, as after an
  // online resize); a smaller one is refused: the guest may have data beyond its end.
  void SaveDeviceState(StateWriter& w) const override;
  void LoadDeviceState(StateReader& r) override;

 private:
  VirtioBlk(GuestMemory& mem, VflashOptions options, UniqueFd fd, uint64_t size);
  // Handles one request; false if the chain is malformed (the device is then broken).
  bool HandleRequest(const Virtqueue::Chain& chain, uint32_t* used_len);
  // pread/pwrite between the file and a byte range of the chain's readable (out) or writable
  // (in) buffers.
  bool FileIo(const Virtqueue::Chain& chain, bool to_guest, uint64_t chain_offset, uint64_t len,
              uint64_t file_offset);
  // Why the disk may not grow to new_size (caller holds mu_), or Ok.
  Status CheckGrowth(uint64_t new_size) const;
  // Reserves [size_bytes_, new_size) in the backing file; on failure the file keeps its size.
  Status AllocateGrowth(uint64_t new_size);

  void MarkBlocksWritten(uint64_t file_offset, uint64_t len);  // mu_ held

  VflashOptions options_;
  UniqueFd fd_;
  bool tracking_ = false;               // guarded by mu_
  std::vector<uint64_t> written_blocks_;  // guarded by mu_; one bit per kTrackBlockBytes
  uint64_t size_bytes_;          // guarded by mu_
  VflashCounters blk_counters_;  // guarded by mu_
};

// Writes "<path>.meta" atomically (temporary file, fsync, rename, fsync of the directory).
Status WriteVflashMetadata(const std::string& path, uint64_t size_bytes, const std::string& id);

}  // namespace qosvisor::hv
