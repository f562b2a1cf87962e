// The per-uplink scheduler (see docs/architecture.md): packets wait in their message's FIFO,
// message heads wait in per-class rank queues, a two-level share picks the class, a pacer caps
// the rate.
//
// How the shallow tree stays O(1): every class has its own rank queue (FFS/cFFS buckets) of message
// heads ordered by the class's policy. Above them, tenants share the uplink and classes share their
// tenant, each level by strict priority or start-time fair queuing (start tags in bytes / weight).
// Active tenants and classes are 64-bit masks laid out in priority order, so a priority pick is one
// find-first-set and a wfq pick compares the start tags of at most 64 active children (one when
// only one is active, the common case). The per-message policy is a switch on the class's enum,
// evaluated once when a packet becomes its message's head; nothing is virtual.
//
// An idle uplink: a burst that finds nothing queued, on an uplink of one class whose ranks need no
// message state (fifo, priority, edf, srpt without aging), leaves in the order the rank queue would
// give it (by key, FIFO among equal keys). Sorting the burst gives that order without filing its
// packets in the message table and the rank queue. If the pacer or the caller's batch stops it
// part-way, the next Enqueue files the rest first, in arrival order and under the keys they got,
// exactly as if they had been filed on arrival. Messages that never wait take no table slot.
//
// Accounting: enqueued = dequeued + dropped + queued, per class and in total, at every instant.
// Packets the scheduler drops are handed to the drop sink (in bursts of up to 32) for the caller
// to free; sched/ never frees an mbuf.
#pragma once

#include <bit>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/packet_batch.h"
#include "common/packet_meta.h"
#include "common/status.h"
#include "sched/config.h"
#include "sched/ffs_rank_queue.h"
#include "sched/heap_rank_queue.h"
#include "sched/message_table.h"
#include "sched/pacer.h"
#include "sched/policies.h"
#include "sched/scheduler_detail.h"

struct rte_mbuf;

namespace qosvisor::sched {

// Time packets spent in the scheduler (arrival in the switch to dequeue), per class: bucket b
// counts packets that waited fewer than 2^(b + kSojournShift) TSC cycles, the last bucket
// everything longer. Powers of two make recording a shift and a count of leading zeros.
inline constexpr int kSojournShift = 10;
inline constexpr int kSojournBuckets = 24;
inline int SojournBucket(uint64_t cycles) {
  const int b = std::bit_width(cycles >> kSojournShift);
  return b < kSojournBuckets ? b : kSojournBuckets - 1;
}

struct ClassStats {
  uint64_t enqueued_packets = 0;
  uint64_t enqueued_bytes = 0;
  uint64_t dequeued_packets = 0;
  uint64_t dequeued_bytes = 0;
  uint64_t dropped_tail = 0;           // buffer full, drop: tail
  uint64_t dropped_worst = 0;          // buffer full, drop: worst (evicted, maybe the arrival)
  uint64_t dropped_message_limit = 0;  // the message already queued message_limit_bytes
  uint64_t dropped_bytes = 0;
  uint64_t rank_clamped = 0;         // ranks beyond the rank queue's range (not drops)
  uint64_t table_full_fallback = 0;  // packets sent to the class's default queue (not drops)
  uint64_t probe_limit_fallback = 0;  // the same, because the id's index window was full
  // Filled in by Stats(): what is queued is what arrived less what left or was dropped (the data
  // path keeps only those counts).
  uint64_t queued_packets = 0;
  uint64_t queued_bytes = 0;
  uint64_t sojourn[kSojournBuckets] = {};  // see SojournBucket
  uint64_t sojourn_cycles = 0;             // their sum

  uint64_t dropped_packets() const { return dropped_tail + dropped_worst + dropped_message_limit; }
  uint64_t now_queued_packets() const {
    return enqueued_packets - dequeued_packets - dropped_packets();
  }
  uint64_t now_queued_bytes() const { return enqueued_bytes - dequeued_bytes - dropped_bytes; }
};

struct SchedulerStats {
  std::vector<ClassStats> classes;
  ClassStats total;
  uint64_t dropped_unknown_class = 0;  // class_id beyond the class table; in no class's counts
  uint64_t live_messages = 0;
  uint64_t messages_reclaimed_idle = 0;
  uint64_t idle_burst_packets = 0;  // packets that found the uplink idle and were sorted, not filed
  // Queued in a class that a live reconfiguration removed (see ContinueFrom).
  uint64_t dropped_reconfigured = 0;
  // The smallest pages any large table (message table, rank queues) got: hugetlb, thp or 4k.
  PageKind table_pages = PageKind::kSmall;
};

// Receives dropped packets; the caller frees them (rte_pktmbuf_free_bulk on the data path).
using DropSink = void (*)(void* context, rte_mbuf* const* pkts, uint16_t count);

template <typename RankQueue>
class BasicScheduler {
 public:
  // Validates `config` (see Validate) and builds the tables; all memory is allocated here.
  static Result<std::unique_ptr<BasicScheduler>> Create(const SchedulerConfig& config,
                                                        DropSink drop_sink, void* drop_context);

