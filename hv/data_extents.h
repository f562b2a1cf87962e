// The parts of a file that may hold data, as a bitmap of fixed-size units: a hole reads back as
// zeros, so what copies a file (a migration, a snapshot) need not look at it.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <vector>

namespace qosvisor::hv {

// Sets the bit of every `unit`-byte unit of [0, end) of `fd` that SEEK_DATA finds data in
// (bit i of word i / 64 = unit i). `bitmap` must cover end / unit units, rounded up.
inline void MarkDataUnits(int fd, uint64_t end, uint64_t unit, std::vector<uint64_t>& bitmap) {
  auto pos = off_t{0};
  const auto limit = static_cast<off_t>(end);
  while (pos < limit) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0 || data >= limit) break;  // ENXIO: no data after pos
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0 || hole > limit) hole = limit;
    for (uint64_t u = static_cast<uint64_t>(data) / unit;
         u < (static_cast<uint64_t>(hole) + unit - 1) / unit; ++u) {
      bitmap[u / 64] |= 1ull << (u % 64);
    }
    pos = hole;
  }
}

}  // namespace qosvisor::hv
