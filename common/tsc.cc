// TSC frequency calibration against CLOCK_MONOTONIC; done once per process.
#include "common/tsc.h"

#include <time.h>

namespace qosvisor {
namespace {

uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t Calibrate() {
  const uint64_t ns0 = MonotonicNs();
  const uint64_t c0 = ReadTsc();
  const timespec sleep_for{0, 20'000'000};
  nanosleep(&sleep_for, nullptr);
  const uint64_t ns1 = MonotonicNs();
  const uint64_t c1 = ReadTsc();
  return static_cast<uint64_t>((static_cast<unsigned __int128>(c1 - c0) * 1'000'000'000u) /
                               (ns1 - ns0));
}

}  // namespace

uint64_t TscHz() {
  static const uint64_t hz = Calibrate();
  return hz;
}

}  // namespace qosvisor
