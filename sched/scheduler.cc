// The scheduler's data path (Enqueue/Dequeue, inlined policies and rank queues) and its set-up.
// Both rank-queue flavours are instantiated here, so callers never see the template bodies.
#include "sched/scheduler.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <numeric>

#include "common/tsc.h"

namespace qosvisor::sched {
namespace {

constexpr uint32_t kReclaimBudget = 2;  // idle slots inspected per Dequeue call
// ... and for every message (not marked whole) created in a class whose messages end by going
// quiet, owed until paid (see kMaxReclaimVisits): at a steady rate of up to 128 such messages a
// call the hand passes every used slot at least once while a quarter of the table's worth of them
// comes in, so the slots that died and were not seen yet stay under a quarter of the table. (Other
// messages end with their last packet, or hold their slot for the uplink's long timeout, where a
// faster hand would not make room sooner.)
constexpr uint32_t kVisitsPerQuietMessage = 4;
// The most one Dequeue call visits (a few microseconds of cold slots): the visits owed beyond it
// are paid by the next calls, so a poll that created many such messages does not stall.
constexpr uint32_t kMaxReclaimVisits = 512;
// Dequeue's pipeline depth: a DRAM miss here costs several picks' work, so message states are
// asked for this many picks ahead, and the packets of the pick after next (at most kRingAhead
// from its ring) once its state is near.
constexpr uint32_t kStatesAhead = 8;
constexpr uint8_t kRingAhead = 3;
// Below this many live messages their states stay in L2 (4,096 x 128 B = 512 KiB): the
// lookahead, and Enqueue's early loads of head lines, would only cost their instructions (the
// lookahead about a fifth of a packet's time at 64 messages).
constexpr uint32_t kLookaheadFrom = 4096;
// How many packets ahead Enqueue loads the head lines of messages that an arrival will give a
// head: their arrival lines, asked for while the burst was staged, have arrived by then.
constexpr uint16_t kHeadLinesAhead = 4;

// How long a packet that arrived at `arrival` has waited at `now`. A packet handed over from
// another lcore carries that lcore's time, which may be a little later than the time the owner's
// poll began: it has not waited (rather than for 2^64 cycles).
uint64_t Waited(uint64_t now, uint64_t arrival) { return now > arrival ? now - arrival : 0; }

// A class's own idle time is when its messages' senders start a new one (the tcp-gap identifier
// on the bridge's lcore). Packets the identifier counted into a burst may still be on their way
// here (a handoff ring, a long poll), and one that came after its slot went back would start the
// burst afresh: the slot stays for the longer of twice the idle time and the idle time plus 1 ms.
uint64_t QuietNs(uint64_t own_idle_ns) {
  return own_idle_ns + std::max<uint64_t>(own_idle_ns, 1'000'000);  // (Validate bounds it)
}

// `ns` in kIdleShift units of the TSC, rounded up: the coarse clock rounds both ends of an
// interval down, which can make it look one unit longer. At most 2^30 units (about 7 h at
// 2.6 GHz; Validate allows an hour): the sweep reads ages as signed 32-bit numbers, positive up
// to 2^31 units, so a message past its timeout stays visibly so for at least 2^30 units more.
uint32_t IdleUnits(uint64_t ns, uint64_t hz) {
  if (ns == 0) return 0;
  const uint64_t units = (NsToTsc(ns, hz) >> kIdleShift) + 2;
  return static_cast<uint32_t>(std::min<uint64_t>(uint64_t{1} << 30, units));
}

}  // namespace

template <typename RankQueue>
Result<std::unique_ptr<BasicScheduler<RankQueue>>> BasicScheduler<RankQueue>::Create(
    const SchedulerConfig& config, DropSink drop_sink, void* drop_context) {
  if (Status s = Validate(config); !s.ok()) return s;
  if (drop_sink == nullptr) {
    return Status::Error("scheduler needs a drop sink to hand dropped packets back to");
  }
  uint64_t hz = config.tsc_hz != 0 ? config.tsc_hz : TscHz();
  return std::unique_ptr<BasicScheduler>(new BasicScheduler(config, drop_sink, drop_context, hz));
}

template <typename RankQueue>
BasicScheduler<RankQueue>::BasicScheduler(const SchedulerConfig& config, DropSink sink,
                                          void* context, uint64_t hz)
    : config_(config),
      hz_(hz),
      drop_sink_(sink),
      drop_context_(context),
      table_(config.max_messages + static_cast<uint32_t>(config.classes.size()),
             static_cast<uint32_t>(config.classes.size()),
             config.message_hash_key.value_or(HashKey::Random()),
             PageOptions{.hugetlb = config.huge_pages, .transparent = config.huge_pages}) {
  size_t n = config_.classes.size();
  if (config_.tenants.empty()) {
    TenantConfig all;
    all.name = "default";
    all.class_share = config_.class_share_default;
    all.classes.resize(n);
    std::iota(all.classes.begin(), all.classes.end(), uint16_t{0});
    config_.tenants.push_back(all);
  }
  classes_.resize(n);
  stats_.resize(n);
  class_pos_.resize(n);
  queues_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const ClassConfig& cc = config_.classes[i];
    ClassState& cs = classes_[i];
    cs = MakeClassState(cc, hz_);
    any_gated_ |= cs.time_gated;
    cs.default_slot = static_cast<uint32_t>(i);
    table_[cs.default_slot].class_id = static_cast<uint16_t>(i);
    RankQueueConfig qc = MakeRankQueueConfig(cc, hz_, config_.rank_buckets, table_.capacity());
    qc.pages = PageOptions{.hugetlb = config_.huge_pages, .transparent = config_.huge_pages};
    queues_.emplace_back(qc, table_.nodes());
  }
  PageTally tally;
  table_.TallyPages(tally);
  for (const RankQueue& q : queues_) q.TallyPages(tally);
  table_pages_ = tally.result();
  // Positions in the masks follow (priority, index), so find-first-set gives the first priority.
  tenants_.resize(config_.tenants.size());
  tenant_pos_.resize(config_.tenants.size());
  std::vector<uint16_t> order(config_.tenants.size());
  std::iota(order.begin(), order.end(), uint16_t{0});
  std::stable_sort(order.begin(), order.end(), [this](uint16_t a, uint16_t b) {
    return config_.tenants[a].priority < config_.tenants[b].priority;
  });
  for (size_t p = 0; p < order.size(); ++p) {
    tenant_at_[p] = order[p];
    tenant_pos_[order[p]] = static_cast<uint8_t>(p);
  }
  for (size_t t = 0; t < config_.tenants.size(); ++t) {
    const TenantConfig& tc = config_.tenants[t];
    TenantState& ts = tenants_[t];
    ts.class_share = tc.class_share;
    ts.weight = tc.weight;
    ts.charge_classes = tc.class_share == Share::kWfq && tc.classes.size() > 1;
    std::vector<uint16_t> cls = tc.classes;
    std::stable_sort(cls.begin(), cls.end(), [this](uint16_t a, uint16_t b) {
      return config_.classes[a].priority < config_.classes[b].priority;
    });
    for (size_t p = 0; p < cls.size(); ++p) {
      ts.class_at[p] = cls[p];
      class_pos_[cls[p]] = static_cast<uint8_t>(p);
      classes_[cls[p]].tenant = static_cast<uint16_t>(t);
    }
  }
  single_plain_class_ = n == 1 && !any_gated_;
  charge_tenants_ = config_.tenant_share == Share::kWfq && config_.tenants.size() > 1;
  charges_shares_ = charge_tenants_;
  for (const TenantState& t : tenants_) charges_shares_ |= t.charge_classes;
  idle_bursts_ =
      single_plain_class_ && !charges_shares_ && RanksNeedNoMessageState(config_.classes[0]);
  uint32_t burst = config_.pacer_burst_bytes != 0 ? config_.pacer_burst_bytes : 32 * 1538;
  pacer_ = Pacer(config_.pacing_bps, hz_, burst);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t own = config_.classes[i].message_idle_ns;
    idle_timeouts_.push_back(
        IdleUnits(own != 0 ? QuietNs(own) : config_.message_idle_timeout_ns, hz_));
    reclaims_idle_ |= idle_timeouts_.back() != 0;
    classes_[i].ends_quietly = own != 0;
  }
}

