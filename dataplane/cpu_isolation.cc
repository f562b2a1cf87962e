#include "dataplane/cpu_isolation.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_set>

namespace qosvisor::dataplane {
namespace {

namespace fs = std::filesystem;

bool Intersects(const cpu_set_t& a, const cpu_set_t& b) {
  cpu_set_t both;
  CPU_AND(&both, &a, &b);
  return CPU_COUNT(&both) > 0;
}

cpu_set_t Without(const cpu_set_t& from, const cpu_set_t& cpus) {
  cpu_set_t out;
  CPU_ZERO(&out);
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &from) && !CPU_ISSET(cpu, &cpus)) CPU_SET(cpu, &out);
  }
  return out;
}

std::optional<int> ParseInt(std::string_view text) {
  int v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < 0) return std::nullopt;
  return v;
}

std::optional<std::string> ReadLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  return line;
}

// Through write(2) rather than a stream: the kernel refuses some masks (managed interrupts) at
// the write, and that must be seen.
bool WriteText(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

std::optional<cpu_set_t> ReadMaskFile(const std::string& path) {
  auto line = ReadLine(path);
  if (!line) return std::nullopt;
  auto mask = ParseCpuMask(*line);
  if (!mask.ok()) return std::nullopt;
  return *mask;
}

const char* NeedsRoot(int error) {
  return error == EACCES || error == EPERM ? " (isolating CPUs needs root)" : "";
}

// The CPUs online (they need not be contiguous); `count` > 0 stands for CPUs 0..count-1.
cpu_set_t OnlineCpus(unsigned count, const std::string& online_list) {
  if (count == 0) {
    if (auto line = ReadLine(online_list)) {
      if (auto online = ParseCpuList(*line); online.ok()) return *online;
    }
    count = static_cast<unsigned>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  }
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  for (unsigned cpu = 0; cpu < count; ++cpu) CPU_SET(cpu, &cpus);
  return cpus;
}

std::vector<int> NumericEntries(const std::string& dir) {
  std::vector<int> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (auto n = ParseInt(it->path().filename().string())) out.push_back(*n);
  }
  return out;
}

}  // namespace

Result<cpu_set_t> ParseCpuList(const std::string& list) {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string_view item(list.data() + start, comma - start);
    const size_t dash = item.find('-');
    auto first = ParseInt(item.substr(0, dash));
    auto last = dash == std::string_view::npos ? first : ParseInt(item.substr(dash + 1));
    if (!first || !last || *last < *first || *last >= CPU_SETSIZE) {
      return Status::Error(fmt::format(
          "CPU list '{}': '{}' is not a CPU number or range below {} (e.g. 1 or 2-3)", list,
          item, CPU_SETSIZE));
    }
    for (int cpu = *first; cpu <= *last; ++cpu) CPU_SET(cpu, &cpus);
    start = comma + 1;
  }
  return cpus;
}

std::string FormatCpuList(const cpu_set_t& cpus) {
  std::string out;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &cpus)) continue;
    int last = cpu;
    while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &cpus)) ++last;
    out += fmt::format("{}{}", out.empty() ? "" : ",", cpu);
    if (last > cpu) out += fmt::format("-{}", last);
    cpu = last;
  }
  return out;
}

Result<cpu_set_t> ParseCpuMask(const std::string& hex) {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  int bit = 0;
  bool any_digit = false;
  for (auto it = hex.rbegin(); it != hex.rend(); ++it) {
    if (*it == ',' || *it == '\n') continue;
    int v = 0;
    auto [end, ec] = std::from_chars(&*it, &*it + 1, v, 16);
    if (ec != std::errc()) {
      return Status::Error(fmt::format("CPU mask '{}': '{}' is not a hex digit", hex, *it));
    }
    any_digit = true;
    for (int b = 0; b < 4; ++b, ++bit) {
      if ((v >> b) & 1) {
        if (bit >= CPU_SETSIZE) {
          return Status::Error(fmt::format("CPU mask '{}': names CPU {} (at most {})", hex, bit,
                                           CPU_SETSIZE - 1));
        }
        CPU_SET(bit, &cpus);
      }
    }
  }
  if (!any_digit) return Status::Error(fmt::format("CPU mask '{}' is empty", hex));
  return cpus;
}

