// bench_sched: enqueue+dequeue throughput of the scheduler on one core against DPDK's rte_sched
// and a binary heap with the same message table, from 64 to 1M active queues; JSON lines out.
//
// Every run keeps about 4 packets in flight per queue: it dequeues a burst of 32, re-stamps those
// mbufs for queues picked by the access pattern (uniformly at random, or in sequence) and
// enqueues them again. The idle_burst pattern keeps one burst in flight, queues in sequence: an
// uplink that keeps up, where every burst of distinct messages finds the scheduler empty. The
// adversarial pattern is random with message ids a sender picked to share one home position under
// an unkeyed multiplicative index hash (what a Homa sender can do with its RPC ids): the keyed,
// probe-bounded table must keep it near the random pattern's rate. Our scheduler gets srpt ranks
// over W4 message sizes and, as the switch gives it, no message-slot hint and one-packet
// messages marked whole (kMetaWholeMessage, never indexed) ("qosvisor"); the
// "qosvisor_hinted" variant measures the same when classification hands the slot over
// (meta.message_slot). rte_sched gets pipes x 16 queues with
// profiles far above the offered rate, so it never shapes. All implementations of a row live at
// once (each with its own mbufs) and take turns: each figure is the best of 5 interleaved windows
// of 60 ms, so all meet the same background load on a shared box.
//
// Pages: with --pages 4k (the default) everything lives on 4 KiB pages: the EAL runs with
// --no-huge (rte_sched's memory), our tables are told not to use huge pages, and the mbufs are
// plain pages. With --pages 2m everything lives on 2 MiB hugetlb pages: the EAL takes hugepages
// (in memory, -m sized for rte_sched), our tables take the hugetlb pool, and so do the mbufs.
// Every line says which ("pages"; "table_pages" and "mbuf_pages" what was actually got), so a
// row compares like with like. --hugepages-needed prints how many 2 MiB pages a --pages 2m run
// with the same queue counts needs (scripts/bench-sched reserves them) and exits.
//
// A sched_reload line per queue count: the lcore time of a live reload of a las uplink holding
// that many messages, one packet queued each (carrying their state over, then moving the
// packets), beside moving the same packets into a tree that inherits nothing, and beside a
// reload that leaves ranking alone (a new rate), which keeps the queues in place.
//
// A sched_inspect line per queue count: the longest lcore stall of an uplink inspection
// (qosctl uplinks) spread over polls, against the whole scan in one go.
//
// Usage: bench_sched [--pages 4k|2m] [--quick | --queues N] [--hugepages-needed].
// BENCH_SCHED_ONLY=1 runs only our scheduler (for profiling); BENCH_SCHED_HARNESS=1 adds a no-op
// scheduler line (the harness's own cost); BENCH_SCHED_PATTERN=random (or sequential, idle_burst,
// adversarial) runs that pattern alone.
#include <rte_eal.h>
#include <rte_mbuf.h>
#include <rte_sched.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/packet_batch.h"
#include "common/packet_meta.h"
#include "common/size_distribution.h"
#include "common/tsc.h"
#include "sched/ffs_rank_queue.h"
#include "sched/heap_rank_queue.h"
#include "sched/page_memory.h"
#include "sched/scheduler.h"

namespace qosvisor::bench {
namespace {

static_assert(sizeof(rte_mbuf) == kMbufStructSize, "PacketMeta must follow rte_mbuf directly");

struct BenchMbuf {
  rte_mbuf mbuf;
  PacketMeta meta;
};

constexpr uint32_t kInFlightPerQueue = 4;
constexpr uint16_t kQueueCap = 15;       // rte_sched queues hold 16; never let one overflow
constexpr double kMeasureSeconds = 0.3;  // per implementation, in kWindows windows
constexpr double kWarmupSeconds = 0.05;
constexpr int kWindows = 5;

// The memory every implementation of a run gets (see the file comment).
bool g_huge = false;
const char* PagesName() { return g_huge ? "2m" : "4k"; }
// The mbufs: all on hugetlb pages, or all on plain ones, whatever their size.
sched::PageOptions MbufPages() {
  return sched::PageOptions{.hugetlb = g_huge, .transparent = false, .min_huge_bytes = 0};
}

enum class Pattern { kRandom, kSequential, kIdleBurst, kAdversarial };
const char* PatternName(Pattern p) {
  switch (p) {
    case Pattern::kRandom:
      return "random";
    case Pattern::kSequential:
      return "sequential";
    case Pattern::kAdversarial:
      return "adversarial";
    case Pattern::kIdleBurst:
      break;
  }
  return "idle_burst";
}

uint32_t MaxMessages(uint32_t queues) {
  return queues * 2 + 1024;  // completed messages are replaced by new ones
}

// The number of index bits of our scheduler's message table for `queues` (one class).
int IndexBits(uint32_t queues) {
  const uint64_t slots = uint64_t{MaxMessages(queues)} + 1;
  return std::countr_zero(std::max<uint64_t>(64, std::bit_ceil(slots * 2)));
}

// The j-th id whose home under id * golden ratio (top `bits` bits) is position 5.
uint64_t UnkeyedCollidingId(uint64_t j, int bits) {
  const uint64_t golden = 0x9E3779B97F4A7C15ull;
  uint64_t inverse = golden;  // Newton's iteration for golden^-1 mod 2^64
  for (int i = 0; i < 5; ++i) inverse *= 2 - golden * inverse;
  return ((uint64_t{5} << (64 - bits)) | j) * inverse;
}
uint64_t InFlight(Pattern p, uint32_t queues) {
  return p == Pattern::kIdleBurst ? kMaxBurst : uint64_t{queues} * kInFlightPerQueue;
}

// What the traffic source knows about each queue: its current message and how far it got.
struct QueueState {
  uint64_t message_id;
  uint32_t size;
  uint32_t offset;
  uint32_t slot_hint;
  uint16_t in_flight;
};

class Source {
 public:
  Source(uint32_t queues, Pattern pattern, const SizeDistribution& sizes, uint64_t seed)
      : queues_(queues),
        index_bits_(IndexBits(queues)),
        pattern_(pattern),
        sizes_(sizes),
        rng_(seed),
        state_(queues) {
    for (uint32_t q = 0; q < queues; ++q) NewMessage(q);
  }

