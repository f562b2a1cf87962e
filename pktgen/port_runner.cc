// The generator/analyser loop over ports: generate what is due, send in bursts, take everything
// that arrived (through the emulated link if there is one), repeat until the schedule is done and
// the receiver has gone quiet.
#include "pktgen/port_runner.h"

#include <fmt/format.h>
#include <rte_mbuf.h>

#include <cstring>
#include <optional>

#include "common/packet_batch.h"
#include "common/tsc.h"
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

}  // namespace

Result<RunResult> RunOverPorts(const WorkloadSpec& spec, const PortEndpoints& ports,
                               const RunOptions& options) {
  if (Status s = ValidateWorkload(spec); !s.ok()) return s;
  if (ports.senders.size() < spec.senders || ports.pool == nullptr) {
    return Status::Error(
        fmt::format("traffic: {} sender port(s) and a mempool are needed", spec.senders));
  }
  if (Status s = Announce(spec, ports); !s.ok()) return s;
  const uint64_t hz = TscHz();
  Generator gen(spec, hz, ReadTsc());
  const uint64_t start = ReadTsc();
  gen.Restart(start);
  uint64_t end_arrivals = start + NsToTsc(options.duration_ns, hz);
  const uint64_t drain_tsc = NsToTsc(options.drain_ns, hz);
  uint64_t hard_end = end_arrivals + drain_tsc;
  bool stopped = false;
  const uint64_t progress_tsc = std::max<uint64_t>(1, NsToTsc(options.progress_ns, hz));
  Analyser analyser(spec, hz, start);
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
      if (out[s].count != 0) ++result.backpressure_waits;
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
    WriteFrame(frame, framing, addr, stamped);
    b.Push(m);
    return true;
  };
  auto measured = [&](const Probe& p, uint32_t length, uint64_t at) {
    analyser.ReceiveProbe(p, length, at);
  };

  uint64_t last_rx = start;
  PacketBatch rx;
  for (;;) {
    const uint64_t now = ReadTsc();
    if (!stopped && options.stop != nullptr && options.stop->load() && now < end_arrivals) {
      // Stopped early: the run is as long as it went, and stragglers get the usual grace.
      stopped = true;
      end_arrivals = now;
      hard_end = now + drain_tsc;
    }
    gen.PollUntil(now, end_arrivals, emit);
    flush();
    // Take everything that arrived, so the receiver never becomes the queue being measured.
    unsigned n = 0;
    if (ports.receiver != nullptr) {
      uint16_t got;
      do {
        rx.count = 0;
        got = ports.receiver->Recv(rx);
        const uint64_t rx_now = ReadTsc();
        if (link) link->Drain(rx_now, measured);
        for (uint16_t i = 0; i < got; ++i) {
          rte_mbuf* m = rx.pkts[i];
          const auto* data = rte_pktmbuf_mtod(m, const uint8_t*);
          const uint32_t len = rte_pktmbuf_data_len(m);
          if (!link) {
            analyser.Receive(data, len, rx_now);
            continue;
          }
          Probe p;
          if (!ReadProbe(data, len, p)) {
            analyser.CountForeign();
          } else {
            link->Offer(p, len, rx_now);
          }
        }
        rte_pktmbuf_free_bulk(rx.pkts, got);
        n += got;
        if (got != 0) last_rx = rx_now;
      } while (got == kMaxBurst);
    }
    if (link) link->Drain(ReadTsc(), measured);
    if (options.progress && now >= next_progress) {
      options.progress(static_cast<double>(now - start) / static_cast<double>(hz), gen, analyser);
      next_progress += progress_tsc;
    }
    if (now >= end_arrivals) {
      // Stop once everything is sent and the receiver has been quiet for 50 ms (and the emulated
      // link has sent what it holds); or at the limit, even with frames unsent (a port that no
      // longer takes them must not hold the run forever).
      const bool quiet = n == 0 && now - last_rx > hz / 20 && (!link || link->queued_frames() == 0);
      if (now >= hard_end || (gen.idle() && (quiet || ports.receiver == nullptr))) break;
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
  result.report["sent_bps"] = static_cast<double>(gen.bytes_sent()) * 8 / seconds;
  result.report["sent_packets"] = gen.packets_sent();
  result.report["received_packets"] = analyser.received_packets();
  result.report["backpressure_waits"] = result.backpressure_waits;
  result.report["stopped_early"] = stopped;
  result.report["unsent_at_end"] = !gen.idle();
  if (link) {
    result.report["link"] = {{"rate_bps", options.link_bps},
                             {"buffer_bytes", options.link_buffer_bytes},
                             {"dropped_frames", link->dropped_frames()},
                             {"dropped_bytes", link->dropped_bytes()},
                             {"max_queued_bytes", link->max_queued_bytes()}};
  }
  result.generated_packets = gen.packets_sent();
  return result;
}

}  // namespace qosvisor::pktgen
