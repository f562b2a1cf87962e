// What every rank queue shares: per-message link nodes, the configuration, and the mapping of a
// rank to a bucket key (granularity, range, clamping, moving base) that all implementations obey.
#pragma once

#include <cstdint>

#include "sched/page_memory.h"

namespace qosvisor::sched {

inline constexpr uint32_t kNoId = UINT32_MAX;

// Link fields a rank queue keeps for one element (a message slot). They live inside the message
// state, so popping a head touches one cache line for both the message and its links.
struct RankNode {
  uint32_t next = kNoId;  // unused (FFS keeps its buckets' FIFOs in chunks of ids)
  uint32_t prev = kNoId;  // heap: position in the heap array
  uint64_t key = 0;       // the bucket key the element was filed under
};

// Element id -> node, for nodes embedded in a larger array of structs with a fixed stride.
class RankNodes {
 public:
  RankNodes() = default;
  RankNodes(void* base, uint32_t stride) : base_(static_cast<char*>(base)), stride_(stride) {}
  RankNode& operator[](uint32_t id) const {
    // SAFETY: base_ points at an array of at least `capacity` structs of size stride_, each
    // holding a RankNode at offset 0 (static_asserted by the owner).
    return *reinterpret_cast<RankNode*>(base_ + size_t{id} * stride_);
  }

 private:
  char* base_ = nullptr;
  uint32_t stride_ = sizeof(RankNode);
};

struct RankQueueConfig {
  // Number of buckets, a power of two in [64, 2^24]. Ranks that map beyond the last bucket are
  // filed in the last one and counted as clamped.
  uint32_t num_buckets = 1u << 16;
  // rank >> granularity_shift is the bucket key: ranks differing only in those low bits are
  // treated as equal (FIFO among them).
  uint8_t granularity_shift = 0;
  // Circular (cFFS): the window of keys [base, base + num_buckets) moves with the smallest key
  // popped, for ranks that grow with time (arrival, deadline, send time, virtual time). Keys below
  // the base move the window down when everything fits, else are filed at the base (due now).
  // Non-circular: keys are [0, num_buckets).
  bool circular = false;
  // Log scale (for byte-valued ranks: srpt, las): after the shift, ranks below 2^kLogMantissa
  // keep their value and larger ones keep kLogMantissa bits below their leading one (0.8%
  // relative precision), so 8192 buckets cover every 64-bit rank and never clamp. Small ranks,
  // where the order matters most, stay exact, and the bucket array stays cache-resident.
  bool log_scale = false;
  // Most elements held at once (one per message slot); the heap reserves this up front so that
  // pushing never allocates on the data path.
  uint32_t capacity = 0;
  // Which page kinds the queue's arrays (buckets, bitmap, heap) may live on.
  PageOptions pages = {};
};

inline constexpr int kLogMantissa = 7;
inline constexpr uint32_t kLogBuckets = 8192;  // >= (64 - kLogMantissa + 1) << kLogMantissa

// Monotone float-like compression of a rank: exponent above the mantissa bits.
inline uint64_t LogKey(uint64_t rank) {
  if (rank < (uint64_t{1} << (kLogMantissa + 1))) return rank;
  int msb = 63 - __builtin_clzll(rank);
  uint64_t mantissa = (rank >> (msb - kLogMantissa)) & ((uint64_t{1} << kLogMantissa) - 1);
  return (static_cast<uint64_t>(msb - kLogMantissa + 1) << kLogMantissa) | mantissa;
}

// Rank -> key. Every implementation and the tests' reference model use this one mapping, so
// they agree on ties and clamping and differ only in how they find the minimum.
class RankKeyMap {
 public:
  RankKeyMap() = default;
  explicit RankKeyMap(const RankQueueConfig& c)
      : shift_(c.granularity_shift),
        span_(c.num_buckets),
        circular_(c.circular),
        log_(c.log_scale) {}

  // `empty`: the queue holds nothing, so a circular window may restart at this key.
  uint64_t Map(uint64_t rank, bool empty, bool* clamped) {
    uint64_t key = rank >> shift_;
    if (log_) key = LogKey(key);
    if (!circular_) {
      *clamped = key >= span_;
      return *clamped ? span_ - 1 : key;
    }
    if (empty) base_ = high_ = key;
    if (key < base_) {
      // An early rank (not every policy's ranks grow with time: srpt with aging, arrival times
      // from several cores). The window moves down if everything filed still fits in it,
      // otherwise the key is filed at the base, which is due next anyway.
      if (high_ - key < span_) {
        base_ = key;
      } else {
        key = base_;
      }
    }
    *clamped = key - base_ >= span_;
    if (*clamped) key = base_ + span_ - 1;
    if (key > high_) high_ = key;
    return key;
  }
  // The smallest key has left the queue: nothing smaller remains, the window may move up.
  void OnPopMin(uint64_t key) {
    if (circular_) base_ = key;
  }
  uint64_t base() const { return base_; }

 private:
  uint8_t shift_ = 0;
  uint64_t span_ = 1;
  bool circular_ = false;
  bool log_ = false;
  uint64_t base_ = 0;
  uint64_t high_ = 0;  // largest key filed since the queue was last empty (an upper bound)
};

}  // namespace qosvisor::sched
