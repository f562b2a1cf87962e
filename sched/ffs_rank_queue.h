// Bucketed integer priority queue over a hierarchical FFS bitmap (Eiffel's FFS and, with a moving
// window, cFFS): O(1) push, pop-min, find-max and removal of the max, FIFO among equal keys. The
// minimum, when it is below every other key, waits in front of the buckets (see front_).
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>

#include "sched/hier_bitmap.h"
#include "sched/rank_queue.h"

namespace qosvisor::sched {

class FfsRankQueue {
 public:
  static constexpr const char* kName = "ffs";

  FfsRankQueue() = default;
  // `config.capacity` bounds the ids (and so the elements held at once); the chunk pool is sized
  // from it so that pushing never runs out (see kChunkIds).
  FfsRankQueue(const RankQueueConfig& config, RankNodes nodes)
      : buckets_(config.num_buckets, config.pages),
        chunks_(ChunksFor(config), config.pages),
        bitmap_(config.num_buckets, config.pages),
        map_(config),
        nodes_(nodes),
        mask_(config.num_buckets - 1) {}

  bool Empty() const { return size_ == 0 && front_ == kNoId; }
  uint32_t size() const { return size_ + (front_ != kNoId); }
  // Adds what the buckets, the chunks and the bitmap got.
  void TallyPages(PageTally& tally) const {
    tally.Add(buckets_.bytes(), buckets_.kind());
    tally.Add(chunks_.bytes(), chunks_.kind());
    tally.Add(bitmap_.bytes(), bitmap_.page_kind());
  }

  // Files `id` under `rank`; returns true when the rank was beyond the range and clamped.
  bool Push(uint32_t id, uint64_t rank) {
    bool clamped;
    PushKey(id, map_.Map(rank, Empty(), &clamped));
    return clamped;
  }

  // The queue's rank-to-key mapping, for elements the caller orders itself (mapping them with a
  // copy, which it writes back once it commits) and files later, if at all, with PushKey.
  const RankKeyMap& key_map() const { return map_; }
  void set_key_map(const RankKeyMap& map) { map_ = map; }
  // An element the caller mapped and never filed left as the minimum: the window moves as PopMin
  // would have moved it.
  void TookMin(uint64_t key) { map_.OnPopMin(key); }

  // Files `id` under a key mapped with key_map(): at the front when its key is below every
  // other, else in its bucket. A key not above the front's moves the front into the buckets
  // first, where no key is as small, so that FIFO among equal keys holds.
  void PushKey(uint32_t id, uint64_t key) {
    nodes_[id].key = key;
    if (front_ != kNoId) {
      if (key > front_key_) return FileInBucket(id, key);
      const uint64_t demoted = front_key_;
      FileInBucket(front_, demoted);
      front_ = kNoId;
      if (key == demoted) return FileInBucket(id, key);
    } else if (size_ != 0 && key >= BucketMinKey()) {
      return FileInBucket(id, key);
    }
    front_ = id;
    front_key_ = key;
  }

  uint32_t PeekMin() const {
    if (front_ != kNoId) return front_;
    if (size_ == 0) return kNoId;
    return First(buckets_[MinBucket()]);
  }

  // Up to `n` (at most kChunkIds + 1) elements in the order PopMin would give them, from the
  // minimum on, written to `out`; returns how many. A prefetch hint that reads no element's node,
  // so the scheduler can load the states of messages several picks ahead at once; it looks into
  // the front and the first two non-empty buckets only.
  uint32_t PeekNext(uint32_t* out, uint32_t n) const {
    if (n == 0) return 0;
    if (front_ == kNoId) return PeekNextBucketed(out, n);
    out[0] = front_;
    return 1 + PeekNextBucketed(out + 1, n - 1);
  }

  // The element PopMin would return after `k` (< kChunkIds) other pops, or kNoId when it is not
  // in the front or the minimum's bucket: a prefetch hint that reads no element's node and at
  // most two chunks.
  uint32_t PeekAt(uint32_t k) const {
    if (front_ != kNoId) {
      if (k == 0) return front_;
      --k;
    }
    if (size_ == 0) return kNoId;
    const Bucket& bucket = buckets_[MinBucket()];
    if (bucket.tail == kNoId) return k == 0 ? bucket.head : kNoId;
    uint32_t c = bucket.head;
    uint32_t pos = bucket.head_pos + k;
    if (pos >= kChunkIds) {
      if (c == bucket.tail) return kNoId;
      c = chunks_[c].next;
      pos -= kChunkIds;
    }
    if (c == bucket.tail && pos >= bucket.tail_pos) return kNoId;
    return chunks_[c].ids[pos];
  }

