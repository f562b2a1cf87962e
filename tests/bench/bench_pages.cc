// bench_pages: what the page tracker costs and what its counters buy, each against the plain
// approach in the same run, on the memtouch guest.
//
//   tracker  memtouch writing flat out at random over 48 MiB: pages it writes per second with
//            no tracking, then with the page tracker harvesting every 1 s and every 100 ms
//            (KVM write-protects the guest's memory at every harvest; each first write after
//            it faults), then untracked again. Also the cost of one harvest on the host.
//   thp      the same guest (48 MiB dense, plus a sparse 32 MiB region it touches one page per
//            2 MiB of) with the huge-page policy off, auto and all, applied from 3 s of
//            harvests every 200 ms: its write rate afterwards and the guest memory huge pages back (this is a memfd, so the host counts it under
//            ShmemHugePages/FileHugePages, not AnonHugePages).
//   order    pre-copy migration of a hot/cold guest over an in-process channel capped at a
//            link's rate, with the pages sent coldest region first (hot pages held back while
//            they fit half the downtime budget) and in address order: bytes sent, rounds,
//            downtime. Two hot sets: one that fits the budget, one four times larger.
//   premigrate  a fork child (its parent filled 48 MiB, the child writes 200 pages/s) migrated
//            at the link's rate with its frozen image pre-copied to the destination, and the
//            same child migrated whole: bytes, time and downtime; and what copying the image
//            ahead cost.
//
// Every line is JSON; the last of each part holds the ratio to the plain approach.
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "hv/boot_abi.h"
#include "hv/image_transfer.h"
#include "hv/kvm.h"
#include "hv/migration.h"
#include "hv/migration_stream.h"
#include "hv/page_heat.h"
#include "hv/vm.h"

