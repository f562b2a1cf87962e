// Split-ring processing (virtio 1.x §2.7) with the hostile-guest checks: ring placement, index
// jumps, descriptor indexes, addresses, lengths, chain length (loops), write-before-read order.
#include "hv/virtqueue.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace qosvisor::hv {
namespace {

struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(Desc) == 16);

constexpr uint16_t kDescNext = 1, kDescWrite = 2, kDescIndirect = 4;
constexpr uint16_t kAvailNoInterrupt = 1;
// Caps one chain at 64 MiB in total: no virtio-blk or -net request here needs more.
constexpr uint64_t kMaxChainBytes = 64ull << 20;

}  // namespace

bool Virtqueue::Activate(GuestMemory* mem, bool event_idx) {
  if (size == 0 || size > kMaxSize || (size & (size - 1)) != 0) {
    return Fail(fmt::format("queue size {} is not a power of two in 1..{}", size, kMaxSize));
  }
  uint64_t desc_bytes = uint64_t{16} * size;
  uint64_t avail_bytes = 6 + uint64_t{2} * size;
  uint64_t used_bytes = 6 + uint64_t{8} * size;
  if (desc_gpa % 16 != 0 || avail_gpa % 2 != 0 || used_gpa % 4 != 0) {
    return Fail("misaligned ring address");
  }
  if (!mem->Contains(desc_gpa, desc_bytes) || !mem->Contains(avail_gpa, avail_bytes) ||
      !mem->Contains(used_gpa, used_bytes)) {
    return Fail(fmt::format("ring outside guest memory (desc {:#x}, avail {:#x}, used {:#x})",
                            desc_gpa, avail_gpa, used_gpa));
  }
  mem_ = mem;
  event_idx_ = event_idx;
  last_avail_ = 0;
  used_idx_ = 0;
  signalled_used_ = 0;
  return true;
}

void Virtqueue::SaveState(StateWriter& w) const {
  w.Put(size);
  w.Put(desc_gpa);
  w.Put(avail_gpa);
  w.Put(used_gpa);
  w.Put<uint8_t>(ready ? 1 : 0);
  w.Put<uint8_t>(active() ? 1 : 0);
  w.Put<uint8_t>(event_idx_ ? 1 : 0);
  w.Put(last_avail_);
  w.Put(used_idx_);
  w.Put(signalled_used_);
}

bool Virtqueue::LoadState(StateReader& r, GuestMemory* mem) {
  uint8_t was_ready = 0, was_active = 0, event_idx = 0;
  uint16_t last_avail = 0, used_idx = 0, signalled = 0;
  Reset();
  r.Get(&size, "queue size");
  r.Get(&desc_gpa, "queue desc");
  r.Get(&avail_gpa, "queue avail");
  r.Get(&used_gpa, "queue used");
  r.Get(&was_ready, "queue ready");
  r.Get(&was_active, "queue active");
  r.Get(&event_idx, "queue event_idx");
  r.Get(&last_avail, "queue last_avail");
  r.Get(&used_idx, "queue used_idx");
  if (!r.Get(&signalled, "queue signalled_used")) return false;
  ready = was_ready != 0;
  if (was_active != 0) {
    if (!Activate(mem, event_idx != 0)) return r.Invalid("queue", why_);
    last_avail_ = last_avail;
    used_idx_ = used_idx;
    signalled_used_ = signalled;
  }
  return true;
}

void Virtqueue::Reset() {
  mem_ = nullptr;
  size = 0;
  desc_gpa = avail_gpa = used_gpa = 0;
  ready = false;
  last_avail_ = used_idx_ = signalled_used_ = 0;
}

uint16_t Virtqueue::LoadAvailIdx() const {
  uint16_t idx = 0;
  (void)mem_->LoadAtomic<uint16_t>(avail_gpa + 2, &idx);  // bounds checked in Activate
  return idx;
}

uint16_t Virtqueue::Pending() const {
  if (mem_ == nullptr) return 0;
  return static_cast<uint16_t>(LoadAvailIdx() - last_avail_);
}

