// Port creation over DPDK vdevs and ring PMD ports; burst receive/send; counters.
#include "dataplane/port.h"

#include <fmt/format.h>
#include <rte_bus_vdev.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_ring.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstring>
#include <set>
#include <vector>

#include "common/tsan.h"
#include "dataplane/mempool.h"

namespace qosvisor::dataplane {
namespace {

struct DriverArgs {
  std::set<std::string> allowed;
  std::set<std::string> required;
};

DriverArgs ArgsOf(Driver driver) {
  switch (driver) {
    case Driver::kRing:
      return {{}, {}};
    case Driver::kNull:
      return {{"size", "no_rx"}, {}};
    case Driver::kTap:
      return {{"iface"}, {}};
    case Driver::kAfPacket:
      return {{"iface", "qpairs"}, {"iface"}};
    case Driver::kAfXdp:
      return {{"iface", "queue"}, {"iface"}};
    case Driver::kMemif:
      return {{"socket", "role", "id", "rx_queues"}, {"socket"}};
    case Driver::kVhostUser:
      return {{"path", "mode", "queues"}, {"path"}};
    case Driver::kPcap:
      return {{"rx_pcap", "tx_pcap", "loop", "rx_iface", "tx_iface"}, {}};
    case Driver::kVm:
      return {{}, {}};
  }
  return {};
}

// DPDK matches a vdev to its driver by name prefix; the rest must be unique and short (some
// drivers derive memzone names from it, which are limited to 31 characters), so a counter is
// used instead of the port's name.
std::string VdevName(const char* prefix) {
  static std::atomic<uint32_t> next{0};
  return fmt::format("{}_qv{}", prefix, next.fetch_add(1, std::memory_order_relaxed));
}

std::string KvArgs(const std::vector<std::pair<std::string, std::string>>& kv) {
  std::string out;
  for (const auto& [k, v] : kv) out += (out.empty() ? "" : ",") + k + "=" + v;
  return out;
}

Status StartEthdev(uint16_t port_id, const PortOptions& options, Mempool& pool) {
  rte_eth_conf conf{};
  int rc = rte_eth_dev_configure(port_id, options.rx_queues, 1, &conf);
  const int socket = rte_eth_dev_socket_id(port_id);
  const unsigned sock = socket < 0 ? rte_socket_id() : static_cast<unsigned>(socket);
  uint16_t rx_desc = options.ring_size, tx_desc = options.ring_size;
  if (rc == 0) rc = rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &rx_desc, &tx_desc);
  for (uint16_t q = 0; rc == 0 && q < options.rx_queues; ++q) {
    rc = rte_eth_rx_queue_setup(port_id, q, rx_desc, sock, nullptr, pool.get());
  }
  if (rc == 0) rc = rte_eth_tx_queue_setup(port_id, 0, tx_desc, sock, nullptr);
  if (rc == 0 && options.mac) {
    rte_ether_addr addr;
    std::copy(options.mac->begin(), options.mac->end(), addr.addr_bytes);
    rc = rte_eth_dev_default_mac_addr_set(port_id, &addr);
    if (rc == -ENOTSUP) rc = 0;  // some vdevs (pcap) have no MAC of their own
  }
  if (rc == 0) rc = rte_eth_dev_start(port_id);
  if (rc != 0) {
    return Status::Error(fmt::format("port '{}': cannot start its {} device: {}", options.name,
                                     DriverName(options.driver), rte_strerror(-rc)));
  }
  rte_eth_promiscuous_enable(port_id);  // a switch port sees every frame
  return Status::Ok();
}

Result<std::unique_ptr<Port>> CreateRingPort(const PortOptions& options, Mempool& pool) {
  const std::string base = VdevName("qv");
  rte_ring* rx = rte_ring_create((base + "_rx").c_str(), options.ring_size, rte_socket_id(),
                                 RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* tx = rte_ring_create((base + "_tx").c_str(), options.ring_size, rte_socket_id(),
                                 RING_F_SP_ENQ | RING_F_SC_DEQ);
  if (rx == nullptr || tx == nullptr) {
    rte_ring_free(rx);
    rte_ring_free(tx);
    return Status::Error(fmt::format("port '{}': cannot create its rings: {}", options.name,
                                     rte_strerror(rte_errno)));
  }
  const int id = rte_eth_from_rings(VdevName("net_ring").c_str(), &rx, 1, &tx, 1, rte_socket_id());
  if (id < 0) {
    rte_ring_free(rx);
    rte_ring_free(tx);
    return Status::Error(fmt::format("port '{}': cannot create a ring port: {}", options.name,
                                     rte_strerror(rte_errno)));
  }
  auto port = std::unique_ptr<EthPort>(
      new EthPort(options, static_cast<uint16_t>(id), std::string(), rx, tx));
  if (Status s = StartEthdev(port->port_id(), options, pool); !s.ok()) return s;
  return std::unique_ptr<Port>(std::move(port));
}

}  // namespace

const char* DriverName(Driver driver) {
  switch (driver) {
    case Driver::kRing:
      return "ring";
    case Driver::kNull:
      return "null";
    case Driver::kTap:
      return "tap";
    case Driver::kAfPacket:
      return "af_packet";
    case Driver::kAfXdp:
      return "af_xdp";
    case Driver::kMemif:
      return "memif";
    case Driver::kVhostUser:
      return "vhost-user";
    case Driver::kPcap:
      return "pcap";
    case Driver::kVm:
      return "vm";
  }
  return "?";
}

Result<std::pair<std::string, std::string>> VdevSpec(const PortOptions& o) {
  const DriverArgs known = ArgsOf(o.driver);
  for (const auto& [key, value] : o.args) {
    if (!known.allowed.contains(key)) {
      return Status::Error(fmt::format("port '{}': driver {} has no argument '{}'", o.name,
                                       DriverName(o.driver), key));
    }
  }
  for (const std::string& key : known.required) {
    if (!o.args.contains(key)) {
      return Status::Error(fmt::format("port '{}': driver {} needs the argument '{}'", o.name,
                                       DriverName(o.driver), key));
    }
  }
  auto arg = [&](const std::string& k, const std::string& fallback = "") {
    auto it = o.args.find(k);
    return it == o.args.end() ? fallback : it->second;
  };
  std::vector<std::pair<std::string, std::string>> kv;
  const char* prefix = nullptr;
  switch (o.driver) {
    case Driver::kNull:
      prefix = "net_null";
      if (o.args.contains("size")) kv.emplace_back("size", arg("size"));
      kv.emplace_back("copy", "0");
      if (arg("no_rx") == "true") kv.emplace_back("no-rx", "1");
      break;
    case Driver::kTap:
      prefix = "net_tap";
      kv.emplace_back("iface", arg("iface", VdevName("qv")));
      break;
    case Driver::kAfPacket:
      prefix = "net_af_packet";
      kv.emplace_back("iface", arg("iface"));
      if (o.args.contains("qpairs")) kv.emplace_back("qpairs", arg("qpairs"));
      break;
    case Driver::kAfXdp:
      prefix = "net_af_xdp";
      kv.emplace_back("iface", arg("iface"));
      kv.emplace_back("start_queue", arg("queue", "0"));
      break;
    case Driver::kMemif:
      prefix = "net_memif";
      kv.emplace_back("socket", arg("socket"));
      kv.emplace_back("socket-abstract", "no");
      kv.emplace_back("role", arg("role", "client"));
      if (o.args.contains("id")) kv.emplace_back("id", arg("id"));
      break;
    case Driver::kVhostUser:
      prefix = "net_vhost";
      kv.emplace_back("iface", arg("path"));
      kv.emplace_back("client", arg("mode", "server") == "client" ? "1" : "0");
      kv.emplace_back("queues", arg("queues", "1"));
      break;
    case Driver::kPcap:
      prefix = "net_pcap";
      if (!o.args.contains("rx_pcap") && !o.args.contains("tx_pcap") &&
          !o.args.contains("rx_iface")) {
        return Status::Error(
            fmt::format("port '{}': driver pcap needs rx_pcap, tx_pcap or rx_iface", o.name));
      }
      for (const char* key : {"rx_pcap", "tx_pcap", "rx_iface", "tx_iface"}) {
        if (o.args.contains(key)) kv.emplace_back(key, arg(key));
      }
      if (arg("loop") == "true") kv.emplace_back("infinite_rx", "1");
      break;
    case Driver::kRing:
    case Driver::kVm:
      return Status::Error(
          fmt::format("port '{}': driver {} is not a DPDK vdev", o.name, DriverName(o.driver)));
  }
  return std::make_pair(VdevName(prefix), KvArgs(kv));
}

// The receive queues a port asks for: memif's `rx_queues` argument (1..16), else one.
Result<uint16_t> ReceiveQueues(const PortOptions& options) {
  auto it = options.args.find("rx_queues");
  if (options.driver != Driver::kMemif || it == options.args.end()) return uint16_t{1};
  const std::string& v = it->second;
  const bool digits = !v.empty() && v.size() <= 2 && std::all_of(v.begin(), v.end(), ::isdigit);
  const int n = digits ? std::stoi(v) : 0;
  if (n < 1 || n > 16) {
    return Status::Error(
        fmt::format("port '{}': rx_queues '{}' must be a number from 1 to 16", options.name, v));
  }
  return static_cast<uint16_t>(n);
}

Result<std::unique_ptr<Port>> CreatePort(const PortOptions& requested, Mempool& pool) {
  PortOptions options = requested;
  auto queues = ReceiveQueues(options);
  if (!queues.ok()) return queues.status();
  options.rx_queues = *queues;
  if (options.driver == Driver::kVm) {
    return std::unique_ptr<Port>(std::make_unique<VmPort>(options.name, pool.get()));
  }
  if (options.driver == Driver::kRing) return CreateRingPort(options, pool);
  auto spec = VdevSpec(options);
  if (!spec.ok()) return spec.status();
  const auto& [vdev, args] = *spec;
  if (int rc = rte_vdev_init(vdev.c_str(), args.c_str()); rc != 0) {
    return Status::Error(fmt::format(
        "port '{}': the {} driver refused '{}' ({}); check the "
        "driver arguments and that the interface/socket exists",
        options.name, DriverName(options.driver), args, rte_strerror(rc < 0 ? -rc : rc)));
  }
  uint16_t port_id;
  if (rte_eth_dev_get_port_by_name(vdev.c_str(), &port_id) != 0) {
    rte_vdev_uninit(vdev.c_str());
    return Status::Error(fmt::format("port '{}': device {} did not appear", options.name, vdev));
  }
  auto port = std::unique_ptr<EthPort>(new EthPort(options, port_id, vdev, nullptr, nullptr));
  if (Status s = StartEthdev(port_id, options, pool); !s.ok()) return s;
  return std::unique_ptr<Port>(std::move(port));
}

EthPort::~EthPort() {
  rte_eth_dev_stop(port_id_);
  rte_eth_dev_close(port_id_);
  if (!vdev_.empty()) rte_vdev_uninit(vdev_.c_str());
  // Packets still in a ring port's rings belong to nobody else: return them to their pool.
  for (rte_ring* ring : {rx_ring_, tx_ring_}) {
    if (ring == nullptr) continue;
    void* m;
    while (rte_ring_dequeue(ring, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
    rte_ring_free(ring);
  }
}

namespace {

uint64_t BytesOf(rte_mbuf* const* pkts, uint16_t n) {
  uint64_t bytes = 0;
  for (uint16_t i = 0; i < n; ++i) bytes += rte_pktmbuf_pkt_len(pkts[i]);
  return bytes;
}

}  // namespace

PortCounters SoftwarePortCounters::Read() const {
  PortCounters c;
  c.rx_packets = rx_packets.value();
  c.rx_bytes = rx_bytes.value();
  c.tx_packets = tx_packets.value();
  c.tx_bytes = tx_bytes.value();
  return c;
}

uint16_t EthPort::Recv(PacketBatch& batch) {
  uint16_t n = 0;
  for (uint16_t q = 0; q < rx_queues_ && batch.count + n < kMaxBurst; ++q) {
    n = static_cast<uint16_t>(n +
                              rte_eth_rx_burst(port_id_, q, batch.pkts + batch.count + n,
                                               static_cast<uint16_t>(kMaxBurst - batch.count - n)));
  }
  if (n == 0) return 0;  // (most polls of an idle port: no stores)
  TsanPacketsIn();
  sw_.rx_bytes.Add(BytesOf(batch.pkts + batch.count, n));
  sw_.rx_packets.Add(n);
  batch.count = static_cast<uint16_t>(batch.count + n);
  return n;
}

Status EthPort::StampDepartures() {
  if (driver() != Driver::kRing) {
    return Status::Error(fmt::format("port '{}': only ring ports stamp departures", name()));
  }
  if (rte_mbuf_dyn_rx_timestamp_register(&stamp_offset_, &stamp_flag_) != 0) {
    return Status::Error(fmt::format("port '{}': cannot register the mbuf timestamp field: {}",
                                     name(), rte_strerror(rte_errno)));
  }
  return Status::Ok();
}

uint16_t EthPort::Send(PacketBatch& batch) {
  uint64_t bytes = 0;
  for (uint16_t i = 0; i < batch.count; ++i) bytes += rte_pktmbuf_pkt_len(batch.pkts[i]);
  if (stamp_offset_ >= 0) {
    const uint64_t now = rte_rdtsc();
    for (uint16_t i = 0; i < batch.count; ++i) {
      *RTE_MBUF_DYNFIELD(batch.pkts[i], stamp_offset_, rte_mbuf_timestamp_t*) = now;
      batch.pkts[i]->ol_flags |= stamp_flag_;
    }
  }
  TsanPacketsOut();
  const uint16_t n = rte_eth_tx_burst(port_id_, 0, batch.pkts, batch.count);
  // Unsent packets are still ours to read: subtract them rather than reading freed mbufs.
  for (uint16_t i = n; i < batch.count; ++i) bytes -= rte_pktmbuf_pkt_len(batch.pkts[i]);
  sw_.tx_bytes.Add(bytes);
  sw_.tx_packets.Add(n);
  batch.Consume(n);
  return n;
}

PortCounters EthPort::Counters() const {
  rte_eth_stats stats{};
  rte_eth_stats_get(port_id_, &stats);
  PortCounters c = sw_.Read();
  c.rx_missed = stats.imissed;
  c.rx_errors = stats.ierrors;
  c.tx_errors = stats.oerrors;
  return c;
}

bool EthPort::LinkUp() const {
  rte_eth_link link{};
  return rte_eth_link_get_nowait(port_id_, &link) == 0 && link.link_status == RTE_ETH_LINK_UP;
}

Status VmPort::Announce(std::vector<uint8_t> frame) {
  if (frame.size() > RTE_MBUF_DEFAULT_DATAROOM) {
    return Status::Error(fmt::format("port {}: a {}-byte announcement does not fit an mbuf",
                                     name(), frame.size()));
  }
  std::lock_guard lock(announce_mu_);
  if (announcements_.size() >= kMaxAnnouncements) {
    return Status::Error(fmt::format("port {}: {} announcements wait already", name(),
                                     announcements_.size()));
  }
  announcements_.push_back(std::move(frame));
  has_announcements_.store(true, std::memory_order_release);
  return Status::Ok();
}

uint16_t VmPort::TakeAnnouncements(PacketBatch& batch) {
  std::unique_lock lock(announce_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return 0;  // the control thread is adding one: next poll
  uint16_t n = 0;
  while (!announcements_.empty() && batch.count < kMaxBurst) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    if (m == nullptr) break;
    const std::vector<uint8_t>& frame = announcements_.front();
    char* data = rte_pktmbuf_append(m, static_cast<uint16_t>(frame.size()));
    if (data == nullptr) {
      rte_pktmbuf_free(m);
      break;
    }
    std::memcpy(data, frame.data(), frame.size());
    counters_.rx_bytes.Add(frame.size());
    batch.pkts[batch.count++] = m;
    announcements_.erase(announcements_.begin());
    ++n;
  }
  has_announcements_.store(!announcements_.empty(), std::memory_order_release);
  return n;
}

uint16_t VmPort::Recv(PacketBatch& batch) {
  // Announcements go out whether or not the guest's driver is ready at this instant (Ready()
  // only try-locks the device, so a busy device reads as not ready).
  uint16_t announced = 0;
  if (has_announcements_.load(std::memory_order_acquire)) {
    announced = TakeAnnouncements(batch);
    counters_.rx_packets.Add(announced);
  }
  VmNetBackend* backend = backend_.load(std::memory_order_acquire);
  if (backend == nullptr || !backend->Ready()) return announced;
  const uint16_t n = backend->FromGuest(batch.pkts + batch.count,
                                        static_cast<uint16_t>(kMaxBurst - batch.count), pool_);
  if (n == 0) return announced;
  counters_.rx_bytes.Add(BytesOf(batch.pkts + batch.count, n));
  counters_.rx_packets.Add(n);
  batch.count = static_cast<uint16_t>(batch.count + n);
  return static_cast<uint16_t>(announced + n);
}

uint16_t VmPort::Send(PacketBatch& batch) {
  VmNetBackend* backend = backend_.load(std::memory_order_acquire);
  if (backend == nullptr || !backend->Ready()) return 0;
  const uint16_t n = backend->ToGuest(batch.pkts, batch.count);
  uint64_t bytes = 0;
  for (uint16_t i = 0; i < n; ++i) {
    bytes += rte_pktmbuf_pkt_len(batch.pkts[i]);
    rte_pktmbuf_free(batch.pkts[i]);  // the guest has its own copy
  }
  counters_.tx_bytes.Add(bytes);
  counters_.tx_packets.Add(n);
  batch.Consume(n);
  return n;
}

bool VmPort::LinkUp() const {
  VmNetBackend* backend = backend_.load(std::memory_order_acquire);
  return backend != nullptr && backend->Ready();
}

}  // namespace qosvisor::dataplane
