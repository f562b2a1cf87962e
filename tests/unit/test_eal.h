// One EAL per test process (rte_eal_init cannot run twice), without hugepages or PCI, with a
// per-process file prefix so test binaries can run in parallel.
#pragma once

#include <unistd.h>

#include <catch2/catch.hpp>
#include <memory>
#include <string>

#include "dataplane/eal.h"

namespace qosvisor::testing {

inline dataplane::Eal& TestEal() {
  static std::unique_ptr<dataplane::Eal> eal = [] {
    dataplane::EalOptions o;
    o.dataplane_lcores = 0;
    o.memory_bytes = 256ull << 20;
    o.hugepages = dataplane::Hugepages::kOff;
    o.file_prefix = "qv_test_" + std::to_string(getpid());
    o.log_level = "error";
    auto started = dataplane::Eal::Start(o);
    INFO(started.message());
    REQUIRE(started.ok());
    return std::move(started).value();
  }();
  return *eal;
}

}  // namespace qosvisor::testing
