// A read-only inspection of a scheduler for operators (qosctl uplinks): which messages hold the
// backlog, and how the ranks of queued heads spread. Never on the packet path: run on request.
#include <algorithm>

#include "sched/scheduler.h"

namespace qosvisor::sched {
namespace {

// Whether `a` comes before `b` in the top list: more bytes queued, then the lower id, then the
// lower slot (default queues all have id 0), so the list does not depend on the scan's order.
bool ListedBefore(const QueuedMessage& a, const QueuedMessage& b) {
  if (a.bytes_queued != b.bytes_queued) return a.bytes_queued > b.bytes_queued;
  if (a.message_id != b.message_id) return a.message_id < b.message_id;
  return a.slot < b.slot;
}

// Whether KeepIfTop would keep `q`.
bool WouldKeep(const std::vector<QueuedMessage>& top, const QueuedMessage& q, uint32_t top_n) {
  return top.size() < top_n || (top_n != 0 && ListedBefore(q, top.front()));
}

// Keeps the top_n listed first in `top`, a heap whose front is the one that would go next.
void KeepIfTop(std::vector<QueuedMessage>& top, const QueuedMessage& q, uint32_t top_n) {
  if (!WouldKeep(top, q, top_n)) return;
  if (top.size() < top_n) {
    top.push_back(q);
  } else {
    std::pop_heap(top.begin(), top.end(), ListedBefore);
    top.back() = q;
  }
  std::push_heap(top.begin(), top.end(), ListedBefore);
}

void CountHead(ClassRanks& ranks, const PacketMeta* sampled_head) {
  ++ranks.queued_heads;
  if (sampled_head == nullptr) return;
  const uint64_t rank = sampled_head->rank;
  ++ranks.distance[RankDistanceBucket(rank > ranks.next_rank ? rank - ranks.next_rank : 0)];
  ++ranks.sampled_heads;
}

}  // namespace

template <typename RankQueue>
void BasicScheduler<RankQueue>::StartInspection(SchedulerDetail& out) const {
  if (out.classes.size() != classes_.size()) out.classes.resize(classes_.size());
  out.top.clear();
  out.queued_messages = 0;
  out.sampled_heads = 0;
  out.slots_scanned = table_.used_end();
  out.table_capacity = table_.capacity();
  out.live_messages = table_.live();
  for (size_t c = 0; c < classes_.size(); ++c) {
    ClassRanks& ranks = out.classes[c];
    ranks = ClassRanks{};
    if (!queues_[c].Empty()) ranks.next_rank = Meta(table_[queues_[c].PeekMin()].front())->rank;
  }
  // An idle burst is taken only when nothing is queued, and filed before anything else is: the
  // class's next head is the burst's first unsent packet.
  if (idle_next_ != idle_end_) out.classes[0].next_rank = Meta(idle_[idle_next_].pkt)->rank;
}

// Each packet of an idle burst is a message of its own (a burst holding a message twice is never
// taken as one), in the table only if an earlier packet of it waited there.
template <typename RankQueue>
void BasicScheduler<RankQueue>::InspectIdleBurst(SchedulerDetail& out,
                                                 const InspectionCursor& cursor) const {
  for (uint16_t i = idle_next_; i < idle_end_; ++i) {
    const PacketMeta& pm = *Meta(idle_[i].pkt);
    const uint32_t slot = table_.Find(pm.message_id);
    QueuedMessage q;
    q.message_id = pm.message_id;
    q.head_arrival_tsc = pm.arrival_tsc;
    q.bytes_queued = idle_[i].len;
    q.bytes_sent = slot != kNoId ? table_[slot].bytes_sent : 0;
    q.packets = 1;
    q.slot = kNoId;
    KeepIfTop(out.top, q, cursor.top_n);
    const bool sample =
        out.queued_messages++ % cursor.stride == 0 && out.sampled_heads < cursor.max_samples;
    CountHead(out.classes[0], sample ? &pm : nullptr);
    out.sampled_heads += sample;
  }
}

template <typename RankQueue>
void BasicScheduler<RankQueue>::Inspect(SchedulerDetail& out, uint32_t top_n, uint32_t max_samples,
                                        uint64_t now) const {
  InspectionCursor cursor = BeginInspection(out, top_n, max_samples);
  InspectSlots(out, cursor, UINT32_MAX);
  EndInspection(out, now);
}

template <typename RankQueue>
InspectionCursor BasicScheduler<RankQueue>::BeginInspection(SchedulerDetail& out, uint32_t top_n,
                                                            uint32_t max_samples) const {
  StartInspection(out);
  if (out.top.capacity() < top_n) out.top.reserve(top_n);
  // Every stride-th queued message has its head read: at most max_samples, spread over the whole
  // table rather than its first slots. A queued message holds a packet at least, so there are no
  // more of them than packets queued (far fewer than live messages when many wait for more).
  const uint64_t idle = idle_end_ - idle_next_;
  const uint64_t candidates = idle + std::min<uint64_t>(uint64_t{table_.live()} + classes_.size(),
                                                        buffered_packets_ - idle);
  InspectionCursor cursor;
  cursor.end = out.slots_scanned;
  cursor.top_n = top_n;
  cursor.max_samples = max_samples;
  cursor.stride = max_samples == 0
                      ? UINT64_MAX
                      : std::max<uint64_t>(1, (candidates + max_samples - 1) / max_samples);
  InspectIdleBurst(out, cursor);
  return cursor;
}

template <typename RankQueue>
bool BasicScheduler<RankQueue>::InspectSlots(SchedulerDetail& out, InspectionCursor& cursor,
                                             uint32_t budget) const {
  const uint32_t stop =
      cursor.end - cursor.next_slot > budget ? cursor.next_slot + budget : cursor.end;
  for (uint32_t slot = cursor.next_slot; slot < stop; ++slot) {
    // bytes_queued shares the state's arrival line with the flags and the ring: a slot costs
    // that one line, and only queued ones have their head line read too.
    const MessageState& m = table_[slot];
    if (!(m.flags & kMsgInUse) || m.bytes_queued == 0) continue;
    QueuedMessage q;
    q.message_id = m.message_id;
    q.bytes_queued = m.bytes_queued;
    q.bytes_sent = m.bytes_sent;
    q.packets = m.ring_count;
    q.more_packets = m.overflow_head != nullptr;
    q.slot = slot;
    q.class_id = m.class_id;
    q.default_queue = (m.flags & kMsgDefault) != 0;
    // The head's age is read now, from the state, for the few that make the list: by the end of
    // a scan spread over polls the slot may hold another message.
    if (WouldKeep(out.top, q, cursor.top_n)) {
      q.head_arrival_tsc = m.head_arrival;
      KeepIfTop(out.top, q, cursor.top_n);
    }
    const bool sample =
        out.queued_messages++ % cursor.stride == 0 && out.sampled_heads < cursor.max_samples;
    CountHead(out.classes[m.class_id], sample ? Meta(m.front()) : nullptr);
    out.sampled_heads += sample;
  }
  cursor.next_slot = stop;
  return stop == cursor.end;
}

template <typename RankQueue>
void BasicScheduler<RankQueue>::EndInspection(SchedulerDetail& out, uint64_t now) const {
  std::sort_heap(out.top.begin(), out.top.end(), ListedBefore);
  out.taken_tsc = now;
}

// scheduler.h declares the class's instantiations extern, so every member defined here is
// instantiated here.
template void BasicScheduler<FfsRankQueue>::Inspect(SchedulerDetail&, uint32_t, uint32_t,
                                                    uint64_t) const;
template InspectionCursor BasicScheduler<FfsRankQueue>::BeginInspection(SchedulerDetail&, uint32_t,
                                                                        uint32_t) const;
template bool BasicScheduler<FfsRankQueue>::InspectSlots(SchedulerDetail&, InspectionCursor&,
                                                         uint32_t) const;
template void BasicScheduler<FfsRankQueue>::EndInspection(SchedulerDetail&, uint64_t) const;
template void BasicScheduler<FfsRankQueue>::StartInspection(SchedulerDetail&) const;
template void BasicScheduler<FfsRankQueue>::InspectIdleBurst(SchedulerDetail&,
                                                             const InspectionCursor&) const;
template void BasicScheduler<HeapRankQueue>::Inspect(SchedulerDetail&, uint32_t, uint32_t,
                                                     uint64_t) const;
template InspectionCursor BasicScheduler<HeapRankQueue>::BeginInspection(SchedulerDetail&, uint32_t,
                                                                         uint32_t) const;
template bool BasicScheduler<HeapRankQueue>::InspectSlots(SchedulerDetail&, InspectionCursor&,
                                                          uint32_t) const;
template void BasicScheduler<HeapRankQueue>::EndInspection(SchedulerDetail&, uint64_t) const;
template void BasicScheduler<HeapRankQueue>::StartInspection(SchedulerDetail&) const;
template void BasicScheduler<HeapRankQueue>::InspectIdleBurst(SchedulerDetail&,
                                                              const InspectionCursor&) const;

}  // namespace qosvisor::sched
