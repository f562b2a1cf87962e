// The message table: one slot per live message holding its packet FIFO, byte counts and
// rank-queue links; found by message id through an open-addressing index (no allocation per
// packet) whose hash is keyed per process and whose probe runs are bounded, so that senders who
// pick their ids (Homa RPC ids, 5-tuples) cannot build long probe chains on the data path.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/keyed_hash.h"
#include "common/packet_meta.h"
#include "sched/page_memory.h"
#include "sched/rank_queue.h"

struct rte_mbuf;

namespace qosvisor::sched {

inline constexpr uint16_t kMsgInUse = 1u << 0;
inline constexpr uint16_t kMsgDefault = 1u << 1;  // a class's fallback queue, never reclaimed
// A message of one packet (kMetaWholeMessage): no later packet will look it up, so its id is not
// in the index and freeing its slot touches nothing but the slot and the free list.
inline constexpr uint16_t kMsgUnindexed = 1u << 2;

inline constexpr uint8_t kInlinePackets = 6;

// Two cache lines: everything the data path touches for a message, split by who needs it. The
// oldest packets' pointers sit in the state itself, so the next heads are known, and their mbufs
// prefetched, without chasing PacketMeta::next through cold mbufs; only a message with more than
// kInlinePackets queued links the rest through PacketMeta::next.
//
// Line 0 holds the rank-queue links and what Dequeue reads of the head (but its last flag, for
// which line 0 has no room), written when a packet becomes its message's head. Line 1 holds
// everything an arrival behind a queued head touches (the ring, the counts, the class, the
// flags), so that the common arrival loads one line, not two: with many messages queued both are
// cold, and Enqueue's time goes into waiting for them.
struct alignas(64) MessageState {
  RankNode node;                      // links in the class's rank queue (must stay first)
  rte_mbuf* overflow_head = nullptr;  // packets after the ring, oldest first
  rte_mbuf* overflow_tail = nullptr;
  uint64_t message_id = 0;
  uint64_t tag = 0;         // wfq: finish tag; srpt with aging: first arrival TSC
  uint32_t bytes_sent = 0;  // saturates; las ranks by it
  // What Dequeue needs of the head packet, copied when it became head (its mbuf was in cache
  // then), so sending it never reads the mbuf: with many messages queued that mbuf is cold.
  uint32_t head_len = 0;      // wire_len
  uint64_t head_arrival = 0;  // arrival_tsc

  rte_mbuf* ring[kInlinePackets] = {};  // the oldest queued packets, from ring_head on
  uint32_t bytes_queued = 0;
  uint32_t last_active = 0;  // TSC >> kIdleShift of the last enqueue or dequeue
  uint16_t class_id = 0;
  uint16_t flags = 0;
  uint8_t ring_head = 0;
  uint8_t ring_count = 0;  // < kInlinePackets only while the overflow list is empty
  bool head_last = false;  // the head's kMetaLastOfMessage (with the ring: no room in line 0)