template <typename RankQueue>
void BasicScheduler<RankQueue>::ActivateClass(uint16_t c) {
  ClassState& cs = classes_[c];
  TenantState& t = tenants_[cs.tenant];
  cs.share_start = std::max(t.vtime, cs.share_finish);
  t.active_classes |= uint64_t{1} << class_pos_[c];
  uint64_t tbit = uint64_t{1} << tenant_pos_[cs.tenant];
  if (!(active_tenants_ & tbit)) {
    t.share_start = std::max(vtime_, t.share_finish);
    active_tenants_ |= tbit;
  }
}

template <typename RankQueue>
void BasicScheduler<RankQueue>::DeactivateClass(uint16_t c) {
  ClassState& cs = classes_[c];
  TenantState& t = tenants_[cs.tenant];
  t.active_classes &= ~(uint64_t{1} << class_pos_[c]);
  if (t.active_classes == 0) active_tenants_ &= ~(uint64_t{1} << tenant_pos_[cs.tenant]);
}

// Start-time fair queuing at both levels: V = start tag of what is sent, F = S + bytes / weight.
template <typename RankQueue>
void BasicScheduler<RankQueue>::ChargeShares(uint16_t c, uint32_t bytes, bool class_active) {
  ClassState& cs = classes_[c];
  TenantState& t = tenants_[cs.tenant];
  if (t.charge_classes) {
    t.vtime = cs.share_start;
    cs.share_finish = cs.share_start + (uint64_t{bytes} << 16) / cs.weight;
    if (class_active) cs.share_start = cs.share_finish;
  }
  if (charge_tenants_) {
    vtime_ = t.share_start;
    t.share_finish = t.share_start + (uint64_t{bytes} << 16) / t.weight;
    if (t.active_classes != 0) t.share_start = t.share_finish;
  }
}

template <typename RankQueue>
bool BasicScheduler<RankQueue>::Eligible(uint16_t c, uint64_t now) const {
  if (!classes_[c].time_gated) return true;
  const MessageState& m = table_[queues_[c].PeekMin()];
  return Meta(m.front())->rank <= now;
}

template <typename RankQueue>
int BasicScheduler<RankQueue>::SelectInTenant(uint16_t tenant, uint64_t now) const {
  const TenantState& t = tenants_[tenant];
  uint64_t mask = t.active_classes;
  if (mask == 0) return -1;
  if ((mask & (mask - 1)) == 0) {
    uint16_t c = t.class_at[std::countr_zero(mask)];
    return Eligible(c, now) ? c : -1;
  }
  if (t.class_share == Share::kPriority) {
    for (; mask != 0; mask &= mask - 1) {
      uint16_t c = t.class_at[std::countr_zero(mask)];
      if (Eligible(c, now)) return c;
    }
    return -1;
  }
  int best = -1;
  for (; mask != 0; mask &= mask - 1) {
    uint16_t c = t.class_at[std::countr_zero(mask)];
    if (!Eligible(c, now)) continue;
    if (best < 0 || classes_[c].share_start < classes_[best].share_start) best = c;
  }
  return best;
}

