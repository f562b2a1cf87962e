// bench_migration: live migration of the memtouch guest (64 MiB, a steady dirty rate) from one
// qosvisor process to another over TCP, and the same guest moved by QEMU -M microvm between two
// QEMU processes (-incoming tcp:), driven over QMP. One process per qosvisor side, so that each
// can run in a network namespace of its own (scripts/bench-migration joins two by a veth pair).
//
//   destination: bench_migration --listen 10.211.0.2:7300 --key FILE
//   source:      bench_migration --connect 10.211.0.2:7300 --key FILE --rate 1638
//   QEMU pair:   bench_migration --qemu 10.211.0.2:7301 --rate 1638 --source-netns A --dest-netns B
//
// Each prints one JSON line. Downtime (ours) runs from the source pausing the guest for good until
// the destination's kResumed arrives: SendVm's paused share (pause to last byte, which it times
// itself), then kReady, kCommit and kResumed as the daemon exchanges them. Both ends also stamp
// the host's realtime clock (pause at the source, resume at the destination), as QEMU's STOP and
// RESUME events do, so stop_to_resume_ms is the same figure for both VMMs.
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "hv/boot_abi.h"
#include "hv/kvm.h"
#include "hv/migration.h"
#include "hv/migration_stream.h"
#include "hv/unique_fd.h"
#include "hv/vm.h"
#include "tests/bench/qmp.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using qosvisor::Result;
using qosvisor::Status;
using qosvisor::hv::MigrationChannel;
using qosvisor::hv::MigrationKey;
using qosvisor::hv::MigrationMessage;
using qosvisor::hv::MigrationMessageType;
using qosvisor::hv::MigrationRole;
using qosvisor::hv::UniqueFd;
using qosvisor::hv::Vm;
using qosvisor::hv::VmOptions;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr uint64_t kPageBytes = 4096;
constexpr uint32_t kOfferVersion = 1;

struct Settings {
  std::string listen, connect, qemu_uri;  // the mode: exactly one is set
  std::string key_file;
  std::string dir = QOSVISOR_GUEST_DIR;
  std::string qemu = "/usr/bin/qemu-system-x86_64";
  std::string qemu_accel = "kvm";        // kvm | tcg
  std::string source_netns, dest_netns;  // QEMU pair: `ip netns exec` each side
  uint64_t qemu_max_bandwidth = 0;       // bytes/s; 0: QEMU's default (128 MiB/s in 7.2)
  uint64_t bandwidth_bps = 0;            // ours: the sender's cap (migration.bandwidth); 0: none
  bool qemu_auto_converge = false;       // QEMU's counterpart of our throttle, off by default
  uint64_t memory_mib = 64;
  uint64_t rate = 0;         // pages dirtied per second
  uint64_t region_mib = 48;  // memtouch's round-robin region, from 8 MiB
  int warmup_ms = 1000;
  int downtime_ms = 50;
  int timeout_s = 120;
  bool verify = false;  // compare a hash of guest memory at both ends (adds to downtime)
};

void Emit(const json& j) { std::cout << j.dump() << std::endl; }

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

int64_t WallNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

double DirtyPercent(const Settings& s) {
  return 100.0 * static_cast<double>(s.rate) / static_cast<double>(s.memory_mib * 256);
}

std::string GuestCmdline(const Settings& s) {
  return fmt::format("pages={} mib={}", s.rate, s.region_mib);
}

uint64_t BootInfoWord(Vm& vm, uint64_t offset) {
  uint64_t v = 0;
  (void)vm.memory().LoadAtomic<uint64_t>(QV_BOOT_INFO_GPA + offset, &v);
  return v;
}
// memtouch's progress[1]: pages touched since it started.
uint64_t Touched(Vm& vm) {
  return BootInfoWord(vm, offsetof(qv_boot_info, progress) + sizeof(uint64_t));
}