  bool empty() const { return ring_count == 0; }
  rte_mbuf* front() const { return ring[ring_head]; }
  // The newest queued packet (the message must not be empty).
  rte_mbuf* back() const {
    return overflow_tail != nullptr ? overflow_tail : at(static_cast<uint8_t>(ring_count - 1));
  }
  // The k-th queued packet if it is in the ring (k < kInlinePackets), else nullptr.
  rte_mbuf* at(uint8_t k) const {
    if (k >= ring_count) return nullptr;
    unsigned i = ring_head + k;
    return ring[i >= kInlinePackets ? i - kInlinePackets : i];
  }
  void PushBack(rte_mbuf* m) {
    if (ring_count < kInlinePackets) {
      unsigned i = ring_head + ring_count;
      ring[i >= kInlinePackets ? i - kInlinePackets : i] = m;
      ++ring_count;
      return;
    }
    Meta(m)->next = nullptr;
    if (overflow_tail == nullptr) {
      overflow_head = m;
    } else {
      Meta(overflow_tail)->next = m;
    }
    overflow_tail = m;
  }
  rte_mbuf* PopFront() {
    rte_mbuf* m = ring[ring_head];
    ring_head = static_cast<uint8_t>(ring_head + 1 == kInlinePackets ? 0 : ring_head + 1);
    --ring_count;
    if (overflow_head != nullptr) {  // keep the ring full while packets wait behind it
      rte_mbuf* o = overflow_head;
      overflow_head = Meta(o)->next;
      if (overflow_head == nullptr) overflow_tail = nullptr;
      PushBack(o);
    }
    return m;
  }
};
static_assert(sizeof(MessageState) == 128, "message state must stay two cache lines");
static_assert(offsetof(MessageState, node) == 0, "RankNodes assumes the node at offset 0");
static_assert(offsetof(MessageState, ring) == 64, "an arrival's fields must fill line 1");

inline constexpr int kIdleShift = 16;  // idle times are coarse: ~20 us units at 3 GHz

// Every index entry lies within this many positions of its home, so a lookup reads at most this
// many entries (16 cache lines; a hit usually reads one). At the index's load of at most one half,
// even a random hash sometimes makes runs of 30-40 in a full table, but one of 64 is rare; a
// message that finds its window full goes to its class's default queue (counted) instead of
// making the run longer.
inline constexpr uint32_t kMaxProbe = 64;

class MessageTable {
 public:
  // `reserved` slots [0, reserved) are not in the index (the classes' fallback queues). `key`
  // keys the index hash; tests pass a fixed one to be deterministic. `pages`: which page kinds
  // the slots, the index and the free list may live on (see page_memory.h).
  MessageTable(uint32_t capacity, uint32_t reserved, HashKey key = HashKey::Random(),
               PageOptions pages = {});

  uint32_t capacity() const { return static_cast<uint32_t>(slots_.size()); }
  uint32_t live() const { return live_; }
  uint32_t free_slots() const { return free_count_; }
  // Slots from here on have never held a message (the free list hands out ascending slots), so a
  // walk over every message may stop here.
  uint32_t used_end() const { return high_water_ > reserved_ ? high_water_ : reserved_; }
  // Adds what the slots, the index and the free list got.
  void TallyPages(PageTally& tally) const;
  MessageState& operator[](uint32_t slot) { return slots_[slot]; }
  const MessageState& operator[](uint32_t slot) const { return slots_[slot]; }
  RankNodes nodes() { return RankNodes(slots_.data(), sizeof(MessageState)); }

  // The home position of `message_id` in the index.
  uint32_t IndexOf(uint64_t message_id) const {
    return static_cast<uint32_t>(KeyedHash64(message_id, key_) >> index_shift_);
  }
  void PrefetchIndexAt(uint32_t home) const { __builtin_prefetch(&index_[home]); }
  void PrefetchSlot(uint32_t slot, bool write) const {
    PrefetchHeadLine(slot, write);
    PrefetchArrivalLine(slot, write);
  }
  // Line 0 of a state (links and head fields) and line 1 (what an arrival touches); see
  // MessageState.
  void PrefetchHeadLine(uint32_t slot, bool write) const { Prefetch(&slots_[slot], write); }
  void PrefetchArrivalLine(uint32_t slot, bool write) const {
    Prefetch(reinterpret_cast<const char*>(&slots_[slot]) + 64, write);
  }

  // The slot of `message_id`, or kNoId.
  uint32_t Find(uint64_t message_id) const { return FindFrom(message_id, IndexOf(message_id)); }
  // The same, for a caller that computed `home` = IndexOf(message_id) already (the scheduler
  // hashes a burst's ids once, to prefetch their index entries).
  uint32_t FindFrom(uint64_t message_id, uint32_t home) const {
    const uint32_t i = Locate(message_id, home);
    return i == kNoId ? kNoId : index_[i].slot;
  }