namespace {

using namespace std::chrono_literals;
using qosvisor::Result;
using qosvisor::Status;
using qosvisor::hv::HugePolicy;
using qosvisor::hv::MigrationChannel;
using qosvisor::hv::MigrationResult;
using qosvisor::hv::MigrationRole;
using qosvisor::hv::MigrationTuning;
using qosvisor::hv::PageHeat;
using qosvisor::hv::UniqueFd;
using qosvisor::hv::Vm;
using qosvisor::hv::VmOptions;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;
constexpr auto kTracker = Vm::ChangeReader::kPageTracker;

struct Settings {
  std::string dir = QOSVISOR_GUEST_DIR;
  std::string parts = "tracker,thp,order,premigrate";
  int phase_ms = 3000;  // each measured phase
  int runs = 3;         // order: migrations per pattern and mode
  uint64_t link_mbps = 400;
};

void Emit(const json& j) { std::cout << j.dump() << std::endl; }

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

uint64_t Touched(Vm& vm) {
  uint64_t v = 0;
  (void)vm.memory().LoadAtomic<uint64_t>(
      QV_BOOT_INFO_GPA + offsetof(qv_boot_info, progress) + sizeof(uint64_t), &v);
  return v;
}

Result<std::unique_ptr<Vm>> StartMemtouch(const Settings& s, const std::string& name,
                                          uint64_t memory_mib, const std::string& cmdline) {
  VmOptions o;
  o.name = name;
  o.memory_bytes = memory_mib << 20;
  o.image = s.dir + "/memtouch.elf";
  o.cmdline = cmdline;
  auto vm = Vm::Create(o);
  if (!vm) return vm.status();
  if (Status st = (*vm)->Start(); !st) return st;
  const auto deadline = Clock::now() + 10s;
  while (Touched(**vm) == 0) {
    if (Clock::now() > deadline) return Status::Error(name + ": memtouch wrote nothing");
    std::this_thread::sleep_for(1ms);
  }
  return vm;
}

// The page tracker's loop as the daemon runs it: harvest every `period` into `heat` (and apply
// `policy` when given) for `duration`. Returns the mean time one harvest took, in µs.
double Track(Vm& vm, PageHeat& heat, Clock::duration period, Clock::duration duration,
             const HugePolicy* policy, std::vector<int8_t>* applied) {
  double busy_s = 0;
  uint64_t harvests = 0;
  auto last = Clock::now();
  const auto end = last + duration;
  while (Clock::now() < end) {
    std::this_thread::sleep_for(period);
    const auto t0 = Clock::now();
    auto changed = vm.TakeChangedPages(kTracker);
    if (!changed) break;
    heat.Add(*changed, Seconds(t0 - last));
    if (auto populated = vm.memory().PopulatedPages()) heat.SetPopulated(*populated);
    if (policy != nullptr) (void)ApplyHugePolicy(vm.memory(), heat, *policy, *applied, 64);
    last = Clock::now();
    busy_s += Seconds(last - t0);
    ++harvests;
  }
  return harvests == 0 ? 0 : busy_s / static_cast<double>(harvests) * 1e6;
}

// Pages per second the guest wrote over `duration`, tracked (with `period`) or not.
double WriteRate(Vm& vm, std::optional<Clock::duration> period, Clock::duration duration,
                 double* harvest_us) {
  const uint64_t before = Touched(vm);
  const auto t0 = Clock::now();
  if (period) {
    PageHeat heat(vm.memory().size());
    (void)vm.TrackChanges(kTracker, true);
    (void)vm.TakeChangedPages(kTracker);
    *harvest_us = Track(vm, heat, *period, duration, nullptr, nullptr);
    (void)vm.TrackChanges(kTracker, false);
  } else {
    std::this_thread::sleep_for(duration);
  }
  return static_cast<double>(Touched(vm) - before) / Seconds(Clock::now() - t0);
}

constexpr const char* kFlatOut = "random=1 pages=100000000 mib=48 at=8";

Status BenchTracker(const Settings& s) {
  auto vm = StartMemtouch(s, "pages-tracker", 64, kFlatOut);
  if (!vm) return vm.status();
  const auto phase = std::chrono::milliseconds(s.phase_ms);
  double unused = 0, harvest_1s = 0, harvest_100ms = 0;
  const double off_a = WriteRate(**vm, std::nullopt, phase, &unused);
  const double at_1s = WriteRate(**vm, 1s, phase, &harvest_1s);
  const double at_100ms = WriteRate(**vm, 100ms, phase, &harvest_100ms);
  const double off_b = WriteRate(**vm, std::nullopt, phase, &unused);
  const double off = (off_a + off_b) / 2;
  (void)(*vm)->Stop(5000ms);
  Emit({{"bench", "pages"},
        {"part", "tracker"},
        {"guest", std::string("memtouch ") + kFlatOut},
        {"untracked_pages_per_s", off},
        {"untracked_before_after", {off_a, off_b}},
        {"tracked_1s_pages_per_s", at_1s},
        {"tracked_100ms_pages_per_s", at_100ms},
        {"overhead_1s_pct", 100.0 * (1.0 - at_1s / off)},
        {"overhead_100ms_pct", 100.0 * (1.0 - at_100ms / off)},
        {"harvest_us_64mib", harvest_1s},
        {"harvest_us_64mib_at_100ms", harvest_100ms}});
  return Status::Ok();
}

// The host's huge pages for shared memory (meminfo), in KiB.
uint64_t ShmemHugeKib() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t value = 0, total = 0;
  std::string unit;
  while (in >> key >> value) {
    std::getline(in, unit);
    if (key == "ShmemHugePages:" || key == "FileHugePages:") total += value;
  }
  return total;
}

