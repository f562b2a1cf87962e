// Runs a workload in-process against ring ports: the generator writes frames into the rings the
// switch receives from, the analyser reads the ring the uplink sends to. This is qosgen's ring
// mode, used by `qosvisor run --traffic` and by tests; no second process or NIC is needed.
#pragma once

#include <vector>

#include "common/status.h"
#include "pktgen/port_runner.h"

struct rte_mempool;
struct rte_ring;

namespace qosvisor::pktgen {

struct RingEndpoints {
  std::vector<rte_ring*> senders;   // one per WorkloadSpec sender: frames go in here
  rte_ring* receiver = nullptr;     // frames come out of here
  rte_ring* receiver_tx = nullptr;  // optional: where the receiver announces its MAC address
  rte_mempool* pool = nullptr;
  // The port behind `receiver` stamps departures (EthPort::StampDepartures): measure those.
  bool departures_stamped = false;
};

Result<RunResult> RunOverRings(const WorkloadSpec& spec, const RingEndpoints& rings,
                               const RunOptions& options);

}  // namespace qosvisor::pktgen
