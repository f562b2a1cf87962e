// Turning a class's configuration into its policy state and rank-queue shape (control path).
// Shared by the scheduler and by tests' reference models, so both rank alike.
#include "sched/policies.h"

#include <algorithm>
#include <bit>

#include "common/tsc.h"

namespace qosvisor::sched {
namespace {

constexpr uint64_t kTimeBucketNs = 256;  // 2^18 time buckets span ~67 ms
constexpr int kBytesShift = 6;           // 2^18 byte buckets span 16 MiB

}  // namespace

ClassState MakeClassState(const ClassConfig& cc, uint64_t hz) {
  ClassState cs;
  cs.policy = cc.policy;
  cs.time_gated = cc.policy == Policy::kPace;
  cs.weight = cc.weight;
  cs.priority = cc.priority;
  cs.deadline_tsc = NsToTsc(cc.deadline_ns, hz);
  if (cc.rate_bps != 0) {
    cs.pace_cycles_per_byte_q16 =
        static_cast<uint64_t>((static_cast<unsigned __int128>(hz) * 8 << 16) / cc.rate_bps);
  }
  if (cc.srpt_aging_ns != 0) {
    uint64_t aging_tsc = std::max<uint64_t>(1, NsToTsc(cc.srpt_aging_ns, hz));
    cs.aging_bytes_per_cycle_q32 = std::max<uint64_t>(1, (uint64_t{1024} << 32) / aging_tsc);
  }
  return cs;
}

RankQueueConfig MakeRankQueueConfig(const ClassConfig& cc, uint64_t hz, uint32_t num_buckets,
                                    uint32_t capacity) {
  RankQueueConfig qc;
  qc.num_buckets = num_buckets;
  qc.circular = RanksMoveWithTime(cc);
  qc.capacity = capacity;
  int shift = cc.rank_shift;
  if (shift < 0) {
    switch (cc.policy) {
      case Policy::kSrpt:
      case Policy::kLas:
      case Policy::kWfq:
        shift = kBytesShift;
        break;
      default: {
        uint64_t cycles = NsToTsc(kTimeBucketNs, hz);
        shift = cycles <= 1 ? 0 : 63 - std::countl_zero(cycles);
      }
    }
  }
  qc.granularity_shift = static_cast<uint8_t>(shift);
  // Byte counts without aging: a log scale keeps small sizes exact in a cache-resident array.
  if (!qc.circular && cc.rank_shift < 0) {
    qc.log_scale = true;
    qc.granularity_shift = 0;
    qc.num_buckets = kLogBuckets;
  }
  return qc;
}

}  // namespace qosvisor::sched
