// The switching pipeline end to end over ring ports: flooding and learning, VLAN access/trunk,
// flow actions, a scheduled uplink, live rule replacement, and every mbuf returned at the end.
#include "vswitch/switch.h"

#include <rte_bus_vdev.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <thread>

#include "common/tsan.h"
#include "common/tsc.h"
#include "dataplane/mempool.h"
#include "frames.h"
#include "tests/unit/test_eal.h"

namespace qosvisor::vswitch {
namespace {

using testing::Frame;

struct Rig {
  std::unique_ptr<dataplane::Mempool> pool;
  std::vector<std::unique_ptr<dataplane::Port>> ports;
  std::unique_ptr<Switch> sw;

  explicit Rig(int n_ports) {
    qosvisor::testing::TestEal();
    static int rig_id = 0;
    ++rig_id;
    auto p = dataplane::Mempool::Create("switch_test_" + std::to_string(rig_id), 4095);
    REQUIRE(p.ok());
    pool = std::move(p).value();
    for (int i = 0; i < n_ports; ++i) {
      dataplane::PortOptions o;
      o.name = "r" + std::to_string(rig_id) + "p" + std::to_string(i);
      auto port = dataplane::CreatePort(o, *pool);
      REQUIRE(port.ok());
      ports.push_back(std::move(port).value());
    }
  }
  ~Rig() {
    sw.reset();
    ports.clear();
    CHECK(pool->available() == pool->capacity());  // nothing leaked
  }
  void Build(SwitchSpec spec) {
    for (auto& p : ports) spec.ports.push_back(p.get());
    auto s = Switch::Create(spec, pool->get());
    INFO(s.message());
    REQUIRE(s.ok());
    sw = std::move(s).value();
  }
  dataplane::EthPort& Eth(int i) { return *dynamic_cast<dataplane::EthPort*>(ports[i].get()); }
  void Inject(int port, const Frame& f) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool->get());
    REQUIRE(m != nullptr);
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(f.bytes.size())), f.bytes.data(),
                f.bytes.size());
    TsanPacketsOut();
    REQUIRE(rte_ring_enqueue(Eth(port).inject_ring(), m) == 0);
  }
  std::vector<std::vector<uint8_t>> Drain(int port) {
    std::vector<std::vector<uint8_t>> out;
    void* m;
    while (rte_ring_dequeue(Eth(port).drain_ring(), &m) == 0) {
      TsanPacketsIn();
      auto* mb = static_cast<rte_mbuf*>(m);
      const auto* d = rte_pktmbuf_mtod(mb, const uint8_t*);
      out.emplace_back(d, d + rte_pktmbuf_data_len(mb));
      rte_pktmbuf_free(mb);
    }
    return out;
  }
  // What the switch wrote in the metadata of each frame sent on `port` (frames are freed).
  std::vector<PacketMeta> DrainMeta(int port) {
    std::vector<PacketMeta> out;
    void* m;
    while (rte_ring_dequeue(Eth(port).drain_ring(), &m) == 0) {
      TsanPacketsIn();
      out.push_back(*Meta(static_cast<rte_mbuf*>(m)));
      rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
    }
    return out;
  }
  void Poll(int times = 1) {
    for (int i = 0; i < times; ++i) sw->Poll(ReadTsc());
  }
  // Statistics read directly (no thread polls).
  Switch::Snapshot Snapshot() {
    auto snap = sw->TakeSnapshot(false);
    INFO(snap.message());
    REQUIRE(snap.ok());
    return std::move(snap).value();
  }
};

Frame WithMacs(Frame f, uint8_t dst_last, uint8_t src_last, bool broadcast = false) {
  for (int i = 0; i < 6; ++i) f.bytes[i] = broadcast ? 0xff : (i == 0 ? 0x02 : 0);
  if (!broadcast) f.bytes[5] = dst_last;
  f.bytes[11] = src_last;
  return f;
}

BridgeSpec PlainBridge(int n) {
  BridgeSpec b;
  b.name = "br0";
  for (int i = 0; i < n; ++i) b.members.push_back({static_cast<uint16_t>(i)});
  return b;
}

}  // namespace

TEST_CASE("switch: unknown destinations flood, learned ones do not, no echo", "[switch]") {
  Rig rig(3);
  SwitchSpec spec;
  spec.bridges = {PlainBridge(3)};
  rig.Build(spec);
  rig.Inject(0, WithMacs(testing::Udp4(1, 2), 0, 0xa, /*broadcast=*/true));
  rig.Poll();
  CHECK(rig.Drain(0).empty());
  CHECK(rig.Drain(1).size() == 1);
  CHECK(rig.Drain(2).size() == 1);

  rig.Inject(1, WithMacs(testing::Udp4(1, 2), 0xa, 0xb));  // to A, learned on port 0
  rig.Poll();
  CHECK(rig.Drain(0).size() == 1);
  CHECK(rig.Drain(2).empty());
  auto snap = rig.Snapshot();
  CHECK(snap.learned_macs[0] == 2);
  CHECK(snap.counters.flooded == 1);
  CHECK(snap.counters.rx_packets == 2);
}

// The UDP destination port of a frame Udp4 built: which frame of a test it is.
uint16_t Seq(const std::vector<uint8_t>& f) {
  const size_t at = f[12] == 0x81 && f[13] == 0 ? 40 : 36;  // behind a VLAN tag or not
  return static_cast<uint16_t>(f[at] << 8 | f[at + 1]);
}
std::vector<uint16_t> Seqs(const std::vector<std::vector<uint8_t>>& frames) {
  std::vector<uint16_t> seqs;
  for (const auto& f : frames) seqs.push_back(Seq(f));
  return seqs;
}

TEST_CASE("switch: one burst mixing destinations, floods and bad frames keeps each port's order",
          "[switch]") {
  Rig rig(3);
  SwitchSpec spec;
  spec.bridges = {PlainBridge(3)};
  rig.Build(spec);
  rig.Inject(1, WithMacs(testing::Udp4(1, 900), 0xff, 0xb, true));  // B on port 1
  rig.Inject(2, WithMacs(testing::Udp4(1, 901), 0xff, 0xc, true));  // C on port 2
  rig.Poll();
  rig.Drain(0);
  rig.Drain(1);
  rig.Drain(2);

  Frame bad = WithMacs(testing::Udp4(1, 6), 0xb, 0xa);
  bad.bytes[14] = 0x44;  // IHL below 5
  rig.Inject(0, WithMacs(testing::Udp4(1, 1), 0xb, 0xa));
  rig.Inject(0, WithMacs(testing::Udp4(1, 2), 0xb, 0xa));
  rig.Inject(0, WithMacs(testing::Udp4(1, 3), 0xc, 0xa));
  rig.Inject(0, WithMacs(testing::Udp4(1, 4), 0xb, 0xa));
  rig.Inject(0, WithMacs(testing::Udp4(1, 5), 0xd, 0xa));  // unknown: both other ports
  rig.Inject(0, bad);
  rig.Inject(0, WithMacs(testing::Udp4(1, 7), 0, 0xa, true));     // broadcast
  rig.Inject(0, WithMacs(testing::Udp4(1, 8, 18, 5), 0xb, 0xa));  // B is not known on VLAN 5
  rig.Inject(0, WithMacs(testing::Udp4(1, 9), 0xb, 0xa));
  rig.Poll();
  CHECK(Seqs(rig.Drain(1)) == std::vector<uint16_t>{1, 2, 4, 5, 7, 8, 9});
  CHECK(Seqs(rig.Drain(2)) == std::vector<uint16_t>{3, 5, 7, 8});
  CHECK(rig.Drain(0).empty());
  const auto snap = rig.Snapshot();
  CHECK(snap.counters.malformed == 1);
  CHECK(snap.counters.flooded == 2 + 3);  // the two learning broadcasts, 5, 7 and 8
  CHECK(snap.learned_macs[0] == 4);       // A, B, C on VLAN 0 and A on VLAN 5
}

TEST_CASE("switch: a flood that reaches one port, and a port-to-port rule, forward whole bursts",
          "[switch]") {
  Rig rig(2);
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(2);
  b.flows = {{"priority=1,in_port=" + rig.ports[1]->name() + ",actions=output:1", 0}};
  spec.bridges = {b};
  rig.Build(spec);
  Frame truncated = WithMacs(testing::Udp4(1, 3), 0xb, 0xa);
  truncated.bytes.resize(30);
  for (uint16_t seq : {1, 2}) rig.Inject(0, WithMacs(testing::Udp4(1, seq), 0xb, 0xa));
  rig.Inject(0, truncated);
  rig.Inject(0, WithMacs(testing::Udp4(1, 4, 18, 7), 0xb, 0xa));  // tagged: kept as it is
  rig.Inject(1, WithMacs(testing::Udp4(1, 11), 0xa, 0xb));
  rig.Inject(1, truncated);
  rig.Inject(1, WithMacs(testing::Udp4(1, 12), 0xff, 0xb, true));
  rig.Poll();
  const auto to_b = rig.Drain(1);
  CHECK(Seqs(to_b) == std::vector<uint16_t>{1, 2, 4});
  REQUIRE(to_b.size() == 3);
  CHECK(to_b[2] == WithMacs(testing::Udp4(1, 4, 18, 7), 0xb, 0xa).bytes);
  CHECK(Seqs(rig.Drain(0)) == std::vector<uint16_t>{11, 12});
  const auto snap = rig.Snapshot();
  CHECK(snap.counters.truncated == 2);
  CHECK(snap.counters.flooded == 3);  // port 0's frames to the unknown B; the rule floods nothing
  CHECK(snap.learned_macs[0] == 2);   // A on VLAN 0 and 7; port 1's frames learn nothing
}