// FNV-1a over 64-bit words: enough to tell two copies of guest memory apart.
uint64_t MemoryHash(Vm& vm) {
  // SAFETY: guest memory is a page-aligned mapping of size() bytes, a multiple of 4 KiB.
  const auto* words = reinterpret_cast<const uint64_t*>(vm.memory().host_base());
  const size_t n = vm.memory().size() / sizeof(uint64_t);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ words[i]) * 1099511628211ull;
  return h;
}

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string Text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

bool WaitUntil(const std::function<bool()>& done, Clock::duration timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// The next frame, which must be of `type` (a kRefuse's reason becomes the error).
Result<MigrationMessage> Expect(MigrationChannel& channel, MigrationMessageType type,
                                std::chrono::milliseconds timeout) {
  auto m = channel.Receive(timeout);
  if (!m) return m.status();
  if (m->type == MigrationMessageType::kRefuse) {
    return Status::Error("the peer refused: " + Text(m->payload));
  }
  if (m->type != type) {
    return Status::Error(fmt::format("expected '{}', got '{}'",
                                     qosvisor::hv::MigrationMessageTypeName(type),
                                     qosvisor::hv::MigrationMessageTypeName(m->type)));
  }
  return m;
}

VmOptions GuestVm(const Settings& s, const std::string& name) {
  VmOptions o;
  o.name = name;
  o.memory_bytes = s.memory_mib << 20;
  o.image = s.dir + "/memtouch.elf";
  o.cmdline = GuestCmdline(s);
  return o;
}

json ErrorLine(const std::string& side, const std::string& message) {
  return {{"bench", "migration"}, {"vmm", "qosvisor"}, {"side", side}, {"error", message}};
}

// ---------------------------------------------------------------------------------------------
// qosvisor, destination: accept one source, take its offer, receive, hand over, resume.

Status RunDestination(const Settings& s, const MigrationKey& key) {
  auto listener = qosvisor::hv::ListenTcp(s.listen);
  if (!listener) return Status::Error("listen " + s.listen + ": " + listener.message());
  auto socket = qosvisor::hv::AcceptTcp(listener->get(), std::chrono::seconds(s.timeout_s));
  if (!socket) return Status::Error("accept: " + socket.message());
  listener->Reset();
  auto channel =
      MigrationChannel::Handshake(std::move(socket).value(), key, MigrationRole::kDestination, 10s);
  if (!channel) return Status::Error("handshake: " + channel.message());
  const auto timeout = 10000ms;

  // The offer: the guest's options; the image is looked up in our own guest directory.
  auto offer_frame = Expect(*channel, MigrationMessageType::kOffer, timeout);
  if (!offer_frame) return Status::Error("offer: " + offer_frame.message());
  const json offer = json::parse(Text(offer_frame->payload), nullptr, false);
  if (offer.is_discarded() || offer.value("version", 0u) != kOfferVersion ||
      !offer.contains("memory_bytes") || !offer.contains("cmdline")) {
    (void)channel->Send(MigrationMessageType::kRefuse, Bytes("unreadable offer"));
    return Status::Error("unreadable offer: " + Text(offer_frame->payload));
  }
  VmOptions options;
  options.name = "migrated";
  options.memory_bytes = offer["memory_bytes"].get<uint64_t>();
  options.image = s.dir + "/memtouch.elf";
  options.cmdline = offer["cmdline"].get<std::string>();
  auto created = Vm::CreateIncoming(options);
  if (!created) {
    (void)channel->Send(MigrationMessageType::kRefuse, Bytes(created.message()));
    return Status::Error("create: " + created.message());
  }
  Vm& vm = **created;
  if (Status st = channel->Send(MigrationMessageType::kAccept, Bytes("{}")); !st) return st;

  const auto t0 = Clock::now();
  if (Status st = qosvisor::hv::ReceiveVm(vm, *channel, timeout, nullptr); !st) {
    return Status::Error("receive: " + st.message());
  }
  const auto received_at = Clock::now();
  json ready = json::object();
  if (s.verify) ready["memory_hash"] = MemoryHash(vm);
  if (Status st = channel->Send(MigrationMessageType::kReady, Bytes(ready.dump())); !st) {
    return st;
  }
  if (auto commit = Expect(*channel, MigrationMessageType::kCommit, timeout); !commit) {
    return Status::Error("commit: " + commit.message());
  }
  const uint64_t touched = Touched(vm);
  const uint64_t lines = vm.serial().lines();
  if (Status st = vm.Resume(); !st) return st;
  const int64_t resumed_wall_ns = WallNs();
  const auto resumed_at = Clock::now();
  json resumed = {{"resumed_wall_ns", resumed_wall_ns}};
  if (Status st = channel->Send(MigrationMessageType::kResumed, Bytes(resumed.dump())); !st) {
    return st;
  }
  // The guest goes on here: memtouch prints a line a second, and counts on from where it was.
  const bool printed = WaitUntil([&] { return vm.serial().lines() > lines; }, 3s);
  const bool touching = s.rate == 0 || WaitUntil([&] { return Touched(vm) > touched; }, 3s);
  Emit({{"bench", "migration"},
        {"vmm", "qosvisor"},
        {"side", "destination"},
        {"dirty_pct", DirtyPercent(s)},
        {"bytes_received", channel->bytes_received()},
        {"receive_ms", Ms(received_at - t0)},
        {"ready_to_resumed_ms", Ms(resumed_at - received_at)},
        {"touched_at_resume", touched},
        {"guest_runs_on", printed && touching}});
  (void)vm.Stop(3000ms);
  if (!printed || !touching) return Status::Error("the migrated guest did not run on");
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// qosvisor, source: boot memtouch, let it dirty memory, migrate, wait for kResumed.

Result<UniqueFd> ConnectWithRetry(const std::string& address, std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto fd = qosvisor::hv::ConnectTcp(address, 2000ms);
    if (fd || Clock::now() > deadline) return fd;
    std::this_thread::sleep_for(20ms);
  }
}

Status RunSource(const Settings& s, const MigrationKey& key) {
  auto created = Vm::Create(GuestVm(s, "memtouch"));
  if (!created) return Status::Error("create: " + created.message());
  Vm& vm = **created;
  if (Status st = vm.Start(); !st) return st;
  if (!WaitUntil([&] { return vm.serial().lines() > 0; }, 10s)) {
    return Status::Error("memtouch printed nothing");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(s.warmup_ms));

  auto socket = ConnectWithRetry(s.connect, std::chrono::seconds(s.timeout_s));
  if (!socket) return Status::Error("connect " + s.connect + ": " + socket.message());
  auto channel =
      MigrationChannel::Handshake(std::move(socket).value(), key, MigrationRole::kSource, 10s);
  if (!channel) return Status::Error("handshake: " + channel.message());
  const uint64_t handshake_bytes = channel->bytes_sent();
  const json offer = {{"version", kOfferVersion},
                      {"memory_bytes", vm.options().memory_bytes},
                      {"cmdline", vm.options().cmdline}};
  if (Status st = channel->Send(MigrationMessageType::kOffer, Bytes(offer.dump())); !st) return st;
  const uint64_t offer_bytes = channel->bytes_sent() - handshake_bytes;
  if (auto accept = Expect(*channel, MigrationMessageType::kAccept, 10000ms); !accept) {
    return Status::Error("offer: " + accept.message());
  }

  qosvisor::hv::MigrationTuning tuning;
  tuning.downtime = std::chrono::milliseconds(s.downtime_ms);
  tuning.timeout = std::chrono::seconds(s.timeout_s);
  tuning.bandwidth_bps = s.bandwidth_bps;
  double link_bytes_per_second = 0;
  const qosvisor::hv::MigrationProgressFn progress = [&](const qosvisor::hv::MigrationProgress& p) {
    link_bytes_per_second = p.link_bytes_per_second;
  };
  const uint64_t touched_before = Touched(vm);
  const auto started = Clock::now();
  auto sent = qosvisor::hv::SendVm(vm, *channel, tuning, progress);
  const auto sent_at = Clock::now();
  const int64_t sent_wall_ns = WallNs();
  if (!sent) return Status::Error("send: " + sent.message());
  const uint64_t touched_at_pause = Touched(vm);

  auto ready = Expect(*channel, MigrationMessageType::kReady, 10000ms);
  if (!ready) return Status::Error("ready: " + ready.message());
  if (Status st = channel->Send(MigrationMessageType::kCommit, {}); !st) return st;
  auto resumed = Expect(*channel, MigrationMessageType::kResumed, 10000ms);
  if (!resumed) return Status::Error("resumed: " + resumed.message());
  const auto resumed_at = Clock::now();

  const json ready_info = json::parse(Text(ready->payload), nullptr, false);
  const json resumed_info = json::parse(Text(resumed->payload), nullptr, false);
  const double paused_ms = sent->paused_ms;
  // The pause, on both clocks: SendVm timed it up to its return.
  const double downtime_ms = paused_ms + Ms(resumed_at - sent_at);
  const double paused_wall_ns = static_cast<double>(sent_wall_ns) - paused_ms * 1e6;
  const double stop_to_resume_ms =
      resumed_info.is_object() && resumed_info.contains("resumed_wall_ns")
          ? (resumed_info["resumed_wall_ns"].get<double>() - paused_wall_ns) / 1e6
          : -1;
  const double precopy_s = std::max(sent->precopy_ms / 1000.0, 1e-9);
  const uint64_t data_pages = sent->pages_sent - sent->zero_pages_sent;
  json line = {{"bench", "migration"},
               {"vmm", "qosvisor"},
               {"side", "source"},
               {"dirty_pct", DirtyPercent(s)},
               {"guest_memory_mib", s.memory_mib},
               {"guest", fmt::format("memtouch {}", GuestCmdline(s))},
               {"downtime_ms", downtime_ms},
               {"stop_to_resume_ms", stop_to_resume_ms},
               {"paused_ms", paused_ms},
               {"expected_downtime_ms", sent->expected_downtime_ms},
               {"downtime_limit_ms", s.downtime_ms},
               {"bytes", sent->bytes_sent},
               {"bytes_handshake", handshake_bytes},
               {"bytes_offer", offer_bytes},
               {"bytes_page_data", data_pages * kPageBytes},
               {"pages_sent", sent->pages_sent},
               {"zero_pages_sent", sent->zero_pages_sent},
               {"final_pages", sent->final_pages},
               {"rounds", sent->rounds},
               {"converge_ms", sent->precopy_ms},
               {"total_ms", Ms(resumed_at - started)},
               {"throttle_pct", sent->max_throttle_percent},
               {"converged", sent->converged},
               {"guest_dirty_pages_per_s",
                static_cast<double>(touched_at_pause - touched_before) / precopy_s},
               {"link_mbps", link_bytes_per_second * 8 / 1e6}};
  if (s.verify) {
    const bool same = ready_info.is_object() && ready_info.contains("memory_hash") &&
                      ready_info["memory_hash"].get<uint64_t>() == MemoryHash(vm);
    line["memory_identical"] = same;
  }
  Emit(line);
  (void)vm.Destroy();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// QEMU: two qemu-system-x86_64 -M microvm processes, the same guest, migrated over QMP.

using qosvisor::bench::LineReader;

// A child with its stdout (the guest's serial) on a pipe; killed on destruction.
class Child {
 public:
  static Result<std::unique_ptr<Child>> Spawn(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0)
      return Status::Error("pipe: " + std::string(strerror(errno)));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    auto c = std::make_unique<Child>();
    const int err = posix_spawnp(&c->pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    c->out_ = UniqueFd(pipefd[0]);
    c->lines_ = std::make_unique<LineReader>(c->out_.get(), "QEMU's serial output");
    if (err != 0) {
      c->pid_ = -1;
      return Status::Error(fmt::format("spawn {}: {}", args[0], strerror(err)));
    }
    return c;
  }
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

  // The next line of its stdout, or an error at the deadline or its end.
  Result<std::string> ReadLine(Clock::time_point deadline) { return lines_->Next(deadline); }

 private:
  pid_t pid_ = -1;
  UniqueFd out_;
  std::unique_ptr<LineReader> lines_;  // over out_
};

using qosvisor::bench::Qmp;

// The TSC rate qosvisor gives its guests (KVM_GET_TSC_KHZ, in the boot info), so that memtouch
// paces itself the same under QEMU, where it has no boot info and reads tsc_khz= instead.
Result<uint64_t> GuestTscKhz(const Settings& s) {
  Settings idle = s;
  idle.rate = 0;
  auto vm = Vm::Create(GuestVm(idle, "tsc-probe"));
  if (!vm) return vm.status();
  // The boot-info page is written when the VM starts.
  if (Status st = (*vm)->Start(); !st) return st;
  uint64_t khz = 0;
  WaitUntil([&] { return (khz = BootInfoWord(**vm, offsetof(qv_boot_info, tsc_khz))) != 0; }, 5s);
  (void)(*vm)->Destroy();
  if (khz == 0) return Status::Error("KVM reported no TSC rate");
  return khz;
}

std::vector<std::string> QemuArgs(const Settings& s, const std::string& netns,
                                  const std::string& qmp_path, uint64_t tsc_khz) {
  std::vector<std::string> args;
  if (!netns.empty()) args = {"ip", "netns", "exec", netns};
  args.insert(args.end(), {s.qemu, "-M", "microvm"});
  if (s.qemu_accel == "kvm") {
    args.insert(args.end(), {"-enable-kvm", "-cpu", "host,-arch-capabilities"});
  } else {
    args.insert(args.end(), {"-cpu", "max"});
  }
  args.insert(
      args.end(),
      {"-m", std::to_string(s.memory_mib), "-nodefaults", "-no-user-config", "-nographic",
       "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel",
       s.dir + "/memtouch.elf", "-append", fmt::format("{} tsc_khz={}", GuestCmdline(s), tsc_khz),
       "-qmp", "unix:" + qmp_path + ",server=on,wait=off"});
  return args;
}

double Number(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
}

Status RunQemu(const Settings& s) {
  auto tsc_khz = GuestTscKhz(s);
  if (!tsc_khz) return Status::Error("TSC rate: " + tsc_khz.message());
  const fs::path dir = fs::temp_directory_path() / fmt::format("qv-bench-mig-{}", getpid());
  fs::create_directories(dir);
  struct RemoveDir {
    fs::path p;
    ~RemoveDir() {
      std::error_code ignored;
      fs::remove_all(p, ignored);
    }
  } remove_dir{dir};
  const std::string src_qmp = (dir / "src.qmp").string(), dst_qmp = (dir / "dst.qmp").string();

  auto dst_args = QemuArgs(s, s.dest_netns, dst_qmp, *tsc_khz);
  dst_args.insert(dst_args.end(), {"-incoming", "tcp:" + s.qemu_uri});
  auto dst = Child::Spawn(dst_args);
  if (!dst) return dst.status();
  auto src = Child::Spawn(QemuArgs(s, s.source_netns, src_qmp, *tsc_khz));
  if (!src) return src.status();
  auto src_q = Qmp::Connect(src_qmp, Clock::now() + 20s);
  if (!src_q) return Status::Error("source: " + src_q.message());
  auto dst_q = Qmp::Connect(dst_qmp, Clock::now() + 20s);
  if (!dst_q) return Status::Error("destination: " + dst_q.message());
  Qmp& sq = **src_q;
  Qmp& dq = **dst_q;

  auto first = (*src)->ReadLine(Clock::now() + 20s);
  if (!first) return Status::Error("source guest: " + first.message());
  std::this_thread::sleep_for(std::chrono::milliseconds(s.warmup_ms));

  json parameters = {{"downtime-limit", s.downtime_ms}};
  if (s.qemu_max_bandwidth != 0) parameters["max-bandwidth"] = s.qemu_max_bandwidth;
  if (auto r = sq.Run("migrate-set-parameters", parameters); !r) return r.status();
  if (s.qemu_auto_converge) {
    json caps = {{"capabilities", json::array({{{"capability", "auto-converge"}, {"state", true}}})}};
    if (auto r = sq.Run("migrate-set-capabilities", caps); !r) return r.status();
  }
  auto params = sq.Run("query-migrate-parameters");
  if (!params) return params.status();
  const auto started = Clock::now();
  if (auto r = sq.Run("migrate", {{"uri", "tcp:" + s.qemu_uri}}); !r) return r.status();
  json info;
  double max_dirty_rate = 0, max_throttle = 0;
  for (const auto deadline = started + std::chrono::seconds(s.timeout_s);;) {
    auto r = sq.Run("query-migrate");
    if (!r) return r.status();
    info = *r;
    const std::string status = info.value("status", "");
    if (info.contains("ram"))
      max_dirty_rate = std::max(max_dirty_rate, Number(info["ram"], "dirty-pages-rate"));
    max_throttle = std::max(max_throttle, Number(info, "cpu-throttle-percentage"));
    if (status == "completed") break;
    if (status == "failed" || status == "cancelled") {
      return Status::Error("QEMU's migration " + status + ": " + info.dump());
    }
    if (Clock::now() > deadline) return Status::Error("QEMU's migration did not finish");
    std::this_thread::sleep_for(5ms);
  }
  const auto completed_at = Clock::now();
  auto stop_ns = sq.EventNs("STOP", Clock::now() + 5s);
  if (!stop_ns) return Status::Error("source: " + stop_ns.message());
  auto resume_ns = dq.EventNs("RESUME", Clock::now() + 10s);
  if (!resume_ns) return Status::Error("destination: " + resume_ns.message());
  auto status = dq.Run("query-status");
  if (!status) return status.status();
  // The guest goes on at the destination: memtouch prints a line a second.
  auto line = (*dst)->ReadLine(Clock::now() + 3s);
  const bool runs_on = status->value("status", "") == "running" && line.ok();

  const json& ram = info.contains("ram") ? info["ram"] : json::object();
  Emit({{"bench", "migration"},
        {"vmm", "qemu-microvm"},
        {"accel", s.qemu_accel},
        {"dirty_pct", DirtyPercent(s)},
        {"guest_memory_mib", s.memory_mib},
        {"guest", fmt::format("memtouch {}", GuestCmdline(s))},
        {"downtime_ms", Number(info, "downtime")},
        {"stop_to_resume_ms", static_cast<double>(*resume_ns - *stop_ns) / 1e6},
        {"expected_downtime_ms", Number(info, "expected-downtime")},
        {"downtime_limit_ms", s.downtime_ms},
        {"bytes", Number(ram, "transferred")},
        {"bytes_page_data", Number(ram, "normal-bytes")},
        {"ram_total", Number(ram, "total")},
        {"pages_normal", Number(ram, "normal")},
        {"pages_zero", Number(ram, "duplicate")},
        {"bytes_downtime", Number(ram, "downtime-bytes")},
        // Syncs of the dirty bitmap: one at set-up, one after each pass, one at the stop; so the
        // passes while the guest ran are one fewer, as our rounds count them.
        {"rounds", std::max(Number(ram, "dirty-sync-count") - 1, 0.0)},
        {"dirty_sync_count", Number(ram, "dirty-sync-count")},
        {"total_ms", Number(info, "total-time")},
        {"setup_ms", Number(info, "setup-time")},
        {"polled_total_ms", Ms(completed_at - started)},
        {"throttle_pct", max_throttle},
        // QEMU computes it once a second: 0 for a migration shorter than that.
        {"dirty_pages_rate_max", max_dirty_rate},
        {"mbps", Number(ram, "mbps")},
        {"max_bandwidth_bps", params->value("max-bandwidth", 0ull) * 8},
        {"xbzrle", false},
        {"guest_runs_on", runs_on}});
  if (!runs_on) return Status::Error("the guest did not run on at QEMU's destination");
  return Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_migration: live migration of a dirtying guest, qosvisor and QEMU"};
  Settings s;
  auto* listen = app.add_option("--listen", s.listen, "destination: accept on ADDR:PORT");
  auto* connect = app.add_option("--connect", s.connect, "source: migrate to ADDR:PORT");
  auto* qemu =
      app.add_option("--qemu", s.qemu_uri, "QEMU pair: the destination QEMU listens on ADDR:PORT");
  listen->excludes(connect)->excludes(qemu);
  connect->excludes(qemu);
  app.add_option("--key", s.key_file, "migration key file (both qosvisor sides)");
  app.add_option("--rate", s.rate, "pages the guest dirties per second")
      ->check(CLI::Range(0, 1000000));
  app.add_option("--region-mib", s.region_mib, "memtouch's region (MiB from 8 MiB)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--memory-mib", s.memory_mib, "guest memory, both VMMs")
      ->check(CLI::Range(16, 4096));
  app.add_option("--warmup-ms", s.warmup_ms, "how long the guest runs before the migration")
      ->check(CLI::Range(0, 600000));
  app.add_option("--downtime-ms", s.downtime_ms, "downtime limit, both VMMs")
      ->check(CLI::Range(1, 10000));
  app.add_option("--timeout-s", s.timeout_s, "give up after")->check(CLI::Range(1, 3600));
  app.add_option("--guests", s.dir, "directory with memtouch.elf");
  app.add_option("--qemu-bin", s.qemu, "QEMU binary");
  app.add_option("--qemu-accel", s.qemu_accel, "QEMU accelerator")
      ->check(CLI::IsMember({"kvm", "tcg"}));
  app.add_option("--source-netns", s.source_netns, "QEMU pair: network namespace of the source");
  app.add_option("--dest-netns", s.dest_netns, "QEMU pair: network namespace of the destination");
  app.add_option("--qemu-max-bandwidth", s.qemu_max_bandwidth,
                 "QEMU's max-bandwidth in bytes/s (0: its default); ours runs at link speed");
  app.add_option("--bandwidth-bps", s.bandwidth_bps, "ours: cap the sender at this rate (bits/s)");
  app.add_flag("--qemu-auto-converge", s.qemu_auto_converge,
               "QEMU: throttle the vCPUs when pre-copy does not converge, as ours does");
  app.add_flag("--verify", s.verify,
               "compare a hash of guest memory at both ends (hashing adds to the downtime)");
  CLI11_PARSE(app, argc, argv);
  if (s.region_mib + 8 > s.memory_mib) {
    std::cerr << "bench_migration: --region-mib must fit above 8 MiB in --memory-mib\n";
    return 2;
  }

  std::string side = !s.listen.empty() ? "destination" : !s.connect.empty() ? "source" : "qemu";
  if (s.listen.empty() && s.connect.empty() && s.qemu_uri.empty()) {
    std::cerr << "bench_migration: give one of --listen, --connect or --qemu\n";
    return 2;
  }
  if (const std::string reason = qosvisor::hv::Kvm::UnavailableReason(); !reason.empty()) {
    Emit(ErrorLine(side, reason));
    std::cerr << "bench_migration: /dev/kvm is unusable: " << reason << "\n";
    return 1;
  }
  Status result = Status::Ok();
  if (side == "qemu") {
    result = RunQemu(s);
  } else {
    if (s.key_file.empty()) {
      std::cerr << "bench_migration: --key FILE is needed on both qosvisor sides\n";
      return 2;
    }
    auto key = qosvisor::hv::LoadMigrationKey(s.key_file);
    if (!key) {
      std::cerr << "bench_migration: " << key.message() << "\n";
      return 2;
    }
    result = side == "source" ? RunSource(s, *key) : RunDestination(s, *key);
  }
  if (!result) {
    json line = ErrorLine(side, result.message());
    if (side == "qemu") line["vmm"] = "qemu-microvm";
    Emit(line);
    std::cerr << "bench_migration (" << side << "): " << result.message() << "\n";
    return 1;
  }
  return 0;
}