Status BenchHugePages(const Settings& s) {
  constexpr const char* kGuest = "random=1 pages=100000000 mib=48 at=8 sparse_mib=32 sparse_at=64";
  json line = {{"bench", "pages"}, {"part", "thp"}, {"guest", std::string("memtouch ") + kGuest}};
  for (const auto& [name, policy] : {std::pair{"off", HugePolicy::kOff},
                                     std::pair{"auto", HugePolicy::kAuto},
                                     std::pair{"all", HugePolicy::kAll}}) {
    const uint64_t host_before = ShmemHugeKib();
    auto vm = StartMemtouch(s, std::string("pages-thp-") + name, 128, kGuest);
    if (!vm) return vm.status();
    PageHeat heat((*vm)->memory().size());
    std::vector<int8_t> applied;
    (void)(*vm)->TrackChanges(kTracker, true);
    (void)(*vm)->TakeChangedPages(kTracker);
    Track(**vm, heat, 200ms, 3s, &policy, &applied);  // learn and apply
    const uint64_t tracked_before = Touched(**vm);
    const auto tracked_t0 = Clock::now();
    Track(**vm, heat, 1s, std::chrono::milliseconds(s.phase_ms), &policy, &applied);
    const double tracked_rate = static_cast<double>(Touched(**vm) - tracked_before) /
                                Seconds(Clock::now() - tracked_t0);
    // Measured untracked: while KVM logs a region's writes it maps it 4 KiB at a time, so a
    // tracked guest gets nothing from a huge page until the log is off.
    (void)(*vm)->TrackChanges(kTracker, false);
    double unused = 0;
    const double rate =
        WriteRate(**vm, std::nullopt, std::chrono::milliseconds(s.phase_ms), &unused);
    auto backed = (*vm)->memory().HugeBackedBytes();
    const uint64_t host_after = ShmemHugeKib();
    line[name] = {{"pages_per_s", rate},
                  {"tracked_1s_pages_per_s", tracked_rate},
                  {"huge_backed_mib", backed ? static_cast<double>(*backed) / (1 << 20) : -1},
                  {"huge_regions", std::count(applied.begin(), applied.end(), 1)},
                  {"host_shmem_huge_kib_delta",
                   static_cast<int64_t>(host_after) - static_cast<int64_t>(host_before)}};
    (void)(*vm)->Stop(5000ms);
  }
  line["auto_vs_off_rate"] = line["auto"]["pages_per_s"].get<double>() /
                             line["off"]["pages_per_s"].get<double>();
  line["all_vs_off_rate"] = line["all"]["pages_per_s"].get<double>() /
                            line["off"]["pages_per_s"].get<double>();
  Emit(line);
  return Status::Ok();
}

struct HotCold {
  const char* name;
  std::string cmdline;
};

// One migration of a fresh guest whose heat the tracker learnt for 2 s first.
Result<MigrationResult> MigrateOnce(const Settings& s, const HotCold& pattern, bool ordered) {
  auto src = StartMemtouch(s, "pages-order-src", 64, pattern.cmdline);
  if (!src) return src.status();
  PageHeat heat((*src)->memory().size());
  (void)(*src)->TrackChanges(kTracker, true);
  (void)(*src)->TakeChangedPages(kTracker);
  Track(**src, heat, 200ms, 2s, nullptr, nullptr);
  VmOptions options = (*src)->options();
  options.name = "pages-order-dst";
  auto dst = Vm::CreateIncoming(options);
  if (!dst) return dst.status();
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return Status::Error("socketpair failed");
  }
  std::array<uint8_t, 32> key{};
  key[0] = 1;
  auto source = MigrationChannel::ForTesting(UniqueFd(fds[0]), key, MigrationRole::kSource);
  auto destination =
      MigrationChannel::ForTesting(UniqueFd(fds[1]), key, MigrationRole::kDestination);
  MigrationTuning tuning;
  tuning.bandwidth_bps = s.link_mbps * 1'000'000;
  tuning.heat = heat;
  tuning.order_by_heat = ordered;
  Status received = Status::Ok();
  std::thread receiver([&] { received = ReceiveVm(**dst, destination, 10000ms, nullptr); });
  auto sent = SendVm(**src, source, tuning, nullptr);
  receiver.join();
  (void)(*src)->Destroy();
  (void)(*dst)->Destroy();
  if (!received) return received;
  return sent;
}

json Mean(const std::vector<MigrationResult>& runs) {
  double bytes = 0, rounds = 0, pages = 0, paused = 0, held = 0, throttle = 0;
  for (const MigrationResult& r : runs) {
    bytes += static_cast<double>(r.bytes_sent);
    rounds += r.rounds;
    pages += static_cast<double>(r.pages_sent);
    paused += r.paused_ms;
    held += static_cast<double>(r.pages_held_back);
    throttle = std::max<double>(throttle, r.max_throttle_percent);
  }
  const double n = static_cast<double>(runs.size());
  return {{"bytes", bytes / n},       {"rounds", rounds / n},       {"pages_sent", pages / n},
          {"paused_ms", paused / n}, {"pages_held_back", held / n}, {"max_throttle_pct", throttle}};
}