template <typename RankQueue>
int BasicScheduler<RankQueue>::SelectClass(uint64_t now) const {
  uint64_t mask = active_tenants_;
  if (mask == 0) return -1;
  if ((mask & (mask - 1)) == 0) return SelectInTenant(tenant_at_[std::countr_zero(mask)], now);
  if (config_.tenant_share == Share::kPriority) {
    for (; mask != 0; mask &= mask - 1) {
      int c = SelectInTenant(tenant_at_[std::countr_zero(mask)], now);
      if (c >= 0) return c;
    }
    return -1;
  }
  if (!any_gated_) {
    // Every active tenant has a sendable class: the smallest start tag wins.
    int best = -1;
    for (; mask != 0; mask &= mask - 1) {
      int t = tenant_at_[std::countr_zero(mask)];
      if (best < 0 || tenants_[t].share_start < tenants_[best].share_start) best = t;
    }
    return SelectInTenant(static_cast<uint16_t>(best), now);
  }
  int best = -1, best_class = -1;
  for (; mask != 0; mask &= mask - 1) {
    int t = tenant_at_[std::countr_zero(mask)];
    int c = SelectInTenant(static_cast<uint16_t>(t), now);
    if (c < 0) continue;
    if (best < 0 || tenants_[t].share_start < tenants_[best].share_start) {
      best = t;
      best_class = c;
    }
  }
  return best_class;
}

template <typename RankQueue>
[[gnu::always_inline]] inline void BasicScheduler<RankQueue>::PushHead(uint16_t c, uint32_t slot,
                                                                       uint64_t now) {
  MessageState& m = table_[slot];
  // The packets behind the new head are the next ones this message ranks: start loading them.
  if (rte_mbuf* p = m.at(1)) __builtin_prefetch(Meta(p));
  if (rte_mbuf* p = m.at(2)) __builtin_prefetch(Meta(p));
  // When the head leaves, PopFront moves the first overflow packet into the ring and reads its
  // link: a long message (srpt keeps sending the one closest to done) would wait for that cold
  // mbuf on every packet, so it is loaded a turn ahead.
  if (m.overflow_head != nullptr) __builtin_prefetch(Meta(m.overflow_head));
  PacketMeta& hm = *Meta(m.front());
  TakeHeadFields(m, hm);
  hm.rank = ComputeRank(hm, m, classes_[c], now);
  RankQueue& q = queues_[c];
  bool was_empty = q.Empty();
  stats_[c].rank_clamped += q.Push(slot, hm.rank);
  if (was_empty) ActivateClass(c);
}

// Files the message's front packet, already ranked and mapped to `key`, as its class's head.
template <typename RankQueue>
void BasicScheduler<RankQueue>::FileHead(uint16_t c, uint32_t slot, uint64_t key) {
  MessageState& m = table_[slot];
  TakeHeadFields(m, *Meta(m.front()));
  RankQueue& q = queues_[c];
  bool was_empty = q.Empty();
  q.PushKey(slot, key);
  if (was_empty) ActivateClass(c);
}

template <typename RankQueue>
uint32_t BasicScheduler<RankQueue>::ResolveSlot(const PacketMeta& pm, uint32_t home) {
  // Classification may hand the slot over (it learnt it from an earlier packet); trust it only
  // when it still holds this message. An unindexed slot holds a message of one packet, which no
  // other packet joins: its slot may be freed (by an eviction) before this packet is admitted.
  const uint32_t hint = pm.message_slot;
  if (hint < table_.capacity() && HoldsMessage(hint, pm.message_id)) return hint;
  return table_.FindFrom(pm.message_id, home != kNoId ? home : table_.IndexOf(pm.message_id));
}

// A fresh slot, its tag set, for the message of `pm` in class c; or, when the table or the id's
// probe window is full, the class's default queue (counted as a fallback, by cause).
template <typename RankQueue>
uint32_t BasicScheduler<RankQueue>::NewMessageSlot(const PacketMeta& pm, uint16_t c,
                                                   bool* created, uint32_t home) {
  const uint32_t slot =
      (pm.flags & kMetaWholeMessage)
          ? table_.InsertUnindexed(pm.message_id, c)
          : table_.Insert(pm.message_id, c, home != kNoId ? home : table_.IndexOf(pm.message_id));
  *created = slot != kNoId;
  if (slot == kNoId) {
    ++(table_.free_slots() == 0 ? stats_[c].table_full_fallback : stats_[c].probe_limit_fallback);
    return classes_[c].default_slot;
  }
  table_[slot].tag = InitialTag(pm, classes_[c]);
  // (A message of one packet frees its slot as it leaves: the hand need not look for it.)
  if (!(pm.flags & kMetaWholeMessage)) OweSweepVisits(c);
  return slot;
}

// A message of class c took a slot: if the class's messages end by going quiet, the hand owes
// the table its visits for it.
template <typename RankQueue>
void BasicScheduler<RankQueue>::OweSweepVisits(uint16_t c) {
  if (classes_[c].ends_quietly) OweSweepVisitsFor(1);
}

template <typename RankQueue>
void BasicScheduler<RankQueue>::OweSweepVisitsFor(uint64_t messages) {
  reclaim_visits_owed_ = std::min<uint64_t>(
      reclaim_visits_owed_ + kVisitsPerQuietMessage * messages, uint64_t{table_.capacity()} * 2);
}