  // The element that follows the minimum (a prefetch hint: the scheduler's next message but one).
  uint32_t PeekSecond() const {
    uint32_t ids[2];
    return PeekNext(ids, 2) == 2 ? ids[1] : kNoId;
  }

  uint32_t PopMin() {
    if (front_ != kNoId) {
      const uint32_t id = front_;
      front_ = kNoId;
      map_.OnPopMin(front_key_);
      return id;
    }
    if (size_ == 0) return kNoId;
    const uint32_t b = MinBucket();
    const uint32_t id = First(buckets_[b]);
    // The bucket's key is min_key_ (every key of the window has its own bucket): reading it from
    // the element's node would wait for a state line the scheduler may still be loading.
    map_.OnPopMin(min_key_);
    DropHead(b);
    return id;
  }

  // The element with the largest key; among equal keys the one filed last.
  uint32_t PeekMax() const {
    if (size_ == 0) return front_;  // (kNoId when empty)
    uint32_t base_idx = static_cast<uint32_t>(map_.base() & mask_);
    uint32_t b = HierBitmap::kNone;
    // Keys past the end of the circle wrap to bucket indices below the base's.
    if (base_idx > 0) b = bitmap_.Prev(base_idx - 1);
    if (b == HierBitmap::kNone) b = bitmap_.Last();
    const Bucket& bucket = buckets_[b];
    if (bucket.tail == kNoId) return bucket.head;
    return chunks_[bucket.tail].ids[bucket.tail_pos - 1];
  }

  // O(1) for the front and for the first or the last element of its key (all the scheduler
  // removes: PeekMax's); elsewhere O(elements of that key), the later ones moving up one place.
  void Remove(uint32_t id) {
    if (id == front_) {
      front_ = kNoId;
      return;
    }
    const uint32_t b = static_cast<uint32_t>(nodes_[id].key & mask_);
    Bucket& bucket = buckets_[b];
    if (First(bucket) == id) {
      DropHead(b);
      return;
    }
    // Find it, then move every later element one place towards the head.
    uint32_t c = bucket.head;
    uint32_t pos = bucket.head_pos;
    while (chunks_[c].ids[pos] != id) {
      [[maybe_unused]] const bool more = Step(bucket, c, pos);
      assert(more);  // the id is filed under its key
    }
    uint32_t nc = c, npos = pos;
    while (Step(bucket, nc, npos)) {
      chunks_[c].ids[pos] = chunks_[nc].ids[npos];
      c = nc;
      pos = npos;
    }
    DropTail(b);
  }

  uint64_t KeyOf(uint32_t id) const { return nodes_[id].key; }

  // Chunks the buckets hold now (walks the free list; for tests).
  uint32_t ChunksHeld() const {
    uint32_t free = 0;
    for (uint32_t c = free_chunk_; c != kNoId; c = chunks_[c].next) ++free;
    return chunks_used_ - free;
  }

 private:
  void FileInBucket(uint32_t id, uint64_t key) {
    const uint32_t b = static_cast<uint32_t>(key & mask_);
    Bucket& bucket = buckets_[b];
    if (bucket.head == kNoId) {
      // A lone element stays in the bucket and takes no chunk (see Bucket).
      bucket = Bucket{id, kNoId, 0, 0};
      bitmap_.Set(b);
      NoteKey(key);
      return;
    }
    if (bucket.tail == kNoId) {
      // The second element: both move into a chunk, which the bucket keeps until it empties.
      const uint32_t c = NewChunk();
      chunks_[c].prev = kNoId;
      chunks_[c].ids[0] = bucket.head;
      bucket = Bucket{c, c, 0, 1};
    } else if (bucket.tail_pos == kChunkIds) {
      const uint32_t c = NewChunk();
      chunks_[c].prev = bucket.tail;
      chunks_[bucket.tail].next = c;
      bucket.tail = c;
      bucket.tail_pos = 0;
    }
    chunks_[bucket.tail].ids[bucket.tail_pos++] = id;
    NoteKey(key);
  }

