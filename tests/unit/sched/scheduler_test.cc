// Scheduler behaviour beyond single-class conformance: drop-worst victims, tail drop, message
// limits, table-full fallback, shares between tenants and classes, pacing, configuration errors.
#include "sched/scheduler.h"

#include <catch2/catch.hpp>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "fake_mbufs.h"

namespace qosvisor::sched {
namespace {

using testing::DropLog;
using testing::FakePool;

constexpr uint64_t kHz = 1'000'000'000;

SchedulerConfig OneClass(Policy p) {
  SchedulerConfig c;
  c.name = "up0";
  c.rate_bps = 10'000'000'000;
  c.tsc_hz = kHz;
  c.classes = {ClassConfig{.name = "c", .policy = p}};
  return c;
}

rte_mbuf* Packet(FakePool& pool, size_t i, uint64_t message, uint32_t size, uint32_t offset,
                 uint32_t len, uint16_t class_id = 0, uint64_t arrival = 0, uint16_t flags = 0) {
  rte_mbuf* m = pool.Get(i);
  PacketMeta& pm = *Meta(m);
  pm = PacketMeta{};
  pm.message_id = message;
  pm.message_size = size;
  pm.message_offset = offset;
  pm.wire_len = len;
  pm.class_id = class_id;
  pm.arrival_tsc = arrival;
  pm.flags = flags;
  return m;
}

std::vector<rte_mbuf*> DrainAll(Scheduler& s, uint64_t now) {
  std::vector<rte_mbuf*> out;
  for (;;) {
    PacketBatch b;
    if (s.Dequeue(b, now) == 0) break;
    out.insert(out.end(), b.pkts, b.pkts + b.count);
  }
  return out;
}

uint16_t EnqueueOne(Scheduler& s, rte_mbuf* m) {
  PacketBatch b;
  b.Push(m);
  return s.Enqueue(b);
}

std::unique_ptr<Scheduler> MustCreate(const SchedulerConfig& c, DropLog& drops) {
  auto s = Scheduler::Create(c, &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  return std::move(s).value();
}

}  // namespace

TEST_CASE("drop-worst takes from the class the share serves last, not from the arrival's",
          "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kFifo);
  c.classes = {{.name = "rpc", .policy = Policy::kSrpt, .priority = 0},
               {.name = "bulk", .policy = Policy::kFifo, .priority = 1},
               {.name = "fill", .policy = Policy::kFifo, .priority = 2}};
  c.class_share_default = Share::kPriority;
  c.buffer_packets = 4;
  c.rank_buckets = 1u << 16;
  DropLog drops;
  auto s = Scheduler::Create(c, &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  FakePool pool(16);
  // The buffer fills with bulk (priority 1) and fill (priority 2) packets.
  CHECK(EnqueueOne(**s, Packet(pool, 0, 10, 1000, 0, 1000, 1, 1)) == 1);
  CHECK(EnqueueOne(**s, Packet(pool, 1, 11, 1000, 0, 1000, 1, 2)) == 1);
  CHECK(EnqueueOne(**s, Packet(pool, 2, 12, 1000, 0, 1000, 2, 3)) == 1);
  CHECK(EnqueueOne(**s, Packet(pool, 3, 13, 1000, 0, 1000, 2, 4)) == 1);
  // An rpc packet arrives: the lowest-priority class (fill) loses its worst (latest) packet.
  CHECK(EnqueueOne(**s, Packet(pool, 4, 20, 500, 0, 500, 0, 5)) == 1);
  REQUIRE(drops.pkts.size() == 1);
  CHECK(drops.pkts[0] == pool.Get(3));
  // Another: fill loses its last packet, then bulk would be next.
  CHECK(EnqueueOne(**s, Packet(pool, 5, 21, 400, 0, 400, 0, 6)) == 1);
  CHECK(EnqueueOne(**s, Packet(pool, 6, 22, 300, 0, 300, 0, 7)) == 1);
  REQUIRE(drops.pkts.size() == 3);
  CHECK(drops.pkts[1] == pool.Get(2));
  CHECK(drops.pkts[2] == pool.Get(1));
  SchedulerStats st = (*s)->Stats();
  CHECK(st.classes[0].dropped_packets() == 0);
  CHECK(st.classes[2].dropped_worst == 2);
  CHECK(st.classes[1].dropped_worst == 1);
  auto out = DrainAll(**s, 1);
  std::vector<rte_mbuf*> expect = {pool.Get(6), pool.Get(5), pool.Get(4), pool.Get(0)};
  CHECK(out == expect);
}

TEST_CASE("drop-worst evicts the highest-ranked head, which may be the arrival", "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kSrpt);
  c.buffer_packets = 4;
  c.rank_buckets = 1u << 16;
  DropLog drops;
  auto s = Scheduler::Create(c, &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  FakePool pool(16);
  // Four one-packet messages with 10 KB, 50 KB, 2 KB and 30 KB left.
  uint32_t left[] = {10'000, 50'000, 2'000, 30'000};
  for (int i = 0; i < 4; ++i) {
    CHECK(EnqueueOne(**s, Packet(pool, i, 100 + i, left[i], 0, 1000)) == 1);
  }
  CHECK(drops.pkts.empty());
  // A 20 KB message arrives: the 50 KB one is the worst and goes.
  CHECK(EnqueueOne(**s, Packet(pool, 4, 200, 20'000, 0, 1000)) == 1);
  REQUIRE(drops.pkts.size() == 1);
  CHECK(drops.pkts[0] == pool.Get(1));
  // A 90 KB message arrives: it is the worst itself, so it is refused.
  CHECK(EnqueueOne(**s, Packet(pool, 5, 300, 90'000, 0, 1000)) == 0);
  REQUIRE(drops.pkts.size() == 2);
  CHECK(drops.pkts[1] == pool.Get(5));
  auto out = DrainAll(**s, 1);
  std::vector<rte_mbuf*> expect = {pool.Get(2), pool.Get(0), pool.Get(4), pool.Get(3)};
  CHECK(out == expect);
  SchedulerStats st = (*s)->Stats();
  CHECK(st.classes[0].dropped_worst == 2);
  CHECK(st.total.enqueued_packets == 6);
  CHECK(st.total.dequeued_packets == 4);
}

TEST_CASE("tail drop refuses the arrival and message limits cap one message", "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kFifo);
  c.drop = DropMode::kTail;
  c.buffer_bytes = 5000;
  c.message_limit_bytes = 2500;
  DropLog drops;
  auto s = Scheduler::Create(c, &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  FakePool pool(16);
  PacketBatch b;
  // Arrivals 1 us apart, beyond the 256 ns time buckets, so FIFO is by arrival.
  b.Push(Packet(pool, 0, 1, 0, 0, 1000, 0, 1000));
  b.Push(Packet(pool, 1, 1, 0, 0, 1000, 0, 2000));
  b.Push(Packet(pool, 2, 1, 0, 0, 1000, 0, 3000));  // third KB of message 1: over its limit
  b.Push(Packet(pool, 3, 2, 0, 0, 2000, 0, 4000));
  b.Push(Packet(pool, 4, 3, 0, 0, 1500, 0, 5000));  // 5500 bytes: buffer full
  b.Push(Packet(pool, 5, 3, 0, 0, 1000, 0, 6000));  // fits exactly
  CHECK((*s)->Enqueue(b) == 4);
  std::vector<rte_mbuf*> expect_drops = {pool.Get(2), pool.Get(4)};
  CHECK(drops.pkts == expect_drops);
  SchedulerStats st = (*s)->Stats();
  CHECK(st.classes[0].dropped_message_limit == 1);
  CHECK(st.classes[0].dropped_tail == 1);
  CHECK(st.classes[0].queued_bytes == 5000);
  std::vector<rte_mbuf*> expect = {pool.Get(0), pool.Get(1), pool.Get(3), pool.Get(5)};
  CHECK(DrainAll(**s, 10'000) == expect);
}

TEST_CASE("a full probe window falls back to the default queue, counted apart", "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kLas);
  c.max_messages = 1024;
  c.message_hash_key = HashKey{0x243F6A8885A308D3ull, 0x13198A2E03707345ull};
  // The same index the scheduler builds (its table holds max_messages + the class's default
  // slot), to find ids that share one home position.
  const MessageTable twin(c.max_messages + 1, 1, *c.message_hash_key);
  std::vector<uint64_t> ids;
  for (uint64_t id = 1; ids.size() < kMaxProbe + 2; ++id) {
    if (twin.IndexOf(id) == twin.IndexOf(1)) ids.push_back(id);
  }
  DropLog drops;
  auto s = MustCreate(c, drops);
  FakePool pool(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    CHECK(EnqueueOne(*s, Packet(pool, i, ids[i], 0, 0, 100, 0, i)) == 1);
  }
  SchedulerStats st = s->Stats();
  CHECK(st.classes[0].probe_limit_fallback == 2);
  CHECK(st.classes[0].table_full_fallback == 0);
  CHECK(st.live_messages == kMaxProbe);
  CHECK(DrainAll(*s, 100).size() == ids.size());
  CHECK(drops.pkts.empty());
}

TEST_CASE("a full message table falls back to the class's default queue", "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kFifo);
  c.max_messages = 2;
  DropLog drops;
  auto s = Scheduler::Create(c, &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  FakePool pool(16);
  for (int i = 0; i < 5; ++i) CHECK(EnqueueOne(**s, Packet(pool, i, 10 + i, 0, 0, 100, 0, i)) == 1);
  SchedulerStats st = (*s)->Stats();
  CHECK(st.classes[0].table_full_fallback == 3);
  CHECK(st.live_messages == 2);
  CHECK(DrainAll(**s, 100).size() == 5);
  CHECK(drops.pkts.empty());
}

TEST_CASE("unknown classes are dropped and counted", "[scheduler]") {
  DropLog drops;
  auto s = Scheduler::Create(OneClass(Policy::kFifo), &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  FakePool pool(2);
  CHECK(EnqueueOne(**s, Packet(pool, 0, 1, 0, 0, 100, 9)) == 0);
  CHECK((*s)->Stats().dropped_unknown_class == 1);
  CHECK(drops.pkts.size() == 1);
}

TEST_CASE("complete messages free their slot at once, idle ones after the timeout", "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kLas);
  c.message_idle_timeout_ns = 1'000'000;
  DropLog drops;
  auto s = Scheduler::Create(c, &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  FakePool pool(4);
  EnqueueOne(**s, Packet(pool, 0, 1, 0, 0, 100, 0, 0, kMetaLastOfMessage));
  EnqueueOne(**s, Packet(pool, 1, 2, 0, 0, 100, 0, 0));
  CHECK((*s)->Stats().live_messages == 2);
  CHECK(DrainAll(**s, 10).size() == 2);
  CHECK((*s)->Stats().live_messages == 1);  // message 2 may still send more
  // Each Dequeue call inspects a couple of slots; well after the timeout the idle one goes.
  for (int i = 0; i < 100'000; ++i) {
    PacketBatch b;
    (*s)->Dequeue(b, 100'000'000 + i);
  }
  CHECK((*s)->Stats().live_messages == 0);
  CHECK((*s)->Stats().messages_reclaimed_idle == 1);
}

// Two las classes: "bursts" whose messages end by going quiet (tcp-gap, 1 ms), and "rpc" whose
// messages keep the uplink's timeout.
SchedulerConfig BurstsAndRpc() {
  SchedulerConfig c = OneClass(Policy::kLas);
  c.classes = {{.name = "bursts", .policy = Policy::kLas, .message_idle_ns = 1'000'000},
               {.name = "rpc", .policy = Policy::kLas}};
  c.message_idle_timeout_ns = 1'000'000'000;
  return c;
}

// Messages first .. first + count - 1 of class "bursts", one packet each (mbufs from pool_at on),
// enqueued at `now` in bursts of kMaxBurst; each is accepted.
void EnqueueNewMessages(Scheduler& s, FakePool& pool, uint64_t first, size_t count, size_t pool_at,
                        uint64_t now) {
  for (size_t i = 0; i < count; i += kMaxBurst) {
    PacketBatch b;
    for (size_t k = i; k < std::min(count, i + kMaxBurst); ++k) {
      b.Push(Packet(pool, pool_at + k, first + k, 0, 0, 100, 0, now));
    }
    const uint16_t n = b.count;
    REQUIRE(s.Enqueue(b) == n);
  }
}

void PollIdle(Scheduler& s, uint64_t now, int calls) {
  for (int i = 0; i < calls; ++i) {
    PacketBatch b;
    s.Dequeue(b, now);
  }
}

TEST_CASE("a class's message idle time frees its quiet messages then, others keep the uplink's",
          "[scheduler]") {
  DropLog drops;
  auto s = MustCreate(BurstsAndRpc(), drops);
  FakePool pool(20);
  for (uint16_t cls = 0; cls < 2; ++cls) {
    for (uint64_t m = 0; m < 10; ++m) {
      EnqueueOne(*s, Packet(pool, cls * 10 + m, cls * 100 + m, 0, 0, 100, cls, 0));
    }
  }
  CHECK(DrainAll(*s, 10).size() == 20);
  CHECK(s->Stats().live_messages == 20);  // none has sent its last packet
  // A burst's slot stays for twice its idle time (what the identifier counted in may still be on
  // its way): 2.05 ms after, every slot visited, none goes; by 2.3 ms the bursts' have.
  PollIdle(*s, 2'050'000, 50);
  CHECK(s->Stats().live_messages == 20);
  PollIdle(*s, 2'300'000, 50);
  CHECK(s->Stats().live_messages == 10);
  CHECK(s->Stats().messages_reclaimed_idle == 10);
  for (uint64_t m = 0; m < 10; ++m) {  // the rpc messages are still there: they join them
    CHECK(EnqueueOne(*s, Packet(pool, m, 100 + m, 0, 100, 100, 1, 2'300'000)) == 1);
  }
  CHECK(s->Stats().live_messages == 10);
}

TEST_CASE("a short idle time keeps a quiet message's slot at least a millisecond longer",
          "[scheduler]") {
  SchedulerConfig c = BurstsAndRpc();
  c.classes[0].message_idle_ns = 100'000;  // twice would be 0.2 ms: 1.1 ms it is
  DropLog drops;
  auto s = MustCreate(c, drops);
  FakePool pool(1);
  EnqueueOne(*s, Packet(pool, 0, 1, 0, 0, 100, 0, 0));
  REQUIRE(DrainAll(*s, 10).size() == 1);
  PollIdle(*s, 1'050'000, 10);
  CHECK(s->Stats().live_messages == 1);
  PollIdle(*s, 1'300'000, 10);
  CHECK(s->Stats().live_messages == 0);
}

TEST_CASE("a poll that creates many quiet messages spreads their sweep over the next polls",
          "[scheduler]") {
  SchedulerConfig c = BurstsAndRpc();
  c.max_messages = 2'048;
  DropLog drops;
  auto s = MustCreate(c, drops);
  FakePool pool(1'200);
  EnqueueNewMessages(*s, pool, 1, 1'000, 0, 0);
  REQUIRE(DrainAll(*s, 10).size() == 1'000);  // (their visits are paid meanwhile)
  // Quiet for long enough now; 200 new messages owe 800 visits, at most 512 a call.
  EnqueueNewMessages(*s, pool, 5'000, 200, 1'000, 3'000'000);
  PacketBatch b;
  s->Dequeue(b, 3'000'000);
  const uint64_t first_call = s->Stats().messages_reclaimed_idle;
  CHECK(first_call > 0);
  CHECK(first_call <= 512);
  PollIdle(*s, 3'000'000, 2);
  CHECK(s->Stats().messages_reclaimed_idle >= 700);
}

TEST_CASE("a message quiet for less than its class's idle time keeps what it sent", "[scheduler]") {
  DropLog drops;
  auto s = MustCreate(BurstsAndRpc(), drops);
  FakePool pool(3);
  EnqueueOne(*s, Packet(pool, 0, 5, 0, 0, 1'000, 0, 0));
  REQUIRE(DrainAll(*s, 10).size() == 1);
  PollIdle(*s, 800'000, 50);
  EnqueueOne(*s, Packet(pool, 1, 5, 0, 1'000, 1'000, 0, 800'000));
  auto second = DrainAll(*s, 800'010);
  REQUIRE(second.size() == 1);
  CHECK(Meta(second[0])->rank > 0);  // las: ranked after the 1,000 bytes the message sent
  // Quiet for longer: the message is gone, and the same id starts afresh.
  PollIdle(*s, 3'500'000, 50);
  EnqueueOne(*s, Packet(pool, 2, 5, 0, 2'000, 1'000, 0, 3'500'000));
  auto third = DrainAll(*s, 3'500'010);
  REQUIRE(third.size() == 1);
  CHECK(Meta(third[0])->rank == 0);
}

TEST_CASE("idle reclamation keeps up with a class whose every message ends by going quiet",
          "[scheduler]") {
  // 32 new messages every 150 us into a table of 1,024, each quiet after one packet: about 450
  // within the 2.1 ms their slots stay. One or two Dequeue calls a burst must reclaim 32 slots a
  // burst, or the table fills and new messages fall back to the default queue.
  SchedulerConfig c = BurstsAndRpc();
  c.max_messages = 1'024;
  DropLog drops;
  auto s = MustCreate(c, drops);
  FakePool pool(kMaxBurst);
  uint64_t id = 1;
  for (uint64_t now = 0; now < 300'000'000; now += 150'000, id += kMaxBurst) {
    EnqueueNewMessages(*s, pool, id, kMaxBurst, 0, now);
    REQUIRE(DrainAll(*s, now).size() == kMaxBurst);
  }
  const SchedulerStats st = s->Stats();
  CHECK(st.total.table_full_fallback == 0);
  CHECK(st.messages_reclaimed_idle + st.live_messages == id - 1);
}

TEST_CASE("a message whose last packet is refused frees its slot once the rest has left",
          "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kFifo);
  c.drop = DropMode::kTail;
  c.buffer_packets = 3;
  c.message_idle_timeout_ns = 0;  // only an ended message frees its slot
  DropLog drops;
  auto s = MustCreate(c, drops);
  FakePool pool(8);
  // Messages 1 and 2 each send a packet and wait for more (the second arrival finds the first
  // queued, so both take the general path and a slot).
  EnqueueOne(*s, Packet(pool, 0, 2, 5000, 0, 1000, 0, 1));
  EnqueueOne(*s, Packet(pool, 1, 1, 4000, 0, 1000, 0, 2));
  CHECK(DrainAll(*s, 10).size() == 2);
  CHECK(s->Stats().live_messages == 2);
  // Message 2 fills the buffer; then both messages' last packets arrive and are refused.
  for (size_t i = 2; i <= 4; ++i) {
    EnqueueOne(*s, Packet(pool, i, 2, 5000, 1000 * (i - 1), 1000, 0, 10 + i));
  }
  CHECK(EnqueueOne(*s, Packet(pool, 5, 1, 4000, 3000, 1000, 0, 20, kMetaLastOfMessage)) == 0);
  CHECK(EnqueueOne(*s, Packet(pool, 6, 2, 5000, 4000, 1000, 0, 21, kMetaLastOfMessage)) == 0);
  CHECK(drops.pkts.size() == 2);
  // Message 1 had nothing queued: its slot went back with the refusal.
  CHECK(s->Stats().live_messages == 1);
  // Message 2's slot goes back when its last queued packet leaves.
  const std::vector<rte_mbuf*> expect = {pool.Get(2), pool.Get(3), pool.Get(4)};
  CHECK(DrainAll(*s, 100) == expect);
  CHECK(s->Stats().live_messages == 0);
}

TEST_CASE("a message whose last packet is evicted frees its slot", "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kLas);
  c.buffer_packets = 2;
  c.message_idle_timeout_ns = 0;
  DropLog drops;
  auto s = MustCreate(c, drops);
  FakePool pool(12);
  // Message 1 sent 5000 bytes; its last packet then waits beside message 2's first.
  for (size_t i = 0; i < 5; ++i) {
    EnqueueOne(*s, Packet(pool, i, 1, 0, 0, 1000));
    DrainAll(*s, 10);
  }
  EnqueueOne(*s, Packet(pool, 5, 1, 0, 0, 1000, 0, 20, kMetaLastOfMessage));
  EnqueueOne(*s, Packet(pool, 6, 2, 0, 0, 1000, 0, 21));
  CHECK(s->Stats().live_messages == 2);
  // Message 3 arrives at a full buffer: message 1's last packet ranks worst and is evicted.
  CHECK(EnqueueOne(*s, Packet(pool, 7, 3, 0, 0, 1000, 0, 22)) == 1);
  REQUIRE(drops.pkts.size() == 1);
  CHECK(drops.pkts[0] == pool.Get(5));
  CHECK(s->Stats().live_messages == 2);  // messages 2 and 3, which may send more
}

namespace {

// las with tail drop and no idle timeout: a message's slot goes back only when it ends.
SchedulerConfig LasTailDropConfig() {
  SchedulerConfig c = OneClass(Policy::kLas);
  c.drop = DropMode::kTail;
  c.message_idle_timeout_ns = 0;
  return c;
}

// The same with room for `buffer` packets.
std::unique_ptr<Scheduler> LasTailDrop(uint32_t buffer, DropLog& drops) {
  SchedulerConfig c = LasTailDropConfig();
  c.buffer_packets = buffer;
  return MustCreate(c, drops);
}

}  // namespace

TEST_CASE("a refused last packet hands its mark to a lone head, or to an overflowing tail",
          "[scheduler]") {
  for (const uint32_t queued : {1u, 8u}) {  // the head itself; past the inline ring
    DropLog drops;
    auto s = LasTailDrop(queued, drops);
    FakePool pool(queued + 1);
    for (uint32_t i = 0; i < queued; ++i) EnqueueOne(*s, Packet(pool, i, 1, 0, 0, 1000, 0, i));
    CHECK(EnqueueOne(*s, Packet(pool, queued, 1, 0, 0, 1000, 0, 99, kMetaLastOfMessage)) == 0);
    CHECK(DrainAll(*s, 100).size() == queued);
    CHECK(s->Stats().live_messages == 0);
  }
}

TEST_CASE("a burst holding a message twice after its slot was freed by a refusal", "[scheduler]") {
  DropLog drops;
  auto s = LasTailDrop(1, drops);
  FakePool pool(4);
  EnqueueOne(*s, Packet(pool, 0, 1, 0, 0, 1000, 0, 1));  // message 1 sends and waits for more
  DrainAll(*s, 10);
  EnqueueOne(*s, Packet(pool, 1, 2, 0, 0, 1000, 0, 2));  // message 2 fills the buffer
  // Message 1's last packet twice (a retransmission) in one burst: both refused. The first
  // frees the slot that the second was looked up in.
  PacketBatch b;
  b.Push(Packet(pool, 2, 1, 0, 0, 1000, 0, 3, kMetaLastOfMessage));
  b.Push(Packet(pool, 3, 1, 0, 0, 1000, 0, 4, kMetaLastOfMessage));
  CHECK(s->Enqueue(b) == 0);
  CHECK(drops.pkts.size() == 2);
  CHECK(s->Stats().live_messages == 1);
  CHECK(DrainAll(*s, 100) == std::vector<rte_mbuf*>{pool.Get(1)});
}

TEST_CASE("a packet behind a refused last packet in one burst joins no freed slot", "[scheduler]") {
  SchedulerConfig c = LasTailDropConfig();
  c.buffer_bytes = 2000;
  DropLog drops;
  auto s = MustCreate(c, drops);
  FakePool pool(6);
  EnqueueOne(*s, Packet(pool, 0, 1, 0, 0, 1000, 0, 1));  // message 1 sends and waits for more
  DrainAll(*s, 10);
  EnqueueOne(*s, Packet(pool, 1, 2, 0, 0, 1000, 0, 2));  // message 2 holds half the buffer
  // Message 1's last packet does not fit and frees its slot; a small packet of message 1 (sent
  // after its last) fits, and so does message 3's. Message 3 takes a slot from the free list,
  // where the freed one is on top: had message 1's packet joined the freed slot, message 3 would
  // reset it under that queued packet.
  PacketBatch b;
  b.Push(Packet(pool, 2, 1, 0, 0, 1500, 0, 3, kMetaLastOfMessage));
  b.Push(Packet(pool, 3, 1, 0, 0, 100, 0, 4));
  b.Push(Packet(pool, 4, 3, 0, 0, 100, 0, 5));
  CHECK(s->Enqueue(b) == 2);
  const std::vector<rte_mbuf*> out = DrainAll(*s, 100);
  CHECK(std::set<rte_mbuf*>(out.begin(), out.end()) ==
        std::set<rte_mbuf*>{pool.Get(1), pool.Get(3), pool.Get(4)});
  CHECK(out.size() == 3);
  const SchedulerStats st = s->Stats();
  CHECK(st.total.queued_packets == 0);
  CHECK(st.total.enqueued_packets == st.total.dequeued_packets + st.total.dropped_packets());
  CHECK(st.live_messages == 3);  // each may send more
}

TEST_CASE("a packet behind an evicted last packet in one burst joins no freed slot",
          "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kLas);
  c.buffer_bytes = 2000;  // drop: worst
  c.message_idle_timeout_ns = 0;
  DropLog drops;
  auto s = MustCreate(c, drops);
  FakePool pool(12);
  for (size_t i = 0; i < 5; ++i) {  // message 1 sends 5000 bytes
    EnqueueOne(*s, Packet(pool, i, 1, 0, 0, 1000, 0, i));
    DrainAll(*s, 10);
  }
  EnqueueOne(*s, Packet(pool, 5, 1, 0, 0, 1500, 0, 20, kMetaLastOfMessage));
  EnqueueOne(*s, Packet(pool, 6, 2, 0, 0, 500, 0, 21));
  // Message 3's arrival evicts message 1's last packet (the worst ranked), which frees its slot
  // and room for what follows in the burst: a packet of message 1 sent after its last, then
  // message 4, which takes the freed slot from the top of the free list.
  PacketBatch b;
  b.Push(Packet(pool, 7, 3, 0, 0, 100, 0, 22));
  b.Push(Packet(pool, 8, 1, 0, 0, 100, 0, 23));
  b.Push(Packet(pool, 9, 4, 0, 0, 100, 0, 24));
  CHECK(s->Enqueue(b) == 3);
  CHECK(drops.pkts == std::vector<rte_mbuf*>{pool.Get(5)});
  const std::vector<rte_mbuf*> out = DrainAll(*s, 100);
  CHECK(std::set<rte_mbuf*>(out.begin(), out.end()) ==
        std::set<rte_mbuf*>{pool.Get(6), pool.Get(7), pool.Get(8), pool.Get(9)});
  CHECK(out.size() == 4);
  CHECK(s->Stats().total.queued_packets == 0);
}

TEST_CASE("a last packet refused in a class's empty default queue leaves that queue working",
          "[scheduler]") {
  SchedulerConfig c = LasTailDropConfig();
  c.buffer_packets = 1;
  c.max_messages = 1;
  DropLog drops;
  auto s = MustCreate(c, drops);
  FakePool pool(6);
  EnqueueOne(*s, Packet(pool, 0, 1, 0, 0, 1000, 0, 1));  // takes the only slot and the buffer
  // Message 2 falls back to the default queue, which holds nothing, and is refused: the default
  // queue's slot is shared, so nothing of one message ends it.
  CHECK(EnqueueOne(*s, Packet(pool, 1, 2, 0, 0, 1000, 0, 2, kMetaLastOfMessage)) == 0);
  CHECK(DrainAll(*s, 10) == std::vector<rte_mbuf*>{pool.Get(0)});
  CHECK(EnqueueOne(*s, Packet(pool, 2, 3, 0, 0, 1000, 0, 3)) == 1);  // the default queue again
  CHECK(DrainAll(*s, 20) == std::vector<rte_mbuf*>{pool.Get(2)});
  const SchedulerStats st = s->Stats();
  CHECK(st.total.table_full_fallback == 2);
  CHECK(st.live_messages == 1);
}

namespace {

// Random traffic (one-packet messages and longer ones, bursts of up to 32, batches of every
// size, drains to empty so that idle bursts happen) through one scheduler; returns the pool
// indices in the order they left. `mark_whole`: one-packet messages carry kMetaWholeMessage.
std::vector<size_t> RunMixedTraffic(Policy policy, bool mark_whole, SchedulerStats* stats) {
  SchedulerConfig c = OneClass(policy);
  c.max_messages = 256;
  c.message_hash_key = HashKey{0x243F6A8885A308D3ull, 0x13198A2E03707345ull};
  DropLog drops;
  auto s = MustCreate(c, drops);
  FakePool pool(20'000);
  std::mt19937_64 rng(11);
  struct Open {
    uint64_t id;
    uint32_t size, offset;
  };
  std::vector<Open> open;
  uint64_t next_id = 1;
  size_t used = 0;
  std::vector<size_t> order;
  uint64_t now = 0;
  while (used + kMaxBurst < pool.size()) {
    PacketBatch b;
    const uint32_t n = 1 + static_cast<uint32_t>(rng() % kMaxBurst);
    for (uint32_t k = 0; k < n; ++k) {
      if (open.empty() || rng() % 3 == 0) {
        const uint32_t packets = rng() % 2 == 0 ? 1 : 2 + static_cast<uint32_t>(rng() % 5);
        open.push_back({next_id++, packets * 1000, 0});
      }
      Open& o = open[rng() % open.size()];
      const bool last = o.offset + 1000 >= o.size;
      uint16_t flags = last ? kMetaLastOfMessage : 0;
      if (mark_whole && last && o.offset == 0) flags |= kMetaWholeMessage;
      b.Push(Packet(pool, used++, o.id, o.size, o.offset, 1000, 0, now += 300, flags));
      o.offset += 1000;
      if (last) {
        o = open.back();
        open.pop_back();
      }
    }
    s->Enqueue(b);
    // Take a random part of what waits, now and then all of it.
    const bool drain = rng() % 8 == 0;
    do {
      PacketBatch out;
      out.count = static_cast<uint16_t>(drain ? 0 : rng() % kMaxBurst);
      const uint16_t first = out.count;
      if (s->Dequeue(out, now) == 0) break;
      for (uint16_t i = first; i < out.count; ++i) order.push_back(pool.IndexOf(out.pkts[i]));
    } while (drain);
  }
  for (rte_mbuf* m : DrainAll(*s, now)) order.push_back(pool.IndexOf(m));
  REQUIRE(drops.pkts.empty());
  *stats = s->Stats();
  return order;
}

constexpr uint16_t kWhole = kMetaLastOfMessage | kMetaWholeMessage;

// An srpt uplink whose buffer holds `packets`, so that drop-worst evicts beyond it.
std::unique_ptr<Scheduler> SrptHolding(uint32_t packets, DropLog& drops) {
  SchedulerConfig c = OneClass(Policy::kSrpt);
  c.buffer_packets = packets;
  return MustCreate(c, drops);
}

}  // namespace

TEST_CASE("one-packet messages marked whole leave exactly as indexed ones would", "[scheduler]") {
  for (Policy p : {Policy::kSrpt, Policy::kLas, Policy::kFifo}) {
    SchedulerStats indexed, whole;
    const std::vector<size_t> a = RunMixedTraffic(p, false, &indexed);
    const std::vector<size_t> b = RunMixedTraffic(p, true, &whole);
    CHECK(a.size() == b.size());
    CHECK(a == b);
    CHECK(whole.total.dequeued_packets == indexed.total.dequeued_packets);
    CHECK(whole.total.table_full_fallback == indexed.total.table_full_fallback);
    CHECK(whole.idle_burst_packets == indexed.idle_burst_packets);
    if (p != Policy::kLas) CHECK(indexed.idle_burst_packets > 0);  // (las ranks need state)
    CHECK(whole.live_messages == indexed.live_messages);
  }
}

TEST_CASE("a one-packet message's slot goes back when it leaves, is evicted or refused",
          "[scheduler]") {
  DropLog drops;
  auto s = SrptHolding(3, drops);
  FakePool pool(8);
  const uint16_t whole = kWhole;
  PacketBatch b;
  b.Push(Packet(pool, 0, 1, 1000, 0, 1000, 0, 1, whole));
  b.Push(Packet(pool, 1, 2, 5000, 0, 1000, 0, 2, whole));
  b.Push(Packet(pool, 2, 1, 1000, 0, 1000, 0, 3, whole));  // a duplicate: a message of its own
  CHECK(s->Enqueue(b) == 3);
  CHECK(s->Stats().live_messages == 3);
  // A shorter message arrives at a full buffer: the 5000-byte one is evicted, its slot freed.
  CHECK(EnqueueOne(*s, Packet(pool, 3, 3, 500, 0, 500, 0, 4, whole)) == 1);
  REQUIRE(drops.pkts.size() == 1);
  CHECK(drops.pkts[0] == pool.Get(1));
  CHECK(s->Stats().live_messages == 3);
  // The worst itself is refused, and the slot it took is freed with it.
  CHECK(EnqueueOne(*s, Packet(pool, 4, 4, 9000, 0, 1000, 0, 5, whole)) == 0);
  CHECK(s->Stats().live_messages == 3);
  const std::vector<rte_mbuf*> expect = {pool.Get(3), pool.Get(0), pool.Get(2)};
  CHECK(DrainAll(*s, 10) == expect);
  const SchedulerStats st = s->Stats();
  CHECK(st.live_messages == 0);
  CHECK(st.total.dropped_worst == 2);
  CHECK(st.total.enqueued_packets == 5);
  CHECK(st.total.dequeued_packets == 3);
  CHECK(st.total.queued_packets == 0);
}

TEST_CASE("no packet joins a one-packet message, not even through a slot hint", "[scheduler]") {
  DropLog drops;
  auto s = SrptHolding(2, drops);
  FakePool pool(8);
  const uint16_t whole = kWhole;
  CHECK(EnqueueOne(*s, Packet(pool, 0, 7, 9000, 0, 1000, 0, 1, whole)) == 1);
  // (The first found the uplink idle and waits unfiled; the second files it.)
  CHECK(EnqueueOne(*s, Packet(pool, 1, 8, 2000, 0, 1000, 0, 2, whole)) == 1);
  const uint32_t lone_slot = Meta(pool.Get(0))->message_slot;
  REQUIRE(lone_slot != kNoMessageSlot);
  // The next burst: an arrival that evicts the one-packet message (freeing its slot), a new
  // one-packet message (which takes that slot), and a packet of another message with the first
  // one's id that names the freed slot as its hint.
  PacketBatch b;
  b.Push(Packet(pool, 2, 9, 1000, 0, 1000, 0, 3, whole));
  b.Push(Packet(pool, 3, 10, 500, 0, 500, 0, 4, whole));
  rte_mbuf* hinted = Packet(pool, 4, 7, 3000, 0, 1000, 0, 5);
  Meta(hinted)->message_slot = lone_slot;
  b.Push(hinted);
  // Each arrival evicts the worst: the 9000, the 2000, then the hinted packet itself, which had
  // to start a message of its own rather than join whatever holds its hinted slot by then.
  CHECK(s->Enqueue(b) == 2);
  const std::vector<rte_mbuf*> evicted = {pool.Get(0), pool.Get(1), hinted};
  CHECK(drops.pkts == evicted);
  // The two one-packet messages queued, and the hinted packet's message, which keeps its slot
  // for the packets still to come.
  CHECK(s->Stats().live_messages == 3);
  const std::vector<rte_mbuf*> expect = {pool.Get(3), pool.Get(2)};
  CHECK(DrainAll(*s, 10) == expect);
  CHECK(s->Stats().live_messages == 1);
  CHECK(s->Stats().total.queued_packets == 0);
}

TEST_CASE("a one-packet message's slot is freed when it leaves, even unmarked as last",
          "[scheduler]") {
  DropLog drops;
  auto s = MustCreate(OneClass(Policy::kLas), drops);
  FakePool pool(4);
  for (int i = 0; i < 3; ++i) {
    CHECK(EnqueueOne(*s, Packet(pool, i, 5, 0, 0, 100, 0, i, kMetaWholeMessage)) == 1);
  }
  CHECK(s->Stats().live_messages == 3);
  CHECK(DrainAll(*s, 10).size() == 3);
  CHECK(s->Stats().live_messages == 0);
}

TEST_CASE("strict priority between tenants, wfq between their classes", "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kFifo);
  c.classes = {ClassConfig{.name = "lo-a", .policy = Policy::kFifo, .weight = 1},
               ClassConfig{.name = "lo-b", .policy = Policy::kFifo, .weight = 3},
               ClassConfig{.name = "hi", .policy = Policy::kFifo}};
  c.tenant_share = Share::kPriority;
  c.tenants = {TenantConfig{.name = "bulk", .priority = 5, .classes = {0, 1}},
               TenantConfig{.name = "gold", .priority = 1, .classes = {2}}};
  DropLog drops;
  auto s = Scheduler::Create(c, &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  FakePool pool(400);
  size_t i = 0;
  for (int k = 0; k < 100; ++k) {
    EnqueueOne(**s, Packet(pool, i++, 1000 + k, 0, 0, 1000, 0, k));
    EnqueueOne(**s, Packet(pool, i++, 2000 + k, 0, 0, 1000, 1, k));
  }
  for (int k = 0; k < 20; ++k) EnqueueOne(**s, Packet(pool, i++, 3000 + k, 0, 0, 1000, 2, 500));
  auto out = DrainAll(**s, 1000);
  REQUIRE(out.size() == 220);
  for (int k = 0; k < 20; ++k) CHECK(Meta(out[k])->class_id == 2);  // gold first, all of it
  int a = 0, b = 0;
  for (int k = 20; k < 100; ++k) (Meta(out[k])->class_id == 0 ? a : b)++;
  CHECK(a == 20);  // 1:3 while both classes are backlogged
  CHECK(b == 60);
}

TEST_CASE("edf sends the earliest deadline first across classes' deadlines", "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kEdf);
  c.classes[0].deadline_ns = 1'000'000;
  DropLog drops;
  auto s = Scheduler::Create(c, &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  FakePool pool(4);
  EnqueueOne(**s, Packet(pool, 0, 1, 0, 0, 100, 0, 5'000));
  EnqueueOne(**s, Packet(pool, 1, 2, 0, 0, 100, 0, 1'000));
  std::vector<rte_mbuf*> expect = {pool.Get(1), pool.Get(0)};
  CHECK(DrainAll(**s, 10'000) == expect);
}

TEST_CASE("pace holds a class to its rate and tells when it may send", "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kPace);
  c.classes[0].rate_bps = 1'000'000'000;  // 1000 bytes = 8 us
  DropLog drops;
  auto s = Scheduler::Create(c, &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  FakePool pool(8);
  for (int i = 0; i < 4; ++i) EnqueueOne(**s, Packet(pool, i, 1, 0, 0, 1000, 0, 0));
  PacketBatch b;
  CHECK((*s)->Dequeue(b, 0) == 1);  // the first is due at once
  CHECK((*s)->Dequeue(b, 7'999) == 0);
  CHECK((*s)->NextSendTsc(7'999) == 8'000);
  CHECK((*s)->Dequeue(b, 8'000) == 1);
  CHECK((*s)->Dequeue(b, 30'000) == 2);  // both due by now
  CHECK((*s)->NextSendTsc(30'000) == UINT64_MAX);
}

TEST_CASE("the uplink pacer limits each Dequeue to its credit", "[scheduler]") {
  SchedulerConfig c = OneClass(Policy::kFifo);
  c.pacing_bps = 1'000'000'000;
  c.pacer_burst_bytes = 3000;
  DropLog drops;
  auto s = Scheduler::Create(c, &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  FakePool pool(40);
  for (int i = 0; i < 40; ++i) EnqueueOne(**s, Packet(pool, i, 1, 0, 0, 1000, 0, 0));
  PacketBatch b;
  CHECK((*s)->Dequeue(b, 0) == 3);  // a full bucket: 3000 bytes, credit now exactly 0
  b.count = 0;
  CHECK((*s)->Dequeue(b, 0) == 0);
  CHECK((*s)->Dequeue(b, 1) == 1);      // any credit lets one packet go, into deficit
  CHECK((*s)->Dequeue(b, 8'000) == 0);  // the deficit is paid back at 1 bit per ns
  CHECK((*s)->NextSendTsc(8'000) == 8'001);
  CHECK((*s)->Dequeue(b, 8'001) == 1);
}

TEST_CASE("a burst that finds the uplink idle leaves in rank order and takes no slot",
          "[scheduler][idle]") {
  DropLog drops;
  auto s = MustCreate(OneClass(Policy::kSrpt), drops);
  FakePool pool(8);
  PacketBatch b;
  b.Push(Packet(pool, 0, 1, 9000, 0, 100));     // 9000 bytes left
  b.Push(Packet(pool, 1, 2, 0, 0, 100));        // size unknown: last
  b.Push(Packet(pool, 2, 3, 3000, 1000, 100));  // 2000 left
  b.Push(Packet(pool, 3, 4, 500, 0, 100));      // 500 left
  b.Push(Packet(pool, 4, 5, 2000, 0, 100));     // 2000 left: behind the earlier arrival
  CHECK(s->Enqueue(b) == 5);
  SchedulerStats st = s->Stats();
  CHECK(st.idle_burst_packets == 5);
  CHECK(st.live_messages == 0);
  CHECK(st.total.queued_packets == 5);
  CHECK(st.total.queued_bytes == 500);
  CHECK(s->NextSendTsc(7) == 7);
  std::vector<rte_mbuf*> expect = {pool.Get(3), pool.Get(2), pool.Get(4), pool.Get(0),
                                   pool.Get(1)};
  CHECK(DrainAll(*s, 10) == expect);
  st = s->Stats();
  CHECK(st.total.dequeued_packets == 5);
  CHECK(st.total.dequeued_bytes == 500);
  CHECK(st.total.queued_packets == 0);
  CHECK(s->NextSendTsc(10) == UINT64_MAX);
  CHECK(drops.pkts.empty());
}

TEST_CASE("an idle burst of a fifo, priority or edf class leaves by arrival, whatever the sizes",
          "[scheduler][idle]") {
  // Each policy ranks the burst its own way: by remaining size, as srpt would, these would leave
  // in the reverse order.
  const Policy policy = GENERATE(Policy::kFifo, Policy::kPriority, Policy::kEdf);
  SchedulerConfig c = OneClass(policy);
  if (policy == Policy::kEdf) c.classes[0].deadline_ns = 50'000;
  DropLog drops;
  auto s = MustCreate(c, drops);
  FakePool pool(4);
  PacketBatch b;
  for (uint32_t i = 0; i < 4; ++i) {
    b.Push(Packet(pool, i, i + 1, /*size=*/9000 - 2000 * i, 0, 100, 0, /*arrival=*/100 + 1000 * i));
  }
  CHECK(s->Enqueue(b) == 4);
  CHECK(s->Stats().idle_burst_packets == 4);
  const uint64_t deadline = policy == Policy::kEdf ? 50'000 * kHz / 1'000'000'000 : 0;
  for (uint32_t i = 0; i < 4; ++i) CHECK(Meta(pool.Get(i))->rank == 100 + 1000 * i + deadline);
  const std::vector<rte_mbuf*> expect = {pool.Get(0), pool.Get(1), pool.Get(2), pool.Get(3)};
  CHECK(DrainAll(*s, 10'000) == expect);
  CHECK(drops.pkts.empty());

  SECTION("while srpt reverses them") {
    auto srpt = MustCreate(OneClass(Policy::kSrpt), drops);
    for (uint32_t i = 0; i < 4; ++i) {
      b.Push(Packet(pool, i, i + 1, 9000 - 2000 * i, 0, 100, 0, 100 + 1000 * i));
    }
    CHECK(srpt->Enqueue(b) == 4);
    CHECK(srpt->Stats().idle_burst_packets == 4);
    CHECK(DrainAll(*srpt, 10'000) ==
          std::vector<rte_mbuf*>{pool.Get(3), pool.Get(2), pool.Get(1), pool.Get(0)});
  }
}

TEST_CASE("what the batch leaves of an idle burst is filed before the next burst",
          "[scheduler][idle]") {
  DropLog drops;
  auto s = MustCreate(OneClass(Policy::kSrpt), drops);
  FakePool pool(8);
  PacketBatch b;
  b.Push(Packet(pool, 0, 1, 4000, 0, 100));
  b.Push(Packet(pool, 1, 2, 1000, 0, 100));
  b.Push(Packet(pool, 2, 3, 3000, 0, 100));
  b.Push(Packet(pool, 3, 4, 2000, 0, 100));
  CHECK(s->Enqueue(b) == 4);
  PacketBatch out;
  out.count = kMaxBurst - 1;  // room for one
  CHECK(s->Dequeue(out, 1) == 1);
  CHECK(out.pkts[kMaxBurst - 1] == pool.Get(1));
  // Message 4's next packet has less left than anything queued, but waits behind its first one;
  // message 5 is new and shortest.
  b.Push(Packet(pool, 4, 4, 2000, 1900, 100));
  b.Push(Packet(pool, 5, 5, 1500, 0, 100));
  CHECK(s->Enqueue(b) == 2);
  SchedulerStats st = s->Stats();
  CHECK(st.idle_burst_packets == 4);  // the second burst found packets queued
  CHECK(st.live_messages == 4);       // messages 1, 3, 4 filed, and 5
  std::vector<rte_mbuf*> expect = {pool.Get(5), pool.Get(3), pool.Get(4), pool.Get(2),
                                   pool.Get(0)};
  CHECK(DrainAll(*s, 10) == expect);
  CHECK(s->Stats().total.queued_packets == 0);
}

TEST_CASE("a message that waited frees its slot when its last packet finds the uplink idle",
          "[scheduler][idle]") {
  SchedulerConfig c = OneClass(Policy::kSrpt);
  c.message_idle_timeout_ns = 0;  // only a last packet frees a slot
  DropLog drops;
  auto s = MustCreate(c, drops);
  FakePool pool(8);
  PacketBatch b;
  b.Push(Packet(pool, 0, 1, 3000, 0, 100));
  b.Push(Packet(pool, 1, 1, 3000, 1000, 100));  // message 1 twice: filed, it takes a slot
  s->Enqueue(b);
  CHECK(s->Stats().live_messages == 1);
  CHECK(DrainAll(*s, 10).size() == 2);
  CHECK(s->Stats().live_messages == 1);  // it may send more
  b.Push(Packet(pool, 2, 2, 500, 0, 100));
  b.Push(Packet(pool, 3, 1, 3000, 2000, 100, 0, 0, kMetaLastOfMessage));
  s->Enqueue(b);
  CHECK(s->Stats().idle_burst_packets == 2);
  std::vector<rte_mbuf*> expect = {pool.Get(2), pool.Get(3)};
  CHECK(DrainAll(*s, 10) == expect);
  CHECK(s->Stats().live_messages == 0);
}

TEST_CASE("an idle burst holding a message twice takes the general path", "[scheduler][idle]") {
  DropLog drops;
  auto s = MustCreate(OneClass(Policy::kSrpt), drops);
  FakePool pool(4);
  PacketBatch b;
  b.Push(Packet(pool, 0, 1, 3000, 0, 100));
  b.Push(Packet(pool, 1, 2, 2500, 0, 100));
  b.Push(Packet(pool, 2, 1, 3000, 2900, 100));  // 100 left, but behind message 1's first
  CHECK(s->Enqueue(b) == 3);
  CHECK(s->Stats().idle_burst_packets == 0);
  std::vector<rte_mbuf*> expect = {pool.Get(1), pool.Get(0), pool.Get(2)};
  CHECK(DrainAll(*s, 10) == expect);
}

// Bursts of 32 random ids: nearly every one has two ids with the same home in the scheduler's
// 64-entry table of a burst's ids, which must still be told apart; a repeated id is found
// wherever its two packets sit.
TEST_CASE("an idle burst is taken exactly when its 32 message ids are distinct",
          "[scheduler][idle]") {
  std::mt19937_64 rng(7);
  FakePool pool(kMaxBurst);
  DropLog drops;
  auto s = MustCreate(OneClass(Policy::kSrpt), drops);
  uint64_t expected_idle = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<uint64_t> ids(kMaxBurst);
    for (uint64_t& id : ids) id = rng();
    if (trial % 3 == 0) ids[rng() % kMaxBurst] = ids[rng() % kMaxBurst];  // may pick itself
    const bool distinct = std::set<uint64_t>(ids.begin(), ids.end()).size() == kMaxBurst;
    PacketBatch b;
    for (uint16_t i = 0; i < kMaxBurst; ++i) b.Push(Packet(pool, i, ids[i], 3000, 0, 100));
    REQUIRE(s->Enqueue(b) == kMaxBurst);
    if (distinct) expected_idle += kMaxBurst;
    INFO("trial " << trial);
    CHECK(s->Stats().idle_burst_packets == expected_idle);
    CHECK(DrainAll(*s, 100).size() == kMaxBurst);
  }
  CHECK(expected_idle > 0);
  CHECK(expected_idle < 400 * kMaxBurst);
}

TEST_CASE("stateful ranks and tight limits keep idle bursts on the general path",
          "[scheduler][idle]") {
  FakePool pool(4);
  auto burst_of_two = [&](const SchedulerConfig& c) {
    DropLog drops;
    auto s = MustCreate(c, drops);
    PacketBatch b;
    b.Push(Packet(pool, 0, 1, 3000, 0, 100));
    b.Push(Packet(pool, 1, 2, 2500, 0, 100));
    s->Enqueue(b);
    uint64_t idle = s->Stats().idle_burst_packets;
    CHECK(DrainAll(*s, 10).size() + drops.pkts.size() == 2);
    return idle;
  };
  CHECK(burst_of_two(OneClass(Policy::kFifo)) == 2);
  CHECK(burst_of_two(OneClass(Policy::kLas)) == 0);  // ranks by what each message sent
  SchedulerConfig aged = OneClass(Policy::kSrpt);
  aged.classes[0].srpt_aging_ns = 1000;
  CHECK(burst_of_two(aged) == 0);
  SchedulerConfig two = OneClass(Policy::kFifo);
  two.classes.push_back(ClassConfig{.name = "d", .policy = Policy::kFifo});
  CHECK(burst_of_two(two) == 0);  // a share decides between classes
  SchedulerConfig small = OneClass(Policy::kFifo);
  small.buffer_packets = 1;  // the general path drops one
  CHECK(burst_of_two(small) == 0);
  SchedulerConfig limited = OneClass(Policy::kFifo);
  limited.message_limit_bytes = 50;
  CHECK(burst_of_two(limited) == 0);
}

TEST_CASE("a slot handed over by classification skips the index", "[scheduler]") {
  DropLog drops;
  // las keeps every message's state (bytes sent), so even the first packet files one.
  auto s = Scheduler::Create(OneClass(Policy::kLas), &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  FakePool pool(4);
  rte_mbuf* first = Packet(pool, 0, 77, 0, 0, 100);
  EnqueueOne(**s, first);
  uint32_t slot = Meta(first)->message_slot;
  CHECK(slot != kNoMessageSlot);
  rte_mbuf* second = Packet(pool, 1, 77, 0, 0, 100);
  Meta(second)->message_slot = slot;
  EnqueueOne(**s, second);
  rte_mbuf* stale = Packet(pool, 2, 78, 0, 0, 100);
  Meta(stale)->message_slot = slot;  // wrong message: must be looked up, not trusted
  EnqueueOne(**s, stale);
  CHECK(Meta(stale)->message_slot != slot);
  CHECK((*s)->Stats().live_messages == 2);
  CHECK(DrainAll(**s, 1).size() == 3);
}

TEST_CASE("configuration errors are all reported, with the field", "[scheduler][config]") {
  SchedulerConfig c;
  c.name = "uplink0";
  c.rate_bps = 1'000'000'000;
  c.pacing_bps = 2'000'000'000;
  c.rank_buckets = 1000;
  c.message_idle_timeout_ns = 7'200'000'000'000;
  c.classes = {ClassConfig{.name = "p", .policy = Policy::kPace},
               ClassConfig{.name = "e", .policy = Policy::kEdf, .priority = 9},
               ClassConfig{.name = "f",
                           .policy = Policy::kFifo,
                           .srpt_aging_ns = 5,
                           .message_idle_ns = 3'600'000'000'001},
               ClassConfig{.name = "e", .policy = Policy::kFifo}};
  c.tenants = {TenantConfig{.name = "t", .classes = {0, 0, 5}},
               TenantConfig{.name = "t", .classes = {3}}};
  Status st = Validate(c);
  REQUIRE_FALSE(st.ok());
  CHECK(
      st.message() ==
      "uplink0: pacing: 2000000000 bps is above the line rate 1000000000 bps; pace at or below it\n"
      "uplink0: message_idle_timeout: 7200000000000 ns is above the most, one hour\n"
      "uplink0: rank_buckets: 1000 must be a power of two between 64 and 16777216\n"
      "uplink0: classes[0] (p).rate: policy pace needs a rate, e.g. rate: 1Gbps\n"
      "uplink0: classes[1] (e).priority: 9 is not in 0..7\n"
      "uplink0: classes[1] (e).deadline: policy edf needs a deadline, e.g. deadline: 100us\n"
      "uplink0: classes[2] (f).aging: only policy srpt ages, this class is fifo\n"
      "uplink0: classes[2] (f).message_idle: 3600000000001 ns is above the most, one hour\n"
      "uplink0: classes[3] (e).name: already the name of classes[1]\n"
      "uplink0: tenants[0] (t).classes: class 0 already belongs to tenants[0]\n"
      "uplink0: tenants[0] (t).classes: class 5 does not exist (there are 4)\n"
      "uplink0: tenants[1] (t).name: already the name of tenants[0]\n"
      "uplink0: classes[1]: belongs to no tenant\n"
      "uplink0: classes[2]: belongs to no tenant");
  DropLog drops;
  auto s = Scheduler::Create(c, &DropLog::Sink, &drops);
  CHECK_FALSE(s.ok());
  auto no_sink = Scheduler::Create(OneClass(Policy::kFifo), nullptr, nullptr);
  REQUIRE_FALSE(no_sink.ok());
  CHECK(no_sink.message() == "scheduler needs a drop sink to hand dropped packets back to");
  CHECK(Validate(OneClass(Policy::kSrpt)).ok());
}

TEST_CASE("time in the scheduler is counted per class in power-of-two buckets", "[scheduler]") {
  CHECK(SojournBucket(0) == 0);
  CHECK(SojournBucket((1u << kSojournShift) - 1) == 0);
  CHECK(SojournBucket(1u << kSojournShift) == 1);
  CHECK(SojournBucket(3u << kSojournShift) == 2);
  CHECK(SojournBucket(UINT64_MAX) == kSojournBuckets - 1);
  DropLog drops;
  SchedulerConfig c = OneClass(Policy::kFifo);
  c.classes.push_back({.name = "d", .policy = Policy::kFifo});
  auto s = MustCreate(c, drops);
  FakePool pool(4);
  EnqueueOne(*s, Packet(pool, 0, 1, 0, 0, 100, 0, 1000));
  EnqueueOne(*s, Packet(pool, 1, 2, 0, 0, 100, 0, 1000));
  EnqueueOne(*s, Packet(pool, 2, 3, 0, 0, 100, 1, 1000));
  CHECK(DrainAll(*s, 1000 + (5u << kSojournShift)).size() == 3);
  const SchedulerStats st = s->Stats();
  CHECK(st.classes[0].sojourn[3] == 2);  // waited 5 units: below 2^3
  CHECK(st.classes[1].sojourn[3] == 1);
  CHECK(st.total.sojourn[3] == 3);
}

TEST_CASE("a scheduler that takes over another's packets continues its classes' counts",
          "[scheduler]") {
  DropLog drops;
  SchedulerConfig c = OneClass(Policy::kFifo);
  c.classes.push_back({.name = "d", .policy = Policy::kFifo});
  auto old = MustCreate(c, drops);
  FakePool pool(8);
  for (size_t i = 0; i < 6; ++i) {
    EnqueueOne(*old, Packet(pool, i, i + 1, 0, 0, 100, static_cast<uint16_t>(i % 2)));
  }
  PacketBatch sent;
  old->Dequeue(sent, 0);  // all six: unpaced
  REQUIRE(sent.count == 6);
  for (size_t i = 0; i < 2; ++i) {  // two of class "c" come back, as if they had waited
    EnqueueOne(*old, Packet(pool, 6 + i, 7 + i, 0, 0, 100, 0));
  }
  const SchedulerStats before = old->Stats();
  // The new tree keeps "c" as its class 1 and drops "d"; "c"'s two waiting packets move.
  SchedulerConfig next = c;
  next.classes = {{.name = "e", .policy = Policy::kSrpt}, {.name = "c", .policy = Policy::kFifo}};
  auto fresh = MustCreate(next, drops);
  PacketBatch moved;
  old->Dequeue(moved, 0);
  for (uint16_t i = 0; i < moved.count; ++i) Meta(moved.pkts[i])->class_id = 1;
  fresh->Enqueue(moved);
  const std::vector<int32_t> class_of_old = {1, -1};
  fresh->ContinueFrom(before, class_of_old, 0);
  const SchedulerStats after = fresh->Stats();
  CHECK(after.classes[1].enqueued_packets == 5);  // 3 + 2 of "c"
  CHECK(after.classes[1].dequeued_packets == 3);
  CHECK(after.classes[1].queued_packets == 2);
  CHECK(after.classes[0].enqueued_packets == 0);
  CHECK(after.dropped_reconfigured == 0);
  CHECK(DrainAll(*fresh, 0).size() == 2);
  CHECK(fresh->Stats().classes[1].dequeued_packets == 5);
}

}  // namespace qosvisor::sched

namespace qosvisor::sched {
namespace {

// What the switch does to an uplink's scheduler on a live reconfiguration (ApplyUplinkChange):
// the new tree inherits the old one's policy state (unless `inherit` is false), then takes its
// packets, drained in order under a clock far enough ahead, and continues its counts.
void MoveInto(Scheduler& old, Scheduler& fresh, const std::vector<int32_t>& class_of_old,
              bool inherit = true) {
  const SchedulerStats before = old.Stats();
  if (inherit) fresh.InheritPolicyState(old, class_of_old);
  uint64_t t = 0;
  while (old.queued_packets() != 0) {
    t += kHz * 1000;
    PacketBatch moved;
    old.Dequeue(moved, t);
    for (uint16_t i = 0; i < moved.count; ++i) {
      PacketMeta& pm = *Meta(moved.pkts[i]);
      pm.class_id = static_cast<uint16_t>(class_of_old[pm.class_id]);
      pm.message_slot = kNoMessageSlot;
    }
    fresh.Enqueue(moved);
  }
  fresh.ContinueFrom(before, class_of_old, 0);
}

// What the switch does on a reload that leaves ranking alone: the new tree takes the old one's
// queues as they are, then continues its counts.
void AdoptInto(Scheduler& old, Scheduler& fresh) {
  const SchedulerStats before = old.Stats();
  REQUIRE(fresh.AdoptQueues(old));
  std::vector<int32_t> same(before.classes.size());
  std::iota(same.begin(), same.end(), 0);
  fresh.ContinueFrom(before, same, 0);
}

// las, before a reload: C sent 5000 bytes and waits for more, A sent 2000 and has one packet
// queued, B has sent nothing and has one queued. After it: C and a new message D arrive.
std::vector<rte_mbuf*> LasAcrossReload(FakePool& pool, bool inherit) {
  DropLog drops;
  auto old = MustCreate(OneClass(Policy::kLas), drops);
  for (size_t i = 0; i < 5; ++i) EnqueueOne(*old, Packet(pool, i, 3, 0, 0, 1000));
  DrainAll(*old, 0);
  for (size_t i = 5; i < 7; ++i) EnqueueOne(*old, Packet(pool, i, 1, 0, 0, 1000));
  DrainAll(*old, 0);
  EnqueueOne(*old, Packet(pool, 7, 1, 0, 0, 1000));  // A3
  EnqueueOne(*old, Packet(pool, 8, 2, 0, 0, 1000));  // B1
  auto fresh = MustCreate(OneClass(Policy::kLas), drops);
  MoveInto(*old, *fresh, {0}, inherit);
  EnqueueOne(*fresh, Packet(pool, 9, 3, 0, 0, 1000));   // C6
  EnqueueOne(*fresh, Packet(pool, 10, 4, 0, 0, 1000));  // D1
  return DrainAll(*fresh, 0);
}

}  // namespace

TEST_CASE("a reloaded las class goes on ranking messages by the bytes they sent before",
          "[scheduler][reconfigure]") {
  FakePool pool(12);
  const std::vector<rte_mbuf*> b1_d1_a3_c6 = {pool.Get(8), pool.Get(10), pool.Get(7), pool.Get(9)};
  CHECK(LasAcrossReload(pool, true) == b1_d1_a3_c6);
  // A tree that starts afresh takes A and C for new messages: the order is arrival order.
  const std::vector<rte_mbuf*> b1_a3_c6_d1 = {pool.Get(8), pool.Get(7), pool.Get(9), pool.Get(10)};
  CHECK(LasAcrossReload(pool, false) == b1_a3_c6_d1);
}

namespace {

// Sends what `s` holds from `from` on, in steps of 500 cycles; returns each packet's send time by
// pool index.
std::vector<uint64_t> SendTimes(Scheduler& s, FakePool& pool, uint64_t from) {
  std::vector<uint64_t> at(pool.size(), 0);
  for (uint64_t now = from; s.queued_packets() != 0; now += 500) {
    REQUIRE(now < from + 1'000'000);
    PacketBatch b;
    s.Dequeue(b, now);
    for (uint16_t i = 0; i < b.count; ++i) at[pool.IndexOf(b.pkts[i])] = now;
  }
  return at;
}

}  // namespace

TEST_CASE("a reloaded paced class sends its moved packets no sooner than due, at its rate",
          "[scheduler][reconfigure]") {
  SchedulerConfig c = OneClass(Policy::kPace);
  c.classes[0].rate_bps = 1'000'000'000;  // 1000 bytes = 8 us
  DropLog drops;
  FakePool pool(4);
  // Message A's first packet is due at 0, message B's at 8 us. At 100 us the uplink takes one
  // packet (A1), and A2, its head now, reserves 100 us; C1, arriving at 100.5 us, 108 us. B1 still
  // waits. Reserved: 8, 100 and 108 us; the gap between the first two must not close.
  auto build_old = [&] {
    auto old = MustCreate(c, drops);
    EnqueueOne(*old, Packet(pool, 0, 1, 0, 0, 1000, 0, 0));
    EnqueueOne(*old, Packet(pool, 1, 1, 0, 0, 1000, 0, 0));
    EnqueueOne(*old, Packet(pool, 2, 2, 0, 0, 1000, 0, 0));
    PacketBatch b;
    b.count = kMaxBurst - 1;
    REQUIRE(old->Dequeue(b, 100'000) == 1);
    EnqueueOne(*old, Packet(pool, 3, 3, 0, 0, 1000, 0, 100'500));
    return old;
  };
  const uint64_t due[4] = {0, 100'000, 8'000, 108'000};
  auto old = build_old();
  auto fresh = MustCreate(c, drops);
  MoveInto(*old, *fresh, {0});
  const std::vector<uint64_t> at = SendTimes(*fresh, pool, 101'000);
  std::vector<uint64_t> times;
  for (size_t i = 1; i < 4; ++i) {
    INFO("packet " << i);
    CHECK(at[i] >= due[i]);
    times.push_back(at[i]);
  }
  std::sort(times.begin(), times.end());
  for (size_t i = 1; i < times.size(); ++i) CHECK(times[i] - times[i - 1] >= 8'000);
  // A tree that starts afresh re-ranks them from their arrival: all are due at once.
  auto old2 = build_old();
  auto afresh = MustCreate(c, drops);
  MoveInto(*old2, *afresh, {0}, false);
  CHECK(afresh->NextSendTsc(101'000) == 101'000);
}

TEST_CASE("a reloaded srpt class with aging keeps each message's age", "[scheduler][reconfigure]") {
  for (bool inherit : {true, false}) {
    SchedulerConfig c = OneClass(Policy::kSrpt);
    c.classes[0].srpt_aging_ns = 1'000'000;  // 1 KiB less left per ms waited
    DropLog drops;
    auto old = MustCreate(c, drops);
    FakePool pool(3);
    EnqueueOne(*old, Packet(pool, 0, 1, 100'000, 0, 1000, 0, 0));  // A started at 0
    DrainAll(*old, 0);
    // One second later: A has 99,000 bytes left, B (new) 98,000.
    EnqueueOne(*old, Packet(pool, 1, 1, 100'000, 1000, 1000, 0, kHz));
    EnqueueOne(*old, Packet(pool, 2, 2, 98'000, 0, 1000, 0, kHz));
    auto fresh = MustCreate(c, drops);
    MoveInto(*old, *fresh, {0}, inherit);
    const std::vector<rte_mbuf*> out = DrainAll(*fresh, 2 * kHz);
    REQUIRE(out.size() == 2);
    // A's second of head start counts 1,024,000 bytes: it goes first, unless it looks new.
    CHECK(out[0] == pool.Get(inherit ? 1 : 2));
  }
}

TEST_CASE("a reload into a smaller table keeps a slot for every packet that moves",
          "[scheduler][reconfigure]") {
  SchedulerConfig c = OneClass(Policy::kLas);
  c.max_messages = 64;
  DropLog drops;
  auto old = MustCreate(c, drops);
  FakePool pool(60);
  for (size_t i = 0; i < 40; ++i) EnqueueOne(*old, Packet(pool, i, 100 + i, 0, 0, 1000));
  DrainAll(*old, 0);  // 40 messages that wait for more
  // 20 messages of one packet queued: they carry no state, and each needs a slot when it moves.
  constexpr uint16_t kWhole = kMetaWholeMessage | kMetaLastOfMessage;
  for (size_t i = 40; i < 60; ++i) {
    EnqueueOne(*old, Packet(pool, i, 200 + i, 1000, 0, 1000, 0, 0, kWhole));
  }
  c.max_messages = 30;
  auto fresh = MustCreate(c, drops);
  MoveInto(*old, *fresh, {0});
  const SchedulerStats st = fresh->Stats();
  CHECK(st.total.table_full_fallback == 0);
  CHECK(st.total.probe_limit_fallback == 0);
  CHECK(st.live_messages == 30);  // 10 of the waiting messages beside the 20 that moved
  CHECK(DrainAll(*fresh, 0).size() == 20);
}

TEST_CASE("a reload carries over the waiting messages that lie after every queued one",
          "[scheduler][reconfigure]") {
  DropLog drops;
  auto old = MustCreate(OneClass(Policy::kLas), drops);
  FakePool pool(12);
  // Slots go out in order: message 1 (A) takes the lowest, 2 (B) and 3 (C) the next ones.
  EnqueueOne(*old, Packet(pool, 0, 1, 0, 0, 1000));
  for (size_t i = 1; i <= 3; ++i) EnqueueOne(*old, Packet(pool, i, 2, 0, 0, 1000));
  EnqueueOne(*old, Packet(pool, 4, 3, 0, 0, 1000));
  DrainAll(*old, 0);
  EnqueueOne(*old, Packet(pool, 5, 1, 0, 0, 1000));  // A queued again; B and C wait for more
  auto fresh = MustCreate(OneClass(Policy::kLas), drops);
  MoveInto(*old, *fresh, {0});
  EnqueueOne(*fresh, Packet(pool, 6, 2, 0, 0, 1000));  // B, 3000 bytes sent
  EnqueueOne(*fresh, Packet(pool, 7, 3, 0, 0, 1000));  // C, 1000 bytes sent
  EnqueueOne(*fresh, Packet(pool, 8, 4, 0, 0, 1000));  // D, new
  const std::vector<rte_mbuf*> d_a_c_b = {pool.Get(8), pool.Get(5), pool.Get(7), pool.Get(6)};
  CHECK(DrainAll(*fresh, 0) == d_a_c_b);
}

namespace {

// 1,000 one-packet messages of class 0 under `c`, sent: all wait for more (las carries them over).
std::unique_ptr<Scheduler> ThousandWaiting(const SchedulerConfig& c, FakePool& pool,
                                           DropLog& drops) {
  auto s = MustCreate(c, drops);
  EnqueueNewMessages(*s, pool, 1, 1'000, 0, 0);
  REQUIRE(DrainAll(*s, 10).size() == 1'000);
  return s;
}

// Those 1,000, now in `s` under a 1 ms quiet time and quiet for longer: 4,000 visits are owed,
// at most 512 a call, so eight calls pass them all (the hand alone, 2 slots a call, would take
// 500).
void CheckThousandFreedSoon(Scheduler& s) {
  REQUIRE(s.Stats().live_messages == 1'000);
  PollIdle(s, 3'000'000, 8);
  CHECK(s.Stats().messages_reclaimed_idle == 1'000);
  CHECK(s.Stats().live_messages == 0);
}

}  // namespace

TEST_CASE("a reload owes the sweep the visits of the quiet messages it carries over",
          "[scheduler][reconfigure]") {
  DropLog drops;
  FakePool pool(1'000);
  auto old = ThousandWaiting(BurstsAndRpc(), pool, drops);
  auto fresh = MustCreate(BurstsAndRpc(), drops);
  MoveInto(*old, *fresh, {0, 1});
  CheckThousandFreedSoon(*fresh);
}

TEST_CASE("a reload into a smaller buffer frees the slot of a message whose last packet it drops",
          "[scheduler][reconfigure]") {
  SchedulerConfig c = LasTailDropConfig();
  DropLog drops;
  auto old = MustCreate(c, drops);
  FakePool pool(4);
  // One message of three packets, all queued, the third marked last.
  for (size_t i = 0; i < 3; ++i) {
    const uint16_t flags = i == 2 ? kMetaLastOfMessage : 0;
    EnqueueOne(*old, Packet(pool, i, 7, 3000, 1000 * i, 1000, 0, i, flags));
  }
  c.buffer_packets = 2;
  auto fresh = MustCreate(c, drops);
  MoveInto(*old, *fresh, {0});
  CHECK(fresh->Stats().total.dropped_tail == 1);
  const std::vector<rte_mbuf*> expect = {pool.Get(0), pool.Get(1)};
  CHECK(DrainAll(*fresh, 0) == expect);
  CHECK(fresh->Stats().live_messages == 0);
  CHECK(old->Stats().live_messages == 0);
}

TEST_CASE("a mark moved onto a queued packet before a reload frees the slot in the new tree",
          "[scheduler][reconfigure]") {
  DropLog drops;
  auto old = LasTailDrop(2, drops);
  FakePool pool(3);
  for (size_t i = 0; i < 2; ++i) EnqueueOne(*old, Packet(pool, i, 7, 0, 0, 1000, 0, i));
  CHECK(EnqueueOne(*old, Packet(pool, 2, 7, 0, 0, 1000, 0, 9, kMetaLastOfMessage)) == 0);
  auto fresh = LasTailDrop(16, drops);
  MoveInto(*old, *fresh, {0});
  CHECK(DrainAll(*fresh, 0).size() == 2);
  CHECK(fresh->Stats().live_messages == 0);
}

TEST_CASE(
    "a reload does not carry messages of a removed class, and a class that changed "
    "policy keeps its messages' bytes sent",
    "[scheduler][reconfigure]") {
  SchedulerConfig c = OneClass(Policy::kSrpt);
  c.classes.push_back({.name = "gone", .policy = Policy::kFifo});
  DropLog drops;
  auto old = MustCreate(c, drops);
  FakePool pool(6);
  for (size_t i = 0; i < 3; ++i) EnqueueOne(*old, Packet(pool, i, 1, 100'000, 1000 * i, 1000));
  EnqueueOne(*old, Packet(pool, 3, 2, 100'000, 0, 1000, 1));
  DrainAll(*old, 0);  // message 1 sent 3000 bytes; message 2 (class "gone") 1000
  SchedulerConfig next = OneClass(Policy::kLas);
  auto fresh = MustCreate(next, drops);
  MoveInto(*old, *fresh, {0, -1});
  CHECK(fresh->Stats().live_messages == 1);
  EnqueueOne(*fresh, Packet(pool, 4, 1, 100'000, 3000, 1000));
  EnqueueOne(*fresh, Packet(pool, 5, 3, 100'000, 0, 1000));
  const std::vector<rte_mbuf*> new_one_first = {pool.Get(5), pool.Get(4)};
  CHECK(DrainAll(*fresh, 0) == new_one_first);
}

namespace {

// One step of a scripted history: a packet arrives (of message `message`, `offset` bytes in),
// or the uplink takes up to `room` packets.
struct Step {
  bool arrival = false;
  uint64_t message = 0;
  uint32_t size = 0;
  uint32_t offset = 0;
  uint32_t len = 0;
  uint16_t room = 0;
  uint64_t t = 0;
};

// Eight senders, each sending messages of 1 to 6 packets of its own length one after another,
// and the uplink taking a few packets now and then, so that queues build and drain.
std::vector<Step> Script(uint64_t seed, uint64_t t0, uint64_t first_id, size_t steps) {
  std::mt19937_64 rng(seed);
  struct Sender {
    uint64_t id;
    uint32_t size;
    uint32_t offset;
  };
  std::vector<Sender> senders(8);
  uint64_t next_id = first_id;
  std::vector<Step> out;
  for (size_t i = 0; i < steps; ++i) {
    Step st;
    st.t = t0 + 10 * i;
    if (rng() % 4 == 0) {
      st.room = static_cast<uint16_t>(1 + rng() % 4);
      out.push_back(st);
      continue;
    }
    const size_t k = rng() % senders.size();
    Sender& snd = senders[k];
    const uint32_t len = 100 + 200 * static_cast<uint32_t>(k);
    if (snd.offset == 0) snd = {next_id++, len * static_cast<uint32_t>(1 + rng() % 6), 0};
    st = Step{true, snd.id, snd.size, snd.offset, len, 0, st.t};
    snd.offset += len;
    if (snd.offset >= snd.size) snd.offset = 0;
    out.push_back(st);
  }
  return out;
}

// Plays `steps` on `s` with the pool's packets from `next` on; records what leaves.
void Play(Scheduler& s, FakePool& pool, const std::vector<Step>& steps, size_t& next,
          std::vector<size_t>& sent) {
  for (const Step& st : steps) {
    if (st.arrival) {
      const uint16_t last = st.offset + st.len >= st.size ? kMetaLastOfMessage : 0;
      EnqueueOne(s, Packet(pool, next++, st.message, st.size, st.offset, st.len, 0, st.t, last));
      continue;
    }
    PacketBatch b;
    b.count = static_cast<uint16_t>(kMaxBurst - st.room);
    s.Dequeue(b, st.t);
    for (uint16_t i = kMaxBurst - st.room; i < b.count; ++i)
      sent.push_back(pool.IndexOf(b.pkts[i]));
  }
}

}  // namespace

TEST_CASE("a reload that keeps a class's policy changes nothing of the order it sends in",
          "[scheduler][reconfigure]") {
  std::vector<SchedulerConfig> configs;
  for (Policy p : {Policy::kLas, Policy::kWfq, Policy::kSrpt, Policy::kFifo, Policy::kEdf}) {
    configs.push_back(OneClass(p));
    configs.back().classes[0].deadline_ns = 1000;
  }
  configs.push_back(OneClass(Policy::kSrpt));
  configs.back().classes[0].srpt_aging_ns = 200;  // 1 KiB less left per 200 units waited
  for (const SchedulerConfig& c : configs) {
    for (uint64_t seed = 1; seed <= 20; ++seed) {
      const std::vector<Step> before = Script(seed, 0, 1, 150);
      const std::vector<Step> after = Script(seed + 100, 1500, 1000, 150);
      DropLog drops;
      FakePool pool_a(300), pool_b(300);
      size_t next_a = 0, next_b = 0;
      std::vector<size_t> sent_a, sent_b;
      auto a = MustCreate(c, drops);
      Play(*a, pool_a, before, next_a, sent_a);
      Play(*a, pool_a, after, next_a, sent_a);
      for (rte_mbuf* m : DrainAll(*a, 1'000'000)) sent_a.push_back(pool_a.IndexOf(m));
      auto b = MustCreate(c, drops);
      Play(*b, pool_b, before, next_b, sent_b);
      auto reloaded = MustCreate(c, drops);
      MoveInto(*b, *reloaded, {0});
      Play(*reloaded, pool_b, after, next_b, sent_b);
      for (rte_mbuf* m : DrainAll(*reloaded, 1'000'000)) sent_b.push_back(pool_b.IndexOf(m));
      // The same reload taken in place (the rate changes, which no rank reads here).
      FakePool pool_c(300);
      size_t next_c = 0;
      std::vector<size_t> sent_c;
      auto d = MustCreate(c, drops);
      Play(*d, pool_c, before, next_c, sent_c);
      SchedulerConfig faster = c;
      faster.rate_bps *= 2;
      auto adopted = MustCreate(faster, drops);
      AdoptInto(*d, *adopted);
      Play(*adopted, pool_c, after, next_c, sent_c);
      for (rte_mbuf* m : DrainAll(*adopted, 1'000'000)) sent_c.push_back(pool_c.IndexOf(m));
      INFO(PolicyName(c.classes[0].policy)
           << " aging " << c.classes[0].srpt_aging_ns << ", seed " << seed);
      REQUIRE(sent_a.size() == next_a);
      CHECK(sent_b == sent_a);
      CHECK(sent_c == sent_a);
      CHECK(adopted->Stats().total.dequeued_packets == next_c);
    }
  }
}

namespace {

// Two las classes with 40 messages queued, three packets each, and 20 that sent and wait for more.
std::unique_ptr<Scheduler> BusyTwoClassTree(const SchedulerConfig& c, FakePool& pool,
                                            DropLog& drops) {
  auto s = MustCreate(c, drops);
  size_t next = 0;
  for (uint64_t m = 1; m <= 20; ++m) EnqueueOne(*s, Packet(pool, next++, m, 0, 0, 500, m % 2));
  REQUIRE(DrainAll(*s, 0).size() == 20);
  for (uint64_t m = 1; m <= 40; ++m) {
    for (uint32_t k = 0; k < 3; ++k) {
      EnqueueOne(*s, Packet(pool, next++, m, 0, 500 * k, 500, m % 2, 10));
    }
  }
  return s;
}

SchedulerConfig TwoLasClasses() {
  SchedulerConfig c = OneClass(Policy::kLas);
  c.classes = {{.name = "a", .policy = Policy::kLas}, {.name = "b", .policy = Policy::kLas}};
  c.max_messages = 256;
  return c;
}

}  // namespace

TEST_CASE("a reload that changes rates, weights, buffers or idle times keeps the queues in place",
          "[scheduler][reconfigure]") {
  DropLog drops;
  FakePool pool_a(200), pool_b(200);
  const SchedulerConfig c = TwoLasClasses();
  auto kept = BusyTwoClassTree(c, pool_a, drops);
  auto old = BusyTwoClassTree(c, pool_b, drops);
  const SchedulerStats was = old->Stats();
  SchedulerConfig next = c;
  next.rate_bps /= 2;
  next.buffer_packets = 120;  // exactly what is queued
  next.classes[0].weight = 3;
  next.classes[1].message_idle_ns = 5'000'000;
  next.message_idle_timeout_ns = 0;
  auto fresh = MustCreate(next, drops);
  AdoptInto(*old, *fresh);
  CHECK(old->queued_packets() == 0);
  CHECK(old->Stats().live_messages == 0);
  const SchedulerStats is = fresh->Stats();
  CHECK(is.live_messages == was.live_messages);
  CHECK(is.total.queued_packets == 120);
  for (size_t k = 0; k < 2; ++k) {
    CHECK(is.classes[k].enqueued_packets == was.classes[k].enqueued_packets);
    CHECK(is.classes[k].dequeued_packets == was.classes[k].dequeued_packets);
  }
  // Each message goes on where it was: the ones that sent before rank behind, in both classes
  // (the share between the two classes restarts, so the interleaving of classes may differ).
  std::vector<size_t> order_kept[2], order_adopted[2];
  for (rte_mbuf* m : DrainAll(*kept, 100)) {
    order_kept[Meta(m)->class_id].push_back(pool_a.IndexOf(m));
  }
  for (rte_mbuf* m : DrainAll(*fresh, 100)) {
    order_adopted[Meta(m)->class_id].push_back(pool_b.IndexOf(m));
  }
  CHECK(order_adopted[0] == order_kept[0]);
  CHECK(order_adopted[1] == order_kept[1]);
  CHECK(fresh->Stats().total.dequeued_packets == 140);
  CHECK(drops.pkts.empty());
}

TEST_CASE("a reload that changes ranking or room moves the packets: adoption declines, unchanged",
          "[scheduler][reconfigure]") {
  const SchedulerConfig c = TwoLasClasses();
  std::vector<std::pair<const char*, SchedulerConfig>> changes;
  auto add = [&](const char* what, auto edit) {
    SchedulerConfig n = c;
    edit(n);
    changes.emplace_back(what, n);
  };
  add("policy", [](SchedulerConfig& n) { n.classes[1].policy = Policy::kFifo; });
  add("rank shift", [](SchedulerConfig& n) { n.classes[0].rank_shift = 4; });
  add("deadline", [](SchedulerConfig& n) { n.classes[0].deadline_ns = 7; });
  add("class name", [](SchedulerConfig& n) { n.classes[1].name = "c"; });
  add("class order", [](SchedulerConfig& n) { std::swap(n.classes[0], n.classes[1]); });
  add("class added", [](SchedulerConfig& n) { n.classes.push_back({.name = "c"}); });
  add("table size", [](SchedulerConfig& n) { n.max_messages = 512; });
  add("rank buckets", [](SchedulerConfig& n) { n.rank_buckets = 1u << 12; });
  add("fewer packets than queued", [](SchedulerConfig& n) { n.buffer_packets = 119; });
  add("fewer bytes than queued", [](SchedulerConfig& n) { n.buffer_bytes = 59'999; });
  add("a per-message limit", [](SchedulerConfig& n) { n.message_limit_bytes = 1'000; });
  for (const auto& [what, next] : changes) {
    INFO(what);
    DropLog drops;
    FakePool pool(200);
    auto old = BusyTwoClassTree(c, pool, drops);
    auto fresh = MustCreate(next, drops);
    CHECK_FALSE(fresh->AdoptQueues(*old));
    CHECK(old->queued_packets() == 120);
    CHECK(old->Stats().live_messages == 40);
    CHECK(fresh->queued_packets() == 0);
    CHECK(fresh->Stats().live_messages == 0);
    CHECK(DrainAll(*old, 100).size() == 120);
  }
  DropLog drops;
  // A per-message limit: lowered, adoption declines; kept, raised or removed, it adopts.
  SchedulerConfig limited = c;
  limited.message_limit_bytes = 4'000;
  for (uint32_t limit : {3'999u, 4'000u, 8'000u, 0u}) {
    INFO("limit " << limit);
    FakePool pool(200);
    auto old = BusyTwoClassTree(limited, pool, drops);
    SchedulerConfig next = limited;
    next.message_limit_bytes = limit;
    CHECK(MustCreate(next, drops)->AdoptQueues(*old) == (limit != 3'999));
  }
  SchedulerConfig aging = OneClass(Policy::kSrpt);
  aging.classes[0].srpt_aging_ns = 200;
  auto srpt = MustCreate(OneClass(Policy::kSrpt), drops);
  CHECK_FALSE(MustCreate(aging, drops)->AdoptQueues(*srpt));
}

TEST_CASE("a reload in place that shortens an idle time finds the messages already past it",
          "[scheduler][reconfigure]") {
  DropLog drops;
  SchedulerConfig c = BurstsAndRpc();
  c.classes[0].message_idle_ns = 0;  // the uplink's second, to begin with
  FakePool pool(1'000);
  auto old = ThousandWaiting(c, pool, drops);
  SchedulerConfig shorter = c;
  shorter.classes[0].message_idle_ns = 1'000'000;
  auto fresh = MustCreate(shorter, drops);
  AdoptInto(*old, *fresh);
  CheckThousandFreedSoon(*fresh);
}

TEST_CASE("a reloaded uplink's pacer goes on with its debt, in place or after a move",
          "[scheduler][reconfigure]") {
  // 1 Gbps at 1 GHz: a bit a cycle. A 2,500-byte bucket lets three 1,000-byte packets out at
  // once, the third into a debt of 4,000 bits.
  SchedulerConfig c = OneClass(Policy::kFifo);
  c.pacing_bps = 1'000'000'000;
  c.pacer_burst_bytes = 2'500;
  SchedulerConfig next = c;
  next.rate_bps *= 2;  // leaves ranking alone
  for (bool in_place : {true, false}) {
    INFO((in_place ? "in place" : "moved"));
    DropLog drops;
    FakePool pool(10);
    auto old = MustCreate(c, drops);
    for (size_t i = 0; i < 10; ++i) EnqueueOne(*old, Packet(pool, i, i + 1, 1000, 0, 1000));
    PacketBatch first;
    REQUIRE(old->Dequeue(first, 0) == 3);
    auto fresh = MustCreate(next, drops);
    if (in_place) {
      AdoptInto(*old, *fresh);
    } else {
      MoveInto(*old, *fresh, {0});
    }
    PacketBatch b;
    CHECK(fresh->Dequeue(b, 3'999) == 0);  // the debt is not yet paid
    CHECK(fresh->Dequeue(b, 4'001) == 1);
    for (uint64_t now = 1'000'000; fresh->queued_packets() != 0; now += 1'000'000) {
      REQUIRE(now < 10'000'000);
      fresh->Dequeue(b, now);
    }
    CHECK(b.count == 7);  // every packet the first poll left, sent by the new tree
  }
}

TEST_CASE("a reload in place sends what an idle burst left unsent, in its order",
          "[scheduler][reconfigure]") {
  DropLog drops;
  FakePool pool_a(8), pool_b(8);
  const SchedulerConfig c = OneClass(Policy::kSrpt);
  auto kept = MustCreate(c, drops);
  auto old = MustCreate(c, drops);
  std::vector<size_t> sent_kept, sent_adopted;
  for (auto* s : {kept.get(), old.get()}) {
    FakePool& pool = s == kept.get() ? pool_a : pool_b;
    PacketBatch b;
    for (size_t i = 0; i < 6; ++i) b.Push(Packet(pool, i, 10 + i, 6000 - 1000 * i, 0, 100));
    REQUIRE(s->Enqueue(b) == 6);
    PacketBatch out;
    out.count = kMaxBurst - 2;  // room for two: four stay in the idle burst
    REQUIRE(s->Dequeue(out, 0) == 2);
    (s == kept.get() ? sent_kept : sent_adopted)
        .assign({pool.IndexOf(out.pkts[kMaxBurst - 2]), pool.IndexOf(out.pkts[kMaxBurst - 1])});
  }
  REQUIRE(old->Stats().idle_burst_packets == 6);
  auto fresh = MustCreate(c, drops);
  AdoptInto(*old, *fresh);
  for (rte_mbuf* m : DrainAll(*kept, 0)) sent_kept.push_back(pool_a.IndexOf(m));
  for (rte_mbuf* m : DrainAll(*fresh, 0)) sent_adopted.push_back(pool_b.IndexOf(m));
  const std::vector<size_t> smallest_first = {5, 4, 3, 2, 1, 0};
  CHECK(sent_kept == smallest_first);
  CHECK(sent_adopted == smallest_first);
  CHECK(fresh->Stats().total.dequeued_packets == 6);
  CHECK(fresh->Stats().total.queued_packets == 0);
}

}  // namespace qosvisor::sched
