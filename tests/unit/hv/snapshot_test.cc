// Snapshots, restore and forks with the tiny guests: the counter goes on without a lost or
// repeated step, corrupted snapshots are refused before anything is created, fork children share
// their parent's frozen memory until they write, and a suspended child resumes from its diff.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "hv/boot_abi.h"
#include "hv/snapshot_file.h"
#include "hv/state_codec.h"
#include "hv/vm.h"
#include "hv_test_util.h"

namespace qosvisor::hv {
namespace {

using namespace std::chrono_literals;
using testing::GuestOptions;
using testing::GuestPath;
using testing::ReadWholeFile;
using testing::TempFile;
using testing::WaitUntil;
namespace fs = std::filesystem;

// A per-test directory under /tmp, removed with everything in it.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& stem)
      : path_(fs::temp_directory_path() /
              ("qv-snap-test-" + std::to_string(::getpid()) + "-" + stem)) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() { fs::remove_all(path_); }
  std::string sub(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

uint64_t BootInfoWord(Vm& vm, uint64_t offset) {
  uint64_t v = 0;
  REQUIRE(vm.memory().LoadAtomic<uint64_t>(QV_BOOT_INFO_GPA + offset, &v));
  return v;
}
uint64_t Counter(Vm& vm) { return BootInfoWord(vm, offsetof(qv_boot_info, progress)); }
uint64_t Generation(Vm& vm) { return BootInfoWord(vm, offsetof(qv_boot_info, generation)); }

// Runs a counter VM until it has counted a little, then pauses it.
std::unique_ptr<Vm> PausedCounter(const std::string& name, const std::string& log) {
  auto vm = Vm::Create(GuestOptions(name, "counter", log));
  REQUIRE(vm.ok());
  REQUIRE((*vm)->Start().ok());
  REQUIRE(WaitUntil([&] { return Counter(**vm) > (1u << 20); }, 20s));
  REQUIRE((*vm)->Pause().ok());
  return std::move(vm).value();
}

// Resumes `vm`, sees it count past `from`, asks it to stop and returns the value it stopped at
// (the guest's own "counter: stop at N" line, so a guest that crashed fails here).
uint64_t RunOnAndStop(Vm& vm, uint64_t from, const std::string& log) {
  if (vm.state() == VmState::kPaused) REQUIRE(vm.Resume().ok());
  REQUIRE(WaitUntil([&] { return Counter(vm) > from + (1u << 20); }, 20s));
  auto exit = vm.Stop(10000ms);
  REQUIRE(exit.ok());
  INFO("exit: " << exit->detail);
  CHECK(exit->reason == VmExitReason::kDebugExit);
  CHECK(exit->code == 0);
  std::string text = ReadWholeFile(log);
  auto at = text.rfind("counter: stop at ");
  REQUIRE(at != std::string::npos);
  return std::stoull(text.substr(at + 17));
}

int OpenFdCount() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

TEST_CASE("a restored counter goes on from exactly where it was snapshotted", "[kvm][snapshot]") {
  QV_REQUIRE_KVM();
  ScratchDir dir("restore");
  TempFile log("orig.log"), log2("restored.log");
  auto vm = PausedCounter("orig", log.path());
  const uint64_t at_snapshot = Counter(*vm);
  REQUIRE(vm->Snapshot(dir.sub("s1")).ok());
  CHECK(vm->state() == VmState::kPaused);  // a paused VM stays paused
  CHECK(Counter(*vm) == at_snapshot);
  REQUIRE(vm->Destroy().ok());

  auto restored = Vm::Restore(dir.sub("s1"), {"restored", log2.path(), {}});
  REQUIRE(restored.ok());
  Vm& r = **restored;
  CHECK(r.state() == VmState::kPaused);
  CHECK(Counter(r) == at_snapshot);  // nothing lost, nothing repeated
  CHECK(Generation(r) != 0);
  CHECK(r.generation() == Generation(r));
  uint64_t stopped_at = RunOnAndStop(r, at_snapshot, log2.path());
  CHECK(stopped_at > at_snapshot);
  // The restored guest printed only what came after the snapshot: it did not boot again.
  CHECK(ReadWholeFile(log2.path()).find("counter: start") == std::string::npos);
}

TEST_CASE("a snapshot of a running VM lets it run on, and restore can stay stopped",
          "[kvm][snapshot]") {
  QV_REQUIRE_KVM();
  ScratchDir dir("running");
  TempFile log("run.log"), log2("copy.log");
  auto vm = PausedCounter("run", log.path());
  REQUIRE(vm->Resume().ok());
  REQUIRE(vm->Snapshot(dir.sub("s")).ok());
  CHECK(vm->state() == VmState::kRunning);
  const uint64_t after = Counter(*vm);
  REQUIRE(WaitUntil([&] { return Counter(*vm) > after; }, 10s));
  // A second snapshot into the same directory is refused: it would mix two states.
  auto again = vm->Snapshot(dir.sub("s"));
  REQUIRE_FALSE(again.ok());
  CHECK(again.message().find("already holds a snapshot") != std::string::npos);
  // --stop: the VM is left stopped, the snapshot intact.
  REQUIRE(vm->Snapshot(dir.sub("s2"), {.stop = true}).ok());
  CHECK(vm->state() == VmState::kStopped);
  auto copy = Vm::Restore(dir.sub("s2"), {"copy", log2.path(), {}});
  REQUIRE(copy.ok());
  RunOnAndStop(**copy, Counter(**copy), log2.path());
}

// --- corruption ---

std::string ReadFile(const std::string& path) { return ReadWholeFile(path); }
void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

TEST_CASE("every corrupted, truncated, wrong-version or wrong-architecture snapshot is refused",
          "[kvm][snapshot]") {
  QV_REQUIRE_KVM();
  ScratchDir dir("corrupt");
  TempFile log("c.log");
  {
    auto vm = PausedCounter("c", log.path());
    REQUIRE(vm->Snapshot(dir.sub("good")).ok());
  }
  const std::string state_path = dir.sub("good") + "/" + kSnapshotStateFile;
  const std::string mem_path = dir.sub("good") + "/" + kSnapshotMemoryFile;
  const std::string good_state = ReadFile(state_path);
  const int fds_before = OpenFdCount();
  auto refused = [&](const std::string& why_contains) {
    auto r = Vm::Restore(dir.sub("good"), {"c2", "", {}});
    INFO("expected a refusal mentioning '" << why_contains << "'");
    REQUIRE_FALSE(r.ok());
    CHECK(r.message().find(why_contains) != std::string::npos);
    return r.message();
  };

  SECTION("any flipped byte of the state file") {
    size_t checked = 0;
    for (size_t i = 0; i < good_state.size(); ++i) {
      std::string bad = good_state;
      bad[i] = static_cast<char>(bad[i] ^ 0x20);
      WriteFile(state_path, bad);
      auto r = Vm::Restore(dir.sub("good"), {"c2", "", {}});
      if (r.ok()) FAIL("byte " << i << " flipped was accepted");
      ++checked;
    }
    CHECK(checked == good_state.size());
  }
  SECTION("truncated anywhere") {
    for (size_t len :
         {size_t{0}, size_t{10}, size_t{30}, good_state.size() / 2, good_state.size() - 1}) {
      WriteFile(state_path, good_state.substr(0, len));
      std::string why = Vm::Restore(dir.sub("good"), {"c2", "", {}}).message();
      INFO(why);
      CHECK((why.find("truncated") != std::string::npos ||
             why.find("ends inside") != std::string::npos));
    }
    WriteFile(state_path, good_state + "x");
    refused("unexpected bytes");
  }
  SECTION("another version or architecture, with valid checksums") {
    auto rewrite_header = [&](size_t field_offset, uint32_t value) {
      std::string bad = good_state;
      std::memcpy(bad.data() + field_offset, &value, 4);
      uint32_t crc = Crc32c({reinterpret_cast<const uint8_t*>(bad.data()), 20});
      std::memcpy(bad.data() + 20, &crc, 4);
      WriteFile(state_path, bad);
    };
    rewrite_header(8, kSnapshotVersion + 1);
    refused("snapshot version 2, this qosvisor reads version 1");
    rewrite_header(12, 183);  // EM_AARCH64
    refused("architecture 183");
  }
  SECTION("memory image: a flipped byte, data in a hole, truncation") {
    WriteFile(state_path, good_state);
    std::string mem = ReadFile(mem_path);
    // The counter's page (boot info) holds data; flip one byte of it.
    std::string bad = mem;
    bad[QV_BOOT_INFO_GPA + 3] = static_cast<char>(bad[QV_BOOT_INFO_GPA + 3] ^ 1);
    WriteFile(mem_path, bad);
    refused("fails its checksum");
    bad = mem;
    bad[mem.size() - 100] = 1;  // far above anything the counter touched: a hole
    WriteFile(mem_path, bad);
    refused("does not list");
    WriteFile(mem_path, mem.substr(0, mem.size() - 4096));
    refused("bytes, the snapshot's memory is");
    WriteFile(mem_path, mem);
  }
  SECTION("a missing state file") {
    fs::remove(state_path);
    refused("No such file");
  }
  // Nothing was left behind by the refusals: no fds, no VM charged, and the intact snapshot
  // still restores.
  CHECK(OpenFdCount() == fds_before);
  WriteFile(state_path, good_state);
  CHECK(Vm::Restore(dir.sub("good"), {"c3", "", {}}).ok());
}

// --- forks ---

uint64_t RssKib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::stoull(line.substr(std::strlen(field)));
  }
  return 0;
}

uint32_t ImageChecksum(const FrozenImage& image) {
  std::vector<uint8_t> buf(1 << 20);
  uint32_t crc = 0;
  for (uint64_t off = 0; off < image.size; off += buf.size()) {
    REQUIRE(::pread(image.fd.get(), buf.data(), buf.size(), static_cast<off_t>(off)) ==
            static_cast<ssize_t>(buf.size()));
    crc = Crc32c(buf, crc);
  }
  return crc;
}

TEST_CASE("fork children count on from the parent's step, diverge, and leave its image alone",
          "[kvm][fork]") {
  QV_REQUIRE_KVM();
  TempFile log("parent.log");
  auto parent = PausedCounter("parent", log.path());
  REQUIRE(parent->Resume().ok());
  std::vector<TempFile> logs;
  std::vector<CloneIdentity> ids;
  for (int i = 0; i < 3; ++i) {
    logs.emplace_back("child" + std::to_string(i) + ".log");
    ids.push_back({"child" + std::to_string(i), logs.back().path(), {}});
  }
  auto children = parent->Fork(ids);
  REQUIRE(children.ok());
  REQUIRE(children->size() == 3);
  CHECK(parent->state() == VmState::kRunning);  // the parent runs on
  auto image = parent->base_image();
  REQUIRE(image);
  const uint32_t image_crc = ImageChecksum(*image);
  const uint64_t at_fork = Counter(*(*children)[0]);
  std::set<uint64_t> generations{Generation(*parent)};
  for (auto& c : *children) {
    CHECK(c->state() == VmState::kPaused);
    CHECK(Counter(*c) == at_fork);  // every child starts at the same step
    CHECK(c->base_image() == image);
    generations.insert(Generation(*c));
  }
  CHECK(generations.size() == 4);  // each child has its own, the parent keeps 0
  CHECK(Generation(*parent) == 0);
  // Children run and stop at different counts; the parent runs on its own copy.
  std::vector<uint64_t> stopped;
  for (size_t i = 0; i < children->size(); ++i) {
    stopped.push_back(RunOnAndStop(*(*children)[i], at_fork, logs[i].path()));
  }
  CHECK(RunOnAndStop(*parent, Counter(*parent), log.path()) > at_fork);
  CHECK(ImageChecksum(*image) == image_crc);  // nobody wrote the frozen image
}

TEST_CASE("forked children cost host memory only for what they write", "[kvm][fork]") {
  QV_REQUIRE_KVM();
  TempFile log("big.log"), meminfo("meminfo");
  auto set_available = [&](uint64_t bytes) {
    WriteFile(meminfo.path(),
              "MemTotal: 25165824 kB\nMemAvailable: " + std::to_string(bytes / 1024) + " kB\n");
  };
  set_available(1ull << 30);  // a box with 1 GiB free
  auto o = GuestOptions("big", "memtouch", log.path());
  o.memory_bytes = 256ull << 20;
  o.cmdline = "pages=20000 mib=4";
  o.meminfo_path = meminfo.path();
  auto parent = Vm::Create(o);
  REQUIRE(parent.ok());
  REQUIRE((*parent)->Start().ok());
  REQUIRE(WaitUntil(
      [&] { return BootInfoWord(**parent, offsetof(qv_boot_info, progress) + 8) > 2000; }, 20s));
  REQUIRE((*parent)->Pause().ok());  // so that only the children's pages are measured
  const uint64_t rss0 = RssKib("RssAnon:");
  std::vector<CloneIdentity> ids;
  for (int i = 0; i < 16; ++i) ids.push_back({"kid" + std::to_string(i), "", {}});
  auto children = (*parent)->Fork(ids);
  REQUIRE(children.ok());
  const uint64_t rss1 = RssKib("RssAnon:");
  INFO("host memory for 16 children of a 256 MiB VM: " << (rss1 - rss0) << " KiB");
  CHECK(rss1 < rss0 + 16 * 1024);  // < 1 MiB a child
  for (auto& c : *children) CHECK(c->ChargedBytes() < 2 * Vm::kCopyOnWriteReserveBytes);

  // One child writes its 4 MiB region: its charge grows by about that much.
  Vm& writer = *(*children)[0];
  const uint64_t before = writer.ChargedBytes();
  REQUIRE(writer.Resume().ok());
  REQUIRE(WaitUntil([&] { return writer.ChargedBytes() >= before + (3ull << 20); }, 30s));
  REQUIRE(writer.Pause().ok());
  // The host check counts those writes: with room for just what is charged now plus less than a
  // reserve, another child is refused, and the refusal says why.
  set_available(Vm::CommittedBytes() + Vm::kCopyOnWriteReserveBytes / 2);
  auto refused = (*parent)->Fork({{"one-too-many", "", {}}});
  INFO("committed " << Vm::CommittedBytes());
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.message().find("copy-on-write memory") != std::string::npos);
  set_available(Vm::CommittedBytes() + 2 * Vm::kCopyOnWriteReserveBytes);
  CHECK((*parent)->Fork({{"fits", "", {}}}).ok());
}

