// The scheduler, over every policy and both rank queues, against a naive reference scheduler
// (linear search for the smallest rank, FIFO among equal ranks, per-message FIFO, pFabric drops):
// random bursts of enqueue and dequeue with overflow, then invariants on what came out.
#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "fake_mbufs.h"
#include "sched/scheduler.h"

namespace qosvisor::sched {
namespace {

using testing::DropLog;
using testing::FakePool;

// One class, no pacing, message table never full: the reference only has to get ranks, ties,
// per-message order and drop victims right.
class ReferenceScheduler {
 public:
  ReferenceScheduler(const SchedulerConfig& c, uint64_t hz)
      : config_(c),
        cs_(MakeClassState(c.classes[0], hz)),
        map_(MakeRankQueueConfig(c.classes[0], hz, c.rank_buckets, c.max_messages)) {}

  void Enqueue(rte_mbuf* pkt) {
    PacketMeta pm = *Meta(pkt);
    auto it = msgs_.find(pm.message_id);
    bool created = it == msgs_.end();
    if (created) {
      it = msgs_.emplace(pm.message_id, Msg{}).first;
      it->second.st.tag = InitialTag(pm, cs_);
    }
    Msg& m = it->second;
    bool over_limit = config_.message_limit_bytes != 0 &&
                      uint64_t{m.st.bytes_queued} + pm.wire_len > config_.message_limit_bytes;
    bool full = bytes_ + pm.wire_len > config_.buffer_bytes || pkts_ + 1 > config_.buffer_packets;
    if (over_limit || (full && config_.drop == DropMode::kTail)) {
      drops.push_back(pkt);
      if (created) msgs_.erase(it);
      return;
    }
    m.q.push_back(pkt);
    m.st.bytes_queued += pm.wire_len;
    bytes_ += pm.wire_len;
    ++pkts_;
    if (m.q.size() == 1) PushHead(m, pm.arrival_tsc);
    while ((bytes_ > config_.buffer_bytes || pkts_ > config_.buffer_packets) && InRank() > 0) {
      Msg* victim = nullptr;
      for (auto& [id, x] : msgs_) {
        if (x.in_rank && (victim == nullptr || x.key > victim->key ||
                          (x.key == victim->key && x.seq > victim->seq))) {
          victim = &x;
        }
      }
      victim->in_rank = false;
      rte_mbuf* v = victim->q.front();
      victim->q.pop_front();
      Unaccount(*victim, v);
      drops.push_back(v);
      if (!victim->q.empty()) PushHead(*victim, pm.arrival_tsc);
    }
  }

  std::vector<rte_mbuf*> Dequeue(uint64_t now, size_t max) {
    std::vector<rte_mbuf*> out;
    while (out.size() < max) {
      Msg* best = nullptr;
      uint64_t best_id = 0;
      for (auto& [id, x] : msgs_) {
        if (x.in_rank &&
            (best == nullptr || x.key < best->key || (x.key == best->key && x.seq < best->seq))) {
          best = &x;
          best_id = id;
        }
      }
      if (best == nullptr || (cs_.time_gated && best->rank > now)) break;
      map_.OnPopMin(best->key);
      best->in_rank = false;
      rte_mbuf* pkt = best->q.front();
      best->q.pop_front();
      Unaccount(*best, pkt);
      PacketMeta sent = *Meta(pkt);
      sent.rank = best->rank;
      OnSent(sent.rank, sent.wire_len, best->st, cs_);
      if (!best->q.empty()) {
        PushHead(*best, now);
      } else if (sent.flags & kMetaLastOfMessage) {
        msgs_.erase(best_id);
      }
      out.push_back(pkt);
    }
    return out;
  }

  uint64_t queued_packets() const { return pkts_; }
  std::vector<rte_mbuf*> drops;

 private:
  struct Msg {
    MessageState st;
    std::deque<rte_mbuf*> q;
    bool in_rank = false;
    uint64_t rank = 0, key = 0, seq = 0;
  };
  size_t InRank() const {
    size_t n = 0;
    for (auto& [id, x] : msgs_) n += x.in_rank;
    return n;
  }
  void PushHead(Msg& m, uint64_t now) {
    bool empty = InRank() == 0;
    m.rank = ComputeRank(*Meta(m.q.front()), m.st, cs_, now);
    bool clamped;
    m.key = map_.Map(m.rank, empty, &clamped);
    m.seq = seq_++;
    m.in_rank = true;
  }
  void Unaccount(Msg& m, rte_mbuf* pkt) {
    uint32_t len = Meta(pkt)->wire_len;
    m.st.bytes_queued -= len;
    bytes_ -= len;
    --pkts_;
  }

