// The uplink simulation: Poisson or saturating message sources, the real Scheduler, and a link
// that serializes one packet at a time at the line rate; all times are virtual nanoseconds.
#include "tests/sim/sim.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "common/packet_batch.h"
#include "common/packet_meta.h"
#include "sched/scheduler.h"

namespace qosvisor::sim {
namespace {

constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();

struct FakeMbuf {
  alignas(64) unsigned char mbuf[kMbufStructSize];
  PacketMeta meta;
};

// Fake mbufs that stay put in memory (deque) and are recycled after they leave or are dropped.
class Pool {
 public:
  rte_mbuf* Get() {
    if (free_.empty()) {
      store_.emplace_back();
      // SAFETY: sched/ reaches only the PacketMeta behind the mbuf header, where FakeMbuf has it.
      return reinterpret_cast<rte_mbuf*>(&store_.back());
    }
    rte_mbuf* m = free_.back();
    free_.pop_back();
    return m;
  }
  void Put(rte_mbuf* m) { free_.push_back(m); }

 private:
  std::deque<FakeMbuf> store_;
  std::vector<rte_mbuf*> free_;
};

struct State {
  const SimConfig* config = nullptr;
  Pool pool;
  SimResult result;
  std::vector<uint32_t> packets_left;       // per message
  std::vector<uint32_t> class_outstanding;  // saturate mode: incomplete messages per class
  std::vector<uint16_t> tenant_of;
  uint64_t window_from = 0, window_to = kNever;

