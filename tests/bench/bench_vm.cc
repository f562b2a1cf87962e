// bench_vm: boot time (create -> first serial line), VMs started per second, host memory per VM,
// and snapshot/restore/fork costs for qosvisor, beside the same tiny guest under QEMU -M microvm
// (boot; save and load through migration to a file) measured in the same run.
#include <elf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hv/boot_abi.h"
#include "hv/kvm.h"
#include "hv/kvm_abi.h"
#include "hv/unique_fd.h"
#include "hv/vm.h"
#include "tests/bench/qmp.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using qosvisor::Result;
using qosvisor::Status;
using qosvisor::hv::CloneIdentity;
using qosvisor::hv::UniqueFd;
using qosvisor::hv::Vm;
using qosvisor::hv::VmOptions;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Summary {
  double median = 0, p90 = 0, min = 0, max = 0;
};
Summary Summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.median = v[v.size() / 2];
  s.p90 = v[std::min(v.size() - 1, v.size() * 9 / 10)];
  s.min = v.front();
  s.max = v.back();
  return s;
}
nlohmann::json ToJson(const Summary& s) {
  return {{"median", s.median}, {"p90", s.p90}, {"min", s.min}, {"max", s.max}};
}

// kB fields of /proc/<pid>/status.
uint64_t StatusKb(const std::string& pid, const std::string& key) {
  std::ifstream in("/proc/" + pid + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream f(line.substr(key.size() + 1));
      uint64_t kb = 0;
      f >> kb;
      return kb;
    }
  }
  return 0;
}

void Emit(nlohmann::json j) { std::cout << j.dump() << std::endl; }

uint64_t g_memory_mib = 64;

VmOptions GuestVm(const std::string& dir, const std::string& guest, int i) {
  VmOptions o;
  o.name = "bench" + std::to_string(i);
  o.memory_bytes = g_memory_mib << 20;
  o.image = dir + "/" + guest + ".elf";
  return o;
}

