// vflash request handling (virtio 1.x §5.2) and its size metadata. The metadata is the source of
// truth for the disk size: it is replaced atomically once the file has grown, so after a crash
// the disk is either its old size or its new one, never a size whose space was not there.
#include "hv/virtio_blk.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "hv/data_extents.h"

namespace qosvisor::hv {
namespace {

constexpr uint32_t kTypeIn = 0, kTypeOut = 1, kTypeFlush = 4, kTypeGetId = 8;
constexpr uint8_t kStatusOk = 0, kStatusIoErr = 1, kStatusUnsupported = 2;
constexpr uint64_t kFeatureFlush = 1ull << 9;
constexpr uint64_t kFeatureBlkSize = 1ull << 6;
constexpr uint64_t kIdBytes = 20;
constexpr mode_t kFileMode = 0600;  // the guest's data, and its owner's alone

struct RequestHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};

Status SyncDirectoryOf(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d.valid() || ::fsync(d.get()) != 0) {
    return Status::Error(fmt::format("fsync of directory '{}': {}", dir, std::strerror(errno)));
  }
  return Status::Ok();
}

}  // namespace

Status WriteVflashMetadata(const std::string& path, uint64_t size_bytes, const std::string& id) {
  const std::string meta = VirtioBlk::MetadataPath(path);
  const std::string tmp = meta + ".tmp";
  std::string text = nlohmann::json{{"version", 1}, {"size_bytes", size_bytes}, {"id", id}}.dump();
  text.push_back('\n');
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, kFileMode));
  if (!fd.valid()) {
    return Status::Error(
        fmt::format("vflash '{}': cannot write '{}': {}", path, tmp, std::strerror(errno)));
  }
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
      ::fsync(fd.get()) != 0) {
    return Status::Error(
        fmt::format("vflash '{}': writing '{}': {}", path, tmp, std::strerror(errno)));
  }
  fd.Reset();
  if (::rename(tmp.c_str(), meta.c_str()) != 0) {
    return Status::Error(
        fmt::format("vflash '{}': rename '{}' -> '{}': {}", path, tmp, meta, std::strerror(errno)));
  }
  return SyncDirectoryOf(meta);
}

