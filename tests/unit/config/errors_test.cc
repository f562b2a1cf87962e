// Bad configurations: each names file:line:column, the key path and what would be right; and
// a file with many independent mistakes reports all of them at once.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "config/loader.h"

namespace qosvisor::config {
namespace {

struct BadCase {
  const char* yaml;
  const char* where;               // "line:col: path" as printed after the file name
  std::vector<const char*> words;  // each must appear in the message
};

// Shared lines that give the cases something valid to refer to (lines 1-6).
constexpr const char* kBase = R"(ports:
  - {name: gen0, driver: ring}
  - {name: up0, driver: ring}
bridges:
  - {name: br0, ports: [gen0, up0]}
classes: [{name: rpc, queue: 1, policy: srpt}]
)";

const std::vector<BadCase>& Cases() {
  static const std::vector<BadCase> cases = {
      // --- YAML syntax and types -----------------------------------------------------------
      {"a: [1, 2\nb: 3\n", "2:2", {"YAML syntax error", "end of sequence flow not found"}},
      {"ports:\n  - name: x\n   bad: 1\n", "3:4", {"YAML syntax error"}},
      {"- 1\n- 2\n", "1:1", {"expected a mapping, got a list"}},
      {"ports: {name: a}\n", "1:8: ports", {"expected a list, got a mapping"}},
      {"ports:\n  - gen0\n", "2:5: ports[0]", {"expected a mapping, got 'gen0'"}},
      {"dataplane:\n  lcores: many\n",
       "2:11: dataplane.lcores",
       {"expected an integer, got 'many'"}},
      {"dataplane:\n  file_prefix: [a]\n",
       "2:16: dataplane.file_prefix",
       {"expected a string, got a list"}},
      {"vms:\n  - {name: v, vcpus: 1, memory: 4MiB, image: x, autostart: maybe}\n",
       "2:60: vms[0].autostart",
       {"expected true or false, got 'maybe'"}},
      {"dataplane:\n  lcores: 1\n  lcores: 2\n",
       "3:3: dataplane.lcores",
       {"duplicate key 'lcores'", "first given at line 2"}},
      {"ports: [{name: p, driver: ring}]\nuplinks:\n  - port: p\n    rate:\n",
       "4:5: uplinks[0].rate",
       {"expected a rate such as 10Gbps, got nothing"}},
      // --- unknown keys, with suggestions --------------------------------------------------
      {"dataplan:\n  lcores: 1\n",
       "1:1: dataplan",
       {"unknown key 'dataplan'", "did you mean 'dataplane'?"}},
      {"dataplane:\n  lcore: 1\n",
       "2:3: dataplane.lcore",
       {"unknown key 'lcore'", "did you mean 'lcores'?"}},
      {"dataplane:\n  zzzzzz: 1\n",
       "2:3: dataplane.zzzzzz",
       {"unknown key 'zzzzzz'", "allowed keys: lcores, memory, hugepages"}},
      {"uplinks:\n  - {port: p, rate: 1Gbps, scheduler: {shares: wfq}}\n",
       "2:40: uplinks[0].scheduler.shares",
       {"did you mean 'share'?"}},
      {"ports:\n  - {name: p, driver: af_packet, args: {ifce: eth0}}\n",
       "2:41: ports[0].args.ifce",
       {"driver af_packet has no argument 'ifce'", "did you mean 'iface'?"}},
      {"ports:\n  - {name: p, driver: ring, args: {size: 1}}\n",
       "2:36: ports[0].args.size",
       {"driver ring has no argument 'size'", "it takes no arguments"}},
      // --- units and enums -----------------------------------------------------------------
      {"uplinks:\n  - {port: p, rate: 10Gbs}\n",
       "2:21: uplinks[0].rate",
       {"'10Gbs' is not a rate (unknown unit 'Gbs'", "use e.g. 10Gbps or 250Mbps"}},
      {"uplinks:\n  - {port: p, rate: 0Mbps}\n",
       "2:21: uplinks[0].rate",
       {"'0Mbps' is too small; use at least 1bps"}},
      {"uplinks:\n  - {port: p, rate: 1000}\n", "2:21: uplinks[0].rate", {"the unit is missing"}},
      {"dataplane:\n  memory: 1GiBs\n",
       "2:11: dataplane.memory",
       {"is not a size", "64KiB or 2MiB"}},
      {"bridges:\n  - {name: b, mac_aging: 5 minutes}\n",
       "2:26: bridges[0].mac_aging",
       {"'5 minutes' is not a duration", "use e.g. 100us or 5ms"}},
      {"dataplane:\n  hugepages: maybe\n",
       "2:14: dataplane.hugepages",
       {"'maybe' is not a hugepages setting; use one of: on, off, auto"}},
      {"ports:\n  - {name: p, driver: rng}\n",
       "2:23: ports[0].driver",
       {"'rng' is not a port driver", "vhost-user", "did you mean 'ring'?"}},
      {"classes:\n  - {name: c, queue: 1, policy: srtp}\n",
       "2:33: classes[0].policy",
       {"'srtp' is not a policy", "did you mean 'srpt'?"}},
      // --- names and required keys ---------------------------------------------------------
      {"ports:\n  - {name: 9p, driver: ring}\n",
       "2:12: ports[0].name",
       {"'9p' is not a valid name", "a letter followed by"}},
      {"ports:\n  - {driver: ring}\n", "2:5: ports[0]", {"missing required key 'name'"}},
      {"classes:\n  - name: c\n    policy: fifo\n",
       "2:5: classes[0]",
       {"missing required key 'queue'", "set_queue:N"}},
      {"ports: [{name: p, driver: ring}]\nuplinks:\n  - port: p\n",
       "3:5: uplinks[0]",
       {"missing required key 'rate'", "e.g. 1Gbps"}},
      // --- single-value limits -------------------------------------------------------------
      {"dataplane:\n  lcores: 0\n",
       "2:11: dataplane.lcores",
       {"0 is out of range", "from 1 to 128"}},
      {"dataplane:\n  forward_unparsable: sometimes\n",
       "2:23: dataplane.forward_unparsable",
       {"sometimes"}},
      {"dataplane:\n  isolate: cpu1\n", "2:12: dataplane.isolate", {"cpu1"}},
      {"dataplane:\n  burst: 64\n",
       "2:10: dataplane.burst",
       {"64 is out of range", "from 1 to 32"}},
      {"dataplane:\n  mbufs: 100\n", "2:10: dataplane.mbufs", {"100 is out of range", "from 1024"}},
      {"dataplane:\n  memory: 32MiB\n",
       "2:11: dataplane.memory",
       {"'32MiB' is too small", "64MiB"}},
      {"dataplane:\n  memory: 65MiB\n",
       "2:11: dataplane.memory",
       {"65MiB is not a multiple of 2MiB", "use e.g. 66MiB"}},
      {"dataplane:\n  file_prefix: a/b\n",
       "2:16: dataplane.file_prefix",
       {"'a/b' is not a valid file prefix"}},
      {"ports:\n  - {name: p, driver: ring, mac: 01:00:5e:00:00:01}\n",
       "2:34: ports[0].mac",
       {"multicast MAC address", "unicast"}},
      {"ports:\n  - {name: p, driver: ring, mac: 02:00:00:00:00}\n",
       "2:34: ports[0].mac",
       {"is not a MAC address", "02:00:00:00:00:01"}},
      {"bridges:\n  - name: b\n    ports:\n      - {port: p, vlan: {mode: access, tag: 5000}}\n",
       "4:45: bridges[0].ports[0].vlan.tag",
       {"5000 is out of range", "from 1 to 4094"}},
      {"bridges:\n  - name: b\n    ports:\n      - {port: p, vlan: {mode: trunk, tags: [10, 0]}}\n",
       "4:50: bridges[0].ports[0].vlan.tags[1]",
       {"0 is out of range", "from 1 to 4094"}},
      {"bridges:\n  - name: b\n    ports:\n      - {port: p, vlan: {mode: trunk, tag: 10}}\n",
       "4:44: bridges[0].ports[0].vlan.tag",
       {"'tag' belongs to mode access", "tags: [10, 20]"}},
      {"bridges:\n  - name: b\n    ports:\n      - {port: p, vlan: {mode: access}}\n",
       "4:25: bridges[0].ports[0].vlan",
       {"missing required key 'tag'"}},
      {"classes:\n  - {name: c, queue: 70000, policy: fifo}\n",
       "2:22: classes[0].queue",
       {"70000 is out of range", "from 0 to 65535"}},
      {"classes:\n  - {name: c, queue: 1, policy: fifo, priority: 8}\n",
       "2:49: classes[0].priority",
       {"8 is out of range", "from 0 to 7"}},
      {"flows:\n  - {bridge: b, table: 255, rule: x}\n",
       "2:24: flows[0].table",
       {"255 is out of range", "from 0 to 254"}},
      {"hosts:\n  - {name: h, address: 10.0.0.1, port: 70000}\n",
       "2:40: hosts[0].port",
       {"70000 is out of range", "from 1 to 65535"}},
      {"hosts:\n  - {name: h, address: 'a b'}\n",
       "2:24: hosts[0].address",
       {"'a b' is not an IP address or hostname"}},
      {"control:\n  socket: \"/run/a\\0b.sock\"\n",
       "2:11: control.socket",
       {"control character 0x00 at offset 6"}},
      {"control:\n  socket: /run/\xff\xfe.sock\n",
       "2:11: control.socket",
       {"is not valid UTF-8", "byte 0xff at offset 5"}},
      {"control:\n  group: ''\n", "2:10: control.group", {"must not be empty"}},
      {"control:\n  group: [wheel]\n", "2:10: control.group", {"expected a string, got a list"}},
      {"control:\n  groups: qosvisor\n",
       "2:3: control.groups",
       {"unknown key 'groups'", "did you mean 'group'?"}},
      {"control:\n  metrics: localhost\n",
       "2:12: control.metrics",
       {"'localhost' is not host:port", "127.0.0.1:9100"}},
      {"templates:\n  - {name: t, memory: 3000}\n",
       "2:23: templates[0].memory",
       {"not usable guest memory", "multiple of 4KiB", "at least 2MiB"}},
      {"templates:\n  - {name: t, vcpus: 65}\n",
       "2:22: templates[0].vcpus",
       {"65 is out of range", "from 1 to 64"}},
      {"templates:\n  - {name: t, disk: {path: d.img, size: 1000}}\n",
       "2:41: templates[0].disk.size",
       {"1000B is not a multiple of 512 bytes"}},
      {"templates:\n  - {name: t, serial_log_max: 0}\n",
       "2:31: templates[0].serial_log_max",
       {"'0' is too small; use at least 1B"}},
      {"templates:\n  - {name: t, serial_log_max: lots}\n",
       "2:31: templates[0].serial_log_max",
       {"'lots' is not a size"}},
      {"vms:\n  - {name: v, vcpus: 1, memory: 2MiB, image: x, serial_log_max: -1}\n",
       "2:65: vms[0].serial_log_max",
       {"'-1' is not a size"}},
      {"templates:\n  - {name: t, disk: {path: d.img, size: 1GiB, max_size: 100}}\n",
       "2:57: templates[0].disk.max_size",
       {"'100' is too small; use at least 512B"}},
      // --- limits between values -----------------------------------------------------------
      {"templates:\n  - {name: t, disk: {path: d.img, size: 1GiB, max_size: 512MiB}}\n",
       "2:57: templates[0].disk.max_size",
       {"max_size 512MiB is below the disk's size 1GiB", "use at least 1GiB"}},
      {"vms:\n  - name: v\n    disk: {path: d.img, size: 2MiB, max_size: 1MiB}\n    vcpus: 1\n"
       "    memory: 2MiB\n    image: x\n",
       "3:47: vms[0].disk.max_size",
       {"max_size 1MiB is below the disk's size 2MiB"}},
      {"ports: [{name: p, driver: ring}]\nuplinks:\n  - {port: p, rate: 1Gbps, pacing: 2Gbps}\n",
       "3:36: uplinks[0].pacing",
       {"pacing 2Gbps is above the line rate 1Gbps", "980Mbps"}},
      {"ports: [{name: p, driver: ring}]\nuplinks:\n  - {port: p, rate: 1Gbps, pacing_burst: "
       "1KiB}\n",
       "3:42: uplinks[0].pacing_burst",
       {"1KiB must be between one full-size frame (1518B) and 1GiB", "20us at the pacing rate"}},
      {"ports: [{name: p, driver: ring}]\nuplinks:\n  - {port: p, rate: 1Gbps, buffer: 1KiB}\n",
       "3:36: uplinks[0].buffer",
       {"1KiB cannot hold one full-size frame (1518B)"}},
      {"ports: [{name: p, driver: ring}]\nuplinks:\n  - {port: p, rate: 1Gbps, message_limit: "
       "8MiB}\n",
       "3:43: uplinks[0].message_limit",
       {"8MiB is outside 1518B..4MiB"}},
      // --- policy- and driver-specific keys ------------------------------------------------
      {"classes:\n  - {name: c, queue: 1, policy: edf}\n",
       "2:5: classes[0]",
       {"policy edf needs 'deadline'", "100us"}},
      {"classes:\n  - {name: c, queue: 1, policy: fifo, deadline: 1ms}\n",
       "2:49: classes[0].deadline",
       {"'deadline' applies only to policy edf, not fifo"}},
      {"classes:\n  - {name: c, queue: 1, policy: pace}\n",
       "2:5: classes[0]",
       {"policy pace needs 'rate'"}},
      {"classes:\n  - {name: c, queue: 1, policy: las, aging: 1ms}\n",
       "2:45: classes[0].aging",
       {"'aging' applies only to policy srpt, not las"}},
      {"classes: [{name: c, queue: 1, policy: fifo}]\nmessages:\n  - {class: c, identify: "
       "tcp-gap}\n",
       "3:5: messages[0]",
       {"identify tcp-gap needs 'idle'", "1ms"}},
      {"classes: [{name: c, queue: 1, policy: fifo}]\nmessages:\n  - {class: c, identify: tcp-gap, "
       "idle: 2h}\n",
       "3:41: messages[0].idle",
       {"2h is longer than a tcp-gap burst may stay quiet", "at most 1h"}},
      {"classes: [{name: c, queue: 1, policy: fifo}]\nmessages:\n  - {class: c, identify: homa, "
       "idle: 1ms}\n",
       "3:38: messages[0].idle",
       {"'idle' applies only to identify tcp-gap, not homa"}},
      {"classes: [{name: c, queue: 1, policy: fifo}]\nmessages:\n  - {class: c, identify: ebpf}\n",
       "3:5: messages[0]",
       {"identify ebpf needs 'program'"}},
      {"classes: [{name: c, queue: 1, policy: fifo}]\nmessages:\n  - {class: c, identify: ebpf, "
       "program: missing.o}\n",
       "3:41: messages[0].program",
       {"eBPF object 'missing.o' not found", "relative paths"}},
      {"ports:\n  - {name: p, driver: af_xdp}\n",
       "2:5: ports[0].args",
       {"driver af_xdp needs argument 'iface'"}},
      {"ports:\n  - {name: p, driver: memif, args: {socket: /s, role: master}}\n",
       "2:55: ports[0].args.role",
       {"'master' is not a role; use server or client"}},
      {"ports:\n  - {name: p, driver: pcap, args: {loop: true}}\n",
       "2:35: ports[0].args",
       {"driver pcap needs 'rx_pcap' or 'tx_pcap'"}},
      {"ports:\n  - {name: p, driver: null, args: {size: big}}\n",
       "2:42: ports[0].args.size",
       {"expected a non-negative integer, got 'big'"}},
      // --- references and duplicates -------------------------------------------------------
      {"bridges:\n  - {name: b, ports: [gen9]}\n",
       "2:23: bridges[0].ports[0].port",
       {"unknown port 'gen9'", "no ports are defined"}},
      {"ports: [{name: gen0, driver: ring}]\nbridges:\n  - {name: b, ports: [gen9]}\n",
       "3:23: bridges[0].ports[0].port",
       {"unknown port 'gen9'; did you mean 'gen0'?"}},
      {"flows:\n  - {bridge: br9, rule: 'actions=drop'}\n",
       "2:14: flows[0].bridge",
       {"unknown bridge 'br9'"}},
      {"uplinks:\n  - {port: nope, rate: 1Gbps}\n",
       "2:12: uplinks[0].port",
       {"unknown port 'nope'"}},
      {"ports: [{name: p, driver: ring}]\nports2: []\n",
       "2:1: ports2",
       {"unknown key 'ports2'; did you mean 'ports'?"}},
      {"ports:\n  - {name: a, driver: ring}\n  - {name: a, driver: ring}\n",
       "3:12: ports[1].name",
       {"duplicate port name 'a'", "line 2, ports[0]"}},
      {"bridges:\n  - {name: b}\n  - {name: b}\n",
       "3:12: bridges[1].name",
       {"duplicate bridge name 'b'"}},
      {"classes:\n  - {name: a, queue: 1, policy: fifo}\n  - {name: a, queue: 2, policy: fifo}\n",
       "3:12: classes[1].name",
       {"duplicate class name 'a'"}},
      {"classes:\n  - {name: a, queue: 1, policy: fifo}\n  - {name: b, queue: 1, policy: fifo}\n",
       "3:22: classes[1].queue",
       {"queue 1 is already used by class 'a'"}},
      {"vms:\n  - {name: v, vcpus: 1, memory: 2MiB, image: x}\n  - {name: v, vcpus: 1, memory: "
       "2MiB, image: x}\n",
       "3:12: vms[1].name",
       {"duplicate VM name 'v'"}},
      {"templates:\n  - {name: t}\n  - {name: t}\n",
       "3:12: templates[1].name",
       {"duplicate template name 't'"}},
      {"blueprints:\n  - {name: b}\n  - {name: b}\n",
       "3:12: blueprints[1].name",
       {"duplicate blueprint name 'b'"}},
      {"templates: [{name: t, vcpus: 1, memory: 2MiB, image: x}]\nblueprints:\n  - name: b\n    "
       "tiers: [{name: w, template: t}, {name: w, template: t}]\n",
       "4:44: blueprints[0].tiers[1].name",
       {"duplicate tier name 'w'"}},
      {"hosts:\n  - {name: h, address: a}\n  - {name: h, address: b}\n",
       "3:12: hosts[1].name",
       {"duplicate host name 'h'"}},
      {"ports: [{name: a, driver: ring}]\nbridges:\n  - {name: b1, ports: [a]}\n  - {name: b2, "
       "ports: [a]}\n",
       "4:24: bridges[1].ports[0].port",
       {"port 'a' is already a member at bridges[0].ports[0]"}},
      {"flows:\n  - {bridge: br0, rule: 'tp_dst=80,actions=NORMAL'}\n",
       "8:25: flows[0].rule",
       {"Open vSwitch rejects the rule", "tp_dst=80: field needs its protocol first"}},
      {"flows:\n  - {bridge: br0, rule: 'in_port=gen7,actions=NORMAL'}\n",
       "8:25: flows[0].rule",
       {"Open vSwitch rejects the rule", "gen7"}},
      {"flows:\n  - {bridge: br0, rule: 'udp,actions=set_queue:9,NORMAL'}\n",
       "8:25: flows[0].rule",
       {"set_queue:9 names no class queue", "defined queues: 1 (rpc)"}},
      {"uplinks:\n  - {port: up0, rate: 1Gbps}\n  - {port: up0, rate: 2Gbps}\n",
       "9:12: uplinks[1].port",
       {"port 'up0' already has an uplink at uplinks[0]"}},
      {"uplinks:\n  - port: up0\n    rate: 1Gbps\n    scheduler:\n      tenants:\n        - {name: "
       "t, classes: [rpc, rcp]}\n",
       "12:36: uplinks[0].scheduler.tenants[0].classes[1]",
       {"unknown class 'rcp'", "did you mean 'rpc'?"}},
      // An item that is not a name does not shift the index of the items after it.
      {"uplinks:\n  - port: up0\n    rate: 1Gbps\n    scheduler:\n      tenants:\n        - {name: "
       "t, classes: [{x: 1}, rcp]}\n",
       "12:39: uplinks[0].scheduler.tenants[0].classes[1]",
       {"unknown class 'rcp'"}},
      // ... nor of the items after the next one: a good name, a bad item, then a bad name.
      {"uplinks:\n  - port: up0\n    rate: 1Gbps\n    scheduler:\n      tenants:\n        - {name: "
       "t, classes: [rpc, {x: 1}, rcp]}\n",
       "12:44: uplinks[0].scheduler.tenants[0].classes[2]",
       {"unknown class 'rcp'"}},
      {"uplinks:\n  - port: up0\n    rate: 1Gbps\n    scheduler:\n      tenants:\n        - {name: "
       "t, classes: [rpc, 9x, {y: 1}]}\n",
       "12:40: uplinks[0].scheduler.tenants[0].classes[2]",
       {"expected a string, got a mapping"}},
      {"templates: [{name: t, vcpus: 1, memory: 2MiB, image: x}]\nblueprints:\n  - name: b\n    "
       "tiers: [{name: w, template: t, depends_on: [[y], x]}]\n",
       "4:54: blueprints[0].tiers[0].depends_on[1]",
       {"unknown tier 'x'"}},
      {"templates: [{name: t, vcpus: 1, memory: 2MiB, image: x}]\nblueprints:\n  - name: b\n    "
       "tiers: [{name: w, template: t, depends_on: [v, [y], x]}, {name: v, template: t}]\n",
       "4:57: blueprints[0].tiers[0].depends_on[2]",
       {"unknown tier 'x'"}},
      {"uplinks:\n  - port: up0\n    rate: 1Gbps\n    scheduler:\n      tenants:\n        - {name: "
       "a, classes: [rpc]}\n        - {name: b, classes: [rpc]}\n",
       "13:31: uplinks[0].scheduler.tenants[1].classes[0]",
       {"class 'rpc' is already in tenant 'a' of this uplink"}},
      {"messages:\n  - {class: rpx, identify: homa}\n",
       "8:13: messages[0].class",
       {"unknown class 'rpx'; did you mean 'rpc'?"}},
      {"messages:\n  - {class: rpc, identify: homa}\n  - {class: rpc, identify: datagram}\n",
       "9:13: messages[1].class",
       {"class 'rpc' already has a message rule at messages[0]"}},
      {"vms:\n  - {name: v, template: smal}\ntemplates:\n  - {name: small, vcpus: 1, memory: 2MiB, "
       "image: x}\n",
       "2:25: vms[0].template",
       {"unknown template 'smal'; did you mean 'small'?"}},
      {"vms:\n  - {name: v, vcpus: 1, memory: 2MiB}\n",
       "8:5: vms[0]",
       {"missing 'image'", "or through a template"}},
      {"vms:\n  - {name: v, vcpus: 1, memory: 2MiB, image: x, nics: [{bridge: br1}]}\n",
       "8:65: vms[0].nics[0].bridge",
       {"unknown bridge 'br1'; did you mean 'br0'?"}},
      {"vms:\n  - {name: v, vcpus: 1, memory: 2MiB, image: x, nics: [{bridge: br0, class: "
       "bulk}]}\n",
       "8:77: vms[0].nics[0].class",
       {"unknown class 'bulk'", "defined classes: rpc"}},
      {"vms:\n  - {name: v, vcpus: 1, memory: 2MiB, image: x, nics: [{port: gen0}]}\n",
       "8:63: vms[0].nics[0].port",
       {"port 'gen0' has driver ring", "driver vm"}},
      {"vms:\n  - {name: v, vcpus: 1, memory: 2MiB, image: x, nics: [{}]}\n",
       "8:56: vms[0].nics[0]",
       {"missing 'bridge' or 'port'"}},
      {"classes2: []\nports:\n  - {name: vp, driver: vm}\n",
       "3:24: ports[0].driver",
       {"port 'vp' has driver vm but no VM NIC uses it"}},
      {"classes: [{name: c, queue: 1, policy: fifo, tenant: gld}]\nuplinks:\n  - {port: p, rate: "
       "1Gbps, scheduler: {tenants: [{name: gold, classes: []}]}}\n",
       "1:53: classes[0].tenant",
       {"tenant 'gld' is not defined", "did you mean 'gold'?"}},
      {"classes: [{name: c, queue: 1, policy: fifo, tenant: a}]\nuplinks:\n  - {port: p, rate: "
       "1Gbps, scheduler: {tenants: [{name: a}, {name: b, classes: [c]}]}}\n",
       "3:81: uplinks[0].scheduler.tenants[1].classes[0]",
       {"class 'c' says tenant: a (line 1), but is listed in tenant 'b'"}},
      {"templates: [{name: t, vcpus: 1, memory: 2MiB, image: x}]\nblueprints:\n  - name: b\n    "
       "tiers:\n      - {name: web, template: t, depends_on: [db]}\n      - {name: db, template: "
       "t, depends_on: [web]}\n",
       "6:46: blueprints[0].tiers[1].depends_on[0]",
       {"dependency cycle: web -> db -> web"}},
      {"templates: [{name: t, vcpus: 1, memory: 2MiB, image: x}]\nblueprints:\n  - name: b\n    "
       "tiers: [{name: w, template: t, depends_on: [x]}]\n",
       "4:49: blueprints[0].tiers[0].depends_on[0]",
       {"unknown tier 'x'"}},
      {"templates: [{name: t, vcpus: 1}]\nblueprints:\n  - name: b\n    tiers: [{name: w, "
       "template: t}]\n",
       "4:33: blueprints[0].tiers[0].template",
       {"template 't' lacks vcpus, memory or image"}},
      {"blueprints:\n  - name: b\n    tiers: [{name: w, template: nope}]\n",
       "3:33: blueprints[0].tiers[0].template",
       {"unknown template 'nope'", "no templates are defined"}},
      // --- quotas and templates' ready lines -------------------------------------------------
      {"quotas:\n  - {group: devs, vms: 1}\n",
       "2:5: quotas[0]",
       {"quotas bind the members of control.group", "set control.group"}},
      {"control: {group: g}\nquotas:\n  - {user: a, group: b}\n",
       "3:22: quotas[0].group",
       {"either a 'user' or a 'group'"}},
      {"control: {group: g}\nquotas:\n  - {vms: 1}\n",
       "3:5: quotas[0]",
       {"either a 'user' or a 'group'"}},
      {"control: {group: g}\nquotas:\n  - {user: 9lives}\n",
       "3:12: quotas[0].user",
       {"'9lives' is not a Unix user name"}},
      {"control: {group: g}\nquotas:\n  - {group: devs}\n  - {group: devs, vms: 2}\n",
       "4:13: quotas[1].group",
       {"duplicate quota for group 'devs' (first given at line 3)"}},
      {"control: {group: g}\nquotas:\n  - {group: devs, classes: [rpc, bulk]}\n",
       "9:34: quotas[0].classes[1]",
       {"unknown class 'bulk'", "defined classes: rpc"}},
      {"quotas:\n  - {group: d, vms: -1}\n",
       "2:21: quotas[0].vms",
       {"-1 is out of range; use a value from 0 to 100000"}},
      {"quotas:\n  - {group: d, cpus: 2}\n",
       "2:16: quotas[0].cpus",
       {"unknown key 'cpus'", "did you mean 'vcpus'?"}},
      {"quotas:\n  - {group: d, memory: lots}\n",
       "2:24: quotas[0].memory",
       {"'lots' is not a size"}},
      {"quotas: {group: d}\n", "1:9: quotas", {"expected a list, got a mapping"}},
      {"templates:\n  - {name: t, ready_timeout: 5s}\n",
       "2:30: templates[0].ready_timeout",
       {"a ready_timeout needs 'ready'"}},
      {"templates:\n  - {name: t, ready: up, ready_timeout: soon}\n",
       "2:41: templates[0].ready_timeout",
       {"'soon' is not a duration"}},
  };
  return cases;
}

// Cases whose line numbers start after kBase (line 7 onwards) refer to its names.
bool UsesBase(const BadCase& c) { return std::atoi(c.where) >= 7; }

}  // namespace

