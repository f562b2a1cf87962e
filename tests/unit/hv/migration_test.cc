// Live migration between two VMs of one process over a socket pair: the counter goes on from
// exactly the step where the source paused, memory under a steady write load arrives identical,
// a fast writer is throttled until pre-copy converges, and a failure leaves the source running.
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <thread>

#include "hv/boot_abi.h"
#include "hv/migration.h"
#include "hv/page_heat.h"
#include "hv/vm.h"
#include "hv_test_util.h"

namespace qosvisor::hv {
namespace {

using namespace std::chrono_literals;
using testing::GuestOptions;
using testing::ReadWholeFile;
using testing::TempFile;
using testing::WaitUntil;

uint64_t BootInfoWord(Vm& vm, uint64_t offset) {
  uint64_t v = 0;
  REQUIRE(vm.memory().LoadAtomic<uint64_t>(QV_BOOT_INFO_GPA + offset, &v));
  return v;
}
uint64_t Counter(Vm& vm) { return BootInfoWord(vm, offsetof(qv_boot_info, progress)); }
uint64_t Touched(Vm& vm) { return BootInfoWord(vm, offsetof(qv_boot_info, progress) + 8); }

using testing::ChannelPair;
ChannelPair Connected() { return testing::ConnectedChannels(); }

struct Migrated {
  Result<MigrationResult> sent = Status::Error("not run");
  Status received = Status::Error("not run");
};

// Migrates `source` into a new incoming VM `into` (options as the source's, its own name).
Migrated Migrate(Vm& source, std::unique_ptr<Vm>& into, const std::string& name,
                 const std::string& log, const MigrationTuning& tuning) {
  VmOptions options = source.options();
  options.name = name;
  options.serial_log = log;
  auto incoming = Vm::CreateIncoming(options);
  REQUIRE(incoming.ok());
  into = std::move(incoming).value();
  ChannelPair channels = Connected();
  Migrated m;
  std::thread receiver(
      [&] { m.received = ReceiveVm(*into, channels.destination, 10000ms, nullptr); });
  m.sent = SendVm(source, channels.source, tuning, nullptr);
  receiver.join();
  return m;
}

bool SameMemory(Vm& a, Vm& b) {
  return a.memory().size() == b.memory().size() &&
         std::memcmp(a.memory().host_base(), b.memory().host_base(), a.memory().size()) == 0;
}

TEST_CASE("a migrated counter goes on from exactly the step where the source paused",
          "[kvm][migration]") {
  QV_REQUIRE_KVM();
  TempFile log_a("mig-a.log"), log_b("mig-b.log");
  auto src = Vm::Create(GuestOptions("mig-a", "counter", log_a.path()));
  REQUIRE(src.ok());
  Vm& a = **src;
  REQUIRE(a.Start().ok());
  REQUIRE(WaitUntil([&] { return Counter(a) > (1u << 20); }, 20s));
  std::unique_ptr<Vm> b;
  Migrated m = Migrate(a, b, "mig-b", log_b.path(), MigrationTuning{});
  REQUIRE(m.sent.ok());
  INFO("receive: " << m.received.message());
  REQUIRE(m.received.ok());
  CHECK(a.state() == VmState::kPaused);
  CHECK(b->state() == VmState::kPaused);
  const uint64_t at_pause = Counter(a);
  CHECK(Counter(*b) == at_pause);  // nothing lost, nothing repeated
  CHECK(SameMemory(a, *b));
  CHECK(m.sent->rounds >= 1);
  CHECK(m.sent->bytes_sent > 0);
  REQUIRE(a.Destroy().ok());

  REQUIRE(b->Resume().ok());
  REQUIRE(WaitUntil([&] { return Counter(*b) > at_pause + (1u << 20); }, 20s));
  auto exit = b->Stop(10000ms);
  REQUIRE(exit.ok());
  CHECK(exit->reason == VmExitReason::kDebugExit);
  const std::string text = ReadWholeFile(log_b.path());
  CHECK(text.find("counter: start") == std::string::npos);  // it did not boot again
  const auto at = text.rfind("counter: stop at ");
  REQUIRE(at != std::string::npos);
  CHECK(std::stoull(text.substr(at + 17)) > at_pause);
}

TEST_CASE("memory under a steady write load arrives identical, over several rounds",
          "[kvm][migration]") {
  QV_REQUIRE_KVM();
  VmOptions o = GuestOptions("touch-a", "memtouch", "");
  o.cmdline = "pages=4000 mib=16";
  auto src = Vm::Create(o);
  REQUIRE(src.ok());
  Vm& a = **src;
  REQUIRE(a.Start().ok());
  REQUIRE(WaitUntil([&] { return Touched(a) > 4000; }, 20s));
  std::unique_ptr<Vm> b;
  MigrationTuning tuning;
  tuning.downtime = 0ms;  // never fits: every round runs, then stop-and-copy takes the rest
  tuning.max_rounds = 4;
  Migrated m = Migrate(a, b, "touch-b", "", tuning);
  REQUIRE(m.sent.ok());
  REQUIRE(m.received.ok());
  // Every round runs, unless one finds nothing changed (a guest starved of CPU on a busy box).
  CHECK((m.sent->rounds == 4 || m.sent->converged));
  CHECK(m.sent->pages_sent > m.sent->final_pages);
  CHECK(SameMemory(a, *b));
  const uint64_t touched = Touched(*b);
  REQUIRE(b->Resume().ok());
  CHECK(WaitUntil([&] { return Touched(*b) > touched + 1000; }, 20s));
}

TEST_CASE("a guest that dirties memory faster than the link drains it is throttled until it "
          "converges",
          "[kvm][migration]") {
  QV_REQUIRE_KVM();
  VmOptions o = GuestOptions("fast-a", "memtouch", "");
  o.cmdline = "pages=20000 mib=16";  // 80 MiB/s of writes
  auto src = Vm::Create(o);
  REQUIRE(src.ok());
  Vm& a = **src;
  REQUIRE(a.Start().ok());
  REQUIRE(WaitUntil([&] { return Touched(a) > 20000; }, 20s));
  std::unique_ptr<Vm> b;
  MigrationTuning tuning;
  tuning.bandwidth_bps = 200'000'000;  // 25 MB/s: slower than the guest writes
  tuning.downtime = 50ms;
  tuning.max_rounds = 40;
  Migrated m = Migrate(a, b, "fast-b", "", tuning);
  REQUIRE(m.sent.ok());
  REQUIRE(m.received.ok());
  CHECK(m.sent->max_throttle_percent > 0);
  CHECK(SameMemory(a, *b));
}

// A fresh hot/cold guest (1 MiB rewritten 80 times a second, low; 16 MiB written slowly above
// it), its heat learnt over five 200 ms harvests, migrated over a link capped at 400 Mbit/s.
Result<MigrationResult> MigrateHotCold(bool order_by_heat) {
  auto o = GuestOptions(order_by_heat ? "order-on" : "order-off", "memtouch", "");
  o.cmdline = "hot_at=8 hot_mib=1 hot_pages=20000 at=10 mib=16 pages=400";
  auto src = Vm::Create(o);
  REQUIRE(src.ok());
  Vm& a = **src;
  REQUIRE(a.TrackChanges(Vm::ChangeReader::kPageTracker, true).ok());
  REQUIRE(a.Start().ok());
  REQUIRE(WaitUntil([&] { return Touched(a) > 0; }, 10s));
  PageHeat heat(a.memory().size());
  REQUIRE(a.TakeChangedPages(Vm::ChangeReader::kPageTracker).ok());
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(200ms);
    auto changed = a.TakeChangedPages(Vm::ChangeReader::kPageTracker);
    REQUIRE(changed.ok());
    heat.Add(*changed, 0.2);
  }
  CHECK(heat.Heat(4) == RegionHeat::kHot);    // [8 MiB, 10 MiB): the hot MiB
  CHECK(heat.Heat(12) == RegionHeat::kCold);  // 24 MiB: written every 10 s at most
  MigrationTuning tuning;
  tuning.bandwidth_bps = 400'000'000;
  tuning.heat = heat;
  tuning.order_by_heat = order_by_heat;
  std::unique_ptr<Vm> b;
  Migrated m = Migrate(a, b, o.name + "-b", "", tuning);
  INFO("receive: " << m.received.message());
  REQUIRE(m.received.ok());
  CHECK(SameMemory(a, *b));
  return m.sent;
}

TEST_CASE("pre-copy sends cold regions first and holds hot pages back: fewer pages go",
          "[kvm][migration]") {
  QV_REQUIRE_KVM();
  auto ordered = MigrateHotCold(true);
  auto plain = MigrateHotCold(false);
  REQUIRE(ordered.ok());
  REQUIRE(plain.ok());
  INFO("ordered: " << ordered->pages_sent << " pages, " << ordered->rounds << " rounds, "
                   << ordered->pages_held_back << " held back; address order: "
                   << plain->pages_sent << " pages, " << plain->rounds << " rounds");
  CHECK(ordered->pages_held_back > 0);
  CHECK(plain->pages_held_back == 0);
  // Address order sends the 256 hot pages in round 0 and again at the end; held back, they go
  // once. Half of them is the margin for the slowly written pages' share of the timing.
  CHECK(ordered->pages_sent + 128 <= plain->pages_sent);
}

TEST_CASE("when the destination goes away the source runs on, untracked", "[kvm][migration]") {
  QV_REQUIRE_KVM();
  auto src = Vm::Create(GuestOptions("lost-a", "counter", ""));
  REQUIRE(src.ok());
  Vm& a = **src;
  REQUIRE(a.Start().ok());
  REQUIRE(WaitUntil([&] { return Counter(a) > (1u << 20); }, 20s));
  ChannelPair channels = Connected();
  channels.destination.Close();
  auto sent = SendVm(a, channels.source, MigrationTuning{}, nullptr);
  REQUIRE_FALSE(sent.ok());
  CHECK(a.state() == VmState::kRunning);
  const uint64_t now = Counter(a);
  CHECK(WaitUntil([&] { return Counter(a) > now + (1u << 20); }, 20s));
  // The migration's tracking is off again.
  CHECK_FALSE(a.tracking(Vm::ChangeReader::kMigration));
  CHECK_FALSE(a.TakeChangedPages(Vm::ChangeReader::kMigration).ok());
}

TEST_CASE("a vflash disk moves with the VM: its data, its holes and its size", "[kvm][migration]") {
  QV_REQUIRE_KVM();
  TempFile disk_a("mig-disk-a.img"), meta_a("mig-disk-a.img.meta");
  TempFile disk_b("mig-disk-b.img"), meta_b("mig-disk-b.img.meta");
  {
    // What an earlier life of the guest left: data at 64 KiB and at 3 MiB, holes elsewhere.
    std::ofstream out(disk_a.path(), std::ios::binary);
    out.seekp(64 * 1024);
    out << std::string(5000, 'x');
    out.seekp(3 << 20);
    out << std::string(100, 'y');
  }
  VmOptions o = GuestOptions("disk-a", "counter", "");
  o.disk = VflashOptions{disk_a.path(), 4 << 20, "d0"};
  auto src = Vm::Create(o);
  REQUIRE(src.ok());
  Vm& a = **src;
  REQUIRE(a.Start().ok());
  REQUIRE(WaitUntil([&] { return Counter(a) > (1u << 20); }, 20s));
  VmOptions into = a.options();
  into.name = "disk-b";
  into.disk->path = disk_b.path();
  auto incoming = Vm::CreateIncoming(into);
  REQUIRE(incoming.ok());
  ChannelPair channels = Connected();
  Status received = Status::Error("not run");
  std::thread receiver(
      [&] { received = ReceiveVm(**incoming, channels.destination, 10000ms, nullptr); });
  auto sent = SendVm(a, channels.source, MigrationTuning{}, nullptr);
  receiver.join();
  REQUIRE(sent.ok());
  INFO(received.message());
  REQUIRE(received.ok());
  CHECK(sent->disk_blocks_sent == 2);  // only the blocks that hold data
  CHECK(ReadWholeFile(disk_b.path()) == ReadWholeFile(disk_a.path()));
  CHECK((*incoming)->disk()->capacity_bytes() == 4u << 20);
}

TEST_CASE("state sections survive encoding; every malformed payload is refused", "[migration]") {
  std::vector<Section> sections = {{SectionKind::kConfig, 0, {'{', '}'}},
                                   {SectionKind::kVcpu, 1, std::vector<uint8_t>(100, 3)}};
  auto bytes = EncodeSections(sections);
  auto back = DecodeSections(bytes);
  REQUIRE(back.ok());
  REQUIRE(back->size() == 2);
  CHECK((*back)[1].kind == SectionKind::kVcpu);
  CHECK((*back)[1].index == 1);
  CHECK((*back)[1].payload == sections[1].payload);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    CHECK_FALSE(DecodeSections({bytes.data(), cut}).ok());
  }
  auto bad_kind = bytes;
  bad_kind[4] = 99;
  auto refused = DecodeSections(bad_kind);
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(refused.message(), Catch::Contains("section kind"));
  auto trailing = bytes;
  trailing.push_back(0);
  CHECK_FALSE(DecodeSections(trailing).ok());
}

}  // namespace
}  // namespace qosvisor::hv