template <typename RankQueue>
void BasicScheduler<RankQueue>::DropWorst(uint16_t c, uint64_t now) {
  RankQueue& q = queues_[c];
  uint32_t slot = q.PeekMax();
  q.Remove(slot);
  MessageState& m = table_[slot];
  uint32_t len = m.head_len;
  const bool victim_last = m.head_last;
  rte_mbuf* victim = m.PopFront();
  m.bytes_queued -= len;
  buffered_bytes_ -= len;
  --buffered_packets_;
  ClassStats& st = stats_[c];
  ++st.dropped_worst;
  st.dropped_bytes += len;
  const bool emptied = m.empty();
  if (!emptied) PushHead(c, slot, now);
  // A message of one packet gets no other: its slot goes back now. An indexed message keeps its
  // slot for packets still to come, until its idle timeout, unless the victim was its last.
  if (m.flags & kMsgUnindexed) {
    if (emptied) table_.Erase(slot);
  } else if (victim_last) {
    EndWithoutLastPacket(slot);
  }
  if (emptied && q.Empty()) DeactivateClass(c);
  Drop(victim);
}

// The last packet of the message in `slot` was dropped, so nothing more is expected of it: its
// slot goes back as soon as nothing of it waits, as if that packet had been sent. The newest
// packet still queued takes over the last packet's mark (only the scheduler reads it), which
// also travels with it into a reloaded tree. Without this the slot would stay until the idle
// timeout, or for good when there is none, and a table that fills falls back to default queues.
template <typename RankQueue>
void BasicScheduler<RankQueue>::EndWithoutLastPacket(uint32_t slot) {
  MessageState& m = table_[slot];
  if (m.flags & kMsgDefault) return;  // shared by many messages: nothing of one ends it
  if (m.empty()) {
    table_.Erase(slot);
    ++burst_freed_;  // (Enqueue resolved the burst's slots before admitting any)
    return;
  }
  Meta(m.back())->flags |= kMetaLastOfMessage;
  if (m.back() == m.front()) m.head_last = true;  // (the head's fields are copies)
}

// Ranks of different classes are not comparable (bytes, times, virtual times), so overflow picks
// the class the share would serve last: the lowest-priority tenant under a priority share, else
// the tenant with the most bytes queued per weight; inside it, the same rule between classes.
// O(classes), and only on overflow.
template <typename RankQueue>
int BasicScheduler<RankQueue>::VictimClass() const {
  uint64_t tenant_bytes[64] = {};  // at most 64 tenants (the active masks are 64 bits)
  for (size_t c = 0; c < classes_.size(); ++c)
    tenant_bytes[classes_[c].tenant] += stats_[c].now_queued_bytes();
  int victim = -1;
  uint64_t best[4] = {};
  for (size_t c = 0; c < classes_.size(); ++c) {
    if (queues_[c].Empty()) continue;
    const ClassState& cs = classes_[c];
    const TenantConfig& tc = config_.tenants[cs.tenant];
    const bool tenant_prio = config_.tenant_share == Share::kPriority;
    const bool class_prio = tenants_[cs.tenant].class_share == Share::kPriority;
    const uint64_t key[4] = {
        tenant_prio ? tc.priority : 0ull,
        tenant_prio ? 0ull : (tenant_bytes[cs.tenant] << 8) / std::max<uint32_t>(tc.weight, 1),
        class_prio ? cs.priority : 0ull,
        class_prio ? 0ull
                   : (stats_[c].now_queued_bytes() << 8) / std::max<uint32_t>(cs.weight, 1)};
    if (victim < 0 || std::lexicographical_compare(best, best + 4, key, key + 4)) {
      victim = static_cast<int>(c);
      std::copy(key, key + 4, best);
    }
  }
  return victim;
}

template <typename RankQueue>
[[gnu::always_inline]] inline void BasicScheduler<RankQueue>::Admit(rte_mbuf* pkt, uint32_t slot,
                                                                   uint32_t home) {
  PacketMeta& pm = *Meta(pkt);
  uint32_t len = pm.wire_len;
  if (pm.class_id >= classes_.size()) {
    ++dropped_unknown_class_;
    Drop(pkt);
    return;
  }
  uint16_t c = pm.class_id;
  ClassStats& st = stats_[c];
  ++st.enqueued_packets;
  st.enqueued_bytes += len;
  bool created = false;
  if (slot == kNoId) slot = NewMessageSlot(pm, c, &created, home);
  MessageState& m = table_[slot];
  c = m.class_id;  // the message's first packet chose its class
  ClassStats& mst = stats_[c];
  if (&mst != &st) {
    --st.enqueued_packets;
    st.enqueued_bytes -= len;
    ++mst.enqueued_packets;
    mst.enqueued_bytes += len;
  }
  bool over_limit = config_.message_limit_bytes != 0 &&
                    uint64_t{m.bytes_queued} + len > config_.message_limit_bytes;
  bool buffer_full = buffered_bytes_ + len > config_.buffer_bytes ||
                     buffered_packets_ + 1 > config_.buffer_packets;
  if (over_limit || (buffer_full && config_.drop == DropMode::kTail)) {
    if (over_limit) {
      ++mst.dropped_message_limit;
    } else {
      ++mst.dropped_tail;
    }
    mst.dropped_bytes += len;
    if (created) {
      table_.Erase(slot);
    } else if (pm.flags & kMetaLastOfMessage) {
      EndWithoutLastPacket(slot);
    }
    Drop(pkt);
    return;
  }
  buffered_bytes_ += len;
  ++buffered_packets_;
  if (AppendToMessage(pkt, slot)) PushHead(c, slot, pm.arrival_tsc);
  if (!buffer_full) return;  // the buffer holds the arrival
  // pFabric: make room by evicting the worst-ranked head of the class the share would serve last,
  // which may be the arrival's own class and the arrival itself.
  while (buffered_bytes_ > config_.buffer_bytes || buffered_packets_ > config_.buffer_packets) {
    const int victim = VictimClass();
    if (victim < 0) break;
    DropWorst(static_cast<uint16_t>(victim), pm.arrival_tsc);
  }
}