  uint32_t NextQueue() {
    for (;;) {
      uint32_t q;
      if (pattern_ == Pattern::kRandom || pattern_ == Pattern::kAdversarial) {
        // xorshift: the pick must cost next to nothing compared with what is measured.
        x_ ^= x_ << 13;
        x_ ^= x_ >> 7;
        x_ ^= x_ << 17;
        q = static_cast<uint32_t>(x_ >> 20) & (queues_ - 1);  // queue counts are powers of two
      } else {
        q = cursor_;
        if (++cursor_ == queues_) cursor_ = 0;
      }
      if (state_[q].in_flight < kQueueCap) return q;
    }
  }

  // Stamps `m` as the next packet of queue q's message.
  void Stamp(rte_mbuf* m, uint32_t q, bool slot_hints) {
    QueueState& s = state_[q];
    PacketMeta& pm = *Meta(m);
    uint32_t payload = std::min<uint32_t>(1460, s.size - s.offset);
    pm.next = nullptr;
    pm.message_id = s.message_id;
    pm.message_size = s.size;
    pm.message_offset = s.offset;
    pm.wire_len = payload + 40;
    pm.class_id = 0;
    pm.message_slot = slot_hints ? s.slot_hint : kNoMessageSlot;
    pm.flags = s.offset + payload >= s.size ? kMetaLastOfMessage : 0;
    // What classification says of a message of one packet (a datagram, a short Homa message).
    if (s.offset == 0 && pm.flags != 0) pm.flags |= kMetaWholeMessage;
    s.offset += payload;
    ++s.in_flight;
    if (pm.flags) NewMessage(q);
  }
  // After Enqueue: remember the slot the scheduler chose (what a flow cache would learn).
  void Learn(rte_mbuf* m) {
    const PacketMeta& pm = *Meta(m);
    QueueState& s = state_[QueueOf(m)];
    if (s.message_id == pm.message_id) s.slot_hint = pm.message_slot;
  }
  void Released(uint32_t q) { --state_[q].in_flight; }
  // The queue a packet was stamped for, kept in a dynamic field no scheduler here touches.
  static uint32_t QueueOf(rte_mbuf* m) { return static_cast<uint32_t>(m->dynfield1[0]); }
  static void SetQueue(rte_mbuf* m, uint32_t q) { m->dynfield1[0] = q; }

 private:
  void NewMessage(uint32_t q) {
    QueueState& s = state_[q];
    const uint64_t n = next_id_++;
    s.message_id = pattern_ == Pattern::kAdversarial ? UnkeyedCollidingId(n, index_bits_) : n;
    s.size = static_cast<uint32_t>(std::max<uint64_t>(1, sizes_.Sample(rng_)));
    s.offset = 0;
    s.slot_hint = kNoMessageSlot;
  }

  uint32_t queues_;
  int index_bits_;
  Pattern pattern_;
  const SizeDistribution& sizes_;
  std::mt19937_64 rng_;
  std::vector<QueueState> state_;
  uint64_t next_id_ = 1;
  uint64_t x_ = 0x9E3779B97F4A7C15ull;
  uint32_t cursor_ = 0;
};

// ---- the implementations, behind one tiny compile-time interface ----

// Every run here is sized never to drop: a drop is a fault of the run.
void FailOnDrop(void*, rte_mbuf* const*, uint16_t n) {
  std::fprintf(stderr, "bench_sched: %u unexpected drops\n", n);
  std::exit(1);
}

// One class under `policy`, room for `max_messages` messages, a rate far above any offered
// load and a buffer that never fills: every scheduler this benchmark builds. The idle timeout
// stays the product's default, so that its sweep is paid here as on an uplink.
sched::SchedulerConfig NeverDroppingUplink(const char* name, uint32_t max_messages,
                                           sched::Policy policy) {
  sched::SchedulerConfig c;
  c.name = name;
  c.rate_bps = 100'000'000'000;
  c.buffer_bytes = 1ull << 40;
  c.buffer_packets = UINT32_MAX;
  c.max_messages = max_messages;
  c.classes = {sched::ClassConfig{.name = sched::PolicyName(policy), .policy = policy}};
  c.huge_pages = g_huge;
  return c;
}

template <typename S = sched::Scheduler>
std::unique_ptr<S> MakeOrExit(const sched::SchedulerConfig& c) {
  auto s = S::Create(c, &FailOnDrop, nullptr);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.message().c_str());
    std::exit(1);
  }
  return std::move(s).value();
}

