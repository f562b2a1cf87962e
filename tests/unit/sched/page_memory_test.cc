// The tables' page allocator: every fall-back step gives zeroed, usable memory of the kind it
// reports, and the scheduler reports what its tables got.
#include "sched/page_memory.h"

#include <sys/mman.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <fstream>
#include <string>

#include "sched/scheduler.h"

namespace qosvisor::sched {
namespace {

// Free 2 MiB pages in the hugetlb pool (0 when there is none).
uint64_t FreeHugePages() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t value = 0;
  while (f >> key >> value) {
    if (key == "HugePages_Free:") return value;
    f.ignore(1 << 10, '\n');
  }
  return 0;
}

bool AllZero(const void* p, size_t n) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != 0) return false;
  }
  return true;
}

struct Record {
  uint64_t a = 7;
  uint32_t b = UINT32_MAX;
};

TEST_CASE("plain pages when huge pages are not asked for", "[page_memory]") {
  PageRegion r = PageRegion::Map(4 << 20, PageOptions{.hugetlb = false, .transparent = false});
  REQUIRE(r.data() != nullptr);
  CHECK(r.kind() == PageKind::kSmall);
  CHECK(r.mapped_bytes() >= (4u << 20));
  CHECK(AllZero(r.data(), 4 << 20));
}

TEST_CASE("without hugetlb a large region is advised for transparent huge pages",
          "[page_memory]") {
  const size_t n = 6 << 20;
  PageRegion r = PageRegion::Map(n, PageOptions{.hugetlb = false, .transparent = true});
  REQUIRE(r.data() != nullptr);
  // THP mode `never` refuses the advice, and then the region says it has plain pages.
  CHECK((r.kind() == PageKind::kTransparentHuge || r.kind() == PageKind::kSmall));
  // Aligned to a huge page, so that the kernel can back it with huge pages at all.
  CHECK(reinterpret_cast<uintptr_t>(r.data()) % kHugePageBytes == 0);
  CHECK(r.mapped_bytes() % kHugePageBytes == 0);
  CHECK(AllZero(r.data(), n));
  static_cast<char*>(r.data())[n - 1] = 1;  // writable to the end
}

TEST_CASE("hugetlb falls back when the pool is empty, else is used", "[page_memory]") {
  const size_t n = 2 * kHugePageBytes;
  const uint64_t free_before = FreeHugePages();
  PageRegion r = PageRegion::Map(n, PageOptions{});
  REQUIRE(r.data() != nullptr);
  // With no pages reserved (a fresh machine) the next kind takes over.
  if (free_before == 0) CHECK(r.kind() != PageKind::kHugeTlb);
  if (r.kind() == PageKind::kHugeTlb) CHECK(r.mapped_bytes() == n);
  CHECK(AllZero(r.data(), n));
  static_cast<char*>(r.data())[n - 1] = 1;
}

TEST_CASE("small regions take plain pages whatever is allowed", "[page_memory]") {
  PageRegion r = PageRegion::Map(kHugeMinBytes - 1, PageOptions{});
  REQUIRE(r.data() != nullptr);
  CHECK(r.kind() == PageKind::kSmall);
  CHECK(r.mapped_bytes() % 4096 == 0);
}

TEST_CASE("a region is given back when destroyed and when moved over", "[page_memory]") {
  PageRegion a = PageRegion::Map(3 << 20, PageOptions{.hugetlb = false});
  void* p = a.data();
  REQUIRE(p != nullptr);
  PageRegion b = std::move(a);
  CHECK(a.data() == nullptr);
  CHECK(b.data() == p);
  b = PageRegion::Map(4096, PageOptions{});
  // The first mapping is gone: the kernel reports no pages resident there any more.
  unsigned char vec = 0;
  CHECK(mincore(p, 4096, &vec) != 0);
}

TEST_CASE("page arrays value-initialise their elements and report their pages", "[page_memory]") {
  PageArray<Record> small(10, PageOptions{});
  REQUIRE(small.size() == 10);
  CHECK(small.kind() == PageKind::kSmall);
  for (const Record& r : small) CHECK((r.a == 7 && r.b == UINT32_MAX));
  PageArray<uint64_t> large(1 << 18, PageOptions{.hugetlb = false, .transparent = false});
  CHECK(large.bytes() == (size_t{1} << 21));
  CHECK(AllZero(large.data(), large.bytes()));
  PageArray<uint64_t> moved = std::move(large);
  CHECK(large.empty());
  CHECK(moved.size() == (1u << 18));
  PageTally tally;
  tally.Add(small.bytes(), small.kind());
  CHECK(tally.result() == PageKind::kSmall);  // nothing large: plain pages
  tally.Add(moved.bytes(), PageKind::kHugeTlb);
  CHECK(tally.result() == PageKind::kHugeTlb);
  tally.Add(moved.bytes(), PageKind::kTransparentHuge);
  CHECK(tally.result() == PageKind::kTransparentHuge);
}

TEST_CASE("the scheduler reports the pages of its tables", "[page_memory][scheduler]") {
  SchedulerConfig c;
  c.name = "pages";
  c.rate_bps = 10'000'000'000;
  c.max_messages = 1 << 16;  // 8 MiB of message slots
  c.classes = {ClassConfig{.name = "srpt", .policy = Policy::kSrpt}};
  auto drop = [](void*, rte_mbuf* const*, uint16_t) {};
  c.huge_pages = false;
  auto plain = Scheduler::Create(c, drop, nullptr);
  REQUIRE(plain.ok());
  CHECK((*plain)->table_pages() == PageKind::kSmall);
  CHECK((*plain)->Stats().table_pages == PageKind::kSmall);
  c.huge_pages = true;
  auto huge = Scheduler::Create(c, drop, nullptr);
  REQUIRE(huge.ok());
  if (FreeHugePages() == 0) CHECK((*huge)->table_pages() != PageKind::kHugeTlb);
  CHECK(std::string(PageKindName((*huge)->table_pages())).size() > 0);
}

}  // namespace
}  // namespace qosvisor::sched