  SchedulerConfig config_;
  ClassState cs_;
  RankKeyMap map_;
  std::map<uint64_t, Msg> msgs_;
  uint64_t seq_ = 0, bytes_ = 0, pkts_ = 0;
};

// Streams of messages whose packets carry what classification would write.
class Traffic {
 public:
  Traffic(FakePool& pool, uint64_t seed, int streams) : pool_(pool), rng_(seed), streams_(streams) {
    for (int s = 0; s < streams; ++s) NewMessage(s);
  }
  rte_mbuf* Next(uint64_t now) {
    int s = static_cast<int>(rng_() % streams_.size());
    Stream& st = streams_[s];
    rte_mbuf* m = pool_.Get(used_++);
    PacketMeta& pm = *Meta(m);
    pm = PacketMeta{};
    pm.message_id = st.id;
    pm.arrival_tsc = now;
    uint32_t payload = st.payloads[st.next];
    pm.message_size = st.known_size ? st.size : 0;
    pm.message_offset = st.offset;
    pm.wire_len = payload + 40;
    st.offset += payload;
    if (++st.next == st.payloads.size()) {
      pm.flags = kMetaLastOfMessage;
      NewMessage(s);
    }
    return m;
  }
  size_t used() const { return used_; }

 private:
  struct Stream {
    uint64_t id = 0;
    std::vector<uint32_t> payloads;
    size_t next = 0;
    uint32_t size = 0, offset = 0;
    bool known_size = true;
  };
  void NewMessage(int s) {
    Stream& st = streams_[s];
    st.id = next_id_++;
    st.payloads.assign(1 + rng_() % 12, 0);
    st.size = 0;
    for (uint32_t& p : st.payloads) {
      p = 20 + static_cast<uint32_t>(rng_() % 1441);
      st.size += p;
    }
    st.next = 0;
    st.offset = 0;
    st.known_size = rng_() % 5 != 0;
  }
  FakePool& pool_;
  std::mt19937_64 rng_;
  std::vector<Stream> streams_;
  size_t used_ = 0;
  uint64_t next_id_ = 1;
};

struct Variant {
  Policy policy;
  uint64_t aging_ns;
};

}  // namespace

TEMPLATE_TEST_CASE("scheduler conforms to the reference model for every policy",
                   "[scheduler][conformance]", HeapRankQueue, FfsRankQueue) {
  Variant v =
      GENERATE(Variant{Policy::kFifo, 0}, Variant{Policy::kPriority, 0}, Variant{Policy::kSrpt, 0},
               Variant{Policy::kSrpt, 20'000}, Variant{Policy::kLas, 0}, Variant{Policy::kWfq, 0},
               Variant{Policy::kEdf, 0}, Variant{Policy::kPace, 0});
  DropMode drop = GENERATE(DropMode::kWorst, DropMode::kTail);
  uint32_t buckets = GENERATE(64u, 4096u);
  uint32_t message_limit = GENERATE(0u, 9000u);
  // Few streams: bursts repeat messages and queues build. Many: bursts often find the uplink
  // idle with every message once (the idle-burst path of stateless ranks).
  int streams = GENERATE(24, 2000);
  CAPTURE(PolicyName(v.policy), v.aging_ns, static_cast<int>(drop), buckets, message_limit,
          streams);

  const uint64_t hz = 1'000'000'000;  // one cycle per nanosecond
  SchedulerConfig c;
  c.rate_bps = 10'000'000'000;
  c.buffer_bytes = 40'000;
  c.buffer_packets = 48;
  c.message_limit_bytes = message_limit;
  c.drop = drop;
  c.max_messages = 4096;
  c.message_idle_timeout_ns = 0;
  c.rank_buckets = buckets;
  c.tsc_hz = hz;
  ClassConfig k;
  k.policy = v.policy;
  k.srpt_aging_ns = v.aging_ns;
  k.deadline_ns = 50'000;
  k.rate_bps = 2'000'000'000;
  c.classes = {k};
  c.message_hash_key = HashKey{0x243F6A8885A308D3ull, 0x13198A2E03707345ull};  // deterministic

  DropLog drops;
  auto made = BasicScheduler<TestType>::Create(c, &DropLog::Sink, &drops);
  REQUIRE(made.ok());
  auto& sched = **made;
  ReferenceScheduler ref(c, hz);
  FakePool pool(60'000);
  Traffic traffic(pool, 99 + static_cast<uint64_t>(v.policy), streams);
  std::mt19937_64 rng(5);
  std::vector<rte_mbuf*> sent;
  uint64_t now = 1'000'000;

  size_t drops_checked = 0;
  auto check_accounting = [&] {
    SchedulerStats s = sched.Stats();
    const ClassStats& t = s.total;
    REQUIRE(t.enqueued_packets == t.dequeued_packets + t.dropped_packets() + t.queued_packets);
    REQUIRE(t.queued_packets == ref.queued_packets());
    REQUIRE(sched.queued_packets() == ref.queued_packets());
    REQUIRE(drops.pkts.size() == ref.drops.size());
    for (; drops_checked < drops.pkts.size(); ++drops_checked) {
      REQUIRE(drops.pkts[drops_checked] == ref.drops[drops_checked]);
    }
  };

  for (int step = 0; step < 600; ++step) {
    now += rng() % 3000;
    if (rng() % 100 < 55) {
      PacketBatch b;
      uint16_t n = static_cast<uint16_t>(1 + rng() % kMaxBurst);
      for (uint16_t i = 0; i < n; ++i) b.Push(traffic.Next(now));
      PacketBatch copy = b;
      size_t drops_before = drops.pkts.size();
      uint16_t accepted = sched.Enqueue(b);
      REQUIRE(b.count == 0);
      for (uint16_t i = 0; i < copy.count; ++i) ref.Enqueue(copy.pkts[i]);
      // Accepted = the burst minus the burst's packets that were dropped.
      std::set<rte_mbuf*> burst(copy.pkts, copy.pkts + copy.count);
      size_t burst_dropped = 0;
      for (size_t i = drops_before; i < drops.pkts.size(); ++i)
        burst_dropped += burst.count(drops.pkts[i]);
      REQUIRE(accepted == copy.count - burst_dropped);
    } else {
      PacketBatch b;
      uint16_t already = static_cast<uint16_t>(rng() % 4);
      b.count = already;  // Dequeue appends after what the caller already holds
      uint16_t got = sched.Dequeue(b, now);
      auto expect = ref.Dequeue(now, kMaxBurst - already);
      REQUIRE(got == expect.size());
      for (uint16_t i = 0; i < got; ++i) REQUIRE(b.pkts[already + i] == expect[i]);
      sent.insert(sent.end(), expect.begin(), expect.end());
    }
    check_accounting();
  }
  // Drain, far enough in the future that paced heads are due.
  for (int i = 0; i < 10'000 && sched.queued_packets() > 0; ++i) {
    now += 100'000;
    PacketBatch b;
    uint16_t got = sched.Dequeue(b, now);
    auto expect = ref.Dequeue(now, kMaxBurst);
    REQUIRE(got == expect.size());
    for (uint16_t j = 0; j < got; ++j) REQUIRE(b.pkts[j] == expect[j]);
    sent.insert(sent.end(), expect.begin(), expect.end());
  }
  check_accounting();
  REQUIRE(sched.queued_packets() == 0);

  // Invariants: every packet came out exactly once (sent or dropped), and the packets of a
  // message left in the order they arrived.
  std::vector<int> seen(traffic.used(), 0);
  for (rte_mbuf* m : sent) ++seen[pool.IndexOf(m)];
  for (rte_mbuf* m : drops.pkts) ++seen[pool.IndexOf(m)];
  for (size_t i = 0; i < traffic.used(); ++i) REQUIRE(seen[i] == 1);
  std::map<uint64_t, uint32_t> last_offset;
  for (rte_mbuf* m : sent) {
    const PacketMeta& pm = *Meta(m);
    auto [it, fresh] = last_offset.emplace(pm.message_id, pm.message_offset);
    if (!fresh) {
      REQUIRE(pm.message_offset > it->second);
      it->second = pm.message_offset;
    }
  }
  SchedulerStats s = sched.Stats();
  CHECK(s.total.dequeued_packets == sent.size());
  CHECK(s.total.dropped_packets() == drops.pkts.size());
  if (drop == DropMode::kWorst) CHECK(s.total.dropped_tail == 0);
  if (drop == DropMode::kTail) CHECK(s.total.dropped_worst == 0);
  CHECK(drops.pkts.size() > 0);  // the buffer did overflow
  if (streams > kMaxBurst && RanksNeedNoMessageState(k)) CHECK(s.idle_burst_packets > 0);
  if (!RanksNeedNoMessageState(k)) CHECK(s.idle_burst_packets == 0);
}

}  // namespace qosvisor::sched
