// virtio-mmio v2 register handling: feature negotiation, queue programming, status, interrupts.
// Unknown registers and wrong access widths are counted and ignored, never trusted.
#include "hv/virtio_mmio.h"

#include <fmt/format.h>
#include <sys/eventfd.h>

#include <cstring>

namespace qosvisor::hv {
namespace {

enum Reg : uint64_t {
  kMagicValue = 0x000,
  kVersion = 0x004,
  kDeviceId = 0x008,
  kVendorId = 0x00c,
  kDeviceFeatures = 0x010,
  kDeviceFeaturesSel = 0x014,
  kDriverFeatures = 0x020,
  kDriverFeaturesSel = 0x024,
  kQueueSel = 0x030,
  kQueueNumMax = 0x034,
  kQueueNum = 0x038,
  kQueueReady = 0x044,
  kQueueNotify = 0x050,
  kInterruptStatus = 0x060,
  kInterruptAck = 0x064,
  kStatus = 0x070,
  kQueueDescLow = 0x080,
  kQueueDescHigh = 0x084,
  kQueueDriverLow = 0x090,
  kQueueDriverHigh = 0x094,
  kQueueDeviceLow = 0x0a0,
  kQueueDeviceHigh = 0x0a4,
  kConfigGeneration = 0x0fc,
  kConfig = 0x100,
};

void SetLow(uint64_t& v, uint32_t low) { v = (v & ~0xffffffffull) | low; }
void SetHigh(uint64_t& v, uint32_t high) { v = (v & 0xffffffffull) | (uint64_t{high} << 32); }

}  // namespace

VirtioMmioDevice::VirtioMmioDevice(GuestMemory& mem, uint32_t device_id, uint16_t num_queues,
                                   uint64_t device_features)
    : mem_(mem),
      queues_(num_queues),
      device_id_(device_id),
      device_features_(device_features | kVirtioFeatureVersion1),
      irq_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

VirtioMmioDevice::~VirtioMmioDevice() = default;

bool VirtioMmioDevice::driver_ok() const {
  uint32_t s = status();
  return (s & kStatusDriverOk) != 0 && (s & (kStatusNeedsReset | kStatusFailed)) == 0 &&
         !is_broken();
}

std::string VirtioMmioDevice::broken_reason() const {
  std::lock_guard lock(mu_);
  return broken_reason_;
}

VirtioCounters VirtioMmioDevice::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

bool VirtioMmioDevice::Is32(uint64_t offset, size_t size) {
  if (size == 4 && offset % 4 == 0) return true;
  ++counters_.bad_register;
  return false;
}

void VirtioMmioDevice::Read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  if (offset >= kConfig) {
    ReadConfig(offset - kConfig, data);
    return;
  }
  if (!Is32(offset, data.size())) return;  // the bus pre-filled all ones
  uint32_t v = 0;
  Virtqueue* q = queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr;
  switch (offset) {
    case kMagicValue:
      v = kMagic;
      break;
    case kVersion:
      v = 2;
      break;
    case kDeviceId:
      v = device_id_;
      break;
    case kVendorId:
      v = kVendor;
      break;
    case kDeviceFeatures:
      v = device_features_sel_ == 0   ? static_cast<uint32_t>(device_features_)
          : device_features_sel_ == 1 ? static_cast<uint32_t>(device_features_ >> 32)
                                      : 0;
      break;
    case kQueueNumMax:
      v = q != nullptr ? Virtqueue::kMaxSize : 0;
      break;
    case kQueueReady:
      v = q != nullptr && q->ready ? 1 : 0;
      break;
    case kInterruptStatus:
      v = interrupt_status_.load();
      break;
    case kStatus:
      v = status_.load();
      break;
    case kConfigGeneration:
      v = config_generation_;
      break;
    default:
      ++counters_.bad_register;
      return;
  }
  std::memcpy(data.data(), &v, 4);
}

