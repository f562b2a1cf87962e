// qosgen's workload file (YAML) → plain structs: classes and tenants, message sizes, arrival
// processes, framing, addresses. Errors carry file:line:col; the app maps the result to pktgen.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/size_distribution.h"
#include "config/config.h"
#include "config/diagnostic.h"

namespace qosvisor::config {

enum class WorkloadFraming { kUdp, kHoma, kTcp };
enum class WorkloadArrival { kPoisson, kConstant, kOnOff };

struct WorkloadClass {
  std::string name;
  std::string size_name;  // as written: "W4", "fixed 1000B", "uniform 64B-2KB", "cdf FILE"
  SizeDistribution sizes = SizeDistribution::Fixed(1000);
  double share = 1.0;
  WorkloadFraming framing = WorkloadFraming::kUdp;
  uint16_t dst_port = 5000;
  uint16_t tenant = 0;
  uint16_t sender = 0;
  WorkloadArrival arrival = WorkloadArrival::kPoisson;
  uint64_t on_ns = 0;
  uint64_t off_ns = 0;
  int vlan = -1;
  std::optional<MacAddress> dst_mac;
  std::optional<uint32_t> dst_ip;  // host order
};

struct Workload {
  uint64_t rate_bps = 1'000'000'000;  // the bottleneck: load is a fraction of it
  double load = 0.9;
  uint64_t sender_rate_bps = 10'000'000'000;
  uint32_t mss = 1400;
  uint64_t seed = 1;
  std::optional<uint64_t> duration_ns;
  std::optional<MacAddress> dst_mac;
  std::optional<uint32_t> dst_ip;
  std::vector<std::string> tenants;  // names; a class's tenant is an index into this list
  std::vector<WorkloadClass> classes;
};

struct WorkloadLoadResult {
  std::optional<Workload> workload;  // set only when there are no errors
  std::vector<Diagnostic> errors;
  bool ok() const { return workload.has_value() && errors.empty(); }
  std::string ErrorText() const;  // one "file:line:col: path: message" per line
};

// Parses and validates, reporting every error at once; never throws. `file_name` appears in
// messages and its directory is the base of relative `cdf:` paths.
WorkloadLoadResult LoadWorkloadFromString(std::string_view text, std::string_view file_name);
WorkloadLoadResult LoadWorkloadFromFile(const std::string& path);

}  // namespace qosvisor::config