TEST_CASE("every bad input names file:line:col, the key path and the fix", "[config][errors]") {
  CHECK(Cases().size() >= 40);
  for (const BadCase& c : Cases()) {
    const std::string yaml = UsesBase(c) ? std::string(kBase) + c.yaml : std::string(c.yaml);
    const LoadResult r = LoadFromString(yaml, "box.yaml");
    INFO("YAML:\n" << yaml);
    INFO("errors:\n" << r.ErrorText());
    CHECK_FALSE(r.ok());
    CHECK_FALSE(r.config.has_value());
    const std::string prefix = std::string("box.yaml:") + c.where + ": ";
    bool found = false;
    for (const Diagnostic& d : r.errors) {
      const std::string text = d.ToString();
      if (text.rfind(prefix, 0) != 0) continue;
      bool all = true;
      for (const char* w : c.words) all = all && text.find(w) != std::string::npos;
      found = found || all;
    }
    INFO("expected: " << prefix << " ... " << c.words.front());
    CHECK(found);
  }
}

TEST_CASE("independent errors in one file are all reported, in file order", "[config][errors]") {
  const LoadResult r = LoadFromString(R"(dataplane:
  lcores: 0
  burst: 33
ports:
  - {name: p, driver: ring}
  - {name: p, driver: rng}
bridges:
  - {name: br0, ports: [q]}
classes:
  - {name: c, queue: 1, policy: edf}
uplinks:
  - {port: p, rate: 10Gbs}
vms:
  - {name: v, template: nope}
  - {name: w, template: small, vcpus: 2}
templates:
  - {name: small, memory: 2MiB}
hosts:
  - {name: h, address: 'x y'}
contrl: {}
)",
                                      "many.yaml");
  CHECK_FALSE(r.ok());
  const std::vector<std::string> expected = {
      "many.yaml:2:11: dataplane.lcores: 0 is out of range; use a value from 1 to 128",
      "many.yaml:3:10: dataplane.burst: 33 is out of range; use a value from 1 to 32",
      "many.yaml:6:12: ports[1].name: duplicate port name 'p' (already defined at line 5, "
      "ports[0]); names must be unique",
      "many.yaml:6:23: ports[1].driver: 'rng' is not a port driver; use one of: ring, null, tap, "
      "af_packet, af_xdp, memif, vhost-user, pcap, vm (did you mean 'ring'?)",
      "many.yaml:8:25: bridges[0].ports[0].port: unknown port 'q'; did you mean 'p'?",
      "many.yaml:10:5: classes[0]: policy edf needs 'deadline' (e.g. deadline: 100us)",
      "many.yaml:12:21: uplinks[0].rate: '10Gbs' is not a rate (unknown unit 'Gbs': bps, Kbps, "
      "Mbps, Gbps, Tbps); use e.g. 10Gbps or 250Mbps",
      "many.yaml:14:25: vms[0].template: unknown template 'nope'; defined templates: small",
      "many.yaml:15:5: vms[1]: missing 'image' (a guest kernel, e.g. guests/hello.elf); give it "
      "here or in template 'small'",
      "many.yaml:19:24: hosts[0].address: 'x y' is not an IP address or hostname; use e.g. "
      "192.0.2.10 or box-b.example",
      "many.yaml:20:1: contrl: unknown key 'contrl'; did you mean 'control'?",
  };
  std::vector<std::string> got;
  for (const Diagnostic& d : r.errors) got.push_back(d.ToString());
  CHECK(got == expected);
}