// Queues an admitted packet behind its message's others; returns whether it is the message's head.
template <typename RankQueue>
bool BasicScheduler<RankQueue>::AppendToMessage(rte_mbuf* pkt, uint32_t slot) {
  PacketMeta& pm = *Meta(pkt);
  MessageState& m = table_[slot];
  pm.message_slot = slot;
  m.last_active = static_cast<uint32_t>(pm.arrival_tsc >> kIdleShift);
  m.bytes_queued += pm.wire_len;
  bool was_empty = m.empty();
  m.PushBack(pkt);
  return was_empty;
}

// Starts an empty set of the message ids seen in a burst.
template <typename RankQueue>
void BasicScheduler<RankQueue>::ForgetSeenMessages() {
  if (++stamp_ == 0) {  // the stamps wrapped: forget every old one
    std::fill(std::begin(seen_stamp_), std::end(seen_stamp_), 0);
    stamp_ = 1;
  }
}

// Whether `id` is new to the burst (and remembers it).
template <typename RankQueue>
bool BasicScheduler<RankQueue>::FirstOfMessage(uint64_t id) {
  constexpr uint32_t kMask = 2 * kMaxBurst - 1;
  uint32_t h = static_cast<uint32_t>((id * 0x9E3779B97F4A7C15ull) >> 58) & kMask;
  for (; seen_stamp_[h] == stamp_; h = (h + 1) & kMask) {
    if (seen_id_[h] == id) return false;
  }
  seen_stamp_[h] = stamp_;
  seen_id_[h] = id;
  return true;
}

// The idle-uplink path (see scheduler.h): takes the burst when nothing is queued and the general
// path would neither drop any of it nor fall back to a class's default queue. A message twice in
// the burst ranks its second packet only once the first has left, which sorting cannot express:
// such a burst takes the general path.
template <typename RankQueue>
bool BasicScheduler<RankQueue>::TakeIdleBurst(PacketBatch& batch) {
  const uint16_t n = batch.count;
  if (n == 0 || n > config_.buffer_packets || table_.free_slots() < n) return false;
  // The policy is chosen once for the burst, not once a packet (RanksNeedNoMessageState: no
  // other policy sends idle bursts; fifo and priority both rank by arrival).
  switch (classes_[0].policy) {
    case Policy::kSrpt:
      return TakeIdleBurstRankedBy<SrptPolicy>(batch);
    case Policy::kEdf:
      return TakeIdleBurstRankedBy<EdfPolicy>(batch);
    case Policy::kFifo:
    case Policy::kPriority:
      return TakeIdleBurstRankedBy<FifoPolicy>(batch);
    default:  // ranks that need message state never get here (idle_bursts_ is false)
      assert(false);
      return false;
  }
}

template <typename RankQueue>
template <typename RankPolicy>
bool BasicScheduler<RankQueue>::TakeIdleBurstRankedBy(PacketBatch& batch) {
  const uint16_t n = batch.count;
  const uint32_t limit = config_.message_limit_bytes != 0 ? config_.message_limit_bytes : UINT32_MAX;
  ForgetSeenMessages();
  ClassState& cs = classes_[0];
  RankQueue& q = queues_[0];
  // Keys come from a copy of the queue's mapping, the first finding the queue empty, as they
  // would have on arrival; the copy is kept only if the burst is taken.
  RankKeyMap map = q.key_map();
  uint64_t bytes = 0;
  uint64_t clamped_ranks = 0;
  bool in_order = true;  // keys that never fall with arrival: the arrival order is the order
  uint64_t previous_key = 0;
  // Entries go in arrival order (idle_ holds nothing unsent here), to be sorted in place if need
  // be.
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* pkt = batch.pkts[i];
    PacketMeta& pm = *Meta(pkt);
    if (pm.class_id != 0 || pm.wire_len > limit || !FirstOfMessage(pm.message_id)) return false;
    bytes += pm.wire_len;
    const uint64_t rank = RankPolicy::Rank(pm, no_state_, cs, pm.arrival_tsc);
    pm.rank = rank;
    bool clamped;
    const uint64_t key = map.Map(rank, i == 0, &clamped);
    clamped_ranks += clamped;
    in_order &= key >= previous_key;
    previous_key = key;
    const bool frees_slot =
        (pm.flags & (kMetaLastOfMessage | kMetaWholeMessage)) == kMetaLastOfMessage;
    idle_[i] = IdleEntry{key, pkt, pm.wire_len, i, frees_slot};
  }
  if (bytes > config_.buffer_bytes) return false;
  q.set_key_map(map);
  if (!in_order) SortIdleBurst(n, map.base());
  ClassStats& st = stats_[0];
  st.rank_clamped += clamped_ranks;
  st.enqueued_packets += n;
  st.enqueued_bytes += bytes;
  buffered_packets_ += n;
  buffered_bytes_ += bytes;
  idle_burst_packets_ += n;
  idle_next_ = 0;
  idle_end_ = n;
  batch.count = 0;
  return true;
}