std::string FormatCpuMask(const cpu_set_t& cpus) {
  int top = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &cpus)) top = cpu;
  }
  std::string out;
  for (int group = top / 32; group >= 0; --group) {
    uint32_t word = 0;
    for (int b = 0; b < 32; ++b) word |= uint32_t{CPU_ISSET(group * 32 + b, &cpus) ? 1u : 0u} << b;
    out += fmt::format("{}{:08x}", out.empty() ? "" : ",", word);
  }
  return out;
}

Result<std::unique_ptr<CpuIsolation>> CpuIsolation::Start(const cpu_set_t& cpus,
                                                          const IsolationOptions& options) {
  if (CPU_COUNT(&cpus) == 0) return Status::Error("isolate: no CPU given");
  const cpu_set_t everything = OnlineCpus(options.box_cpus, options.online_cpus);
  cpu_set_t beyond = Without(cpus, everything);
  if (CPU_COUNT(&beyond) > 0) {
    return Status::Error(fmt::format("isolate: the box has CPUs {}, not {}",
                                     FormatCpuList(everything), FormatCpuList(beyond)));
  }
  if (CPU_EQUAL(&cpus, &everything)) {
    return Status::Error(fmt::format(
        "isolate: CPUs {} are every CPU of the box; the rest of it (the control thread, the "
        "kernel's own work) needs one left",
        FormatCpuList(cpus)));
  }
  std::unique_ptr<CpuIsolation> iso(new CpuIsolation(cpus));
  if (!options.record_dir.empty()) {
    std::error_code ec;
    fs::create_directories(options.record_dir, ec);
    if (ec) {
      return Status::Error(fmt::format("isolate: cannot create {}: {}{}", options.record_dir,
                                       ec.message(), NeedsRoot(ec.value())));
    }
    const std::string record =
        fmt::format("{}/isolated-cpus-{}", options.record_dir, FormatCpuList(cpus));
    if (fs::exists(record, ec)) {
      if (Status s = iso->RecoverFrom(record); !s.ok()) return s;
    }
    iso->record_ = record;
  }
  iso->MoveTasks(options);
  if (!options.only_pid) {  // box-wide settings: not for a test that moves one process
    for (int irq : NumericEntries(options.proc + "/irq")) {
      iso->MoveMaskFile(fmt::format("{}/irq/{}/smp_affinity", options.proc, irq), true);
    }
    iso->MoveMaskFile(options.workqueue_cpumask, false);
  }
  if (Status s = iso->WriteRecord(); !s.ok()) return s;  // `iso` puts everything back
  return iso;
}

// The record: one line per moved mask, "task TID BEFORE AFTER" or "file BEFORE AFTER PATH"
// (masks in the kernel's hex), written whole to a temporary file and renamed over the old one.
Status CpuIsolation::WriteRecord() const {
  if (record_.empty()) return Status::Ok();
  std::string text;
  for (const MovedTask& t : tasks_) {
    text += fmt::format("task {} {} {}\n", t.tid, FormatCpuMask(t.before), FormatCpuMask(t.after));
  }
  for (const MovedFile& f : files_) {
    text += fmt::format("file {} {} {}\n", FormatCpuMask(f.before), FormatCpuMask(f.after), f.path);
  }
  const std::string temporary = record_ + ".new";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      const int error = errno;  // of the failed open or write: a failed stream makes no more calls
      return Status::Error(fmt::format("isolate: cannot write the record of moved masks to {}: {}{}",
                                       temporary, std::strerror(error), NeedsRoot(error)));
    }
  }
  std::error_code ec;
  fs::rename(temporary, record_, ec);
  if (ec) {
    return Status::Error(
        fmt::format("isolate: cannot rename {} to {}: {}", temporary, record_, ec.message()));
  }
  return Status::Ok();
}