TEST_CASE("switch: priority tags and 802.1ad tags leave plain members alike on every path",
          "[switch]") {
  // A frame between two members without VLAN settings keeps a real tag, of either type, and
  // loses a priority tag (VLAN 0) -- whether the burst goes through at once (known destination,
  // a port-to-port rule) or frame by frame (a flood to two ports).
  Rig rig(3);
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(3);
  b.flows = {{"priority=1,in_port=" + rig.ports[2]->name() + ",actions=output:2", 0}};
  spec.bridges = {b};
  rig.Build(spec);
  rig.Inject(1, WithMacs(testing::Udp4(1, 900), 0xff, 0xb, true));  // B on port 1
  rig.Poll();
  rig.Drain(0);
  rig.Drain(2);
  const Frame untagged = WithMacs(testing::Udp4(1, 7), 0xb, 0xa);
  const Frame priority = WithMacs(testing::Udp4(1, 7, 18, 0), 0xb, 0xa);
  Frame ad = WithMacs(testing::Udp4(1, 7, 18, 5), 0xb, 0xa);
  ad.bytes[12] = 0x88;
  ad.bytes[13] = 0xa8;
  for (int in : {0, 2}) {  // NORMAL (port 0), then the rule (port 2)
    INFO("from port " << in);
    rig.Inject(in, priority);
    rig.Inject(in, ad);
    rig.Poll();
    const auto out = rig.Drain(1);
    REQUIRE(out.size() == 2);
    CHECK(out[0] == untagged.bytes);
    CHECK(out[1] == ad.bytes);
    // B is not known on VLAN 5: from port 0 that frame is flooded, frame by frame, with a copy.
    const auto flooded = rig.Drain(2);
    CHECK(flooded.size() == (in == 0 ? 1u : 0u));
    if (!flooded.empty()) CHECK(flooded[0] == ad.bytes);
  }
  CHECK(rig.Snapshot().counters.vlan_dropped == 0);
}

TEST_CASE("switch: a port named twice in a rule's outputs gets two copies", "[switch]") {
  Rig rig(2);
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(2);
  b.flows = {{"priority=1,in_port=" + rig.ports[0]->name() + ",actions=output:2,output:2", 0}};
  spec.bridges = {b};
  rig.Build(spec);
  rig.Inject(0, WithMacs(testing::Udp4(1, 7), 0xb, 0xa));
  rig.Poll();
  CHECK(rig.Drain(1).size() == 2);
}

TEST_CASE("switch: VLAN access and trunk ports", "[switch]") {
  Rig rig(3);
  SwitchSpec spec;
  BridgeSpec b;
  b.name = "br0";
  b.members = {{0, VlanMode::kAccess, 10, {}},
               {1, VlanMode::kTrunk, 0, {10, 20}},
               {2, VlanMode::kAccess, 20, {}}};
  spec.bridges = {b};
  rig.Build(spec);

  rig.Inject(0, WithMacs(testing::Udp4(1, 2), 0, 0xa, true));  // untagged into VLAN 10
  rig.Poll();
  auto trunk = rig.Drain(1);
  REQUIRE(trunk.size() == 1);
  CHECK(trunk[0][12] == 0x81);
  CHECK(trunk[0][13] == 0x00);
  CHECK(((trunk[0][14] << 8 | trunk[0][15]) & 0xfff) == 10);
  CHECK(rig.Drain(2).empty());  // VLAN 20 does not see VLAN 10

  rig.Inject(1, WithMacs(testing::Udp4(1, 2, 18, 20), 0, 0xb, true));  // tagged 20 from trunk
  rig.Poll();
  auto access20 = rig.Drain(2);
  REQUIRE(access20.size() == 1);
  CHECK(access20[0][12] == 0x08);  // the tag is gone on the access port
  CHECK(access20[0].size() == testing::Udp4(1, 2).bytes.size());
  CHECK(rig.Drain(0).empty());

  rig.Inject(1, WithMacs(testing::Udp4(1, 2, 18, 30), 0, 0xb, true));  // VLAN 30 not allowed
  rig.Inject(0, WithMacs(testing::Udp4(1, 2, 18, 10), 0, 0xa, true));  // tagged on access port
  rig.Inject(1, WithMacs(testing::Udp4(1, 2), 0, 0xb, true));          // untagged on trunk
  rig.Poll();
  CHECK(rig.Snapshot().counters.vlan_dropped == 3);
}

TEST_CASE("switch: flow actions output, drop and mod_vlan_vid, rules replaced live", "[switch]") {
  Rig rig(3);
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(3);
  const std::string p2 = rig.ports[2]->name();
  b.flows = {{"priority=100,udp,tp_dst=7,actions=drop", 0},
             {"priority=100,udp,tp_dst=8,actions=mod_vlan_vid:5,output:" + p2, 1}};
  spec.bridges = {b};
  rig.Build(spec);
  rig.Inject(0, WithMacs(testing::Udp4(1, 7), 0, 0xa, true));
  rig.Inject(0, WithMacs(testing::Udp4(1, 8), 0, 0xa, true));
  rig.Poll();
  CHECK(rig.Drain(1).empty());
  auto out = rig.Drain(2);
  REQUIRE(out.size() == 1);
  CHECK(((out[0][14] << 8 | out[0][15]) & 0xfff) == 5);
  CHECK(rig.Snapshot().counters.flow_dropped == 1);

  // Runs of one flow inside a burst share the first frame's answer, and count as cache hits.
  for (uint16_t port : {8, 8, 7, 7, 8})
    rig.Inject(0, WithMacs(testing::Udp4(1, port), 0, 0xa, true));
  rig.Poll();
  CHECK(Seqs(rig.Drain(2)) == std::vector<uint16_t>{8, 8, 8});
  CHECK(rig.Drain(1).empty());
  auto counters = rig.Snapshot().counters;
  CHECK(counters.flow_dropped == 1 + 2);
  CHECK(counters.flow_cache_hits + counters.flow_cache_misses == 2 + 5);
  CHECK(counters.flow_cache_misses == 2);  // both flows were cached by the first poll

  REQUIRE(
      rig.sw->ReplaceFlows("br0", {{"priority=100,udp,tp_dst=7,actions=output:" + p2, 0}}).ok());
  rig.Inject(0, WithMacs(testing::Udp4(1, 7), 0, 0xa, true));
  rig.Poll();
  CHECK(rig.Drain(2).size() == 1);  // the cached drop entry did not survive the new table
  CHECK_THAT(rig.sw->ReplaceFlows("br9", {}).message(), Catch::Contains("no bridge named 'br9'"));
  CHECK_THAT(rig.sw->ReplaceFlows("br0", {{"priority=1,actions=learn(x)", 0}}).message(),
             Catch::Contains("bridge 'br0'"));
}

TEST_CASE("switch: frames of one flow share a verdict, and runs keep each port's order",
          "[switch]") {
  Rig rig(4);
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(4);
  const std::string p1 = rig.ports[1]->name(), p2 = rig.ports[2]->name();
  b.flows = {{"priority=100,udp,tp_dst=1,actions=output:" + p1, 0},
             {"priority=100,udp,tp_dst=2,actions=output:" + p2, 1},
             {"priority=100,udp,tp_dst=3,actions=output:" + p1 + ",output:" + p2, 2},
             {"priority=100,udp,tp_dst=4,actions=mod_vlan_vid:9,output:" + p2, 3},
             {"priority=100,udp,tp_dst=5,actions=FLOOD", 4}};
  spec.bridges = {b};
  rig.Build(spec);
  // Frames of a flow differ only in a payload byte, which no key covers: each run of equal
  // dst ports repeats its first frame's key.
  const uint16_t dsts[] = {1, 1, 1, 2, 2, 1, 3, 3, 4, 4, 1, 5, 5, 2};
  for (uint8_t i = 0; i < std::size(dsts); ++i) {
    Frame f = WithMacs(testing::Udp4(9, dsts[i]), 0xb, 0xa);
    f.bytes.back() = i;
    rig.Inject(0, f);
  }
  rig.Poll();
  auto order = [](const std::vector<std::vector<uint8_t>>& frames) {
    std::vector<int> seq;
    for (const auto& f : frames) seq.push_back(f.back());
    return seq;
  };
  CHECK(order(rig.Drain(1)) == std::vector<int>{0, 1, 2, 5, 6, 7, 10, 11, 12});
  const auto to_p2 = rig.Drain(2);
  CHECK(order(to_p2) == std::vector<int>{3, 4, 6, 7, 8, 9, 11, 12, 13});
  for (const auto& f : to_p2) {
    const bool tagged = f[12] == 0x81 && f[13] == 0;
    CHECK(tagged == (f.back() == 8 || f.back() == 9));
  }
  CHECK(order(rig.Drain(3)) == std::vector<int>{11, 12});
  const auto counters = rig.Snapshot().counters;
  CHECK(counters.flooded == 2);  // each frame of the FLOOD run
  CHECK(counters.flow_cache_hits + counters.flow_cache_misses == std::size(dsts));
  CHECK(counters.flow_cache_misses == 5);  // one per flow; the repeats reuse the verdict
}

TEST_CASE("switch: a second NORMAL in the actions keeps every frame's own decision", "[switch]") {
  // The MAC table holds 8 entries, all in one probe window. The first frame's second NORMAL
  // learns its source on VLAN 20 and evicts the stalest entry: the destination the first NORMAL
  // found. The second frame, with the same key, must then see the destination as unknown.
  Rig rig(4);
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(4);
  b.mac_table_size = 8;
  b.flows = {{"priority=100,udp,tp_dst=77,actions=NORMAL,mod_vlan_vid:20,NORMAL", 0}};
  spec.bridges = {b};
  rig.Build(spec);
  rig.Inject(1, WithMacs(testing::Udp4(1, 1), 0, 0xd, true));  // D on port 1, learnt first
  rig.Poll();
  for (uint8_t mac = 0x11; mac < 0x17; ++mac) {  // six more: the table then holds seven
    rig.Inject(2, WithMacs(testing::Udp4(1, 1), 0, mac, true));
  }
  rig.Poll();
  for (int port = 0; port < 4; ++port) rig.Drain(port);
  const uint64_t flooded_before = rig.Snapshot().counters.flooded;
  for (int i = 0; i < 2; ++i) rig.Inject(0, WithMacs(testing::Udp4(9, 77), 0xd, 0xa));
  rig.Poll();
  // First frame: port 1 (D, VLAN 0) and a flood on VLAN 20 (D evicted by then); second frame:
  // two floods, as D is gone from both VLANs.
  CHECK(rig.Drain(1).size() == 2 + 2);
  CHECK(rig.Drain(2).size() == 1 + 2);
  CHECK(rig.Drain(3).size() == 1 + 2);
  CHECK(rig.Snapshot().counters.flooded - flooded_before == 1 + 2);
}

