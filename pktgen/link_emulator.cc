// The emulated bottleneck's FIFO: departure times on a virtual schedule, tail drop on overflow.
#include "pktgen/link_emulator.h"

#include <algorithm>

namespace qosvisor::pktgen {

namespace {
constexpr uint32_t kWireOverhead = 24;  // preamble + IFG + FCS, as the generator counts
constexpr uint32_t kMinFrame = 60;
}  // namespace

LinkEmulator::LinkEmulator(uint64_t rate_bps, uint64_t buffer_bytes, uint64_t tsc_hz)
    : rate_bps_(std::max<uint64_t>(rate_bps, 1)),
      buffer_bytes_(buffer_bytes),
      hz_(tsc_hz),
      slots_(buffer_bytes / kMinFrame + 2) {}

bool LinkEmulator::Offer(const Probe& probe, uint32_t length, uint64_t now) {
  if (queued_bytes_ + length > buffer_bytes_ || count_ == slots_.size()) {
    ++dropped_frames_;
    dropped_bytes_ += length;
    return false;
  }
  // The link is busy until the previous frame has left; an idle link starts sending now.
  if (count_ == 0 && last_depart_ < now) {
    last_depart_ = now;
    depart_frac_ = 0;
  }
  const double cycles = static_cast<double>(length + kWireOverhead) * 8 * static_cast<double>(hz_) /
                            static_cast<double>(rate_bps_) +
                        depart_frac_;
  const auto whole = static_cast<uint64_t>(cycles);
  depart_frac_ = cycles - static_cast<double>(whole);
  last_depart_ += whole;
  slots_[(head_ + count_) % slots_.size()] = Slot{probe, length, last_depart_};
  ++count_;
  queued_bytes_ += length;
  max_queued_bytes_ = std::max(max_queued_bytes_, queued_bytes_);
  return true;
}

}  // namespace qosvisor::pktgen