template <typename S>
class OurSched {
 public:
  OurSched(uint32_t queues, bool hints)
      : hints_(hints),
        s_(MakeOrExit<S>(NeverDroppingUplink("bench", MaxMessages(queues), sched::Policy::kSrpt))) {
  }
  bool hints() const { return hints_; }
  void Stamp(rte_mbuf*, uint32_t) {}
  void Enqueue(PacketBatch& b) { s_->Enqueue(b); }
  uint16_t Dequeue(PacketBatch& b) { return s_->Dequeue(b, ReadTsc()); }
  uint64_t drops() const { return s_->Stats().total.dropped_packets(); }
  // Packets that went to the default queue because an id's probe window was full.
  uint64_t probe_fallbacks() const { return s_->Stats().total.probe_limit_fallback; }
  const char* table_pages() const { return sched::PageKindName(s_->table_pages()); }

 private:
  bool hints_;
  std::unique_ptr<S> s_;
};

class RteSched {
 public:
  explicit RteSched(uint32_t queues) {
    Params params(queues);
    pipes_per_subport_ = params.port.n_pipes_per_subport;
    const uint32_t subports = params.port.n_subports_per_port;
    port_ = rte_sched_port_config(&params.port);
    if (port_ == nullptr) Fail("rte_sched_port_config");
    for (uint32_t s = 0; s < subports; ++s) {
      if (rte_sched_subport_config(port_, s, &params.subport, 0) != 0) {
        Fail("rte_sched_subport_config");
      }
      for (uint32_t p = 0; p < pipes_per_subport_; ++p) {
        if (rte_sched_pipe_config(port_, s, p, 0) != 0) Fail("rte_sched_pipe_config");
      }
    }
  }
  // What rte_sched allocates from the EAL's memory for `queues` (the port and its subports).
  static uint64_t MemoryFootprint(uint32_t queues) {
    Params params(queues);
    rte_sched_subport_params* subports[] = {&params.subport};
    // Every subport is configured alike; the call takes one parameter block per subport.
    std::vector<rte_sched_subport_params*> all(params.port.n_subports_per_port, subports[0]);
    return rte_sched_port_get_memory_footprint(&params.port, all.data());
  }
  ~RteSched() {
    // rte_sched_port_free() frees queued mbufs, and these are not from a mempool: drain first.
    rte_mbuf* pkts[kMaxBurst];
    for (int idle = 0; in_flight_ != 0 && idle < 1'000'000;) {
      int n = rte_sched_port_dequeue(port_, pkts, kMaxBurst);
      in_flight_ -= static_cast<uint64_t>(n);
      idle = n == 0 ? idle + 1 : 0;
    }
    if (in_flight_ == 0) rte_sched_port_free(port_);  // else leak it rather than crash
  }
  bool hints() const { return false; }
  void Stamp(rte_mbuf* m, uint32_t q) {
    uint32_t pipe = q / RTE_SCHED_QUEUES_PER_PIPE;
    uint32_t qi = q % RTE_SCHED_QUEUES_PER_PIPE;
    uint32_t tc = qi < RTE_SCHED_TRAFFIC_CLASS_BE ? qi : RTE_SCHED_TRAFFIC_CLASS_BE;
    uint32_t tc_queue = qi < RTE_SCHED_TRAFFIC_CLASS_BE ? 0 : qi - RTE_SCHED_TRAFFIC_CLASS_BE;
    rte_sched_port_pkt_write(port_, m, pipe / pipes_per_subport_, pipe % pipes_per_subport_, tc,
                             tc_queue, RTE_COLOR_GREEN);
    m->pkt_len = Meta(m)->wire_len;
    m->data_len = static_cast<uint16_t>(m->pkt_len);
  }
  void Enqueue(PacketBatch& b) {
    int n = rte_sched_port_enqueue(port_, b.pkts, b.count);
    if (n != b.count) Fail("rte_sched dropped packets");
    in_flight_ += b.count;
    b.count = 0;
  }
  uint16_t Dequeue(PacketBatch& b) {
    int n = rte_sched_port_dequeue(port_, b.pkts + b.count, kMaxBurst - b.count);
    in_flight_ -= static_cast<uint64_t>(n);
    b.count = static_cast<uint16_t>(b.count + n);
    return static_cast<uint16_t>(n);
  }
  uint64_t drops() const { return 0; }

