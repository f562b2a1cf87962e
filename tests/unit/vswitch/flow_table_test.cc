// Flow rules through the Open vSwitch classifier: priorities, wildcards, actions, errors, that
// cache keys hold whatever the classifier reads, and the exact-match cache (hits for one flow,
// misses for another, invalidated by a new table). The keys themselves: flow_key_test.cc.
#include "vswitch/flow_table.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <vector>

#include "frames.h"

namespace qosvisor::vswitch {
namespace {

using testing::Frame;
using testing::Ipv6Frame;
using testing::UdpHeader;

const std::vector<std::string> kPorts = {"gen0", "gen1", "uplink0"};

std::shared_ptr<const FlowTable> Table(const std::vector<FlowRule>& rules) {
  auto table = FlowTable::Build(rules, kPorts);
  INFO(table.message());
  REQUIRE(table.ok());
  return *table;
}

const FlowActions* Lookup(const FlowTable& t, const Frame& f, uint32_t in_port) {
  return t.Lookup(f.bytes.data(), static_cast<uint32_t>(f.bytes.size()), in_port);
}

}  // namespace

TEST_CASE("the default rule is NORMAL and user rules win by priority", "[flow]") {
  auto empty = Table({});
  const FlowActions* a = Lookup(*empty, testing::Udp4(1, 5000), 1);
  REQUIRE(a != nullptr);
  CHECK(a->cookie == kDefaultRuleCookie);
  REQUIRE(a->n == 1);
  CHECK(a->a[0].type == QV_OVS_NORMAL);

  auto t =
      Table({{"priority=100,udp,tp_dst=5000,actions=set_queue:1,NORMAL", 0},
             {"priority=200,udp,tp_dst=5000,nw_src=10.0.0.1,actions=set_queue:2,output:uplink0", 1},
             {"priority=50,tcp,actions=set_queue:3,NORMAL", 2},
             {"priority=10,in_port=gen1,actions=drop", 3},
             {"priority=20,icmp,actions=mod_vlan_vid:42,strip_vlan,FLOOD", 4}});
  CHECK(t->size() == 6);

  a = Lookup(*t, testing::Udp4(1, 5000), 1);  // 10.0.0.1 → the more specific, higher rule
  REQUIRE(a != nullptr);
  CHECK(a->cookie == 1);
  REQUIRE(a->n == 2);
  CHECK(a->a[0].type == QV_OVS_SET_QUEUE);
  CHECK(a->a[0].arg == 2);
  CHECK(a->a[1].type == QV_OVS_OUTPUT);
  CHECK(a->a[1].arg == 3);

  a = Lookup(*t, testing::Tcp4(1, 80, 0, 0x02), 1);
  CHECK(a->cookie == 2);
  CHECK(a->a[0].arg == 3);

  a = Lookup(*t, testing::Udp4(1, 9999), 2);  // from gen1, nothing more specific
  CHECK(a->cookie == 3);
  CHECK(a->n == 0);  // drop

  a = Lookup(*t, testing::Udp4(1, 9999), 1);  // wildcard miss → default
  CHECK(a->cookie == kDefaultRuleCookie);
}

TEST_CASE("a user rule replaces the default rule with the same match and priority", "[flow]") {
  auto t = Table({{"priority=0,actions=drop", 7}});
  CHECK(t->size() == 1);
  const FlowActions* a = Lookup(*t, testing::Udp4(1, 2), 1);
  CHECK(a->cookie == 7);
  CHECK(a->n == 0);
}

TEST_CASE("bad rules are refused with the reason", "[flow]") {
  auto syntax = FlowTable::Build({{"priority=10,udp,tp_dts=5,actions=NORMAL", 0}}, kPorts);
  CHECK_THAT(syntax.message(), Catch::Contains("tp_dts"));
  auto prereq = FlowTable::Build({{"priority=10,tp_dst=80,actions=NORMAL", 0}}, kPorts);
  CHECK_THAT(prereq.message(), Catch::Contains("tp_dst=80: field needs its protocol first"));
  auto unsupported = FlowTable::Build({{"priority=10,actions=controller", 0}}, kPorts);
  CHECK_THAT(unsupported.message(), Catch::Contains("output to CONTROLLER is not supported"));
  auto dec_ttl = FlowTable::Build({{"priority=10,ip,actions=dec_ttl,NORMAL", 0}}, kPorts);
  CHECK_THAT(dec_ttl.message(), Catch::Contains("action 'dec_ttl' is not supported"));
  auto port = FlowTable::Build({{"priority=10,actions=output:nosuch", 0}}, kPorts);
  CHECK_THAT(port.message(), Catch::Contains("nosuch"));
}

TEST_CASE("tables that look only at the input port answer per port", "[flow]") {
  const std::vector<std::string> ports = {"a", "b", "c"};
  auto plain = FlowTable::Build({}, ports);
  REQUIRE(plain.ok());
  REQUIRE((*plain)->in_port_only());
  CHECK((*plain)->ActionsOfPort(2)->a[0].type == QV_OVS_NORMAL);

  auto p2p = FlowTable::Build({{"priority=10,in_port=a,actions=output:b", 0},
                               {"priority=10,in_port=b,actions=drop", 1}},
                              ports);
  REQUIRE(p2p.ok());
  REQUIRE((*p2p)->in_port_only());
  const FlowActions* from_a = (*p2p)->ActionsOfPort(1);
  REQUIRE(from_a->n == 1);
  CHECK(from_a->a[0].type == QV_OVS_OUTPUT);
  CHECK(from_a->a[0].arg == 2);
  CHECK((*p2p)->ActionsOfPort(2)->n == 0);                       // drop
  CHECK((*p2p)->ActionsOfPort(3)->a[0].type == QV_OVS_NORMAL);  // the default rule
  // The per-port answers agree with the classifier for real frames.
  Frame f = testing::Udp4(1, 5000);
  CHECK((*p2p)->Lookup(f.bytes.data(), f.bytes.size(), 1) == from_a);

  auto udp = FlowTable::Build({{"priority=10,in_port=a,udp,actions=output:b", 0}}, ports);
  REQUIRE(udp.ok());
  CHECK_FALSE((*udp)->in_port_only());
  CHECK((*udp)->ActionsOfPort(1) == nullptr);
}

TEST_CASE("a second VLAN tag ends the parse for the classifier as for the cache key", "[flow]") {
  // Double-tagged frames carry IP behind the inner tag; neither the parser nor the classifier
  // reads that far (one tag, like ovs-vswitchd's default vlan-limit), so the cache key, which
  // stops at the inner tag, holds everything the classifier looked at.
  auto t = Table({{"priority=80,icmp,actions=drop", 0}, {"priority=70,udp,actions=drop", 1}});
  auto double_tagged = [](uint8_t proto) {
    Frame f = testing::Ethernet(0x0800, 5);
    f.bytes.insert(f.bytes.end() - 2, {0x81, 0x00, 0x00, 0x07});  // inner tag before the type
    testing::Ipv4(f, proto, 8);
    f.Zeros(8);
    return f;
  };
  const Frame icmp = double_tagged(1), udp = double_tagged(17);
  CHECK(Lookup(*t, icmp, 1)->cookie == kDefaultRuleCookie);
  CHECK(Lookup(*t, udp, 1)->cookie == kDefaultRuleCookie);
  ParsedPacket pi, pu;
  REQUIRE(ParsePacket(icmp.bytes.data(), icmp.bytes.size(), pi) == ParseStatus::kOk);
  REQUIRE(ParsePacket(udp.bytes.data(), udp.bytes.size(), pu) == ParseStatus::kOk);
  CHECK(pi.ip_version == 0);
  FlowKey ki, ku;
  BuildFlowKey(icmp.bytes.data(), icmp.bytes.size(), icmp.bytes.size(), pi, 1, ki);
  BuildFlowKey(udp.bytes.data(), udp.bytes.size(), udp.bytes.size(), pu, 1, ku);
  CHECK(ki == ku);  // so one cache entry answering both is right
}

namespace {
FlowKey KeyOf(const Frame& f, uint32_t in_port = 1) {
  ParsedPacket p;
  REQUIRE(ParsePacket(f.bytes.data(), f.bytes.size(), p) == ParseStatus::kOk);
  FlowKey k;
  BuildFlowKey(f.bytes.data(), f.bytes.size(), f.bytes.size(), p, in_port, k);
  return k;
}
}  // namespace

TEST_CASE("frames whose headers the classifier reads beyond a fixed prefix are not cached",
          "[flow]") {
  // Open vSwitch walks IPv6 extension headers to the UDP ports, reads neighbour-discovery
  // targets, MPLS labels and LLC/SNAP encapsulations: no prefix of the frame holds all of that.
  std::vector<uint8_t> hop_by_hop = {17, 0, 1, 4, 0, 0, 0, 0};
  std::vector<uint8_t> l4 = hop_by_hop;
  for (uint8_t b : UdpHeader(53)) l4.push_back(b);
  CHECK(KeyOf(Ipv6Frame(0, l4)).words == 0);
  std::vector<uint8_t> solicit(24, 0);
  solicit[0] = 135;
  CHECK(KeyOf(Ipv6Frame(58, solicit)).words == 0);
  Frame mpls = testing::Ethernet(0x8847);
  mpls.U32(5u << 12 | 1u << 8 | 64);
  mpls.Zeros(40);
  CHECK(KeyOf(mpls).words == 0);
  Frame llc = testing::Ethernet(46);  // an 802.3 length, then LLC/SNAP
  llc.Zeros(46);
  CHECK(KeyOf(llc).words == 0);
  // Transport headers shorter than the classifier needs (SCTP: 12 bytes) are not read by it,
  // so a key holding their bytes would be wrong; an ICMP echo of 8 bytes is cached.
  CHECK(KeyOf(Ipv6Frame(132, {0x03, 0xe8, 0, 80, 0, 0})).words == 0);
  CHECK(KeyOf(Ipv6Frame(132, {0x03, 0xe8, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0})).words != 0);
  CHECK(KeyOf(Ipv6Frame(58, {128, 0, 0, 0, 0, 1, 0, 1})).words != 0);
  // What counts is the datagram, not the frame: Ethernet padding is no transport header.
  Frame icmp4 = testing::Ethernet(0x0800);
  testing::Ipv4(icmp4, 1, 4);
  icmp4.U32(0x08000000);  // an echo request cut to 4 bytes
  icmp4.Zeros(60 - icmp4.bytes.size());
  CHECK(KeyOf(icmp4).words == 0);
  // TCP: the header its data offset announces must be in the datagram too.
  Frame tcp = testing::Tcp4(1, 80, 1000, 0x10, 0);
  tcp.bytes[46] = 0x60;  // 24-byte header, in a 20-byte segment
  tcp.Zeros(4);          // (padding past the datagram)
  ParsedPacket pt;
  ParsePacket(tcp.bytes.data(), tcp.bytes.size(), pt);  // truncated, but a key can be asked for
  FlowKey kt;
  BuildFlowKey(tcp.bytes.data(), tcp.bytes.size(), tcp.bytes.size(), pt, 1, kt);
  CHECK(kt.words == 0);

  // Through the cache, such frames get the classifier's own answer every time.
  auto t = Table({{"priority=10,udp6,tp_dst=53,actions=drop", 0}});
  FlowCache cache;
  for (uint16_t port : {53, 54, 53, 54}) {
    std::vector<uint8_t> body = hop_by_hop;
    for (uint8_t b : UdpHeader(port)) body.push_back(b);
    const Frame f = Ipv6Frame(0, body);
    ParsedPacket p;
    REQUIRE(ParsePacket(f.bytes.data(), f.bytes.size(), p) == ParseStatus::kOk);
    const FlowActions* got =
        cache.Lookup(*t, f.bytes.data(), static_cast<uint32_t>(f.bytes.size()), p, 1);
    INFO("UDP port " << port);
    CHECK(got == Lookup(*t, f, 1));
    CHECK(got->cookie == (port == 53 ? 0u : kDefaultRuleCookie));
  }
  CHECK(cache.uncacheable() == 4);
}

TEST_CASE("a frame laid out as the one before it is still checked for what only it shows",
          "[flow]") {
  // Keys reuse the previous frame's end and masks when the headers sit in the same places; what
  // else decides whether a key can be cached must still be looked at frame by frame.
  Frame good_tcp = testing::Tcp4(1, 80, 1000, 0x10, 0);
  Frame long_header = good_tcp;
  long_header.bytes[46] = 0x60;  // announces 24 bytes in a 20-byte segment
  CHECK(KeyOf(good_tcp).words != 0);
  ParsedPacket p;
  ParsePacket(long_header.bytes.data(), long_header.bytes.size(), p);
  FlowKey k;
  BuildFlowKey(long_header.bytes.data(), long_header.bytes.size(), long_header.bytes.size(), p, 1,
               k);
  CHECK(k.words == 0);
  std::vector<uint8_t> echo(24, 0), solicit(24, 0);
  echo[0] = 128;
  solicit[0] = 135;
  CHECK(KeyOf(Ipv6Frame(58, echo)).words != 0);
  CHECK(KeyOf(Ipv6Frame(58, solicit)).words == 0);
  CHECK(KeyOf(Ipv6Frame(58, echo)).words != 0);
  Frame arp = testing::Ethernet(0x0806);
  arp.Zeros(28);
  Frame short_arp = testing::Ethernet(0x0806);
  short_arp.Zeros(20);
  CHECK(KeyOf(arp).words != 0);
  CHECK(KeyOf(short_arp).words == 0);
}

TEST_CASE("two busy flows whose keys share an entry both stay cached", "[flow]") {
  // Find two UDP flows whose first candidate entries coincide (hash seeds are random per
  // process, so search), then alternate them: each is looked up in the classifier once.
  auto t = Table({{"priority=10,udp,tp_dst=5000,actions=drop", 0}});
  std::vector<std::pair<Frame, FlowKey>> flows;
  int a = -1, b = -1;
  for (uint16_t port = 1; a < 0 && port < 20000; ++port) {
    Frame f = testing::Udp4(port, 5000);
    FlowKey k = KeyOf(f);
    for (size_t i = 0; i < flows.size(); ++i) {
      if (FlowCache::First(flows[i].second) == FlowCache::First(k)) {
        a = static_cast<int>(i);
        b = static_cast<int>(flows.size());
        break;
      }
    }
    flows.emplace_back(f, k);
  }
  REQUIRE(a >= 0);
  FlowCache cache;
  for (int round = 0; round < 10; ++round) {
    for (int i : {a, b}) {
      const Frame& f = flows[i].first;
      CHECK(cache.Lookup(*t, flows[i].second, f.bytes.data(),
                         static_cast<uint32_t>(f.bytes.size()))->cookie == 0);
    }
  }
  CHECK(cache.misses() == 2);
  CHECK(cache.hits() == 18);
}

TEST_CASE("the cache hits for one flow and is invalidated by a new table", "[flow]") {
  auto t1 = Table({{"priority=100,udp,tp_dst=5000,actions=set_queue:1,NORMAL", 0}});
  FlowCache cache;
  Frame f = testing::Udp4(1, 5000);
  ParsedPacket p;
  REQUIRE(ParsePacket(f.bytes.data(), f.bytes.size(), p) == ParseStatus::kOk);
  for (int i = 0; i < 10; ++i) {
    f.bytes[19] = static_cast<uint8_t>(i);  // a new IP id each packet
    const FlowActions* a = cache.Lookup(*t1, f.bytes.data(), f.bytes.size(), p, 1);
    REQUIRE(a != nullptr);
    CHECK(a->a[0].arg == 1);
  }
  CHECK(cache.misses() == 1);
  CHECK(cache.hits() == 9);

  auto t2 = Table({{"priority=100,udp,tp_dst=5000,actions=set_queue:2,NORMAL", 0}});
  const FlowActions* a = cache.Lookup(*t2, f.bytes.data(), f.bytes.size(), p, 1);
  CHECK(a->a[0].arg == 2);  // not the stale entry of t1
  CHECK(cache.misses() == 2);
}

}  // namespace qosvisor::vswitch
