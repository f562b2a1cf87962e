// Bucketed integer priority queue over a hierarchical FFS bitmap (Eiffel's FFS and, with a moving
// window, cFFS): O(1) push, pop-min, find-max and remove, FIFO among equal keys.
#pragma once

#include <cstdint>

#include "sched/hier_bitmap.h"
#include "sched/rank_queue.h"

namespace qosvisor::sched {

class FfsRankQueue {
 public:
  static constexpr const char* kName = "ffs";

  FfsRankQueue() = default;
  FfsRankQueue(const RankQueueConfig& config, RankNodes nodes)
      : buckets_(config.num_buckets, config.pages),
        bitmap_(config.num_buckets, config.pages),
        map_(config),
        nodes_(nodes),
        mask_(config.num_buckets - 1) {}

  bool Empty() const { return size_ == 0; }
  uint32_t size() const { return size_; }
  // Adds what the buckets and the bitmap got.
  void TallyPages(PageTally& tally) const {
    tally.Add(buckets_.bytes(), buckets_.kind());
    tally.Add(bitmap_.bytes(), bitmap_.page_kind());
  }

  // Files `id` under `rank`; returns true when the rank was beyond the range and clamped.
  bool Push(uint32_t id, uint64_t rank) {
    bool clamped;
    PushKey(id, map_.Map(rank, size_ == 0, &clamped));
    return clamped;
  }

  // The queue's rank-to-key mapping, for elements the caller orders itself (mapping them with a
  // copy, which it writes back once it commits) and files later, if at all, with PushKey.
  const RankKeyMap& key_map() const { return map_; }
  void set_key_map(const RankKeyMap& map) { map_ = map; }
  // An element the caller mapped and never filed left as the minimum: the window moves as PopMin
  // would have moved it.
  void TookMin(uint64_t key) { map_.OnPopMin(key); }

  // Files `id` under a key mapped with key_map().
  void PushKey(uint32_t id, uint64_t key) {
    uint32_t b = static_cast<uint32_t>(key & mask_);
    RankNode& n = nodes_[id];
    n.key = key;
    n.next = kNoId;
    Bucket& bucket = buckets_[b];
    n.prev = bucket.tail;
    if (bucket.tail == kNoId) {
      bucket.head = id;
      bitmap_.Set(b);
    } else {
      nodes_[bucket.tail].next = id;
    }
    bucket.tail = id;
    // Keep the cached minimum exact: a smaller key takes over, an empty queue starts afresh.
    if (size_ == 0 || (min_valid_ && key < min_key_)) {
      min_key_ = key;
      min_valid_ = true;
    }
    ++size_;
  }

  uint32_t PeekMin() const {
    if (size_ == 0) return kNoId;
    return buckets_[MinBucket()].head;
  }

  // The element that follows the minimum (a prefetch hint: the scheduler's next message but one).
  uint32_t PeekSecond() const {
    if (size_ < 2) return kNoId;
    uint32_t b = MinBucket();
    uint32_t n = nodes_[buckets_[b].head].next;
    if (n != kNoId) return n;
    uint32_t nb = b + 1 < bitmap_.size() ? bitmap_.Next(b + 1) : HierBitmap::kNone;
    if (nb == HierBitmap::kNone) nb = bitmap_.First();
    return nb == HierBitmap::kNone ? kNoId : buckets_[nb].head;
  }

  uint32_t PopMin() {
    if (size_ == 0) return kNoId;
    uint32_t b = MinBucket();
    uint32_t id = buckets_[b].head;
    map_.OnPopMin(nodes_[id].key);
    Unlink(id, b);
    return id;
  }

  // The element with the largest key; among equal keys the one filed last.
  uint32_t PeekMax() const {
    if (size_ == 0) return kNoId;
    uint32_t base_idx = static_cast<uint32_t>(map_.base() & mask_);
    uint32_t b = HierBitmap::kNone;
    // Keys past the end of the circle wrap to bucket indices below the base's.
    if (base_idx > 0) b = bitmap_.Prev(base_idx - 1);
    if (b == HierBitmap::kNone) b = bitmap_.Last();
    return buckets_[b].tail;
  }

  void Remove(uint32_t id) { Unlink(id, static_cast<uint32_t>(nodes_[id].key & mask_)); }

  uint64_t KeyOf(uint32_t id) const { return nodes_[id].key; }

 private:
  struct Bucket {
    uint32_t head = kNoId;
    uint32_t tail = kNoId;
  };

  // The bucket of the smallest key. Cached, because the scheduler peeks at the next minimum
  // (to prefetch it) right after popping, and most pops leave the minimum where it was.
  uint32_t MinBucket() const {
    if (min_valid_) return static_cast<uint32_t>(min_key_ & mask_);
    uint32_t b = bitmap_.Next(static_cast<uint32_t>(map_.base() & mask_));
    if (b == HierBitmap::kNone) b = bitmap_.First();
    // The key follows from the bucket (every key of the window has its own bucket), so finding
    // the minimum does not wait for the head message's state: the scheduler peeks here to
    // prefetch that state.
    min_key_ = map_.base() + ((b - map_.base()) & mask_);
    min_valid_ = true;
    return b;
  }

  void Unlink(uint32_t id, uint32_t b) {
    RankNode& n = nodes_[id];
    Bucket& bucket = buckets_[b];
    if (n.prev == kNoId) {
      bucket.head = n.next;
    } else {
      nodes_[n.prev].next = n.next;
    }
    if (n.next == kNoId) {
      bucket.tail = n.prev;
    } else {
      nodes_[n.next].prev = n.prev;
    }
    if (bucket.head == kNoId) {
      bitmap_.Clear(b);
      if (min_valid_ && (min_key_ & mask_) == b) min_valid_ = false;
    }
    --size_;
  }

  PageArray<Bucket> buckets_;
  HierBitmap bitmap_;
  RankKeyMap map_;
  RankNodes nodes_;
  uint64_t mask_ = 0;
  uint32_t size_ = 0;
  mutable uint64_t min_key_ = 0;  // valid while min_valid_: the smallest key in the queue
  mutable bool min_valid_ = false;
};

}  // namespace qosvisor::sched
