// Memory for the scheduler's large tables (message slots, index, rank-queue buckets, bitmaps,
// heaps): 2 MiB pages where the machine offers them, because the data path reads these tables at
// random and at 64K-1M messages a 4 KiB page per access means a TLB miss per access.
//
// Each region tries, in order: hugetlb pages from the reserved pool (mmap MAP_HUGETLB), then
// transparent huge pages (mmap + madvise(MADV_HUGEPAGE), the machine's THP mode being `madvise`),
// then plain pages. What it got is kept (kind()), so that the owner can report it. Regions below
// kHugeMinBytes take plain pages: they stay cache-resident, and a 2 MiB page each would waste
// most of the reserved pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>

namespace qosvisor::sched {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;
inline constexpr size_t kHugeMinBytes = size_t{1} << 20;

// What backs a region; a larger value is a smaller page (see WorsePages).
enum class PageKind : uint8_t {
  kHugeTlb,          // 2 MiB pages from the hugetlb pool
  kTransparentHuge,  // advised for transparent huge pages (the kernel may still split them)
  kSmall,            // 4 KiB pages
};

// "hugetlb", "thp" or "4k".
const char* PageKindName(PageKind kind);
// The kind with the smaller pages: what a set of regions can promise as a whole.
inline PageKind WorsePages(PageKind a, PageKind b) { return a > b ? a : b; }

// What a set of arrays got as a whole: the smallest pages among those of kHugeMinBytes or more
// (smaller ones take plain pages by design); kSmall when none is that large.
class PageTally {
 public:
  void Add(size_t bytes, PageKind kind) {
    if (bytes < kHugeMinBytes) return;
    worst_ = any_ ? WorsePages(worst_, kind) : kind;
    any_ = true;
  }
  PageKind result() const { return any_ ? worst_ : PageKind::kSmall; }

 private:
  bool any_ = false;
  PageKind worst_ = PageKind::kSmall;
};

// Which kinds a region may try (each only when the previous one is unavailable).
struct PageOptions {
  bool hugetlb = true;
  bool transparent = true;
  // Smaller regions take plain pages (a benchmark that wants every byte on huge pages lowers it).
  size_t min_huge_bytes = kHugeMinBytes;
};

// An anonymous, zero-filled mapping; unmapped on destruction.
class PageRegion {
 public:
  PageRegion() = default;
  // At least `bytes` of zeroed memory, tried as `options` allow; an empty region (data() ==
  // nullptr) only when not even plain pages can be mapped.
  static PageRegion Map(size_t bytes, PageOptions options);

  PageRegion(PageRegion&& o) noexcept { *this = std::move(o); }
  PageRegion& operator=(PageRegion&& o) noexcept {
    if (this != &o) {
      Unmap();
      base_ = std::exchange(o.base_, nullptr);
      mapped_ = std::exchange(o.mapped_, 0);
      kind_ = std::exchange(o.kind_, PageKind::kSmall);
    }
    return *this;
  }
  PageRegion(const PageRegion&) = delete;
  PageRegion& operator=(const PageRegion&) = delete;
  ~PageRegion() { Unmap(); }

  void* data() const { return base_; }
  size_t mapped_bytes() const { return mapped_; }
  PageKind kind() const { return kind_; }

 private:
  void Unmap();

  void* base_ = nullptr;
  size_t mapped_ = 0;
  PageKind kind_ = PageKind::kSmall;
};

// A fixed-size array in a PageRegion (the tables never grow after construction). Elements are
// value-initialised on construction and destroyed with the array.
template <typename T>
class PageArray {
 public:
  PageArray() = default;
  // Like std::vector, throws std::bad_alloc when the memory cannot be had; this runs when a
  // scheduler is built, never on the data path.
  PageArray(size_t count, PageOptions options) : count_(count) {
    if (count == 0) return;
    region_ = PageRegion::Map(count * sizeof(T), options);
    if (region_.data() == nullptr) throw std::bad_alloc();
    // SAFETY: the region holds count * sizeof(T) bytes aligned to at least a page, and no object
    // lives there yet.
    data_ = static_cast<T*>(region_.data());
    std::uninitialized_value_construct_n(data_, count);
  }
  PageArray(PageArray&& o) noexcept { *this = std::move(o); }
  PageArray& operator=(PageArray&& o) noexcept {
    if (this != &o) {
      Destroy();
      region_ = std::move(o.region_);
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
    }
    return *this;
  }
  PageArray(const PageArray&) = delete;
  PageArray& operator=(const PageArray&) = delete;
  ~PageArray() { Destroy(); }

  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  T* data() { return data_; }
  const T* data() const { return data_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + count_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + count_; }
  // kSmall for an empty array.
  PageKind kind() const { return region_.kind(); }
  size_t bytes() const { return count_ * sizeof(T); }

 private:
  void Destroy() {
    if (data_ != nullptr) std::destroy_n(data_, count_);
    data_ = nullptr;
    count_ = 0;
  }

  PageRegion region_;
  T* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace qosvisor::sched
