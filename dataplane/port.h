// Port: where packets enter and leave the switch, in DPDK burst style. Implementations: DPDK
// ethdev vdevs (ring, null, tap, af_packet, af_xdp, memif, vhost-user, pcap) and the `vm` port
// whose backend is a VM's virtio-net device, attached by hv/ when the VM starts.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/packet_batch.h"
#include "common/status.h"

struct rte_mempool;
struct rte_ring;

namespace qosvisor::dataplane {

class Mempool;

enum class Driver { kRing, kNull, kTap, kAfPacket, kAfXdp, kMemif, kVhostUser, kPcap, kVm };
const char* DriverName(Driver driver);

struct PortOptions {
  std::string name;
  Driver driver = Driver::kRing;
  std::map<std::string, std::string> args;  // driver arguments as the user wrote them
  std::optional<std::array<uint8_t, 6>> mac;
  uint16_t ring_size = 1024;  // rx/tx descriptors, and the size of a ring port's rings
  // Receive queues of the device, all polled by Recv (Send uses one transmit queue). From the
  // `rx_queues` argument for memif, where the peer may transmit on any queue it configured.
  uint16_t rx_queues = 1;
};

struct PortCounters {
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;
  uint64_t tx_packets = 0;
  uint64_t tx_bytes = 0;
  uint64_t rx_missed = 0;  // dropped by the driver because we did not poll fast enough
  uint64_t rx_errors = 0;
  uint64_t tx_errors = 0;
};

// A count written by one thread (the port's data-plane lcore) and read by others (statistics).
// The writer adds with a relaxed load and store rather than a locked read-modify-write, which on
// x86 costs what a plain field does; a reader gets a value the writer stored, whole, and there is
// no data race.
class SingleWriterCount {
 public:
  void Add(uint64_t n) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// The PortCounters a port keeps itself, written by its lcore. Read() takes them one at a time, so
// a packet count and its byte count may be a burst apart while the port runs.
struct SoftwarePortCounters {
  SingleWriterCount rx_packets;
  SingleWriterCount rx_bytes;
  SingleWriterCount tx_packets;
  SingleWriterCount tx_bytes;

  PortCounters Read() const;  // the four counts; the driver's fields stay 0
};

class Port {
 public:
  virtual ~Port() = default;
  const std::string& name() const { return name_; }
  Driver driver() const { return driver_; }

  // Appends up to kMaxBurst - batch.count packets; returns how many arrived.
  virtual uint16_t Recv(PacketBatch& batch) = 0;
  // Sends from the front of the batch and removes what was sent; the rest stays with the caller.
  virtual uint16_t Send(PacketBatch& batch) = 0;
  virtual PortCounters Counters() const = 0;
  virtual bool LinkUp() const = 0;

 protected:
  Port(std::string name, Driver driver) : name_(std::move(name)), driver_(driver) {}

 private:
  std::string name_;
  Driver driver_;
};

// A DPDK ethdev port (one rx and one tx queue).
class EthPort : public Port {
 public:
  ~EthPort() override;
  uint16_t Recv(PacketBatch& batch) override;
  uint16_t Send(PacketBatch& batch) override;
  PortCounters Counters() const override;
  bool LinkUp() const override;
  uint16_t port_id() const { return port_id_; }
  // For `ring` ports only: the far ends. Enqueue into inject_ring() to make packets arrive at the
  // port; dequeue from drain_ring() to take what the port sent. nullptr for other drivers.
  rte_ring* inject_ring() const { return rx_ring_; }
  rte_ring* drain_ring() const { return tx_ring_; }
  // Ring ports drained in this process (the built-in generator's receiver): every frame sent
  // carries the TSC time it left in DPDK's timestamp field, flagged as a receive timestamp, as a
  // NIC stamps what it receives. The receiver then measures departures, however late it polls.
  [[nodiscard]] Status StampDepartures();

  // Takes ownership of an already probed ethdev (and of a ring port's rings); use CreatePort().
  EthPort(const PortOptions& options, uint16_t port_id, std::string vdev, rte_ring* rx,
          rte_ring* tx)
      : Port(options.name, options.driver),
        port_id_(port_id),
        vdev_(std::move(vdev)),
        rx_ring_(rx),
        tx_ring_(tx),
        rx_queues_(options.rx_queues) {}

 private:
  uint16_t port_id_;
  std::string vdev_;  // empty for ring ports, which are not vdevs
  rte_ring* rx_ring_;
  rte_ring* tx_ring_;
  uint16_t rx_queues_;
  int stamp_offset_ = -1;  // the timestamp dynfield when StampDepartures() was called
  uint64_t stamp_flag_ = 0;
  // Counted here, not read from the PMD: not every PMD counts bytes (net_ring does not).
  SoftwarePortCounters sw_;
};

// What a VM's virtio-net device offers the switch. Called only from the port's data-plane lcore.
class VmNetBackend {
 public:
  virtual ~VmNetBackend() = default;
  // Packets the guest transmitted, as mbufs from `pool`; returns how many were written to pkts.
  virtual uint16_t FromGuest(rte_mbuf** pkts, uint16_t max, rte_mempool* pool) = 0;
  // Copies packets into the guest's receive queue; returns how many it took (the caller frees
  // all of them: the guest holds copies, never our mbufs).
  virtual uint16_t ToGuest(rte_mbuf* const* pkts, uint16_t count) = 0;
  virtual bool Ready() const = 0;  // driver has set DRIVER_OK and queues are set up
};

// The `vm` port: a switch port whose far side is a VM. Without a backend attached (VM not
// running) its link is down, it receives nothing and sends nothing.
class VmPort : public Port {
 public:
  VmPort(std::string name, rte_mempool* pool) : Port(std::move(name), Driver::kVm), pool_(pool) {}
  void Attach(VmNetBackend* backend) { backend_.store(backend, std::memory_order_release); }
  void Detach() { backend_.store(nullptr, std::memory_order_release); }
  uint16_t Recv(PacketBatch& batch) override;
  uint16_t Send(PacketBatch& batch) override;
  PortCounters Counters() const override { return counters_.Read(); }
  bool LinkUp() const override;
  // A frame the switch receives on this port as if the VM had sent it, at the next Recv: the
  // RARP with which a VM that just migrated here announces its MAC, so that every bridge on the
  // way relearns where it lives. Control thread; at most kMaxAnnouncements wait at a time.
  Status Announce(std::vector<uint8_t> frame);
  static constexpr size_t kMaxAnnouncements = 8;

 private:
  uint16_t TakeAnnouncements(PacketBatch& batch);  // the polling lcore

  std::atomic<VmNetBackend*> backend_{nullptr};
  rte_mempool* pool_;
  std::mutex announce_mu_;  // the lcore only try-locks it
  std::vector<std::vector<uint8_t>> announcements_;  // guarded by announce_mu_
  std::atomic<bool> has_announcements_{false};
  SoftwarePortCounters counters_;
};

// The DPDK vdev string for a driver, e.g. "net_tap_tap0", "iface=qv0"; checks required args.
Result<std::pair<std::string, std::string>> VdevSpec(const PortOptions& options);

Result<std::unique_ptr<Port>> CreatePort(const PortOptions& options, Mempool& pool);

}  // namespace qosvisor::dataplane
