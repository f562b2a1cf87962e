// Snapshot files: the section container of state.qvsnap and the sparse memory image.
#include "hv/snapshot_file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "hv/state_codec.h"
#include "hv/unique_fd.h"

namespace qosvisor::hv {
namespace {

constexpr uint64_t kStateMagic = 0x50414e5356514f51ULL;  // "QOQVSNAP" little endian
constexpr uint32_t kMaxSections = 1024;
constexpr uint64_t kMaxSectionBytes = 64ull << 20;  // far above any real section
constexpr uint64_t kPage = 4096;

struct FileHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t arch;
  uint32_t section_count;
  uint32_t header_crc;  // of the fields above
};
static_assert(sizeof(FileHeader) == 24);

struct SectionHeader {
  uint32_t kind;
  uint32_t index;
  uint64_t length;
  uint32_t crc;  // of the payload and of kind, index and length
  uint32_t reserved;
};
static_assert(sizeof(SectionHeader) == 24);

uint32_t HeaderCrc(const FileHeader& h) {
  // SAFETY: FileHeader is trivially copyable; the CRC covers its first 20 bytes.
  return Crc32c({reinterpret_cast<const uint8_t*>(&h), offsetof(FileHeader, header_crc)});
}

uint32_t SectionCrc(const SectionHeader& h, std::span<const uint8_t> payload) {
  // SAFETY: as above, the first 16 bytes of a SectionHeader.
  uint32_t crc = Crc32c({reinterpret_cast<const uint8_t*>(&h), offsetof(SectionHeader, crc)});
  return Crc32c(payload, crc);
}

Status WriteAll(int fd, const void* data, size_t len, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    ssize_t n = ::write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::Error(fmt::format("write {}: {}", path, std::strerror(errno)));
    p += n;
    len -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status PwriteAll(int fd, const uint8_t* p, uint64_t len, uint64_t offset, const std::string& path) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::Error(fmt::format("write {}: {}", path, std::strerror(errno)));
    p += n;
    offset += static_cast<uint64_t>(n);
    len -= static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status PreadAll(int fd, uint8_t* p, uint64_t len, uint64_t offset, const std::string& path) {
  while (len > 0) {
    ssize_t n = ::pread(fd, p, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::Error(fmt::format("read {}: {}", path, std::strerror(errno)));
    if (n == 0) return Status::Error(fmt::format("{}: truncated at byte {}", path, offset));
    p += n;
    offset += static_cast<uint64_t>(n);
    len -= static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
}

Status SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid() || ::fsync(fd.get()) != 0) {
    return Status::Error(fmt::format("fsync directory {}: {}", dir, std::strerror(errno)));
  }
  return Status::Ok();
}

bool PageIsZero(const uint8_t* p) {
  uint64_t acc = 0;
  for (uint64_t i = 0; i < kPage; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    acc |= w;
  }
  return acc == 0;
}

bool TestBit(const std::vector<uint64_t>& bits, uint64_t i) {
  return (bits[i / 64] >> (i % 64) & 1) != 0;
}

}  // namespace

uint64_t RandomNonZero64() {
  std::random_device rd;
  uint64_t v = 0;
  while (v == 0) v = (uint64_t{rd()} << 32) ^ rd();
  return v;
}

std::string SectionName(SectionKind kind, uint32_t index) {
  switch (kind) {
    case SectionKind::kConfig:
      return "config";
    case SectionKind::kVm:
      return "vm state";
    case SectionKind::kVcpu:
      return fmt::format("vcpu {}", index);
    case SectionKind::kDevice:
      return fmt::format("device {}", index);
    case SectionKind::kMemory:
      return "memory index";
  }
  return fmt::format("unknown section kind {}", static_cast<uint32_t>(kind));
}

Status WriteStateFile(const std::string& path, const std::vector<Section>& sections) {
  StateWriter out;
  FileHeader fh{kStateMagic, kSnapshotVersion, kSnapshotArchX86_64,
                static_cast<uint32_t>(sections.size()), 0};
  fh.header_crc = HeaderCrc(fh);
  out.Put(fh);
  for (const Section& s : sections) {
    SectionHeader sh{static_cast<uint32_t>(s.kind), s.index, s.payload.size(), 0, 0};
    sh.crc = SectionCrc(sh, s.payload);
    out.Put(sh);
    for (uint8_t b : s.payload) out.Put(b);
  }
  const std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return Status::Error(fmt::format("create {}: {}", tmp, std::strerror(errno)));
  if (Status s = WriteAll(fd.get(), out.bytes().data(), out.bytes().size(), tmp); !s) return s;
  if (::fsync(fd.get()) != 0) {
    return Status::Error(fmt::format("fsync {}: {}", tmp, std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::Error(fmt::format("rename {} to {}: {}", tmp, path, std::strerror(errno)));
  }
  return SyncDir(DirOf(path));
}

Result<std::vector<Section>> ReadStateFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::Error(fmt::format("open {}: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Status::Error(fmt::format("stat {}: {}", path, std::strerror(errno)));
  }
  constexpr uint64_t kMaxStateFileBytes = 256ull << 20;
  if (static_cast<uint64_t>(st.st_size) > kMaxStateFileBytes) {
    return Status::Error(
        fmt::format("{}: {} bytes is too large for a snapshot state file", path, st.st_size));
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  if (Status s = PreadAll(fd.get(), bytes.data(), bytes.size(), 0, path); !s) return s;
  StateReader in(bytes, path);
  FileHeader fh{};
  if (!in.Get(&fh, "header")) return Status::Error(in.error());
  if (fh.magic != kStateMagic) {
    return Status::Error(fmt::format("{}: not a qosvisor snapshot (bad magic)", path));
  }
  if (fh.header_crc != HeaderCrc(fh)) {
    return Status::Error(fmt::format("{}: header checksum mismatch (corrupted)", path));
  }
  if (fh.version != kSnapshotVersion) {
    return Status::Error(fmt::format("{}: snapshot version {}, this qosvisor reads version {}",
                                     path, fh.version, kSnapshotVersion));
  }
  if (fh.arch != kSnapshotArchX86_64) {
    return Status::Error(fmt::format(
        "{}: snapshot of architecture {} (ELF machine number), this host is x86-64 ({})", path,
        fh.arch, kSnapshotArchX86_64));
  }
  if (fh.section_count == 0 || fh.section_count > kMaxSections) {
    return Status::Error(fmt::format("{}: impossible section count {}", path, fh.section_count));
  }
  std::vector<Section> sections;
  for (uint32_t i = 0; i < fh.section_count; ++i) {
    SectionHeader sh{};
    if (!in.Get(&sh, "section header")) {
      return Status::Error(fmt::format("{} (truncated: {} of {} sections present)", in.error(), i,
                                       fh.section_count));
    }
    auto kind = static_cast<SectionKind>(sh.kind);
    const std::string name = SectionName(kind, sh.index);
    if (sh.length > kMaxSectionBytes) {
      return Status::Error(fmt::format("{}: section '{}' claims {} bytes", path, name, sh.length));
    }
    Section s{kind, sh.index, {}};
    s.payload.resize(sh.length);
    for (uint64_t b = 0; b < sh.length; ++b) {
      if (!in.Get(&s.payload[b], "section payload")) {
        return Status::Error(fmt::format("{}: truncated inside section '{}'", path, name));
      }
    }
    if (SectionCrc(sh, s.payload) != sh.crc) {
      return Status::Error(
          fmt::format("{}: section '{}' checksum mismatch (corrupted)", path, name));
    }
    if (sh.kind < static_cast<uint32_t>(SectionKind::kConfig) ||
        sh.kind > static_cast<uint32_t>(SectionKind::kMemory) || sh.reserved != 0) {
      return Status::Error(
          fmt::format("{}: section '{}' is not one this version knows", path, name));
    }
    sections.push_back(std::move(s));
  }
  if (!in.Finish()) return Status::Error(in.error());
  return sections;
}

uint64_t MemoryIndex::data_bytes() const {
  uint64_t n = 0;
  for (const auto& e : extents) n += e.length;
  return n;
}

std::vector<uint8_t> EncodeMemoryIndex(const MemoryIndex& index) {
  StateWriter w;
  w.Put(index.memory_bytes);
  w.Put<uint64_t>(index.extents.size());
  for (const auto& e : index.extents) {
    w.Put(e.offset);
    w.Put(e.length);
    w.Put(e.crc);
  }
  return w.Take();
}

Result<MemoryIndex> DecodeMemoryIndex(std::span<const uint8_t> payload) {
  StateReader r(payload, "memory index");
  MemoryIndex index;
  uint64_t count = 0;
  r.Get(&index.memory_bytes, "memory_bytes");
  r.Get(&count, "extent_count");
  if (r.ok() && (index.memory_bytes == 0 || index.memory_bytes % kPage != 0)) {
    r.Invalid("memory_bytes", "not a positive multiple of 4 KiB");
  }
  if (r.ok() && count > index.memory_bytes / kPage) r.Invalid("extent_count", "too many extents");
  uint64_t covered_to = 0;
  for (uint64_t i = 0; r.ok() && i < count; ++i) {
    MemoryExtent e;
    r.Get(&e.offset, "extent offset");
    r.Get(&e.length, "extent length");
    r.Get(&e.crc, "extent crc");
    if (!r.ok()) break;
    if (e.offset % kPage != 0 || e.length == 0 || e.length % kPage != 0 || e.offset < covered_to ||
        e.offset > index.memory_bytes || e.length > index.memory_bytes - e.offset) {
      r.Invalid("extent", fmt::format("extent {} [{:#x}, +{:#x}) is misaligned, overlapping or "
                                      "outside guest memory",
                                      i, e.offset, e.length));
      break;
    }
    covered_to = e.offset + e.length;
    index.extents.push_back(e);
  }
  if (!r.Finish()) return Status::Error(r.error());
  return index;
}

Result<MemoryIndex> WriteMemoryImage(const GuestMemory& memory, const std::string& path,
                                     const std::vector<uint64_t>* only_pages,
                                     const ProgressFn& progress) {
  std::vector<uint64_t> candidates;
  if (only_pages != nullptr) {
    candidates = *only_pages;
  } else {
    auto populated = memory.PopulatedPages();
    if (!populated) return populated.status();
    candidates = std::move(populated).value();
  }
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return Status::Error(fmt::format("create {}: {}", path, std::strerror(errno)));
  if (::ftruncate(fd.get(), static_cast<off_t>(memory.size())) != 0) {
    return Status::Error(fmt::format("size {}: {}", path, std::strerror(errno)));
  }
  MemoryIndex index;
  index.memory_bytes = memory.size();
  const uint64_t pages = memory.size() / kPage;
  MemoryExtent run;
  auto close_run = [&]() -> Status {
    if (run.length == 0) return Status::Ok();
    const uint8_t* src = memory.HostPtr(run.offset, run.length);
    run.crc = Crc32c({src, run.length});
    if (Status s = PwriteAll(fd.get(), src, run.length, run.offset, path); !s) return s;
    index.extents.push_back(run);
    run = MemoryExtent{};
    return Status::Ok();
  };
  for (uint64_t page = 0; page < pages; ++page) {
    const uint8_t* p = memory.HostPtr(page * kPage, kPage);
    // A diff keeps every changed page, zero or not: it must overwrite the base image's page.
    bool keep = TestBit(candidates, page) && (only_pages != nullptr || !PageIsZero(p));
    constexpr uint64_t kMaxExtent = 4ull << 20;
    if (keep && run.length != 0 && run.offset + run.length == page * kPage &&
        run.length < kMaxExtent) {
      run.length += kPage;
      continue;
    }
    if (Status s = close_run(); !s) return s;
    if (keep) run = MemoryExtent{page * kPage, kPage, 0};
    if (progress && page % 16384 == 0) progress(page * kPage, memory.size());
  }
  if (Status s = close_run(); !s) return s;
  if (::fsync(fd.get()) != 0) {
    return Status::Error(fmt::format("fsync {}: {}", path, std::strerror(errno)));
  }
  if (progress) progress(memory.size(), memory.size());
  return index;
}

Status VerifyMemoryImage(const std::string& path, const MemoryIndex& index) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::Error(fmt::format("open {}: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) != index.memory_bytes) {
    return Status::Error(fmt::format("{}: {} bytes, the snapshot's memory is {} bytes", path,
                                     st.st_size, index.memory_bytes));
  }
  std::vector<uint8_t> buf;
  for (const MemoryExtent& e : index.extents) {
    buf.resize(e.length);
    if (Status s = PreadAll(fd.get(), buf.data(), e.length, e.offset, path); !s) return s;
    if (Crc32c(buf) != e.crc) {
      return Status::Error(
          fmt::format("{}: memory at [{:#x}, +{:#x}) fails its checksum "
                      "(corrupted)",
                      path, e.offset, e.length));
    }
  }
  // Whatever lies outside the extents must be holes (zeros): data there was written after the
  // snapshot. File systems allocate in blocks, so a hole may be reported a little late; each
  // stray data region is read and must be zero.
  size_t next = 0;
  off_t pos = 0;
  const auto end = static_cast<off_t>(index.memory_bytes);
  while (pos < end) {
    off_t data = ::lseek(fd.get(), pos, SEEK_DATA);
    if (data < 0 || data >= end) break;
    off_t hole = ::lseek(fd.get(), data, SEEK_HOLE);
    if (hole < 0 || hole > end) hole = end;
    for (uint64_t off = static_cast<uint64_t>(data) & ~(kPage - 1);
         off < static_cast<uint64_t>(hole); off += kPage) {
      while (next < index.extents.size() &&
             index.extents[next].offset + index.extents[next].length <= off) {
        ++next;
      }
      if (next < index.extents.size() && index.extents[next].offset <= off) continue;
      uint8_t page[kPage];
      if (Status s = PreadAll(fd.get(), page, kPage, off, path); !s) return s;
      if (!PageIsZero(page)) {
        return Status::Error(fmt::format(
            "{}: page at {:#x} holds data the snapshot does not list (corrupted)", path, off));
      }
    }
    pos = hole;
  }
  return Status::Ok();
}

Status ApplyMemoryImage(const std::string& path, const MemoryIndex& index, GuestMemory& memory) {
  if (index.memory_bytes != memory.size()) {
    return Status::Error(fmt::format("{}: image of {} bytes for a VM with {} bytes of memory", path,
                                     index.memory_bytes, memory.size()));
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::Error(fmt::format("open {}: {}", path, std::strerror(errno)));
  for (const MemoryExtent& e : index.extents) {
    uint8_t* dst = memory.HostPtr(e.offset, e.length);  // in bounds: the index was decoded
    if (Status s = PreadAll(fd.get(), dst, e.length, e.offset, path); !s) return s;
  }
  return Status::Ok();
}

}  // namespace qosvisor::hv
