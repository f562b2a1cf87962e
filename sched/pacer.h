// The uplink pacer: a TSC token bucket that lets the scheduler send at most its configured rate,
// so queues build in our rank queues and not in a NIC FIFO downstream.
#pragma once

#include <cstdint>

namespace qosvisor::sched {

class Pacer {
 public:
  Pacer() = default;
  // rate_bps = 0 disables pacing. Credit is kept in bit-cycles (bits x TSC Hz) so that neither
  // refill nor cost needs a division and the long-run rate is exact.
  Pacer(uint64_t rate_bps, uint64_t tsc_hz, uint32_t burst_bytes)
      : rate_bps_(rate_bps),
        hz_(tsc_hz),
        max_credit_(static_cast<int64_t>(uint64_t{burst_bytes} * 8 * tsc_hz)),
        max_elapsed_(rate_bps == 0 ? 0 : static_cast<uint64_t>(max_credit_) / rate_bps + 1) {}

  bool enabled() const { return rate_bps_ != 0; }

  void Refill(uint64_t now_tsc) {
    if (rate_bps_ == 0) return;
    if (!started_) {
      started_ = true;
      last_tsc_ = now_tsc;
      credit_ = max_credit_;
      return;
    }
    if (now_tsc <= last_tsc_) return;
    uint64_t elapsed = now_tsc - last_tsc_;
    last_tsc_ = now_tsc;
    if (elapsed >= max_elapsed_) {
      credit_ = max_credit_;
      return;
    }
    credit_ += static_cast<int64_t>(elapsed * rate_bps_);
    if (credit_ > max_credit_) credit_ = max_credit_;
  }

  // A packet may go while any credit is left; its cost may push the credit below zero, which the
  // next refills pay back, so the average rate is exact whatever the packet sizes.
  bool CanSend() const { return rate_bps_ == 0 || credit_ > 0; }
  void Consume(uint32_t wire_bytes) {
    if (rate_bps_ != 0) credit_ -= static_cast<int64_t>(uint64_t{wire_bytes} * 8 * hz_);
  }

  // A reload's new pacer goes on from `before`'s: its debt, or its credit up to this bucket's
  // depth, and its clock, so that a new tree neither sends a fresh burst at once nor loses the
  // time since the last refill. (Credit is in bit-cycles, whatever the rate.)
  void ContinueFrom(const Pacer& before) {
    if (rate_bps_ == 0 || before.rate_bps_ == 0 || !before.started_ || before.hz_ != hz_) return;
    started_ = true;
    last_tsc_ = before.last_tsc_;
    credit_ = before.credit_ < max_credit_ ? before.credit_ : max_credit_;
  }

  // The earliest TSC time at which CanSend() becomes true (now when it already is).
  uint64_t NextSendTsc() const {
    if (CanSend()) return last_tsc_;
    return last_tsc_ + static_cast<uint64_t>(-credit_) / rate_bps_ + 1;
  }

 private:
  uint64_t rate_bps_ = 0;
  uint64_t hz_ = 0;
  int64_t max_credit_ = 0;
  uint64_t max_elapsed_ = 0;
  int64_t credit_ = 0;
  uint64_t last_tsc_ = 0;
  bool started_ = false;
};

}  // namespace qosvisor::sched