Status BenchOrder(const Settings& s) {
  // Hot regions sit low, where address order sends them first, as a kernel's own hot data does.
  const std::vector<HotCold> patterns = {
      {"hot-fits-budget", "hot_at=8 hot_mib=1 hot_pages=20000 at=10 mib=40 pages=400"},
      {"hot-4x-budget", "hot_at=8 hot_mib=8 hot_pages=40000 at=16 mib=40 pages=400"},
  };
  for (const HotCold& p : patterns) {
    std::vector<MigrationResult> ordered, plain;
    for (int i = 0; i < s.runs; ++i) {  // alternated, so that drift falls on both alike
      auto a = MigrateOnce(s, p, true);
      if (!a) return Status::Error(std::string(p.name) + " ordered: " + a.message());
      ordered.push_back(*a);
      auto b = MigrateOnce(s, p, false);
      if (!b) return Status::Error(std::string(p.name) + " address order: " + b.message());
      plain.push_back(*b);
    }
    const json o = Mean(ordered), a = Mean(plain);
    Emit({{"bench", "pages"},
          {"part", "order"},
          {"pattern", p.name},
          {"guest", "memtouch " + p.cmdline},
          {"link_mbps", s.link_mbps},
          {"runs", s.runs},
          {"coldest_first", o},
          {"address_order", a},
          {"bytes_ratio", o["bytes"].get<double>() / a["bytes"].get<double>()},
          {"rounds_ratio", o["rounds"].get<double>() / a["rounds"].get<double>()}});
  }
  return Status::Ok();
}

// A pair of channels over a socketpair, as the source and destination ends of one stream.
std::pair<MigrationChannel, MigrationChannel> Channels() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  std::array<uint8_t, 32> key{};
  key[0] = 2;
  return {MigrationChannel::ForTesting(UniqueFd(fds[0]), key, MigrationRole::kSource),
          MigrationChannel::ForTesting(UniqueFd(fds[1]), key, MigrationRole::kDestination)};
}

struct Moved {
  MigrationResult sent;
  double seconds = 0;
};

// Migrates `kid` into a new VM (on `base` when given), then resumes `kid` for the next run.
Result<Moved> MoveChild(const Settings& s, Vm& kid, std::shared_ptr<const qosvisor::hv::FrozenImage> base,
                        const std::string& name) {
  VmOptions options = kid.options();
  options.name = name;
  auto dst = Vm::CreateIncoming(options, base);
  if (!dst) return dst.status();
  auto [source, destination] = Channels();
  MigrationTuning tuning;
  tuning.bandwidth_bps = s.link_mbps * 1'000'000;
  tuning.base_at_destination = base != nullptr;
  Status received = Status::Ok();
  const auto t0 = Clock::now();
  std::thread receiver([&] { received = ReceiveVm(**dst, destination, 10000ms, nullptr); });
  auto sent = SendVm(kid, source, tuning, nullptr);
  receiver.join();
  const double seconds = Seconds(Clock::now() - t0);
  (void)(*dst)->Destroy();
  if (!sent) return sent.status();
  if (!received) return received;
  if (Status st = kid.Resume(); !st) return st;
  return Moved{*sent, seconds};
}

// The frozen image copied to a file as a destination keeps it, paced like the migration.
Result<std::shared_ptr<const qosvisor::hv::FrozenImage>> PrecopyImage(
    const Settings& s, const qosvisor::hv::FrozenImage& image, json& line) {
  auto copy = std::make_shared<qosvisor::hv::FrozenImage>();
  copy->fd = UniqueFd(::memfd_create("bench-pages-image", MFD_CLOEXEC));
  if (::ftruncate(copy->fd.get(), static_cast<off_t>(image.size)) != 0) {
    return Status::Error("image copy: ftruncate failed");
  }
  copy->size = image.size;
  copy->id = image.id;
  auto [source, destination] = Channels();
  Status received = Status::Ok();
  const auto t0 = Clock::now();
  std::thread receiver([&] {
    received = qosvisor::hv::ReceiveImage(destination, copy->fd.get(), image.size, 10000ms);
  });
  auto sent = qosvisor::hv::SendImage(image.fd.get(), image.size, source,
                                      s.link_mbps * 1'000'000, 10000ms, nullptr);
  receiver.join();
  if (!sent) return sent.status();
  if (!received) return received;
  line["image_copy"] = {{"bytes", sent->bytes_sent}, {"seconds", Seconds(Clock::now() - t0)}};
  return std::shared_ptr<const qosvisor::hv::FrozenImage>(copy);
}