  // A fresh slot for `message_id` (which must not be present), or kNoId when the table is full
  // (free_slots() == 0) or the id's probe window is (every entry in it taken).
  uint32_t Insert(uint64_t message_id, uint16_t class_id) {
    return Insert(message_id, class_id, IndexOf(message_id));
  }
  // The same with `home` = IndexOf(message_id).
  uint32_t Insert(uint64_t message_id, uint16_t class_id, uint32_t home);

  // A fresh slot for a message of one packet, which Find never finds; kNoId when the table is
  // full. A message id may be in the index and in unindexed slots at once (a sender's duplicate).
  uint32_t InsertUnindexed(uint64_t message_id, uint16_t class_id);

  // How far `message_id`'s entry lies from its home position, or kNoId when it is not indexed.
  uint32_t ProbeDistance(uint64_t message_id) const {
    const uint32_t i = Locate(message_id, IndexOf(message_id));
    return i == kNoId ? kNoId : (i - IndexOf(message_id)) & index_mask_;
  }

  // Frees a message's slot (not a reserved one); its queue must be empty.
  void Erase(uint32_t slot) {
    if (slots_[slot].flags & kMsgUnindexed) return Release(slot);
    EraseIndexed(slot, IndexOf(slots_[slot].message_id));
  }
  // The same for a caller that has `home` = IndexOf(the slot's message id) already, or kNoId
  // for an unindexed slot. Inline for unindexed slots, which under srpt are most of what a
  // loaded uplink frees.
  void EraseFrom(uint32_t slot, uint32_t home) {
    if (slots_[slot].flags & kMsgUnindexed) return Release(slot);
    EraseIndexed(slot, home);
  }

  // Visits `budget` slots round-robin (at most every slot ever used, once); frees those empty
  // for longer than their class's timeout at time `now` (`timeout_of_class[class_id]`, in
  // kIdleShift units, at most 2^30; 0 = never). Returns how many were freed. Ages are signed
  // differences of the 32-bit coarse clock: a message stamped just after `now` is young.
  uint32_t ReclaimIdle(uint32_t now, const uint32_t* timeout_of_class, uint32_t budget);

 private:
  struct Entry {
    uint64_t message_id = 0;
    uint32_t slot = kNoId;
    uint32_t home = 0;  // IndexOf(message_id), kept so that erasing never hashes the run again
  };

  // The index position holding `message_id`, whose home is `home`, or kNoId.
  uint32_t Locate(uint64_t message_id, uint32_t home) const {
    uint32_t i = home;
    for (uint32_t d = 0; d < kMaxProbe; ++d, i = (i + 1) & index_mask_) {
      const Entry& e = index_[i];
      if (e.slot == kNoId) return kNoId;
      if (e.message_id == message_id) return i;
    }
    return kNoId;
  }

  // Pops a free slot and makes it a fresh message's; kNoId when none is free.
  uint32_t Claim(uint64_t message_id, uint16_t class_id, uint16_t flags);
  // Returns a slot to the free list.
  void Release(uint32_t slot) {
    slots_[slot].flags = 0;
    free_[free_count_++] = slot;
    --live_;
  }
  // EraseFrom for a slot in the index.
  void EraseIndexed(uint32_t slot, uint32_t home);
  static void Prefetch(const void* p, bool write) {
    if (write) {
      __builtin_prefetch(p, 1);
    } else {
      __builtin_prefetch(p);
    }
  }

  PageArray<MessageState> slots_;
  PageArray<Entry> index_;
  HashKey key_;
  PageArray<uint32_t> free_;  // stack of free slots, [0, free_count_)
  uint32_t free_count_ = 0;
  uint32_t index_mask_ = 0;
  int index_shift_ = 64;
  uint32_t reserved_ = 0;
  uint32_t live_ = 0;
  uint32_t hand_ = 0;        // ReclaimIdle's position
  uint32_t high_water_ = 0;  // one past the highest slot ever handed out
};

}  // namespace qosvisor::sched
