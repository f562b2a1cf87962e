// Anonymous mappings on 2 MiB pages with a clean fall-back: hugetlb pool, then transparent huge
// pages, then plain pages.
#include "sched/page_memory.h"

#include <sys/mman.h>

#include <cstdint>

namespace qosvisor::sched {
namespace {

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

void* MapAnonymous(size_t bytes, int extra_flags) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags,
                 -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

}  // namespace

const char* PageKindName(PageKind kind) {
  switch (kind) {
    case PageKind::kHugeTlb:
      return "hugetlb";
    case PageKind::kTransparentHuge:
      return "thp";
    case PageKind::kSmall:
      break;
  }
  return "4k";
}

PageRegion PageRegion::Map(size_t bytes, PageOptions options) {
  PageRegion r;
  if (bytes == 0) bytes = 1;
  const bool large = bytes >= options.min_huge_bytes;
  if (large && options.hugetlb) {
    // A private hugetlb mapping reserves its pages when it is made, so it fails here (and we fall
    // back) rather than with SIGBUS on first touch when the pool runs short.
    const size_t len = RoundUp(bytes, kHugePageBytes);
    if (void* p = MapAnonymous(len, MAP_HUGETLB)) {
      r.base_ = p;
      r.mapped_ = len;
      r.kind_ = PageKind::kHugeTlb;
      return r;
    }
  }
  if (large && options.transparent) {
    // The kernel backs only 2 MiB-aligned extents with a huge page: map one huge page more,
    // keep the aligned part, give the rest back.
    const size_t len = RoundUp(bytes, kHugePageBytes);
    if (void* p = MapAnonymous(len + kHugePageBytes, 0)) {
      const uintptr_t start = reinterpret_cast<uintptr_t>(p);
      const uintptr_t aligned = RoundUp(start, kHugePageBytes);
      const size_t head = aligned - start;
      const size_t tail = kHugePageBytes - head;
      // SAFETY: both ranges lie inside the mapping just made and hold nothing yet.
      if (head != 0) munmap(p, head);
      if (tail != 0) munmap(reinterpret_cast<void*>(aligned + len), tail);
      void* base = reinterpret_cast<void*>(aligned);
      r.base_ = base;
      r.mapped_ = len;
      // Where THP is off (mode `never`) the advice fails and these are plain pages.
      r.kind_ = madvise(base, len, MADV_HUGEPAGE) == 0 ? PageKind::kTransparentHuge
                                                         : PageKind::kSmall;
      return r;
    }
  }
  const size_t len = RoundUp(bytes, 4096);
  if (void* p = MapAnonymous(len, 0)) {
    // Asked for small pages (a like-for-like comparison on 4 KiB pages): keep them small even
    // where THP is `always`.
    if (!options.transparent) madvise(p, len, MADV_NOHUGEPAGE);
    r.base_ = p;
    r.mapped_ = len;
    r.kind_ = PageKind::kSmall;
  }
  return r;
}

void PageRegion::Unmap() {
  // SAFETY: base_/mapped_ describe exactly one mapping this region made and still owns.
  if (base_ != nullptr) munmap(base_, mapped_);
  base_ = nullptr;
  mapped_ = 0;
  kind_ = PageKind::kSmall;
}

}  // namespace qosvisor::sched