  // Takes every packet of `batch` (batch.count becomes 0). Returns how many of them are queued on
  // return; the others, and any earlier packets evicted to make room, went to the drop sink.
  // Packets carry their PacketMeta (class_id, message_id, wire_len, arrival_tsc,
  // message_size/offset, flags).
  uint16_t Enqueue(PacketBatch& batch);

  // Appends up to kMaxBurst - batch.count packets the pacer allows at `now_tsc`, lowest rank first
  // within the share's pick. Returns how many were added.
  uint16_t Dequeue(PacketBatch& batch, uint64_t now_tsc);

  // The earliest time at which Dequeue may return a packet (now if it may already), or UINT64_MAX
  // when nothing is queued. For simulators and for lcores that want to sleep.
  uint64_t NextSendTsc(uint64_t now_tsc) const;

  // A live reconfiguration: this scheduler replaced `before`'s, whose queued packets were moved
  // here (dequeued in order and enqueued again) or adopted (AdoptQueues), except `gone` packets
  // of classes the new tree lacks. Each class continues its predecessor's counts (class_of_old[c]
  // is the new class of old class c, or -1), so enqueued = dequeued + dropped + queued still holds.
  void ContinueFrom(const SchedulerStats& before, std::span<const int32_t> class_of_old,
                    uint64_t gone);

  // Before a live reconfiguration moves `before`'s packets here (this tree being new and empty):
  // what the old tree's policies remember carries over, so that ranking goes on as the old tree
  // would have gone on. las: the bytes each message sent; wfq: the messages' tags and the class's
  // virtual time; srpt with aging: each message's first arrival; pace: the class's schedule (its
  // moved heads are sent no sooner than they were due, nor faster than the class's rate, though
  // each later by what the heads ahead of it had reserved). For classes that keep their policy
  // (class_of_old as in ContinueFrom); a message whose class changed to one of those policies
  // keeps its bytes sent. When some class ranks by its messages' past (las, wfq, srpt with
  // aging), scans every slot the old table ever used. The uplink pacer goes on with the old
  // one's credit or debt (up to this one's bucket), so that a reload lets no extra burst out.
  // Messages of removed classes, and those this table has no room for once every moving packet has
  // one, start afresh; so do the shares between classes and tenants (start-time fair queuing
  // restarts level, which no backlogged class loses by).
  void InheritPolicyState(const BasicScheduler& before, std::span<const int32_t> class_of_old);

  // A live reconfiguration that changes nothing of how packets are ranked or kept: the same
  // classes in the same order with the same policies and rank parameters (deadline, aging, rank
  // shift), the same message-table and rank-queue sizes, a buffer that holds what `before`
  // queues and no lower per-message limit. Rates, weights, priorities, tenants, buffers, drop
  // modes and idle times may change. This tree, new and empty, then takes over `before`'s message
  // table, rank queues and queued packets as they are, whatever their number, and `before` is
  // left holding none; what the classes remember (wfq's virtual time, pace's schedule) and the
  // uplink pacer's credit or debt carry over, and the shares between classes and tenants restart,
  // as after a move. An idle time made shorter owes the sweep visits for every message, some of
  // which may be past it already. Returns false, changing nothing, for any other change, which
  // must move the packets (InheritPolicyState, then enqueue them here). ContinueFrom follows
  // either way.
  bool AdoptQueues(BasicScheduler& before);

  // Packets of a removed class that reached the uplink after the reconfiguration.
  void AddReconfiguredDrops(uint64_t n) { dropped_reconfigured_ += n; }

