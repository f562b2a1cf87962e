// RunOverRings: bare rte_rings wrapped as ports, so rings and ethdevs share one run loop.
#include "pktgen/ring_runner.h"

#include <fmt/format.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <memory>

#include "common/tsan.h"

namespace qosvisor::pktgen {
namespace {

// A port whose receive side is one ring and whose send side is another (either may be absent).
class RingPairPort : public dataplane::Port {
 public:
  RingPairPort(rte_ring* rx, rte_ring* tx)
      : Port("ring", dataplane::Driver::kRing), rx_(rx), tx_(tx) {}
  uint16_t Recv(PacketBatch& batch) override {
    if (rx_ == nullptr) return 0;
    // SAFETY: the ring carries rte_mbuf pointers only; void** is how rte_ring takes them.
    const unsigned n = rte_ring_dequeue_burst(
        rx_, reinterpret_cast<void**>(batch.pkts + batch.count), kMaxBurst - batch.count, nullptr);
    if (n != 0) TsanPacketsIn();  // the switch's lcore wrote these mbufs last
    batch.count = static_cast<uint16_t>(batch.count + n);
    counters_.rx_packets += n;
    return static_cast<uint16_t>(n);
  }
  uint16_t Send(PacketBatch& batch) override {
    if (tx_ == nullptr) return 0;
    TsanPacketsOut();
    // SAFETY: as above, mbuf pointers passed through the ring as void*.
    const unsigned n =
        rte_ring_enqueue_burst(tx_, reinterpret_cast<void**>(batch.pkts), batch.count, nullptr);
    batch.Consume(static_cast<uint16_t>(n));
    counters_.tx_packets += n;
    return static_cast<uint16_t>(n);
  }
  dataplane::PortCounters Counters() const override { return counters_; }
  bool LinkUp() const override { return true; }

 private:
  rte_ring* rx_;
  rte_ring* tx_;
  dataplane::PortCounters counters_;
};

}  // namespace

Result<RunResult> RunOverRings(const WorkloadSpec& spec, const RingEndpoints& rings,
                               const RunOptions& options) {
  if (rings.senders.size() < spec.senders || rings.receiver == nullptr || rings.pool == nullptr) {
    return Status::Error(
        fmt::format("traffic: {} sender ring(s) and a receiver ring are needed", spec.senders));
  }
  std::vector<std::unique_ptr<RingPairPort>> senders;
  PortEndpoints ports;
  for (rte_ring* r : rings.senders) {
    senders.push_back(std::make_unique<RingPairPort>(nullptr, r));
    ports.senders.push_back(senders.back().get());
  }
  RingPairPort receiver(rings.receiver, rings.receiver_tx);
  ports.receiver = &receiver;
  ports.pool = rings.pool;
  ports.announce = rings.receiver_tx != nullptr;
  if (rings.departures_stamped) ports.receiver_stamps = PortEndpoints::Stamps::kTsc;
  return RunOverPorts(spec, ports, options);
}

}  // namespace qosvisor::pktgen
