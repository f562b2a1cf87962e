// End-to-end tests of the VMM with the tiny guests from tests/guests/: boot, serial, debug-exit,
// pause/resume, stop (graceful and forced), restart, lifecycle refusals, guest faults.
#include "hv/vm.h"

#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <thread>

#include "hv/boot_abi.h"
#include "hv_test_util.h"

namespace qosvisor::hv {
namespace {

using namespace std::chrono_literals;
using testing::GuestOptions;
using testing::GuestPath;
using testing::ReadWholeFile;
using testing::TempFile;
using testing::WaitUntil;

uint64_t Progress(Vm& vm, int i) {
  uint64_t v = 0;
  REQUIRE(vm.memory().LoadAtomic<uint64_t>(
      QV_BOOT_INFO_GPA + offsetof(qv_boot_info, progress) + 8 * static_cast<uint64_t>(i), &v));
  return v;
}

TEST_CASE("hello guest prints and exits through debug-exit", "[kvm][vm]") {
  QV_REQUIRE_KVM();
  TempFile log("hello.log");
  auto o = GuestOptions("hello", "hello", log.path());
  o.cmdline = "exit=7 greeting";
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  REQUIRE((*vm)->state() == VmState::kCreated);
  REQUIRE((*vm)->Start().ok());
  auto exit = (*vm)->WaitForExit(10s);
  REQUIRE(exit.has_value());
  INFO(exit->detail);
  CHECK(exit->reason == VmExitReason::kDebugExit);
  CHECK(exit->code == 7);
  CHECK((*vm)->state() == VmState::kStopped);
  std::string text = ReadWholeFile(log.path());
  CHECK(text.find("hello from the qosvisor test guest\n") == 0);
  CHECK(text.find("mem_bytes=33554432 e820=3 cmdline=exit=7 greeting\n") != std::string::npos);
  CHECK((*vm)->serial().lines() == 2);
  CHECK((*vm)->exits() > 0);
}

TEST_CASE("pause stops the counter guest and resume keeps it going", "[kvm][vm]") {
  QV_REQUIRE_KVM();
  TempFile log("counter.log");
  auto vm = Vm::Create(GuestOptions("counter", "counter", log.path()));
  REQUIRE(vm.ok());
  Vm& v = **vm;
  REQUIRE(v.Start().ok());
  REQUIRE(WaitUntil([&] { return Progress(v, 0) > 1'000'000; }, 10s));

  REQUIRE(v.Pause().ok());
  CHECK(v.state() == VmState::kPaused);
  uint64_t at_pause = Progress(v, 0);
  std::this_thread::sleep_for(50ms);
  CHECK(Progress(v, 0) == at_pause);  // no vCPU runs guest code while paused

  REQUIRE(v.Resume().ok());
  CHECK(v.state() == VmState::kRunning);
  CHECK(WaitUntil([&] { return Progress(v, 0) > at_pause + 1'000'000; }, 10s));

  // A second pause/resume cycle behaves the same.
  REQUIRE(v.Pause().ok());
  uint64_t again = Progress(v, 0);
  std::this_thread::sleep_for(20ms);
  CHECK(Progress(v, 0) == again);
  REQUIRE(v.Resume().ok());

  // The guest honours the shutdown request: a graceful stop with its own exit code.
  auto exit = v.Stop(5000ms);
  REQUIRE(exit.ok());
  INFO(exit->detail);
  CHECK(exit->reason == VmExitReason::kDebugExit);
  CHECK(exit->code == 0);
  CHECK(v.state() == VmState::kStopped);
  CHECK(ReadWholeFile(log.path()).find("counter: stop at ") != std::string::npos);
}

TEST_CASE("stop of a paused guest resumes it so it can shut down", "[kvm][vm]") {
  QV_REQUIRE_KVM();
  TempFile log("paused-stop.log");
  auto vm = Vm::Create(GuestOptions("paused-stop", "counter", log.path()));
  REQUIRE(vm.ok());
  REQUIRE((*vm)->Start().ok());
  REQUIRE(WaitUntil([&] { return Progress(**vm, 0) > 0; }, 10s));
  REQUIRE((*vm)->Pause().ok());
  auto exit = (*vm)->Stop(5000ms);
  REQUIRE(exit.ok());
  CHECK(exit->reason == VmExitReason::kDebugExit);
}

TEST_CASE("a guest that ignores the shutdown request is forced to stop", "[kvm][vm]") {
  QV_REQUIRE_KVM();
  TempFile log("deaf.log");
  auto o = GuestOptions("deaf", "counter", log.path());
  o.cmdline = "deaf=1";
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  REQUIRE((*vm)->Start().ok());
  REQUIRE(WaitUntil([&] { return Progress(**vm, 0) > 0; }, 10s));
  auto t0 = std::chrono::steady_clock::now();
  auto exit = (*vm)->Stop(200ms);
  auto took = std::chrono::steady_clock::now() - t0;
  REQUIRE(exit.ok());
  CHECK(exit->reason == VmExitReason::kForced);
  CHECK(exit->detail.find("did not shut down within 200 ms") != std::string::npos);
  CHECK(took >= 200ms);
  CHECK(took < 5s);
  CHECK((*vm)->state() == VmState::kStopped);
}

TEST_CASE("lifecycle refuses invalid transitions naming state and transition", "[kvm][vm]") {
  QV_REQUIRE_KVM();
  TempFile log("lifecycle.log");
  auto vm = Vm::Create(GuestOptions("life", "counter", log.path()));
  REQUIRE(vm.ok());
  Vm& v = **vm;

  Status s = v.Pause();
  REQUIRE_FALSE(s.ok());
  CHECK(s.message() == "vm 'life': cannot pause: the vm is created (pause needs running)");
  CHECK_FALSE(v.Resume().ok());
  auto stop = v.Stop();
  REQUIRE_FALSE(stop.ok());
  CHECK(stop.message().find("cannot stop: the vm is created") != std::string::npos);

  REQUIRE(v.Start().ok());
  s = v.Start();
  REQUIRE_FALSE(s.ok());
  CHECK(s.message() ==
        "vm 'life': cannot start: the vm is running (start needs created or stopped)");
  s = v.Resume();
  CHECK(s.message() == "vm 'life': cannot resume: the vm is running (resume needs paused)");

  REQUIRE(v.Pause().ok());
  s = v.Pause();
  CHECK(s.message() == "vm 'life': cannot pause: the vm is paused (pause needs running)");
  s = v.Start();
  CHECK(s.message().find("cannot start: the vm is paused") != std::string::npos);
  REQUIRE(v.Resume().ok());

  REQUIRE(v.Stop(5000ms).ok());
  CHECK(v.state() == VmState::kStopped);
  CHECK_FALSE(v.Pause().ok());
  CHECK(v.Stop().message().find("cannot stop: the vm is stopped") != std::string::npos);

  // Restart: memory is reset (the counter starts again from zero) and the log starts afresh.
  REQUIRE(v.Start().ok());
  CHECK(v.state() == VmState::kRunning);
  REQUIRE(WaitUntil([&] { return Progress(v, 0) > 0; }, 10s));
  REQUIRE(v.Stop(5000ms).ok());
  std::string text = ReadWholeFile(log.path());
  CHECK(text.find("counter: start\n") == 0);
  CHECK(text.find("counter: start\n", 1) == std::string::npos);

  REQUIRE(v.Destroy().ok());
  CHECK(v.state() == VmState::kDestroyed);
  s = v.Start();
  CHECK(s.message() ==
        "vm 'life': cannot start: the vm is destroyed (start needs created or stopped)");
  s = v.Destroy();
  CHECK(s.message().find("cannot destroy: the vm is destroyed") != std::string::npos);
}

TEST_CASE("destroying a running VM forces it down", "[kvm][vm]") {
  QV_REQUIRE_KVM();
  auto o = GuestOptions("destroy-running", "counter", "");
  o.cmdline = "deaf=1";
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  REQUIRE((*vm)->Start().ok());
  REQUIRE(WaitUntil([&] { return Progress(**vm, 0) > 0; }, 10s));
  REQUIRE((*vm)->Destroy().ok());
  CHECK((*vm)->state() == VmState::kDestroyed);
  CHECK((*vm)->last_exit().reason == VmExitReason::kForced);
}

TEST_CASE("a faulting guest ends with the fault reported, the host carries on", "[kvm][vm]") {
  QV_REQUIRE_KVM();
  TempFile log("fault.log");
  auto vm = Vm::Create(GuestOptions("fault", "fault", log.path()));
  REQUIRE(vm.ok());
  REQUIRE((*vm)->Start().ok());
  auto exit = (*vm)->WaitForExit(20s);
  REQUIRE(exit.has_value());
  CHECK(exit->reason == VmExitReason::kDebugExit);
  CHECK(exit->code == (0xe0u | 6u));  // #UD
  CHECK(ReadWholeFile(log.path()).find("guest fault: vector 6") != std::string::npos);
}

TEST_CASE("a forbidden system call on a vCPU thread stops its VM, not the appliance",
          "[kvm][vm][seccomp]") {
  QV_REQUIRE_KVM();
  std::atomic<int> socket_errno{0};
  auto o = GuestOptions("confined", "counter", "");
  o.vcpu_thread_test_hook = [&](uint32_t) {
    // What an exploited device model might try: open a socket.
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    socket_errno = fd < 0 ? errno : 0;
    if (fd >= 0) ::close(fd);
  };
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  REQUIRE((*vm)->Start().ok());
  auto exit = (*vm)->WaitForExit(10s);
  REQUIRE(exit.has_value());
  CHECK(socket_errno == EPERM);  // the call did not run
  CHECK(exit->reason == VmExitReason::kError);
  CHECK(exit->detail ==
        "vcpu 0: forbidden system call socket (41) (not allowed to vCPU threads); the VM was "
        "stopped");
  CHECK((*vm)->state() == VmState::kStopped);
  // This thread is not confined, and other VMs run on under their filters.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  CHECK(fd >= 0);
  ::close(fd);
  TempFile log("after.log");
  auto other = Vm::Create(GuestOptions("after", "hello", log.path()));
  REQUIRE(other.ok());
  REQUIRE((*other)->Start().ok());
  auto done = (*other)->WaitForExit(10s);
  REQUIRE(done.has_value());
  CHECK(done->reason == VmExitReason::kDebugExit);
}

TEST_CASE("two VMs run side by side", "[kvm][vm]") {
  QV_REQUIRE_KVM();
  TempFile log_a("a.log"), log_b("b.log");
  auto a = Vm::Create(GuestOptions("a", "counter", log_a.path()));
  auto b = Vm::Create(GuestOptions("b", "hello", log_b.path()));
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE((*a)->Start().ok());
  REQUIRE((*b)->Start().ok());
  REQUIRE((*b)->WaitForExit(10s).has_value());
  CHECK(WaitUntil([&] { return Progress(**a, 0) > 0; }, 10s));
  CHECK((*a)->state() == VmState::kRunning);
  REQUIRE((*a)->Stop(5000ms).ok());
}

TEST_CASE("memtouch dirties pages at the requested rate", "[kvm][vm]") {
  QV_REQUIRE_KVM();
  TempFile log("memtouch.log");
  auto o = GuestOptions("memtouch", "memtouch", log.path());
  o.cmdline = "pages=2000 mib=8";
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  REQUIRE((*vm)->Start().ok());
  // Measure an interval after the guest is up; the guest paces by the TSC and catches up after
  // being descheduled, so the average holds even on a busy host.
  REQUIRE(WaitUntil([&] { return Progress(**vm, 1) > 0; }, 10s));
  auto t0 = std::chrono::steady_clock::now();
  uint64_t touched0 = Progress(**vm, 1);
  std::this_thread::sleep_for(500ms);
  uint64_t touched = Progress(**vm, 1) - touched0;
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  REQUIRE((*vm)->Stop(5000ms).ok());
  double rate = static_cast<double>(touched) / secs;
  INFO("pages touched " << touched << " in " << secs << " s");
  CHECK(rate > 2000 * 0.5);
  CHECK(rate < 2000 * 1.5);
  // The pages really changed in guest memory: page 0 of the region was touched at least once.
  uint64_t first = 0;
  REQUIRE((*vm)->memory().LoadAtomic<uint64_t>(8ull << 20, &first));
  CHECK(first >= 1);
}

TEST_CASE("create refuses bad images and impossible sizes with clear errors", "[kvm][vm]") {
  QV_REQUIRE_KVM();
  auto o = GuestOptions("bad", "hello", "");
  o.image = "/nonexistent/guest.elf";
  auto vm = Vm::Create(o);
  REQUIRE_FALSE(vm.ok());
  CHECK(vm.message().find("vm 'bad': image '/nonexistent/guest.elf': cannot open") == 0);

  o.image = GuestPath("hello");
  o.memory_bytes = 2ull << 20;  // the smallest VM: image at 1 MiB, bss included, still fits
  CHECK(Vm::Create(o).ok());

  o.vcpus = 100000;
  vm = Vm::Create(o);
  REQUIRE_FALSE(vm.ok());
  CHECK(vm.message().find("vcpus 100000 is out of range") != std::string::npos);
}

TEST_CASE("create checks the host's resources", "[kvm][vm]") {
  QV_REQUIRE_KVM();
  auto host = ReadHostResources();
  REQUIRE(host.ok());
  {
    // Memory promised to live VMs counts even before their guests touch it.
    std::vector<std::unique_ptr<Vm>> vms;
    auto big = GuestOptions("half", "hello", "");
    big.memory_bytes =
        std::min<uint64_t>(kMaxMemoryBytes, host->mem_available_bytes / 2) / 4096 * 4096;
    Result<std::unique_ptr<Vm>> vm = Status::Error("not tried");
    for (int created = 0; created < 64; ++created) {
      vm = Vm::Create(big);
      if (!vm.ok()) break;
      vms.push_back(std::move(vm).value());
    }
    REQUIRE_FALSE(vm.ok());
    CHECK(vm.message().find("of the VMs already created exceeds") != std::string::npos);
    vms.clear();  // destroyed VMs give their memory back
    CHECK(Vm::Create(big).ok());
  }
  auto o = GuestOptions("big", "hello", "");
  o.vcpus = host->cpus + 1;
  if (o.vcpus <= kMaxVcpus) {
    auto vm = Vm::Create(o);
    REQUIRE_FALSE(vm.ok());
    CHECK(vm.message().find("vcpus but the host has") != std::string::npos);
  }
}

TEST_CASE("a VM with several vCPUs boots on the first and stops cleanly", "[kvm][vm]") {
  QV_REQUIRE_KVM();
  auto host = ReadHostResources();
  REQUIRE(host.ok());
  if (host->cpus < 2) {
    WARN("SKIPPED: needs 2 host CPUs");
    return;
  }
  TempFile log("smp.log");
  auto o = GuestOptions("smp", "counter", log.path());
  o.vcpus = 2;
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  REQUIRE((*vm)->Start().ok());
  REQUIRE(WaitUntil([&] { return Progress(**vm, 0) > 0; }, 10s));
  REQUIRE((*vm)->Pause().ok());  // the AP waiting for SIPI must pause too
  REQUIRE((*vm)->Resume().ok());
  auto exit = (*vm)->Stop(5000ms);
  REQUIRE(exit.ok());
  CHECK(exit->reason == VmExitReason::kDebugExit);
}

TEST_CASE("vflash data persists across VMs and restarts, and a resize reaches the guest",
          "[kvm][vm][blk]") {
  QV_REQUIRE_KVM();
  TempFile disk("vm-vflash.img"), meta("vm-vflash.img.meta"), log1("blk1.log"), log2("blk2.log");
  auto o = GuestOptions("blk1", "blk", log1.path());
  o.disk = VflashOptions{disk.path(), 1 << 20, "qv-flash-1"};
  o.cmdline = "write=1 verify=1 seed=5 sectors=128";
  {
    auto vm = Vm::Create(o);
    REQUIRE(vm.ok());
    CHECK((*vm)->guest_cmdline() ==
          "write=1 verify=1 seed=5 sectors=128 virtio_mmio.device=4K@0xd0000000:5");
    REQUIRE((*vm)->Start().ok());
    auto exit = (*vm)->WaitForExit(20s);
    REQUIRE(exit.has_value());
    std::string text = ReadWholeFile(log1.path());
    INFO(text);
    CHECK(exit->code == 0);
    CHECK(text.find("blk: capacity=2048 id=qv-flash-1\n") != std::string::npos);
    CHECK(text.find("blk: wrote 128 sectors\n") != std::string::npos);
    CHECK(text.find("blk: verify ok\n") != std::string::npos);
    CHECK(text.find("blk: out-of-range read refused\n") != std::string::npos);
    CHECK((*vm)->disk()->blk_counters().flushes == 1);
  }
  // Another VM on the same disk sees the data, then the disk grows while the guest runs.
  o.name = "blk2";
  o.serial_log = log2.path();
  o.cmdline = "verify=1 seed=5 sectors=128 wait_resize=1";
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  Vm& v = **vm;
  REQUIRE(v.Start().ok());
  REQUIRE(WaitUntil([&] { return ReadWholeFile(log2.path()).find("refused") != std::string::npos; },
                    20s));
  CHECK(ReadWholeFile(log2.path()).find("blk: verify ok\n") != std::string::npos);
  REQUIRE(v.disk()->Resize(2 << 20).ok());
  auto exit = v.WaitForExit(20s);
  REQUIRE(exit.has_value());
  std::string text = ReadWholeFile(log2.path());
  INFO(text);
  CHECK(exit->code == 0);
  // Woken by the config-change interrupt (irqfd → I/O APIC → its handler), not by polling.
  CHECK(text.find("blk: capacity changed to 4096 (on its config interrupt)\n") !=
        std::string::npos);
  CHECK(text.find("blk: new last sectors ok\n") != std::string::npos);
  CHECK(ReadWholeFile(meta.path()).find("\"size_bytes\":2097152") != std::string::npos);

  // Restart the same VM: the data and the new size are still there.
  REQUIRE(v.Start().ok());
  REQUIRE(WaitUntil([&] { return ReadWholeFile(log2.path()).find("refused") != std::string::npos; },
                    20s));
  auto stop = v.Stop(5000ms);
  REQUIRE(stop.ok());
  text = ReadWholeFile(log2.path());
  CHECK(text.find("blk: capacity=4096 id=qv-flash-1\n") != std::string::npos);
  CHECK(text.find("blk: verify ok\n") != std::string::npos);
  CHECK(stop->code == 4);  // the guest left its resize wait on the shutdown request
}

TEST_CASE("dirty page tracking sees the pages memtouch writes", "[kvm][vm][dirty]") {
  QV_REQUIRE_KVM();
  auto o = GuestOptions("dirty", "memtouch", "");
  o.cmdline = "pages=2000 mib=4";  // region: [8 MiB, 12 MiB) = 1024 pages
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  Vm& v = **vm;
  constexpr auto kTracker = Vm::ChangeReader::kPageTracker;
  constexpr auto kMigration = Vm::ChangeReader::kMigration;
  auto before = v.TakeChangedPages(kTracker);
  REQUIRE_FALSE(before.ok());
  CHECK(before.message().find("the page tracker is not tracking") != std::string::npos);
  REQUIRE(v.TrackChanges(kTracker, true).ok());
  REQUIRE(v.Start().ok());
  REQUIRE(WaitUntil([&] { return Progress(v, 1) > 0; }, 10s));
  REQUIRE(v.TakeChangedPages(kTracker).ok());  // start a fresh interval
  uint64_t touched0 = Progress(v, 1);
  std::this_thread::sleep_for(200ms);
  uint64_t touched1 = Progress(v, 1);
  auto log = v.TakeChangedPages(kTracker);
  REQUIRE(log.ok());
  auto count = [](const std::vector<uint64_t>& bitmap, uint64_t first_page, uint64_t end_page) {
    uint64_t n = 0;
    for (uint64_t p = first_page; p < end_page; ++p) n += (bitmap[p / 64] >> (p % 64)) & 1;
    return n;
  };
  uint64_t in_region = count(*log, 2048, 3072);
  uint64_t written = touched1 - touched0;
  INFO("pages written " << written << ", dirty in region " << in_region);
  CHECK(in_region > 0);
  // Each page written in the interval is dirty (round robin: distinct unless it wrapped).
  CHECK(in_region >= std::min<uint64_t>(written, 1024) * 9 / 10);
  CHECK(count(*log, 4096, 8192) == 0);  // nothing above the region is written

  // A second reader (a migration) starting meanwhile takes nothing from the first: each sees
  // every page changed since its own previous take, however their takes interleave.
  REQUIRE(v.TakeChangedPages(kTracker).ok());
  REQUIRE(v.TrackChanges(kMigration, true).ok());
  std::this_thread::sleep_for(100ms);
  auto migration_first = v.TakeChangedPages(kMigration);  // harvests the log for both
  std::this_thread::sleep_for(100ms);
  auto tracker = v.TakeChangedPages(kTracker);
  auto migration_second = v.TakeChangedPages(kMigration);
  REQUIRE(migration_first.ok());
  REQUIRE(tracker.ok());
  REQUIRE(migration_second.ok());
  const uint64_t tracker_n = count(*tracker, 2048, 3072);
  const uint64_t first_n = count(*migration_first, 2048, 3072);
  INFO("tracker " << tracker_n << ", migration " << first_n);
  CHECK(first_n > 0);
  CHECK(tracker_n >= first_n);  // the migration's first take is in the tracker's too
  for (size_t w = 0; w < migration_first->size(); ++w) {
    CHECK(((*migration_first)[w] & ~(*tracker)[w]) == 0);
  }
  // The migration going away leaves the tracker's log on.
  REQUIRE(v.TrackChanges(kMigration, false).ok());
  CHECK(v.TakeChangedPages(kTracker).ok());
  CHECK_FALSE(v.TakeChangedPages(kMigration).ok());
  REQUIRE(v.Stop(5000ms).ok());
  REQUIRE(v.TrackChanges(kTracker, false).ok());
  CHECK_FALSE(v.tracking(kTracker));
}

TEST_CASE("a hostile guest breaks only its own device, the host and other VMs carry on",
          "[kvm][vm][hostile]") {
  QV_REQUIRE_KVM();
  TempFile disk("hostile.img"), meta("hostile.img.meta"), log("hostile.log"),
      other_log("bystander.log");
  auto bystander = Vm::Create(GuestOptions("bystander", "counter", other_log.path()));
  REQUIRE(bystander.ok());
  REQUIRE((*bystander)->Start().ok());

  auto o = GuestOptions("hostile", "hostile", log.path());
  o.disk = VflashOptions{disk.path(), 1 << 20, ""};
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  REQUIRE((*vm)->Start().ok());
  auto exit = (*vm)->WaitForExit(20s);
  REQUIRE(exit.has_value());
  std::string text = ReadWholeFile(log.path());
  INFO(text);
  CHECK(exit->reason == VmExitReason::kDebugExit);
  CHECK(exit->code == 0);
  CHECK(text.find("hostile: outside memory -> needs reset\n") != std::string::npos);
  CHECK(text.find("hostile: loop -> needs reset\n") != std::string::npos);
  CHECK(text.find("hostile: length -> needs reset\n") != std::string::npos);
  CHECK(text.find("hostile: done\n") != std::string::npos);
  auto c = (*vm)->disk()->counters();
  CHECK(c.broken == 3);
  CHECK(c.bad_register >= 1);
  CHECK((*vm)->pio_bus().unhandled() >= 1);
  CHECK((*vm)->mmio_bus().unhandled() >= 2);

  uint64_t before = Progress(**bystander, 0);
  CHECK(WaitUntil([&] { return Progress(**bystander, 0) > before; }, 10s));
  REQUIRE((*bystander)->Stop(5000ms).ok());
}

}  // namespace
}  // namespace qosvisor::hv