TEST_CASE("switch: an uplink schedules by class (set_queue) and accounts for every packet",
          "[switch]") {
  Rig rig(2);
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(2);
  b.flows = {{"priority=100,udp,tp_dst=5000,actions=set_queue:1,NORMAL", 0},
             {"priority=100,udp,tp_dst=6000,actions=set_queue:2,NORMAL", 1}};
  spec.bridges = {b};
  spec.classes = {{1, MessageMode::kDatagram, 0}, {2, MessageMode::kDatagram, 0}};
  UplinkSpec up;
  up.port = 1;
  up.scheduler.name = "uplink";
  up.scheduler.rate_bps = 10'000'000'000ull;
  up.scheduler.pacing_bps = 0;
  up.scheduler.tenant_share = sched::Share::kPriority;
  up.scheduler.class_share_default = sched::Share::kPriority;
  up.scheduler.classes = {{.name = "hi", .policy = sched::Policy::kFifo, .priority = 0},
                          {.name = "lo", .policy = sched::Policy::kFifo, .priority = 1}};
  up.class_queues = {1, 2};
  up.default_class = 1;
  spec.uplinks = {up};
  rig.Build(spec);
  // Low-priority packets arrive first, in the same burst as high-priority ones.
  for (int i = 0; i < 5; ++i) rig.Inject(0, WithMacs(testing::Udp4(1, 6000), 0, 0xa, true));
  for (int i = 0; i < 5; ++i) rig.Inject(0, WithMacs(testing::Udp4(1, 5000), 0, 0xa, true));
  rig.Poll();
  auto out = rig.Drain(1);
  REQUIRE(out.size() == 10);
  for (int i = 0; i < 5; ++i) CHECK((out[i][36] << 8 | out[i][37]) == 5000);
  for (int i = 5; i < 10; ++i) CHECK((out[i][36] << 8 | out[i][37]) == 6000);
  auto snap = rig.Snapshot();
  REQUIRE(snap.uplinks.size() == 1);
  const auto& hi = snap.uplinks[0].classes[0];
  const auto& lo = snap.uplinks[0].classes[1];
  CHECK(hi.enqueued_packets == 5);
  CHECK(lo.enqueued_packets == 5);
  CHECK(hi.dequeued_packets + lo.dequeued_packets == 10);
  CHECK(snap.uplinks[0].total.enqueued_packets == snap.uplinks[0].total.dequeued_packets +
                                                      snap.uplinks[0].total.dropped_packets() +
                                                      snap.uplinks[0].total.queued_packets);
}

namespace {

// Homa from port 0 to uplink port 1 (queue 1: class "rpc" under `policy`), paced at
// `pacing_bps` (0: not paced).
SwitchSpec HomaUplinkSpec(sched::Policy policy, uint64_t pacing_bps) {
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(2);
  b.flows = {{"priority=100,ip,nw_proto=146,actions=set_queue:1,NORMAL", 0}};
  spec.bridges = {b};
  spec.classes = {{1, MessageMode::kHoma, 0}};
  UplinkSpec up;
  up.port = 1;
  up.scheduler.name = "uplink";
  up.scheduler.rate_bps = 10'000'000'000ull;
  up.scheduler.pacing_bps = pacing_bps;
  up.scheduler.classes = {{.name = "rpc", .policy = policy}};
  up.class_queues = {1};
  spec.uplinks = {up};
  return spec;
}

}  // namespace

TEST_CASE("switch: a Homa message's last packet is the one that ends it, not the one before",
          "[switch]") {
  Rig rig(2);
  rig.Build(HomaUplinkSpec(sched::Policy::kSrpt, 0));
  // 2810 bytes as 1400 + 1400 + 10: the second segment ends within a wire length's 24 extra
  // bytes of the message's end.
  rig.Inject(0, WithMacs(testing::Homa4(7, 2810, 0, 1400), 0, 0xa, true));
  rig.Inject(0, WithMacs(testing::Homa4(7, 2810, 1400, 1400), 0, 0xa, true));
  rig.Inject(0, WithMacs(testing::Homa4(7, 2810, 2800, 10), 0, 0xa, true));
  rig.Poll(3);
  const std::vector<PacketMeta> out = rig.DrainMeta(1);
  REQUIRE(out.size() == 3);
  CHECK(out[0].message_id == out[2].message_id);
  CHECK((out[0].flags & kMetaLastOfMessage) == 0);
  CHECK((out[1].flags & kMetaLastOfMessage) == 0);
  CHECK((out[2].flags & kMetaLastOfMessage) != 0);
  CHECK(rig.Snapshot().uplinks[0].live_messages == 0);
}

TEST_CASE("switch: short TCP bursts give their message slots back once their flows go quiet",
          "[switch]") {
  // 48 flows send a burst of one segment every 3 ms through a tcp-gap class (idle 1 ms) whose
  // scheduler has room for 128 messages: 768 bursts in all. Each burst's slot must go back
  // about 2 ms after it, or the table overflows in the third round and the rest fall back to
  // the class's default FIFO.
  Rig rig(2);
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(2);
  b.flows = {{"priority=100,tcp,actions=set_queue:1,NORMAL", 0}};
  spec.bridges = {b};
  spec.classes = {{1, MessageMode::kTcpGap, 1'000'000}};
  UplinkSpec up;
  up.port = 1;
  up.scheduler.name = "uplink";
  up.scheduler.rate_bps = 10'000'000'000ull;
  up.scheduler.max_messages = 128;
  up.scheduler.classes = {
      {.name = "bulk", .policy = sched::Policy::kLas, .message_idle_ns = 1'000'000}};
  up.class_queues = {1};
  spec.uplinks = {up};
  rig.Build(spec);
  const uint64_t ms = TscHz() / 1000;
  const uint64_t t0 = ReadTsc();
  size_t sent = 0;
  for (int round = 0; round < 16; ++round) {
    for (uint16_t flow = 0; flow < 48; ++flow) {
      const uint32_t seq = static_cast<uint32_t>(round) * 100;
      rig.Inject(0, WithMacs(testing::Tcp4(static_cast<uint16_t>(1000 + flow), 80, seq, 0x18), 0,
                             0xa, true));
    }
    for (int poll = 0; poll < 4; ++poll) rig.sw->Poll(t0 + static_cast<uint64_t>(round) * 3 * ms);
    sent += rig.Drain(1).size();
  }
  CHECK(sent == 16 * 48);
  const sched::SchedulerStats st = rig.Snapshot().uplinks[0];
  CHECK(st.total.table_full_fallback == 0);
  CHECK(st.messages_reclaimed_idle == 15 * 48);  // all but the last round's, 2 ms too young
  CHECK(st.live_messages == 48);
}

namespace {

// Bridge gen0/gen1/up0 where everything from gen0 goes to uplink up0 (FIFO, no shaping).
SwitchSpec TwoWorkerSpec() {
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(3);
  b.flows = {{"priority=10,in_port=1,actions=set_queue:1,output:3", 0}};
  spec.bridges = {b};
  UplinkSpec up;
  up.port = 2;
  up.scheduler.name = "up0";
  up.scheduler.rate_bps = 100'000'000'000ull;
  up.scheduler.pacing_bps = 0;
  up.scheduler.classes = {{.name = "all", .policy = sched::Policy::kFifo}};
  up.class_queues = {1};
  spec.uplinks = {up};
  spec.workers = 2;
  return spec;
}

}  // namespace

TEST_CASE("switch: with two workers the uplink runs on the second, fed through a ring",
          "[switch]") {
  Rig rig(3);
  rig.Build(TwoWorkerSpec());
  REQUIRE(rig.sw->workers() == 2);
  for (int i = 0; i < 40; ++i) rig.Inject(0, testing::Udp4(static_cast<uint16_t>(i), 9));
  // The bridge's worker (a burst of 32 per port per poll): classified, handed off, not sent.
  for (int i = 0; i < 2; ++i) rig.sw->Poll(0, ReadTsc());
  CHECK(rig.Drain(2).empty());
  // The uplink's worker schedules and sends, in arrival order.
  for (int i = 0; i < 2; ++i) rig.sw->Poll(1, ReadTsc());
  auto out = rig.Drain(2);
  REQUIRE(out.size() == 40);
  for (int i = 0; i < 40; ++i) CHECK((out[i][34] << 8 | out[i][35]) == i);
  auto snap = rig.Snapshot();
  CHECK(snap.counters.rx_packets == 40);
  CHECK(snap.counters.handoff_dropped == 0);
  CHECK(snap.uplinks[0].total.enqueued_packets == 40);
  // Packets still in the ring when the switch goes away are returned to the pool (~Rig).
  for (int i = 0; i < 10; ++i) rig.Inject(0, testing::Udp4(1, 9));
  rig.sw->Poll(0, ReadTsc());
}

TEST_CASE("switch: a full hand-off ring drops and counts what does not fit", "[switch]") {
  Rig rig(3);
  SwitchSpec spec = TwoWorkerSpec();
  spec.handoff_ring_size = 64;  // holds 63
  rig.Build(spec);
  for (int i = 0; i < 100; ++i) rig.Inject(0, testing::Udp4(static_cast<uint16_t>(i), 9));
  for (int i = 0; i < 4; ++i) rig.sw->Poll(0, ReadTsc());
  for (int i = 0; i < 4; ++i) rig.sw->Poll(1, ReadTsc());
  const auto out = rig.Drain(2);
  CHECK(out.size() == 63);
  CHECK((out.back()[34] << 8 | out.back()[35]) == 62);  // the first ones got through
  CHECK(rig.Snapshot().counters.handoff_dropped == 37);
}

TEST_CASE("switch: two workers on two threads deliver every packet exactly once", "[switch]") {
  Rig rig(3);
  SwitchSpec spec = TwoWorkerSpec();
  spec.handoff_ring_size = 64;  // small, so that the ring fills and drains many times
  rig.Build(spec);
  std::atomic<bool> stop{false};
  auto loop = [&](uint16_t w) {
    while (!stop.load(std::memory_order_relaxed)) rig.sw->Poll(w, ReadTsc());
  };
  std::thread bridge_worker(loop, 0), uplink_worker(loop, 1);
  constexpr int kPackets = 3000;
  std::vector<int> seen(kPackets, 0);
  int received = 0;
  const uint64_t deadline = ReadTsc() + TscHz() * 20;
  for (int sent = 0; received < kPackets && ReadTsc() < deadline;) {
    // Fewer in flight than the hand-off ring holds: a full ring would drop (and count) them.
    while (sent < kPackets && sent - received < 48) {
      rig.Inject(0, testing::Udp4(static_cast<uint16_t>(sent), 9));
      ++sent;
    }
    for (const auto& f : rig.Drain(2)) {
      ++seen[f[34] << 8 | f[35]];
      ++received;
    }
  }
  // Served by both running workers (a generous timeout: this machine may be busy).
  const auto taken = rig.sw->TakeSnapshot(true, std::chrono::seconds(10));
  stop = true;
  bridge_worker.join();
  uplink_worker.join();
  INFO(taken.message());
  REQUIRE(taken.ok());
  const Switch::Snapshot& snap = *taken;
  CHECK(received == kPackets);
  CHECK(std::count(seen.begin(), seen.end(), 1) == kPackets);
  CHECK(snap.counters.rx_packets == kPackets);
  CHECK(snap.counters.handoff_dropped == 0);
  CHECK(snap.uplinks[0].total.dequeued_packets == kPackets);
}

