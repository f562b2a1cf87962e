// virtio-net whose backend is a switch port of driver `vm`: the port's data-plane lcore calls
// FromGuest/ToGuest, copying frames between mbufs and the guest's rings (never sharing mbufs).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "dataplane/port.h"
#include "hv/unique_fd.h"
#include "hv/virtio_mmio.h"
#include "hv/vm_options.h"

namespace qosvisor::hv {

struct VirtioNetCounters {
  uint64_t to_guest_packets = 0, to_guest_bytes = 0;
  uint64_t from_guest_packets = 0, from_guest_bytes = 0;
  uint64_t to_guest_no_buffer = 0;  // ToGuest found no receive buffer posted
  uint64_t to_guest_too_big = 0;    // frame larger than the posted buffer: dropped
  uint64_t from_guest_bad = 0;      // runt or oversized transmit: dropped, buffer returned
  uint64_t no_mbuf = 0;             // the pool was empty
  uint64_t busy = 0;                // the control path held the device; try again next poll
};

class VirtioNet : public VirtioMmioDevice, public dataplane::VmNetBackend {
 public:
  static constexpr uint32_t kDeviceId = 1;
  static constexpr uint16_t kRxQueue = 0, kTxQueue = 1;
  static constexpr uint32_t kHeaderBytes = 12;      // virtio_net_hdr_v1 (VERSION_1 always has it)
  static constexpr uint32_t kMaxFrame = 9216 + 18;  // jumbo frame with Ethernet header and VLAN

  VirtioNet(GuestMemory& mem, const VirtioNetOptions& options);
  const char* name() const override { return "virtio-net"; }

  uint16_t FromGuest(rte_mbuf** pkts, uint16_t max, rte_mempool* pool) override;
  uint16_t ToGuest(rte_mbuf* const* pkts, uint16_t count) override;
  bool Ready() const override;

  // Eventfd KVM signals on a guest notify of queue q (KVM_IOEVENTFD): kicks cost no exit to
  // user space, since the lcore polls the rings anyway.
  int notify_fd(uint16_t q) const { return notify_fds_[q].get(); }
  const std::array<uint8_t, 6>& mac() const { return options_.mac; }
  VirtioNetCounters net_counters() const;

 protected:
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void OnNotify(uint16_t q) override;
  // The MAC the guest last read. Loading into a device with another MAC (a fork child, a restore
  // under a new name) raises a config-change interrupt so the guest reads the new one.
  void SaveDeviceState(StateWriter& w) const override;
  void LoadDeviceState(StateReader& r) override;

 private:
  VirtioNetOptions options_;
  std::array<UniqueFd, 2> notify_fds_;
  VirtioNetCounters net_;          // guarded by mu_
  std::atomic<uint64_t> busy_{0};  // counted without mu_: that is when it happens
};

}  // namespace qosvisor::hv