// Puts back what the record of an isolation that never stopped says it moved (where nobody
// changed it since), then forgets the record. A line that does not parse is an error naming it:
// the record is this program's own, so it means the file was damaged, and guessing could move
// the wrong tasks.
Status CpuIsolation::RecoverFrom(const std::string& record) {
  std::ifstream in(record);
  std::string line;
  std::vector<MovedTask> tasks;
  std::vector<MovedFile> files;
  for (int number = 1; std::getline(in, line); ++number) {
    std::istringstream fields(line);
    std::string kind, before, after, path;
    pid_t tid = 0;
    bool ok = false;
    if (fields >> kind && kind == "task") {
      ok = static_cast<bool>(fields >> tid >> before >> after) && tid > 0;
    } else if (kind == "file") {
      ok = fields >> before >> after && std::getline(fields >> std::ws, path) && !path.empty();
    }
    const Result<cpu_set_t> b = ParseCpuMask(before), a = ParseCpuMask(after);
    if (!ok || !b.ok() || !a.ok()) {
      return Status::Error(fmt::format(
          "isolate: {}:{}: '{}' is not 'task TID BEFORE AFTER' or 'file BEFORE AFTER PATH'; "
          "put the masks back by hand or remove the file",
          record, number, line));
    }
    if (kind == "task") tasks.push_back({tid, *b, *a});
    else files.push_back({path, *b, *a});
  }
  PutBack(tasks, files);
  recovered_ = tasks.size() + files.size();
  std::error_code ec;
  fs::remove(record, ec);
  return Status::Ok();
}

void CpuIsolation::MoveTasks(const IsolationOptions& options) {
  const pid_t own = options.own_pid ? options.own_pid : getpid();
  std::unordered_set<int> seen;
  // Twice: a task forked during the first pass may have copied its parent's mask before the
  // parent was moved.
  for (int pass = 0; pass < 2; ++pass) {
    for (int pid : NumericEntries(options.proc)) {
      if (pid == own || (options.only_pid && pid != *options.only_pid)) continue;
      for (int tid : NumericEntries(fmt::format("{}/{}/task", options.proc, pid))) {
        if (seen.insert(tid).second) MoveTask(tid);
      }
    }
  }
}

void CpuIsolation::MoveTask(pid_t tid) {
  cpu_set_t before;
  if (sched_getaffinity(tid, sizeof before, &before) != 0) return;  // gone already
  if (!Intersects(before, cpus_)) return;
  const cpu_set_t after = Without(before, cpus_);
  // Bound to these CPUs only: a per-CPU kernel thread, or a task someone pinned there on
  // purpose. Either way it stays; so do tasks the kernel will not move (EINVAL).
  if (CPU_COUNT(&after) == 0) {
    ++tasks_left_;
    return;
  }
  if (sched_setaffinity(tid, sizeof after, &after) != 0) {
    tasks_left_ += errno != ESRCH;
    return;
  }
  tasks_.push_back({tid, before, after});
}

void CpuIsolation::MoveMaskFile(const std::string& path, bool is_irq) {
  auto before = ReadMaskFile(path);
  if (!before || !Intersects(*before, cpus_)) return;
  const cpu_set_t after = Without(*before, cpus_);
  if (CPU_COUNT(&after) == 0 || !WriteText(path, FormatCpuMask(after))) return;
  files_.push_back({path, *before, after});
  if (is_irq) ++irqs_moved_;
  else workqueues_moved_ = true;
}

CpuIsolation::~CpuIsolation() {
  PutBack(tasks_, files_);
  if (!record_.empty()) {
    std::error_code ec;
    fs::remove(record_, ec);
  }
}

void CpuIsolation::PutBack(const std::vector<MovedTask>& tasks,
                           const std::vector<MovedFile>& files) {
  for (const MovedTask& t : tasks) {
    cpu_set_t now;
    if (sched_getaffinity(t.tid, sizeof now, &now) == 0 && CPU_EQUAL(&now, &t.after)) {
      sched_setaffinity(t.tid, sizeof t.before, &t.before);
    }
  }
  for (const MovedFile& f : files) {
    auto now = ReadMaskFile(f.path);
    if (now && CPU_EQUAL(&*now, &f.after)) WriteText(f.path, FormatCpuMask(f.before));
  }
}

std::string CpuIsolation::Describe() const {
  std::string out = fmt::format("cpu {}: {} tasks moved off ({} bound there stay)",
                                FormatCpuList(cpus_), tasks_.size(), tasks_left_);
  if (irqs_moved_) out += fmt::format(", {} interrupts", irqs_moved_);
  if (workqueues_moved_) out += ", unbound workqueues";
  if (recovered_) {
    out += fmt::format("; put back {} masks an earlier isolation left moved", recovered_);
  }
  return out;
}

}  // namespace qosvisor::dataplane