TEST_CASE("switch: snapshots taken while a worker polls count every packet once", "[switch]") {
  Rig rig(2);
  SwitchSpec spec;
  spec.bridges = {PlainBridge(2)};
  rig.Build(spec);
  std::atomic<bool> stop{false};
  std::thread lcore([&] {
    while (!stop.load(std::memory_order_relaxed)) rig.sw->Poll(0, ReadTsc());
  });
  uint64_t last = 0;
  bool never_backwards = true;
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 10; ++i) rig.Inject(0, WithMacs(testing::Udp4(1, 2), 0, 0xa, true));
    auto snap = rig.sw->TakeSnapshot(true, std::chrono::seconds(10));
    INFO(snap.message());
    REQUIRE(snap.ok());
    never_backwards = never_backwards && snap->counters.rx_packets >= last;
    last = snap->counters.rx_packets;
    rig.Drain(1);
  }
  // Served by a poll that began after the previous answer, so after the last frames arrived.
  auto final_snap = rig.sw->TakeSnapshot(true, std::chrono::seconds(10));
  stop = true;
  lcore.join();
  REQUIRE(final_snap.ok());
  CHECK(never_backwards);
  CHECK(final_snap->counters.rx_packets == 20 * 10);
  CHECK(final_snap->counters.flooded == 20 * 10);  // broadcasts
  CHECK(final_snap->learned_macs[0] == 1);
  rig.Drain(1);
}

TEST_CASE("switch: an unanswered statistics request fails, and its late answer is not reused",
          "[switch]") {
  Rig rig(2);
  SwitchSpec spec;
  spec.bridges = {PlainBridge(2)};
  rig.Build(spec);
  for (int i = 0; i < 3; ++i) rig.Inject(0, WithMacs(testing::Udp4(1, 2), 0, 0xa, true));
  const auto stalled = rig.sw->TakeSnapshot(true, std::chrono::milliseconds(20));  // none polls
  REQUIRE_FALSE(stalled.ok());
  CHECK(stalled.message() ==
        "switch worker 0 did not answer a statistics request within 20 ms (lcore stalled?)");
  rig.Poll();  // the worker answers the request that timed out: three frames received
  for (int i = 0; i < 2; ++i) rig.Inject(0, WithMacs(testing::Udp4(1, 2), 0, 0xb, true));
  std::atomic<bool> stop{false};
  std::thread lcore([&] {
    while (!stop.load(std::memory_order_relaxed)) rig.sw->Poll(0, ReadTsc());
  });
  const auto snap = rig.sw->TakeSnapshot(true, std::chrono::seconds(10));
  stop = true;
  lcore.join();
  INFO(snap.message());
  REQUIRE(snap.ok());
  CHECK(snap->counters.rx_packets == 3 + 2);
  CHECK(snap->learned_macs[0] == 2);
  rig.Drain(1);
}

TEST_CASE("switch: the statistics error names the worker that did not answer", "[switch]") {
  Rig rig(3);
  rig.Build(TwoWorkerSpec());
  std::atomic<bool> stop{false};
  std::thread bridge_worker([&] {  // worker 1, the uplink's, is not polled
    while (!stop.load(std::memory_order_relaxed)) rig.sw->Poll(0, ReadTsc());
  });
  const auto snap = rig.sw->TakeSnapshot(true, std::chrono::milliseconds(50));
  stop = true;
  bridge_worker.join();
  REQUIRE_FALSE(snap.ok());
  CHECK_THAT(snap.message(), Catch::StartsWith("switch worker 1 did not answer"));
}

TEST_CASE("switch: learned MACs are counted through learning, eviction and aging", "[switch]") {
  Rig rig(2);
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(2);
  b.mac_table_size = 8;  // one probe window: a ninth address evicts the stalest
  b.mac_aging_ns = 1'000'000'000;
  spec.bridges = {b};
  rig.Build(spec);
  const uint64_t hz = TscHz();
  const uint64_t t0 = ReadTsc();
  // Broadcasts from `count` sources on port 0, switched at `now`.
  auto learn = [&](uint8_t first, int count, uint64_t now) {
    for (int i = 0; i < count; ++i) {
      rig.Inject(0, WithMacs(testing::Udp4(1, 2), 0, static_cast<uint8_t>(first + i), true));
    }
    rig.sw->Poll(now);
    rig.Drain(1);
  };
  learn(0x10, 3, t0);
  CHECK(rig.Snapshot().learned_macs[0] == 3);
  learn(0x10, 2, t0 + hz / 10);  // seen again
  learn(0x20, 1, t0 + hz / 10);
  CHECK(rig.Snapshot().learned_macs[0] == 4);
  learn(0x30, 20, t0 + hz / 5);  // more than the table holds
  CHECK(rig.Snapshot().learned_macs[0] == 8);
  rig.sw->Poll(t0 + 3 * hz);  // no traffic: every address has aged out
  CHECK(rig.Snapshot().learned_macs[0] == 0);
  learn(0x10, 1, t0 + 3 * hz);
  CHECK(rig.Snapshot().learned_macs[0] == 1);
}

TEST_CASE("switch: unparsable frames are counted and dropped, Drain returns queued mbufs",
          "[switch]") {
  Rig rig(2);
  SwitchSpec spec;
  spec.bridges = {PlainBridge(2)};
  UplinkSpec up;
  up.port = 1;
  up.scheduler.name = "slow";
  up.scheduler.rate_bps = 1'000'000;
  up.scheduler.pacing_bps = 1'000'000;  // 1 Mbps: almost everything stays queued
  up.scheduler.classes = {{.name = "all", .policy = sched::Policy::kFifo}};
  up.class_queues = {0};
  spec.uplinks = {up};
  rig.Build(spec);
  Frame bad = testing::Udp4(1, 2);
  bad.bytes[14] = 0x41;  // IHL 1
  rig.Inject(0, bad);
  for (int i = 0; i < 200; ++i) rig.Inject(0, WithMacs(testing::Udp4(1, 2, 1000), 0, 0xa, true));
  rig.Poll(10);
  auto snap = rig.Snapshot();
  CHECK(snap.counters.malformed == 1);
  CHECK(snap.uplinks[0].total.queued_packets > 100);
  rig.Drain(1);
  rig.sw->Drain();
  CHECK(rig.Snapshot().uplinks[0].total.queued_packets == 0);
  // ~Rig checks that the switch's destructor returned every queued mbuf to the pool.
}

}  // namespace qosvisor::vswitch

namespace qosvisor::vswitch {

TEST_CASE("switch: forward_unparsable forwards what could be read, and still counts it",
          "[switch]") {
  Rig rig(2);
  SwitchSpec spec;
  spec.bridges = {PlainBridge(2)};
  spec.forward_unparsable = true;
  rig.Build(spec);
  Frame bad = WithMacs(testing::Udp4(1, 2), 0, 0xa, true);
  bad.bytes[14] = 0x41;  // IHL 1: malformed
  Frame cut = WithMacs(testing::Udp4(1, 2), 0, 0xa, true);
  cut.bytes.resize(30);  // the IPv4 header is cut short
  Frame runt = cut;
  runt.bytes.resize(10);  // not even an Ethernet header: always dropped
  rig.Inject(0, bad);
  rig.Inject(0, cut);
  rig.Inject(0, runt);
  rig.Poll();
  const auto out = rig.Drain(1);
  REQUIRE(out.size() == 2);
  CHECK(out[0] == bad.bytes);
  CHECK(out[1] == cut.bytes);
  const auto snap = rig.Snapshot();
  CHECK(snap.counters.malformed == 1);
  CHECK(snap.counters.truncated == 2);
}

TEST_CASE("switch: a lone packet on a paced wfq uplink leaves promptly", "[switch]") {
  Rig rig(2);
  SwitchSpec spec;
  spec.bridges = {PlainBridge(2)};
  UplinkSpec up;
  up.port = 1;
  up.scheduler.name = "paced";
  up.scheduler.rate_bps = 100'000'000;
  up.scheduler.pacing_bps = 98'000'000;
  up.scheduler.classes = {{.name = "probe", .policy = sched::Policy::kSrpt},
                          {.name = "other", .policy = sched::Policy::kFifo}};
  up.class_queues = {1, 0};
  up.default_class = 1;
  spec.uplinks = {up};
  rig.Build(spec);
  for (int round = 0; round < 3; ++round) {
    rig.Inject(0, WithMacs(testing::Udp4(1, 2), 0, 0xa, true));
    const uint64_t deadline = ReadTsc() + TscHz() / 100;  // 10 ms: a packet needs ~12 us
    size_t got = 0;
    while (got == 0 && ReadTsc() < deadline) {
      rig.Poll();
      got = rig.Drain(1).size();
    }
    INFO("round " << round);
    CHECK(got == 1);
  }
}

}  // namespace qosvisor::vswitch