Status BenchPremigrate(const Settings& s) {
  constexpr const char* kGuest = "fill_mib=48 fill_at=8 pages=200 mib=1 at=58";
  auto parent = StartMemtouch(s, "pages-parent", 64, kGuest);
  if (!parent) return parent.status();
  auto kids = (*parent)->Fork({{"pages-kid", "", {}}});
  if (!kids) return kids.status();
  Vm& kid = *(*kids)[0];
  if (Status st = kid.Resume(); !st) return st;
  std::this_thread::sleep_for(1s);  // the child writes its own pages for a while
  json line = {{"bench", "pages"}, {"part", "premigrate"}, {"guest", std::string("memtouch ") + kGuest},
               {"link_mbps", s.link_mbps}, {"runs", s.runs}};
  auto base = PrecopyImage(s, *kid.base_image(), line);
  if (!base) return base.status();
  std::vector<Moved> whole, based;
  for (int i = 0; i < s.runs; ++i) {  // alternated: the child's own pages grow between runs
    auto w = MoveChild(s, kid, nullptr, "pages-kid-whole");
    if (!w) return Status::Error("whole: " + w.message());
    whole.push_back(*w);
    auto b = MoveChild(s, kid, *base, "pages-kid-based");
    if (!b) return Status::Error("on its base: " + b.message());
    based.push_back(*b);
  }
  auto mean = [](const std::vector<Moved>& runs) {
    double bytes = 0, seconds = 0, paused = 0;
    for (const Moved& m : runs) {
      bytes += static_cast<double>(m.sent.bytes_sent);
      seconds += m.seconds;
      paused += m.sent.paused_ms;
    }
    const double n = static_cast<double>(runs.size());
    return json{{"bytes", bytes / n}, {"seconds", seconds / n}, {"paused_ms", paused / n}};
  };
  line["whole"] = mean(whole);
  line["premigrated"] = mean(based);
  line["bytes_saved_pct"] = 100.0 * (1.0 - line["premigrated"]["bytes"].get<double>() /
                                               line["whole"]["bytes"].get<double>());
  line["time_ratio"] =
      line["premigrated"]["seconds"].get<double>() / line["whole"]["seconds"].get<double>();
  Emit(line);
  (void)kid.Destroy();
  (void)(*parent)->Destroy();
  return Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  CLI::App app("bench_pages: the page tracker's cost, huge pages and pre-copy order");
  app.add_option("--guests", s.dir, "directory of the test guests");
  app.add_option("--parts", s.parts, "comma-separated: tracker, thp, order, premigrate");
  app.add_option("--phase-ms", s.phase_ms, "length of each measured phase");
  app.add_option("--runs", s.runs, "order: migrations per pattern and mode");
  app.add_option("--link-mbps", s.link_mbps, "order: the migration link's rate");
  CLI11_PARSE(app, argc, argv);
  if (std::string why = qosvisor::hv::Kvm::UnavailableReason(); !why.empty()) {
    Emit({{"bench", "pages"}, {"skipped", why}});
    return 0;
  }
  const auto wanted = [&](const char* part) { return s.parts.find(part) != std::string::npos; };
  for (const auto& [part, run] : {std::pair{"tracker", &BenchTracker},
                                  std::pair{"thp", &BenchHugePages},
                                  std::pair{"order", &BenchOrder},
                                  std::pair{"premigrate", &BenchPremigrate}}) {
    if (!wanted(part)) continue;
    if (Status st = run(s); !st) {
      Emit({{"bench", "pages"}, {"part", part}, {"error", st.message()}});
      return 1;
    }
  }
  return 0;
}
