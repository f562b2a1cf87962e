// What an inspection of one scheduler finds (BasicScheduler::Inspect): the messages holding the
// most queued bytes, and per class how far its queued heads' ranks lie behind the next one out.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace qosvisor::sched {

// Rank distances in power-of-two buckets: bucket 0 counts a distance of 0, bucket b > 0
// distances in [2^(b-1), 2^b); 65 buckets hold every 64-bit distance.
inline constexpr int kRankDistanceBuckets = 65;

// One message with packets queued, or a class's default queue (packets of messages that found
// no table slot, queued together).
struct QueuedMessage {
  uint64_t message_id = 0;
  uint64_t head_arrival_tsc = 0;  // when its oldest queued packet entered the switch
  uint32_t bytes_queued = 0;
  uint32_t bytes_sent = 0;  // saturates at 2^32 - 1
  // Packets queued; when more_packets, at least this many: the rest are linked through cold
  // mbufs, which an inspection does not walk.
  uint32_t packets = 0;
  uint32_t slot = 0;  // message-table slot (where the inspection reads the head packet)
  uint16_t class_id = 0;
  bool more_packets = false;
  bool default_queue = false;
};

// The ranks of a class's queued message heads, relative to the head its rank queue sends next
// (heads filed under the same key but ranked lower count as distance 0). The unit is the
// policy's: bytes for srpt and las, TSC cycles for fifo, priority, edf and pace, start tags
// (bytes / weight) for wfq.
struct ClassRanks {
  uint64_t next_rank = 0;      // rank of the head sent next; meaningful when queued_heads > 0
  uint32_t queued_heads = 0;   // messages (and the default queue) with packets queued
  uint32_t sampled_heads = 0;  // those whose head rank was read into `distance`
  uint64_t distance[kRankDistanceBuckets] = {};
};

struct SchedulerDetail {
  std::vector<QueuedMessage> top;  // most bytes queued first; at most the top_n asked for
  std::vector<ClassRanks> classes;
  uint32_t queued_messages = 0;  // messages (and default queues) with packets queued
  uint32_t sampled_heads = 0;    // heads whose rank was read, over all classes
  uint32_t slots_scanned = 0;    // message-table slots the inspection read
  uint32_t table_capacity = 0;   // message-table slots, the classes' default queues included
  uint32_t live_messages = 0;    // slots holding a message (queued or waiting for more)
  uint64_t taken_tsc = 0;        // when the inspection ran (head ages are measured from it)

  // Room for `classes` classes and `top_n` messages, so that an inspection into it allocates
  // nothing (it may run on a data-plane lcore).
  void Reserve(size_t class_count, size_t top_n) {
    classes.resize(class_count);
    top.reserve(top_n);
  }
};

// Where an inspection spread over calls stands (BasicScheduler::BeginInspection).
struct InspectionCursor {
  uint32_t next_slot = 0;  // the next message-table slot to read
  uint32_t end = 0;        // the slots in use when the inspection began
  uint32_t top_n = 0;
  uint32_t max_samples = 0;
  uint64_t stride = 1;  // every stride-th queued message has its head rank read
};

// The bucket of a rank distance (see kRankDistanceBuckets).
inline int RankDistanceBucket(uint64_t distance) { return std::bit_width(distance); }

}  // namespace qosvisor::sched
