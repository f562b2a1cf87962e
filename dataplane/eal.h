// Starting and stopping DPDK's EAL from typed options: the embedded default runs without
// hugepages or PCI devices; hugepages are used when configured or found ("auto").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace qosvisor::dataplane {

enum class Hugepages { kAuto, kOn, kOff };

struct EalOptions {
  unsigned dataplane_lcores = 1;  // lcores besides the main (control) lcore
  uint64_t memory_bytes = 1ull << 30;
  Hugepages hugepages = Hugepages::kAuto;
  std::string file_prefix = "qosvisor";
  std::string log_level = "warning";  // EAL/PMD log level: error, warning, info, debug
};

// What the host offers, read from /proc and sysconf; separate so argument building is testable.
struct HostFacts {
  unsigned cpus = 1;
  uint64_t free_hugepage_bytes = 0;
  // The EAL maps hugepages through a hugetlbfs mount: pages reserved without one are unusable.
  bool hugetlbfs_mounted = true;
};
HostFacts ReadHostFacts();

// Decides hugepages on/off and returns the EAL argv (argv[0] included), or why it cannot start.
Result<std::vector<std::string>> BuildEalArgs(const EalOptions& options, const HostFacts& host);

class Eal {
 public:
  // Initialises the EAL once per process. Fails with the EAL's reason (rte_errno) if it cannot.
  static Result<std::unique_ptr<Eal>> Start(const EalOptions& options);
  ~Eal();
  Eal(const Eal&) = delete;
  Eal& operator=(const Eal&) = delete;

  const std::vector<std::string>& args() const { return args_; }
  bool hugepages() const { return hugepages_; }
  // Lcore ids that run data-plane loops (the main lcore runs the control thread).
  std::vector<unsigned> WorkerLcores() const;

 private:
  Eal(std::vector<std::string> args, bool hugepages)
      : args_(std::move(args)), hugepages_(hugepages) {}
  std::vector<std::string> args_;
  bool hugepages_;
};

}  // namespace qosvisor::dataplane
