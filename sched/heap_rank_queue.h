// Binary min-heap with the same interface and key semantics as FfsRankQueue: the reference and
// baseline for it (O(log n) push/pop, O(n) find-max, which only overflow uses).
#pragma once

#include <cassert>
#include <cstdint>

#include "sched/rank_queue.h"

namespace qosvisor::sched {

class HeapRankQueue {
 public:
  static constexpr const char* kName = "heap";

  HeapRankQueue() = default;
  // Every element is a distinct id below config.capacity, so the heap never holds more.
  HeapRankQueue(const RankQueueConfig& config, RankNodes nodes)
      : heap_(config.capacity, config.pages), map_(config), nodes_(nodes) {}

  bool Empty() const { return size_ == 0; }
  uint32_t size() const { return size_; }
  // Adds what the heap array got.
  void TallyPages(PageTally& tally) const { tally.Add(heap_.bytes(), heap_.kind()); }

  bool Push(uint32_t id, uint64_t rank) {
    bool clamped;
    PushKey(id, map_.Map(rank, size_ == 0, &clamped));
    return clamped;
  }

  // As FfsRankQueue's: the mapping, a key sent unfiled, filing a mapped key.
  const RankKeyMap& key_map() const { return map_; }
  void set_key_map(const RankKeyMap& map) { map_ = map; }
  void TookMin(uint64_t key) { map_.OnPopMin(key); }
  void PushKey(uint32_t id, uint64_t key) {
    nodes_[id].key = key;
    assert(size_ < heap_.size());
    heap_[size_++] = Entry{key, seq_++, id};
    SiftUp(size_ - 1);
  }

  uint32_t PeekMin() const { return size_ == 0 ? kNoId : heap_[0].id; }

  // The element that follows the minimum (a prefetch hint).
  uint32_t PeekSecond() const {
    if (size_ < 2) return kNoId;
    if (size_ == 2 || Less(heap_[1], heap_[2])) return heap_[1].id;
    return heap_[2].id;
  }

  // As FfsRankQueue's; the heap knows only the first two in order.
  uint32_t PeekAt(uint32_t k) const {
    if (k == 0) return PeekMin();
    return k == 1 ? PeekSecond() : kNoId;
  }

  // As FfsRankQueue's prefetch hint; the heap knows only the first two in order.
  uint32_t PeekNext(uint32_t* out, uint32_t n) const {
    uint32_t got = 0;
    if (got < n && size_ > 0) out[got++] = PeekMin();
    if (got < n && size_ > 1) out[got++] = PeekSecond();
    return got;
  }

  uint32_t PopMin() {
    if (size_ == 0) return kNoId;
    uint32_t id = heap_[0].id;
    map_.OnPopMin(heap_[0].key);
    RemoveAt(0);
    return id;
  }

  uint32_t PeekMax() const {
    if (size_ == 0) return kNoId;
    // The maximum is a leaf; leaves are the second half of the array.
    size_t best = size_ / 2;
    for (size_t i = best + 1; i < size_; ++i) {
      if (Less(heap_[best], heap_[i])) best = i;
    }
    return heap_[best].id;
  }

  void Remove(uint32_t id) { RemoveAt(nodes_[id].prev); }

  uint64_t KeyOf(uint32_t id) const { return nodes_[id].key; }

 private:
  struct Entry {
    uint64_t key = 0;
    uint64_t seq = 0;  // insertion order: FIFO among equal keys
    uint32_t id = 0;
  };
  static bool Less(const Entry& a, const Entry& b) {
    return a.key < b.key || (a.key == b.key && a.seq < b.seq);
  }

  void Place(uint32_t pos, const Entry& e) {
    heap_[pos] = e;
    nodes_[e.id].prev = pos;
  }

  void SiftUp(uint32_t pos) {
    Entry e = heap_[pos];
    while (pos > 0) {
      uint32_t parent = (pos - 1) / 2;
      if (!Less(e, heap_[parent])) break;
      Place(pos, heap_[parent]);
      pos = parent;
    }
    Place(pos, e);
  }

  void SiftDown(uint32_t pos) {
    Entry e = heap_[pos];
    uint32_t n = size_;
    for (;;) {
      uint32_t child = 2 * pos + 1;
      if (child >= n) break;
      if (child + 1 < n && Less(heap_[child + 1], heap_[child])) ++child;
      if (!Less(heap_[child], e)) break;
      Place(pos, heap_[child]);
      pos = child;
    }
    Place(pos, e);
  }

  void RemoveAt(uint32_t pos) {
    Entry last = heap_[--size_];
    if (pos == size_) return;
    Place(pos, last);
    if (pos > 0 && Less(last, heap_[(pos - 1) / 2])) {
      SiftUp(pos);
    } else {
      SiftDown(pos);
    }
  }

  PageArray<Entry> heap_;  // [0, size_) is the heap
  uint32_t size_ = 0;
  RankKeyMap map_;
  RankNodes nodes_;
  uint64_t seq_ = 0;
};

}  // namespace qosvisor::sched
