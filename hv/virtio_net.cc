// virtio-net queue servicing for the data plane (virtio 1.x §5.1). The lcore never blocks: it
// try-locks the device and skips a poll if a vCPU is reprogramming registers at that moment.
#include "hv/virtio_net.h"

#include <rte_mbuf.h>
#include <sys/eventfd.h>

#include <cstring>
#include <mutex>

namespace qosvisor::hv {
namespace {

constexpr uint64_t kFeatureMac = 1ull << 5;
constexpr uint64_t kFeatureStatus = 1ull << 16;
constexpr uint16_t kLinkUp = 1;
constexpr uint32_t kMinFrame = 14;

}  // namespace

VirtioNet::VirtioNet(GuestMemory& mem, const VirtioNetOptions& options)
    : VirtioMmioDevice(mem, kDeviceId, 2, kFeatureMac | kFeatureStatus | kVirtioFeatureEventIdx),
      options_(options) {
  for (auto& fd : notify_fds_) fd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

bool VirtioNet::Ready() const {
  if (!driver_ok()) return false;
  std::unique_lock lock(mu_, std::try_to_lock);
  return lock.owns_lock() && queues_[kRxQueue].active() && queues_[kTxQueue].active();
}

VirtioNetCounters VirtioNet::net_counters() const {
  std::lock_guard lock(mu_);
  VirtioNetCounters c = net_;
  c.busy = busy_.load(std::memory_order_relaxed);
  return c;
}

void VirtioNet::SaveDeviceState(StateWriter& w) const { w.Put(options_.mac); }

void VirtioNet::LoadDeviceState(StateReader& r) {
  std::array<uint8_t, 6> saved{};
  if (r.Get(&saved, "mac") && saved != options_.mac) RaiseConfigInterrupt();
}

void VirtioNet::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  // virtio_net_config: mac[6], status, max_virtqueue_pairs.
  uint8_t config[10] = {};
  std::memcpy(config, options_.mac.data(), 6);
  uint16_t status = kLinkUp, pairs = 1;
  std::memcpy(config + 6, &status, 2);
  std::memcpy(config + 8, &pairs, 2);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < sizeof(config) ? config[offset + i] : 0;
  }
}

void VirtioNet::OnNotify(uint16_t /*q*/) {
  // Kicks normally go to the ioeventfds; one that reaches us (no KVM, or before the VM bound
  // them) needs nothing either: the lcore polls the rings.
}

uint16_t VirtioNet::FromGuest(rte_mbuf** pkts, uint16_t max, rte_mempool* pool) {
  if (!driver_ok()) return 0;
  std::unique_lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) {
    busy_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  if (quiesced_locked()) return 0;  // the VM is paused: its memory must not change
  Virtqueue& q = queues_[kTxQueue];
  if (!q.active()) return 0;
  uint16_t n = 0;
  Virtqueue::Chain chain;
  while (n < max && q.Pending() > 0) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool);
    if (m == nullptr) {
      ++net_.no_mbuf;
      break;
    }
    auto r = q.Pop(&chain);
    if (r != Virtqueue::PopResult::kChain) {
      rte_pktmbuf_free(m);
      if (r == Virtqueue::PopResult::kBroken) MarkBroken(q.why());
      break;
    }
    uint64_t frame = chain.readable_bytes >= kHeaderBytes ? chain.readable_bytes - kHeaderBytes : 0;
    uint64_t room = rte_pktmbuf_tailroom(m);
    if (frame < kMinFrame || frame > kMaxFrame || frame > room) {
      ++net_.from_guest_bad;
      rte_pktmbuf_free(m);
      q.PushUsed(chain.head, 0);
      continue;
    }
    // SAFETY: char* to bytes of the same mbuf area; append reserved `frame` bytes (null checked).
    auto* dst = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, static_cast<uint16_t>(frame)));
    if (dst == nullptr || CopyFromChain(mem_, chain, kHeaderBytes, dst, frame) != frame) {
      ++net_.from_guest_bad;
      rte_pktmbuf_free(m);
      q.PushUsed(chain.head, 0);
      continue;
    }
    q.PushUsed(chain.head, 0);
    net_.from_guest_packets++;
    net_.from_guest_bytes += frame;
    pkts[n++] = m;
  }
  q.PublishAvailEvent();
  MaybeInterrupt(q);
  return n;
}

uint16_t VirtioNet::ToGuest(rte_mbuf* const* pkts, uint16_t count) {
  if (!driver_ok()) return 0;
  std::unique_lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) {
    busy_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  if (quiesced_locked()) return 0;  // the VM is paused: its memory must not change
  Virtqueue& q = queues_[kRxQueue];
  if (!q.active()) return 0;
  uint16_t taken = 0;
  Virtqueue::Chain chain;
  uint8_t copy[kMaxFrame];
  for (; taken < count; ++taken) {
    rte_mbuf* m = pkts[taken];
    const uint32_t len = rte_pktmbuf_pkt_len(m);
    if (len > kMaxFrame) {
      ++net_.to_guest_too_big;  // taken and dropped: the caller frees it
      continue;
    }
    auto r = q.Pop(&chain);
    if (r == Virtqueue::PopResult::kEmpty) {
      net_.to_guest_no_buffer += count - taken;
      break;
    }
    if (r == Virtqueue::PopResult::kBroken) {
      MarkBroken(q.why());
      break;
    }
    if (chain.writable_bytes < kHeaderBytes + len) {
      ++net_.to_guest_too_big;
      q.PushUsed(chain.head, 0);
      continue;
    }
    // virtio_net_hdr_v1: no offloads, one buffer per packet.
    uint8_t header[kHeaderBytes] = {};
    header[10] = 1;  // num_buffers
    const void* data = rte_pktmbuf_read(m, 0, len, copy);
    CopyToChain(mem_, chain, 0, header, kHeaderBytes);
    CopyToChain(mem_, chain, kHeaderBytes, data, len);
    q.PushUsed(chain.head, kHeaderBytes + len);
    net_.to_guest_packets++;
    net_.to_guest_bytes += len;
  }
  q.PublishAvailEvent();
  MaybeInterrupt(q);
  return taken;
}

}  // namespace qosvisor::hv
