// The page counters on a real guest: memtouch's dense region is decided huge and gets a huge
// page, its sparse region does not, and the guest runs on over the collapsed memory.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "hv/boot_abi.h"
#include "hv/page_heat.h"
#include "hv/vm.h"
#include "hv_test_util.h"

namespace qosvisor::hv {
namespace {

using namespace std::chrono_literals;
using testing::GuestOptions;
using testing::WaitUntil;

constexpr uint64_t kRegion = PageHeat::kRegionBytes;

uint64_t Touched(Vm& vm) {
  uint64_t v = 0;
  REQUIRE(vm.memory().LoadAtomic<uint64_t>(
      QV_BOOT_INFO_GPA + offsetof(qv_boot_info, progress) + 8, &v));
  return v;
}

// `harvests` periods of 200 ms: changed pages into the counters, density, then the policy's
// decisions applied the way the page tracker applies them.
void TrackAndApply(Vm& vm, PageHeat& heat, int harvests) {
  constexpr auto kTracker = Vm::ChangeReader::kPageTracker;
  REQUIRE(vm.TakeChangedPages(kTracker).ok());
  auto last = std::chrono::steady_clock::now();
  for (int i = 0; i < harvests; ++i) {
    std::this_thread::sleep_for(200ms);
    auto changed = vm.TakeChangedPages(kTracker);
    REQUIRE(changed.ok());
    const auto now = std::chrono::steady_clock::now();
    heat.Add(*changed, std::chrono::duration<double>(now - last).count());
    last = now;
    auto populated = vm.memory().PopulatedPages();
    REQUIRE(populated.ok());
    heat.SetPopulated(*populated);
  }
  std::vector<int8_t> applied;
  Status s = ApplyHugePolicy(vm.memory(), heat, HugePolicy::kAuto, applied, heat.regions());
  INFO(s.message());
  CHECK(s.ok());
}

TEST_CASE("a densely used region is backed by a huge page, a sparse one is not",
          "[kvm][page-heat]") {
  QV_REQUIRE_KVM();
  if (::geteuid() != 0) {
    WARN("SKIPPED: reading /proc/kpageflags needs root");
    return;
  }
  auto o = GuestOptions("thp", "memtouch", "");
  // Dense: 4 MiB at 8 MiB written at random, about 40 % of it each period. Sparse: the first
  // page of each 2 MiB of [16 MiB, 24 MiB), every 10 ms.
  o.cmdline = "random=1 pages=2560 mib=4 at=8 sparse_mib=8 sparse_at=16";
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  Vm& v = **vm;
  REQUIRE(v.TrackChanges(Vm::ChangeReader::kPageTracker, true).ok());
  REQUIRE(v.Start().ok());
  REQUIRE(WaitUntil([&] { return Touched(v) > 0; }, 10s));
  PageHeat heat(v.memory().size());
  TrackAndApply(v, heat, 12);

  for (size_t r : {4u, 5u}) {  // [8 MiB, 12 MiB)
    INFO("dense region " << r << " counter " << heat.counter(r) << " populated "
                         << heat.populated_pages(r) << " recent " << heat.recent_harvests(r));
    CHECK(heat.DecideHuge(r) == HugeDecision::kHuge);
    auto backed = v.memory().HugeBacked(r * kRegion);
    REQUIRE(backed.ok());
    CHECK(*backed);
  }
  for (size_t r : {8u, 9u, 10u, 11u}) {  // [16 MiB, 24 MiB)
    INFO("sparse region " << r << " populated " << heat.populated_pages(r));
    CHECK(heat.Heat(r) != RegionHeat::kCold);  // written every period, but 1 page of 512
    CHECK(heat.DecideHuge(r) == HugeDecision::kSmall);
    auto backed = v.memory().HugeBacked(r * kRegion);
    REQUIRE(backed.ok());
    CHECK_FALSE(*backed);
  }
  CHECK(heat.Heat(14) == RegionHeat::kCold);  // 28 MiB: nothing writes there
  auto bytes = v.memory().HugeBackedBytes();
  REQUIRE(bytes.ok());
  CHECK(*bytes >= 2 * kRegion);
  // The guest writes on over its collapsed memory.
  const uint64_t before = Touched(v);
  CHECK(WaitUntil([&] { return Touched(v) > before + 1000; }, 10s));
  REQUIRE(v.Stop(5000ms).ok());
}

TEST_CASE("huge-page advice is refused outside whole regions and for copy-on-write memory",
          "[page-heat]") {
  auto mem = GuestMemory::Create("thp-bad", 8ull << 20, false);
  REQUIRE(mem.ok());
  CHECK(mem->AdviseHuge(4096, true).message().find("not a whole 2 MiB region") !=
        std::string::npos);
  CHECK_FALSE(mem->AdviseHuge(8ull << 20, true).ok());
  CHECK(mem->AdviseHuge(0, false).ok());
  CHECK(reinterpret_cast<uintptr_t>(mem->host_base()) % kRegion == 0);
  REQUIRE(mem->Freeze().ok());
  CHECK(mem->AdviseHuge(0, true).message().find("copy-on-write") != std::string::npos);
}

}  // namespace
}  // namespace qosvisor::hv