TEST_CASE("an empty file, or one of only comments and blanks, is refused", "[config][errors]") {
  for (const char* yaml :
       {"", "\n", "   \n\n", "# nothing yet\n", "# one\n  # two\n\n", "---\n", "---\n# x\n...\n"}) {
    const LoadResult r = LoadFromString(yaml, "conf/box.yaml");
    INFO("YAML: '" << yaml << "'");
    CHECK_FALSE(r.ok());
    CHECK(r.ErrorText() == "conf/box.yaml: empty configuration\n");
  }
  const auto path = std::filesystem::temp_directory_path() / "qosvisor-config-empty.yaml";
  std::ofstream(path) << "# the box's ports go here\n\n";
  const LoadResult r = LoadFromFile(path.string());
  CHECK_FALSE(r.ok());
  CHECK(r.ErrorText() == path.string() + ": empty configuration\n");
  std::filesystem::remove(path);
}

TEST_CASE("Printable escapes what a terminal would act on, keeps printable UTF-8", "[config]") {
  CHECK(Printable("plain ASCII ~ \\ 'q'") == "plain ASCII ~ \\ 'q'");
  CHECK(Printable("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") ==
        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  CHECK(Printable("a\x1b[31mb") == "a\\x1b[31mb");
  CHECK(Printable(std::string("\0\t\n\r\x7f", 5)) == "\\x00\\x09\\x0a\\x0d\\x7f");
  CHECK(Printable("\xc2\x9b") == "\\xc2\\x9b");                    // C1 CSI, valid UTF-8
  CHECK(Printable("\xe2\x80\xae") == "\\xe2\\x80\\xae");           // right-to-left override
  CHECK(Printable("\xff\xfe") == "\\xff\\xfe");                    // never in UTF-8
  CHECK(Printable("\xc3(") == "\\xc3(");                           // a lead without continuation
  CHECK(Printable("\xe2\x82") == "\\xe2\\x82");                    // truncated at the end
  CHECK(Printable("\xc0\xaf") == "\\xc0\\xaf");                    // overlong '/'
  CHECK(Printable("\xed\xa0\x80") == "\\xed\\xa0\\x80");           // a surrogate
  CHECK(Printable("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");  // past U+10FFFF
}

TEST_CASE("bytes from a binary file are escaped in every message", "[config][errors]") {
  // Keys as a binary file or a hostile one would have them: an escape sequence, a C1 control,
  // bytes that are not UTF-8, an escape written with YAML's own \e; and one legitimate "é".
  const std::string yaml =
      "dataplane:\n  \x1b[2Jx: 1\n  \xc2\x9b"
      "31m: 2\n  \xff\xfe: 3\n  \"\\e]0;t\\a\": 4\n"
      "  lcor\xc3\xa9s: 5\nports:\n  - {name: p, driver: ring, args: {\"\\x07\": 1}}\n";
  const LoadResult r = LoadFromString(yaml, "bin\x1b.yaml");
  const std::string text = r.ErrorText();
  INFO(text);
  CHECK_FALSE(r.ok());
  CHECK(text.find("bin\\x1b.yaml:2:3: dataplane.\\x1b[2Jx: unknown key '\\x1b[2Jx'") !=
        std::string::npos);
  CHECK(text.find("dataplane.\\xc2\\x9b31m: unknown key '\\xc2\\x9b31m'") != std::string::npos);
  CHECK(text.find("dataplane.\\xff\\xfe: unknown key '\\xff\\xfe'") != std::string::npos);
  CHECK(text.find("unknown key '\\x1b]0;t\\x07'") != std::string::npos);
  CHECK(text.find("unknown key 'lcor\xc3\xa9s'; did you mean 'lcores'?") != std::string::npos);
  CHECK(text.find("driver ring has no argument '\\x07'") != std::string::npos);
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    INFO("byte " << static_cast<int>(byte));
    CHECK((byte == '\n' || (byte >= 0x20 && byte != 0x7f)));
  }
  CHECK(text.find("\xc2\x9b") == std::string::npos);
  CHECK(text.find('\xff') == std::string::npos);
}

TEST_CASE("no exception escapes on hostile input", "[config][errors]") {
  for (const char* yaml :
       {"{", "[[[[", "a: *undefined", "? [a]\n: b\n", "\t- x", "%YAML 9.9\n---\n",
        "ports: !!binary AAAA\n", "dataplane: 5\n", "---\na: 1\n---\nb: 2\n"}) {
    INFO(yaml);
    LoadResult r;
    CHECK_NOTHROW(r = LoadFromString(yaml, "h.yaml"));
    if (!r.ok()) CHECK_FALSE(r.errors.empty());
  }
  std::string deep(5000, '[');
  CHECK_NOTHROW(LoadFromString(deep, "deep.yaml"));
}

}  // namespace qosvisor::config