  void Finish(MessageRecord& m, uint64_t when) {
    if (--packets_left[m.id - 1] != 0) return;
    if (m.dropped == 0) m.completion_ns = when;
    --class_outstanding[m.class_id];
  }
};

void OnDrop(void* ctx, rte_mbuf* const* pkts, uint16_t n) {
  auto* st = static_cast<State*>(ctx);
  for (uint16_t i = 0; i < n; ++i) {
    MessageRecord& m = st->result.messages[Meta(pkts[i])->message_id - 1];
    ++m.dropped;
    ++st->result.packets_dropped;
    st->Finish(m, 0);
    st->pool.Put(pkts[i]);
  }
}

template <typename Sched>
void Emit(State& st, Sched& sched, uint16_t class_id, uint64_t size, bool known, uint64_t now) {
  const SimConfig& c = *st.config;
  MessageRecord rec;
  rec.id = st.result.messages.size() + 1;
  rec.class_id = class_id;
  rec.size = size;
  rec.arrival_ns = now;
  uint64_t n = std::max<uint64_t>(1, (size + c.mtu_payload - 1) / c.mtu_payload);
  rec.packets = static_cast<uint32_t>(n);
  rec.wire_bytes = size + n * c.header_bytes;
  st.result.messages.push_back(rec);
  st.packets_left.push_back(static_cast<uint32_t>(n));
  ++st.class_outstanding[class_id];
  PacketBatch b;
  uint64_t offset = 0;
  for (uint64_t i = 0; i < n; ++i) {
    uint32_t payload = static_cast<uint32_t>(std::min<uint64_t>(c.mtu_payload, size - offset));
    rte_mbuf* m = st.pool.Get();
    PacketMeta& pm = *Meta(m);
    pm = PacketMeta{};
    pm.message_id = rec.id;
    pm.arrival_tsc = now;
    pm.message_size = known ? static_cast<uint32_t>(size) : 0;
    pm.message_offset = static_cast<uint32_t>(offset);
    pm.wire_len = payload + c.header_bytes;
    pm.class_id = class_id;
    pm.flags = i + 1 == n ? kMetaLastOfMessage : 0;
    if (n == 1) pm.flags |= kMetaWholeMessage;  // as classification marks a one-packet message
    offset += payload;
    b.Push(m);
    if (b.full()) sched.Enqueue(b);
  }
  if (b.count != 0) sched.Enqueue(b);
}

template <typename Sched>
Result<SimResult> RunWith(const SimConfig& config, uint64_t from, uint64_t to) {
  State st;
  st.config = &config;
  sched::SchedulerConfig sc = config.sched;
  sc.tsc_hz = 1'000'000'000;
  auto made = Sched::Create(sc, &OnDrop, &st);
  if (!made.ok()) return made.status();
  Sched& sched = **made;
  size_t nclasses = sc.classes.size();
  st.class_outstanding.assign(nclasses, 0);
  st.tenant_of.assign(nclasses, 0);
  for (size_t t = 0; t < sc.tenants.size(); ++t) {
    for (uint16_t k : sc.tenants[t].classes) st.tenant_of[k] = static_cast<uint16_t>(t);
  }
  st.result.class_bytes.assign(nclasses, 0);
  st.result.tenant_bytes.assign(std::max<size_t>(1, sc.tenants.size()), 0);
  st.window_from = from;
  st.window_to = to == 0 ? kNever : to;
  st.result.measure_from_ns = from;
  st.result.measure_to_ns = to;
  for (const ClassTraffic& ct : config.traffic) {
    if (ct.class_id >= nclasses) {
      return Status::Error("simulation traffic names class " + std::to_string(ct.class_id) +
                           ", which the scheduler does not have");
    }
  }

  std::mt19937_64 rng(config.seed);
  // Poisson: the arrival rate that offers `load` of the line in wire bytes.
  double total_weight = 0, mean_wire = 0;
  std::vector<double> cum_weight;
  if (!config.saturate && !config.traffic.empty()) {
    std::mt19937_64 est(config.seed ^ 0x5eed);
    for (const ClassTraffic& ct : config.traffic) {
      total_weight += ct.arrival_weight;
      cum_weight.push_back(total_weight);
      // Mean wire bytes by sampling (exact enough, and deterministic for the seed).
      double sum = 0;
      const int kSamples = 200'000;
      for (int i = 0; i < kSamples; ++i) {
        uint64_t s = ct.sizes.Sample(est);
        uint64_t n = std::max<uint64_t>(1, (s + config.mtu_payload - 1) / config.mtu_payload);
        sum += static_cast<double>(s + n * config.header_bytes);
      }
      mean_wire += ct.arrival_weight * sum / kSamples;
    }
    mean_wire /= total_weight;
  }
  double mean_gap_ns = config.saturate || config.traffic.empty() || config.load <= 0
                           ? 0
                           : mean_wire * 8e9 / (config.load * static_cast<double>(sc.rate_bps));
  std::exponential_distribution<double> gap(mean_gap_ns > 0 ? 1.0 / mean_gap_ns : 1.0);
  std::uniform_real_distribution<double> pick(0.0, total_weight);
  uint64_t generated = 0;
  double next_arrival_f = mean_gap_ns > 0 ? gap(rng) : 0;
  auto next_arrival = [&]() -> uint64_t {
    if (mean_gap_ns <= 0 || generated >= config.num_messages) return kNever;
    uint64_t t = static_cast<uint64_t>(next_arrival_f);
    if (config.duration_ns != 0 && t >= config.duration_ns) return kNever;
    return t;
  };
  std::vector<SimConfig::Scheduled> scheduled = config.scheduled;
  std::sort(scheduled.begin(), scheduled.end(),
            [](const auto& a, const auto& b) { return a.arrival_ns < b.arrival_ns; });
  size_t next_scheduled = 0;
  std::vector<uint64_t> periodic_next;
  for (const auto& p : config.periodic) periodic_next.push_back(p.start_ns);

  uint64_t now = 0;
  uint64_t link_free_ps = 0;
  auto link_free = [&] { return (link_free_ps + 999) / 1000; };
  const double ps_per_byte = 8e12 / static_cast<double>(sc.rate_bps);
  uint64_t stalls = 0;
  for (;;) {
    // Closed loop: top every class up to its backlog.
    if (config.saturate && (config.duration_ns == 0 || now < config.duration_ns)) {
      for (const ClassTraffic& ct : config.traffic) {
        while (st.class_outstanding[ct.class_id] < ct.backlog_messages) {
          Emit(st, sched, ct.class_id, ct.sizes.Sample(rng), ct.size_known, now);
        }
      }
    }
    uint64_t next = next_arrival();
    if (next_scheduled < scheduled.size()) {
      next = std::min(next, scheduled[next_scheduled].arrival_ns);
    }
    for (size_t i = 0; i < periodic_next.size(); ++i) {
      if (periodic_next[i] < config.periodic[i].end_ns) next = std::min(next, periodic_next[i]);
    }
    if (sched.queued_packets() != 0) {
      uint64_t ready = std::max(now, link_free());
      uint64_t when = sched.NextSendTsc(ready);
      if (when != kNever) next = std::min(next, std::max(when, ready));
    }
    if (config.saturate && config.duration_ns != 0 && now < config.duration_ns) {
      next = std::min(next, config.duration_ns);
    }
    if (next == kNever) break;
    now = std::max(now, next);
    // Arrivals due now.
    while (next_arrival() <= now) {
      size_t k = static_cast<size_t>(
          std::upper_bound(cum_weight.begin(), cum_weight.end(), pick(rng)) - cum_weight.begin());
      k = std::min(k, config.traffic.size() - 1);
      const ClassTraffic& ct = config.traffic[k];
      Emit(st, sched, ct.class_id, ct.sizes.Sample(rng), ct.size_known, now);
      ++generated;
      next_arrival_f += gap(rng);
    }
    while (next_scheduled < scheduled.size() && scheduled[next_scheduled].arrival_ns <= now) {
      const auto& s = scheduled[next_scheduled++];
      Emit(st, sched, s.class_id, s.size, true, now);
    }
    for (size_t i = 0; i < periodic_next.size(); ++i) {
      const auto& p = config.periodic[i];
      while (periodic_next[i] <= now && periodic_next[i] < p.end_ns) {
        Emit(st, sched, p.class_id, p.size, true, now);
        periodic_next[i] += p.period_ns;
      }
    }
    // The link takes one packet when it is free.
    if (now >= link_free() && sched.queued_packets() != 0) {
      PacketBatch b;
      b.count = kMaxBurst - 1;  // leave room for exactly one: the link serializes packets
      if (sched.Dequeue(b, now) == 1) {
        rte_mbuf* pkt = b.pkts[kMaxBurst - 1];
        const PacketMeta& pm = *Meta(pkt);
        link_free_ps = std::max(link_free_ps, now * 1000) +
                       static_cast<uint64_t>(std::llround(pm.wire_len * ps_per_byte));
        ++st.result.packets_sent;
        if (now >= st.window_from && now < st.window_to) {
          st.result.class_bytes[pm.class_id] += pm.wire_len;
          st.result.tenant_bytes[st.tenant_of[pm.class_id]] += pm.wire_len;
        }
        st.Finish(st.result.messages[pm.message_id - 1], link_free());
        st.pool.Put(pkt);
      } else if (++stalls > 100'000'000) {
        return Status::Error("simulation stalled: the scheduler promised a packet it never sent");
      } else {
        now += 1;  // NextSendTsc rounds down; step past it
      }
    }
  }
  st.result.end_ns = std::max(now, link_free());
  return std::move(st.result);
}

}  // namespace

double MessageRecord::Slowdown(uint64_t rate_bps) const {
  double alone_ns = static_cast<double>(wire_bytes) * 8e9 / static_cast<double>(rate_bps);
  return static_cast<double>(completion_ns - arrival_ns) / alone_ns;
}

Result<SimResult> Run(const SimConfig& config, uint64_t from, uint64_t to) {
  if (config.use_heap) return RunWith<sched::HeapScheduler>(config, from, to);
  return RunWith<sched::Scheduler>(config, from, to);
}

double SlowdownPercentile(const SimResult& r, uint64_t rate_bps, double p, uint64_t min_size,
                          uint64_t max_size) {
  std::vector<double> s;
  for (const MessageRecord& m : r.messages) {
    if (m.completion_ns != 0 && m.size >= min_size && m.size <= max_size) {
      s.push_back(m.Slowdown(rate_bps));
    }
  }
  if (s.empty()) return -1;
  std::sort(s.begin(), s.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(s.size())));
  return s[std::min(s.size() - 1, rank == 0 ? 0 : rank - 1)];
}

}  // namespace qosvisor::sim