void VirtioMmioDevice::Write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  if (offset >= kConfig) {
    WriteConfig(offset - kConfig, data);
    return;
  }
  if (!Is32(offset, data.size())) return;
  uint32_t v;
  std::memcpy(&v, data.data(), 4);
  Virtqueue* q = queue_sel_ < queues_.size() ? &queues_[queue_sel_] : nullptr;
  // Queue registers may only change while the queue is not live.
  bool queue_writable = q != nullptr && !q->ready && !(status_.load() & kStatusDriverOk);
  switch (offset) {
    case kDeviceFeaturesSel:
      device_features_sel_ = v;
      return;
    case kDriverFeaturesSel:
      driver_features_sel_ = v;
      return;
    case kDriverFeatures:
      if (status_.load() & kStatusFeaturesOk) break;  // too late to change
      if (driver_features_sel_ == 0)
        SetLow(driver_features_, v);
      else if (driver_features_sel_ == 1)
        SetHigh(driver_features_, v);
      return;
    case kQueueSel:
      queue_sel_ = v;
      return;
    case kQueueNum:
      if (!queue_writable) break;
      q->size = static_cast<uint16_t>(std::min<uint32_t>(v, 0xffff));
      return;
    case kQueueDescLow:
      if (queue_writable) {
        SetLow(q->desc_gpa, v);
        return;
      }
      break;
    case kQueueDescHigh:
      if (queue_writable) {
        SetHigh(q->desc_gpa, v);
        return;
      }
      break;
    case kQueueDriverLow:
      if (queue_writable) {
        SetLow(q->avail_gpa, v);
        return;
      }
      break;
    case kQueueDriverHigh:
      if (queue_writable) {
        SetHigh(q->avail_gpa, v);
        return;
      }
      break;
    case kQueueDeviceLow:
      if (queue_writable) {
        SetLow(q->used_gpa, v);
        return;
      }
      break;
    case kQueueDeviceHigh:
      if (queue_writable) {
        SetHigh(q->used_gpa, v);
        return;
      }
      break;
    case kQueueReady:
      if (q == nullptr) break;
      if (v == 1 && !q->ready) {
        if (!q->Activate(&mem_, (driver_features_ & kVirtioFeatureEventIdx) != 0)) {
          MarkBroken(fmt::format("queue {}: {}", queue_sel_, q->why()));
          return;
        }
        q->ready = true;
      } else if (v == 0) {
        q->Reset();
      }
      return;
    case kQueueNotify:
      ++counters_.notifies;
      if (v >= queues_.size()) break;
      if (driver_ok() && queues_[v].ready) OnNotify(static_cast<uint16_t>(v));
      return;
    case kInterruptAck:
      interrupt_status_.fetch_and(~v);
      return;
    case kStatus:
      WriteStatusLocked(v);
      return;
    default:
      break;
  }
  ++counters_.bad_register;
}

void VirtioMmioDevice::WriteStatusLocked(uint32_t v) {
  if (v == 0) {
    ResetLocked();
    return;
  }
  uint32_t old = status_.load();
  if (v & kStatusFeaturesOk && !(old & kStatusFeaturesOk)) {
    // Refuse features we did not offer, and legacy drivers (VERSION_1 is mandatory here).
    if ((driver_features_ & ~device_features_) != 0 ||
        !(driver_features_ & kVirtioFeatureVersion1)) {
      v &= ~kStatusFeaturesOk;
    }
  }
  status_.store(v | (old & kStatusNeedsReset), std::memory_order_release);
  if ((v & kStatusDriverOk) && !(old & kStatusDriverOk) && !is_broken()) OnActivate();
}

std::vector<uint8_t> VirtioMmioDevice::SaveState() const {
  std::lock_guard lock(mu_);
  StateWriter w;
  w.Put(device_id_);
  w.Put<uint32_t>(static_cast<uint32_t>(queues_.size()));
  w.Put(driver_features_);
  w.Put(device_features_sel_);
  w.Put(driver_features_sel_);
  w.Put(queue_sel_);
  w.Put(status_.load());
  w.Put(interrupt_status_.load());
  w.Put(config_generation_);
  w.Put<uint8_t>(broken_.load() ? 1 : 0);
  w.PutString(broken_reason_);
  for (const auto& q : queues_) q.SaveState(w);
  SaveDeviceState(w);
  return w.Take();
}