// Orders idle_[0, n), filled in arrival order, by (key, arrival); bursts already in that order
// (equal keys, or keys that grow with arrival time: the common case) never get here. Every key
// lies in the mapping's window [base, base + buckets), at most 2^24 wide, so (key - base,
// arrival) packs into 29 bits, all distinct, and each packet's place is the number of packed
// words below its own: counting all pairs (vectorised, no branches) costs less than an insertion
// sort's mispredictions on mixed ranks.
template <typename RankQueue>
void BasicScheduler<RankQueue>::SortIdleBurst(uint16_t n, uint64_t base) {
  static_assert(kMaxBurst == 32, "arrival positions take 5 bits");
  IdleEntry arrived[kMaxBurst];
  std::copy(idle_, idle_ + n, arrived);
  int32_t packed[kMaxBurst];
  for (uint16_t i = 0; i < n; ++i) {
    assert(arrived[i].key - base < (uint64_t{1} << 24));
    packed[i] = static_cast<int32_t>((arrived[i].key - base) << 5 | i);
  }
  for (uint16_t i = n; i < kMaxBurst; ++i) packed[i] = INT32_MAX;  // above every packet
  for (uint16_t i = 0; i < n; ++i) {
    int32_t place = 0;
    for (uint16_t j = 0; j < kMaxBurst; ++j) place += packed[j] < packed[i];
    idle_[place] = arrived[i];
  }
}

// What is left of an idle burst goes where the general path would have put it on arrival.
template <typename RankQueue>
void BasicScheduler<RankQueue>::FileIdleBurst() {
  IdleEntry rest[kMaxBurst];
  const uint16_t n = static_cast<uint16_t>(idle_end_ - idle_next_);
  std::copy(idle_ + idle_next_, idle_ + idle_end_, rest);
  std::sort(rest, rest + n,
            [](const IdleEntry& a, const IdleEntry& b) { return a.arrival < b.arrival; });
  idle_next_ = idle_end_ = 0;
  for (uint16_t i = 0; i < n; ++i) {
    const PacketMeta& pm = *Meta(rest[i].pkt);
    uint32_t slot = (pm.flags & kMetaWholeMessage) ? kNoId : ResolveSlot(pm, kNoId);
    // (TakeIdleBurst saw room for every packet, and only ReclaimIdle, which frees, ran since: a
    // full table is not expected here, and would be treated as Admit treats it.)
    bool created;
    if (slot == kNoId) slot = NewMessageSlot(pm, 0, &created, kNoId);
    if (AppendToMessage(rest[i].pkt, slot)) FileHead(0, slot, rest[i].key);
  }
}

// A message that once waited keeps its slot while it may send more; its last packet frees it, on
// this path as on the general one (else, without an idle timeout, the slot would never return).
template <typename RankQueue>
void BasicScheduler<RankQueue>::ForgetEndedMessage(rte_mbuf* pkt) {
  if (table_.live() == 0) return;
  const uint32_t slot = table_.Find(Meta(pkt)->message_id);
  if (slot != kNoId && table_[slot].empty()) table_.Erase(slot);
}

// Sends from the idle burst, lowest key first, as far as the batch and the pacer allow. The
// positions and sums live in locals: the batch's stores could otherwise alias the members, which
// would then be reloaded for every packet.
template <typename RankQueue>
uint16_t BasicScheduler<RankQueue>::SendIdleBurst(PacketBatch& batch, uint64_t now) {
  const uint16_t first = idle_next_;
  const auto end = static_cast<uint16_t>(
      std::min<uint32_t>(idle_end_, first + uint32_t{kMaxBurst} - batch.count));
  const bool paced = pacer_.enabled();
  ClassStats& st = stats_[0];
  rte_mbuf** out = batch.pkts + batch.count;
  uint64_t bytes = 0;
  uint64_t waited_sum = 0;
  uint16_t next = first;
  for (; next != end && (!paced || pacer_.CanSend()); ++next) {
    const IdleEntry& e = idle_[next];
    if (e.frees_slot) ForgetEndedMessage(e.pkt);
    const uint64_t waited = Waited(now, Meta(e.pkt)->arrival_tsc);  // filed this poll: in cache
    ++st.sojourn[SojournBucket(waited)];
    waited_sum += waited;
    if (paced) pacer_.Consume(e.len);
    bytes += e.len;
    *out++ = e.pkt;
  }
  const auto added = static_cast<uint16_t>(next - first);
  // Keys leave in ascending order: the rank queue's window follows the last one.
  if (added != 0) queues_[0].TookMin(idle_[next - 1].key);
  idle_next_ = next;
  batch.count = static_cast<uint16_t>(batch.count + added);
  st.sojourn_cycles += waited_sum;
  st.dequeued_packets += added;
  st.dequeued_bytes += bytes;
  buffered_packets_ -= added;
  buffered_bytes_ -= bytes;
  return added;
}

template <typename RankQueue>
void BasicScheduler<RankQueue>::PrefetchHeadLineIfEmpty(uint32_t slot) const {
  if (slot != kNoId && table_[slot].empty()) table_.PrefetchHeadLine(slot, true);
}

