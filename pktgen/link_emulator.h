// Receive-side bottleneck emulation: arriving frames wait in a byte-limited FIFO drained at a
// link rate (tail drop when full), so a switch that does not schedule builds its queue here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "pktgen/frame.h"

namespace qosvisor::pktgen {

class LinkEmulator {
 public:
  // `rate_bps` counts wire bytes (frame + 24 bytes of preamble, IFG and FCS), as the generator
  // does; `buffer_bytes` limits the frame bytes waiting (not yet departed) in the FIFO.
  LinkEmulator(uint64_t rate_bps, uint64_t buffer_bytes, uint64_t tsc_hz);

  // A frame arriving at `now` (its probe: the rest of the frame is not needed to measure it):
  // queued (true) or tail-dropped because the FIFO is full (false). Departure times are computed
  // here, so late polls do not bend the drain rate. Call Drain(now) first: frames departed but not
  // drained still take room.
  bool Offer(const Probe& probe, uint32_t length, uint64_t now);

  // Calls `out(probe, length, depart_tsc)` for every frame whose departure time is <= now, in
  // order.
  template <typename Out>
  void Drain(uint64_t now, Out&& out) {
    while (count_ != 0 && slots_[head_].depart_tsc <= now) {
      const Slot s = slots_[head_];
      head_ = (head_ + 1) % slots_.size();
      --count_;
      queued_bytes_ -= s.length;
      out(s.probe, s.length, s.depart_tsc);
    }
  }
  // Hands every queued frame to `out` regardless of time (at the end of a run), in order.
  template <typename Out>
  void Flush(Out&& out) {
    Drain(UINT64_MAX, out);
  }

  uint64_t queued_bytes() const { return queued_bytes_; }
  uint64_t queued_frames() const { return count_; }
  uint64_t dropped_frames() const { return dropped_frames_; }
  uint64_t dropped_bytes() const { return dropped_bytes_; }
  uint64_t max_queued_bytes() const { return max_queued_bytes_; }

 private:
  struct Slot {
    Probe probe;
    uint32_t length;
    uint64_t depart_tsc;
  };
  uint64_t rate_bps_;
  uint64_t buffer_bytes_;
  uint64_t hz_;
  std::vector<Slot> slots_;  // circular; sized for the buffer full of minimum frames
  size_t head_ = 0;
  size_t count_ = 0;
  uint64_t queued_bytes_ = 0;
  uint64_t last_depart_ = 0;
  double depart_frac_ = 0;  // sub-cycle remainder of departures, so the rate is exact
  uint64_t dropped_frames_ = 0, dropped_bytes_ = 0, max_queued_bytes_ = 0;
};

}  // namespace qosvisor::pktgen
