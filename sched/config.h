// Plain configuration of one uplink's scheduler (no YAML here: config/ maps the user's file onto
// these structs). Validate() reports every problem at once in words a user can act on.
//
// The tree is shallow: tenants share the uplink (wfq by weight or strict priority), classes share
// their tenant (wfq or priority), and inside a class a per-message policy orders message heads.
// Example, "tenant A gets 2x tenant B, inside each tenant short messages go first":
//   SchedulerConfig c;
//   c.rate_bps = 10'000'000'000; c.pacing_bps = 9'800'000'000;
//   c.tenant_share = Share::kWfq;
//   c.classes = {{.name = "a", .policy = Policy::kSrpt}, {.name = "b", .policy = Policy::kSrpt}};
//   c.tenants = {{.name = "A", .weight = 2, .classes = {0}}, {.name = "B", .weight = 1, .classes =
//   {1}}};
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/keyed_hash.h"
#include "common/status.h"

namespace qosvisor::sched {

// Per-message policy inside a class: what a message head's rank is (lower is sent sooner).
enum class Policy : uint8_t {
  kFifo,      // arrival time of the packet
  kPriority,  // FIFO inside the class; the class's `priority` orders it in a priority share
  kSrpt,      // bytes left in the message (needs message_size); optional aging
  kLas,       // bytes the message has already sent (size unknown)
  kWfq,       // start tag of start-time fair queuing between the class's messages
  kEdf,       // arrival time + the class's deadline
  kPace,      // earliest send time from the class's rate (token bucket); not sent before it
};

// How children share their parent: weighted fair (start-time fair queuing) or strict priority.
enum class Share : uint8_t { kWfq, kPriority };

// On buffer overflow: drop the packet with the worst rank (pFabric) or the arriving one.
enum class DropMode : uint8_t { kWorst, kTail };

const char* PolicyName(Policy p);

// The longest a message may be kept waiting for more packets (ClassConfig::message_idle_ns,
// SchedulerConfig::message_idle_timeout_ns): one hour.
inline constexpr uint64_t kMaxMessageIdleNs = 3'600'000'000'000ull;

struct ClassConfig {
  std::string name;
  Policy policy = Policy::kFifo;
  uint32_t weight = 1;         // share of the tenant when the tenant's class_share is wfq
  uint8_t priority = 0;        // 0 (first) .. 7, when the tenant's class_share is priority
  uint64_t deadline_ns = 0;    // edf: time allowed after arrival
  uint64_t rate_bps = 0;       // pace: the class's rate limit
  uint64_t srpt_aging_ns = 0;  // srpt: each aging_ns a message has waited counts as 1 KiB less
                               // left, so a large message cannot starve forever (0 = no aging)
  int rank_shift = -1;         // bucket granularity as a power of two of the rank's unit
                               // (bytes or TSC cycles); -1 = a default per policy
  // After this long without packets, none of the class's messages can get another (tcp-gap: the
  // flow's next packet starts a new message), so its slot goes back once what may still be on
  // its way has come: after the longer of twice this and this plus 1 ms; 0 = the uplink's
  // message_idle_timeout_ns. Without it a class of bursts that never see a last packet holds a
  // slot per burst for the uplink's whole timeout, and a busy one fills the table. At most 1 h.
  uint64_t message_idle_ns = 0;
  bool operator==(const ClassConfig&) const = default;
};

struct TenantConfig {
  std::string name;
  uint32_t weight = 1;   // share of the uplink when tenant_share is wfq
  uint8_t priority = 0;  // 0 (first) .. 7, when tenant_share is priority
  Share class_share = Share::kWfq;
  std::vector<uint16_t> classes;  // indexes into SchedulerConfig::classes
  bool operator==(const TenantConfig&) const = default;
};

struct SchedulerConfig {
  std::string name;         // the uplink, for messages
  uint64_t rate_bps = 0;    // line rate of the uplink
  uint64_t pacing_bps = 0;  // the scheduler sends at most this (0 = do not pace); set it
                            // slightly below rate_bps so queues build here, not in the NIC
  uint64_t buffer_bytes = 64u << 20;
  uint32_t buffer_packets = 65536;
  uint32_t message_limit_bytes = 0;  // most bytes one message may queue (0 = no limit)
  DropMode drop = DropMode::kWorst;
  uint32_t max_messages = 65536;  // message-table capacity
  // Keys the message table's index hash. Unset (always, outside tests): a random key per table.
  std::optional<HashKey> message_hash_key;
  uint64_t message_idle_timeout_ns =
      1'000'000'000;  // reclaim an idle, incomplete message (0 = never, else at most 1 h); see
                      // ClassConfig::message_idle_ns
  Share tenant_share = Share::kWfq;
  // Empty tenants = one tenant holding every class, sharing by class_share_default.
  std::vector<TenantConfig> tenants;
  Share class_share_default = Share::kWfq;
  std::vector<ClassConfig> classes;  // PacketMeta::class_id indexes this
  uint32_t rank_buckets = 1u << 18;  // per linear-rank class, a power of two in [64, 2^24]
  uint64_t tsc_hz = 0;               // TSC frequency; 0 = measure (simulations use 1e9)
  uint32_t pacer_burst_bytes = 0;    // pacer bucket depth; 0 = 32 full-size frames
  // The message table and rank queues (hundreds of MiB at a million messages, read at random)
  // try 2 MiB pages: the hugetlb pool, then transparent huge pages, then plain pages; false keeps
  // them on plain 4 KiB pages. SchedulerStats::table_pages says what they got.
  bool huge_pages = true;
  bool operator==(const SchedulerConfig&) const = default;
};

// Checks ranges, references and conflicts; all errors in one Status, one per line.
Status Validate(const SchedulerConfig& config);

}  // namespace qosvisor::sched