namespace qosvisor::vswitch {

TEST_CASE("switch: an eBPF class program reclassifies packets by UDP port", "[switch][ebpf]") {
  Rig rig(2);
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(2);
  b.flows = {{"priority=100,udp,actions=set_queue:1,NORMAL", 0}};
  spec.bridges = {b};
  ClassSpec program;
  program.queue = 1;
  program.mode = MessageMode::kEbpf;
  program.ebpf_object = std::string(QOSVISOR_BINARY_DIR) + "/examples/bpf/udp_port_class.o";
  spec.classes = {program};
  UplinkSpec up;
  up.port = 1;
  up.scheduler.name = "uplink";
  up.scheduler.rate_bps = 10'000'000'000ull;
  up.scheduler.tenant_share = sched::Share::kPriority;
  up.scheduler.class_share_default = sched::Share::kPriority;
  up.scheduler.classes = {{.name = "latency", .policy = sched::Policy::kFifo, .priority = 0},
                          {.name = "default", .policy = sched::Policy::kFifo, .priority = 1},
                          {.name = "bulk", .policy = sched::Policy::kFifo, .priority = 2}};
  up.class_queues = {0, 1, 2};
  up.default_class = 1;
  spec.uplinks = {up};
  rig.Build(spec);
  for (int i = 0; i < 4; ++i) rig.Inject(0, WithMacs(testing::Udp4(1, 9000), 0, 0xa, true));
  for (int i = 0; i < 4; ++i) rig.Inject(0, WithMacs(testing::Udp4(1, 53), 0, 0xa, true));
  rig.Poll();
  auto out = rig.Drain(1);
  REQUIRE(out.size() == 8);
  for (int i = 0; i < 4; ++i) CHECK((out[i][36] << 8 | out[i][37]) == 53);
  const auto snap = rig.Snapshot();
  CHECK(snap.counters.ebpf_runs == 8);
  CHECK(snap.counters.ebpf_reclassified == 8);
  CHECK(snap.uplinks[0].classes[0].dequeued_packets == 4);
  CHECK(snap.uplinks[0].classes[2].dequeued_packets == 4);
}

TEST_CASE("switch: a refused eBPF program stops the switch from being built", "[switch][ebpf]") {
  qosvisor::testing::TestEal();
  SwitchSpec spec;
  ClassSpec program;
  program.queue = 0;
  program.mode = MessageMode::kEbpf;
  program.ebpf_object = std::string(QOSVISOR_BINARY_DIR) + "/examples/bpf/refused_loop.o";
  spec.classes = {program};
  UplinkSpec up;
  up.scheduler.name = "u";
  up.scheduler.rate_bps = 1'000'000'000;
  up.scheduler.classes = {{.name = "c"}};
  up.class_queues = {0};
  spec.uplinks = {up};
  dataplane::PortOptions o;
  o.name = "ebpf_refused";
  auto pool = dataplane::Mempool::Create("ebpf_refused", 1023);
  REQUIRE(pool.ok());
  auto port = dataplane::CreatePort(o, **pool);
  INFO(port.message());
  REQUIRE(port.ok());
  spec.ports = {port->get()};
  auto sw = Switch::Create(spec, (*pool)->get());
  REQUIRE_FALSE(sw.ok());
  CHECK_THAT(sw.message(), Catch::Contains("class with queue 0"));
  CHECK_THAT(sw.message(), Catch::Contains("loop"));
}

}  // namespace qosvisor::vswitch

namespace qosvisor::vswitch {
namespace {

// Minimal libpcap file writer/reader (Ethernet link type), enough for replay tests.
void WritePcap(const std::string& path, const std::vector<Frame>& frames) {
  FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  const uint32_t global[6] = {0xa1b2c3d4, 0x00040002, 0, 0, 65535, 1};
  std::fwrite(global, sizeof(global), 1, f);
  for (size_t i = 0; i < frames.size(); ++i) {
    const uint32_t record[4] = {1, static_cast<uint32_t>(i),
                                static_cast<uint32_t>(frames[i].bytes.size()),
                                static_cast<uint32_t>(frames[i].bytes.size())};
    std::fwrite(record, sizeof(record), 1, f);
    std::fwrite(frames[i].bytes.data(), 1, frames[i].bytes.size(), f);
  }
  std::fclose(f);
}

std::vector<std::vector<uint8_t>> ReadPcap(const std::string& path) {
  std::vector<std::vector<uint8_t>> out;
  FILE* f = std::fopen(path.c_str(), "rb");
  REQUIRE(f != nullptr);
  uint32_t global[6];
  REQUIRE(std::fread(global, sizeof(global), 1, f) == 1);
  uint32_t record[4];
  while (std::fread(record, sizeof(record), 1, f) == 1) {
    std::vector<uint8_t> frame(record[2]);
    REQUIRE(std::fread(frame.data(), 1, frame.size(), f) == frame.size());
    out.push_back(std::move(frame));
  }
  std::fclose(f);
  return out;
}

}  // namespace

TEST_CASE("switch: a pcap replayed through an SRPT uplink comes out in rank order",
          "[switch][pcap]") {
  qosvisor::testing::TestEal();
  const std::string dir = "/tmp/qv_pcap_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  // 40 packets of one long Homa message, then one short two-packet message and two singles.
  std::vector<Frame> in;
  for (uint32_t i = 0; i < 40; ++i)
    in.push_back(WithMacs(testing::Homa4(1, 40 * 1000, i * 1000, 1000), 0, 0xa, true));
  in.push_back(WithMacs(testing::Homa4(2, 2000, 0, 1000), 0, 0xa, true));
  in.push_back(WithMacs(testing::Homa4(2, 2000, 1000, 1000), 0, 0xa, true));
  in.push_back(WithMacs(testing::Homa4(3, 500, 0, 500), 0, 0xa, true));
  in.push_back(WithMacs(testing::Homa4(4, 800, 0, 800), 0, 0xa, true));
  WritePcap(dir + "/in.pcap", in);

  auto pool = dataplane::Mempool::Create("pcap_test", 2047);
  REQUIRE(pool.ok());
  std::vector<std::unique_ptr<dataplane::Port>> ports;
  for (const auto& [key, file] :
       {std::pair{"rx_pcap", "in.pcap"}, std::pair{"tx_pcap", "out.pcap"}}) {
    dataplane::PortOptions o;
    o.name = key;
    o.driver = dataplane::Driver::kPcap;
    o.args = {{key, dir + "/" + file}};
    auto port = dataplane::CreatePort(o, **pool);
    INFO(port.message());
    REQUIRE(port.ok());
    ports.push_back(std::move(port).value());
  }
  SwitchSpec spec;
  spec.ports = {ports[0].get(), ports[1].get()};
  spec.bridges = {PlainBridge(2)};
  spec.classes = {{0, MessageMode::kHoma, 0}};
  UplinkSpec up;
  up.port = 1;
  up.scheduler.name = "pcap-uplink";
  up.scheduler.rate_bps = 100'000'000;
  up.scheduler.pacing_bps = 100'000'000;
  up.scheduler.pacer_burst_bytes = 1100;  // one frame at a time: what queues is ranked
  up.scheduler.classes = {{.name = "homa", .policy = sched::Policy::kSrpt}};
  up.class_queues = {0};
  spec.uplinks = {up};
  auto sw = Switch::Create(spec, (*pool)->get());
  REQUIRE(sw.ok());
  const uint64_t deadline = ReadTsc() + TscHz() * 2;
  while ((*sw)->TakeSnapshot(false)->counters.rx_packets < in.size() ||
         (*sw)->TakeSnapshot(false)->uplinks[0].total.queued_packets > 0) {
    (*sw)->Poll(ReadTsc());
    REQUIRE(ReadTsc() < deadline);
  }
  sw->reset();
  ports.clear();  // closing the pcap port flushes its file
  const auto out = ReadPcap(dir + "/out.pcap");
  REQUIRE(out.size() == in.size());
  // Expected order: whatever left before the short messages arrived (the first burst), then the
  // short messages by bytes left (500, 800, then the 2000-byte message), then the long message.
  std::vector<uint64_t> rpc;
  for (const auto& f : out) {
    ParsedPacket p;
    REQUIRE(ParsePacket(f.data(), static_cast<uint32_t>(f.size()), p) == ParseStatus::kOk);
    rpc.push_back(p.homa_rpc_id);
  }
  const size_t first_short =
      std::find_if(rpc.begin(), rpc.end(), [](uint64_t r) { return r != 1; }) - rpc.begin();
  INFO("first short message at position " << first_short);
  CHECK(first_short < 33);  // it arrived with the second burst of 32
  CHECK(rpc[first_short] == 3);
  CHECK(rpc[first_short + 1] == 4);
  CHECK(rpc[first_short + 2] == 2);
  CHECK(rpc[first_short + 3] == 2);
  for (size_t i = first_short + 4; i < rpc.size(); ++i) CHECK(rpc[i] == 1);
  std::filesystem::remove_all(dir);
}

}  // namespace qosvisor::vswitch

namespace qosvisor::vswitch {

// A virtio-net client (DPDK's virtio_user, as QEMU or another VMM would attach) on a vhost-user
// port of the switch, exchanging frames with a ring port in both directions.
TEST_CASE("switch: a virtio_user client on a vhost-user port reaches a ring port and back",
          "[switch][vhost]") {
  qosvisor::testing::TestEal();
  const std::string sock = "/tmp/qv_vhost_" + std::to_string(getpid()) + ".sock";
  auto pool = dataplane::Mempool::Create("vhost_test", 4095);
  REQUIRE(pool.ok());
  dataplane::PortOptions vo;
  vo.name = "vhost0";
  vo.driver = dataplane::Driver::kVhostUser;
  vo.args = {{"path", sock}};
  auto vhost = dataplane::CreatePort(vo, **pool);
  INFO(vhost.message());
  REQUIRE(vhost.ok());
  dataplane::PortOptions ro;
  ro.name = "ring_peer";
  auto ring = dataplane::CreatePort(ro, **pool);
  REQUIRE(ring.ok());

  // The client side, as a guest's NIC: DPDK's virtio_user driver connecting to our socket.
  const std::string client = "net_virtio_user_qvtest";
  REQUIRE(rte_vdev_init(client.c_str(), ("path=" + sock + ",queues=1").c_str()) == 0);
  uint16_t cid;
  REQUIRE(rte_eth_dev_get_port_by_name(client.c_str(), &cid) == 0);
  rte_eth_conf conf{};
  REQUIRE(rte_eth_dev_configure(cid, 1, 1, &conf) == 0);
  REQUIRE(rte_eth_rx_queue_setup(cid, 0, 256, 0, nullptr, (*pool)->get()) == 0);
  REQUIRE(rte_eth_tx_queue_setup(cid, 0, 256, 0, nullptr) == 0);
  REQUIRE(rte_eth_dev_start(cid) == 0);

  SwitchSpec spec;
  spec.ports = {vhost->get(), ring->get()};
  spec.bridges = {PlainBridge(2)};
  auto sw = Switch::Create(spec, (*pool)->get());
  REQUIRE(sw.ok());
  const uint64_t deadline = ReadTsc() + TscHz() * 5;
  while (!(*vhost)->LinkUp() && ReadTsc() < deadline) (*sw)->Poll(ReadTsc());
  REQUIRE((*vhost)->LinkUp());

  // Client → switch → ring port.
  rte_mbuf* tx[8];
  const Frame f = WithMacs(testing::Udp4(1, 5000), 0, 0xc, true);
  for (rte_mbuf*& m : tx) {
    m = rte_pktmbuf_alloc((*pool)->get());
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(f.bytes.size())), f.bytes.data(),
                f.bytes.size());
  }
  uint16_t sent = 0;
  while (sent < 8 && ReadTsc() < deadline) {
    sent += rte_eth_tx_burst(cid, 0, tx + sent, static_cast<uint16_t>(8 - sent));
    (*sw)->Poll(ReadTsc());
  }
  REQUIRE(sent == 8);
  auto* ring_port = dynamic_cast<dataplane::EthPort*>(ring->get());
  size_t at_ring = 0;
  while (at_ring < 8 && ReadTsc() < deadline) {
    (*sw)->Poll(ReadTsc());
    void* m;
    while (rte_ring_dequeue(ring_port->drain_ring(), &m) == 0) {
      rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
      ++at_ring;
    }
  }
  CHECK(at_ring == 8);

  // Ring port → switch → client (the client's MAC was learned on the vhost port).
  const Frame back = WithMacs(testing::Udp4(5000, 1), 0xc, 0xd);
  rte_mbuf* m = rte_pktmbuf_alloc((*pool)->get());
  std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(back.bytes.size())), back.bytes.data(),
              back.bytes.size());
  REQUIRE(rte_ring_enqueue(ring_port->inject_ring(), m) == 0);
  size_t at_client = 0;
  while (at_client == 0 && ReadTsc() < deadline) {
    (*sw)->Poll(ReadTsc());
    rte_mbuf* rx[8];
    const uint16_t n = rte_eth_rx_burst(cid, 0, rx, 8);
    for (uint16_t i = 0; i < n; ++i) {
      CHECK(rte_pktmbuf_mtod(rx[i], uint8_t*)[5] == 0xc);
      rte_pktmbuf_free(rx[i]);
    }
    at_client += n;
  }
  CHECK(at_client == 1);
  rte_eth_dev_stop(cid);
  rte_eth_dev_close(cid);
  rte_vdev_uninit(client.c_str());
  sw->reset();
}

