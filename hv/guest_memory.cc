// memfd-backed guest RAM: creation, mapping, and returning pages to the host on restart.
// The mapping is shared so that another mapping of the memfd sees the same bytes.
#include "hv/guest_memory.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "hv/data_extents.h"

namespace qosvisor::hv {
namespace {

constexpr uint64_t kHugePageBytes = 2ull << 20;

// Address space for `size` bytes starting on a 2 MiB boundary: a huge page can back a region
// of guest memory only where host and guest addresses are aligned alike.
uint8_t* ReserveAligned(uint64_t size) {
  const uint64_t span = size + kHugePageBytes;
  // SAFETY: an inaccessible anonymous reservation; the slack either side is unmapped below.
  void* p = ::mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  const auto start = reinterpret_cast<uintptr_t>(p);
  const uintptr_t aligned = (start + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  // SAFETY: both ranges lie inside the reservation just made and belong to nothing else.
  if (aligned > start) ::munmap(p, aligned - start);
  if (start + span > aligned + size) {
    ::munmap(reinterpret_cast<void*>(aligned + size), start + span - (aligned + size));
  }
  return reinterpret_cast<uint8_t*>(aligned);
}

}  // namespace

Result<GuestMemory> GuestMemory::Create(const std::string& name, uint64_t size, bool populate) {
  if (size == 0 || size % 4096 != 0) {
    return Status::Error(
        fmt::format("guest memory size {} is not a positive multiple of 4 KiB", size));
  }
  GuestMemory mem;
  mem.memfd_ = UniqueFd(::memfd_create(name.c_str(), MFD_CLOEXEC));
  if (!mem.memfd_.valid()) {
    return Status::Error(fmt::format("memfd_create: {}", std::strerror(errno)));
  }
  if (::ftruncate(mem.memfd_.get(), static_cast<off_t>(size)) != 0) {
    return Status::Error(
        fmt::format("ftruncate guest memory to {} bytes: {}", size, std::strerror(errno)));
  }
  int flags = MAP_SHARED | MAP_FIXED | (populate ? MAP_POPULATE : 0);
  uint8_t* at = ReserveAligned(size);
  if (at == nullptr) {
    return Status::Error(
        fmt::format("reserving {} bytes of address space: {}", size, std::strerror(errno)));
  }
  // SAFETY: a fresh mapping of the whole memfd over the reservation just made for it; size
  // matches the ftruncate above, and the mapping lives until this object is destroyed.
  void* p = ::mmap(at, size, PROT_READ | PROT_WRITE, flags, mem.memfd_.get(), 0);
  if (p == MAP_FAILED) {
    ::munmap(at, size);
    return Status::Error(
        fmt::format("mmap guest memory ({} bytes): {}", size, std::strerror(errno)));
  }
  // Guest memory in a core dump would be huge and may hold guest secrets.
  ::madvise(p, size, MADV_DONTDUMP);
  mem.base_ = static_cast<uint8_t*>(p);
  mem.size_ = size;
  return mem;
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept
    : memfd_(std::move(other.memfd_)),
      written_(std::move(other.written_)),
      tracking_(other.tracking_.load()),
      shared_(other.shared_),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

GuestMemory& GuestMemory::operator=(GuestMemory&& other) noexcept {
  if (this != &other) {
    this->~GuestMemory();
    new (this) GuestMemory(std::move(other));
  }
  return *this;
}

GuestMemory::~GuestMemory() {
  // SAFETY: base_/size_ are exactly the mapping made in Create (or null after a move).
  if (base_ != nullptr) ::munmap(base_, size_);
  base_ = nullptr;
}

void GuestMemory::TrackWrites(bool on) {
  if (on && written_ == nullptr) {
    written_ = std::make_unique<std::atomic<uint64_t>[]>((size_ / 4096 + 63) / 64);
  }
  tracking_.store(on, std::memory_order_release);
}

std::vector<uint64_t> GuestMemory::TakeWrittenPages() {
  const size_t words = (size_ / 4096 + 63) / 64;
  std::vector<uint64_t> bitmap(words, 0);
  if (written_ == nullptr) return bitmap;
  for (size_t i = 0; i < words; ++i) {
    bitmap[i] = written_[i].exchange(0, std::memory_order_acq_rel);
  }
  return bitmap;
}

void GuestMemory::MarkPages(uint64_t gpa, uint64_t len) const {
  if (len == 0) return;
  for (uint64_t page = gpa / 4096; page <= (gpa + len - 1) / 4096; ++page) {
    written_[page / 64].fetch_or(1ull << (page % 64), std::memory_order_relaxed);
  }
}

Status GuestMemory::MapAtBase(int fd, bool shared) {
  // SAFETY: replaces exactly this object's own mapping [base_, base_ + size_) in place; the file
  // is at least size_ bytes long (checked when this memory was created from it).
  void* p = ::mmap(base_, size_, PROT_READ | PROT_WRITE,
                   (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, fd, 0);
  if (p == MAP_FAILED) {
    return Status::Error(fmt::format("remapping guest memory: {}", std::strerror(errno)));
  }
  ::madvise(base_, size_, MADV_DONTDUMP);
  shared_ = shared;
  return Status::Ok();
}

Status GuestMemory::Freeze() {
  if (!shared_) return Status::Error("guest memory is already a private copy-on-write mapping");
  return MapAtBase(memfd_.get(), /*shared=*/false);
}

Status GuestMemory::RebaseOnto(UniqueFd fd) {
  if (Status s = MapAtBase(fd.get(), /*shared=*/false); !s) return s;
  memfd_ = std::move(fd);
  return Status::Ok();
}

Status GuestMemory::ScanPagemap(const std::function<bool(uint64_t entry)>& want,
                                std::vector<uint64_t>* bitmap) const {
  UniqueFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!pagemap.valid()) {
    return Status::Error(fmt::format("open /proc/self/pagemap: {}", std::strerror(errno)));
  }
  const uint64_t pages = size_ / 4096;
  constexpr uint64_t kChunk = 4096;  // entries per read: 32 KiB
  std::vector<uint64_t> entries(kChunk);
  for (uint64_t first = 0; first < pages; first += kChunk) {
    const uint64_t n = std::min(kChunk, pages - first);
    // SAFETY: pointer arithmetic only, to compute the pagemap offset of this mapping's pages.
    const uint64_t vpage = reinterpret_cast<uintptr_t>(base_) / 4096 + first;
    ssize_t got = ::pread(pagemap.get(), entries.data(), n * 8, static_cast<off_t>(vpage * 8));
    if (got != static_cast<ssize_t>(n * 8)) {
      return Status::Error(fmt::format("read /proc/self/pagemap: {}",
                                       got < 0 ? std::strerror(errno) : "short read"));
    }
    for (uint64_t i = 0; i < n; ++i) {
      if (want(entries[i])) (*bitmap)[(first + i) / 64] |= 1ull << ((first + i) % 64);
    }
  }
  return Status::Ok();
}

namespace {
constexpr uint64_t kPagemapPresent = 1ull << 63;
constexpr uint64_t kPagemapSwapped = 1ull << 62;
constexpr uint64_t kPagemapFileOrShared = 1ull << 61;

// A private page copied away from its file: present (or swapped out) and anonymous.
bool IsPrivateCopy(uint64_t entry) {
  return (entry & (kPagemapPresent | kPagemapSwapped)) != 0 && (entry & kPagemapFileOrShared) == 0;
}
}  // namespace

Result<std::vector<uint64_t>> GuestMemory::PopulatedPages() const {
  std::vector<uint64_t> bitmap((size_ / 4096 + 63) / 64, 0);
  MarkDataUnits(memfd_.get(), size_, 4096, bitmap);
  if (shared_) return bitmap;
  if (Status s = ScanPagemap(IsPrivateCopy, &bitmap); !s) return s;
  return bitmap;
}

Result<std::vector<uint64_t>> GuestMemory::PrivatelyWrittenPages() const {
  std::vector<uint64_t> bitmap((size_ / 4096 + 63) / 64, 0);
  if (shared_) return Status::Error("guest memory is shared: every page is its own");
  if (Status s = ScanPagemap(IsPrivateCopy, &bitmap); !s) return s;
  return bitmap;
}

Result<uint64_t> GuestMemory::PrivateBytes() const {
  if (shared_) {
    struct stat st {};
    if (::fstat(memfd_.get(), &st) != 0) {
      return Status::Error(fmt::format("fstat guest memory: {}", std::strerror(errno)));
    }
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }
  auto pages = PrivatelyWrittenPages();
  if (!pages) return pages.status();
  uint64_t n = 0;
  for (uint64_t w : *pages) n += static_cast<uint64_t>(__builtin_popcountll(w));
  return n * 4096;
}

Status GuestMemory::Clear() {
  if (!shared_) {
    // A copy-on-write VM restarts on memory of its own, zeroed: a fresh memfd in place.
    UniqueFd fresh(::memfd_create("qv-restart", MFD_CLOEXEC));
    if (!fresh.valid() || ::ftruncate(fresh.get(), static_cast<off_t>(size_)) != 0) {
      return Status::Error(fmt::format("clearing guest memory: {}", std::strerror(errno)));
    }
    if (Status s = MapAtBase(fresh.get(), /*shared=*/true); !s) return s;
    memfd_ = std::move(fresh);
    return Status::Ok();
  }
  // Punching a hole frees the pages and makes them read back as zeros through every mapping.
  if (::fallocate(memfd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                  static_cast<off_t>(size_)) != 0) {
    return Status::Error(fmt::format("clearing guest memory: {}", std::strerror(errno)));
  }
  return Status::Ok();
}

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; older kernels refuse it with EINVAL
#endif

Status GuestMemory::AdviseHuge(uint64_t offset, bool huge) {
  if (offset % kHugePageBytes != 0 || offset >= size_ || size_ - offset < kHugePageBytes) {
    return Status::Error(fmt::format("huge pages: {:#x} is not a whole 2 MiB region of guest "
                                     "memory",
                                     offset));
  }
  if (!shared_) {
    return Status::Error("huge pages: copy-on-write guest memory is not the memfd's to back");
  }
  // SAFETY: a whole 2 MiB region inside this object's own mapping.
  if (::madvise(base_ + offset, kHugePageBytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0) {
    return Status::Error(fmt::format("huge pages: madvise at {:#x}: {}", offset,
                                     std::strerror(errno)));
  }
  // SAFETY: as above. MADV_COLLAPSE copies the region onto a huge page whatever the system's
  // shmem_enabled says; EAGAIN (pages busy) leaves it for a later try.
  if (huge && ::madvise(base_ + offset, kHugePageBytes, MADV_COLLAPSE) != 0) {
    return Status::Error(fmt::format("huge pages: collapsing {:#x}: {}", offset,
                                     std::strerror(errno)));
  }
  return Status::Ok();
}

namespace {

// The kernel's view of one guest page: its pagemap entry's frame, that frame's flags.
class PageFlagsReader {
 public:
  PageFlagsReader()
      : pagemap_(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)),
        flags_(::open("/proc/kpageflags", O_RDONLY | O_CLOEXEC)) {}

  // Whether a transparent huge page holds the page at host address `address`.
  Result<bool> Huge(uintptr_t address) const {
    constexpr uint64_t kPfnMask = (1ull << 55) - 1;
    constexpr uint64_t kPageFlagThp = 1ull << 22;
    if (!pagemap_.valid() || !flags_.valid()) {
      return Status::Error("huge pages: /proc/self/pagemap or /proc/kpageflags cannot be read");
    }
    uint64_t entry = 0;
    if (::pread(pagemap_.get(), &entry, 8, static_cast<off_t>(address / 4096 * 8)) != 8) {
      return Status::Error(fmt::format("huge pages: read pagemap: {}", std::strerror(errno)));
    }
    if ((entry >> 63) == 0) return false;  // not present: nothing backs it
    const uint64_t pfn = entry & kPfnMask;
    if (pfn == 0) return Status::Error("huge pages: page frame numbers need CAP_SYS_ADMIN");
    uint64_t page_flags = 0;
    if (::pread(flags_.get(), &page_flags, 8, static_cast<off_t>(pfn * 8)) != 8) {
      return Status::Error(fmt::format("huge pages: read kpageflags: {}", std::strerror(errno)));
    }
    return (page_flags & kPageFlagThp) != 0;
  }

 private:
  UniqueFd pagemap_;
  UniqueFd flags_;
};

}  // namespace

Result<bool> GuestMemory::HugeBacked(uint64_t offset) const {
  if (offset >= size_) return Status::Error(fmt::format("{:#x} is outside guest memory", offset));
  // SAFETY: pointer arithmetic only, for the host address of the region's first page.
  return PageFlagsReader().Huge(reinterpret_cast<uintptr_t>(base_) + offset);
}

Result<uint64_t> GuestMemory::HugeBackedBytes() const {
  const PageFlagsReader reader;
  uint64_t bytes = 0;
  for (uint64_t offset = 0; offset + kHugePageBytes <= size_; offset += kHugePageBytes) {
    // SAFETY: pointer arithmetic only, as in HugeBacked.
    auto huge = reader.Huge(reinterpret_cast<uintptr_t>(base_) + offset);
    if (!huge.ok()) return huge.status();
    if (*huge) bytes += kHugePageBytes;
  }
  return bytes;
}

}  // namespace qosvisor::hv
