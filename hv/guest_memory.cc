// memfd-backed guest RAM: creation, mapping, and returning pages to the host on restart.
// The mapping is shared so that another mapping of the memfd sees the same bytes.
#include "hv/guest_memory.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>

#include <cerrno>
#include <utility>

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

Status GuestMemory::Clear() {
  // Punching a hole frees the pages and makes them read back as zeros through every mapping.
  if (::fallocate(memfd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                  static_cast<off_t>(size_)) != 0) {
    return Status::Error(fmt::format("clearing guest memory: {}", std::strerror(errno)));
  }
  return Status::Ok();
}

}  // namespace qosvisor::hv
