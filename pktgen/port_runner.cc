// The generator/analyser loop over ports: generate what is due, send in bursts, take everything
// that arrived (through the emulated link if there is one), repeat until the schedule is done and
// the receiver has gone quiet.
#include "pktgen/port_runner.h"

#include <fmt/format.h>
#include <pthread.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <sched.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "common/packet_batch.h"
#include "common/tsan.h"
#include "common/tsc.h"
#include "pktgen/clock_map.h"
#include "pktgen/link_emulator.h"

namespace qosvisor::pktgen {
namespace {

// A broadcast frame from the receiver's MAC (as a host's gratuitous announcement would be).
Status Announce(const WorkloadSpec& spec, const PortEndpoints& ports) {
  if (!ports.announce || ports.receiver == nullptr) return Status::Ok();
  rte_mbuf* m = rte_pktmbuf_alloc(ports.pool);
  if (m == nullptr) return Status::Error("traffic: no mbuf for the receiver's announcement");
  auto* f = rte_pktmbuf_mtod(m, uint8_t*);
  if (rte_pktmbuf_append(m, 60) == nullptr) {
    rte_pktmbuf_free(m);
    return Status::Error("traffic: an mbuf too small for a 60-byte frame");
  }
  std::memset(f, 0, 60);
  std::memset(f, 0xff, 6);
  std::memcpy(f + 6, spec.receiver_mac, 6);
  f[12] = 0x88;  // local experimental ethertype 0x88b5: nobody acts on it
  f[13] = 0xb5;
  PacketBatch b;
  b.Push(m);
  // Best effort, as on a real network: a port that cannot take it now (link still coming up)
  // loses it, and the switch floods the first frames instead.
  if (ports.receiver->Send(b) != 1) rte_pktmbuf_free(m);
  return Status::Ok();
}

// How punctually the receive side polled: every received frame is stamped when it is polled, so a
// gap between polls (the process preempted, or busy elsewhere in its loop) shows up as a clump of
// frames stamped at once, and an emulated link behind it sees them arrive together.
class ReceiverCadence {
 public:
  explicit ReceiverCadence(uint64_t hz) : hz_(hz) {
    rusage u{};
    if (getrusage(RUSAGE_THREAD, &u) == 0) start_involuntary_ = u.ru_nivcsw;
  }
  void Loop(uint64_t now) {
    if (last_loop_ != 0) gap_ns_.Record(TscToNs(now - last_loop_, hz_));
    last_loop_ = now;
    if (clump_bytes_ > max_clump_bytes_) max_clump_bytes_ = clump_bytes_;
    clump_bytes_ = 0;
  }
  void Slept(uint64_t tsc) { max_sleep_tsc_ = std::max(max_sleep_tsc_, tsc); }
  void Received(const PacketBatch& rx, uint16_t got) {
    for (uint16_t i = 0; i < got; ++i) clump_bytes_ += rte_pktmbuf_data_len(rx.pkts[i]);
  }
  nlohmann::json Report() const {
    rusage u{};
    long involuntary = 0;
    if (getrusage(RUSAGE_THREAD, &u) == 0) involuntary = u.ru_nivcsw - start_involuntary_;
    return {{"poll_gap_us",
             {{"p50", gap_ns_.Percentile(0.5) / 1e3},
              {"p99", gap_ns_.Percentile(0.99) / 1e3},
              {"p9999", gap_ns_.Percentile(0.9999) / 1e3},
              {"max", static_cast<double>(gap_ns_.max()) / 1e3}}},
            {"polls_over_100us", CountOver(100'000)},
            {"polls_over_1ms", CountOver(1'000'000)},
            {"max_clump_bytes", max_clump_bytes_},
            {"longest_sleep_us", static_cast<double>(TscToNs(max_sleep_tsc_, hz_)) / 1e3},
            {"involuntary_switches", involuntary}};
  }

 private:
  uint64_t CountOver(uint64_t ns) const {
    uint64_t n = 0;
    for (int i = Histogram::Index(ns) + 1; i < Histogram::kBuckets; ++i) n += gap_ns_.CountAt(i);
    return n;
  }
  uint64_t hz_;
  Histogram gap_ns_;
  uint64_t last_loop_ = 0;
  uint64_t clump_bytes_ = 0, max_clump_bytes_ = 0;
  uint64_t max_sleep_tsc_ = 0;
  long start_involuntary_ = 0;
};

// The loop's thread at a real-time priority for as long as the run lasts. A real-time thread
// that never sleeps would be throttled by the kernel (and starve per-CPU kernel threads), so
// this is only used with a sleep between polls.
class RealtimeScope {
 public:
  Status Enter() {
    if (pthread_getschedparam(pthread_self(), &old_policy_, &old_param_) != 0) {
      return Status::Error("--realtime: cannot read the thread's scheduling policy");
    }
    sched_param p{};
    p.sched_priority = kPriority;
    if (const int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &p); rc != 0) {
      return Status::Error(fmt::format(
          "--realtime: cannot switch to SCHED_FIFO ({}); run as root (CAP_SYS_NICE) or drop "
          "--realtime",
          std::strerror(rc)));
    }
    entered_ = true;
    return Status::Ok();
  }
  ~RealtimeScope() {
    if (entered_) pthread_setschedparam(pthread_self(), old_policy_, &old_param_);
  }

 private:
  // Above ordinary threads, below the kernel's own real-time threads (50 for threaded IRQs).
  static constexpr int kPriority = 20;
  int old_policy_ = SCHED_OTHER;
  sched_param old_param_{};
  bool entered_ = false;
};

// Receive times the device recorded (mbuf timestamp field: the pcap driver's copy of the kernel's
// receive time, microseconds of CLOCK_REALTIME; or a ring port's departure TSC), on the TSC: a
// frame that waited in the device's ring because this loop polled late is measured at its arrival,
// not at the poll. A frame in the kernel's ring before a poll that found the ring empty has been
// handed over by then, give or take the driver's copy: what arrived more than this before such a
// poll is known.
constexpr uint64_t kDeliverySlackNs = 50'000;

class DeviceStamps {
 public:
  DeviceStamps(uint64_t hz, PortEndpoints::Stamps kind) : hz_(hz), kind_(kind), realtime_(hz) {
    if (kind == PortEndpoints::Stamps::kNone) return;
    const int field = rte_mbuf_dynfield_lookup(RTE_MBUF_DYNFIELD_TIMESTAMP_NAME, nullptr);
    const int flag = rte_mbuf_dynflag_lookup(RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME, nullptr);
    if (field >= 0 && flag >= 0) {
      offset_ = field;
      flag_ = uint64_t{1} << flag;
    }
    realtime_.AnchorNow();
  }
  // The TSC time `m` arrived, or `polled` when the device gave no stamp.
  uint64_t ArrivalTsc(const rte_mbuf* m, uint64_t polled) {
    if (offset_ < 0 || (m->ol_flags & flag_) == 0) return polled;
    const uint64_t stamp = *RTE_MBUF_DYNFIELD(m, offset_, const rte_mbuf_timestamp_t*);
    ++stamped_;
    uint64_t at = stamp;
    if (kind_ == PortEndpoints::Stamps::kRealtimeMicros) {
      if (realtime_.Stale(polled)) realtime_.AnchorNow();
      at = realtime_.ToTsc(stamp * 1000);
    }
    // A stamp is never later than the poll that found the frame; clock steps are clamped.
    const uint64_t arrival = std::min(at, polled);
    max_delivery_tsc_ = std::max(max_delivery_tsc_, polled - arrival);
    return arrival;
  }
  uint64_t stamped() const { return stamped_; }
  double max_delivery_us() const {
    return static_cast<double>(TscToNs(max_delivery_tsc_, hz_)) / 1e3;
  }

