// Scheduler inspection: the messages holding the most bytes in order, rank distances in
// power-of-two buckets, sampling bounded and spread, idle bursts and default queues included.
#include <catch2/catch.hpp>
#include <numeric>

#include "fake_mbufs.h"
#include "sched/scheduler.h"

namespace qosvisor::sched {
namespace {

using testing::DropLog;
using testing::FakePool;

SchedulerConfig OneClass(Policy p) {
  SchedulerConfig c;
  c.name = "up0";
  c.rate_bps = 10'000'000'000;
  c.tsc_hz = 1'000'000'000;
  c.classes = {ClassConfig{.name = "c", .policy = p}};
  return c;
}

rte_mbuf* Packet(FakePool& pool, size_t i, uint64_t message, uint32_t len, uint64_t arrival,
                 uint32_t size = 0) {
  rte_mbuf* m = pool.Get(i);
  *Meta(m) = PacketMeta{};
  Meta(m)->message_id = message;
  Meta(m)->wire_len = len;
  Meta(m)->arrival_tsc = arrival;
  Meta(m)->message_size = size;
  return m;
}

template <typename S>
void EnqueueOne(S& s, rte_mbuf* m) {
  PacketBatch b;
  b.Push(m);
  REQUIRE(s.Enqueue(b) == 1);
}

template <typename S>
std::unique_ptr<S> MustCreate(const SchedulerConfig& c, DropLog& drops) {
  auto s = S::Create(c, &DropLog::Sink, &drops);
  REQUIRE(s.ok());
  return std::move(s).value();
}

uint64_t SumOf(const uint64_t (&buckets)[kRankDistanceBuckets]) {
  return std::accumulate(std::begin(buckets), std::end(buckets), uint64_t{0});
}

}  // namespace

TEMPLATE_TEST_CASE("inspection lists the messages holding the most bytes, largest first",
                   "[scheduler][inspect]", Scheduler, HeapScheduler) {
  DropLog drops;
  auto s = MustCreate<TestType>(OneClass(Policy::kLas), drops);
  FakePool pool(64);
  size_t n = 0;
  // Message k (1..6) queues k packets of 100 bytes; message 9 ten of 50, more than a message
  // state holds inline.
  for (uint64_t k = 1; k <= 6; ++k) {
    for (uint64_t p = 0; p < k; ++p) EnqueueOne(*s, Packet(pool, n++, k, 100, 10 * k + p));
  }
  for (int p = 0; p < 10; ++p) EnqueueOne(*s, Packet(pool, n++, 9, 50, 200 + p));
  SchedulerDetail out;
  out.Reserve(1, 3);
  s->Inspect(out, 3, 4096, 1000);
  CHECK(out.queued_messages == 7);
  CHECK(out.live_messages == 7);
  CHECK(out.taken_tsc == 1000);
  REQUIRE(out.top.size() == 3);
  // 600 bytes, then two of 500: the lower id first.
  CHECK(out.top[0].message_id == 6);
  CHECK(out.top[0].bytes_queued == 600);
  CHECK(out.top[0].packets == 6);
  CHECK_FALSE(out.top[0].more_packets);
  CHECK(out.top[0].head_arrival_tsc == 60);
  CHECK(out.top[1].message_id == 5);
  CHECK(out.top[2].message_id == 9);
  CHECK(out.top[2].packets == kInlinePackets);  // a lower bound ...
  CHECK(out.top[2].more_packets);  // ... and said to be one
  CHECK_FALSE(out.top[2].default_queue);

  // Two packets leave (las: every head ranks 0, FIFO among them): message 1's, then message 2's
  // first. Message 2 has sent 100 bytes and queues 100.
  PacketBatch sent;
  sent.count = kMaxBurst - 2;  // room for two
  REQUIRE(s->Dequeue(sent, 1000) == 2);
  CHECK(Meta(sent.pkts[kMaxBurst - 2])->message_id == 1);
  CHECK(Meta(sent.pkts[kMaxBurst - 1])->message_id == 2);
  out.Reserve(1, 10);
  s->Inspect(out, 10, 4096, 2000);
  CHECK(out.queued_messages == 6);
  REQUIRE(out.top.size() == 6);
  CHECK(out.top.back().message_id == 2);
  CHECK(out.top.back().bytes_queued == 100);
  CHECK(out.top.back().bytes_sent == 100);
}

TEST_CASE("inspection buckets head ranks by their distance from the next head out",
          "[scheduler][inspect]") {
  DropLog drops;
  auto s = MustCreate<Scheduler>(OneClass(Policy::kSrpt), drops);
  FakePool pool(8);
  // srpt ranks a one-packet message by its size, exactly below 256 bytes (log-scale keys above):
  // distances 0, 1, 2, 3 and 100 from 100.
  const uint32_t sizes[] = {102, 100, 200, 101, 103};
  for (size_t i = 0; i < 5; ++i) EnqueueOne(*s, Packet(pool, i, 10 + i, 100, i, sizes[i]));
  SchedulerDetail out;
  out.Reserve(1, 10);
  s->Inspect(out, 10, 4096, 10);
  const ClassRanks& r = out.classes[0];
  CHECK(r.next_rank == 100);
  CHECK(r.queued_heads == 5);
  CHECK(r.sampled_heads == 5);
  CHECK(r.distance[0] == 1);
  CHECK(r.distance[1] == 1);  // 1
  CHECK(r.distance[2] == 2);  // 2 and 3: [2, 4)
  CHECK(r.distance[7] == 1);  // 100: [64, 128)
  CHECK(SumOf(r.distance) == 5);
  CHECK(RankDistanceBucket(0) == 0);
  CHECK(RankDistanceBucket(UINT64_MAX) == kRankDistanceBuckets - 1);
}

TEST_CASE("inspection reads at most max_samples head ranks, spread over the table",
          "[scheduler][inspect]") {
  DropLog drops;
  auto s = MustCreate<Scheduler>(OneClass(Policy::kLas), drops);
  FakePool pool(100);
  for (size_t i = 0; i < 100; ++i) EnqueueOne(*s, Packet(pool, i, 1 + i, 100, i));
  SchedulerDetail out;
  out.Reserve(1, 1);
  s->Inspect(out, 1, 10, 100);
  CHECK(out.queued_messages == 100);
  CHECK(out.classes[0].queued_heads == 100);
  CHECK(out.sampled_heads == 10);
  CHECK(out.classes[0].sampled_heads == 10);
  CHECK(SumOf(out.classes[0].distance) == 10);
  CHECK(out.slots_scanned == 101);  // the default queue's slot and 100 messages'
  s->Inspect(out, 1, 0, 100);
  CHECK(out.sampled_heads == 0);
  CHECK(out.classes[0].queued_heads == 100);
  CHECK(SumOf(out.classes[0].distance) == 0);
}

TEST_CASE("inspection counts an idle burst's packets as messages, and a default queue as one",
          "[scheduler][inspect]") {
  DropLog drops;
  FakePool pool(8);
  {
    auto s = MustCreate<Scheduler>(OneClass(Policy::kSrpt), drops);
    PacketBatch b;
    for (size_t i = 0; i < 3; ++i) b.Push(Packet(pool, i, 1 + i, 100 + 10 * i, 5, 3000 - 1000 * i));
    REQUIRE(s->Enqueue(b) == 3);
    REQUIRE(s->Stats().idle_burst_packets == 3);
    SchedulerDetail out;
    out.Reserve(1, 2);
    s->Inspect(out, 2, 4096, 10);
    CHECK(out.queued_messages == 3);
    REQUIRE(out.top.size() == 2);
    CHECK(out.top[0].message_id == 3);  // 120 bytes
    CHECK(out.top[0].head_arrival_tsc == 5);
    CHECK(out.top[1].message_id == 2);
    CHECK(out.classes[0].next_rank == 1000);  // message 3 leaves first
    CHECK(out.classes[0].distance[0] == 1);
    CHECK(out.classes[0].distance[10] == 1);  // 1000: [512, 1024)
    CHECK(out.classes[0].distance[11] == 1);  // 2000: [1024, 2048)
  }
  SchedulerConfig c = OneClass(Policy::kFifo);
  c.max_messages = 2;
  auto s = MustCreate<Scheduler>(c, drops);
  for (size_t i = 0; i < 5; ++i) EnqueueOne(*s, Packet(pool, i, 10 + i, 100, i));
  SchedulerDetail out;
  out.Reserve(1, 5);
  s->Inspect(out, 5, 4096, 10);
  CHECK(out.queued_messages == 3);  // two messages and the default queue
  REQUIRE(out.top.size() == 3);
  CHECK(out.top[0].default_queue);
  CHECK(out.top[0].bytes_queued == 300);
  CHECK(out.top[0].packets == 3);
  CHECK(out.top[0].head_arrival_tsc == 2);
  CHECK(drops.pkts.empty());
}

}  // namespace qosvisor::sched