 private:
  // pipes x 16 queues in subports of at most 4096 pipes. Rates far above what one core can push
  // (bytes/s), so credits never run out: this measures rte_sched's data structures, not its
  // shaping.
  struct Params {
    explicit Params(uint32_t queues) {
      const uint32_t pipes = std::max<uint32_t>(1, queues / RTE_SCHED_QUEUES_PER_PIPE);
      const uint32_t subports = std::max<uint32_t>(1, pipes / 4096);
      const uint64_t rate = 100'000'000'000ull;
      sp.tb_rate = rate;
      sp.tb_size = 1'000'000'000;
      for (uint64_t& r : sp.tc_rate) r = rate;
      sp.tc_period = 10;
      port.name = "bench_port";
      port.socket = 0;
      port.rate = rate;
      port.mtu = 1522;
      port.frame_overhead = RTE_SCHED_FRAME_OVERHEAD_DEFAULT;
      port.n_subports_per_port = subports;
      port.subport_profiles = &sp;
      port.n_subport_profiles = 1;
      port.n_max_subport_profiles = 1;
      port.n_pipes_per_subport = pipes / subports;
      pipe.tb_rate = rate;
      pipe.tb_size = 1'000'000'000;
      for (uint64_t& r : pipe.tc_rate) r = rate;
      pipe.tc_period = 10;
      pipe.tc_ov_weight = 1;
      for (uint8_t& w : pipe.wrr_weights) w = 1;
      subport.n_pipes_per_subport_enabled = port.n_pipes_per_subport;
      for (uint16_t& q : subport.qsize) q = 16;
      subport.pipe_profiles = &pipe;
      subport.n_pipe_profiles = 1;
      subport.n_max_pipe_profiles = 1;
      subport.cman_params = nullptr;
    }
    Params(const Params&) = delete;  // the blocks point at each other
    rte_sched_subport_profile_params sp = {};
    rte_sched_port_params port = {};
    rte_sched_pipe_params pipe = {};
    rte_sched_subport_params subport = {};
  };

  [[noreturn]] static void Fail(const char* what) {
    std::fprintf(stderr, "bench_sched: %s failed\n", what);
    std::exit(1);
  }
  rte_sched_port* port_ = nullptr;
  uint32_t pipes_per_subport_ = 1;
  uint64_t in_flight_ = 0;
};

// No scheduling at all, a FIFO ring: what the harness itself costs per packet.
class NullSched {
 public:
  explicit NullSched(uint32_t queues) : ring_(std::bit_ceil(uint64_t{queues} * 16)) {}
  bool hints() const { return false; }
  void Stamp(rte_mbuf*, uint32_t) {}
  void Enqueue(PacketBatch& b) {
    for (uint16_t i = 0; i < b.count; ++i) ring_[tail_++ & (ring_.size() - 1)] = b.pkts[i];
    b.count = 0;
  }
  uint16_t Dequeue(PacketBatch& b) {
    uint16_t n = 0;
    while (head_ != tail_ && !b.full()) {
      b.Push(ring_[head_++ & (ring_.size() - 1)]);
      ++n;
    }
    return n;
  }

 private:
  std::vector<rte_mbuf*> ring_;
  uint64_t head_ = 0, tail_ = 0;
};

// One implementation with its own mbufs and traffic source, so that all of them can live at once
// and take turns measuring: interleaved windows see the same background load.
class Runner {
 public:
  virtual ~Runner() = default;
  virtual void Prefill() = 0;
  // Runs for about `seconds`; returns packets per second (enqueued and dequeued once each).
  virtual double Window(double seconds) = 0;
  // Packets our scheduler sent to a default queue because an id's probe window was full.
  virtual uint64_t ProbeFallbacks() const = 0;
  // What our scheduler's tables got (nullptr for the others: they live in the EAL's memory).
  virtual const char* TablePages() const = 0;
  virtual const char* MbufPages() const = 0;
};

template <typename Impl>
class RunnerFor final : public Runner {
 public:
  template <typename... Args>
  RunnerFor(uint32_t queues, Pattern pattern, const SizeDistribution& sizes, Args&&... args)
      : mbufs_(InFlight(pattern, queues), bench::MbufPages()),
        impl_(std::forward<Args>(args)...),
        src_(queues, pattern, sizes, 7),
        queues_(queues),
        hints_(impl_.hints()) {}

  void Prefill() override {
    PacketBatch b;
    for (uint64_t i = 0; i < mbufs_.size(); ++i) {
      rte_mbuf* m = &mbufs_[i].mbuf;
      Stamp(m, static_cast<uint32_t>(i % queues_));
      b.Push(m);
      if (b.full()) EnqueueAndLearn(b);
    }
    if (b.count) EnqueueAndLearn(b);
  }

  uint64_t ProbeFallbacks() const override {
    if constexpr (requires { impl_.probe_fallbacks(); }) {
      return impl_.probe_fallbacks();
    } else {
      return 0;
    }
  }

  const char* TablePages() const override {
    if constexpr (requires { impl_.table_pages(); }) {
      return impl_.table_pages();
    } else {
      return nullptr;
    }
  }
  const char* MbufPages() const override { return sched::PageKindName(mbufs_.kind()); }

  double Window(double seconds) override {
    const uint64_t hz = TscHz();
    uint64_t packets = 0;
    uint64_t start = ReadTsc();
    uint64_t deadline = start + static_cast<uint64_t>(seconds * static_cast<double>(hz));
    uint64_t now = start;
    while (now < deadline) {
      for (int round = 0; round < 64; ++round) {
        PacketBatch d;
        uint16_t n = impl_.Dequeue(d);
        for (uint16_t i = 0; i < n; ++i) src_.Released(Source::QueueOf(d.pkts[i]));
        for (uint16_t i = 0; i < n; ++i) Stamp(d.pkts[i], src_.NextQueue());
        EnqueueAndLearn(d);
        packets += n;
      }
      now = ReadTsc();
    }
    return static_cast<double>(packets) * static_cast<double>(hz) /
           static_cast<double>(now - start);
  }

