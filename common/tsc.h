// Time on the data path: the TSC, read without a system call, and its frequency.
// Control-path code uses std::chrono; data-path code counts in TSC cycles.
#pragma once

#include <cstdint>

namespace qosvisor {

inline uint64_t ReadTsc() {
  uint32_t lo, hi;
  __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
  return (uint64_t{hi} << 32) | lo;
}

// Cycles per second, measured once against CLOCK_MONOTONIC (about 20 ms on first call).
uint64_t TscHz();

inline uint64_t NsToTsc(uint64_t ns, uint64_t hz) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(ns) * hz) / 1'000'000'000u);
}
inline uint64_t TscToNs(uint64_t cycles, uint64_t hz) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(cycles) * 1'000'000'000u) / hz);
}

}  // namespace qosvisor