Result<std::unique_ptr<VirtioBlk>> VirtioBlk::Create(GuestMemory& mem,
                                                     const VflashOptions& options) {
  VflashOptions o = options;
  if (o.id.empty()) o.id = std::filesystem::path(o.path).filename().string();
  if (o.id.size() > kIdBytes) o.id.resize(kIdBytes);
  UniqueFd fd(::open(o.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, kFileMode));
  if (!fd.valid()) {
    return Status::Error(fmt::format("vflash '{}': cannot open: {}", o.path, std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Status::Error(fmt::format("vflash '{}': stat: {}", o.path, std::strerror(errno)));
  }
  uint64_t size = 0;
  std::ifstream meta_in(MetadataPath(o.path));
  if (meta_in) {
    auto meta = nlohmann::json::parse(meta_in, nullptr, /*allow_exceptions=*/false);
    if (meta.is_discarded() || !meta.contains("size_bytes") ||
        !meta["size_bytes"].is_number_unsigned()) {
      return Status::Error(
          fmt::format("vflash '{}': metadata '{}' is not valid JSON with a "
                      "size_bytes number",
                      o.path, MetadataPath(o.path)));
    }
    size = meta["size_bytes"].get<uint64_t>();
  } else {
    size = o.size_bytes != 0 ? o.size_bytes : static_cast<uint64_t>(st.st_size);
    if (size == 0) {
      return Status::Error(fmt::format("vflash '{}': empty file and no size given", o.path));
    }
    if (size % kSectorSize == 0) {
      if (Status s = WriteVflashMetadata(o.path, size, o.id); !s) return s;
    }
  }
  if (size % kSectorSize != 0) {
    return Status::Error(fmt::format("vflash '{}': size {} is not a multiple of {} bytes", o.path,
                                     size, kSectorSize));
  }
  if (static_cast<uint64_t>(st.st_size) < size &&
      ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return Status::Error(
        fmt::format("vflash '{}': growing to {} bytes: {}", o.path, size, std::strerror(errno)));
  }
  return std::unique_ptr<VirtioBlk>(new VirtioBlk(mem, std::move(o), std::move(fd), size));
}

VirtioBlk::VirtioBlk(GuestMemory& mem, VflashOptions options, UniqueFd fd, uint64_t size)
    : VirtioMmioDevice(mem, kDeviceId, 1, kFeatureFlush | kFeatureBlkSize),
      options_(std::move(options)),
      fd_(std::move(fd)),
      size_bytes_(size) {}

uint64_t VirtioBlk::capacity_bytes() const {
  std::lock_guard lock(mu_);
  return size_bytes_;
}

VflashCounters VirtioBlk::blk_counters() const {
  std::lock_guard lock(mu_);
  return blk_counters_;
}

Status VirtioBlk::CheckGrowth(uint64_t new_size) const {
  const std::string& path = options_.path;
  if (new_size % kSectorSize != 0) {
    return Status::Error(fmt::format("vflash '{}': new size {} is not a multiple of {} bytes", path,
                                     new_size, kSectorSize));
  }
  if (new_size < size_bytes_) {
    return Status::Error(fmt::format(
        "vflash '{}': shrinking from {} to {} bytes under a running guest would lose data; "
        "only growing is supported",
        path, size_bytes_, new_size));
  }
  if (options_.max_size_bytes != 0 && new_size > options_.max_size_bytes) {
    return Status::Error(fmt::format("vflash '{}': {} bytes is above the disk's max_size of {}",
                                     path, new_size, options_.max_size_bytes));
  }
  struct statvfs fs {};
  if (::fstatvfs(fd_.get(), &fs) != 0) {
    return Status::Error(fmt::format("vflash '{}': statvfs: {}", path, std::strerror(errno)));
  }
  const uint64_t free_bytes = uint64_t{fs.f_bavail} * fs.f_frsize;
  if (new_size - size_bytes_ > free_bytes) {
    return Status::Error(fmt::format(
        "vflash '{}': growing by {} bytes needs more than the {} bytes free on its file system",
        path, new_size - size_bytes_, free_bytes));
  }
  return Status::Ok();
}

Status VirtioBlk::AllocateGrowth(uint64_t new_size) {
  const int err = ::posix_fallocate(fd_.get(), static_cast<off_t>(size_bytes_),
                                    static_cast<off_t>(new_size - size_bytes_));
  if (err == 0) return Status::Ok();
  // A partial allocation may have extended the file: give it back its size.
  (void)!::ftruncate(fd_.get(), static_cast<off_t>(size_bytes_));
  return Status::Error(fmt::format("vflash '{}': growing to {} bytes: {}", options_.path, new_size,
                                   std::strerror(err)));
}

Status VirtioBlk::Resize(uint64_t new_size) {
  std::lock_guard lock(mu_);
  if (Status s = CheckGrowth(new_size); !s.ok()) return s;
  if (new_size == size_bytes_) return Status::Ok();
  // Space first, so that the committed size never promises blocks the file system lacks; the
  // metadata last, atomically: a crash in between leaves the old size, and a longer file.
  if (Status s = AllocateGrowth(new_size); !s.ok()) return s;
  if (Status s = WriteVflashMetadata(options_.path, new_size, options_.id); !s.ok()) {
    (void)!::ftruncate(fd_.get(), static_cast<off_t>(size_bytes_));
    return s;
  }
  size_bytes_ = new_size;
  ++blk_counters_.resizes;
  RaiseConfigInterrupt();
  return Status::Ok();
}

void VirtioBlk::TrackWrites(bool on) {
  std::lock_guard lock(mu_);
  tracking_ = on;
  if (!on) written_blocks_.clear();
}

void VirtioBlk::MarkBlocksWritten(uint64_t file_offset, uint64_t len) {
  if (!tracking_ || len == 0) return;
  for (uint64_t b = file_offset / kTrackBlockBytes; b <= (file_offset + len - 1) / kTrackBlockBytes;
       ++b) {
    if (b / 64 >= written_blocks_.size()) written_blocks_.resize(b / 64 + 1, 0);
    written_blocks_[b / 64] |= 1ull << (b % 64);
  }
}

std::vector<uint64_t> VirtioBlk::TakeWrittenBlocks() {
  std::lock_guard lock(mu_);
  std::vector<uint64_t> taken;
  taken.swap(written_blocks_);
  return taken;
}

Result<std::vector<uint64_t>> VirtioBlk::AllocatedBlocks() const {
  std::lock_guard lock(mu_);
  const uint64_t blocks = (size_bytes_ + kTrackBlockBytes - 1) / kTrackBlockBytes;
  std::vector<uint64_t> bitmap((blocks + 63) / 64, 0);
  MarkDataUnits(fd_.get(), size_bytes_, kTrackBlockBytes, bitmap);
  return bitmap;
}

Result<std::vector<uint8_t>> VirtioBlk::ReadBlock(uint64_t block) const {
  std::lock_guard lock(mu_);
  const uint64_t offset = block * kTrackBlockBytes;
  if (offset >= size_bytes_) {
    return Status::Error(fmt::format("vflash '{}': block {} lies beyond the disk's {} bytes",
                                     options_.path, block, size_bytes_));
  }
  std::vector<uint8_t> data(std::min<uint64_t>(kTrackBlockBytes, size_bytes_ - offset));
  if (::pread(fd_.get(), data.data(), data.size(), static_cast<off_t>(offset)) !=
      static_cast<ssize_t>(data.size())) {
    return Status::Error(
        fmt::format("vflash '{}': reading block {}: {}", options_.path, block, std::strerror(errno)));
  }
  return data;
}

Status VirtioBlk::WriteBlock(uint64_t block, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  const uint64_t offset = block * kTrackBlockBytes;
  if (offset >= size_bytes_ || data.size() > size_bytes_ - offset || data.size() > kTrackBlockBytes) {
    return Status::Error(fmt::format("vflash '{}': block {} of {} bytes does not fit the disk's {}",
                                     options_.path, block, data.size(), size_bytes_));
  }
  if (::pwrite(fd_.get(), data.data(), data.size(), static_cast<off_t>(offset)) !=
      static_cast<ssize_t>(data.size())) {
    return Status::Error(
        fmt::format("vflash '{}': writing block {}: {}", options_.path, block, std::strerror(errno)));
  }
  return Status::Ok();
}

void VirtioBlk::SaveDeviceState(StateWriter& w) const { w.Put(size_bytes_); }

void VirtioBlk::LoadDeviceState(StateReader& r) {
  uint64_t saved = 0;
  if (!r.Get(&saved, "vflash capacity")) return;
  if (saved > size_bytes_) {
    r.Invalid("vflash capacity",
              fmt::format("the snapshot's disk had {} bytes, '{}' now has {}: the guest may "
                          "hold data beyond its end",
                          saved, options_.path, size_bytes_));
  } else if (saved < size_bytes_) {
    RaiseConfigInterrupt();
  }
}

void VirtioBlk::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  // virtio_blk_config up to blk_size: capacity (sectors), size_max, seg_max, geometry, blk_size.
  uint8_t config[24] = {};
  uint64_t sectors = size_bytes_ / kSectorSize;
  uint32_t blk_size = kSectorSize;
  std::memcpy(config, &sectors, 8);
  std::memcpy(config + 20, &blk_size, 4);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < sizeof(config) ? config[offset + i] : 0;
  }
}

