// EAL arguments from options, port creation, burst I/O through ring ports, and counters (also
// read while another thread counts).
#include <fmt/format.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_ring.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "dataplane/eal.h"
#include "dataplane/mempool.h"
#include "dataplane/port.h"
#include "tests/unit/test_eal.h"

namespace qosvisor::dataplane {
namespace {

using qosvisor::testing::TestEal;

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// A guest that transmits `per_poll` frames of 100 bytes at every poll and takes every frame sent
// to it.
class ChattyGuest : public VmNetBackend {
 public:
  uint16_t FromGuest(rte_mbuf** pkts, uint16_t max, rte_mempool* pool) override {
    const uint16_t n = std::min<uint16_t>(max, kPerPoll);
    if (rte_pktmbuf_alloc_bulk(pool, pkts, n) != 0) return 0;
    for (uint16_t i = 0; i < n; ++i) rte_pktmbuf_append(pkts[i], 100);
    return n;
  }
  uint16_t ToGuest(rte_mbuf* const*, uint16_t count) override { return count; }
  bool Ready() const override { return true; }
  static constexpr uint16_t kPerPoll = 4;
};

// Reads `port`'s counters until `done`: every count must only grow. (Under ThreadSanitizer this
// is also where a counter the lcore writes without synchronisation would be reported.)
bool CountsOnlyGrow(const Port& port, const std::atomic<bool>& done) {
  PortCounters last;
  bool grow = true;
  while (!done.load(std::memory_order_acquire)) {
    const PortCounters c = port.Counters();
    grow = grow && c.rx_packets >= last.rx_packets && c.rx_bytes >= last.rx_bytes &&
           c.tx_packets >= last.tx_packets && c.tx_bytes >= last.tx_bytes;
    last = c;
  }
  return grow;
}

}  // namespace

TEST_CASE("EAL arguments: no hugepages by default on a box without them", "[dataplane]") {
  EalOptions o;
  o.memory_bytes = 1ull << 30;
  auto args = BuildEalArgs(o, HostFacts{2, 0});
  REQUIRE(args.ok());
  CHECK(Contains(*args, "--no-huge"));
  CHECK(Contains(*args, "-m1024"));
  CHECK(Contains(*args, "--no-pci"));
  CHECK(Contains(*args, "--file-prefix=qosvisor"));
  CHECK(Contains(*args, "--lcores=0@0,1@1"));
}

TEST_CASE("EAL arguments: hugepages when auto finds enough, error when forced without",
          "[dataplane]") {
  EalOptions o;
  o.memory_bytes = 512ull << 20;
  auto with = BuildEalArgs(o, HostFacts{2, 1ull << 30});
  REQUIRE(with.ok());
  CHECK_FALSE(Contains(*with, "--no-huge"));
  CHECK(Contains(*with, "--socket-mem=512"));
  o.hugepages = Hugepages::kOn;
  auto forced = BuildEalArgs(o, HostFacts{2, 0});
  REQUIRE_FALSE(forced.ok());
  CHECK_THAT(forced.message(), Catch::Contains("only 0 MiB of hugepages are free"));
  o.hugepages = Hugepages::kOff;
  o.dataplane_lcores = 3;
  auto shared = BuildEalArgs(o, HostFacts{2, 1ull << 30});
  CHECK(Contains(*shared, "--lcores=0@0,1@1,2@0,3@1"));
  CHECK(Contains(*shared, "--no-huge"));
}

TEST_CASE("EAL arguments: hugepages reserved but no hugetlbfs mounted", "[dataplane]") {
  EalOptions o;
  o.memory_bytes = 512ull << 20;
  const HostFacts unmounted{2, 1ull << 30, false};
  auto automatic = BuildEalArgs(o, unmounted);
  REQUIRE(automatic.ok());
  CHECK(Contains(*automatic, "--no-huge"));
  o.hugepages = Hugepages::kOn;
  auto forced = BuildEalArgs(o, unmounted);
  REQUIRE_FALSE(forced.ok());
  CHECK_THAT(forced.message(), Catch::Contains("no hugetlbfs is mounted"));
}

TEST_CASE("vdev specs map our driver arguments and reject unknown ones", "[dataplane]") {
  PortOptions o;
  o.name = "vhost0";
  o.driver = Driver::kVhostUser;
  o.args = {{"path", "/tmp/v.sock"}, {"mode", "client"}};
  auto spec = VdevSpec(o);
  REQUIRE(spec.ok());
  CHECK(spec->first.rfind("net_vhost_qv", 0) == 0);
  CHECK(spec->second == "iface=/tmp/v.sock,client=1,queues=1");

  o.driver = Driver::kAfPacket;
  o.args = {};
  CHECK(VdevSpec(o).message() == "port 'vhost0': driver af_packet needs the argument 'iface'");
  o.args = {{"iface", "eth0"}, {"speed", "10G"}};
  CHECK(VdevSpec(o).message() == "port 'vhost0': driver af_packet has no argument 'speed'");

  o.driver = Driver::kMemif;
  o.args = {{"socket", "/run/m.sock"}, {"role", "server"}};
  CHECK(VdevSpec(o)->second == "socket=/run/m.sock,socket-abstract=no,role=server");
  o.args["rx_queues"] = "2";  // an ethdev setting, not a devarg
  CHECK(VdevSpec(o)->second == "socket=/run/m.sock,socket-abstract=no,role=server");
  o.driver = Driver::kPcap;
  o.args = {};
  CHECK_THAT(VdevSpec(o).message(), Catch::Contains("needs rx_pcap, tx_pcap or rx_iface"));
  o.args = {{"rx_iface", "veth1"}};
  CHECK(VdevSpec(o)->second == "rx_iface=veth1");
}

TEST_CASE("a ring port stamps departures in the mbuf timestamp field, others refuse",
          "[dataplane]") {
  TestEal();
  auto pool = Mempool::Create("stamp_test_pool", 1023);
  REQUIRE(pool.ok());
  PortOptions o;
  o.name = "r1";
  o.driver = Driver::kRing;
  auto created = CreatePort(o, **pool);
  REQUIRE(created.ok());
  auto* port = dynamic_cast<EthPort*>(created->get());
  REQUIRE(port != nullptr);
  REQUIRE(port->StampDepartures().ok());
  const int field = rte_mbuf_dynfield_lookup(RTE_MBUF_DYNFIELD_TIMESTAMP_NAME, nullptr);
  const int flag = rte_mbuf_dynflag_lookup(RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME, nullptr);
  REQUIRE(field >= 0);
  REQUIRE(flag >= 0);
  PacketBatch batch;
  REQUIRE(rte_pktmbuf_alloc_bulk((*pool)->get(), batch.pkts, 4) == 0);
  batch.count = 4;
  const uint64_t before = rte_rdtsc();
  CHECK(port->Send(batch) == 4);
  const uint64_t after = rte_rdtsc();
  void* out[4];
  REQUIRE(rte_ring_dequeue_burst(port->drain_ring(), out, 4, nullptr) == 4);
  for (void* p : out) {
    auto* m = static_cast<rte_mbuf*>(p);
    CHECK((m->ol_flags & (uint64_t{1} << flag)) != 0);
    const uint64_t at = *RTE_MBUF_DYNFIELD(m, field, rte_mbuf_timestamp_t*);
    CHECK(at >= before);
    CHECK(at <= after);
    rte_pktmbuf_free(m);
  }
  o.name = "sink1";
  o.driver = Driver::kNull;
  auto sink = CreatePort(o, **pool);
  REQUIRE(sink.ok());
  CHECK_THAT(dynamic_cast<EthPort*>(sink->get())->StampDepartures().message(),
             Catch::Contains("only ring ports stamp departures"));
}

TEST_CASE("ring port: injected packets are received, sent packets are drained", "[dataplane]") {
  TestEal();
  auto pool = Mempool::Create("ring_test_pool", 1023);
  REQUIRE(pool.ok());
  PortOptions o;
  o.name = "r0";
  o.driver = Driver::kRing;
  auto created = CreatePort(o, **pool);
  REQUIRE(created.ok());
  auto* port = dynamic_cast<EthPort*>(created->get());
  REQUIRE(port != nullptr);
  CHECK(port->LinkUp());

  rte_mbuf* in[8];
  REQUIRE(rte_pktmbuf_alloc_bulk((*pool)->get(), in, 8) == 0);
  for (rte_mbuf* m : in) rte_pktmbuf_append(m, 60);
  REQUIRE(rte_ring_enqueue_burst(port->inject_ring(), reinterpret_cast<void**>(in), 8, nullptr) ==
          8);
  PacketBatch batch;
  CHECK(port->Recv(batch) == 8);
  CHECK(batch.count == 8);
  CHECK(port->Send(batch) == 8);
  CHECK(batch.count == 0);
  void* out[16];
  CHECK(rte_ring_dequeue_burst(port->drain_ring(), out, 16, nullptr) == 8);
  for (int i = 0; i < 8; ++i) rte_pktmbuf_free(static_cast<rte_mbuf*>(out[i]));
  const PortCounters c = port->Counters();
  CHECK(c.rx_packets == 8);
  CHECK(c.tx_packets == 8);
  CHECK(c.rx_bytes == 8 * 60);
  created->reset();
  CHECK((*pool)->available() == (*pool)->capacity());
}

TEST_CASE("null port sends everything, a vm port without a VM is down and idle", "[dataplane]") {
  TestEal();
  auto pool = Mempool::Create("null_test_pool", 1023);
  REQUIRE(pool.ok());
  PortOptions o;
  o.name = "sink";
  o.driver = Driver::kNull;
  auto sink = CreatePort(o, **pool);
  REQUIRE(sink.ok());
  PacketBatch batch;
  REQUIRE(rte_pktmbuf_alloc_bulk((*pool)->get(), batch.pkts, 4) == 0);
  batch.count = 4;
  CHECK((*sink)->Send(batch) == 4);

  o.name = "vm1.eth0";
  o.driver = Driver::kVm;
  auto vm = CreatePort(o, **pool);
  REQUIRE(vm.ok());
  CHECK_FALSE((*vm)->LinkUp());
  CHECK((*vm)->Recv(batch) == 0);
}

TEST_CASE("a vm port's counters are read while its lcore counts", "[dataplane]") {
  TestEal();
  auto pool = Mempool::Create("vm_count_pool", 1023);
  REQUIRE(pool.ok());
  VmPort port("vm0.eth0", (*pool)->get());
  ChattyGuest guest;
  port.Attach(&guest);
  constexpr int kPolls = 20000;
  std::atomic<bool> done{false};
  std::thread lcore([&] {
    for (int i = 0; i < kPolls; ++i) {
      PacketBatch batch;
      port.Recv(batch);
      port.Send(batch);
    }
    done.store(true, std::memory_order_release);
  });
  const bool grow = CountsOnlyGrow(port, done);
  lcore.join();
  CHECK(grow);
  const PortCounters c = port.Counters();
  CHECK(c.rx_packets == kPolls * ChattyGuest::kPerPoll);
  CHECK(c.rx_bytes == kPolls * ChattyGuest::kPerPoll * 100);
  CHECK(c.tx_packets == c.rx_packets);
  CHECK(c.tx_bytes == c.rx_bytes);
  port.Detach();
  CHECK((*pool)->available() == (*pool)->capacity());
}

TEST_CASE("a vm port hands the switch its announcements, ready guest or not, and holds eight",
          "[dataplane]") {
  TestEal();
  auto pool = Mempool::Create("vm_announce_pool", 1023);
  REQUIRE(pool.ok());
  VmPort port("vm2.eth0", (*pool)->get());
  std::vector<uint8_t> rarp(60, 0xff);
  rarp[12] = 0x80;
  rarp[13] = 0x35;
  for (size_t i = 0; i < VmPort::kMaxAnnouncements; ++i) REQUIRE(port.Announce(rarp).ok());
  auto refused = port.Announce(rarp);
  REQUIRE_FALSE(refused.ok());
  CHECK_THAT(refused.message(), Catch::Contains("announcements wait already"));
  CHECK_FALSE(port.Announce(std::vector<uint8_t>(1u << 16, 0)).ok());  // larger than an mbuf

  PacketBatch batch;  // no guest attached: the announcements still come out
  REQUIRE(port.Recv(batch) == VmPort::kMaxAnnouncements);
  REQUIRE(batch.count == VmPort::kMaxAnnouncements);
  CHECK(rte_pktmbuf_pkt_len(batch.pkts[0]) == 60);
  CHECK(rte_pktmbuf_mtod(batch.pkts[0], const uint8_t*)[13] == 0x35);
  CHECK(port.Counters().rx_packets == VmPort::kMaxAnnouncements);
  CHECK(port.Counters().rx_bytes == VmPort::kMaxAnnouncements * 60);
  rte_pktmbuf_free_bulk(batch.pkts, batch.count);
  PacketBatch empty;
  CHECK(port.Recv(empty) == 0);
  CHECK((*pool)->available() == (*pool)->capacity());
}

TEST_CASE("a ring port's counters are read while its lcore counts", "[dataplane]") {
  TestEal();
  auto pool = Mempool::Create("ring_count_pool", 1023);
  REQUIRE(pool.ok());
  PortOptions o;
  o.name = "rc";
  o.driver = Driver::kRing;
  auto created = CreatePort(o, **pool);
  REQUIRE(created.ok());
  auto& port = dynamic_cast<EthPort&>(**created);
  constexpr int kPackets = 20000;
  std::atomic<bool> done{false};
  std::thread lcore([&] {  // forwards what arrives until every packet went through
    int forwarded = 0;
    PacketBatch batch;  // what the port did not take goes first next time
    while (forwarded < kPackets) {
      port.Recv(batch);
      forwarded += port.Send(batch);
    }
    done.store(true, std::memory_order_release);
  });
  std::thread peer([&] {  // the far ends: injects and drains
    int injected = 0;
    while (!done.load(std::memory_order_acquire)) {
      rte_mbuf* m = injected < kPackets ? rte_pktmbuf_alloc((*pool)->get()) : nullptr;
      if (m != nullptr) {
        rte_pktmbuf_append(m, 60);
        if (rte_ring_enqueue(port.inject_ring(), m) == 0) {
          ++injected;
        } else {
          rte_pktmbuf_free(m);
        }
      }
      void* out;
      while (rte_ring_dequeue(port.drain_ring(), &out) == 0) {
        rte_pktmbuf_free(static_cast<rte_mbuf*>(out));
      }
    }
  });
  const bool grow = CountsOnlyGrow(port, done);
  lcore.join();
  peer.join();
  CHECK(grow);
  const PortCounters c = port.Counters();
  CHECK(c.rx_packets == kPackets);
  CHECK(c.rx_bytes == kPackets * 60);
  CHECK(c.tx_packets == kPackets);
  CHECK(c.tx_bytes == kPackets * 60);
  created->reset();
  CHECK((*pool)->available() == (*pool)->capacity());
}

TEST_CASE("a port with bad driver arguments fails with the driver's complaint", "[dataplane]") {
  TestEal();
  auto pool = Mempool::Create("bad_test_pool", 1023);
  REQUIRE(pool.ok());
  PortOptions o;
  o.name = "nosuch";
  o.driver = Driver::kAfPacket;
  o.args = {{"iface", "qvnoif0"}};
  auto port = CreatePort(o, **pool);
  REQUIRE_FALSE(port.ok());
  CHECK_THAT(port.message(), Catch::Contains("port 'nosuch': the af_packet driver refused"));

  for (const char* bad : {"0", "17", "two", ""}) {
    PortOptions m;
    m.name = "mq";
    m.driver = Driver::kMemif;
    m.args = {{"socket", "/tmp/qv-mq-test.sock"}, {"role", "server"}, {"rx_queues", bad}};
    auto mq = CreatePort(m, **pool);
    REQUIRE_FALSE(mq.ok());
    CHECK(mq.message() ==
          fmt::format("port 'mq': rx_queues '{}' must be a number from 1 to 16", bad));
  }
}

TEST_CASE("a memif port with several receive queues starts and polls them", "[dataplane]") {
  TestEal();
  auto pool = Mempool::Create("mq_test_pool", 1023);
  REQUIRE(pool.ok());
  PortOptions o;
  o.name = "mq";
  o.driver = Driver::kMemif;
  o.args = {{"socket", "/tmp/qv-mq-test-" + std::to_string(getpid()) + ".sock"},
            {"role", "server"},
            {"rx_queues", "3"}};
  auto port = CreatePort(o, **pool);
  INFO(port.message());
  REQUIRE(port.ok());
  rte_eth_dev_info info{};
  REQUIRE(rte_eth_dev_info_get(static_cast<EthPort&>(**port).port_id(), &info) == 0);
  CHECK(info.nb_rx_queues == 3);
  CHECK(info.nb_tx_queues == 1);
  PacketBatch b;
  CHECK((*port)->Recv(b) == 0);  // no peer yet: every queue polled, nothing there
}

}  // namespace qosvisor::dataplane