 private:
  uint64_t hz_;
  PortEndpoints::Stamps kind_;
  RealtimeToTsc realtime_;
  int offset_ = -1;
  uint64_t flag_ = 0;
  uint64_t stamped_ = 0, max_delivery_tsc_ = 0;
};

// How far the emulated link may drain. With device stamps, frames still in the device's ring may
// have arrived before now: drain only to the latest arrival seen, or to shortly before the last
// poll that emptied the ring. Draining promptly matters to closed-loop senders, whose acks and
// grants come from frames leaving the link.
uint64_t DrainHorizon(const DeviceStamps& stamps, uint64_t last_arrival, uint64_t emptied_at) {
  if (stamps.stamped() == 0) return emptied_at;
  const uint64_t settled = emptied_at - std::min(emptied_at, NsToTsc(kDeliverySlackNs, TscHz()));
  return std::max(last_arrival, settled);
}

void SleepBetweenPolls(uint64_t ns) {
  const timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, nullptr);
}

struct UnloadedLatency {
  uint64_t small_ns = 0;  // a one-packet message of a few bytes
  uint64_t full_ns = 0;   // a full-size packet
  int answered = 0;
};

// The path's one-way latency with nothing else in flight: probes of class 0, one at a time, each
// awaited (at most 5 ms) before the next; the minimum of each size. Slowdown is measured against
// it, as Homa measures against an unloaded network.
UnloadedLatency MeasureUnloaded(const WorkloadSpec& spec, const PortEndpoints& ports,
                                DeviceStamps& stamps, uint64_t hz) {
  constexpr int kProbesPerSize = 24;
  UnloadedLatency out;
  if (ports.receiver == nullptr || spec.classes.empty()) return out;
  const ClassWorkload& cls = spec.classes[0];
  const FrameAddress addr = AddressOf(spec, 0, cls.sender, 9999);
  // Between probes the path must be idle again: a pacer or link still busy with the previous
  // (full-size) probe would delay the next one, and that is queueing, not the path.
  const uint64_t full_frame_tsc =
      NsToTsc((spec.mss + 200) * 8 * 1'000'000'000ull / spec.bottleneck_bps, hz);
  const uint64_t settle_tsc = std::max(NsToTsc(50'000, hz), 2 * full_frame_tsc);
  out.small_ns = out.full_ns = UINT64_MAX;
  for (int i = 0; i < 2 * kProbesPerSize; ++i) {
    const bool full = i % 2 == 1;
    Probe p{};
    p.magic = kCalibrationMagic;
    p.tenant = cls.tenant;
    p.message_id = (1ull << 62) | static_cast<uint64_t>(i);
    p.message_length = p.chunk = full ? spec.mss : 1;
    p.seq = static_cast<uint64_t>(i);
    const uint32_t length = FrameLength(cls.framing, cls.vlan >= 0, p.chunk);
    rte_mbuf* m = rte_pktmbuf_alloc(ports.pool);
    if (m == nullptr) break;
    if (rte_pktmbuf_append(m, static_cast<uint16_t>(length)) == nullptr) {
      rte_pktmbuf_free(m);
      break;
    }
    p.send_tsc = p.message_start_tsc = ReadTsc();
    WriteFrame(rte_pktmbuf_mtod(m, uint8_t*), cls.framing, addr, p, /*compact_allowed=*/false);
    PacketBatch b;
    b.Push(m);
    if (ports.senders[cls.sender]->Send(b) != 1) {
      rte_pktmbuf_free(m);
      continue;
    }
    const uint64_t deadline = p.send_tsc + hz / 200;
    for (bool seen = false; !seen && ReadTsc() < deadline;) {
      PacketBatch rx;
      const uint16_t got = ports.receiver->Recv(rx);
      const uint64_t now = ReadTsc();
      for (uint16_t k = 0; k < got; ++k) {
        Probe back;
        const uint32_t len = rte_pktmbuf_data_len(rx.pkts[k]);
        if (!ReadProbe(rte_pktmbuf_mtod(rx.pkts[k], const uint8_t*), len, back) ||
            back.magic != kCalibrationMagic || back.message_id != p.message_id) {
          continue;
        }
        const uint64_t at = stamps.ArrivalTsc(rx.pkts[k], now);
        const uint64_t ns = TscToNs(at > p.send_tsc ? at - p.send_tsc : 0, hz);
        uint64_t& best = full ? out.full_ns : out.small_ns;
        best = std::min(best, ns);
        ++out.answered;
        seen = true;
      }
      rte_pktmbuf_free_bulk(rx.pkts, got);
    }
    for (const uint64_t settled = ReadTsc() + settle_tsc; ReadTsc() < settled;) {
    }
  }
  if (out.small_ns == UINT64_MAX || out.full_ns == UINT64_MAX) return UnloadedLatency{};
  return out;
}

}  // namespace

Result<RunResult> RunOverPorts(const WorkloadSpec& spec, const PortEndpoints& ports,
                               const RunOptions& options) {
  if (Status s = ValidateWorkload(spec); !s.ok()) return s;
  if (ports.senders.size() < spec.senders || ports.pool == nullptr) {
    return Status::Error(
        fmt::format("traffic: {} sender port(s) and a mempool are needed", spec.senders));
  }
  if (options.realtime && options.poll_sleep_ns == 0) {
    return Status::Error("--realtime needs a sleep between polls (--poll sleep=DURATION)");
  }
  RealtimeScope realtime;
  if (options.realtime) {
    if (Status s = realtime.Enter(); !s.ok()) return s;
  }
  if (Status s = Announce(spec, ports); !s.ok()) return s;
  const uint64_t hz = TscHz();
  DeviceStamps stamps(hz, ports.receiver_stamps);
  const UnloadedLatency unloaded =
      options.measure_unloaded ? MeasureUnloaded(spec, ports, stamps, hz) : UnloadedLatency{};
  WorkloadSpec run_spec = spec;
  if (options.exact_load) run_spec.exact_load_ns = options.duration_ns;
  Generator gen(run_spec, hz, ReadTsc());
  const uint64_t start = ReadTsc();
  gen.Restart(start);
  uint64_t end_arrivals = start + NsToTsc(options.duration_ns, hz);
  const uint64_t drain_tsc = NsToTsc(options.drain_ns, hz);
  uint64_t hard_end = end_arrivals + drain_tsc;
  bool stopped = false;
  // Past hard_end nothing new is sent, but what was sent may still arrive, for another drain
  // period: a generator behind its schedule (a box short of CPU) would otherwise count the frames
  // it sent last, still on their way, as lost.
  bool sending = true;
  const uint64_t progress_tsc = std::max<uint64_t>(1, NsToTsc(options.progress_ns, hz));
  Analyser analyser(spec, hz, start);
  if (spec.transport.kind != Transport::kOpen) gen.SetFeedback(&analyser);
  if (unloaded.answered != 0) analyser.SetUnloadedLatency(unloaded.small_ns, unloaded.full_ns);
  std::optional<LinkEmulator> link;
  if (options.link_bps != 0) link.emplace(options.link_bps, options.link_buffer_bytes, hz);
  std::vector<PacketBatch> out(spec.senders);
  RunResult result;
  uint64_t next_progress = start + progress_tsc;

  rte_mbuf* spare[kMaxBurst];
  unsigned spare_count = 0;
  auto flush = [&] {
    for (size_t s = 0; s < out.size(); ++s) {
      if (out[s].count == 0) continue;
      ports.senders[s]->Send(out[s]);
      if (out[s].count != 0 && sending) ++result.backpressure_waits;
    }
  };
  auto emit = [&](uint16_t sender, uint32_t length, const Probe& probe, const FrameAddress& addr,
                  Framing framing) {
    PacketBatch& b = out[sender];
    if (b.full()) {
      flush();
      if (b.full()) return false;
    }
    // Mbufs come from the pool a burst at a time: one pool access per 32 frames, not per frame.
    if (spare_count == 0) {
      if (rte_pktmbuf_alloc_bulk(ports.pool, spare, kMaxBurst) != 0) {
        return false;  // pool exhausted: the switch holds them; retry later
      }
      TsanPacketsIn();  // a thread of the switch may have freed them last
      spare_count = kMaxBurst;
    }
    rte_mbuf* m = spare[--spare_count];
    auto* frame = rte_pktmbuf_mtod(m, uint8_t*);
    if (rte_pktmbuf_append(m, static_cast<uint16_t>(length)) == nullptr) {
      rte_pktmbuf_free(m);
      return false;
    }
    Probe stamped = probe;
    stamped.send_tsc = ReadTsc();  // the moment it leaves, not when the poll began
    WriteFrame(frame, framing, addr, stamped, spec.transport.kind == Transport::kOpen);
    b.Push(m);
    return true;
  };
  auto measured = [&](const Probe& p, uint32_t length, uint64_t at) {
    analyser.ReceiveProbe(p, length, at);
  };

  uint64_t last_rx = start;
  PacketBatch rx;
  ReceiverCadence cadence(hz);
  uint64_t last_arrival = start;
  uint64_t emptied_at = start;  // the last poll that found the receive ring empty
  for (;;) {
    const uint64_t now = ReadTsc();
    cadence.Loop(now);
    if (!stopped && options.stop != nullptr && options.stop->load() && now < end_arrivals) {
      // Stopped early: the run is as long as it went, and stragglers get the usual grace.
      stopped = true;
      end_arrivals = now;
      hard_end = now + drain_tsc;
    }
    const bool behind = sending && gen.PollUntil(now, end_arrivals, emit);
    flush();
    // Take everything that arrived, so the receiver never becomes the queue being measured.
    unsigned n = 0;
    if (ports.receiver != nullptr) {
      uint16_t got;
      do {
        rx.count = 0;
        got = ports.receiver->Recv(rx);
        const uint64_t rx_now = ReadTsc();
        if (got < kMaxBurst) emptied_at = rx_now;
        for (uint16_t i = 0; i < got; ++i) {
          rte_mbuf* m = rx.pkts[i];
          const auto* data = rte_pktmbuf_mtod(m, const uint8_t*);
          const uint32_t len = rte_pktmbuf_data_len(m);
          const uint64_t arrived = stamps.ArrivalTsc(m, rx_now);
          if (!link) {
            analyser.Receive(data, len, arrived);
            continue;
          }
          Probe p;
          if (!ReadProbe(data, len, p)) {
            analyser.CountForeign();
          } else {
            // The queue as it was when this frame arrived: what left before it, and no later.
            link->Drain(arrived, measured);
            link->Offer(p, len, arrived);
          }
          last_arrival = std::max(last_arrival, arrived);
        }
        cadence.Received(rx, got);
        rte_pktmbuf_free_bulk(rx.pkts, got);
        n += got;
        if (got != 0) last_rx = rx_now;
      } while (got == kMaxBurst);
    }
    if (link) {
      if (ports.receiver == nullptr) emptied_at = ReadTsc();
      link->Drain(DrainHorizon(stamps, last_arrival, emptied_at), measured);
    }
    if (options.progress && now >= next_progress) {
      options.progress(static_cast<double>(now - start) / static_cast<double>(hz), gen, analyser);
      next_progress += progress_tsc;
    }
    if (now >= end_arrivals) {
      // Stop once everything is sent and the receiver has been quiet for 50 ms (and the emulated
      // link has sent what it holds). At the limit, stop sending even with frames unsent (a port
      // that no longer takes them must not hold the run forever), and stop once quiet again.
      const bool quiet = n == 0 && now - last_rx > hz / 20 && (!link || link->queued_frames() == 0);
      if (gen.idle() && (quiet || ports.receiver == nullptr)) break;
      if (now >= hard_end) {
        sending = false;
        if (quiet || ports.receiver == nullptr || now >= hard_end + drain_tsc) break;
      }
    }
    if (options.poll_sleep_ns != 0 && !behind) {  // behind its schedule: catch up first
      const uint64_t before = ReadTsc();
      SleepBetweenPolls(options.poll_sleep_ns);
      cadence.Slept(ReadTsc() - before);
    }
  }
  // Frames still in the emulated link would leave at their departure times: measure them so.
  if (link) link->Flush(measured);
  rte_pktmbuf_free_bulk(spare, spare_count);
  for (PacketBatch& b : out) {
    rte_pktmbuf_free_bulk(b.pkts, b.count);
    b.count = 0;
  }
  const uint64_t duration_ns = TscToNs(end_arrivals - start, hz);
  analyser.Finish(gen, duration_ns);
  result.report = analyser.Report();
  const double seconds = std::max(1e-9, static_cast<double>(duration_ns) / 1e9);
  result.report["generated_messages"] = gen.messages_generated();
  result.report["offered_bps"] = static_cast<double>(gen.bytes_offered()) * 8 / seconds;
  result.report["offered_wire_bytes"] = gen.bytes_offered();
  result.report["sent_bps"] = static_cast<double>(gen.bytes_sent()) * 8 / seconds;
  result.report["sent_packets"] = gen.packets_sent();
  result.report["received_packets"] = analyser.received_packets();
  result.report["backpressure_waits"] = result.backpressure_waits;
  result.report["stopped_early"] = stopped;
  result.report["unloaded_latency_us"] = {
      {"small_frame", static_cast<double>(unloaded.small_ns) / 1e3},
      {"full_frame", static_cast<double>(unloaded.full_ns) / 1e3},
      {"probes_answered", unloaded.answered}};
  result.report["transport"] = {{"kind", TransportName(spec.transport.kind)},
                                {"window_bytes", spec.transport.window_bytes},
                                {"rtt_bytes", spec.transport.rtt_bytes},
                                {"overcommit", spec.transport.overcommit},
                                {"retransmitted_packets", gen.retransmitted_packets()}};
  result.report["unsent_at_end"] = !gen.idle();
  if (link) {
    result.report["link"] = {{"rate_bps", options.link_bps},
                             {"buffer_bytes", options.link_buffer_bytes},
                             {"dropped_frames", link->dropped_frames()},
                             {"dropped_bytes", link->dropped_bytes()},
                             {"max_queued_bytes", link->max_queued_bytes()}};
  }
  result.report["receiver"] = cadence.Report();
  result.report["receiver"]["poll_sleep_us"] = static_cast<double>(options.poll_sleep_ns) / 1e3;
  result.report["receiver"]["realtime"] = options.realtime;
  result.report["receiver"]["device_stamped_frames"] = stamps.stamped();
  result.report["receiver"]["max_delivery_delay_us"] = stamps.max_delivery_us();
  result.generated_packets = gen.packets_sent();
  return result;
}

}  // namespace qosvisor::pktgen