Virtqueue::PopResult Virtqueue::Pop(Chain* chain) {
  if (mem_ == nullptr) return PopResult::kEmpty;
  uint16_t avail_idx = LoadAvailIdx();
  uint16_t pending = static_cast<uint16_t>(avail_idx - last_avail_);
  if (pending == 0) return PopResult::kEmpty;
  if (pending > size) {
    Fail(fmt::format("avail index jumped by {} on a ring of {}", pending, size));
    return PopResult::kBroken;
  }
  uint16_t head = 0;
  (void)mem_->Read(avail_gpa + 4 + uint64_t{2} * (last_avail_ % size), &head, 2);
  if (head >= size) {
    Fail(fmt::format("head descriptor {} >= queue size {}", head, size));
    return PopResult::kBroken;
  }
  *chain = Chain{};
  chain->head = head;
  uint16_t index = head;
  for (int n = 0;; ++n) {
    if (n == kMaxChain || n == size) {
      Fail(fmt::format("descriptor chain longer than {} (or a loop) from head {}",
                       std::min<int>(kMaxChain, size), head));
      return PopResult::kBroken;
    }
    Desc d;
    (void)mem_->Read(desc_gpa + uint64_t{16} * index, &d, sizeof(d));
    if (d.flags & kDescIndirect) {
      Fail("indirect descriptor, a feature that was not offered");
      return PopResult::kBroken;
    }
    if (!mem_->Contains(d.addr, d.len)) {
      Fail(fmt::format("descriptor {} [{:#x}, +{:#x}) outside guest memory", index, d.addr, d.len));
      return PopResult::kBroken;
    }
    bool writable = (d.flags & kDescWrite) != 0;
    if (!writable && chain->writable > 0) {
      Fail(fmt::format("readable descriptor {} after a writable one", index));
      return PopResult::kBroken;
    }
    uint64_t& total = writable ? chain->writable_bytes : chain->readable_bytes;
    total += d.len;
    if (chain->readable_bytes + chain->writable_bytes > kMaxChainBytes) {
      Fail(fmt::format("descriptor chain of more than {} bytes", kMaxChainBytes));
      return PopResult::kBroken;
    }
    chain->bufs[chain->readable + chain->writable] = Buffer{d.addr, d.len};
    ++(writable ? chain->writable : chain->readable);
    if (!(d.flags & kDescNext)) break;
    if (d.next >= size) {
      Fail(fmt::format("descriptor {} links to {} >= queue size {}", index, d.next, size));
      return PopResult::kBroken;
    }
    index = d.next;
  }
  ++last_avail_;
  return PopResult::kChain;
}

void Virtqueue::PushUsed(uint16_t head, uint32_t written) {
  if (mem_ == nullptr) return;
  uint64_t elem = used_gpa + 4 + uint64_t{8} * (used_idx_ % size);
  uint32_t id = head;
  (void)mem_->Write(elem, &id, 4);
  (void)mem_->Write(elem + 4, &written, 4);
  ++used_idx_;
  // Release: the element must be visible before the index that publishes it.
  (void)mem_->StoreAtomic<uint16_t>(used_gpa + 2, used_idx_);
}

bool Virtqueue::ShouldInterrupt() {
  if (mem_ == nullptr) return false;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);  // our used idx store before reading the guest's flags
  uint16_t old = signalled_used_;
  uint16_t now = used_idx_;
  signalled_used_ = now;
  if (old == now) return false;
  if (event_idx_) {
    uint16_t used_event = 0;
    (void)mem_->LoadAtomic<uint16_t>(avail_gpa + 4 + uint64_t{2} * size, &used_event);
    // virtio's vring_need_event: interrupt if used_event lies in (old, now].
    return static_cast<uint16_t>(now - used_event - 1) < static_cast<uint16_t>(now - old);
  }
  uint16_t flags = 0;
  (void)mem_->LoadAtomic<uint16_t>(avail_gpa, &flags);
  return (flags & kAvailNoInterrupt) == 0;
}

void Virtqueue::PublishAvailEvent() {
  if (mem_ == nullptr || !event_idx_) return;
  (void)mem_->StoreAtomic<uint16_t>(used_gpa + 4 + uint64_t{8} * size, last_avail_);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

uint64_t CopyFromChain(const GuestMemory& mem, const Virtqueue::Chain& chain, uint64_t offset,
                       void* out, uint64_t len) {
  auto* dst = static_cast<uint8_t*>(out);
  uint64_t done = 0;
  for (int i = 0; i < chain.readable && done < len; ++i) {
    const auto& b = chain.bufs[i];
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    uint64_t n = std::min<uint64_t>(b.len - offset, len - done);
    if (!mem.Read(b.gpa + offset, dst + done, n)) break;
    done += n;
    offset = 0;
  }
  return done;
}

uint64_t CopyToChain(GuestMemory& mem, const Virtqueue::Chain& chain, uint64_t offset,
                     const void* in, uint64_t len) {
  const auto* src = static_cast<const uint8_t*>(in);
  uint64_t done = 0;
  for (int i = chain.readable; i < chain.readable + chain.writable && done < len; ++i) {
    const auto& b = chain.bufs[i];
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    uint64_t n = std::min<uint64_t>(b.len - offset, len - done);
    if (!mem.Write(b.gpa + offset, src + done, n)) break;
    done += n;
    offset = 0;
  }
  return done;
}

}  // namespace qosvisor::hv
