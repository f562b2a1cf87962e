// Guest RAM: one memfd mapped MAP_SHARED into this process, so that snapshots and forks can map
// the same pages later; or, for a restored or forked VM, a private copy-on-write mapping of a
// file (a snapshot's memory image or a frozen parent's memfd) that only the pages the VM writes
// leave. The mapping never moves: KVM's memory slot and the devices keep its address.
// Every access by guest physical address is bounds-checked.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "hv/unique_fd.h"

namespace qosvisor::hv {

class GuestMemory {
 public:
  // Creates `size` bytes of zeroed guest memory named `name` (visible in /proc/<pid>/fd).
  // populate: pre-fault the pages (MAP_POPULATE): ~35 ms per 64 MiB now, faster guest later.
  static Result<GuestMemory> Create(const std::string& name, uint64_t size, bool populate);

  GuestMemory() = default;
  GuestMemory(GuestMemory&& other) noexcept;
  GuestMemory& operator=(GuestMemory&& other) noexcept;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  uint64_t size() const { return size_; }
  // The memfd (shared) or the file under the private mapping.
  int memfd() const { return memfd_.get(); }
  // True when writes go to the file (shared memfd); false for a copy-on-write mapping.
  bool shared() const { return shared_; }
  // Turns a shared memfd mapping into a private one over the same memfd, in place: from now on
  // the memfd is a frozen image that copy-on-write children may map, and this VM's writes stay
  // private. Call only while no vCPU runs.
  Status Freeze();
  // Puts this mapping, privately, over `fd` (at least size() bytes): pages are read from it on
  // first touch and copied on first write, so this costs the same for 64 MiB as for 2 GiB.
  // Restore uses it on a snapshot's image, FreezeMemory on a copy of what the mapping shows.
  // Takes the fd.
  Status RebaseOnto(UniqueFd fd);
  // Pages that may hold something other than zeros: the backing file's data regions, and for a
  // private mapping the pages it has copied. One bit per 4 KiB page.
  Result<std::vector<uint64_t>> PopulatedPages() const;
  // For a private mapping: the pages this mapping wrote (copied away from the file) — by vCPUs
  // and by the VMM's own devices alike, which KVM's dirty log would miss. One bit per page.
  Result<std::vector<uint64_t>> PrivatelyWrittenPages() const;
  // Bytes of memory this mapping holds that no other VM shares: all it allocated in its memfd
  // when shared, the copied pages when private.
  Result<uint64_t> PrivateBytes() const;
  uint8_t* host_base() const { return base_; }

  // Huge pages for the 2 MiB region at `offset` (a multiple of 2 MiB): wanted (MADV_HUGEPAGE,
  // and MADV_COLLAPSE so that what the region already holds moves onto one huge page now) or
  // not (MADV_NOHUGEPAGE: khugepaged leaves it alone). Only for a shared mapping: a private
  // (copy-on-write) one's pages are copies the memfd does not hold.
  Status AdviseHuge(uint64_t offset, bool huge);
  // Whether a huge page backs the region at `offset` now (/proc/kpageflags: needs root).
  Result<bool> HugeBacked(uint64_t offset) const;
  // Bytes of guest memory that huge pages back now (each region as HugeBacked reads it).
  Result<uint64_t> HugeBackedBytes() const;

  // Pages the VMM's own devices write (rings, received frames, disk reads) are not in KVM's
  // dirty log; a migration needs them too. While tracking is on, every write through this object
  // (Write, StoreAtomic, MarkWritten) sets its pages' bits. Any thread may write; the bits are
  // atomic, and with tracking off a write costs one predictable branch.
  void TrackWrites(bool on);
  // Pages written since the previous call (or since tracking began); reading clears them.
  std::vector<uint64_t> TakeWrittenPages();
  // For writes made through HostPtr (a device reading a file straight into guest memory).
  void MarkWritten(uint64_t gpa, uint64_t len) const {
    if (written_ != nullptr && tracking_.load(std::memory_order_relaxed)) MarkPages(gpa, len);
  }

  // Host pointer to [gpa, gpa + len), or nullptr if any byte of it lies outside guest memory.
  // Overflow-safe: gpa and len come from the guest.
  uint8_t* HostPtr(uint64_t gpa, uint64_t len) const {
    if (gpa > size_ || len > size_ - gpa) return nullptr;
    return base_ + gpa;
  }
  bool Contains(uint64_t gpa, uint64_t len) const { return HostPtr(gpa, len) != nullptr; }

  [[nodiscard]] bool Read(uint64_t gpa, void* out, uint64_t len) const {
    const uint8_t* p = HostPtr(gpa, len);
    if (p == nullptr) return false;
    std::memcpy(out, p, len);
    return true;
  }
  [[nodiscard]] bool Write(uint64_t gpa, const void* in, uint64_t len) {
    uint8_t* p = HostPtr(gpa, len);
    if (p == nullptr) return false;
    std::memcpy(p, in, len);
    MarkWritten(gpa, len);
    return true;
  }
  // Reads a naturally aligned value the guest may be writing concurrently (a single load).
  template <typename T>
  [[nodiscard]] bool LoadAtomic(uint64_t gpa, T* out) const {
    if (gpa % sizeof(T) != 0) return false;
    uint8_t* p = HostPtr(gpa, sizeof(T));
    if (p == nullptr) return false;
    // SAFETY: p is in bounds and aligned for T (guest memory is page aligned, gpa is T-aligned).
    *out = __atomic_load_n(reinterpret_cast<T*>(p), __ATOMIC_ACQUIRE);
    return true;
  }
  template <typename T>
  [[nodiscard]] bool StoreAtomic(uint64_t gpa, T value) {
    if (gpa % sizeof(T) != 0) return false;
    uint8_t* p = HostPtr(gpa, sizeof(T));
    if (p == nullptr) return false;
    // SAFETY: p is in bounds and aligned for T, as in LoadAtomic.
    __atomic_store_n(reinterpret_cast<T*>(p), value, __ATOMIC_RELEASE);
    MarkWritten(gpa, sizeof(T));
    return true;
  }
  // Zeroes all of guest memory (restart from a clean state): punches out the memfd's pages, or
  // puts a fresh memfd under a private mapping.
  Status Clear();

 private:
  // Maps `fd` at base_ (MAP_FIXED, so KVM's slot keeps its address) shared or private.
  Status MapAtBase(int fd, bool shared);
  // Sets the bit of every page of this mapping whose /proc/self/pagemap entry satisfies `want`.
  Status ScanPagemap(const std::function<bool(uint64_t entry)>& want,
                     std::vector<uint64_t>* bitmap) const;

  void MarkPages(uint64_t gpa, uint64_t len) const;

  UniqueFd memfd_;
  // One bit per page, made when tracking first starts (a VM that never migrates pays nothing).
  std::unique_ptr<std::atomic<uint64_t>[]> written_;
  std::atomic<bool> tracking_{false};
  bool shared_ = true;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace qosvisor::hv
