// A live reconfiguration: the new tree takes over the old one's table and queues as they are when
// the change leaves ranking alone (AdoptQueues); otherwise what the old one remembered of the past
// (InheritPolicyState, before the old tree's packets move over). Then its counts (ContinueFrom).
// All run on the uplink's lcore between two polls, so neither tree sees a packet meanwhile.
#include <cassert>
#include <utility>

#include "sched/scheduler.h"

namespace qosvisor::sched {

template <typename RankQueue>
void BasicScheduler<RankQueue>::InheritPolicyState(const BasicScheduler& before,
                                                   std::span<const int32_t> class_of_old) {
  // Only a tree that has seen nothing yet: what it holds would be mixed with the old tree's past.
  assert(table_.live() == 0 && buffered_packets_ == 0);
  if (table_.live() != 0 || buffered_packets_ != 0) return;
  // (Before the move, which runs the old pacer on a clock far ahead.)
  pacer_.ContinueFrom(before.pacer_);
  bool any = false;  // the table is scanned only when some class ranks by its messages' past
  for (size_t old = 0; old < before.classes_.size(); ++old) {
    const int32_t c = NewClassOf(old, class_of_old);
    if (c < 0) continue;
    any |= RanksByMessagePast(static_cast<uint16_t>(c));
    if (classes_[c].policy != before.classes_[old].policy) continue;
    classes_[c].vtime = before.classes_[old].vtime;
    // A paced class's queued heads reserved their send times there, and reserve again here: the
    // schedule goes on from the end of the old one's, so that nothing is sent sooner than it was
    // due, nor faster than the class's rate (each waiting head is later by the time the others
    // had reserved ahead of it: reproducing the old times exactly would need every moved head's
    // old reservation, which re-ranking does not see).
    classes_[c].next_send_tsc = before.classes_[old].next_send_tsc;
  }
  if (!any) return;
  // Queued messages first: their packets are about to be ranked here. Then the messages waiting
  // for more, as long as the table keeps a slot for every packet that moves (a message of one
  // packet, or one that found no room here, takes a fresh slot when its packet arrives).
  const uint32_t waiting = InheritMessages(before, class_of_old, /*queued=*/true, 0);
  if (waiting != 0) InheritMessages(before, class_of_old, /*queued=*/false, waiting);
}

template <typename RankQueue>
bool BasicScheduler<RankQueue>::AdoptQueues(BasicScheduler& before) {
  assert(table_.live() == 0 && buffered_packets_ == 0);
  if (table_.live() != 0 || buffered_packets_ != 0 || !RanksAndKeepsAs(before)) return false;
  // What an idle burst left unsent sits outside the table: filed, it moves with the table.
  if (before.idle_next_ != before.idle_end_) before.FileIdleBurst();
  // The rank queues link the table's slots by index, and each class's default queue is the slot
  // of its index in both trees: the two move together and stay consistent.
  std::swap(table_, before.table_);
  std::swap(queues_, before.queues_);
  std::swap(table_pages_, before.table_pages_);
  std::swap(buffered_bytes_, before.buffered_bytes_);
  std::swap(buffered_packets_, before.buffered_packets_);
  std::swap(reclaim_visits_owed_, before.reclaim_visits_owed_);
  pacer_.ContinueFrom(before.pacer_);
  if (ShortensIdleTimes(before)) OweSweepVisitsFor(table_.live());
  for (uint16_t c = 0; c < classes_.size(); ++c) {
    classes_[c].vtime = before.classes_[c].vtime;
    classes_[c].next_send_tsc = before.classes_[c].next_send_tsc;
    if (!queues_[c].Empty()) ActivateClass(c);
  }
  return true;
}

// Whether some class's waiting messages now keep their slots for less time than under `before`.
template <typename RankQueue>
bool BasicScheduler<RankQueue>::ShortensIdleTimes(const BasicScheduler& before) const {
  for (size_t c = 0; c < idle_timeouts_.size(); ++c) {
    const uint32_t is = idle_timeouts_[c], was = before.idle_timeouts_[c];
    if (is != 0 && (was == 0 || is < was)) return true;
  }
  return false;
}

// Whether this tree ranks every queued packet and finds every message as `before` does, and has
// room for what it queues (see AdoptQueues).
template <typename RankQueue>
bool BasicScheduler<RankQueue>::RanksAndKeepsAs(const BasicScheduler& before) const {
  const SchedulerConfig& was = before.config_;
  const SchedulerConfig& is = config_;
  if (hz_ != before.hz_ || table_.capacity() != before.table_.capacity() ||
      is.rank_buckets != was.rank_buckets || is.huge_pages != was.huge_pages ||
      is.message_hash_key != was.message_hash_key || is.classes.size() != was.classes.size()) {
    return false;
  }
  for (size_t c = 0; c < is.classes.size(); ++c) {
    const ClassConfig& a = was.classes[c];
    const ClassConfig& b = is.classes[c];
    if (a.name != b.name || a.policy != b.policy || a.rank_shift != b.rank_shift ||
        a.deadline_ns != b.deadline_ns || a.srpt_aging_ns != b.srpt_aging_ns) {
      return false;
    }
  }
  // A lower per-message limit would have the move drop what a message queued beyond it.
  const bool limit_kept =
      is.message_limit_bytes == 0 ||
      (was.message_limit_bytes != 0 && is.message_limit_bytes >= was.message_limit_bytes);
  return limit_kept && before.buffered_packets_ <= is.buffer_packets &&
         before.buffered_bytes_ <= is.buffer_bytes;
}

// Whether class c's ranks read what its messages did before (las, wfq, srpt with aging): pace
// keeps its past in the class, the others in nothing but the packet.
template <typename RankQueue>
bool BasicScheduler<RankQueue>::RanksByMessagePast(uint16_t c) const {
  const ClassConfig& cc = config_.classes[c];
  return !RanksNeedNoMessageState(cc) && cc.policy != Policy::kPace;
}

// The class here of old class `old`, or -1 (removed, or a map that names no class of this tree).
template <typename RankQueue>
int32_t BasicScheduler<RankQueue>::NewClassOf(size_t old,
                                              std::span<const int32_t> class_of_old) const {
  if (old >= class_of_old.size()) return -1;
  const int32_t c = class_of_old[old];
  return c >= 0 && static_cast<size_t>(c) < classes_.size() ? c : -1;
}

// Copies into this table the messages of `before` that are queued (or, `queued` false, that wait
// for more packets) in classes that rank by their past, with what they remember: the bytes each
// sent (las), and its tag (wfq's finish tag, srpt's first arrival) where the class's policy reads
// it the same way. The queued pass returns how many waiting messages it passed over, and the
// waiting pass, told that count, stops at the last of them rather than at the table's end (or is
// not run when there are none: an uplink whose messages all have packets queued).
template <typename RankQueue>
uint32_t BasicScheduler<RankQueue>::InheritMessages(const BasicScheduler& before,
                                                    std::span<const int32_t> class_of_old,
                                                    bool queued, uint32_t waiting) {
  const MessageTable& from = before.table_;
  const uint64_t keep_free = before.buffered_packets_;
  // The old slots are read in order (the hardware prefetches them); the new index positions are
  // random, so a batch of them is hashed and loaded before any is written.
  constexpr uint32_t kBatch = 16;
  uint32_t batch[kBatch];
  uint32_t homes[kBatch];
  uint32_t n = 0;
  auto copy_batch = [&] {
    for (uint32_t i = 0; i < n; ++i) {
      if (!queued && table_.free_slots() <= keep_free) return false;
      InheritMessage(before, from[batch[i]], class_of_old, homes[i]);
    }
    n = 0;
    return true;
  };
  uint32_t waiting_seen = 0;
  for (uint32_t slot = 0; slot < from.used_end(); ++slot) {
    const MessageState& m = from[slot];
    if (!CarriesOver(m, class_of_old)) continue;
    if (m.empty() == queued) {  // the other pass's; the queued pass counts the waiting ones
      waiting_seen += queued;
      continue;
    }
    homes[n] = table_.IndexOf(m.message_id);
    table_.PrefetchIndexAt(homes[n]);
    batch[n++] = slot;
    if (n == kBatch && !copy_batch()) return waiting_seen;
    if (!queued && ++waiting_seen == waiting) break;
  }
  copy_batch();
  return waiting_seen;
}

// Whether old message state `m` carries over (see InheritMessages).
template <typename RankQueue>
bool BasicScheduler<RankQueue>::CarriesOver(const MessageState& m,
                                            std::span<const int32_t> class_of_old) const {
  // Default queues hold no message's state; a message of one packet has no past.
  if ((m.flags & (kMsgInUse | kMsgDefault | kMsgUnindexed)) != kMsgInUse) return false;
  const int32_t c = NewClassOf(m.class_id, class_of_old);
  return c >= 0 && RanksByMessagePast(static_cast<uint16_t>(c));
}

template <typename RankQueue>
void BasicScheduler<RankQueue>::InheritMessage(const BasicScheduler& before, const MessageState& m,
                                               std::span<const int32_t> class_of_old,
                                               uint32_t home) {
  const auto c = static_cast<uint16_t>(NewClassOf(m.class_id, class_of_old));
  const uint32_t to = table_.Insert(m.message_id, c, home);
  if (to == kNoId) return;  // no room, or its index window is full here: it starts afresh
  MessageState& n = table_[to];
  n.bytes_sent = m.bytes_sent;
  n.last_active = m.last_active;
  n.tag = InheritedTag(m, before.classes_[m.class_id].policy, classes_[c].policy);
  // A message quiet in the old tree may be past its time already: the hand must find it as soon
  // as it would find a new one.
  OweSweepVisits(c);
}

// A message's tag under its new class's policy.
template <typename RankQueue>
uint64_t BasicScheduler<RankQueue>::InheritedTag(const MessageState& m, Policy was, Policy is) {
  if (was != is) {
    // A message new to srpt counts its age from its last head's arrival: it ages no faster than
    // it did. wfq starts it at the class's virtual time.
    return is == Policy::kSrpt ? m.head_arrival : 0;
  }
  // wfq ranked a queued head already, which moved the tag to the head's finish; ranked again
  // here, the head must start where it started.
  if (is == Policy::kWfq && !m.empty()) return m.tag - m.head_len;
  return m.tag;
}

template <typename RankQueue>
void BasicScheduler<RankQueue>::ContinueFrom(const SchedulerStats& before,
                                             std::span<const int32_t> class_of_old, uint64_t gone) {
  for (size_t old = 0; old < before.classes.size() && old < class_of_old.size(); ++old) {
    if (class_of_old[old] < 0 || static_cast<size_t>(class_of_old[old]) >= stats_.size()) continue;
    const ClassStats& b = before.classes[old];
    ClassStats& st = stats_[class_of_old[old]];
    // Every packet this class holds came from `b`'s queue, so its own counts of arrivals and
    // departures are the move's and are replaced; drops during the move (a smaller buffer) add.
    st.enqueued_packets = b.enqueued_packets;
    st.enqueued_bytes = b.enqueued_bytes;
    st.dequeued_packets = b.dequeued_packets;
    st.dequeued_bytes = b.dequeued_bytes;
    st.dropped_tail += b.dropped_tail;
    st.dropped_worst += b.dropped_worst;
    st.dropped_message_limit += b.dropped_message_limit;
    st.dropped_bytes += b.dropped_bytes;
    st.rank_clamped += b.rank_clamped;
    st.table_full_fallback += b.table_full_fallback;
    st.probe_limit_fallback += b.probe_limit_fallback;
    for (int k = 0; k < kSojournBuckets; ++k) st.sojourn[k] += b.sojourn[k];
    st.sojourn_cycles += b.sojourn_cycles;
  }
  dropped_unknown_class_ += before.dropped_unknown_class;
  reclaimed_idle_ += before.messages_reclaimed_idle;
  idle_burst_packets_ += before.idle_burst_packets;
  dropped_reconfigured_ += before.dropped_reconfigured + gone;
}

// scheduler.h declares the class's instantiations extern, so every member defined here is
// instantiated here.
template void BasicScheduler<FfsRankQueue>::InheritPolicyState(const BasicScheduler&,
                                                               std::span<const int32_t>);
template bool BasicScheduler<FfsRankQueue>::AdoptQueues(BasicScheduler&);
template bool BasicScheduler<FfsRankQueue>::ShortensIdleTimes(const BasicScheduler&) const;
template bool BasicScheduler<FfsRankQueue>::RanksAndKeepsAs(const BasicScheduler&) const;
template int32_t BasicScheduler<FfsRankQueue>::NewClassOf(size_t, std::span<const int32_t>) const;
template uint64_t BasicScheduler<FfsRankQueue>::InheritedTag(const MessageState&, Policy, Policy);
template bool BasicScheduler<FfsRankQueue>::RanksByMessagePast(uint16_t) const;
template bool BasicScheduler<FfsRankQueue>::CarriesOver(const MessageState&,
                                                        std::span<const int32_t>) const;
template void BasicScheduler<FfsRankQueue>::InheritMessage(const BasicScheduler&,
                                                           const MessageState&,
                                                           std::span<const int32_t>, uint32_t);
template uint32_t BasicScheduler<FfsRankQueue>::InheritMessages(const BasicScheduler&,
                                                                std::span<const int32_t>, bool,
                                                                uint32_t);
template void BasicScheduler<FfsRankQueue>::ContinueFrom(const SchedulerStats&,
                                                         std::span<const int32_t>, uint64_t);
template void BasicScheduler<HeapRankQueue>::InheritPolicyState(const BasicScheduler&,
                                                                std::span<const int32_t>);
template bool BasicScheduler<HeapRankQueue>::AdoptQueues(BasicScheduler&);
template bool BasicScheduler<HeapRankQueue>::ShortensIdleTimes(const BasicScheduler&) const;
template bool BasicScheduler<HeapRankQueue>::RanksAndKeepsAs(const BasicScheduler&) const;
template int32_t BasicScheduler<HeapRankQueue>::NewClassOf(size_t, std::span<const int32_t>) const;
template uint64_t BasicScheduler<HeapRankQueue>::InheritedTag(const MessageState&, Policy, Policy);
template bool BasicScheduler<HeapRankQueue>::RanksByMessagePast(uint16_t) const;
template bool BasicScheduler<HeapRankQueue>::CarriesOver(const MessageState&,
                                                         std::span<const int32_t>) const;
template void BasicScheduler<HeapRankQueue>::InheritMessage(const BasicScheduler&,
                                                            const MessageState&,
                                                            std::span<const int32_t>, uint32_t);
template uint32_t BasicScheduler<HeapRankQueue>::InheritMessages(const BasicScheduler&,
                                                                 std::span<const int32_t>, bool,
                                                                 uint32_t);
template void BasicScheduler<HeapRankQueue>::ContinueFrom(const SchedulerStats&,
                                                          std::span<const int32_t>, uint64_t);

}  // namespace qosvisor::sched