Status VirtioMmioDevice::LoadState(std::span<const uint8_t> state, const std::string& what) {
  std::lock_guard lock(mu_);
  StateReader r(state, what);
  uint32_t device_id = 0, queue_count = 0, status = 0, interrupt_status = 0;
  uint8_t broken = 0;
  r.Get(&device_id, "device_id");
  r.Get(&queue_count, "queue_count");
  if (r.ok() && (device_id != device_id_ || queue_count != queues_.size())) {
    r.Invalid("device_id", fmt::format("saved virtio device type {} with {} queues, this VM's "
                                       "device is type {} with {}",
                                       device_id, queue_count, device_id_, queues_.size()));
  }
  r.Get(&driver_features_, "driver_features");
  r.Get(&device_features_sel_, "device_features_sel");
  r.Get(&driver_features_sel_, "driver_features_sel");
  r.Get(&queue_sel_, "queue_sel");
  r.Get(&status, "status");
  r.Get(&interrupt_status, "interrupt_status");
  r.Get(&config_generation_, "config_generation");
  r.Get(&broken, "broken");
  r.GetString(&broken_reason_, "broken_reason", 4096);
  if (r.ok() && (driver_features_ & ~device_features_) != 0) {
    r.Invalid("driver_features", "features this device does not offer");
  }
  for (auto& q : queues_) {
    if (!q.LoadState(r, &mem_)) break;
  }
  if (r.ok()) LoadDeviceState(r);
  if (!r.Finish()) {
    ResetLocked();
    return Status::Error(r.error());
  }
  status_.store(status, std::memory_order_release);
  interrupt_status_.store(interrupt_status);
  broken_.store(broken != 0, std::memory_order_release);
  return Status::Ok();
}

void VirtioMmioDevice::SetQuiesced(bool quiesced) {
  std::lock_guard lock(mu_);  // waits for device work under way
  quiesced_ = quiesced;
}

void VirtioMmioDevice::NotifyConfigChanged() {
  std::lock_guard lock(mu_);
  RaiseConfigInterrupt();
}

void VirtioMmioDevice::Reset() {
  std::lock_guard lock(mu_);
  ResetLocked();
}

void VirtioMmioDevice::ResetLocked() {
  OnReset();
  for (auto& q : queues_) q.Reset();
  driver_features_ = 0;
  device_features_sel_ = driver_features_sel_ = queue_sel_ = 0;
  interrupt_status_.store(0);
  broken_.store(false, std::memory_order_release);
  broken_reason_.clear();
  status_.store(0, std::memory_order_release);
}

void VirtioMmioDevice::MarkBroken(const std::string& why) {
  if (!broken_.load()) {
    ++counters_.broken;
    broken_reason_ = why;
  }
  broken_.store(true, std::memory_order_release);
  status_.fetch_or(kStatusNeedsReset, std::memory_order_acq_rel);
  RaiseConfigInterrupt();  // the spec's way to tell the driver about NEEDS_RESET
}

void VirtioMmioDevice::RaiseUsedInterrupt() {
  interrupt_status_.fetch_or(1);
  ++counters_.interrupts;
  uint64_t one = 1;
  if (::write(irq_fd_.get(), &one, 8) != 8) {
    // Counter overflow only; the line is already pending.
  }
}

void VirtioMmioDevice::RaiseConfigInterrupt() {
  ++config_generation_;
  interrupt_status_.fetch_or(2);
  ++counters_.config_interrupts;
  uint64_t one = 1;
  if (::write(irq_fd_.get(), &one, 8) != 8) {
    // As above.
  }
}

void VirtioMmioDevice::MaybeInterrupt(Virtqueue& q) {
  if (!q.has_unsignalled()) return;
  if (q.ShouldInterrupt()) {
    RaiseUsedInterrupt();
  } else {
    ++counters_.suppressed;
  }
}

}  // namespace qosvisor::hv
