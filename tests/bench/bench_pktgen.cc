// bench_pktgen: how fast qosgen generates its smallest frames into a net_null port on one core,
// against DPDK's own minimal transmit loop (testpmd txonly style) into the same port; JSON lines.
//
// qosgen sends one-byte messages, which travel with the compact probe in 60-byte frames (64 on
// the wire with the FCS), and the peer sends frames of the same size. Both include mbuf
// allocation; net_null frees what it is given. Both are measured alike: five runs of 200 ms each,
// taken in turns (qosgen's run, then the peer's), and each side's best run counts.
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/tsc.h"
#include "dataplane/eal.h"
#include "dataplane/mempool.h"
#include "dataplane/port.h"
#include "pktgen/frame.h"
#include "pktgen/gen_port.h"
#include "pktgen/port_runner.h"

namespace qosvisor::bench {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// qosgen's own path: RunOverPorts with single-packet messages at constant rate `offered_mpps`;
// the run lasts until any backlog is sent, so packets / wall time is the rate it achieved.
// (Offering far more than a core can send would measure a backlog of millions of pending
// messages instead, so the caller steps the offered rate up.)
nlohmann::json Qosgen(dataplane::Port& port, rte_mempool* pool, uint64_t duration_ns,
                      double offered_mpps) {
  pktgen::WorkloadSpec spec;
  pktgen::ClassWorkload c;
  c.name = "min";
  c.size_name = "fixed 1B";
  c.sizes = SizeDistribution::Fixed(1);
  c.arrival = pktgen::Arrival::kConstant;
  spec.classes.push_back(c);
  const double frame = pktgen::FrameLength(pktgen::Framing::kUdp, false, 1, /*compact=*/true);
  spec.bottleneck_bps = static_cast<uint64_t>(offered_mpps * 1e6 * (frame + 24) * 8);
  spec.load = 1.0;
  spec.sender_bps = 1'000'000'000'000'000;  // never the limit
  pktgen::PortEndpoints ends;
  ends.senders = {&port};
  ends.pool = pool;
  pktgen::RunOptions options;
  options.duration_ns = duration_ns;
  options.drain_ns = 10'000'000'000;  // send the whole backlog: packets / wall time is the rate
  const auto t0 = std::chrono::steady_clock::now();
  auto run = pktgen::RunOverPorts(spec, ends, options);
  const double s = Seconds(t0);
  if (!run.ok()) {
    std::fprintf(stderr, "bench_pktgen: %s\n", run.message().c_str());
    std::exit(1);
  }
  return {{"bench", "pktgen_null_tx"},
          {"system", "qosgen"},
          {"frame_bytes", frame},
          {"offered_mpps", offered_mpps},
          {"packets", run->generated_packets},
          {"seconds", s},
          {"mpps", static_cast<double>(run->generated_packets) / s / 1e6}};
}

// The peer: allocate a burst, copy a header template in, rte_eth_tx_burst, repeat, for
// `duration_ns` (the clock is read every 64 bursts).
nlohmann::json DpdkTxOnly(uint16_t port_id, rte_mempool* pool, uint32_t frame,
                          uint64_t duration_ns) {
  uint8_t header[128] = {};
  pktgen::FrameAddress addr{};
  pktgen::Probe probe{};
  probe.magic = pktgen::kProbeMagic;
  probe.chunk = probe.message_length = 1;
  pktgen::WriteFrame(header, pktgen::Framing::kUdp, addr, probe);
  rte_mbuf* burst[32];
  uint64_t sent = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const double seconds = static_cast<double>(duration_ns) / 1e9;
  while (Seconds(t0) < seconds) {
    for (int round = 0; round < 64; ++round) {
      if (rte_pktmbuf_alloc_bulk(pool, burst, 32) != 0) continue;
      for (rte_mbuf* m : burst) {
        std::memcpy(rte_pktmbuf_mtod(m, uint8_t*), header, frame);
        m->data_len = static_cast<uint16_t>(frame);
        m->pkt_len = frame;
      }
      uint16_t n = rte_eth_tx_burst(port_id, 0, burst, 32);
      if (n < 32) rte_pktmbuf_free_bulk(burst + n, 32 - n);
      sent += n;
    }
  }
  const double s = Seconds(t0);
  return {{"bench", "pktgen_null_tx"},
          {"system", "dpdk_txonly"},
          {"frame_bytes", frame},
          {"packets", sent},
          {"seconds", s},
          {"mpps", static_cast<double>(sent) / s / 1e6}};
}

int Main() {
  dataplane::EalOptions o;
  o.dataplane_lcores = 0;
  o.memory_bytes = 512ull << 20;
  o.hugepages = dataplane::Hugepages::kAuto;
  o.file_prefix = "bench_pktgen_" + std::to_string(getpid());
  o.log_level = "error";
  auto eal = dataplane::Eal::Start(o);
  if (!eal.ok()) {
    std::fprintf(stderr, "bench_pktgen: %s\n", eal.message().c_str());
    return 1;
  }
  auto pool = dataplane::Mempool::Create("bench_pktgen", 16383);
  if (!pool.ok()) {
    std::fprintf(stderr, "bench_pktgen: %s\n", pool.message().c_str());
    return 1;
  }
  auto port = pktgen::OpenGenPort({"null", {}}, "bench_null", **pool);
  if (!port.ok()) {
    std::fprintf(stderr, "bench_pktgen: %s\n", port.message().c_str());
    return 1;
  }
  const uint16_t port_id = static_cast<dataplane::EthPort&>(**port).port_id();
  // Warm up both paths (page faults in the pool, caches), then measure.
  const uint32_t frame = pktgen::FrameLength(pktgen::Framing::kUdp, false, 1, /*compact=*/true);
  DpdkTxOnly(port_id, (*pool)->get(), frame, 20'000'000);
  Qosgen(**port, (*pool)->get(), 50'000'000, 5);
  nlohmann::json ours, peer;
  auto keep_best = [](nlohmann::json& best, const nlohmann::json& run) {
    std::puts(run.dump().c_str());
    if (best.is_null() || run["mpps"].get<double>() > best["mpps"].get<double>()) best = run;
  };
  // qosgen steps its offered rate up; the peer runs as often and as long, in turns with it, so
  // both meet the same background load. On a shared machine one run may lose its core for a
  // while: each side's best counts.
  for (double offered : {8.0, 12.0, 16.0, 20.0, 24.0}) {
    keep_best(ours, Qosgen(**port, (*pool)->get(), 200'000'000, offered));
    keep_best(peer, DpdkTxOnly(port_id, (*pool)->get(), frame, 200'000'000));
  }
  std::puts(nlohmann::json{{"bench", "pktgen_null_tx"},
                           {"ratio", "qosgen best mpps / dpdk_txonly best mpps, same frame size, "
                                     "5 runs each"},
                           {"qosgen_mpps", ours["mpps"]},
                           {"dpdk_txonly_mpps", peer["mpps"]},
                           {"value", ours["mpps"].get<double>() / peer["mpps"].get<double>()},
                           {"build", QOSVISOR_BUILD_TYPE}}
                .dump()
                .c_str());
  return 0;
}

}  // namespace
}  // namespace qosvisor::bench

int main() { return qosvisor::bench::Main(); }
