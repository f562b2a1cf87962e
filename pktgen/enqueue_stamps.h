// Receive times taken when a frame is queued to its device, not when its receive softirq runs.
//
// qosgen's emulated bottleneck is fed at the kernel's receive time of each frame (the pcap
// driver on a veth). The kernel stamps a frame as it is queued (netif_rx: for a veth, inside the
// sender's own transmit call) only while some socket asks for receive timestamps; otherwise a
// packet socket stamps it when the receive softirq delivers it, which a busy CPU defers, by
// milliseconds when it hands the work to ksoftirqd: frames sent paced then arrive stamped in a
// clump, and the emulated link queues what the sender never sent at once. A packet socket never
// asks, so qosgen holds a socket that does for as long as it measures.
#pragma once

#include "common/status.h"

namespace qosvisor::pktgen {

class EnqueueStamps {
 public:
  // Asks the kernel to stamp frames on enqueue (a UDP socket with SO_TIMESTAMPNS, never bound);
  // an error says why it cannot, and whether net.core.netdev_tstamp_prequeue forbids it.
  static Result<EnqueueStamps> Enable();

  EnqueueStamps(EnqueueStamps&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  EnqueueStamps& operator=(EnqueueStamps&& other) noexcept;
  EnqueueStamps(const EnqueueStamps&) = delete;
  EnqueueStamps& operator=(const EnqueueStamps&) = delete;
  ~EnqueueStamps();

 private:
  explicit EnqueueStamps(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace qosvisor::pktgen