  // PeekNext over the buckets alone.
  uint32_t PeekNextBucketed(uint32_t* out, uint32_t n) const {
    if (size_ == 0 || n == 0) return 0;
    const uint32_t b = MinBucket();
    const uint32_t got = Gather(buckets_[b], out, n);
    if (got == n) return n;
    uint32_t nb = b + 1 < bitmap_.size() ? bitmap_.Next(b + 1) : HierBitmap::kNone;
    if (nb == HierBitmap::kNone) nb = bitmap_.First();
    if (nb == HierBitmap::kNone || nb == b) return got;
    return got + Gather(buckets_[nb], out + got, n - got);
  }

  // A bucket's FIFO lives in chunks of ids, not in links through the elements' nodes: the next
  // minima are read from one cache line instead of from the message states one after the other,
  // and filing an element writes the bucket's tail chunk (shared by the bucket, so cached)
  // instead of the previous element's state.
  static constexpr uint32_t kChunkIds = 14;
  struct alignas(64) Chunk {
    uint32_t ids[kChunkIds];
    uint32_t next;  // towards the tail; in the free list, the next free chunk
    uint32_t prev;
  };
  static_assert(sizeof(Chunk) == 64, "a chunk is one cache line");
  // Empty: head == kNoId. One element without a chunk ("inline"): tail == kNoId, head is the
  // element's id, so a bucket that only ever holds one element at a time never takes a chunk.
  // Otherwise the elements are [head_pos, end) of chunk head, ..., [0, tail_pos) of chunk tail;
  // the first and the last chunk each hold at least one element, so a bucket of k elements spans
  // at most k / kChunkIds + 2 chunks. A chunked bucket stays chunked down to one element and
  // goes back to inline only through empty: a bucket that swings between one and two elements
  // takes one chunk for the swing, not one per push.
  struct Bucket {
    uint32_t head = kNoId;
    uint32_t tail = kNoId;
    uint8_t head_pos = 0;
    uint8_t tail_pos = 0;
  };

  // Every chunk in use holds at least one element, and a bucket of k spans at most
  // k / kChunkIds + 2 chunks: the pool never runs dry.
  static size_t ChunksFor(const RankQueueConfig& c) {
    const uint64_t ids = c.capacity;
    const uint64_t spans = ids / kChunkIds + 2 * uint64_t{c.num_buckets};
    return static_cast<size_t>(std::min(ids, spans) + 1);
  }

  // The first element of a bucket that is not empty.
  uint32_t First(const Bucket& bucket) const {
    if (bucket.tail == kNoId) return bucket.head;
    return chunks_[bucket.head].ids[bucket.head_pos];
  }
  // Keeps the cached minimum exact after filing `key`: a smaller key takes over, an empty queue
  // starts afresh.
  void NoteKey(uint64_t key) {
    if (size_ == 0 || (min_valid_ && key < min_key_)) {
      min_key_ = key;
      min_valid_ = true;
    }
    if (size_ == 0 || key < low_key_) low_key_ = key;
    ++size_;
  }

  uint32_t NewChunk() {
    uint32_t c;
    if (free_chunk_ != kNoId) {
      c = free_chunk_;
      free_chunk_ = chunks_[c].next;
    } else {
      assert(chunks_used_ < chunks_.size());
      c = chunks_used_++;
    }
    chunks_[c].next = kNoId;
    return c;
  }
  void FreeChunk(uint32_t c) {
    chunks_[c].next = free_chunk_;
    free_chunk_ = c;
  }
  // Copies up to n (at most kChunkIds + 1) of the bucket's first elements to `out`; returns
  // how many, which is all the bucket holds when fewer than n. The first two chunks are enough:
  // when there are more, those two hold at least 1 + kChunkIds elements.
  uint32_t Gather(const Bucket& bucket, uint32_t* out, uint32_t n) const {
    assert(n <= kChunkIds + 1);
    if (bucket.tail == kNoId) {
      if (n == 0) return 0;
      out[0] = bucket.head;
      return 1;
    }
    uint32_t got = 0;
    uint32_t c = bucket.head;
    uint32_t pos = bucket.head_pos;
    for (;;) {
      const uint32_t end = c == bucket.tail ? bucket.tail_pos : kChunkIds;
      for (; pos < end && got < n; ++pos) out[got++] = chunks_[c].ids[pos];
      if (got == n || c == bucket.tail) return got;
      c = chunks_[c].next;
      pos = 0;
    }
  }

