// Fuzz target: a frame through everything the switch does to it before scheduling: parse (and
// the checks-only parse), flow cache key (and its repeat test), Open vSwitch classifier lookup,
// message identification and the eBPF context copy.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "vswitch/ebpf_classifier.h"
#include "vswitch/flow_table.h"
#include "vswitch/message_identifier.h"
#include "vswitch/packet_parser.h"

using namespace qosvisor::vswitch;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::shared_ptr<const FlowTable> table = [] {
    auto t = FlowTable::Build({{"priority=100,udp,tp_dst=5000,actions=set_queue:1,NORMAL", 0},
                               {"priority=90,tcp,tp_src=80,actions=mod_vlan_vid:7,output:b", 1},
                               {"priority=80,icmp,actions=strip_vlan,FLOOD", 2},
                               {"priority=70,ip,nw_proto=146,actions=set_queue:3,NORMAL", 3},
                               {"priority=60,ipv6,actions=drop", 4},
                               {"priority=50,arp,actions=NORMAL", 5},
                               // Headers the classifier reads beyond a fixed prefix, or past
                               // what the switch parses: the cache must not answer for them.
                               {"priority=45,sctp,tp_dst=80,actions=drop", 6},
                               {"priority=44,udp6,tp_dst=53,actions=output:c", 7},
                               {"priority=43,icmp6,icmp_type=135,nd_target=::1,actions=drop", 8},
                               {"priority=42,ip,nw_proto=2,actions=output:b", 9},
                               {"priority=41,mpls,mpls_label=5,actions=drop", 10},
                               {"priority=40,udp,tp_dst=53,actions=set_queue:2,NORMAL", 11}},
                              {"a", "b", "c"});
    if (!t.ok()) {
      std::fprintf(stderr, "fuzz table: %s\n", t.message().c_str());
      std::abort();
    }
    return *t;
  }();
  static FlowCache cache;
  static MessageIdentifier ids(1024, 1'000'000);
  static uint64_t now = 0;
  const uint32_t length = static_cast<uint32_t>(size > 65535 ? 65535 : size);
  ParsedPacket p;
  const ParseStatus status = ParsePacket(data, length, p);
  if (p.payload_offset > length) __builtin_trap();
  // The L2 fast paths' checks-only parse must reach the same verdict and link layer.
  ParsedPacket checked;
  if (CheckPacket(data, length, checked) != status || checked.has_vlan != p.has_vlan ||
      checked.vlan_tci != p.vlan_tci ||
      (status == ParseStatus::kOk &&
       (checked.ether_type != p.ether_type || checked.l3_offset != p.l3_offset))) {
    __builtin_trap();
  }
  const uint32_t in_port = 1 + (length % 3);
  if (status == ParseStatus::kOk) {
    const FlowActions* a = cache.Lookup(*table, data, length, p, in_port);
    if (a != nullptr && a->n > QV_OVS_MAX_ACTIONS) __builtin_trap();
    // The cache may only answer what the classifier would: its key must hold every byte the
    // classifier looked at, for this frame and for every earlier one with the same key.
    if (a != table->Lookup(data, length, in_port)) __builtin_trap();
    // A frame whose key repeats the previous frame's shares its answer: so a copy that differs
    // only in the bytes keys ignore (here the IPv4 id) must get the same answer from the
    // classifier itself.
    FlowKey first, again;
    BuildNextFlowKey(data, length, length, p, in_port, nullptr, first);
    std::vector<uint8_t> copy(data, data + length);
    if (p.ip_version == 4 && p.l3_offset + 6u <= length) copy[p.l3_offset + 4] ^= 0x5a;
    ParsedPacket q;
    if (ParsePacket(copy.data(), length, q) == ParseStatus::kOk &&
        BuildNextFlowKey(copy.data(), length, length, q, in_port, &first, again) &&
        (table->Lookup(copy.data(), length, in_port) != a || !(again == first))) {
      __builtin_trap();  // a repeat shares the answer, and its key is the previous one, whole
    }
    for (MessageMode mode : {MessageMode::kHoma, MessageMode::kTcpGap, MessageMode::kDatagram}) {
      ids.Identify(mode, p, length + 24, 1000, now += 700);
    }
  } else {
    table->Lookup(data, length, in_port);  // the classifier must cope with any frame too
  }
  EbpfContext ctx;
  FillEbpfContext(data, length, p, status == ParseStatus::kOk, ctx);
  return 0;
}
