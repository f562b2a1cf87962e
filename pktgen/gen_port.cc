// Port specs to ports. Most drivers are dataplane's; two are qosgen's own: virtio_user (the
// client side of the appliance's vhost-user port) and the ring loopback.
#include "pktgen/gen_port.h"

#include <fmt/format.h>
#include <rte_bus_vdev.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_ring.h>

#include <atomic>
#include <set>

namespace qosvisor::pktgen {
namespace {

Status StartEthdev(uint16_t port_id, const std::string& what, dataplane::Mempool& pool) {
  rte_eth_conf conf{};
  int rc = rte_eth_dev_configure(port_id, 1, 1, &conf);
  uint16_t rx_desc = 1024, tx_desc = 1024;
  const int socket = rte_eth_dev_socket_id(port_id);
  const unsigned sock = socket < 0 ? 0 : static_cast<unsigned>(socket);
  if (rc == 0) rc = rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &rx_desc, &tx_desc);
  if (rc == 0) rc = rte_eth_rx_queue_setup(port_id, 0, rx_desc, sock, nullptr, pool.get());
  if (rc == 0) rc = rte_eth_tx_queue_setup(port_id, 0, tx_desc, sock, nullptr);
  if (rc == 0) rc = rte_eth_dev_start(port_id);
  if (rc != 0) {
    return Status::Error(fmt::format("{}: cannot start the device: {}", what, rte_strerror(-rc)));
  }
  rte_eth_promiscuous_enable(port_id);
  return Status::Ok();
}

std::string Unique(const std::string& base) {
  static std::atomic<int> counter{0};
  return fmt::format("{}{}", base, counter++);
}

Result<std::unique_ptr<dataplane::Port>> OpenRingLoopback(const std::string& name,
                                                          dataplane::Mempool& pool) {
  const std::string ring_name = Unique("qg_loop");
  rte_ring* ring = rte_ring_create(ring_name.c_str(), 4096, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  if (ring == nullptr) {
    return Status::Error(
        fmt::format("ring port: cannot create a ring: {}", rte_strerror(rte_errno)));
  }
  const std::string dev = Unique("net_ring_qg");
  const int id = rte_eth_from_rings(dev.c_str(), &ring, 1, &ring, 1, 0);
  if (id < 0) {
    rte_ring_free(ring);
    return Status::Error(
        fmt::format("ring port: cannot create the ethdev: {}", rte_strerror(rte_errno)));
  }
  dataplane::PortOptions o;
  o.name = name;
  o.driver = dataplane::Driver::kRing;
  // The EthPort frees the ring once (passed as its rx ring only).
  auto port = std::make_unique<dataplane::EthPort>(o, static_cast<uint16_t>(id), std::string(),
                                                   ring, nullptr);
  if (Status s = StartEthdev(port->port_id(), "ring port", pool); !s.ok()) return s;
  return std::unique_ptr<dataplane::Port>(std::move(port));
}

Result<std::unique_ptr<dataplane::Port>> OpenVirtioUser(const GenPortSpec& spec,
                                                        const std::string& name,
                                                        dataplane::Mempool& pool) {
  const std::string vdev = Unique("net_virtio_user");
  std::string args = "path=" + spec.args.at("path") + ",queues=1";
  if (int rc = rte_vdev_init(vdev.c_str(), args.c_str()); rc != 0) {
    return Status::Error(fmt::format(
        "--port vhost-user:path={}: virtio_user could not attach ({}); is the appliance's "
        "vhost-user port listening on that socket?",
        spec.args.at("path"), rte_strerror(rc < 0 ? -rc : rc)));
  }
  uint16_t id;
  if (rte_eth_dev_get_port_by_name(vdev.c_str(), &id) != 0) {
    rte_vdev_uninit(vdev.c_str());
    return Status::Error(fmt::format("virtio_user device {} did not appear", vdev));
  }
  dataplane::PortOptions o;
  o.name = name;
  o.driver = dataplane::Driver::kVhostUser;
  auto port = std::make_unique<dataplane::EthPort>(o, id, vdev, nullptr, nullptr);
  if (Status s = StartEthdev(id, "virtio_user " + spec.args.at("path"), pool); !s.ok()) return s;
  return std::unique_ptr<dataplane::Port>(std::move(port));
}

}  // namespace

Result<GenPortSpec> ParseGenPortSpec(const std::string& text, const std::string& flag) {
  static const std::map<std::string, std::set<std::string>> kKnown = {
      {"memif", {"socket", "role", "id", "rx_queues"}},
      {"vhost-user", {"path"}},
      {"af_packet", {"iface", "qpairs"}},
      {"tap", {"iface"}},
      {"pcap", {"rx_pcap", "tx_pcap", "loop", "rx_iface", "tx_iface"}},
      {"null", {"size"}},
      {"ring", {}},
  };
  GenPortSpec spec;
  const size_t colon = text.find(':');
  spec.driver = text.substr(0, colon);
  auto known = kKnown.find(spec.driver);
  if (known == kKnown.end()) {
    return Status::Error(fmt::format(
        "{} '{}': unknown driver '{}'; use memif, vhost-user, af_packet, tap, pcap, null or ring "
        "(e.g. memif:socket=/run/qv.sock,role=client)",
        flag, text, spec.driver));
  }
  if (colon != std::string::npos) {
    std::string rest = text.substr(colon + 1);
    size_t pos = 0;
    while (pos <= rest.size() && !rest.empty()) {
      const size_t comma = rest.find(',', pos);
      const std::string kv = rest.substr(pos, comma == std::string::npos ? comma : comma - pos);
      const size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        return Status::Error(fmt::format("{} '{}': '{}' is not key=value", flag, text, kv));
      }
      const std::string key = kv.substr(0, eq);
      if (!known->second.contains(key)) {
        std::string keys;
        for (const std::string& k : known->second) keys += (keys.empty() ? "" : ", ") + k;
        return Status::Error(fmt::format("{} '{}': driver {} has no argument '{}'{}", flag, text,
                                         spec.driver, key,
                                         keys.empty() ? "" : " (it takes " + keys + ")"));
      }
      spec.args[key] = kv.substr(eq + 1);
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  auto need = [&](const char* key) -> Status {
    if (spec.args.contains(key)) return Status::Ok();
    return Status::Error(
        fmt::format("{} '{}': driver {} needs {}=...", flag, text, spec.driver, key));
  };
  Status s = Status::Ok();
  if (spec.driver == "memif") s = need("socket");
  if (spec.driver == "vhost-user") s = need("path");
  if (spec.driver == "af_packet") s = need("iface");
  if (spec.driver == "pcap" && !spec.args.contains("rx_pcap") && !spec.args.contains("tx_pcap") &&
      !spec.args.contains("rx_iface")) {
    s = Status::Error(fmt::format(
        "{} '{}': driver pcap needs rx_pcap=FILE, tx_pcap=FILE or rx_iface=IF", flag, text));
  }
  if (!s.ok()) return s;
  return spec;
}

Result<std::unique_ptr<dataplane::Port>> OpenGenPort(const GenPortSpec& spec,
                                                     const std::string& name,
                                                     dataplane::Mempool& pool) {
  if (spec.driver == "ring") return OpenRingLoopback(name, pool);
  if (spec.driver == "vhost-user") return OpenVirtioUser(spec, name, pool);
  static const std::map<std::string, dataplane::Driver> kDrivers = {
      {"memif", dataplane::Driver::kMemif}, {"af_packet", dataplane::Driver::kAfPacket},
      {"tap", dataplane::Driver::kTap},     {"pcap", dataplane::Driver::kPcap},
      {"null", dataplane::Driver::kNull},
  };
  dataplane::PortOptions o;
  o.name = name;
  o.driver = kDrivers.at(spec.driver);
  o.args = spec.args;
  if (o.driver == dataplane::Driver::kMemif && !o.args.contains("role")) o.args["role"] = "client";
  return dataplane::CreatePort(o, pool);
}

}  // namespace qosvisor::pktgen