  // Moves (c, pos) to the next element of `bucket`; false when it is the last.
  bool Step(const Bucket& bucket, uint32_t& c, uint32_t& pos) const {
    if (c == bucket.tail) {
      if (pos + 1 >= bucket.tail_pos) return false;
      ++pos;
      return true;
    }
    if (++pos == kChunkIds) {
      c = chunks_[c].next;
      pos = 0;
    }
    return true;
  }

  // Inlined, as DropHead: both are on PopMin's path, called once per packet sent.
  [[gnu::always_inline]] void BucketEmptied(uint32_t b) {
    Bucket& bucket = buckets_[b];
    if (bucket.tail != kNoId) FreeChunk(bucket.head);
    bucket = Bucket{};
    bitmap_.Clear(b);
    if (min_valid_ && (min_key_ & mask_) == b) min_valid_ = false;
  }
  [[gnu::always_inline]] void DropHead(uint32_t b) {
    Bucket& bucket = buckets_[b];
    --size_;
    if (bucket.tail == kNoId) return BucketEmptied(b);
    ++bucket.head_pos;
    if (bucket.head == bucket.tail) {
      if (bucket.head_pos == bucket.tail_pos) BucketEmptied(b);
      return;
    }
    if (bucket.head_pos == kChunkIds) {
      const uint32_t next = chunks_[bucket.head].next;
      FreeChunk(bucket.head);
      bucket.head = next;
      bucket.head_pos = 0;
      chunks_[next].prev = kNoId;
    }
  }
  void DropTail(uint32_t b) {
    Bucket& bucket = buckets_[b];
    --size_;
    if (bucket.tail == kNoId) return BucketEmptied(b);
    --bucket.tail_pos;
    if (bucket.head == bucket.tail) {
      if (bucket.head_pos == bucket.tail_pos) BucketEmptied(b);
      return;
    }
    if (bucket.tail_pos == 0) {
      const uint32_t prev = chunks_[bucket.tail].prev;
      FreeChunk(bucket.tail);
      bucket.tail = prev;
      bucket.tail_pos = kChunkIds;
      chunks_[prev].next = kNoId;
    }
  }

  // The bucket of the smallest key. Cached, because the scheduler peeks at the next minimum
  // (to prefetch it) right after popping, and most pops leave the minimum where it was.
  // The search starts at low_key_'s bucket, not at the window's base: every key lies in
  // [low_key_, low_key_ + buckets), and the minimum that just left is usually next to the new
  // one, in the same bitmap word, where the base (0 for byte-valued ranks) is levels away.
  uint32_t MinBucket() const {
    if (min_valid_) return static_cast<uint32_t>(min_key_ & mask_);
    uint32_t b = bitmap_.Next(static_cast<uint32_t>(low_key_ & mask_));
    if (b == HierBitmap::kNone) b = bitmap_.First();
    // The key follows from the bucket (every key of the window has its own bucket), so finding
    // the minimum does not wait for the head message's state: the scheduler peeks here to
    // prefetch that state.
    min_key_ = low_key_ + ((b - low_key_) & mask_);
    low_key_ = min_key_;
    min_valid_ = true;
    return b;
  }
  // The smallest key in the buckets, which hold at least one element.
  uint64_t BucketMinKey() const {
    MinBucket();
    return min_key_;
  }

  PageArray<Bucket> buckets_;
  PageArray<Chunk> chunks_;
  uint32_t free_chunk_ = kNoId;  // freed chunks, most recent (most likely cached) first
  uint32_t chunks_used_ = 0;     // chunks below this have been handed out at least once
  HierBitmap bitmap_;
  RankKeyMap map_;
  RankNodes nodes_;
  uint64_t mask_ = 0;
  uint32_t size_ = 0;  // elements in the buckets (the front is not one of them)
  // The front: an element whose key is below every bucketed key waits outside the buckets. srpt
  // sends the message closest to done until it is done, and that message, filed again after
  // each packet with a smaller rank, is the next minimum again: here it costs no bucket, chunk or
  // bitmap update to file and pop. Invariant: front_ is kNoId, or front_key_ is smaller than
  // every key in the buckets.
  uint32_t front_ = kNoId;
  uint64_t front_key_ = 0;
  mutable uint64_t min_key_ = 0;  // valid while min_valid_: the smallest key in the queue
  mutable bool min_valid_ = false;
  // No key in the buckets is smaller (while they hold any): where finding the minimum starts.
  mutable uint64_t low_key_ = 0;
};

}  // namespace qosvisor::sched
