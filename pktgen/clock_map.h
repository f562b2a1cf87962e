// Kernel receive stamps (CLOCK_REALTIME) on the TSC, the clock every other time in qosgen is on.
// One pair of readings taken at start would do only if the TSC rate were exact: it is calibrated
// over 20 ms (a few ppm off), and the kernel slews CLOCK_REALTIME. A run of 15 s then drifts by
// tens of microseconds, more than a one-packet message takes. So the pair is taken again every
// millisecond, and a stamp is converted across its own age (a few milliseconds) only.
#pragma once

#include <cstdint>

namespace qosvisor::pktgen {

class RealtimeToTsc {
 public:
  struct Pair {
    uint64_t tsc;
    uint64_t realtime_ns;
  };
  explicit RealtimeToTsc(uint64_t tsc_hz) : tsc_hz_(tsc_hz) {}

  // Readings of both clocks, taken back to back.
  void Anchor(Pair pair) { anchor_ = pair; }
  bool Stale(uint64_t tsc_now) const { return tsc_now - anchor_.tsc >= ReanchorTsc(); }
  uint64_t ToTsc(uint64_t realtime_ns) const {
    const __int128 delta_ns =
        static_cast<__int128>(realtime_ns) - static_cast<__int128>(anchor_.realtime_ns);
    const __int128 delta_tsc = delta_ns * tsc_hz_ / 1'000'000'000;
    return static_cast<uint64_t>(static_cast<__int128>(anchor_.tsc) + delta_tsc);
  }
  // Reads both clocks now; false (and no new anchor) when something came between the two reads.
  bool AnchorNow();

 private:
  uint64_t ReanchorTsc() const { return tsc_hz_ / 1000; }
  uint64_t tsc_hz_;
  Pair anchor_{0, 0};
};

}  // namespace qosvisor::pktgen
