#include "pktgen/clock_map.h"

#include <time.h>

#include "common/tsc.h"

namespace qosvisor::pktgen {

bool RealtimeToTsc::AnchorNow() {
  const uint64_t before = ReadTsc();
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  const uint64_t after = ReadTsc();
  // An interrupt or preemption between the reads would pair times microseconds apart.
  if (after - before > tsc_hz_ / 500'000) return false;  // 2 us
  anchor_ = {before + (after - before) / 2,
             static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec)};
  return true;
}

}  // namespace qosvisor::pktgen