template <typename RankQueue>
uint16_t BasicScheduler<RankQueue>::Enqueue(PacketBatch& batch) {
  const uint16_t n = batch.count;
  if (idle_next_ != idle_end_) FileIdleBurst();
  if (idle_bursts_ && buffered_packets_ == 0 && TakeIdleBurst(batch)) return n;
  uint32_t slots[kMaxBurst];
  uint32_t homes[kMaxBurst];  // index positions, hashed once per packet (kNoId: not yet)
  // Stage the burst like rte_sched's grinders: touch every index entry, then every message
  // state, so the cache misses of the burst overlap instead of queueing one behind the other.
  // Appending never touches an older packet while the message's inline ring has room.
  // A message of one packet is never looked up: it gets a fresh unindexed slot in Admit.
  static_assert(kMaxBurst <= 32, "a burst's whole messages are bits of a word");
  uint32_t whole = 0;  // bit i: packet i is a whole message
  for (uint16_t i = 0; i < n; ++i) {
    const PacketMeta& pm = *Meta(batch.pkts[i]);
    homes[i] = kNoId;
    if (pm.flags & kMetaWholeMessage) {
      whole |= uint32_t{1} << i;
    } else if (pm.message_slot < table_.capacity()) {
      table_.PrefetchSlot(pm.message_slot, true);  // hashed only if the hint does not hold
    } else {
      homes[i] = table_.IndexOf(pm.message_id);
      table_.PrefetchIndexAt(homes[i]);
    }
  }
  // An arrival behind its message's queued head touches only the state's arrival line; the head
  // line is loaded a few packets ahead for the messages that are empty (it becomes their head).
  for (uint16_t i = 0; i < n; ++i) {
    slots[i] = (whole >> i) & 1 ? kNoId : ResolveSlot(*Meta(batch.pkts[i]), homes[i]);
    if (slots[i] != kNoId) table_.PrefetchArrivalLine(slots[i], true);
  }
  burst_ = batch.pkts;
  burst_size_ = n;
  burst_dropped_ = 0;
  burst_freed_ = 0;
  const bool states_cold = table_.live() >= kLookaheadFrom;
  for (uint16_t i = 0; i < n; ++i) {
    if (states_cold && i + kHeadLinesAhead < n) PrefetchHeadLineIfEmpty(slots[i + kHeadLinesAhead]);
    rte_mbuf* pkt = batch.pkts[i];
    uint32_t slot = slots[i];
    // A message created earlier in this burst was not in the index when slots[] was filled, and
    // one whose slot a dropped last packet freed earlier in this burst holds it no more (another
    // message may have claimed it since).
    if (burst_freed_ != 0 && slot != kNoId && !HoldsMessage(slot, Meta(pkt)->message_id)) {
      slot = kNoId;
    }
    uint32_t home = homes[i];
    if (slot == kNoId && !((whole >> i) & 1)) {
      const uint64_t id = Meta(pkt)->message_id;
      if (home == kNoId) home = table_.IndexOf(id);
      slot = table_.FindFrom(id, home);
    }
    Admit(pkt, slot, home);
  }
  burst_size_ = 0;
  batch.count = 0;
  FlushDrops();
  return static_cast<uint16_t>(n - burst_dropped_);
}

// Software pipeline over the picks to come (like rte_sched's grinders). The rank queue names
// them without reading their states, so the states of the next kStatesAhead are loaded ahead
// (a line already on its way costs next to nothing), and for the pick after next, whose state
// was asked for picks ago, the packets it will rank once its head leaves (the heads themselves
// are never read here): srpt tends to send a message's queued packets back to back, so the next
// few its ring names, and its overflow link. `sent`: the message that just sent, whose packets
// PushHead has loaded.
//
// `first`: the first pick of a Dequeue call names all kStatesAhead (Enqueue may have filed new
// minima since the last call). Later picks of the same call only extend the window by the one
// pick that entered it: within a call nothing is filed but the messages that just sent, which
// are in cache, so the rest of the window is as the previous pick named it. Gathering all of it
// again on every pick cost about 200 instructions a packet at 65,536 messages. (When several
// classes take turns, each pick extends its own class's window; these are hints either way.)
template <typename RankQueue>
void BasicScheduler<RankQueue>::LookAhead(const RankQueue& q, uint32_t sent, bool first) const {
  if (!first) {
    const uint32_t entered = q.PeekAt(kStatesAhead - 1);
    if (entered != kNoId && entered != sent) table_.PrefetchSlot(entered, true);
    const uint32_t after_next = q.PeekAt(1);
    if (after_next != kNoId) PrefetchNextPackets(after_next, sent);
    return;
  }
  uint32_t ahead[kStatesAhead];
  const uint32_t known = q.PeekNext(ahead, kStatesAhead);
  for (uint32_t k = 0; k < known; ++k) {
    if (ahead[k] != sent) table_.PrefetchSlot(ahead[k], true);
  }
  for (uint32_t k = 0; k < std::min<uint32_t>(known, 2); ++k) PrefetchNextPackets(ahead[k], sent);
}

// The packets behind the head of message `slot` (not `sent`'s: PushHead loads those).
template <typename RankQueue>
void BasicScheduler<RankQueue>::PrefetchNextPackets(uint32_t slot, uint32_t sent) const {
  if (slot == sent) return;
  const MessageState& nm = table_[slot];
  for (uint8_t j = 1; j <= kRingAhead; ++j) {
    rte_mbuf* p = nm.at(j);
    if (p == nullptr) break;
    __builtin_prefetch(Meta(p));
  }
  if (nm.overflow_head != nullptr) __builtin_prefetch(Meta(nm.overflow_head));
}

