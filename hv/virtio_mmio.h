// The virtio-mmio transport (version 2, "modern"): the register block a guest driver programs,
// shared by every virtio device here. Subclasses supply the device type, config space and queues.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "hv/bus.h"
#include "hv/guest_memory.h"
#include "hv/state_codec.h"
#include "hv/unique_fd.h"
#include "hv/virtqueue.h"

namespace qosvisor::hv {

struct VirtioCounters {
  uint64_t notifies = 0;           // queue notifications handled
  uint64_t interrupts = 0;         // used-buffer interrupts raised
  uint64_t config_interrupts = 0;  // config-change interrupts raised
  uint64_t suppressed = 0;         // interrupts skipped by EVENT_IDX / NO_INTERRUPT
  uint64_t bad_register = 0;       // unknown register, bad width, write to read-only
  uint64_t broken = 0;             // times the device had to mark itself broken
};

class VirtioMmioDevice : public Device {
 public:
  static constexpr uint64_t kRegionSize = 0x1000;
  static constexpr uint32_t kMagic = 0x74726976;   // "virt"
  static constexpr uint32_t kVendor = 0x52535651;  // "QVSR"
  static constexpr uint32_t kStatusAck = 1, kStatusDriver = 2, kStatusDriverOk = 4,
                            kStatusFeaturesOk = 8, kStatusNeedsReset = 0x40, kStatusFailed = 0x80;

  ~VirtioMmioDevice() override;

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // The eventfd that raises this device's interrupt; the VM binds it to a GSI with KVM_IRQFD.
  int irq_fd() const { return irq_fd_.get(); }
  // Where the VM mapped this device (for ioeventfds, the kernel cmdline and messages).
  void SetPlacement(uint64_t base, uint32_t gsi) {
    base_ = base;
    gsi_ = gsi;
  }
  uint64_t base() const { return base_; }
  uint32_t gsi() const { return gsi_; }

  // Device reset, as if the driver wrote 0 to Status (the VM does this at start and stop, so a
  // stopped VM's queues are never serviced).
  void Reset();

  uint32_t status() const { return status_.load(std::memory_order_acquire); }
  bool driver_ok() const;
  bool is_broken() const { return broken_.load(std::memory_order_acquire); }
  std::string broken_reason() const;
  VirtioCounters counters() const;

  // Transport registers, every queue and the device's own state (SaveDeviceState). Taken while
  // the VM is paused and the data plane no longer touches the device.
  std::vector<uint8_t> SaveState() const;
  // Loads SaveState's bytes into a device of the same type and queue count, re-activating its
  // queues; `what` names the device in errors. On error the device is reset.
  Status LoadState(std::span<const uint8_t> state, const std::string& what);
  // Tells the driver its config space changed (a fork child's new MAC).
  void NotifyConfigChanged();
  // While quiesced the device neither reads nor writes guest memory (the data plane's calls
  // return at once): a paused VM's memory and rings then stay exactly as a snapshot saves them.
  // Returns once no device work is in progress.
  void SetQuiesced(bool quiesced);

 protected:
  VirtioMmioDevice(GuestMemory& mem, uint32_t device_id, uint16_t num_queues,
                   uint64_t device_features);

  // Device-specific config space (offset 0x100 on). Called with mu_ held.
  virtual void ReadConfig(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void WriteConfig(uint64_t /*offset*/, std::span<const uint8_t> /*data*/) {}
  // A guest notification for queue `q` (mu_ held, queues active).
  virtual void OnNotify(uint16_t q) = 0;
  // DRIVER_OK was set and every ready queue activated (mu_ held).
  virtual void OnActivate() {}
  // The driver reset the device (mu_ held).
  virtual void OnReset() {}
  // Device-specific state for snapshots (mu_ held). Load may refuse with r.Invalid().
  virtual void SaveDeviceState(StateWriter& /*w*/) const {}
  virtual void LoadDeviceState(StateReader& /*r*/) {}

  // Marks the device broken (DEVICE_NEEDS_RESET): it stops processing until the driver resets
  // it. Hostile input never crashes the host; it ends here. mu_ held.
  void MarkBroken(const std::string& why);
  void RaiseUsedInterrupt();    // raises the interrupt for used buffers
  void RaiseConfigInterrupt();  // bumps config generation and raises a config-change interrupt
  // Raises a used-buffer interrupt if the queue's suppression rules ask for one.
  void MaybeInterrupt(Virtqueue& q);
  uint64_t negotiated_features() const { return driver_features_; }
  bool quiesced_locked() const { return quiesced_; }  // mu_ held

  GuestMemory& mem_;
  mutable std::mutex mu_;  // register state and queues; device work runs under it
  std::vector<Virtqueue> queues_;
  VirtioCounters counters_;  // guarded by mu_ (copied out under it)

 private:
  void ResetLocked();
  void WriteStatusLocked(uint32_t value);
  bool Is32(uint64_t offset, size_t size);

  uint32_t device_id_;
  uint64_t device_features_;
  uint64_t driver_features_ = 0;
  uint32_t device_features_sel_ = 0;
  uint32_t driver_features_sel_ = 0;
  uint32_t queue_sel_ = 0;
  std::atomic<uint32_t> status_{0};
  std::atomic<uint32_t> interrupt_status_{0};
  uint32_t config_generation_ = 0;
  bool quiesced_ = false;  // guarded by mu_
  std::atomic<bool> broken_{false};
  std::string broken_reason_;
  UniqueFd irq_fd_;
  uint64_t base_ = 0;
  uint32_t gsi_ = 0;
};

}  // namespace qosvisor::hv
