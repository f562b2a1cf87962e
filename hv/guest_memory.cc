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
  int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  // SAFETY: a fresh mapping of the whole memfd; size matches the ftruncate above, and the
  // mapping lives until this object is destroyed.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, mem.memfd_.get(), 0);
  if (p == MAP_FAILED) {
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

}  // namespace qosvisor::hv