  SchedulerStats Stats() const;
  // The same into `out` without allocating once out.classes holds one entry per class (as after a
  // first call), so that the data-plane lcore can copy statistics into storage sized beforehand.
  void StatsInto(SchedulerStats& out) const;
  // A read-only look at what waits (scheduler_inspect.cc): the `top_n` messages with the most
  // bytes queued, and per class the distances of queued heads' ranks from the next head out, read
  // from the head packets of at most `max_samples` messages spread over the table (each read may
  // miss the cache). Scans every message-table slot ever used (one cache line each); allocates
  // nothing once `out` was reserved for this scheduler's classes and top_n (SchedulerDetail::
  // Reserve), so that the owner's lcore can run it. `now` is recorded as out.taken_tsc.
  void Inspect(SchedulerDetail& out, uint32_t top_n, uint32_t max_samples, uint64_t now) const;
  // The same in steps, for an owner's lcore that must not stall on a large table: BeginInspection
  // (the idle burst, and the counts that need no scan), then InspectSlots reading at most
  // `budget` more slots per call until it returns true, then EndInspection. The calls may lie
  // polls apart: a message that comes or goes meanwhile may be missed, or counted as the scan
  // found its slot; with nothing changing, the result is Inspect's.
  InspectionCursor BeginInspection(SchedulerDetail& out, uint32_t top_n,
                                   uint32_t max_samples) const;
  bool InspectSlots(SchedulerDetail& out, InspectionCursor& cursor, uint32_t budget) const;
  void EndInspection(SchedulerDetail& out, uint64_t now) const;
  uint64_t queued_packets() const { return buffered_packets_; }
  uint64_t queued_bytes() const { return buffered_bytes_; }
  uint64_t tsc_hz() const { return hz_; }
  const SchedulerConfig& config() const { return config_; }
  // What the large tables got (see SchedulerStats::table_pages).
  PageKind table_pages() const { return table_pages_; }

 private:
  struct TenantState {
    Share class_share = Share::kWfq;
    bool charge_classes = false;  // wfq tags only matter with more than one class
    uint32_t weight = 1;
    uint64_t active_classes = 0;  // bit = position in class_at, which is in priority order
    uint16_t class_at[64] = {};
    uint64_t vtime = 0;  // start tag of the class share's packet last sent
    uint64_t share_start = 0;
    uint64_t share_finish = 0;
  };

  BasicScheduler(const SchedulerConfig& config, DropSink sink, void* context, uint64_t hz);

  // One packet of an idle burst: where it goes in the sorted order, and what it needs to be sent
  // or filed without reading its mbuf again.
  struct IdleEntry {
    uint64_t key;
    rte_mbuf* pkt;
    uint32_t len;
    uint16_t arrival;  // position in its burst
    bool frees_slot;   // last of a message that may hold a slot (kMetaLastOfMessage, not whole)
  };
  void ForgetEndedMessage(rte_mbuf* pkt);
  void EndWithoutLastPacket(uint32_t slot);
  // Whether `slot` is the indexed slot of message `id`.
  bool HoldsMessage(uint32_t slot, uint64_t id) const {
    constexpr uint16_t kMask = kMsgInUse | kMsgDefault | kMsgUnindexed;
    return (table_[slot].flags & kMask) == kMsgInUse && table_[slot].message_id == id;
  }
  int32_t NewClassOf(size_t old, std::span<const int32_t> class_of_old) const;
  bool RanksAndKeepsAs(const BasicScheduler& before) const;
  static uint64_t InheritedTag(const MessageState& m, Policy was, Policy is);
  bool RanksByMessagePast(uint16_t class_id) const;
  uint32_t InheritMessages(const BasicScheduler& before, std::span<const int32_t> class_of_old,
                           bool queued, uint32_t waiting);
  bool CarriesOver(const MessageState& m, std::span<const int32_t> class_of_old) const;
  void InheritMessage(const BasicScheduler& before, const MessageState& m,
                      std::span<const int32_t> class_of_old, uint32_t home);