// Create -> first serial line, create -> guest exit, over `runs` sequential hello VMs.
bool BenchBoot(const std::string& dir, int runs) {
  std::vector<double> first_line, exit_ms, total, create_ms;
  auto t0 = Clock::now();
  for (int i = 0; i < runs; ++i) {
    auto start = Clock::now();
    auto vm = Vm::Create(GuestVm(dir, "hello", i));
    if (!vm) {
      Emit({{"bench", "vm_boot"}, {"vmm", "qosvisor"}, {"error", vm.message()}});
      return false;
    }
    create_ms.push_back(Ms(Clock::now() - start));
    if (!(*vm)->Start().ok()) return false;
    auto exit = (*vm)->WaitForExit(10s);
    auto exited = Clock::now();
    if (!exit || exit->code != 0) {
      Emit({{"bench", "vm_boot"}, {"vmm", "qosvisor"}, {"error", "hello did not exit cleanly"}});
      return false;
    }
    int64_t line_ns = (*vm)->serial().first_line_ns();
    first_line.push_back(static_cast<double>(line_ns - (*vm)->created_ns()) / 1e6);
    exit_ms.push_back(Ms(exited - start));
    (void)(*vm)->Destroy();
    total.push_back(Ms(Clock::now() - start));
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  Emit({{"bench", "vm_boot"},
        {"vmm", "qosvisor"},
        {"guest", "hello"},
        {"runs", runs},
        {"guest_memory_mib", g_memory_mib},
        {"create_to_first_line_ms", ToJson(Summarize(first_line))},
        {"create_to_exit_ms", ToJson(Summarize(exit_ms))},
        {"create_only_ms", ToJson(Summarize(create_ms))},
        {"note", "in-process: no process spawn included"}});
  Emit({{"bench", "vm_start_rate"},
        {"vmm", "qosvisor"},
        {"mode", "sequential create+boot+exit+destroy"},
        {"vms", runs},
        {"vms_per_second", runs / secs}});
  return true;
}

// Host memory per running VM: RSS growth minus the guest memory pages (shared memfd, counted as
// RssShmem), with `count` counter VMs running at once.
std::optional<double> BenchMemory(const std::string& dir, int count) {
  std::string self = std::to_string(getpid());
  // Warm up once so one-time allocations (KVM handle, CPUID tables, threads' TLS) are not charged
  // to the measured VMs.
  {
    auto vm = Vm::Create(GuestVm(dir, "hello", 999));
    if (vm && (*vm)->Start().ok()) (void)(*vm)->WaitForExit(10s);
  }
  uint64_t anon0 = StatusKb(self, "RssAnon"), file0 = StatusKb(self, "RssFile"),
           shmem0 = StatusKb(self, "RssShmem");
  auto host0 = qosvisor::hv::ReadHostResources();
  std::vector<std::unique_ptr<Vm>> vms;
  for (int i = 0; i < count; ++i) {
    auto vm = Vm::Create(GuestVm(dir, "counter", i));
    if (!vm || !(*vm)->Start().ok()) {
      Emit({{"bench", "vm_memory"}, {"vmm", "qosvisor"}, {"error", vm.message()}});
      return std::nullopt;
    }
    vms.push_back(std::move(vm).value());
  }
  // Every guest has printed its first line and is counting in ring 3.
  for (auto& vm : vms) {
    auto deadline = Clock::now() + 10s;
    while (vm->serial().lines() == 0 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  }
  uint64_t anon = StatusKb(self, "RssAnon") - anon0, file = StatusKb(self, "RssFile") - file0,
           shmem = StatusKb(self, "RssShmem") - shmem0;
  double overhead_kib = static_cast<double>(anon + file) / count;
  double guest_kib = static_cast<double>(shmem) / count;
  // Kernel side too (KVM's per-VM and per-vCPU structures, page tables): MemAvailable's drop.
  // Noisy (other processes), so reported separately.
  auto host1 = qosvisor::hv::ReadHostResources();
  double avail_drop_kib = host0.ok() && host1.ok()
                              ? (static_cast<double>(host0->mem_available_bytes) -
                                 static_cast<double>(host1->mem_available_bytes)) /
                                    1024.0 / count
                              : 0.0;
  for (auto& vm : vms) (void)vm->Stop(2000ms);
  Emit({{"bench", "vm_memory"},
        {"vmm", "qosvisor"},
        {"guest", "counter"},
        {"vms", count},
        {"guest_memory_mib", g_memory_mib},
        {"host_overhead_kib_per_vm", overhead_kib},
        {"guest_pages_touched_kib_per_vm", guest_kib},
        {"rss_kib_per_vm", overhead_kib + guest_kib},
        {"host_memavailable_drop_kib_per_vm", avail_drop_kib},
        {"note",
         "host_overhead = RSS growth minus guest pages (user space); the MemAvailable "
         "drop also counts KVM's kernel memory and the guest pages"}});
  return overhead_kib + guest_kib;
}

struct Child {
  pid_t pid = -1;
  int out = -1;
};

// Runs argv[0] with stdout on a pipe the caller reads.
Child Spawn(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return {};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  Child c;
  if (posix_spawn(&c.pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) c.pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  close(pipefd[1]);
  c.out = pipefd[0];
  return c;
}

Child SpawnQemu(const std::string& qemu, const std::string& image, bool kvm,
                uint64_t memory_mib = 64, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = {qemu, "-M", "microvm"};
  if (kvm) {
    args.insert(args.end(), {"-enable-kvm", "-cpu", "host,-arch-capabilities"});
  } else {
    args.insert(args.end(), {"-cpu", "max"});
  }
  args.insert(args.end(), {"-m", std::to_string(memory_mib), "-nodefaults", "-no-user-config",
                           "-nographic", "-serial", "stdio", "-device",
                           "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", image});
  args.insert(args.end(), extra.begin(), extra.end());
  return Spawn(std::move(args));
}

// Reads the child's stdout until a full line arrives or the deadline passes.
bool WaitLine(int fd, Clock::time_point deadline) {
  char buf[256];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (poll(&p, 1, std::max(left, 1)) <= 0) continue;
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return false;
    if (std::find(buf, buf + n, '\n') != buf + n) return true;
  }
  return false;
}

struct SpawnTimes {
  std::vector<double> first_line, exit_ms;
  double seconds = 0;
  std::string error;
};

// Spawns `make()` `runs` times in sequence; each child must print a line and exit with
// `exit_status`.
template <typename MakeChild>
SpawnTimes MeasureSpawns(int runs, int exit_status, MakeChild make) {
  SpawnTimes t;
  auto t0 = Clock::now();
  for (int i = 0; i < runs; ++i) {
    auto start = Clock::now();
    Child c = make();
    if (c.pid < 0) {
      t.error = "spawn failed";
      return t;
    }
    bool line = WaitLine(c.out, start + 20s);
    auto line_at = Clock::now();
    char drain[256];
    while (read(c.out, drain, sizeof(drain)) > 0) {
    }
    int status = 0;
    waitpid(c.pid, &status, 0);
    close(c.out);
    if (!line || !WIFEXITED(status) || WEXITSTATUS(status) != exit_status) {
      t.error = fmt::format("child did not print a line and exit with status {}", exit_status);
      return t;
    }
    t.first_line.push_back(Ms(line_at - start));
    t.exit_ms.push_back(Ms(Clock::now() - start));
  }
  t.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return t;
}

// The same measurement as for QEMU: a fresh bench_vm process that boots one hello VM. Returns
// the median spawn-to-first-line time.
std::optional<double> BenchSpawned(const std::string& self, const std::string& dir, int runs) {
  SpawnTimes t = MeasureSpawns(runs, 0, [&] {
    return Spawn({self, "--boot-once", "--qemu-runs", "0", "--guests", dir});
  });
  if (!t.error.empty()) {
    Emit({{"bench", "vm_boot"}, {"vmm", "qosvisor"}, {"mode", "spawned"}, {"error", t.error}});
    return std::nullopt;
  }
  Emit({{"bench", "vm_boot"},
        {"vmm", "qosvisor"},
        {"mode", "spawned"},
        {"guest", "hello"},
        {"runs", runs},
        {"spawn_to_first_line_ms", ToJson(Summarize(t.first_line))},
        {"spawn_to_exit_ms", ToJson(Summarize(t.exit_ms))},
        {"note", "includes process spawn (bench_vm --boot-once), as for QEMU"}});
  Emit({{"bench", "vm_start_rate"},
        {"vmm", "qosvisor"},
        {"mode", "sequential spawn+boot+exit"},
        {"vms", runs},
        {"vms_per_second", runs / t.seconds}});
  return Summarize(t.first_line).median;
}

// Child side of BenchSpawned: boot hello with its serial on stdout, exit with its code.
int BootOnce(const std::string& dir) {
  VmOptions o = GuestVm(dir, "hello", 0);
  o.serial_console = true;
  auto vm = Vm::Create(o);
  if (!vm || !(*vm)->Start().ok()) return 2;
  auto exit = (*vm)->WaitForExit(10s);
  return exit ? static_cast<int>(exit->code) : 3;
}

// QEMU's figures, or why it could not run.
struct PeerFigures {
  double boot_ms = 0;    // median spawn to first serial line
  uint64_t rss_kib = 0;  // one running VM's process
  std::string error;
};

PeerFigures BenchQemu(const std::string& qemu, const std::string& dir, int runs) {
  if (access(qemu.c_str(), X_OK) != 0) return {0, 0, qemu + " not found"};
  bool kvm = qosvisor::hv::Kvm::UnavailableReason().empty();
  std::string accel = kvm ? "kvm" : "tcg (no usable /dev/kvm)";
  SpawnTimes t = MeasureSpawns(runs, 1, [&] { return SpawnQemu(qemu, dir + "/hello.elf", kvm); });
  if (!t.error.empty()) return {0, 0, "hello: " + t.error};
  Emit({{"bench", "vm_boot"},
        {"vmm", "qemu-microvm"},
        {"accel", accel},
        {"guest", "hello"},
        {"runs", runs},
        {"spawn_to_first_line_ms", ToJson(Summarize(t.first_line))},
        {"spawn_to_exit_ms", ToJson(Summarize(t.exit_ms))},
        {"note", "includes process spawn"}});
  Emit({{"bench", "vm_start_rate"},
        {"vmm", "qemu-microvm"},
        {"accel", accel},
        {"mode", "sequential spawn+boot+exit"},
        {"vms", runs},
        {"vms_per_second", runs / t.seconds}});

  // Memory: one QEMU running the counter guest (no boot info there: it never stops by itself).
  PeerFigures figures{Summarize(t.first_line).median, 0, ""};
  Child c = SpawnQemu(qemu, dir + "/counter.elf", kvm);
  if (c.pid < 0) return {0, 0, "counter: spawn failed"};
  bool started = WaitLine(c.out, Clock::now() + 20s);
  std::this_thread::sleep_for(100ms);
  std::string pid = std::to_string(c.pid);
  uint64_t rss = StatusKb(pid, "VmRSS"), anon = StatusKb(pid, "RssAnon");
  kill(c.pid, SIGKILL);
  waitpid(c.pid, nullptr, 0);
  close(c.out);
  if (!started) return {0, 0, "counter did not start"};
  figures.rss_kib = rss;
  Emit({{"bench", "vm_memory"},
        {"vmm", "qemu-microvm"},
        {"accel", accel},
        {"guest", "counter"},
        {"guest_memory_mib", 64},
        {"rss_kib_per_vm", rss},
        {"rss_anon_kib", anon},
        {"note",
         "whole QEMU process; guest RAM is anonymous memory inside it, touched pages "
         "included (the guest touches well under 1 MiB)"}});
  return figures;
}

// Ours beside the peer's, from this run.
void EmitRatios(double boot_ms, double rss_kib, const PeerFigures& qemu) {
  Emit({{"bench", "vm_ratio"},
        {"boot_spawn_to_first_line_median_ms",
         {{"qosvisor", boot_ms}, {"qemu_microvm", qemu.boot_ms}}},
        {"qemu_over_qosvisor_boot", qemu.boot_ms / boot_ms},
        {"rss_kib_per_vm", {{"qosvisor", rss_kib}, {"qemu_microvm", qemu.rss_kib}}},
        {"qemu_over_qosvisor_rss", static_cast<double>(qemu.rss_kib) / rss_kib}});
}

// ---------------------------------------------------------------------------------------------
// Snapshot, restore and fork.

struct Settings {
  int runs = 20, vms = 10, qemu_runs = 5;
  std::string dir = QOSVISOR_GUEST_DIR, qemu = "/usr/bin/qemu-system-x86_64";
  std::string only;  // empty: everything; "boot" or "snapshot": that part alone
  std::vector<uint64_t> snapshot_mib = {64, 256, 1024, 2048};
  int snapshot_runs = 30;
  std::vector<int> fork_children = {1, 4, 16};
  int fork_runs = 5;
  uint64_t fork_memory_mib = 256;
  std::string scratch;  // where snapshots and QEMU's saved state go; empty: a temp directory
};

// A directory for this run's snapshot files, removed with everything in it.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& parent)
      : path_(fs::path(parent.empty() ? fs::temp_directory_path().string() : parent) /
              ("qv-bench-vm-" + std::to_string(getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string sub(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

Status Errno(const std::string& what) {
  return Status::Error(fmt::format("{}: {}", what, std::strerror(errno)));
}

// Bytes the file system allocated for `path` (a sparse file's holes cost nothing).
uint64_t AllocatedBytes(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}
uint64_t ApparentBytes(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// The counter guest's count: progress[0] of the boot-info page.
uint64_t Counter(Vm& vm) {
  uint64_t v = 0;
  (void)vm.memory().LoadAtomic<uint64_t>(QV_BOOT_INFO_GPA + offsetof(qv_boot_info, progress), &v);
  return v;
}

// Waits until the guest's count passes `above`, looking every 50 us. Sleeping, not spinning: on
// two cores a spinning waiter can keep the just-resumed vCPU thread off its core until the next
// timer tick (4 ms), which would be counted as restore time.
bool WaitCounterAbove(Vm& vm, uint64_t above, Clock::duration timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Counter(vm) <= above) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(50us);
  }
  return true;
}

// An untimed pause of 0-10 ms before a timed restore or VM creation. Their largest part here is a
// kernel wait paced by the timer tick (2.5-7.5 ms for a VM's first memory slot at HZ=250, see
// kvm_vm_create), so a loop with a steady cadence would sample it at one phase of the tick, a
// different one per guest size; random pauses make the medians comparable.
void DecorrelateFromTick() {
  static std::mt19937 rng(42);
  std::this_thread::sleep_for(std::chrono::microseconds(rng() % 10000));
}

// A counter VM of `mib` MiB that has booted and is counting in ring 3.
Result<std::unique_ptr<Vm>> CountingVm(const std::string& dir, uint64_t mib,
                                       const std::string& name) {
  VmOptions o;
  o.name = name;
  o.memory_bytes = mib << 20;
  o.image = dir + "/counter.elf";
  auto vm = Vm::Create(o);
  if (!vm) return vm.status();
  if (Status s = (*vm)->Start(); !s) return s;
  if (!WaitCounterAbove(**vm, 1u << 20, 20s)) {
    return Status::Error(name + ": the counter guest did not start counting");
  }
  return vm;
}

struct RestoreTimes {
  double restore_call_ms = 0;  // Restore() alone
  double counting_ms = 0;      // the whole restore
};

// One restore, timed from the Restore() call until Resume() has returned and the guest's count
// has passed the value it had in the snapshot. Included: reading and checking the state file and
// the checksums of memory.img's extents, creating the KVM VM and vCPU, mapping memory.img
// privately, loading vCPU and device state, starting the (parked) vCPU thread, resuming, and the
// guest's first steps, which fault its pages in from the file (in the page cache: it was just
// written). Not included: destroying the VM afterwards.
Result<RestoreTimes> TimedRestore(const std::string& snap, const std::string& name) {
  const auto start = Clock::now();
  auto vm = Vm::Restore(snap, {name, "", {}});
  if (!vm) return vm.status();
  RestoreTimes t;
  t.restore_call_ms = Ms(Clock::now() - start);
  const uint64_t saved = Counter(**vm);
  if (Status s = (*vm)->Resume(); !s) return s;
  if (!WaitCounterAbove(**vm, saved, 10s)) {
    return Status::Error(name + ": the restored counter did not count on");
  }
  t.counting_ms = Ms(Clock::now() - start);
  (void)(*vm)->Destroy();
  return t;
}

// Child side of the spawned restore: restore, resume, see the count move, say so, exit.
int RestoreOnce(const std::string& snap) {
  auto vm = Vm::Restore(snap, {"restored", "", {}});
  if (!vm) {
    std::cerr << "bench_vm --restore-once: " << vm.message() << "\n";
    return 2;
  }
  const uint64_t saved = Counter(**vm);
  if (!(*vm)->Resume().ok() || !WaitCounterAbove(**vm, saved, 10s)) return 3;
  std::cout << "restored: counting" << std::endl;
  (void)(*vm)->Destroy();
  return 0;
}

struct SnapshotFigures {
  uint64_t mib = 0;
  Summary save_ms, restore_ms, restore_spawned_ms;
  uint64_t disk_bytes = 0;
};

// Snapshot() of the running counter VM (pause, write both files and fsync them, resume), then a
// restore of that snapshot, `runs` times; then the last snapshot restored by fresh processes.
Result<SnapshotFigures> BenchSnapshotSize(const Settings& set, const ScratchDir& scratch,
                                          uint64_t mib) {
  auto vm = CountingVm(set.dir, mib, fmt::format("snap{}", mib));
  if (!vm) return vm.status();
  std::vector<double> save, restore, restore_call;
  std::string snap;
  for (int i = 0; i < set.snapshot_runs; ++i) {
    if (!snap.empty()) fs::remove_all(snap);
    snap = scratch.sub(fmt::format("ours-{}-{}", mib, i));
    const auto start = Clock::now();
    if (Status s = (*vm)->Snapshot(snap); !s) return s;
    save.push_back(Ms(Clock::now() - start));
    // The source waits while the copy is restored: a counting vCPU would take one of this box's
    // two cores from the restore (QEMU's source is stopped the same way).
    if (Status s = (*vm)->Pause(); !s) return s;
    DecorrelateFromTick();
    auto t = TimedRestore(snap, fmt::format("restored{}-{}", mib, i));
    if (!t) return t.status();
    restore.push_back(t->counting_ms);
    restore_call.push_back(t->restore_call_ms);
    if (Status s = (*vm)->Resume(); !s) return s;
  }
  (void)(*vm)->Destroy();
  SpawnTimes spawned = MeasureSpawns(set.snapshot_runs, 0, [&] {
    return Spawn({"/proc/self/exe", "--restore-once", snap});
  });
  if (!spawned.error.empty()) return Status::Error("spawned restore: " + spawned.error);
  const std::string mem = snap + "/" + qosvisor::hv::kSnapshotMemoryFile;
  const std::string state = snap + "/" + qosvisor::hv::kSnapshotStateFile;
  SnapshotFigures f{mib, Summarize(save), Summarize(restore), Summarize(spawned.first_line),
                    AllocatedBytes(mem) + AllocatedBytes(state)};
  Emit({{"bench", "vm_snapshot"},
        {"vmm", "qosvisor"},
        {"guest", "counter"},
        {"guest_memory_mib", mib},
        {"runs", set.snapshot_runs},
        {"snapshot_ms", ToJson(f.save_ms)},
        {"restore_ms", ToJson(f.restore_ms)},
        {"restore_call_ms", ToJson(Summarize(restore_call))},
        {"restore_spawned_ms", ToJson(f.restore_spawned_ms)},
        {"disk_allocated_bytes", f.disk_bytes},
        {"memory_image_apparent_bytes", ApparentBytes(mem)},
        {"state_file_bytes", ApparentBytes(state)},
        {"note",
         "snapshot_ms: Snapshot() of the running guest (pause, write, fsync, resume). "
         "restore_ms: Restore() until Resume() returned and the count moved past the saved "
         "value, in-process; restore_call_ms: the Restore() call alone. restore_spawned_ms: "
         "the same from the spawn of a fresh bench_vm --restore-once until it says the count "
         "moved, as measured for QEMU. Source paused meanwhile; page cache warm"}});
  fs::remove_all(snap);
  return f;
}

constexpr double kRestoreFlatnessTarget = 1.2;

// Restore time of the largest size over that of the smallest: flat means memory is not copied.
// Medians as the figure; minimums beside them, because on this box one kernel wait of a few
// milliseconds with a wide spread (a VM's first memory slot, see kvm_vm_create) dominates a
// restore.
void EmitFlatness(const std::string& vmm, const std::map<uint64_t, Summary>& by_mib,
                  const std::string& what) {
  if (by_mib.size() < 2) return;
  const auto& [small_mib, small] = *by_mib.begin();
  const auto& [large_mib, large] = *by_mib.rbegin();
  nlohmann::json medians, mins;
  for (const auto& [mib, s] : by_mib) {
    medians[std::to_string(mib)] = s.median;
    mins[std::to_string(mib)] = s.min;
  }
  const double ratio = large.median / small.median;
  nlohmann::json line = {{"bench", "vm_restore_flatness"},
                         {"vmm", vmm},
                         {"measure", what},
                         {"median_ms_by_guest_mib", medians},
                         {"min_ms_by_guest_mib", mins},
                         {"largest_over_smallest", ratio},
                         {"largest_over_smallest_min", large.min / small.min},
                         {"largest_mib", large_mib},
                         {"smallest_mib", small_mib}};
  // Our target: restore maps memory lazily, so the largest size may cost at most 1.2x the
  // smallest.
  if (vmm == "qosvisor") {
    line["target_max"] = kRestoreFlatnessTarget;
    line["within_target"] = ratio <= kRestoreFlatnessTarget;
  }
  Emit(line);
}

// ---------------------------------------------------------------------------------------------
// Forks, and the part of them that is KVM's VM creation.

struct KvmCreateParts {
  double open = 0, vm = 0, irqchip_pit = 0, memory_slot = 0, vcpu = 0;
  double total() const { return open + vm + irqchip_pit + memory_slot + vcpu; }
};

Status SetSupportedCpuid(int vcpu_fd, const std::vector<kvm_cpuid_entry2>& entries) {
  using qosvisor::hv::KvmCpuidHeader;
  std::vector<uint8_t> buf(sizeof(KvmCpuidHeader) + entries.size() * sizeof(kvm_cpuid_entry2));
  const KvmCpuidHeader header{static_cast<uint32_t>(entries.size()), 0};
  std::memcpy(buf.data(), &header, sizeof(header));
  std::memcpy(buf.data() + sizeof(header), entries.data(),
              entries.size() * sizeof(kvm_cpuid_entry2));
  // SAFETY: buf is a C-layout kvm_cpuid2 header followed by header.nent entries, and the ioctl
  // number was built for that header size (hv/kvm_abi.h).
  if (ioctl(vcpu_fd, qosvisor::hv::kKvmSetCpuid2, buf.data()) != 0) return Errno("KVM_SET_CPUID2");
  return Status::Ok();
}

// The KVM work of one Vm::Create (hv/vm.cc), issued directly on /dev/kvm: open the handle (with
// its supported-CPUID query), KVM_CREATE_VM, TSS address, in-kernel irqchip and PIT, a memory
// slot of `memory_bytes`, one vCPU with its kvm_run mapping and CPUID. Every fork child pays all
// of it, one child after another, so it is reported apart: what Fork() costs beyond it is its
// own work (state capture, copy-on-write mapping, device state, a parked vCPU thread). This box
// does KVM in software (kvm_pvm, no VMX/SVM; notes/kvm.md), which makes this creation slow:
// milliseconds, most of them in the VM's first KVM_SET_USER_MEMORY_REGION once its in-kernel
// irqchip exists (6-10 ms, widely spread; 0.05 ms without an irqchip, and the slot's size
// hardly matters), so it is a fixed wait per VM, not work on its memory. The guest-memory
// mapping is made before the clock starts; nothing is torn down inside it.
Result<KvmCreateParts> TimeKvmCreate(void* memory, uint64_t memory_bytes) {
  KvmCreateParts p;
  auto t = Clock::now();
  auto lap = [&](double* into) {
    const auto now = Clock::now();
    *into = Ms(now - t);
    t = now;
  };
  auto kvm = qosvisor::hv::Kvm::Open();
  if (!kvm) return kvm.status();
  lap(&p.open);
  auto vm = kvm->CreateVmFd();
  if (!vm) return vm.status();
  lap(&p.vm);
  const int fd = vm->get();
  kvm_pit_config pit{};
  // SAFETY: the TSS address and irqchip take no pointer; pit is a zeroed kvm_pit_config (size
  // checked in hv/kvm_abi.h) that the kernel only reads.
  if (ioctl(fd, KVM_SET_TSS_ADDR, 0xfffbd000UL) != 0 || ioctl(fd, KVM_CREATE_IRQCHIP, 0) != 0 ||
      ioctl(fd, KVM_CREATE_PIT2, &pit) != 0) {
    return Errno("KVM irqchip/PIT");
  }
  lap(&p.irqchip_pit);
  kvm_userspace_memory_region region{};
  region.memory_size = memory_bytes;
  // SAFETY: `memory` is a live mapping of memory_bytes that outlives this VM fd.
  region.userspace_addr = reinterpret_cast<uint64_t>(memory);
  // SAFETY: region is a fully initialized kvm_userspace_memory_region the kernel only reads.
  if (ioctl(fd, KVM_SET_USER_MEMORY_REGION, &region) != 0) return Errno("memory slot");
  lap(&p.memory_slot);
  UniqueFd vcpu(ioctl(fd, KVM_CREATE_VCPU, 0UL));
  if (!vcpu.valid()) return Errno("KVM_CREATE_VCPU");
  const auto run_size = static_cast<size_t>(kvm->vcpu_mmap_size());
  // SAFETY: the vCPU's kvm_run area at the size KVM reported; unmapped below, before its fd closes.
  void* run = mmap(nullptr, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu.get(), 0);
  if (run == MAP_FAILED) return Errno("mmap kvm_run");
  Status cpuid = SetSupportedCpuid(vcpu.get(), kvm->supported_cpuid());
  lap(&p.vcpu);
  munmap(run, run_size);
  if (!cpuid) return cpuid;
  return p;
}

// `runs` bare KVM VM creations; returns the median total.
Result<double> BenchKvmCreate(int runs, uint64_t memory_bytes) {
  // SAFETY: an untouched anonymous mapping, only registered with KVM as guest memory.
  void* memory = mmap(nullptr, memory_bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (memory == MAP_FAILED) return Errno("mmap guest memory");
  std::vector<double> total, open, vm, irqchip, slot, vcpu;
  Status failed = Status::Ok();
  for (int i = 0; i < runs; ++i) {
    DecorrelateFromTick();
    auto p = TimeKvmCreate(memory, memory_bytes);
    if (!p) {
      failed = p.status();
      break;
    }
    total.push_back(p->total());
    open.push_back(p->open);
    vm.push_back(p->vm);
    irqchip.push_back(p->irqchip_pit);
    slot.push_back(p->memory_slot);
    vcpu.push_back(p->vcpu);
  }
  munmap(memory, memory_bytes);
  if (!failed) return failed;
  KvmCreateParts median{Summarize(open).median, Summarize(vm).median, Summarize(irqchip).median,
                        Summarize(slot).median, Summarize(vcpu).median};
  Emit({{"bench", "kvm_vm_create"},
        {"runs", runs},
        {"memory_slot_mib", memory_bytes >> 20},
        {"total_ms", ToJson(Summarize(total))},
        {"median_ms_by_part",
         {{"open_dev_kvm_and_supported_cpuid", median.open},
          {"KVM_CREATE_VM", median.vm},
          {"tss_irqchip_pit", median.irqchip_pit},
          {"KVM_SET_USER_MEMORY_REGION", median.memory_slot},
          {"vcpu_create_mmap_cpuid", median.vcpu}}},
        {"note",
         "the KVM ioctls of one Vm::Create issued directly; KVM is done in software on this "
         "box (kvm_pvm, no VMX/SVM), where a VM's first memory slot after its in-kernel "
         "irqchip costs milliseconds whatever its size"}});
  return Summarize(total).median;
}

struct ForkRun {
  double ms = 0;
  int64_t anon_kib = 0;
  uint64_t charged_bytes = 0;
};

// One Fork() of `n` children from a paused counter VM: its time, and what this process's RSS
// grew by before any child ran (so before any child wrote).
Result<ForkRun> ForkOnce(const Settings& set, int n, int run) {
  auto parent = CountingVm(set.dir, set.fork_memory_mib, fmt::format("parent{}-{}", n, run));
  if (!parent) return parent.status();
  // Paused, so that pages the parent writes meanwhile are not counted as the children's.
  if (Status s = (*parent)->Pause(); !s) return s;
  std::vector<CloneIdentity> ids;
  for (int i = 0; i < n; ++i) ids.push_back({fmt::format("child{}-{}-{}", n, run, i), "", {}});
  const int64_t anon0 = static_cast<int64_t>(StatusKb("self", "RssAnon"));
  const auto start = Clock::now();
  auto children = (*parent)->Fork(ids);
  ForkRun r;
  r.ms = Ms(Clock::now() - start);
  if (!children) return children.status();
  r.anon_kib = static_cast<int64_t>(StatusKb("self", "RssAnon")) - anon0;
  for (auto& c : *children) {
    r.charged_bytes += c->ChargedBytes();
    (void)c->Destroy();
  }
  (void)(*parent)->Destroy();
  return r;
}

// Fork() time per child for each child count, and that time without the KVM VM creation every
// child pays (`kvm_create_ms`, measured bare).
Status BenchFork(const Settings& set, double kvm_create_ms) {
  for (int n : set.fork_children) {
    std::vector<double> per_child, anon, charged;
    for (int run = 0; run < set.fork_runs; ++run) {
      auto r = ForkOnce(set, n, run);
      if (!r) return Status::Error(fmt::format("fork of {}: {}", n, r.message()));
      per_child.push_back(r->ms / n);
      anon.push_back(static_cast<double>(r->anon_kib) / n);
      charged.push_back(static_cast<double>(r->charged_bytes) / 1024.0 / n);
    }
    const Summary s = Summarize(per_child);
    Emit({{"bench", "vm_fork"},
          {"vmm", "qosvisor"},
          {"guest", "counter"},
          {"parent", "paused"},
          {"parent_memory_mib", set.fork_memory_mib},
          {"children", n},
          {"runs", set.fork_runs},
          {"fork_ms_per_child", ToJson(s)},
          {"kvm_vm_create_ms", kvm_create_ms},
          {"fork_ms_per_child_excluding_kvm_vm_creation", s.median - kvm_create_ms},
          {"rss_anon_kib_per_child", Summarize(anon).median},
          {"charged_kib_per_child", Summarize(charged).median},
          {"note",
           "fork_ms_per_child: Fork() time / children. rss_anon: this process's RssAnon growth "
           "right after Fork(), children paused, before any of them wrote (medians). The "
           "excluding figure subtracts the median bare KVM VM creation (kvm_vm_create line), "
           "which this box's software KVM makes slow"}});
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// The peer: QEMU saving and loading the same guest through migration to a file.

// The value of `name` in the ELF symbol table of `path`. Under QEMU's PVH boot the counter guest
// has no boot-info page and counts in its own .bss; it runs identity-mapped, so the symbol's
// address is the guest-physical address to read.
std::optional<uint64_t> ElfSymbol(const std::string& path, const std::string& name) {
  std::ifstream in(path, std::ios::binary);
  const std::vector<char> f((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Copies a T from file offset `off`, if it lies inside the file (the file is ours, but a
  // truncated build output should fail cleanly).
  auto get = [&](uint64_t off, auto* out) {
    if (off > f.size() || sizeof(*out) > f.size() - off) return false;
    std::memcpy(out, f.data() + off, sizeof(*out));
    return true;
  };
  Elf64_Ehdr eh{};
  if (!get(0, &eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) return std::nullopt;
  for (uint64_t i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh{}, strtab{};
    if (!get(eh.e_shoff + i * sizeof(sh), &sh)) return std::nullopt;
    if (sh.sh_type != SHT_SYMTAB) continue;
    if (!get(eh.e_shoff + uint64_t{sh.sh_link} * sizeof(sh), &strtab)) return std::nullopt;
    for (uint64_t j = 0; j < sh.sh_size / sizeof(Elf64_Sym); ++j) {
      Elf64_Sym sym{};
      if (!get(sh.sh_offset + j * sizeof(sym), &sym)) return std::nullopt;
      const uint64_t at = strtab.sh_offset + sym.st_name;
      if (at < f.size() && f.size() - at > name.size() &&
          std::memcmp(f.data() + at, name.c_str(), name.size() + 1) == 0) {
        return sym.st_value;
      }
    }
  }
  return std::nullopt;
}

using qosvisor::bench::Qmp;

struct QemuSetup {
  std::string qemu, image;  // the counter guest
  bool kvm = true;
  uint64_t counter_gpa = 0;
};

// A QEMU process with its QMP connection; killed on destruction.
struct QemuProcess {
  Child child;
  std::unique_ptr<Qmp> qmp;
  QemuProcess() = default;
  QemuProcess(const QemuProcess&) = delete;
  QemuProcess& operator=(const QemuProcess&) = delete;
  ~QemuProcess() {
    if (child.pid <= 0) return;
    kill(child.pid, SIGKILL);
    waitpid(child.pid, nullptr, 0);
    close(child.out);
  }
};

Result<std::unique_ptr<QemuProcess>> StartQemu(const QemuSetup& q, uint64_t mib,
                                               const std::string& socket_path,
                                               std::vector<std::string> extra) {
  fs::remove(socket_path);
  extra.insert(extra.begin(), {"-qmp", "unix:" + socket_path + ",server=on,wait=off"});
  auto p = std::make_unique<QemuProcess>();
  p->child = SpawnQemu(q.qemu, q.image, q.kvm, mib, extra);
  if (p->child.pid < 0) return Status::Error("spawn " + q.qemu + " failed");
  auto qmp = Qmp::Connect(socket_path, Clock::now() + 20s);
  if (!qmp) return qmp.status();
  p->qmp = std::move(qmp).value();
  return p;
}

// The guest's count, read from guest memory with HMP `xp`.
Result<uint64_t> QemuCounter(Qmp& qmp, uint64_t gpa) {
  auto r = qmp.Run("human-monitor-command", {{"command-line", fmt::format("xp /1gx {:#x}", gpa)}});
  if (!r) return r.status();
  const std::string text = r->is_string() ? r->get<std::string>() : "";
  const auto colon = text.find(": ");
  char* end = nullptr;
  const uint64_t v =
      colon == std::string::npos ? 0 : std::strtoull(text.c_str() + colon + 2, &end, 16);
  if (end == nullptr || end == text.c_str() + colon + 2) {
    return Status::Error("cannot read the count from xp's answer '" + text + "'");
  }
  return v;
}

Result<uint64_t> WaitQemuCounterAbove(Qmp& qmp, uint64_t gpa, uint64_t above) {
  const auto deadline = Clock::now() + 20s;
  for (;;) {
    auto c = QemuCounter(qmp, gpa);
    if (!c || *c > above) return c;
    if (Clock::now() > deadline) return Status::Error("the guest's count did not move");
  }
}

// Polls query-migrate (on the source) until the migration has ended.
Status WaitMigrationCompleted(Qmp& qmp) {
  const auto deadline = Clock::now() + 120s;
  for (;;) {
    auto r = qmp.Run("query-migrate");
    if (!r) return r.status();
    const std::string status = r->value("status", "");
    if (status == "completed") return Status::Ok();
    if (status == "failed" || status == "cancelled") {
      return Status::Error("migration to file " + status + ": " + r->dump());
    }
    if (Clock::now() > deadline) return Status::Error("migration to file did not finish");
    std::this_thread::sleep_for(200us);
  }
}

Status WaitForFile(const std::string& path) {
  const auto deadline = Clock::now() + 60s;
  while (!fs::exists(path)) {
    if (Clock::now() > deadline) return Status::Error(path + " did not appear");
    std::this_thread::sleep_for(200us);
  }
  return Status::Ok();
}

struct QemuSave {
  double held_ms = 0;
  uint64_t counter = 0;  // the count in the saved state
};

// A save to a file as QEMU 7.2 does it (its migration has no file: URI before 8.2): stop, migrate
// through `cat` into the file (QEMU reports "completed" before `cat` has exited, so the shell
// touches FILE.done once the file is whole), fsync it, as Snapshot() fsyncs its files, then cont.
// Timed: stop until cont returned, how long the guest is held, as for Snapshot(), which pauses,
// writes and resumes. The count is read (xp) while the guest is stopped; that read is not timed.
Result<QemuSave> SaveQemu(Qmp& qmp, const std::string& file, uint64_t counter_gpa) {
  const auto start = Clock::now();
  if (auto r = qmp.Run("stop"); !r) return r.status();
  const std::string uri = fmt::format("exec:cat > '{}' && touch '{}.done'", file, file);
  if (auto r = qmp.Run("migrate", {{"uri", uri}}); !r) return r.status();
  if (Status s = WaitMigrationCompleted(qmp); !s) return s;
  if (Status s = WaitForFile(file + ".done"); !s) return s;
  UniqueFd fd(open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid() || fsync(fd.get()) != 0) return Errno("fsync " + file);
  QemuSave save;
  save.held_ms = Ms(Clock::now() - start);
  auto counter = QemuCounter(qmp, counter_gpa);
  if (!counter) return counter.status();
  save.counter = *counter;
  const auto resume = Clock::now();
  if (auto r = qmp.Run("cont"); !r) return r.status();
  save.held_ms += Ms(Clock::now() - resume);
  return save;
}

struct QemuRestore {
  double loaded_ms = 0, running_ms = 0;
};

// Measured from the spawn of `qemu ... -incoming "exec:cat FILE"`: QMP polled (query-status)
// until the state is loaded, which leaves QEMU paused (the guest was saved stopped); `cont`; then
// the guest's count, read with HMP `xp`, polled until it passes the saved value. Each QMP poll is
// a round trip of a fraction of a millisecond, inside the figure.
Result<QemuRestore> RestoreQemu(const QemuSetup& q, uint64_t mib, const std::string& file,
                                const std::string& socket_path, uint64_t saved) {
  const auto start = Clock::now();
  auto p = StartQemu(q, mib, socket_path, {"-incoming", "exec:cat '" + file + "'"});
  if (!p) return p.status();
  Qmp& qmp = *(*p)->qmp;
  std::string status = "inmigrate";
  for (const auto deadline = start + 60s; status == "inmigrate";) {
    auto r = qmp.Run("query-status");
    if (!r) return r.status();
    status = r->value("status", "");
    if (Clock::now() > deadline) return Status::Error("the saved state did not load");
    if (status == "inmigrate") std::this_thread::sleep_for(200us);
  }
  if (status != "paused") return Status::Error("after loading QEMU is " + status);
  QemuRestore r;
  r.loaded_ms = Ms(Clock::now() - start);
  if (auto c = qmp.Run("cont"); !c) return c.status();
  if (auto c = WaitQemuCounterAbove(qmp, q.counter_gpa, saved); !c) return c.status();
  r.running_ms = Ms(Clock::now() - start);
  return r;
}

struct PeerSnapshotFigures {
  uint64_t mib = 0;
  Summary save_ms, restore_ms;
  uint64_t file_allocated_bytes = 0;
};

// A counter guest under QEMU of `mib` MiB, saved and loaded `runs` times.
Result<PeerSnapshotFigures> BenchQemuSnapshotSize(const QemuSetup& q, const ScratchDir& scratch,
                                                  uint64_t mib, int runs) {
  auto src = StartQemu(q, mib, scratch.sub("qmp-src"), {});
  if (!src) return src.status();
  Qmp& qmp = *(*src)->qmp;
  if (!WaitLine((*src)->child.out, Clock::now() + 20s)) return Status::Error("no serial line");
  if (auto c = WaitQemuCounterAbove(qmp, q.counter_gpa, 1u << 20); !c) return c.status();
  // A file save is not a network transfer: lift migration's default 32 MiB/s throttle.
  if (auto r = qmp.Run("migrate-set-parameters", {{"max-bandwidth", 1ull << 40}}); !r) {
    return r.status();
  }
  std::vector<double> save, restore, loaded;
  PeerSnapshotFigures f{mib, {}, {}, 0};
  uint64_t file_bytes = 0;
  for (int i = 0; i < runs; ++i) {
    const std::string file = scratch.sub(fmt::format("qemu-{}-{}.state", mib, i));
    auto s = SaveQemu(qmp, file, q.counter_gpa);
    if (!s) return Status::Error("save: " + s.message());
    save.push_back(s->held_ms);
    f.file_allocated_bytes = AllocatedBytes(file);
    file_bytes = ApparentBytes(file);
    // The source waits while the copy is restored, as ours does.
    if (auto stop = qmp.Run("stop"); !stop) return stop.status();
    DecorrelateFromTick();
    auto r = RestoreQemu(q, mib, file, scratch.sub("qmp-dst"), s->counter);
    if (!r) return Status::Error("restore: " + r.message());
    restore.push_back(r->running_ms);
    loaded.push_back(r->loaded_ms);
    if (auto cont = qmp.Run("cont"); !cont) return cont.status();
    fs::remove(file);
    fs::remove(file + ".done");
  }
  f.save_ms = Summarize(save);
  f.restore_ms = Summarize(restore);
  Emit({{"bench", "vm_snapshot"},
        {"vmm", "qemu-microvm"},
        {"accel", q.kvm ? "kvm" : "tcg"},
        {"guest", "counter"},
        {"guest_memory_mib", mib},
        {"runs", runs},
        {"snapshot_ms", ToJson(f.save_ms)},
        {"restore_ms", ToJson(f.restore_ms)},
        {"restore_loaded_ms", ToJson(Summarize(loaded))},
        {"disk_allocated_bytes", f.file_allocated_bytes},
        {"file_bytes", file_bytes},
        {"note",
         "snapshot_ms: stop, migrate \"exec:cat > FILE\" until the file is whole, fsync, cont. "
         "restore_ms: spawn with -incoming \"exec:cat FILE\" until, after cont, the count "
         "(read with xp) moved past the saved value; restore_loaded_ms: until QEMU left "
         "inmigrate. Page cache warm"}});
  return f;
}

// Ours over QEMU's, per memory size both measured.
void EmitSnapshotRatio(const std::vector<SnapshotFigures>& ours,
                       const std::vector<PeerSnapshotFigures>& peer) {
  nlohmann::json size, restore, restore_spawned, save;
  for (const auto& o : ours) {
    for (const auto& p : peer) {
      if (p.mib != o.mib) continue;
      const std::string key = std::to_string(o.mib);
      size[key] = static_cast<double>(o.disk_bytes) / static_cast<double>(p.file_allocated_bytes);
      restore[key] = o.restore_ms.median / p.restore_ms.median;
      restore_spawned[key] = o.restore_spawned_ms.median / p.restore_ms.median;
      save[key] = o.save_ms.median / p.save_ms.median;
    }
  }
  Emit({{"bench", "snapshot_ratio"},
        {"qosvisor_over_qemu_disk_bytes_by_guest_mib", size},
        {"qosvisor_over_qemu_restore_by_guest_mib", restore},
        {"qosvisor_spawned_over_qemu_restore_by_guest_mib", restore_spawned},
        {"qosvisor_over_qemu_snapshot_by_guest_mib", save},
        {"note",
         "medians of this run; restore: ours in-process (Restore() to counting) over QEMU's "
         "spawn-to-counting; restore_spawned compares process spawn to counting on both sides"}});
}

// QEMU's save/load at every size, and the ratio line; an error names why the peer could not run.
Status RunQemuSnapshots(const Settings& set, const ScratchDir& scratch,
                        const std::vector<SnapshotFigures>& ours) {
  if (access(set.qemu.c_str(), X_OK) != 0) return Status::Error(set.qemu + " not found");
  QemuSetup q{set.qemu, set.dir + "/counter.elf", true, 0};
  const auto gpa = ElfSymbol(q.image, "local_progress");
  if (!gpa)
    return Status::Error(q.image + ": no symbol local_progress (where it counts under PVH)");
  q.counter_gpa = *gpa;
  std::vector<PeerSnapshotFigures> peer;
  std::map<uint64_t, Summary> restore_ms;
  for (uint64_t mib : set.snapshot_mib) {
    auto f = BenchQemuSnapshotSize(q, scratch, mib, set.snapshot_runs);
    if (!f) return Status::Error(fmt::format("{} MiB: {}", mib, f.message()));
    restore_ms[mib] = f->restore_ms;
    peer.push_back(*f);
  }
  EmitFlatness("qemu-microvm", restore_ms, "restore_ms (spawn to counting)");
  EmitSnapshotRatio(ours, peer);
  return Status::Ok();
}

// Everything of the snapshot part; an error says what failed.
Status RunSnapshotPart(const Settings& set) {
  ScratchDir scratch(set.scratch);
  std::vector<SnapshotFigures> ours;
  std::map<uint64_t, Summary> restore_ms, spawned_ms;
  for (uint64_t mib : set.snapshot_mib) {
    auto f = BenchSnapshotSize(set, scratch, mib);
    if (!f) return Status::Error(fmt::format("snapshot at {} MiB: {}", mib, f.message()));
    restore_ms[mib] = f->restore_ms;
    spawned_ms[mib] = f->restore_spawned_ms;
    ours.push_back(*f);
  }
  EmitFlatness("qosvisor", restore_ms, "restore_ms (in-process)");
  EmitFlatness("qosvisor", spawned_ms, "restore_spawned_ms");
  auto kvm_ms = BenchKvmCreate(std::max(set.fork_runs, 10), set.fork_memory_mib << 20);
  if (!kvm_ms) return Status::Error("bare KVM VM creation: " + kvm_ms.message());
  if (Status s = BenchFork(set, *kvm_ms); !s) return s;
  if (set.qemu_runs == 0) return Status::Ok();  // the peer was not asked for
  if (Status s = RunQemuSnapshots(set, scratch, ours); !s) {
    return Status::Error("the peer (QEMU -M microvm) could not run: " + s.message());
  }
  return Status::Ok();
}

// The boot, start-rate and memory figures, and QEMU's, with their ratio line. Returns the exit
// status.
int RunBootPart(const Settings& set) {
  if (!BenchBoot(set.dir, set.runs)) return 1;
  const std::optional<double> rss = BenchMemory(set.dir, set.vms);
  if (!rss) return 1;
  if (set.qemu_runs == 0) return 0;  // the peer was not asked for
  const std::optional<double> boot = BenchSpawned("/proc/self/exe", set.dir, set.qemu_runs);
  if (!boot) return 1;
  const PeerFigures peer = BenchQemu(set.qemu, set.dir, set.qemu_runs);
  if (!peer.error.empty()) {
    std::cerr << "bench_vm: the peer (QEMU -M microvm) could not run: " << peer.error << "\n";
    return 1;
  }
  EmitRatios(*boot, *rss, peer);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_vm: qosvisor VM boot/start/memory/snapshot/fork vs QEMU -M microvm"};
  Settings set;
  app.add_option("--runs", set.runs, "sequential boots of the hello guest")
      ->check(CLI::Range(1, 10000));
  app.add_option("--vms", set.vms, "concurrent VMs for the memory figure")
      ->check(CLI::Range(1, 200));
  app.add_option("--memory-mib", g_memory_mib, "guest memory of the qosvisor VMs (QEMU: 64)")
      ->check(CLI::Range(2, 3072));
  app.add_option("--qemu-runs", set.qemu_runs, "QEMU boots (0: no QEMU at all)")
      ->check(CLI::Range(0, 1000));
  app.add_option("--guests", set.dir, "directory with hello.elf and counter.elf");
  app.add_option("--qemu", set.qemu, "QEMU binary");
  app.add_option("--only", set.only, "run one part: boot (boot, start rate, memory) or snapshot")
      ->check(CLI::IsMember({"boot", "snapshot"}));
  app.add_option("--snapshot-mib", set.snapshot_mib,
                 "guest memory sizes for snapshot/restore, both VMMs (comma-separated)")
      ->delimiter(',')
      ->check(CLI::Range(2, 3072));
  app.add_option("--snapshot-runs", set.snapshot_runs, "snapshots and restores per size")
      ->check(CLI::Range(1, 1000));
  app.add_option("--fork-children", set.fork_children, "child counts for Fork() (comma-separated)")
      ->delimiter(',')
      ->check(CLI::Range(1, 64));
  app.add_option("--fork-runs", set.fork_runs, "forks per child count")->check(CLI::Range(1, 100));
  app.add_option("--fork-memory-mib", set.fork_memory_mib, "guest memory of the forked parent")
      ->check(CLI::Range(2, 3072));
  app.add_option("--scratch", set.scratch, "directory for snapshot files (default: temp dir)");
  bool boot_once = false;
  std::string restore_once;
  app.add_flag("--boot-once", boot_once, "(internal) boot hello once, serial on stdout");
  app.add_option("--restore-once", restore_once, "(internal) restore a snapshot, see it count");
  CLI11_PARSE(app, argc, argv);
  if (boot_once) return BootOnce(set.dir);
  if (!restore_once.empty()) return RestoreOnce(restore_once);

  std::string reason = qosvisor::hv::Kvm::UnavailableReason();
  if (!reason.empty()) {
    Emit({{"bench", "vm_boot"}, {"vmm", "qosvisor"}, {"error", reason}});
    std::cerr << "bench_vm: /dev/kvm is unusable: " << reason << "\n";
    return 1;
  }
  if (set.only != "snapshot") {
    if (int status = RunBootPart(set); status != 0) return status;
  }
  if (set.only != "boot") {
    if (Status s = RunSnapshotPart(set); !s) {
      std::cerr << "bench_vm: " << s.message() << "\n";
      return 1;
    }
  }
  return 0;
}
