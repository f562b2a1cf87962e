// bench_vm: boot time (create -> first serial line), VMs started per second and host memory per
// VM for qosvisor, and the same tiny guest under QEMU -M microvm measured in the same run.
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hv/boot_abi.h"
#include "hv/kvm.h"
#include "hv/vm.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using qosvisor::hv::Vm;
using qosvisor::hv::VmOptions;
using Clock = std::chrono::steady_clock;

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

Child SpawnQemu(const std::string& qemu, const std::string& image, bool kvm) {
  std::vector<std::string> args = {qemu, "-M", "microvm"};
  if (kvm) {
    args.insert(args.end(), {"-enable-kvm", "-cpu", "host,-arch-capabilities"});
  } else {
    args.insert(args.end(), {"-cpu", "max"});
  }
  args.insert(args.end(),
              {"-m", "64", "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", image});
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
  double boot_ms = 0;        // median spawn to first serial line
  uint64_t rss_kib = 0;      // one running VM's process
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
        {"boot_spawn_to_first_line_median_ms", {{"qosvisor", boot_ms}, {"qemu_microvm", qemu.boot_ms}}},
        {"qemu_over_qosvisor_boot", qemu.boot_ms / boot_ms},
        {"rss_kib_per_vm", {{"qosvisor", rss_kib}, {"qemu_microvm", qemu.rss_kib}}},
        {"qemu_over_qosvisor_rss", static_cast<double>(qemu.rss_kib) / rss_kib}});
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_vm: qosvisor VM boot/start/memory vs QEMU -M microvm"};
  int runs = 20, vms = 10, qemu_runs = 5;
  std::string dir = QOSVISOR_GUEST_DIR, qemu = "/usr/bin/qemu-system-x86_64";
  app.add_option("--runs", runs, "sequential boots of the hello guest")
      ->check(CLI::Range(1, 10000));
  app.add_option("--vms", vms, "concurrent VMs for the memory figure")->check(CLI::Range(1, 200));
  app.add_option("--memory-mib", g_memory_mib, "guest memory of the qosvisor VMs (QEMU: 64)")
      ->check(CLI::Range(2, 3072));
  app.add_option("--qemu-runs", qemu_runs, "QEMU boots")->check(CLI::Range(0, 1000));
  app.add_option("--guests", dir, "directory with hello.elf and counter.elf");
  app.add_option("--qemu", qemu, "QEMU binary");
  bool boot_once = false;
  app.add_flag("--boot-once", boot_once, "(internal) boot hello once, serial on stdout");
  CLI11_PARSE(app, argc, argv);
  if (boot_once) return BootOnce(dir);

  std::string reason = qosvisor::hv::Kvm::UnavailableReason();
  if (!reason.empty()) {
    Emit({{"bench", "vm_boot"}, {"vmm", "qosvisor"}, {"skipped", reason}});
    return 0;
  }
  if (!BenchBoot(dir, runs)) return 1;
  const std::optional<double> rss = BenchMemory(dir, vms);
  if (!rss) return 1;
  if (qemu_runs == 0) return 0;  // the peer was not asked for
  const std::optional<double> boot = BenchSpawned("/proc/self/exe", dir, qemu_runs);
  if (!boot) return 1;
  const PeerFigures peer = BenchQemu(qemu, dir, qemu_runs);
  if (!peer.error.empty()) {
    std::cerr << "bench_vm: the peer (QEMU -M microvm) could not run: " << peer.error << "\n";
    return 1;
  }
  EmitRatios(*boot, *rss, peer);
  return 0;
}