namespace {

// A worker lcore on its own thread for the lifetime of the object (RunWorker, so that Quiesce()
// waits for it as it waits for the appliance's lcores).
class RunningWorker {
 public:
  explicit RunningWorker(Switch& sw, uint16_t index = 0)
      : thread_([&sw, index, this] { sw.RunWorker(index, stop_); }) {}
  ~RunningWorker() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Frames numbered 0..frames-1 (their UDP source port) into port `in`, at most `window` in flight,
// until all came out of `out` and `done` is set (or a minute passed): how many came out, and
// whether in order.
struct Stream {
  int received = 0;
  bool in_order = true;
};
Stream StreamThrough(Rig& rig, int in, int out, int frames, int window,
                     const std::atomic<bool>& done, const std::function<Frame(uint16_t)>& make) {
  Stream s;
  int sent = 0;
  uint16_t expect = 0;
  const uint64_t deadline = ReadTsc() + TscHz() * 60;
  while ((!done || s.received < sent || sent < frames) && ReadTsc() < deadline) {
    while (sent < frames && sent - s.received < window) {
      rig.Inject(in, make(static_cast<uint16_t>(sent)));
      ++sent;
    }
    for (const auto& f : rig.Drain(out)) {
      s.in_order &= (f[34] << 8 | f[35]) == expect;
      ++expect;
      ++s.received;
    }
  }
  return s;
}

std::unique_ptr<dataplane::Port> MakeRingPort(dataplane::Mempool& pool, const std::string& name) {
  dataplane::PortOptions o;
  o.name = name;
  auto port = dataplane::CreatePort(o, pool);
  REQUIRE(port.ok());
  return std::move(port).value();
}

}  // namespace

TEST_CASE("switch: ports join and leave 1,000 times while two others exchange traffic losslessly",
          "[switch][ports]") {
  Rig rig(2);
  rig.Build(SwitchSpec{.bridges = {PlainBridge(2)}});
  // p1's address is learned first, so p0's frames to it are unicast and never reach the churn.
  rig.Inject(1, WithMacs(testing::Udp4(1, 1), 0x01, 0x02));
  rig.Poll();
  rig.Drain(0);
  std::atomic<bool> churn_done{false};
  std::atomic<int> churned{0};
  std::string churn_error;
  {
    RunningWorker worker(*rig.sw);
    std::thread churn([&] {
      for (int i = 0; i < 1000; ++i) {
        dataplane::VmPort vm("churn" + std::to_string(i), rig.pool->get());
        auto added = rig.sw->AddPort({.port = &vm, .bridge = "br0"});
        Status removed = added.ok() ? rig.sw->RemovePort(vm.name()) : added.status();
        if (!removed.ok()) {
          churn_error = removed.message();
          break;
        }
        ++churned;
      }
      churn_done = true;
    });
    constexpr int kFrames = 20000;
    const Stream got = StreamThrough(rig, 0, 1, kFrames, 256, churn_done, [](uint16_t n) {
      return WithMacs(testing::Udp4(n, 9), 0x02, 0x01);
    });
    churn.join();
    INFO(churn_error);
    CHECK(churned == 1000);
    CHECK(got.received == kFrames);  // no loss on the untouched ports
    CHECK(got.in_order);
  }
  CHECK(rig.Snapshot().counters.rx_packets == 20001);
}

TEST_CASE("switch: an added port switches at once, its number is reused, its old MACs are not",
          "[switch][ports]") {
  Rig rig(2);
  rig.Build(SwitchSpec{.bridges = {PlainBridge(2)}});
  auto a = MakeRingPort(*rig.pool, "dyn_a");
  auto* ring_a = dynamic_cast<dataplane::EthPort*>(a.get());
  auto added = rig.sw->AddPort({.port = a.get(), .bridge = "br0"});
  REQUIRE(added.ok());
  CHECK(*added == 3);
  // A frame from the new port floods to the others, and the way back is learned.
  rte_mbuf* m = rte_pktmbuf_alloc(rig.pool->get());
  auto from_a = WithMacs(testing::Udp4(7, 7), 0x01, 0x0a);
  std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(from_a.bytes.size())),
              from_a.bytes.data(), from_a.bytes.size());
  REQUIRE(rte_ring_enqueue(ring_a->inject_ring(), m) == 0);
  rig.Poll();
  CHECK(rig.Drain(0).size() == 1);
  CHECK(rig.Drain(1).size() == 1);
  rig.Inject(0, WithMacs(testing::Udp4(8, 8), 0x0a, 0x01));
  rig.Poll();
  CHECK(rig.Drain(1).empty());  // unicast to the new port only
  void* out = nullptr;
  REQUIRE(rte_ring_dequeue(ring_a->drain_ring(), &out) == 0);
  rte_pktmbuf_free(static_cast<rte_mbuf*>(out));
  const uint64_t floods_before = rig.Snapshot().counters.flooded;

  REQUIRE(rig.sw->RemovePort("dyn_a").ok());
  a.reset();
  auto b = MakeRingPort(*rig.pool, "dyn_b");
  auto again = rig.sw->AddPort({.port = b.get(), .bridge = "br0"});
  REQUIRE(again.ok());
  CHECK(*again == 3);  // the number is reused
  // 0x0a was learned on port 3's previous holder: the new holder does not inherit it.
  rig.Inject(0, WithMacs(testing::Udp4(9, 9), 0x0a, 0x01));
  rig.Poll();
  CHECK(rig.Snapshot().counters.flooded == floods_before + 1);
  CHECK(rig.Drain(1).size() == 1);
  REQUIRE(rig.sw->RemovePort("dyn_b").ok());
}

TEST_CASE("switch: adding and removing ports refuses what cannot be done, naming it",
          "[switch][ports]") {
  Rig rig(2);
  rig.Build(SwitchSpec{.spare_ports = 1, .bridges = {PlainBridge(2)}});
  dataplane::VmPort one("one", rig.pool->get()), two("two", rig.pool->get());
  auto bad_bridge = rig.sw->AddPort({.port = &one, .bridge = "nope"});
  REQUIRE_FALSE(bad_bridge.ok());
  CHECK(bad_bridge.message() == "add port 'one': no bridge named 'nope'");
  REQUIRE(rig.sw->AddPort({.port = &one, .bridge = "br0"}).ok());
  auto dup = rig.sw->AddPort({.port = &one, .bridge = "br0"});
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.message().find("has a port of that name") != std::string::npos);
  auto full = rig.sw->AddPort({.port = &two, .bridge = "br0"});
  REQUIRE_FALSE(full.ok());
  CHECK(full.message().find("spare_ports") != std::string::npos);
  // A rule that names the port keeps it: the rule would lose its meaning.
  REQUIRE(rig.sw->ReplaceFlows("br0", {{"priority=10,in_port=one,actions=drop", 0}}).ok());
  auto named = rig.sw->RemovePort("one");
  REQUIRE_FALSE(named.ok());
  CHECK(named.message().find("change its flow rules first") != std::string::npos);
  REQUIRE(rig.sw->ReplaceFlows("br0", {}).ok());
  auto unknown = rig.sw->RemovePort("ghost");
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.message() == "no port named 'ghost'");
  REQUIRE(rig.sw->RemovePort("one").ok());
  CHECK(rig.sw->AddPort({.port = &two, .bridge = "br0"}).ok());
  REQUIRE(rig.sw->RemovePort("two").ok());
}

TEST_CASE("switch: the MAC table dump lists learned addresses by port, not a removed port's",
          "[switch][ports]") {
  Rig rig(2);
  rig.Build(SwitchSpec{.bridges = {PlainBridge(2)}});
  dataplane::VmPort vm("fdb_vm", rig.pool->get());
  REQUIRE(rig.sw->AddPort({.port = &vm, .bridge = "br0"}).ok());
  rig.Inject(0, WithMacs(testing::Udp4(1, 1), 0x02, 0x0a));
  rig.Inject(1, WithMacs(testing::Udp4(2, 2), 0x0a, 0x0b));
  rig.Poll();
  rig.Drain(0);
  rig.Drain(1);
  auto dump = rig.sw->TakeSnapshot(false, Switch::kSnapshotTimeout, 0);
  REQUIRE(dump.ok());
  REQUIRE(dump->fdb.size() == 2);
  std::map<uint8_t, uint32_t> port_of;  // last MAC byte -> OpenFlow port
  for (const auto& e : dump->fdb) {
    port_of[e.mac[5]] = e.ofport;
    CHECK(e.vlan == 0);
  }
  CHECK(port_of[0x0a] == 1);
  CHECK(port_of[0x0b] == 2);
  // Without the request nothing is scanned or copied.
  CHECK(rig.Snapshot().fdb.empty());
  REQUIRE(rig.sw->RemovePort("fdb_vm").ok());
}