TEST_CASE("a suspended child saves only its diff and resumes counting on its parent's image",
          "[kvm][fork]") {
  QV_REQUIRE_KVM();
  ScratchDir dir("suspend");
  TempFile log("p.log"), clog("c.log"), rlog("r.log");
  auto parent = PausedCounter("p", log.path());
  auto children = parent->Fork({{"c", clog.path(), {}}});
  REQUIRE(children.ok());
  Vm& child = *(*children)[0];
  REQUIRE(child.Resume().ok());
  const uint64_t start = Counter(child);
  REQUIRE(WaitUntil([&] { return Counter(child) > start + (1u << 20); }, 20s));
  REQUIRE(child.Snapshot(dir.sub("diff"), {.stop = true, .diff_against_base = true}).ok());
  const uint64_t suspended_at = Counter(child);
  auto image = child.base_image();
  REQUIRE(child.Destroy().ok());
  // The diff holds a handful of pages, not the VM's 32 MiB.
  CHECK(fs::file_size(dir.sub("diff") + "/" + kSnapshotMemoryFile) == 32ull << 20);  // sparse
  struct stat st {};
  REQUIRE(::stat((dir.sub("diff") + "/" + kSnapshotMemoryFile).c_str(), &st) == 0);
  CHECK(static_cast<uint64_t>(st.st_blocks) * 512 < (1ull << 20));

  // Without its base image the diff cannot be restored.
  auto orphan = Vm::Restore(dir.sub("diff"), {"r", "", {}});
  REQUIRE_FALSE(orphan.ok());
  CHECK(orphan.message().find("was not given") != std::string::npos);
  auto resumed = Vm::Restore(dir.sub("diff"), {"r", rlog.path(), {}}, image);
  REQUIRE(resumed.ok());
  CHECK(Counter(**resumed) == suspended_at);
  RunOnAndStop(**resumed, suspended_at, rlog.path());
  // The parent's memory is its own: it never saw the child's steps.
  CHECK(Counter(*parent) < suspended_at);
}

}  // namespace
}  // namespace qosvisor::hv
