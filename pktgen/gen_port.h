// The ports qosgen attaches through, written "DRIVER:key=value,...": memif, vhost-user (attached
// as a virtio_user client), af_packet, tap, pcap, null (a sink) and ring (an in-process loopback).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "common/status.h"
#include "dataplane/mempool.h"
#include "dataplane/port.h"

namespace qosvisor::pktgen {

struct GenPortSpec {
  std::string driver;  // as written: memif, vhost-user, af_packet, tap, pcap, null, ring
  std::map<std::string, std::string> args;
};

// Parses "memif:socket=/run/a.sock,role=client"; `flag` names the option in error messages.
Result<GenPortSpec> ParseGenPortSpec(const std::string& text, const std::string& flag);

// Opens the port (EAL running). `name` must be unique in the process. A ring port loops what it
// sends back to its own receive side.
Result<std::unique_ptr<dataplane::Port>> OpenGenPort(const GenPortSpec& spec,
                                                     const std::string& name,
                                                     dataplane::Mempool& pool);

}  // namespace qosvisor::pktgen
