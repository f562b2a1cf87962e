// The built-in rank policies: each a small struct whose Rank() the scheduler inlines, chosen per
// class by one switch when a packet becomes its message's head (never a virtual call per packet).
#pragma once

#include <cstdint>

#include "common/packet_meta.h"
#include "sched/config.h"
#include "sched/message_table.h"
#include "sched/rank_queue.h"

namespace qosvisor::sched {

// Per-class state the policies read and (for stateful ones) advance. Rates are fixed point so
// that a rank costs a multiply and a shift, never a division.
struct ClassState {
  Policy policy = Policy::kFifo;
  bool time_gated = false;  // pace: a head is not sent before its rank (a TSC time)
  uint16_t tenant = 0;
  uint32_t weight = 1;
  uint8_t priority = 0;
  uint64_t deadline_tsc = 0;               // edf
  uint64_t pace_cycles_per_byte_q16 = 0;   // pace: TSC cycles per byte << 16
  uint64_t next_send_tsc = 0;              // pace: the token bucket's next free time
  uint64_t aging_bytes_per_cycle_q32 = 0;  // srpt aging: bytes of rank per TSC cycle waited << 32
  uint64_t vtime = 0;                      // wfq: start tag of the packet last sent from this class
  // Share among the tenant's classes (start-time fair queuing tags, in bytes << 16 / weight).
  uint64_t share_start = 0;
  uint64_t share_finish = 0;
  uint32_t default_slot = 0;  // message slot used when the table is full
  bool ends_quietly = false;  // its messages end by going quiet (ClassConfig::message_idle_ns)
};

// Unknown message size: srpt ranks such a message behind every message of known size.
inline constexpr uint64_t kUnknownRemaining = 1ull << 32;

struct FifoPolicy {
  static uint64_t Rank(const PacketMeta& p, MessageState&, ClassState&, uint64_t) {
    return p.arrival_tsc;
  }
};

// Priority acts between classes (the share); inside its class a packet waits in FIFO order.
struct PriorityPolicy {
  static uint64_t Rank(const PacketMeta& p, MessageState&, ClassState&, uint64_t) {
    return p.arrival_tsc;
  }
};

struct SrptPolicy {
  static uint64_t Rank(const PacketMeta& p, MessageState& m, ClassState& c, uint64_t) {
    uint64_t left = p.message_size == 0                  ? kUnknownRemaining
                    : p.message_offset >= p.message_size ? 0
                                                         : p.message_size - p.message_offset;
    if (c.aging_bytes_per_cycle_q32 == 0) return left;
    // Aging: an older message's rank is lower by its head start converted to bytes. Ranks of
    // messages already queued need no update because every newcomer starts later.
    return left + static_cast<uint64_t>(
                      (static_cast<unsigned __int128>(m.tag) * c.aging_bytes_per_cycle_q32) >> 32);
  }
};

struct LasPolicy {
  static uint64_t Rank(const PacketMeta&, MessageState& m, ClassState&, uint64_t) {
    return m.bytes_sent;
  }
};

// Start-time fair queuing between a class's messages: S = max(V, F_message), F_message = S + len.
struct WfqPolicy {
  static uint64_t Rank(const PacketMeta& p, MessageState& m, ClassState& c, uint64_t) {
    uint64_t start = m.tag > c.vtime ? m.tag : c.vtime;
    m.tag = start + p.wire_len;
    return start;
  }
};

struct EdfPolicy {
  static uint64_t Rank(const PacketMeta& p, MessageState&, ClassState& c, uint64_t) {
    return p.arrival_tsc + c.deadline_tsc;
  }
};

// Token bucket as a virtual clock (Carousel): each head reserves the next send time of its class.
struct PacePolicy {
  static uint64_t Rank(const PacketMeta& p, MessageState&, ClassState& c, uint64_t now) {
    uint64_t t = c.next_send_tsc > now ? c.next_send_tsc : now;
    c.next_send_tsc = t + ((p.wire_len * c.pace_cycles_per_byte_q16) >> 16);
    return t;
  }
};

// The one switch per head computation.
inline uint64_t ComputeRank(const PacketMeta& p, MessageState& m, ClassState& c, uint64_t now) {
  switch (c.policy) {
    case Policy::kFifo:
      return FifoPolicy::Rank(p, m, c, now);
    case Policy::kPriority:
      return PriorityPolicy::Rank(p, m, c, now);
    case Policy::kSrpt:
      return SrptPolicy::Rank(p, m, c, now);
    case Policy::kLas:
      return LasPolicy::Rank(p, m, c, now);
    case Policy::kWfq:
      return WfqPolicy::Rank(p, m, c, now);
    case Policy::kEdf:
      return EdfPolicy::Rank(p, m, c, now);
    case Policy::kPace:
      return PacePolicy::Rank(p, m, c, now);
  }
  return p.arrival_tsc;
}

// State a policy keeps when a packet of `wire_len` bytes leaves: las counts bytes sent, wfq
// advances virtual time to the sent packet's rank. Only wfq reads that rank, so the data path
// reads the sent packet's mbuf only when SentRankMatters (`sent_rank` is not read otherwise).
inline bool SentRankMatters(const ClassState& c) { return c.policy == Policy::kWfq; }
inline void OnSent(uint64_t sent_rank, uint32_t wire_len, MessageState& m, ClassState& c) {
  uint64_t sent = uint64_t{m.bytes_sent} + wire_len;
  m.bytes_sent = sent > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(sent);
  if (SentRankMatters(c)) c.vtime = sent_rank;
}

// The tag a new message starts with.
inline uint64_t InitialTag(const PacketMeta& p, const ClassState& c) {
  return c.policy == Policy::kSrpt ? p.arrival_tsc : 0;
}

// Whether a head's rank follows from its packet and the class alone (no MessageState read or
// written), so a message that has nothing queued needs no state to be ranked.
inline bool RanksNeedNoMessageState(const ClassConfig& c) {
  switch (c.policy) {
    case Policy::kFifo:
    case Policy::kPriority:
    case Policy::kEdf:
      return true;
    case Policy::kSrpt:
      return c.srpt_aging_ns == 0;
    default:
      return false;
  }
}

// Whether a class's ranks move with time (and so need the circular rank queue).
inline bool RanksMoveWithTime(const ClassConfig& c) {
  return !(c.policy == Policy::kLas || (c.policy == Policy::kSrpt && c.srpt_aging_ns == 0));
}

// A class's policy state from its configuration, at TSC frequency `tsc_hz`.
ClassState MakeClassState(const ClassConfig& c, uint64_t tsc_hz);

// The rank queue a class gets: circular for time-like ranks, about 256 ns buckets for time-valued
// ranks and 64 bytes for wfq's virtual time; srpt without aging and las use the log scale (exact
// below 256 bytes, 0.8% above) unless the class sets rank_shift.
RankQueueConfig MakeRankQueueConfig(const ClassConfig& c, uint64_t tsc_hz, uint32_t num_buckets,
                                    uint32_t capacity);

}  // namespace qosvisor::sched
