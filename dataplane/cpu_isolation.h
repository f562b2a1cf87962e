// Keeping the rest of the box off the data-plane workers' CPUs while they run, as booting with
// isolcpus would, but at run time and undone at exit. A busy-polling worker that shares its CPU
// loses it for a whole scheduler slice (about 1 ms) whenever another task there wakes up: a
// kernel thread's periodic work, a shell, an unbound workqueue. Every packet queued behind the
// worker waits that long. Moved off: every task that may also run elsewhere, unbound workqueues
// and interrupts. Per-CPU kernel threads (ksoftirqd, per-CPU kworkers) cannot move and stay.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace qosvisor::dataplane {

// "0-2,5" <-> a cpu_set_t; an error names what is wrong in the list.
Result<cpu_set_t> ParseCpuList(const std::string& list);
std::string FormatCpuList(const cpu_set_t& cpus);
// The kernel's hex bitmaps (/proc/irq/N/smp_affinity, the workqueue cpumask): "3", "00000003",
// "ffffffff,00000001" (groups of 32 bits, most significant first).
Result<cpu_set_t> ParseCpuMask(const std::string& hex);
std::string FormatCpuMask(const cpu_set_t& cpus);

struct IsolationOptions {
  std::string proc = "/proc";  // tasks (proc/N/task/T) and interrupts (proc/irq/N/smp_affinity)
  std::string workqueue_cpumask = "/sys/devices/virtual/workqueue/cpumask";
  pid_t own_pid = 0;                // this process's threads stay where they are (0: getpid())
  std::optional<pid_t> only_pid;    // move only this process's threads (tests)
  std::string online_cpus = "/sys/devices/system/cpu/online";
  // Where the moved masks are written down while they are moved (file isolated-cpus-LIST), so
  // that the next isolation of the same CPUs puts back what one that never stopped (kill -9, a
  // crash) left moved. Empty: nowhere.
  std::string record_dir = "/run/qosvisor";
  unsigned box_cpus = 0;  // > 0: the box has CPUs 0..box_cpus-1 (tests); else online_cpus says
};

class CpuIsolation {
 public:
  // Moves what it can off `cpus`; an error when `cpus` is empty, names a CPU the box lacks, or is
  // every CPU of the box (nothing would be left for the rest of it).
  static Result<std::unique_ptr<CpuIsolation>> Start(const cpu_set_t& cpus,
                                                     const IsolationOptions& options = {});
  // Puts back what it moved, where nobody has changed it since, and removes its record.
  ~CpuIsolation();
  CpuIsolation(const CpuIsolation&) = delete;
  CpuIsolation& operator=(const CpuIsolation&) = delete;

  size_t tasks_moved() const { return tasks_.size(); }
  size_t tasks_left() const { return tasks_left_; }  // pinned to the CPUs only (per-CPU kthreads)
  size_t irqs_moved() const { return irqs_moved_; }
  bool workqueues_moved() const { return workqueues_moved_; }
  // Masks an earlier isolation of these CPUs left moved (it never stopped) and this one put back.
  size_t recovered() const { return recovered_; }
  // "cpu 1: 212 tasks moved off (38 bound there stay), 3 interrupts, unbound workqueues".
  std::string Describe() const;

 private:
  struct MovedTask {
    pid_t tid;
    cpu_set_t before, after;
  };
  struct MovedFile {  // a hex CPU mask in a file
    std::string path;
    cpu_set_t before, after;
  };
  explicit CpuIsolation(const cpu_set_t& cpus) : cpus_(cpus) {}
  void MoveTasks(const IsolationOptions& options);
  void MoveTask(pid_t tid);
  void MoveMaskFile(const std::string& path, bool is_irq);
  // Each mask back to `before` where it is still `after`.
  static void PutBack(const std::vector<MovedTask>& tasks, const std::vector<MovedFile>& files);
  Status RecoverFrom(const std::string& record);
  Status WriteRecord() const;

  cpu_set_t cpus_;
  std::string record_;  // the record's path, or empty
  size_t recovered_ = 0;
  std::vector<MovedTask> tasks_;
  std::vector<MovedFile> files_;
  size_t tasks_left_ = 0;
  size_t irqs_moved_ = 0;
  bool workqueues_moved_ = false;
};

}  // namespace qosvisor::dataplane