namespace {

// Two classes on a slow uplink, so that packets wait: queue 1 "keep" (udp 5000), queue 2 "drop"
// (udp 6000), fifo, sharing by priority.
UplinkSpec TwoClassUplink(uint16_t port, uint64_t pacing_bps) {
  UplinkSpec up;
  up.port = port;
  up.scheduler.name = "up0";
  up.scheduler.rate_bps = 10'000'000'000ull;
  up.scheduler.pacing_bps = pacing_bps;
  up.scheduler.pacer_burst_bytes = 3000;
  up.scheduler.class_share_default = sched::Share::kPriority;
  up.scheduler.classes = {{.name = "keep", .policy = sched::Policy::kFifo, .priority = 0},
                          {.name = "drop", .policy = sched::Policy::kFifo, .priority = 1}};
  up.class_queues = {1, 2};
  return up;
}

SwitchSpec ReconfigurableSpec(uint64_t pacing_bps) {
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(2);
  b.flows = {{"priority=100,udp,tp_dst=5000,actions=set_queue:1,output:2", 0},
             {"priority=100,udp,tp_dst=6000,actions=set_queue:2,output:2", 1}};
  spec.bridges = {b};
  spec.uplinks = {TwoClassUplink(1, pacing_bps)};
  return spec;
}

// The same uplink with "drop" gone, a class "new" on queue 3 and no pacing.
UplinkSpec WithoutDropClass() {
  UplinkSpec up = TwoClassUplink(1, 0);
  up.scheduler.classes = {{.name = "new", .policy = sched::Policy::kSrpt, .priority = 1},
                          {.name = "keep", .policy = sched::Policy::kFifo, .priority = 0}};
  up.class_queues = {3, 1};
  up.default_class = 1;
  return up;
}

// 30 frames for each of ReconfigurableSpec's classes ("keep": sources 0.., "drop": 100..) into
// its uplink paced at 1 Mbps: returns the few the pacer let out; the others wait.
std::vector<std::vector<uint8_t>> QueueBehindSlowUplink(Rig& rig) {
  rig.Build(ReconfigurableSpec(1'000'000));
  for (int i = 0; i < 30; ++i) {
    rig.Inject(0, testing::Udp4(static_cast<uint16_t>(i), 5000, 1000));
    rig.Inject(0, testing::Udp4(static_cast<uint16_t>(100 + i), 6000, 1000));
  }
  rig.Poll(2);  // a burst of 32 received per poll
  return rig.Drain(1);
}

}  // namespace

TEST_CASE("switch: a reconfigured uplink moves what waits to its new tree, in order, and drops "
          "only the removed class's packets, counted",
          "[switch][reconfigure]") {
  Rig rig(2);
  auto first = QueueBehindSlowUplink(rig);
  REQUIRE(first.size() < 30);  // the pacer let a few "keep" packets out
  const std::string port = rig.ports[1]->name();
  REQUIRE(rig.sw->ReconfigureUplink(port, WithoutDropClass(), {}, false).ok());
  rig.Poll(4);
  auto rest = rig.Drain(1);
  REQUIRE(first.size() + rest.size() == 30);  // every "keep" packet, no "drop" packet
  for (size_t i = 0; i < rest.size(); ++i) {
    CHECK((rest[i][34] << 8 | rest[i][35]) == static_cast<int>(first.size() + i));
  }
  const auto snap = rig.Snapshot();
  const sched::SchedulerStats& st = snap.uplinks[0];
  REQUIRE(st.classes.size() == 2);
  CHECK(st.dropped_reconfigured == 30);
  // "keep" is now class 1 and continues its counts: 30 in, 30 out, none left.
  CHECK(st.classes[1].enqueued_packets == 30);
  CHECK(st.classes[1].dequeued_packets == 30);
  CHECK(st.classes[1].queued_packets == 0);
  CHECK(st.classes[0].enqueued_packets == 0);
  uint64_t waited = 0;
  for (uint64_t n : st.classes[1].sojourn) waited += n;
  CHECK(waited == 30);  // every packet's time in the scheduler, once

  // Queue 2's frames now take the default class ("keep", index 1), queue 3's the new one.
  rig.Inject(0, testing::Udp4(7, 6000));
  rig.Poll();
  CHECK(rig.Drain(1).size() == 1);
  CHECK(rig.Snapshot().uplinks[0].classes[1].enqueued_packets == 31);
}

TEST_CASE(
    "switch: a reload that changes only the uplink's rate and a weight keeps what waits in "
    "place, in order, with its counts",
    "[switch][reconfigure]") {
  Rig rig(2);
  auto first = QueueBehindSlowUplink(rig);
  REQUIRE(first.size() < 30);
  const uint64_t waiting = 60 - first.size();
  UplinkSpec faster = TwoClassUplink(1, 0);  // unpaced; same classes, policies and buffers
  faster.scheduler.classes[1].weight = 5;
  auto reload = rig.sw->ReconfigureUplink(rig.ports[1]->name(), faster, {}, false);
  REQUIRE(reload.ok());
  CHECK(reload->in_place);
  CHECK(reload->queued_packets == waiting);
  rig.Poll(4);
  auto rest = rig.Drain(1);
  REQUIRE(first.size() + rest.size() == 60);
  // "keep" goes first (priority 0), each class in its order.
  for (size_t i = 0; i < rest.size(); ++i) {
    const int src = rest[i][34] << 8 | rest[i][35];
    CHECK(src == static_cast<int>(i < 30 - first.size() ? first.size() + i
                                                        : 100 + i - (30 - first.size())));
  }
  const auto snap = rig.Snapshot();
  const sched::SchedulerStats& st = snap.uplinks[0];
  CHECK(st.dropped_reconfigured == 0);
  for (size_t k = 0; k < 2; ++k) {
    CHECK(st.classes[k].enqueued_packets == 30);
    CHECK(st.classes[k].dequeued_packets == 30);
    CHECK(st.classes[k].queued_packets == 0);
  }
  CHECK(st.live_messages == 0);
}