  bool TakeIdleBurst(PacketBatch& batch);
  template <typename RankPolicy>
  bool TakeIdleBurstRankedBy(PacketBatch& batch);
  void SortIdleBurst(uint16_t n, uint64_t base);
  void ForgetSeenMessages();
  bool FirstOfMessage(uint64_t message_id);
  uint16_t SendIdleBurst(PacketBatch& batch, uint64_t now);
  void FileIdleBurst();
  // `home`: the message id's index position when the caller hashed it already, else kNoId.
  void Admit(rte_mbuf* pkt, uint32_t slot_hint, uint32_t home);
  bool AppendToMessage(rte_mbuf* pkt, uint32_t slot);
  void FileHead(uint16_t class_id, uint32_t slot, uint64_t key);
  // What Dequeue needs of a new head packet, copied while its mbuf is in cache.
  static void TakeHeadFields(MessageState& m, const PacketMeta& head) {
    m.head_len = head.wire_len;
    m.head_last = (head.flags & kMetaLastOfMessage) != 0;
    m.head_arrival = head.arrival_tsc;
  }
  void Drop(rte_mbuf* pkt) {
    // Drops are rare: a scan of the burst tells whether Enqueue's count must go down.
    for (uint16_t i = 0; i < burst_size_; ++i) burst_dropped_ += burst_[i] == pkt;
    drops_.Push(pkt);
    if (drops_.full()) FlushDrops();
  }
  void FlushDrops() {
    if (drops_.count != 0) drop_sink_(drop_context_, drops_.pkts, drops_.count);
    drops_.count = 0;
  }
  // Evicts the head of the class's worst-ranked message.
  // The class whose worst packet goes when the buffer overflows (see scheduler.cc).
  int VictimClass() const;
  void DropWorst(uint16_t class_id, uint64_t now);
  uint32_t ResolveSlot(const PacketMeta& pm, uint32_t home);
  uint32_t NewMessageSlot(const PacketMeta& pm, uint16_t class_id, bool* created, uint32_t home);
  void OweSweepVisits(uint16_t class_id);
  void OweSweepVisitsFor(uint64_t messages);
  bool ShortensIdleTimes(const BasicScheduler& before) const;
  void PushHead(uint16_t class_id, uint32_t slot, uint64_t now);
  void ActivateClass(uint16_t class_id);
  void DeactivateClass(uint16_t class_id);
  void ChargeShares(uint16_t class_id, uint32_t bytes, bool class_still_active);
  void PrefetchHeadLineIfEmpty(uint32_t slot) const;
  void LookAhead(const RankQueue& q, uint32_t sent, bool first) const;
  void PrefetchNextPackets(uint32_t slot, uint32_t sent) const;
  bool Eligible(uint16_t class_id, uint64_t now) const;
  int SelectInTenant(uint16_t tenant, uint64_t now) const;
  int SelectClass(uint64_t now) const;
  // Inspect's parts: each class's next head rank, and what the idle burst holds.
  void StartInspection(SchedulerDetail& out) const;
  void InspectIdleBurst(SchedulerDetail& out, const InspectionCursor& cursor) const;

  SchedulerConfig config_;
  uint64_t hz_;
  DropSink drop_sink_;
  void* drop_context_;
  MessageTable table_;
  std::vector<ClassState> classes_;
  std::vector<RankQueue> queues_;
  std::vector<ClassStats> stats_;
  std::vector<uint8_t> class_pos_;  // position of a class inside its tenant's mask
  std::vector<TenantState> tenants_;
  std::vector<uint8_t> tenant_pos_;
  uint16_t tenant_at_[64] = {};
  uint64_t active_tenants_ = 0;
  uint64_t vtime_ = 0;  // tenant share's virtual time
  bool any_gated_ = false;
  bool charge_tenants_ = false;
  bool charges_shares_ = false;  // some level shares by wfq tags (else ChargeShares does nothing)
  bool single_plain_class_ = false;
  Pacer pacer_;
  PacketBatch drops_;
  rte_mbuf* const* burst_ = nullptr;  // the burst Enqueue is working on
  uint16_t burst_size_ = 0;
  uint16_t burst_dropped_ = 0;
  uint32_t burst_freed_ = 0;  // indexed slots EndWithoutLastPacket freed during this burst
  uint64_t buffered_bytes_ = 0;
  uint64_t buffered_packets_ = 0;
  uint64_t dropped_unknown_class_ = 0;
  uint64_t reclaimed_idle_ = 0;
  uint64_t idle_burst_packets_ = 0;
  uint64_t dropped_reconfigured_ = 0;
  // Per class, how long (kIdleShift units) a waiting message keeps its slot; 0 = for good.
  std::vector<uint32_t> idle_timeouts_;
  bool reclaims_idle_ = false;   // some class's timeout is not 0
  // Sweep visits still due for messages created in classes that end quietly (4 each).
  uint64_t reclaim_visits_owed_ = 0;
  bool idle_bursts_ = false;    // this uplink may send idle bursts (one class, stateless ranks)
  IdleEntry idle_[kMaxBurst];   // the idle burst, sorted; [idle_next_, idle_end_) not yet sent
  uint16_t idle_next_ = 0;
  uint16_t idle_end_ = 0;
  MessageState no_state_;  // what stateless ranks are computed against (never read)
  PageKind table_pages_ = PageKind::kSmall;
  // Message ids seen in the burst being checked (open addressing, valid where the stamp is).
  uint64_t seen_id_[2 * kMaxBurst] = {};
  uint32_t seen_stamp_[2 * kMaxBurst] = {};
  uint32_t stamp_ = 0;
};

// The scheduler the data path uses, and the same with a binary heap (reference and baseline).
using Scheduler = BasicScheduler<FfsRankQueue>;
using HeapScheduler = BasicScheduler<HeapRankQueue>;

extern template class BasicScheduler<FfsRankQueue>;
extern template class BasicScheduler<HeapRankQueue>;

}  // namespace qosvisor::sched