template <typename RankQueue>
uint16_t BasicScheduler<RankQueue>::Dequeue(PacketBatch& batch, uint64_t now) {
  pacer_.Refill(now);
  uint16_t added = idle_next_ != idle_end_ ? SendIdleBurst(batch, now) : 0;
  uint32_t now_coarse = static_cast<uint32_t>(now >> kIdleShift);
  // Messages whose last packet left: their index entries are cold (a lookup touched them long
  // ago), so they are prefetched now and erased once the burst is picked, when they have arrived.
  // No Enqueue runs in between, so nothing can look these messages up meanwhile.
  uint32_t ended[kMaxBurst];
  uint32_t ended_home[kMaxBurst];  // their index positions, hashed once
  uint16_t ended_count = 0;
  const uint16_t first_pick = added;
  while (!batch.full() && pacer_.CanSend()) {
    // One plain class (the common uplink) needs no share decision at all.
    int sel = single_plain_class_ ? (queues_[0].Empty() ? -1 : 0) : SelectClass(now);
    if (sel < 0) break;
    uint16_t c = static_cast<uint16_t>(sel);
    RankQueue& q = queues_[c];
    uint32_t slot = q.PopMin();
    MessageState& m = table_[slot];
    uint32_t len = m.head_len;
    bool last = m.head_last;
    const uint64_t waited = Waited(now, m.head_arrival);
    rte_mbuf* pkt = m.PopFront();
    m.bytes_queued -= len;
    m.last_active = now_coarse;
    buffered_bytes_ -= len;
    --buffered_packets_;
    ClassStats& st = stats_[c];
    ++st.dequeued_packets;
    st.dequeued_bytes += len;
    ++st.sojourn[SojournBucket(waited)];
    st.sojourn_cycles += waited;
    ClassState& cs = classes_[c];
    OnSent(SentRankMatters(cs) ? Meta(pkt)->rank : 0, len, m, cs);
    if (!m.empty()) {
      PushHead(c, slot, now);
    } else {
      if (m.flags & kMsgUnindexed) {
        // One packet, marked last or not, and no index entry to wait for: the slot goes back now.
        table_.Erase(slot);
      } else if (last && !(m.flags & kMsgDefault)) {
        ended_home[ended_count] = table_.IndexOf(m.message_id);
        table_.PrefetchIndexAt(ended_home[ended_count]);
        ended[ended_count++] = slot;
      }
      if (q.Empty()) DeactivateClass(c);
    }
    if (charges_shares_) ChargeShares(c, len, !q.Empty());
    if (table_.live() >= kLookaheadFrom) LookAhead(q, slot, added == first_pick);
    pacer_.Consume(len);
    batch.Push(pkt);
    ++added;
  }
  for (uint16_t i = 0; i < ended_count; ++i) table_.EraseFrom(ended[i], ended_home[i]);
  if (reclaims_idle_) {
    const uint32_t owed = static_cast<uint32_t>(
        std::min<uint64_t>(reclaim_visits_owed_, kMaxReclaimVisits - kReclaimBudget));
    reclaim_visits_owed_ -= owed;
    reclaimed_idle_ += table_.ReclaimIdle(now_coarse, idle_timeouts_.data(), kReclaimBudget + owed);
  }
  return added;
}

template <typename RankQueue>
uint64_t BasicScheduler<RankQueue>::NextSendTsc(uint64_t now) const {
  if (buffered_packets_ == 0) return UINT64_MAX;
  uint64_t t = pacer_.CanSend() ? now : std::max(now, pacer_.NextSendTsc());
  if (idle_next_ != idle_end_) return t;  // an idle burst is never time-gated
  uint64_t earliest = UINT64_MAX;
  for (size_t c = 0; c < classes_.size(); ++c) {
    if (queues_[c].Empty()) continue;
    if (!classes_[c].time_gated) return t;
    uint64_t r = Meta(table_[queues_[c].PeekMin()].front())->rank;
    earliest = std::min(earliest, r);
  }
  return std::max(t, earliest);
}

template <typename RankQueue>
SchedulerStats BasicScheduler<RankQueue>::Stats() const {
  SchedulerStats s;
  StatsInto(s);
  return s;
}

template <typename RankQueue>
void BasicScheduler<RankQueue>::StatsInto(SchedulerStats& s) const {
  if (s.classes.size() != stats_.size()) s.classes.resize(stats_.size());
  std::copy(stats_.begin(), stats_.end(), s.classes.begin());
  s.total = ClassStats{};
  for (ClassStats& c : s.classes) {
    c.queued_packets = c.now_queued_packets();
    c.queued_bytes = c.now_queued_bytes();
    s.total.enqueued_packets += c.enqueued_packets;
    s.total.enqueued_bytes += c.enqueued_bytes;
    s.total.dequeued_packets += c.dequeued_packets;
    s.total.dequeued_bytes += c.dequeued_bytes;
    s.total.dropped_tail += c.dropped_tail;
    s.total.dropped_worst += c.dropped_worst;
    s.total.dropped_message_limit += c.dropped_message_limit;
    s.total.dropped_bytes += c.dropped_bytes;
    s.total.rank_clamped += c.rank_clamped;
    s.total.table_full_fallback += c.table_full_fallback;
    s.total.probe_limit_fallback += c.probe_limit_fallback;
    s.total.queued_packets += c.queued_packets;
    s.total.queued_bytes += c.queued_bytes;
    for (int b = 0; b < kSojournBuckets; ++b) s.total.sojourn[b] += c.sojourn[b];
    s.total.sojourn_cycles += c.sojourn_cycles;
  }
  s.dropped_unknown_class = dropped_unknown_class_;
  s.live_messages = table_.live();
  s.messages_reclaimed_idle = reclaimed_idle_;
  s.idle_burst_packets = idle_burst_packets_;
  s.table_pages = table_pages_;
  s.dropped_reconfigured = dropped_reconfigured_;
}

template class BasicScheduler<FfsRankQueue>;
template class BasicScheduler<HeapRankQueue>;

}  // namespace qosvisor::sched