namespace qosvisor::sched {

TEMPLATE_TEST_CASE("an inspection in steps of any size finds what one whole scan finds",
                   "[scheduler][inspect]", Scheduler, HeapScheduler) {
  DropLog drops;
  SchedulerConfig c = OneClass(Policy::kSrpt);
  c.classes.push_back({.name = "f", .policy = Policy::kFifo});
  auto s = MustCreate<TestType>(c, drops);
  FakePool pool(600);
  // 300 messages of 1 or 2 packets, in both classes, and 100 that sent all they queued.
  for (size_t i = 0; i < 400; ++i) {
    rte_mbuf* m = Packet(pool, i, 1000 + i / 2 * 2, 100 + static_cast<uint32_t>(i % 7) * 10, i,
                         100'000 - static_cast<uint32_t>(i));
    Meta(m)->class_id = static_cast<uint16_t>(i % 3 == 0);
    EnqueueOne(*s, m);
  }
  PacketBatch sent;
  for (int k = 0; k < 3; ++k) {
    sent.count = 0;
    s->Dequeue(sent, 500);
  }
  SchedulerDetail whole;
  whole.Reserve(2, 20);
  s->Inspect(whole, 20, 50, 900);
  for (uint32_t budget : {1u, 7u, 64u, 1000u}) {
    SchedulerDetail stepped;
    stepped.Reserve(2, 20);
    InspectionCursor cursor = s->BeginInspection(stepped, 20, 50);
    uint32_t calls = 1;
    while (!s->InspectSlots(stepped, cursor, budget)) ++calls;
    s->EndInspection(stepped, 900);
    INFO("budget " << budget);
    CHECK(calls == std::max<uint32_t>(1, (whole.slots_scanned + budget - 1) / budget));
    CHECK(stepped.queued_messages == whole.queued_messages);
    CHECK(stepped.sampled_heads == whole.sampled_heads);
    CHECK(stepped.taken_tsc == 900);
    REQUIRE(stepped.top.size() == whole.top.size());
    for (size_t i = 0; i < whole.top.size(); ++i) {
      CHECK(stepped.top[i].message_id == whole.top[i].message_id);
      CHECK(stepped.top[i].bytes_queued == whole.top[i].bytes_queued);
      CHECK(stepped.top[i].head_arrival_tsc == whole.top[i].head_arrival_tsc);
    }
    for (size_t k = 0; k < 2; ++k) {
      CHECK(stepped.classes[k].queued_heads == whole.classes[k].queued_heads);
      CHECK(stepped.classes[k].sampled_heads == whole.classes[k].sampled_heads);
      CHECK(SumOf(stepped.classes[k].distance) == SumOf(whole.classes[k].distance));
    }
  }
}

TEMPLATE_TEST_CASE("an inspection in steps reads only what is queued when it reads it",
                   "[scheduler][inspect]", Scheduler, HeapScheduler) {
  DropLog drops;
  auto s = MustCreate<TestType>(OneClass(Policy::kLas), drops);
  FakePool pool(96);
  for (size_t i = 0; i < 64; ++i) {  // one-packet messages whose slots free when they leave
    rte_mbuf* m = Packet(pool, i, 1 + i, 100, i);
    Meta(m)->flags = kMetaLastOfMessage;
    EnqueueOne(*s, m);
  }
  SchedulerDetail out;
  out.Reserve(1, 10);
  InspectionCursor cursor = s->BeginInspection(out, 10, 4096);
  REQUIRE_FALSE(s->InspectSlots(out, cursor, 16));
  // Between two steps everything leaves, and 32 new messages take freed slots.
  PacketBatch sent;
  while (s->Dequeue(sent, 100) != 0) sent.count = 0;
  for (size_t i = 64; i < 96; ++i) EnqueueOne(*s, Packet(pool, i, 1000 + i, 300, i));
  while (!s->InspectSlots(out, cursor, 16)) {
  }
  s->EndInspection(out, 200);
  // The first step's 15 (slot 0 is the class's default queue), then whichever of the new ones
  // sit in slots not yet read.
  CHECK(out.queued_messages >= 15);
  CHECK(out.queued_messages <= 15 + 32);
  REQUIRE(out.top.size() == 10);
  CHECK(out.top[0].bytes_queued == 300);  // a new message, read as it is now
  CHECK(out.top[0].head_arrival_tsc >= 64);
}

}  // namespace qosvisor::sched