namespace {

// An las class "rpc" on Homa (queue 1), which needs a slot for every message, and a paced class
// "slow" on udp port 5000 (queue 2), which keeps its datagrams waiting.
UplinkSpec LasAndSlowUplink(uint32_t max_messages) {
  UplinkSpec up;
  up.port = 1;
  up.scheduler.name = "uplink";
  up.scheduler.rate_bps = 10'000'000'000ull;
  up.scheduler.pacing_bps = 0;
  up.scheduler.max_messages = max_messages;
  up.scheduler.message_idle_timeout_ns = 0;
  up.scheduler.classes = {{.name = "rpc", .policy = sched::Policy::kLas},
                          // 100 bit/s: one datagram leaves, the next only seconds later
                          {.name = "slow", .policy = sched::Policy::kPace, .rate_bps = 100}};
  up.class_queues = {1, 2};
  return up;
}

// Three polls' worth of message-table slots, held by Homa messages that wait for more after
// their first packet left; then 20 datagrams that wait in the paced class.
void BuildLargeTable(Rig& rig) {
  SwitchSpec spec;
  BridgeSpec b = PlainBridge(2);
  b.flows = {{"priority=100,ip,nw_proto=146,actions=set_queue:1,output:2", 0},
             {"priority=100,udp,tp_dst=5000,actions=set_queue:2,output:2", 1}};
  spec.bridges = {b};
  spec.classes = {{1, MessageMode::kHoma, 0}, {2, MessageMode::kDatagram, 0}};
  spec.uplinks = {LasAndSlowUplink(65536)};
  rig.Build(spec);
  for (uint32_t i = 0; i < 3 * Switch::kInspectSlotsPerPoll; ++i) {
    rig.Inject(0, testing::Homa4(1 + i, 100'000, 0, 100));
    if (i % 128 == 127) {  // (the inject ring holds a few hundred)
      rig.Poll(8);
      rig.Drain(1);
    }
  }
  for (uint16_t i = 0; i < 20; ++i) rig.Inject(0, testing::Udp4(i, 5000, 64 + i));
  rig.Poll(40);
  rig.Drain(1);
}

// Polls worker 0 from this thread, one poll at a time, each given 5 ms to be answered by, until
// `done` is ready; returns the polls it took.
template <typename Future>
uint32_t PollUntil(Rig& rig, Future& done) {
  uint32_t polls = 0;
  do {
    rig.sw->Poll(0, ReadTsc());
    ++polls;
    REQUIRE(polls < 1000);
  } while (done.wait_for(std::chrono::milliseconds(5)) != std::future_status::ready);
  return polls;
}

}  // namespace

TEST_CASE("switch: an inspection of a large message table is spread over the owner's polls",
          "[switch][detail]") {
  Rig rig(2);
  BuildLargeTable(rig);
  auto direct = rig.sw->TakeSnapshot(false, Switch::kSnapshotTimeout, -1, 0);
  REQUIRE(direct.ok());
  const sched::SchedulerDetail& whole = direct->details[0];

  REQUIRE(whole.slots_scanned > 3 * Switch::kInspectSlotsPerPoll);
  REQUIRE(whole.queued_messages == 19);  // the pace let one datagram out
  // This thread is the lcore.
  auto request = std::async(std::launch::async, [&] {
    return rig.sw->TakeSnapshot(true, std::chrono::seconds(30), -1, 0);
  });
  const uint32_t polls = PollUntil(rig, request);
  auto answered = request.get();
  REQUIRE(answered.ok());
  const sched::SchedulerDetail& stepped = answered->details[0];
  CHECK(polls >=
        (whole.slots_scanned + Switch::kInspectSlotsPerPoll - 1) / Switch::kInspectSlotsPerPoll);
  CHECK(stepped.slots_scanned == whole.slots_scanned);
  CHECK(stepped.queued_messages == whole.queued_messages);
  REQUIRE(stepped.top.size() == whole.top.size());
  for (size_t i = 0; i < whole.top.size(); ++i) {
    CHECK(stepped.top[i].message_id == whole.top[i].message_id);
    CHECK(stepped.top[i].head_arrival_tsc == whole.top[i].head_arrival_tsc);
  }
  CHECK(answered->uplinks[0].live_messages == direct->uplinks[0].live_messages);
  rig.Drain(1);
}

TEST_CASE("switch: an inspection under way when its uplink gets a new tree inspects the new one",
          "[switch][detail][reconfigure]") {
  Rig rig(2);
  BuildLargeTable(rig);
  const uint64_t live_before = rig.Snapshot().uplinks[0].live_messages;
  auto request = std::async(std::launch::async, [&] {
    return rig.sw->TakeSnapshot(true, std::chrono::seconds(30), -1, 0);
  });
  // Two polls once the request is made: the scan, which needs four, is under way on the old tree.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  rig.sw->Poll(0, ReadTsc());
  rig.sw->Poll(0, ReadTsc());
  REQUIRE(request.wait_for(std::chrono::milliseconds(5)) != std::future_status::ready);
  // Between two polls of this thread (the lcore), a table a tenth the size of what the scan had
  // still to read.
  REQUIRE(rig.sw->ReconfigureUplink(rig.ports[1]->name(), LasAndSlowUplink(1024), {}, false).ok());
  PollUntil(rig, request);
  auto answered = request.get();
  REQUIRE(answered.ok());
  const sched::SchedulerDetail& d = answered->details[0];
  CHECK(d.table_capacity == 1024 + 2);  // and the classes' default queues
  CHECK(d.slots_scanned <= d.table_capacity);
  CHECK(d.live_messages < live_before);
  CHECK(d.queued_messages == answered->uplinks[0].total.queued_packets);
}

TEST_CASE("switch: a newer request drops an inspection whose requester gave up",
          "[switch][detail]") {
  Rig rig(2);
  BuildLargeTable(rig);
  // The first request gives up after 10 ms, while the scan needs several polls.
  auto first = std::async(std::launch::async, [&] {
    return rig.sw->TakeSnapshot(true, std::chrono::milliseconds(10), -1, 0);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  rig.sw->Poll(0, ReadTsc());  // the scan begins
  REQUIRE_FALSE(first.get().ok());
  // Plain statistics are answered at the next poll (or the one after, should this request come
  // late), not after the three polls the abandoned scan still needs.
  auto stats = std::async(std::launch::async,
                          [&] { return rig.sw->TakeSnapshot(true, std::chrono::seconds(30)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(PollUntil(rig, stats) <= 2);
  REQUIRE(stats.get().ok());
}

TEST_CASE("switch: an uplink inspection lists the waiting messages, answered by the owner's poll",
          "[switch][detail]") {
  Rig rig(2);
  // 10 Kbps and a pacer bucket of about two frames: at most a few packets leave, however long
  // this busy machine takes between polls.
  SwitchSpec spec = ReconfigurableSpec(10'000);
  spec.uplinks[0].scheduler.pacer_burst_bytes = 600;
  rig.Build(spec);
  // Datagrams are messages of one packet: 20 "keep" ones growing in size, 10 small "drop" ones.
  for (int i = 0; i < 20; ++i) {
    rig.Inject(0,
               testing::Udp4(static_cast<uint16_t>(i), 5000, static_cast<uint16_t>(100 + 50 * i)));
  }
  for (int i = 0; i < 10; ++i)
    rig.Inject(0, testing::Udp4(static_cast<uint16_t>(100 + i), 6000, 64));
  rig.Poll(2);
  rig.Drain(1);
  CHECK(rig.Snapshot().details[0].top.empty());  // nothing scanned unless asked
  CHECK_FALSE(rig.sw->TakeSnapshot(false, Switch::kSnapshotTimeout, -1, 1).ok());  // one uplink

  auto check = [](const Switch::Snapshot& snap) {
    const sched::SchedulerStats& st = snap.uplinks[0];
    const sched::SchedulerDetail& d = snap.details[0];
    REQUIRE(st.total.queued_packets > 20);  // the pacer let a few "keep" packets out
    CHECK(d.queued_messages == st.total.queued_packets);
    REQUIRE(d.top.size() == d.queued_messages);  // fewer than kDetailTopMessages wait
    uint64_t bytes = 0;
    for (size_t i = 0; i < d.top.size(); ++i) {
      bytes += d.top[i].bytes_queued;
      CHECK(d.top[i].packets == 1);
      if (i > 0) CHECK(d.top[i].bytes_queued <= d.top[i - 1].bytes_queued);
    }
    CHECK(bytes == st.total.queued_bytes);
    CHECK(d.top.front().class_id == 0);  // the largest "keep" datagram, sent last of its class
    CHECK(d.top.back().class_id == 1);   // a small "drop" one
    REQUIRE(d.classes.size() == 2);
    CHECK(d.classes[1].queued_heads == 10);
    CHECK(d.classes[0].queued_heads == st.classes[0].queued_packets);
    CHECK(d.sampled_heads == d.queued_messages);
  };
  auto direct = rig.sw->TakeSnapshot(false, Switch::kSnapshotTimeout, -1, 0);
  INFO(direct.message());
  REQUIRE(direct.ok());
  check(*direct);

  // With a worker polling, its lcore inspects at the poll that answers, beside the statistics.
  std::atomic<bool> stop{false};
  std::thread lcore([&] {
    while (!stop.load(std::memory_order_relaxed)) rig.sw->Poll(0, ReadTsc());
  });
  auto answered = rig.sw->TakeSnapshot(true, std::chrono::seconds(10), -1, 0);
  stop = true;
  lcore.join();
  REQUIRE(answered.ok());
  check(*answered);
  rig.Drain(1);
}

TEST_CASE("switch: a reconfigured las uplink remembers the bytes each waiting message sent",
          "[switch][reconfigure]") {
  Rig rig(2);
  SwitchSpec spec = HomaUplinkSpec(sched::Policy::kLas, 1'000'000);  // after a burst, all wait
  spec.uplinks[0].scheduler.pacer_burst_bytes = 3000;
  rig.Build(spec);
  for (uint32_t i = 0; i < 8; ++i) {
    rig.Inject(0, WithMacs(testing::Homa4(7, 8000, i * 1000, 1000), 0, 0xa, true));
  }
  rig.Poll(2);
  const size_t sent = rig.Drain(1).size();
  REQUIRE(sent > 0);
  REQUIRE(sent < 8);
  auto sent_bytes = [&] {
    auto snap = rig.sw->TakeSnapshot(false, Switch::kSnapshotTimeout, -1, 0);
    REQUIRE(snap.ok());
    REQUIRE(snap->details[0].top.size() == 1);
    return snap->details[0].top[0].bytes_sent;
  };
  const uint64_t before = sent_bytes();
  CHECK(before >= sent * 1000);
  // The same class at another pacing rate: a new scheduler takes the waiting packets.
  UplinkSpec up = spec.uplinks[0];
  up.scheduler.pacing_bps = 2'000'000;
  REQUIRE(rig.sw->ReconfigureUplink(rig.ports[1]->name(), up, {}, false).ok());
  CHECK(sent_bytes() == before);
}

TEST_CASE("switch: a reconfiguration that cannot be built changes nothing and says why",
          "[switch][reconfigure]") {
  Rig rig(2);
  rig.Build(ReconfigurableSpec(0));
  UplinkSpec bad = WithoutDropClass();
  bad.scheduler.rank_buckets = 3;  // not a power of two
  const Status s = rig.sw->ReconfigureUplink(rig.ports[1]->name(), bad, {}, false).status();
  CHECK_FALSE(s.ok());
  CHECK_THAT(s.message(), Catch::Contains("rank_buckets"));
  CHECK_THAT(rig.sw->ReconfigureUplink("nope", WithoutDropClass(), {}, false).message(),
             Catch::Contains("no uplink on port 'nope'"));
  rig.Inject(0, testing::Udp4(1, 6000));
  rig.Poll();
  CHECK(rig.Drain(1).size() == 1);
  CHECK(rig.Snapshot().uplinks[0].classes[1].enqueued_packets == 1);  // still "drop"
}

TEST_CASE("switch: 200 live reconfigurations of one class lose and reorder nothing of another's, "
          "with the uplink fed through a ring by another worker",
          "[switch][reconfigure]") {
  Rig rig(3);
  SwitchSpec spec = TwoWorkerSpec();
  spec.uplinks[0].scheduler.classes.push_back({.name = "other", .policy = sched::Policy::kFifo});
  spec.uplinks[0].class_queues = {1, 2};
  rig.Build(spec);
  const std::string port = rig.ports[2]->name();
  std::atomic<bool> done{false};
  std::atomic<int> applied{0}, in_place{0};
  std::string error;
  {
    RunningWorker bridge_worker(*rig.sw, 0), uplink_worker(*rig.sw, 1);
    std::thread control([&] {
      for (int i = 0; i < 200; ++i) {
        UplinkSpec next = spec.uplinks[0];
        // The policy changes at every other reload (its packets move), the pacing rate at others
        // (the new tree takes the old one's queues as they are).
        next.scheduler.classes[1].policy = i / 2 % 2 ? sched::Policy::kFifo : sched::Policy::kLas;
        next.scheduler.pacing_bps = i % 3 ? 0 : 50'000'000'000ull;
        const auto r = rig.sw->ReconfigureUplink(port, next, {}, true, std::chrono::seconds(10));
        if (!r.ok()) {
          error = r.message();
          break;
        }
        ++applied;
        in_place += r->in_place;
      }
      done = true;
    });
    constexpr int kFrames = 20000;  // fewer in flight than the hand-off ring holds
    const Stream got = StreamThrough(rig, 0, 2, kFrames, 48, done,
                                     [](uint16_t n) { return testing::Udp4(n, 9); });
    control.join();
    INFO(error);
    CHECK(applied == 200);
    CHECK(in_place == 100);  // the odd-numbered reloads
    CHECK(got.received == kFrames);
    CHECK(got.in_order);
  }
  const auto snap = rig.Snapshot();
  CHECK(snap.counters.handoff_dropped == 0);
  CHECK(snap.counters.sched_dropped == 0);
  CHECK(snap.uplinks[0].dropped_reconfigured == 0);
  CHECK(snap.uplinks[0].classes[0].dequeued_packets == 20000);  // "all" kept its counts
}

}  // namespace qosvisor::vswitch
