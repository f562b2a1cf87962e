// The in-process generator/analyser loop over DPDK rings.
#include "pktgen/ring_runner.h"

#include <fmt/format.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <cstring>

#include "common/packet_batch.h"
#include "common/tsc.h"

namespace qosvisor::pktgen {
namespace {

// A broadcast frame from the receiver's MAC, so a learning switch knows where it lives before
// the first message (as a host's ARP or gratuitous announcement would).
Status Announce(const WorkloadSpec& spec, const RingEndpoints& rings) {
  if (rings.receiver_tx == nullptr) return Status::Ok();
  rte_mbuf* m = rte_pktmbuf_alloc(rings.pool);
  if (m == nullptr) return Status::Error("traffic: no mbuf for the receiver's announcement");
  auto* f = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, 60));
  if (f == nullptr) {
    rte_pktmbuf_free(m);
    return Status::Error("traffic: an mbuf too small for a 60-byte frame");
  }
  std::memset(f, 0, 60);
  std::memset(f, 0xff, 6);
  std::memcpy(f + 6, spec.receiver_mac, 6);
  f[12] = 0x88;  // local experimental ethertype 0x88b5: nobody acts on it
  f[13] = 0xb5;
  if (rte_ring_enqueue(rings.receiver_tx, m) != 0) {
    rte_pktmbuf_free(m);
    return Status::Error("traffic: the receiver's port ring is full");
  }
  return Status::Ok();
}

struct SenderBatches {
  std::vector<PacketBatch> batches;
  void Flush(const RingEndpoints& rings, uint64_t& waits) {
    for (size_t s = 0; s < batches.size(); ++s) {
      PacketBatch& b = batches[s];
      if (b.count == 0) continue;
      const unsigned n = rte_ring_enqueue_burst(rings.senders[s], reinterpret_cast<void**>(b.pkts),
                                                b.count, nullptr);
      if (n < b.count) ++waits;
      b.Consume(static_cast<uint16_t>(n));
    }
  }
};

}  // namespace

Result<RunResult> RunOverRings(const WorkloadSpec& spec, const RingEndpoints& rings,
                               const RunOptions& options) {
  if (Status s = ValidateWorkload(spec); !s.ok()) return s;
  if (rings.senders.size() < spec.senders || rings.receiver == nullptr || rings.pool == nullptr) {
    return Status::Error(
        fmt::format("traffic: {} sender ring(s) and a receiver ring are needed", spec.senders));
  }
  if (Status s = Announce(spec, rings); !s.ok()) return s;
  const uint64_t hz = TscHz();
  const uint64_t start = ReadTsc();
  const uint64_t end_arrivals = start + NsToTsc(options.duration_ns, hz);
  const uint64_t hard_end = end_arrivals + NsToTsc(options.drain_ns, hz);
  Generator gen(spec, hz, start);
  Analyser analyser(spec, hz);
  SenderBatches out;
  out.batches.resize(spec.senders);
  RunResult result;
  uint64_t next_progress = start + hz / 2;

  auto emit = [&](uint16_t sender, uint32_t length, const Probe& probe, const FrameAddress& addr,
                  Framing framing) {
    PacketBatch& b = out.batches[sender];
    if (b.full()) {
      out.Flush(rings, result.backpressure_waits);
      if (b.full()) return false;
    }
    rte_mbuf* m = rte_pktmbuf_alloc(rings.pool);
    if (m == nullptr) return false;  // pool exhausted: the switch holds them; retry later
    auto* frame = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, static_cast<uint16_t>(length)));
    if (frame == nullptr) {
      rte_pktmbuf_free(m);
      return false;
    }
    Probe stamped = probe;
    stamped.send_tsc = ReadTsc();  // the moment it leaves, not when the poll began
    WriteFrame(frame, framing, addr, stamped);
    b.Push(m);
    return true;
  };

  uint64_t last_rx = start;
  for (;;) {
    const uint64_t now = ReadTsc();
    const bool open = now < end_arrivals && !(options.stop && options.stop->load());
    gen.Poll(now, open, emit);
    out.Flush(rings, result.backpressure_waits);
    // Take everything that arrived, so the receiver never becomes the queue being measured.
    unsigned n = 0, got;
    do {
      void* rx[kMaxBurst];
      got = rte_ring_dequeue_burst(rings.receiver, rx, kMaxBurst, nullptr);
      const uint64_t rx_now = ReadTsc();
      for (unsigned i = 0; i < got; ++i) {
        auto* m = static_cast<rte_mbuf*>(rx[i]);
        analyser.Receive(rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m), rx_now);
      }
      rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(rx), got);
      n += got;
      if (got != 0) last_rx = rx_now;
    } while (got == kMaxBurst);
    if (options.progress && now >= next_progress) {
      options.progress(static_cast<double>(now - start) / static_cast<double>(hz), gen, analyser);
      next_progress += hz / 2;
    }
    if (!open && gen.idle()) {
      // Everything is sent: stop once the receiver has been quiet for 50 ms, or at the limit.
      if (now >= hard_end || (n == 0 && now - last_rx > hz / 20)) break;
    }
  }
  for (PacketBatch& b : out.batches) {
    rte_pktmbuf_free_bulk(b.pkts, b.count);
    b.count = 0;
  }
  analyser.Finish(gen, TscToNs(end_arrivals - start, hz));
  result.report = analyser.Report();
  result.report["generated_messages"] = gen.messages_generated();
  result.report["offered_bps"] =
      static_cast<double>(gen.bytes_sent()) * 8 / (static_cast<double>(options.duration_ns) / 1e9);
  result.generated_packets = gen.packets_sent();
  return result;
}

}  // namespace qosvisor::pktgen
