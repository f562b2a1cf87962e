// A split virtqueue read from guest memory. Everything in it is written by the guest and treated
// as hostile: indexes, descriptor addresses and lengths are checked, chains are bounded (loops).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "hv/guest_memory.h"
#include "hv/state_codec.h"

namespace qosvisor::hv {

inline constexpr uint64_t kVirtioFeatureVersion1 = 1ull << 32;
inline constexpr uint64_t kVirtioFeatureEventIdx = 1ull << 29;

class Virtqueue {
 public:
  static constexpr uint16_t kMaxSize = 256;
  // Longer chains are refused, and so are chains longer than the queue (the spec's bound): that
  // is where descriptor loops end. Linux without indirect descriptors needs at most ~19.
  static constexpr int kMaxChain = 64;

  struct Buffer {
    uint64_t gpa;
    uint32_t len;
  };
  // One descriptor chain: readable buffers first, then writable ones (the order virtio requires).
  struct Chain {
    uint16_t head = 0;
    int readable = 0;
    int writable = 0;
    std::array<Buffer, kMaxChain> bufs;  // [0, readable) then [readable, readable + writable)
    uint64_t readable_bytes = 0;
    uint64_t writable_bytes = 0;
  };
  enum class PopResult { kEmpty, kChain, kBroken };

  // What the driver programmed through the transport.
  uint16_t size = 0;
  uint64_t desc_gpa = 0, avail_gpa = 0, used_gpa = 0;
  bool ready = false;

  // Checks the ring addresses against guest memory; false (with why()) if they do not fit.
  bool Activate(GuestMemory* mem, bool event_idx);
  void Reset();
  bool active() const { return mem_ != nullptr; }

  // The next available chain. kBroken: the guest wrote something impossible; see why().
  PopResult Pop(Chain* chain);
  // Returns a chain to the guest with `written` bytes written into its writable buffers.
  void PushUsed(uint16_t head, uint32_t written);
  // Whether the guest wants an interrupt for what was pushed since the last call (flags or
  // used_event with EVENT_IDX).
  bool ShouldInterrupt();
  bool has_unsignalled() const { return used_idx_ != signalled_used_; }
  // With EVENT_IDX: ask to be notified when the guest adds buffers after what we have consumed.
  void PublishAvailEvent();
  // Buffers available but not yet popped (0 when inactive).
  uint16_t Pending() const;

  const std::string& why() const { return why_; }

  // The queue's programming and ring positions. The device is paused when this is taken, with no
  // chain popped but not yet pushed back, so the indexes are the whole of its progress.
  void SaveState(StateWriter& w) const;
  // Loads what SaveState wrote and re-activates a ready queue against `mem` (its ring addresses
  // checked again); false with the reader failed if anything is impossible.
  bool LoadState(StateReader& r, GuestMemory* mem);

 private:
  uint16_t LoadAvailIdx() const;
  bool Fail(std::string why) {
    why_ = std::move(why);
    return false;
  }

  GuestMemory* mem_ = nullptr;
  bool event_idx_ = false;
  uint16_t last_avail_ = 0;
  uint16_t used_idx_ = 0;
  uint16_t signalled_used_ = 0;  // used index at the last interrupt decision
  std::string why_;
};

// Copies between a chain's buffers and host memory, bounded by the chain's lengths. Each returns
// the number of bytes copied.
uint64_t CopyFromChain(const GuestMemory& mem, const Virtqueue::Chain& chain, uint64_t offset,
                       void* out, uint64_t len);
uint64_t CopyToChain(GuestMemory& mem, const Virtqueue::Chain& chain, uint64_t offset,
                     const void* in, uint64_t len);

}  // namespace qosvisor::hv
