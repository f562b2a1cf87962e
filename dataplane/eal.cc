// EAL start-up: argument building from typed options and host facts, then rte_eal_init.
#include "dataplane/eal.h"

#include <fmt/format.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <string>

namespace qosvisor::dataplane {
namespace {

uint64_t ReadMeminfoKb(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoull(line.substr(key.size() + 1));
  }
  return 0;
}

bool HugetlbfsMounted() {
  std::ifstream in("/proc/mounts");
  std::string device, mount_point, type;
  while (in >> device >> mount_point >> type) {
    if (type == "hugetlbfs") return true;
    in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return false;
}

}  // namespace

HostFacts ReadHostFacts() {
  HostFacts facts;
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  facts.cpus = cpus > 0 ? static_cast<unsigned>(cpus) : 1;
  const uint64_t free_pages = ReadMeminfoKb("HugePages_Free");
  const uint64_t page_kb = ReadMeminfoKb("Hugepagesize");
  facts.free_hugepage_bytes = free_pages * page_kb * 1024;
  facts.hugetlbfs_mounted = HugetlbfsMounted();
  return facts;
}

Result<std::vector<std::string>> BuildEalArgs(const EalOptions& options, const HostFacts& host) {
  const uint64_t memory_mb = options.memory_bytes >> 20;
  if (memory_mb < 64) {
    return Status::Error(
        fmt::format("dataplane.memory: {} MiB is too little for the EAL; use at "
                    "least 64MiB",
                    memory_mb));
  }
  const bool enough_free = host.free_hugepage_bytes >= options.memory_bytes;
  const bool enough_huge = enough_free && host.hugetlbfs_mounted;
  bool huge = false;
  switch (options.hugepages) {
    case Hugepages::kOff:
      huge = false;
      break;
    case Hugepages::kAuto:
      huge = enough_huge;
      break;
    case Hugepages::kOn:
      if (enough_free && !host.hugetlbfs_mounted) {
        return Status::Error(
            "dataplane.hugepages is 'on' but no hugetlbfs is mounted, through which the EAL maps "
            "them; mount one (mount -t hugetlbfs nodev /dev/hugepages) or use 'auto'");
      }
      if (!enough_huge) {
        return Status::Error(fmt::format(
            "dataplane.hugepages is 'on' but only {} MiB of hugepages are free and {} MiB are "
            "needed; reserve more (echo N > /proc/sys/vm/nr_hugepages) or use 'auto'",
            host.free_hugepage_bytes >> 20, memory_mb));
      }
      huge = true;
      break;
  }
  std::vector<std::string> args = {"qosvisor"};
  // Lcore 0 is the control thread; data-plane lcores follow. On a box with fewer CPUs than
  // lcores, lcores share CPUs (round robin) rather than failing to start.
  std::string lcores;
  for (unsigned lcore = 0; lcore <= options.dataplane_lcores; ++lcore) {
    if (!lcores.empty()) lcores += ",";
    lcores += fmt::format("{}@{}", lcore, lcore % std::max(1u, host.cpus));
  }
  args.push_back("--lcores=" + lcores);
  args.push_back("--no-pci");
  args.push_back("--no-telemetry");
  args.push_back("--file-prefix=" + options.file_prefix);
  args.push_back(fmt::format("--log-level={}", options.log_level));
  if (huge) {
    args.push_back(fmt::format("--socket-mem={}", memory_mb));
  } else {
    args.push_back("--no-huge");
    args.push_back(fmt::format("-m{}", memory_mb));
  }
  return args;
}

Result<std::unique_ptr<Eal>> Eal::Start(const EalOptions& options) {
  auto args = BuildEalArgs(options, ReadHostFacts());
  if (!args.ok()) return args.status();
  std::vector<char*> argv;
  for (std::string& a : *args) argv.push_back(a.data());
  // rte_eal_init permutes argv; it keeps pointers into our strings, which outlive the EAL.
  if (rte_eal_init(static_cast<int>(argv.size()), argv.data()) < 0) {
    return Status::Error(
        fmt::format("DPDK EAL failed to start: {} (arguments:{})", rte_strerror(rte_errno),
                    fmt::join(std::vector<std::string>(args->begin() + 1, args->end()), " ")));
  }
  const bool huge = std::find(args->begin(), args->end(), "--no-huge") == args->end();
  return std::unique_ptr<Eal>(new Eal(std::move(args).value(), huge));
}

Eal::~Eal() { rte_eal_cleanup(); }

std::vector<unsigned> Eal::WorkerLcores() const {
  std::vector<unsigned> out;
  unsigned lcore;
  RTE_LCORE_FOREACH_WORKER(lcore) { out.push_back(lcore); }
  return out;
}

}  // namespace qosvisor::dataplane