bool VirtioBlk::FileIo(const Virtqueue::Chain& chain, bool to_guest, uint64_t chain_offset,
                       uint64_t len, uint64_t file_offset) {
  int first = to_guest ? chain.readable : 0;
  int last = to_guest ? chain.readable + chain.writable : chain.readable;
  for (int i = first; i < last && len > 0; ++i) {
    const auto& b = chain.bufs[i];
    if (chain_offset >= b.len) {
      chain_offset -= b.len;
      continue;
    }
    uint64_t n = std::min<uint64_t>(b.len - chain_offset, len);
    uint8_t* p = mem_.HostPtr(b.gpa + chain_offset, n);
    if (p == nullptr) return false;
    ssize_t done = to_guest ? ::pread(fd_.get(), p, n, static_cast<off_t>(file_offset))
                            : ::pwrite(fd_.get(), p, n, static_cast<off_t>(file_offset));
    if (done != static_cast<ssize_t>(n)) return false;
    if (to_guest) {
      mem_.MarkWritten(b.gpa + chain_offset, n);
    } else {
      MarkBlocksWritten(file_offset, n);
    }
    file_offset += n;
    len -= n;
    chain_offset = 0;
  }
  return len == 0;
}

bool VirtioBlk::HandleRequest(const Virtqueue::Chain& chain, uint32_t* used_len) {
  RequestHeader h;
  if (chain.readable_bytes < sizeof(h) || chain.writable_bytes < 1) {
    MarkBroken(fmt::format("request {} without a 16-byte header and a status byte", chain.head));
    return false;
  }
  if (CopyFromChain(mem_, chain, 0, &h, sizeof(h)) != sizeof(h)) return false;
  const uint64_t status_offset = chain.writable_bytes - 1;
  uint8_t status = kStatusOk;
  uint64_t written = 0;
  auto in_range = [&](uint64_t len) {
    return len % kSectorSize == 0 && h.sector <= size_bytes_ / kSectorSize &&
           len <= size_bytes_ - h.sector * kSectorSize;
  };
  switch (h.type) {
    case kTypeIn: {
      uint64_t len = chain.writable_bytes - 1;
      ++blk_counters_.reads;
      if (!in_range(len) || !FileIo(chain, true, 0, len, h.sector * kSectorSize)) {
        status = kStatusIoErr;
      } else {
        written = len;
        blk_counters_.bytes_read += len;
      }
      break;
    }
    case kTypeOut: {
      uint64_t len = chain.readable_bytes - sizeof(h);
      ++blk_counters_.writes;
      if (!in_range(len) || !FileIo(chain, false, sizeof(h), len, h.sector * kSectorSize)) {
        status = kStatusIoErr;
      } else {
        blk_counters_.bytes_written += len;
      }
      break;
    }
    case kTypeFlush:
      ++blk_counters_.flushes;
      if (::fdatasync(fd_.get()) != 0) status = kStatusIoErr;
      break;
    case kTypeGetId: {
      ++blk_counters_.get_ids;
      char id[kIdBytes] = {};
      std::memcpy(id, options_.id.data(), std::min<size_t>(options_.id.size(), kIdBytes));
      written = CopyToChain(mem_, chain, 0, id, std::min<uint64_t>(kIdBytes, status_offset));
      break;
    }
    default:
      ++blk_counters_.unsupported;
      status = kStatusUnsupported;
      break;
  }
  if (status == kStatusIoErr) ++blk_counters_.io_errors;
  CopyToChain(mem_, chain, status_offset, &status, 1);
  *used_len = static_cast<uint32_t>(written + 1);
  return true;
}

void VirtioBlk::OnNotify(uint16_t q) {
  if (q != 0 || is_broken()) return;
  Virtqueue& vq = queues_[0];
  Virtqueue::Chain chain;
  while (true) {
    auto r = vq.Pop(&chain);
    if (r == Virtqueue::PopResult::kEmpty) break;
    if (r == Virtqueue::PopResult::kBroken) {
      MarkBroken(vq.why());
      return;
    }
    uint32_t used = 0;
    if (!HandleRequest(chain, &used)) return;
    vq.PushUsed(chain.head, used);
  }
  vq.PublishAvailEvent();
  MaybeInterrupt(vq);
}

}  // namespace qosvisor::hv