 private:
  void Stamp(rte_mbuf* m, uint32_t q) {
    Source::SetQueue(m, q);
    src_.Stamp(m, q, hints_);
    impl_.Stamp(m, q);
  }
  void EnqueueAndLearn(PacketBatch& b) {
    PacketBatch copy = b;
    impl_.Enqueue(b);
    if (hints_) {
      for (uint16_t k = 0; k < copy.count; ++k) src_.Learn(copy.pkts[k]);
    }
  }

  // Declared before impl_ so that it outlives it: draining rte_sched reads the mbufs.
  sched::PageArray<BenchMbuf> mbufs_;  // value-initialised: zeroed mbuf headers
  Impl impl_;
  Source src_;
  uint32_t queues_;
  bool hints_;
};

void Print(const char* impl, Pattern p, uint32_t queues, double mpps, const Runner& r) {
  nlohmann::json j = {{"bench", "sched"},
                      {"impl", impl},
                      {"pattern", PatternName(p)},
                      {"queues", queues},
                      {"pages", PagesName()},
                      {"mpps", std::round(mpps * 100) / 100},
                      {"ns_per_pkt", std::round(1e3 / mpps * 100) / 100},
                      {"mbuf_pages", r.MbufPages()}};
  if (const char* t = r.TablePages()) j["table_pages"] = t;
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

double Round2(double v) { return std::round(v * 100) / 100; }

void PrintRatios(Pattern p, uint32_t queues, std::map<std::string, double>& mpps) {
  auto ratio = [&](const char* a, const char* b) { return Round2(mpps[a] / mpps[b]); };
  nlohmann::json r = {{"bench", "sched_ratio"},
                      {"pattern", PatternName(p)},
                      {"queues", queues},
                      {"pages", PagesName()},
                      {"qosvisor_vs_rte_sched", ratio("qosvisor", "rte_sched")}};
  if (p != Pattern::kIdleBurst) {
    r["qosvisor_vs_heap"] = ratio("qosvisor", "heap");
    r["hinted_vs_rte_sched"] = ratio("qosvisor_hinted", "rte_sched");
    r["hinted_vs_heap"] = ratio("qosvisor_hinted", "heap");
  }
  std::printf("%s\n", r.dump().c_str());
  std::fflush(stdout);
}

// The adversarial ids against ordinary ones, for our scheduler as the switch drives it.
void PrintAdversarial(uint32_t queues, double random_mpps, double adversarial_mpps,
                      uint64_t probe_fallbacks) {
  nlohmann::json j = {{"bench", "sched_adversarial"},
                      {"queues", queues},
                      {"pages", PagesName()},
                      {"random_mpps", Round2(random_mpps)},
                      {"adversarial_mpps", Round2(adversarial_mpps)},
                      {"adversarial_vs_random", Round2(adversarial_mpps / random_mpps)},
                      {"probe_limit_fallback_packets", probe_fallbacks}};
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// Rank queue alone: N elements, pop the minimum and push it back with a new rank. `hot`: the
// popped elements come from a working set of 256 that ranks below the other N - 256, so their
// link nodes stay cache-resident and what may grow with N is only the queue's own structure
// (the O(1) claim). Otherwise every element takes part and the nodes themselves miss the cache.
template <typename Q>
double RankQueueNs(uint32_t n, bool hot) {
  sched::PageArray<sched::RankNode> nodes(n, sched::PageOptions{.hugetlb = g_huge,
                                                                 .transparent = false});
  sched::RankQueueConfig qc;
  qc.num_buckets = 1u << 18;
  qc.granularity_shift = 6;
  qc.capacity = n;
  qc.pages = sched::PageOptions{.hugetlb = g_huge, .transparent = false};
  Q q(qc, sched::RankNodes(nodes.data(), sizeof(sched::RankNode)));
  uint64_t x = 88172645463325252ull;
  auto rnd = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  // srpt-like ranks: up to 16 MiB of remaining bytes; the hot set below 8 MiB, the rest above.
  const uint32_t kHot = std::min<uint32_t>(n, 256);
  auto rank_for = [&](uint32_t id) -> uint64_t {
    if (!hot) return rnd() & ((1u << 24) - 1);
    return id < kHot ? (rnd() & ((1u << 23) - 1)) : (1u << 23) + (rnd() & ((1u << 23) - 1));
  };
  for (uint32_t i = 0; i < n; ++i) q.Push(i, rank_for(i));
  const uint64_t hz = TscHz();
  uint64_t ops = 0, start = ReadTsc();
  uint64_t deadline = start + hz / 20;
  uint64_t now = start;
  uint64_t sink = 0;
  while (now < deadline) {
    for (int i = 0; i < 1024; ++i) {
      uint32_t id = q.PopMin();
      sink += id;
      q.Push(id, rank_for(id));
    }
    ops += 1024;
    now = ReadTsc();
  }
  if (sink == 42) std::printf(" ");
  return static_cast<double>(now - start) * 1e9 / static_cast<double>(hz) /
         static_cast<double>(ops);
}

// Queues one 1000-byte packet of each of messages 1..mbufs.size() in `s`.
void QueueOnePacketEach(sched::Scheduler& s, sched::PageArray<BenchMbuf>& mbufs) {
  PacketBatch b;
  for (uint32_t i = 0; i < mbufs.size(); ++i) {
    PacketMeta& pm = mbufs[i].meta;
    pm = PacketMeta{};
    pm.message_id = i + 1;
    pm.wire_len = 1000;
    pm.message_slot = kNoMessageSlot;
    b.Push(&mbufs[i].mbuf);
    if (b.full() || i + 1 == mbufs.size()) s.Enqueue(b);
  }
}

// A live reload of a las uplink holding `messages` messages, one packet queued each, as the
// switch runs it: the new tree inheriting the old one's message state (InheritPolicyState), then
// the packets moving over. Its peer, in the same run, is what a reload cost before state carried
// over: the same packets moved into a tree that inherited nothing. Milliseconds of the uplink
// lcore's time.
class ReloadBench {
 public:
  explicit ReloadBench(uint32_t messages)
      : messages_(messages),
        config_(NeverDroppingUplink("reload", messages, sched::Policy::kLas)),
        mbufs_(messages, MbufPages()) {}

  void Print() {
    // Each twice, alternating, the better of each kept: the first run of all meets a cold box.
    Times plain = Reload(false);
    Times carried = Reload(true);
    plain = Better(plain, Reload(false));
    carried = Better(carried, Reload(true));
    const double in_place_ms = std::min(InPlace(), InPlace());
    nlohmann::json j = {
        {"bench", "sched_reload"},
        {"messages", messages_},
        {"pages", PagesName()},
        {"inherit_ms", Round2(carried.inherit_ms)},
        {"move_ms", Round2(carried.move_ms)},
        {"move_alone_ms", Round2(plain.move_ms)},
        {"inherit_ns_per_message", Round2(carried.inherit_ms * 1e6 / messages_)},
        {"reload_vs_move_alone", Round2((carried.inherit_ms + carried.move_ms) / plain.move_ms)},
        {"in_place_us", Round2(in_place_ms * 1e3)},
        {"moved_vs_in_place", Round2((carried.inherit_ms + carried.move_ms) / in_place_ms)}};
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }

 private:
  struct Times {
    double inherit_ms = 0;
    double move_ms = 0;
  };

  static Times Better(const Times& a, const Times& b) {
    return a.inherit_ms + a.move_ms <= b.inherit_ms + b.move_ms ? a : b;
  }

  // A fresh old tree holding every message, then the reload into another fresh tree.
  Times Reload(bool inherit) {
    auto old = MakeOrExit(config_);
    QueueOnePacketEach(*old, mbufs_);
    auto fresh = MakeOrExit(config_);
    PacketBatch b;
    const std::vector<int32_t> same_class = {0};
    const uint64_t hz = TscHz();
    const uint64_t t0 = ReadTsc();
    if (inherit) fresh->InheritPolicyState(*old, same_class);
    const uint64_t t1 = ReadTsc();
    for (uint64_t now = t1; old->queued_packets() != 0;) {
      now += hz;
      old->Dequeue(b, now);
      for (uint16_t i = 0; i < b.count; ++i) Meta(b.pkts[i])->message_slot = kNoMessageSlot;
      fresh->Enqueue(b);
    }
    const uint64_t t2 = ReadTsc();
    auto ms = [&](uint64_t cycles) {
      return static_cast<double>(cycles) * 1e3 / static_cast<double>(hz);
    };
    return {ms(t1 - t0), ms(t2 - t1)};
  }

  // The same uplink reloaded with half its rate, which leaves ranking alone: the new tree takes
  // the old one's table and queues as they are (AdoptQueues), its counts continued, as the switch
  // does it.
  double InPlace() {
    auto old = MakeOrExit(config_);
    QueueOnePacketEach(*old, mbufs_);
    sched::SchedulerConfig slower = config_;
    slower.rate_bps /= 2;
    auto fresh = MakeOrExit(slower);
    sched::SchedulerStats before;
    old->StatsInto(before);  // sized: the switch sizes it on the control thread
    const std::vector<int32_t> same_class = {0};
    const uint64_t t0 = ReadTsc();
    old->StatsInto(before);
    const bool adopted = fresh->AdoptQueues(*old);
    fresh->ContinueFrom(before, same_class, 0);
    const uint64_t t1 = ReadTsc();
    if (!adopted || fresh->queued_packets() != messages_) {
      std::fprintf(stderr, "bench_sched: the reload in place did not keep every packet\n");
      std::exit(1);
    }
    return static_cast<double>(t1 - t0) * 1e3 / static_cast<double>(TscHz());
  }

  uint32_t messages_;
  sched::SchedulerConfig config_;
  sched::PageArray<BenchMbuf> mbufs_;
};

// `qosctl uplinks` on an uplink holding `messages` messages, one packet queued each: the lcore's
// stall per poll when the inspection is spread over polls (Switch::kInspectSlotsPerPoll slots a
// step, the first step with BeginInspection, the last with EndInspection), against the whole
// scan in one go (Inspect, the plain approach), in the same run. Before each step the caches are
// flushed by reading a buffer larger than the last-level cache and the table together, as the
// switch's own polls would between two steps on a loaded lcore.
void PrintInspection(uint32_t messages) {
  constexpr uint32_t kSlotsPerStep = 512;  // vswitch::Switch::kInspectSlotsPerPoll
  auto s = MakeOrExit(NeverDroppingUplink("inspect", messages, sched::Policy::kLas));
  sched::PageArray<BenchMbuf> mbufs(messages, MbufPages());
  QueueOnePacketEach(*s, mbufs);
  std::vector<uint8_t> evict(uint64_t{messages} * sizeof(sched::MessageState) + (64u << 20));
  auto cool = [&] {
    for (size_t i = 0; i < evict.size(); i += 64) evict[i]++;
  };
  sched::SchedulerDetail out;
  out.Reserve(1, 100);
  const uint64_t hz = TscHz();
  cool();
  uint64_t t0 = ReadTsc();
  s->Inspect(out, 100, 4096, t0);
  const uint64_t whole = ReadTsc() - t0;
  cool();
  std::vector<uint64_t> steps;
  t0 = ReadTsc();
  sched::InspectionCursor cursor = s->BeginInspection(out, 100, 4096);
  for (bool done = false; !done;) {
    done = s->InspectSlots(out, cursor, kSlotsPerStep);
    if (done) s->EndInspection(out, ReadTsc());
    steps.push_back(ReadTsc() - t0);
    cool();
    t0 = ReadTsc();
  }
  std::sort(steps.begin(), steps.end());
  auto us = [&](uint64_t cycles) {
    return static_cast<double>(cycles) * 1e6 / static_cast<double>(hz);
  };
  nlohmann::json j = {
      {"bench", "sched_inspect"},
      {"messages", messages},
      {"pages", PagesName()},
      {"slots_per_step", kSlotsPerStep},
      {"steps", steps.size()},
      {"median_step_us", Round2(us(steps[steps.size() / 2]))},
      {"p99_step_us", Round2(us(steps[steps.size() * 99 / 100]))},
      {"longest_step_us", Round2(us(steps.back()))},
      {"whole_scan_us", Round2(us(whole))},
      {"longest_step_vs_whole_scan", Round2(static_cast<double>(steps.back()) / whole)}};
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

uint64_t RoundUp(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

// Megabytes the EAL gets: rte_sched's largest port here and room for the EAL's own memzones.
uint64_t EalMegabytes(uint32_t max_queues) {
  const uint64_t mb = RteSched::MemoryFootprint(max_queues) / (1 << 20) + 64;
  return RoundUp(mb, 2);
}

// Bytes a --pages 2m run maps on hugetlb pages for an array of `bytes` (our tables take plain
// pages below kHugeMinBytes; the mbufs always take huge pages).
uint64_t HugeBytes(uint64_t bytes, bool tables) {
  if (tables && bytes < sched::kHugeMinBytes) return 0;
  return RoundUp(bytes, sched::kHugePageBytes);
}

// 2 MiB pages a --pages 2m run needs: the EAL's -m, and the largest row's mbufs and tables (all
// implementations of a row live at once; rows do not overlap).
uint64_t HugePagesNeeded(const std::vector<uint32_t>& queue_counts, bool harness) {
  uint64_t row_peak = 0;
  uint32_t max_queues = 0;
  for (uint32_t q : queue_counts) {
    max_queues = std::max(max_queues, q);
    const uint64_t runners = 4 + (harness ? 1 : 0);
    uint64_t bytes = runners * HugeBytes(InFlight(Pattern::kRandom, q) * sizeof(BenchMbuf), false);
    // The message table of each of our three schedulers, as MessageTable sizes it (one class).
    const uint64_t slots = uint64_t{MaxMessages(q)} + 1;
    const uint64_t table = HugeBytes(slots * sizeof(sched::MessageState), true) +
                           HugeBytes(uint64_t{1} << IndexBits(q) << 4, true) +
                           HugeBytes(slots * sizeof(uint32_t), true);
    bytes += 3 * table;
    bytes += HugeBytes(slots * 24, true);  // the heap's array (24-byte entries)
    row_peak = std::max(row_peak, bytes);
  }
  const uint64_t eal = EalMegabytes(max_queues) << 20;
  // A few pages of slack for the rank queues' own arrays and rounding.
  return (eal + row_peak) / sched::kHugePageBytes + 16;
}

int Main(int argc, char** argv) {
  std::vector<uint32_t> queue_counts = {64, 4096, 65536, 1u << 20};
  bool print_needed = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      queue_counts = {64, 4096};
    } else if (std::strcmp(argv[i], "--queues") == 0 && i + 1 < argc) {
      queue_counts = {static_cast<uint32_t>(std::stoul(argv[++i]))};
    } else if (std::strcmp(argv[i], "--pages") == 0 && i + 1 < argc) {
      const std::string v = argv[++i];
      if (v != "4k" && v != "2m") {
        std::fprintf(stderr, "bench_sched: --pages takes 4k or 2m, not '%s'\n", v.c_str());
        return 2;
      }
      g_huge = v == "2m";
    } else if (std::strcmp(argv[i], "--hugepages-needed") == 0) {
      print_needed = true;
    } else {
      std::fprintf(stderr,
                   "usage: bench_sched [--pages 4k|2m] [--quick | --queues N] "
                   "[--hugepages-needed]\n");
      return 2;
    }
  }
  const bool only_ours = std::getenv("BENCH_SCHED_ONLY") != nullptr;
  const bool harness = std::getenv("BENCH_SCHED_HARNESS") != nullptr;
  const char* only_pattern = std::getenv("BENCH_SCHED_PATTERN");
  if (print_needed) {
    std::printf("%llu\n", static_cast<unsigned long long>(HugePagesNeeded(queue_counts, harness)));
    return 0;
  }

  const uint32_t max_queues = *std::max_element(queue_counts.begin(), queue_counts.end());
  // (Plain pages cost nothing until touched: the 4k run keeps the EAL's usual 1 GiB floor.)
  const uint64_t eal_mb = EalMegabytes(max_queues);
  const std::string megabytes = std::to_string(g_huge ? eal_mb : std::max<uint64_t>(1024, eal_mb));
  std::string prefix = "--file-prefix=bench_sched_" + std::to_string(getpid());
  // 2m: hugepages taken anonymously (--in-memory: no hugetlbfs mount or files needed), -m of them
  // up front, so rte_sched's port lives on them. 4k: anonymous plain pages.
  std::vector<std::string> eal_args = {"bench_sched", "--no-pci", "-m", megabytes, prefix,
                                       "--log-level=error"};
  eal_args.push_back(g_huge ? "--in-memory" : "--no-huge");
  std::vector<char*> eal_argv;
  for (std::string& a : eal_args) eal_argv.push_back(a.data());
  if (rte_eal_init(static_cast<int>(eal_argv.size()), eal_argv.data()) < 0) {
    std::fprintf(stderr, "bench_sched: rte_eal_init failed (--pages %s)\n", PagesName());
    return 1;
  }
  auto w4 = BuiltinWorkload("W4");
  if (!w4.ok()) {
    std::fprintf(stderr, "%s\n", w4.message().c_str());
    return 1;
  }

  for (uint32_t queues : queue_counts) {
    double random_mpps = 0;
    for (Pattern p :
         {Pattern::kRandom, Pattern::kSequential, Pattern::kIdleBurst, Pattern::kAdversarial}) {
      if (only_pattern != nullptr && std::strcmp(only_pattern, PatternName(p)) != 0) continue;
      std::vector<std::pair<std::string, std::unique_ptr<Runner>>> runners;
      runners.emplace_back("qosvisor", std::make_unique<RunnerFor<OurSched<sched::Scheduler>>>(
                                           queues, p, *w4, queues, false));
      // An idle burst never reaches the message table or a rank queue: the heap and the hint
      // make no difference there, so rte_sched is its only peer.
      const bool idle = p == Pattern::kIdleBurst;
      if (!only_ours && idle) {
        runners.emplace_back("rte_sched",
                             std::make_unique<RunnerFor<RteSched>>(queues, p, *w4, queues));
      } else if (!only_ours) {
        runners.emplace_back(
            "qosvisor_hinted",
            std::make_unique<RunnerFor<OurSched<sched::Scheduler>>>(queues, p, *w4, queues, true));
        runners.emplace_back("heap", std::make_unique<RunnerFor<OurSched<sched::HeapScheduler>>>(
                                         queues, p, *w4, queues, false));
        runners.emplace_back("rte_sched",
                             std::make_unique<RunnerFor<RteSched>>(queues, p, *w4, queues));
      }
      if (harness) {
        runners.emplace_back("harness_only",
                             std::make_unique<RunnerFor<NullSched>>(queues, p, *w4, queues));
      }
      for (auto& [name, r] : runners) {
        r->Prefill();
        r->Window(kWarmupSeconds);
      }
      // Best of interleaved windows: every implementation meets the same background load, and
      // other processes on a shared box only ever slow a window down.
      std::map<std::string, double> mpps;
      for (int w = 0; w < kWindows; ++w) {
        for (auto& [name, r] : runners) {
          mpps[name] = std::max(mpps[name], r->Window(kMeasureSeconds / kWindows) / 1e6);
        }
      }
      for (auto& [name, r] : runners) Print(name.c_str(), p, queues, mpps[name], *r);
      const uint64_t fallbacks = runners.front().second->ProbeFallbacks();
      runners.clear();
      if (p == Pattern::kRandom) random_mpps = mpps["qosvisor"];
      if (p == Pattern::kAdversarial) {
        PrintAdversarial(queues, random_mpps, mpps["qosvisor"], fallbacks);
      }
      if (!only_ours) PrintRatios(p, queues, mpps);
    }
  }
  if (only_pattern == nullptr) {
    for (uint32_t queues : queue_counts) ReloadBench(queues).Print();
    for (uint32_t queues : queue_counts) PrintInspection(queues);
  }
  for (uint32_t n : {64u, 4096u, 65536u, 1u << 20}) {
    nlohmann::json j = {
        {"bench", "rank_queue"},
        {"entries", n},
        {"pages", PagesName()},
        {"ffs_ns_per_op", Round2(RankQueueNs<sched::FfsRankQueue>(n, true))},
        {"heap_ns_per_op", Round2(RankQueueNs<sched::HeapRankQueue>(n, true))},
        {"ffs_all_ids_ns_per_op", Round2(RankQueueNs<sched::FfsRankQueue>(n, false))},
        {"heap_all_ids_ns_per_op", Round2(RankQueueNs<sched::HeapRankQueue>(n, false))}};
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }
  rte_eal_cleanup();
  return 0;
}

}  // namespace
}  // namespace qosvisor::bench

int main(int argc, char** argv) { return qosvisor::bench::Main(argc, argv); }
