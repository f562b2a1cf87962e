// Loading valid configurations: every key of the schema, every unit spelling, the defaults,
// template expansion with implicit VM ports, and the Format() round trip.
#include "config/loader.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

namespace qosvisor::config {
namespace {

constexpr uint64_t kKiB = 1ull << 10;
constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

// A directory holding the eBPF object that the full example names by a relative path.
std::string TestDir() {
  const auto dir = std::filesystem::temp_directory_path() / "qosvisor-config-test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "classify.o") << "not really ELF; only existence is checked\n";
  return dir.string();
}

// Every key of the schema, each with a value other than its default.
constexpr const char* kFull = R"(
dataplane:
  lcores: 2
  memory: 512MiB
  hugepages: on
  mbufs: 32767
  burst: 16
  forward_unparsable: true
  isolate: true
  file_prefix: qv-test
ports:
  - name: gen0
    driver: ring
    mac: 02:00:00:00:00:01
  - name: nul
    driver: null
    args: {size: 64}
  - name: tap0
    driver: tap
    args: {iface: qvtap0}
  - name: uplink0
    driver: af_packet
    args: {iface: eth0, qpairs: 2}
  - name: xdp0
    driver: af_xdp
    args: {iface: eth1, queue: 0}
  - name: mif0
    driver: memif
    args: {socket: /run/memif.sock, id: 3, rx_queues: 2}
  - name: vhu0
    driver: vhost-user
    args: {path: /tmp/vhu0.sock, queues: 2}
  - name: cap0
    driver: pcap
    args: {rx_pcap: in.pcap, tx_pcap: out.pcap, loop: yes}
  - name: vmport
    driver: vm
bridges:
  - name: br0
    ports:
      - gen0
      - {port: uplink0, vlan: {mode: trunk, tags: [10, 20]}}
      - port: tap0
        vlan: {mode: access, tag: 10}
      - vmport
    mac_aging: 10m
    mac_table_size: 4096
  - name: br1
    ports: [nul, xdp0, mif0, vhu0, cap0]
flows:
  - bridge: br0
    table: 3
    rule: "priority=100,udp,tp_dst=5000,actions=set_queue:1,NORMAL"
  - bridge: br0
    rule: "in_port=gen0,actions=set_queue:2,output:uplink0"
classes:
  - name: interactive
    queue: 1
    policy: srpt
    tenant: tenant-a
    weight: 3
    priority: 1
    aging: 2ms
  - name: bulk
    queue: 2
    policy: las
    tenant: tenant-a
  - name: deadline
    queue: 3
    policy: edf
    deadline: 100us
    tenant: tenant-b
  - name: paced
    queue: 4
    policy: pace
    rate: 100Mbps
  - {name: fifo-c, queue: 5, policy: fifo}
  - {name: prio-c, queue: 6, policy: priority, priority: 7}
  - {name: wfq-c, queue: 65535, policy: wfq, weight: 1_000_000}
messages:
  - {class: interactive, identify: homa}
  - {class: bulk, identify: tcp-gap, idle: 1ms}
  - {class: deadline, identify: datagram}
  - {class: paced, identify: ebpf, program: classify.o, section: classify}
uplinks:
  - port: uplink0
    rate: 10Gbps
    pacing: 9.5Gbps
    buffer: 8MiB
    buffer_packets: 1024
    message_limit: 256KiB
    drop: tail
    max_messages: 1000
    scheduler:
      share: priority
      tenants:
        - name: tenant-a
          weight: 2
          priority: 1
          share: priority
          classes: [interactive, bulk]
        - name: tenant-b
          classes: [deadline]
  - port: xdp0
    rate: 1Gbps
templates:
  - name: small
    vcpus: 2
    memory: 64MiB
    image: guests/hello.elf
    initrd: guests/initrd.img
    cmdline: "console=ttyS0 quiet"
    nics:
      - {bridge: br0, class: interactive, mac: 02:00:00:00:10:01}
    disk: {path: disks/small.img, size: 1GiB, max_size: 4GiB}
    serial_log_max: 256KiB
    ready: "hello: up"
    ready_timeout: 20s
vms:
  - name: vm1
    template: small
  - name: vm2
    template: small
    vcpus: 4
    memory: 128MiB
    image: guests/other.elf
    initrd: other.img
    cmdline: ""
    nics:
      - {port: vmport, class: bulk}
      - {bridge: br1}
    disk: {path: /var/lib/vm2.img, size: 2GiB, max_size: 2GiB}
    serial_log_max: 3MB
    autostart: false
blueprints:
  - name: shop
    tiers:
      - {name: web, template: small, count: 2, class: interactive, depends_on: [db]}
      - {name: db, template: small}
hosts:
  - {name: box-b, address: 192.0.2.10, port: 7701}
  - {name: box-c, address: "2001:db8::2"}
  - {name: box-d, address: box-d.example}
quotas:
  - {group: devs, vms: 4, vcpus: 8, memory: 1GiB, disk: 0B, classes: [interactive]}
  - {user: alice, memory: 256MiB}
control:
  socket: /tmp/qv.sock
  metrics: 127.0.0.1:9100
  group: qosvisor
)";

Config LoadOk(std::string_view yaml, const std::string& file = "box.yaml") {
  LoadResult r = LoadFromString(yaml, file);
  INFO(r.ErrorText());
  REQUIRE(r.ok());
  REQUIRE(r.errors.empty());
  return *r.config;
}

}  // namespace

TEST_CASE("every key of the schema is read into its field", "[config]") {
  const std::string file = TestDir() + "/box.yaml";
  const Config c = LoadOk(kFull, file);
  CHECK(c.base_dir == TestDir());

  const Dataplane& d = c.dataplane;
  CHECK(d.lcores == 2);
  CHECK(d.memory_bytes == 512 * kMiB);
  CHECK(d.hugepages == Hugepages::kOn);
  CHECK(d.mbufs == 32767);
  CHECK(d.burst == 16);
  CHECK(d.forward_unparsable);
  CHECK(d.isolate);
  CHECK(d.file_prefix == "qv-test");

  // Written ports first, then the implicit ports of bridge NICs in VM order.
  REQUIRE(c.ports.size() == 11);
  CHECK(c.ports[0].mac->ToString() == "02:00:00:00:00:01");
  CHECK(c.ports[1].driver == Driver::kNull);
  CHECK(c.ports[1].args.at("size") == "64");
  CHECK(c.ports[2].driver == Driver::kTap);
  CHECK(c.ports[3].driver == Driver::kAfPacket);
  CHECK(c.ports[3].args == std::map<std::string, std::string>{{"iface", "eth0"}, {"qpairs", "2"}});
  CHECK(c.ports[4].driver == Driver::kAfXdp);
  CHECK(c.ports[4].args.at("queue") == "0");
  CHECK(c.ports[5].driver == Driver::kMemif);
  CHECK(c.ports[5].args.at("role") == "client");  // default filled in
  CHECK(c.ports[5].args.at("id") == "3");
  CHECK(c.ports[5].args.at("rx_queues") == "2");
  CHECK(c.ports[6].driver == Driver::kVhostUser);
  CHECK(c.ports[6].args.at("mode") == "server");  // default filled in
  CHECK(c.ports[7].driver == Driver::kPcap);
  CHECK(c.ports[7].args.at("loop") == "true");  // normalized from "yes"
  CHECK(c.ports[8].driver == Driver::kVm);
  CHECK_FALSE(c.ports[8].implicit);
  CHECK(c.ports[9].name == "vm1.eth0");
  CHECK(c.ports[9].implicit);
  CHECK(c.ports[9].driver == Driver::kVm);
  CHECK(c.ports[9].mac->ToString() == "02:00:00:00:10:01");
  CHECK(c.ports[10].name == "vm2.eth1");

  REQUIRE(c.bridges.size() == 2);
  const Bridge& br0 = c.bridges[0];
  REQUIRE(br0.ports.size() == 5);
  CHECK(br0.ports[0].port == "gen0");
  CHECK_FALSE(br0.ports[0].vlan);
  CHECK(br0.ports[1].vlan->mode == VlanMode::kTrunk);
  CHECK(br0.ports[1].vlan->tags == std::vector<uint16_t>{10, 20});
  CHECK(br0.ports[2].vlan->mode == VlanMode::kAccess);
  CHECK(br0.ports[2].vlan->tag == 10);
  CHECK(br0.ports[4].port == "vm1.eth0");
  CHECK(br0.ports[4].implicit);
  CHECK(br0.mac_aging_ns == 600'000'000'000ull);
  CHECK(br0.mac_table_size == 4096);
  CHECK(c.bridges[1].ports.back().port == "vm2.eth1");

  REQUIRE(c.flows.size() == 2);
  CHECK(c.flows[0].table == 3);
  CHECK(c.flows[0].normalized.find("set_queue:1") != std::string::npos);
  CHECK(c.flows[1].table == 0);
  CHECK(c.flows[1].normalized.find("in_port=gen0") != std::string::npos);

  REQUIRE(c.classes.size() == 7);
  const TrafficClass& i = c.classes[0];
  CHECK(i.queue == 1);
  CHECK(i.policy == Policy::kSrpt);
  CHECK(i.tenant == "tenant-a");
  CHECK(i.weight == 3);
  CHECK(i.priority == 1);
  CHECK(i.aging_ns == 2'000'000u);
  CHECK(c.classes[1].policy == Policy::kLas);
  CHECK(c.classes[2].policy == Policy::kEdf);
  CHECK(c.classes[2].deadline_ns == 100'000u);
  CHECK(c.classes[3].policy == Policy::kPace);
  CHECK(c.classes[3].rate_bps == 100'000'000u);
  CHECK(c.classes[4].policy == Policy::kFifo);
  CHECK(c.classes[5].policy == Policy::kPriority);
  CHECK(c.classes[5].priority == 7);
  CHECK(c.classes[6].policy == Policy::kWfq);
  CHECK(c.classes[6].weight == 1'000'000);
  CHECK(c.classes[6].queue == 65535);

  REQUIRE(c.messages.size() == 4);
  CHECK(c.messages[0].identify == Identify::kHoma);
  CHECK(c.messages[1].identify == Identify::kTcpGap);
  CHECK(c.messages[1].idle_ns == 1'000'000u);
  CHECK(c.messages[2].identify == Identify::kDatagram);
  CHECK(c.messages[3].identify == Identify::kEbpf);
  CHECK(c.messages[3].program == "classify.o");
  CHECK(c.messages[3].section == "classify");
  CHECK(c.Resolve(*c.messages[3].program) == TestDir() + "/classify.o");

  REQUIRE(c.uplinks.size() == 2);
  const Uplink& u = c.uplinks[0];
  CHECK(u.port == "uplink0");
  CHECK(u.rate_bps == 10'000'000'000u);
  CHECK(u.pacing_bps == 9'500'000'000u);
  // 20 us at 9.5 Gbps; a 1 Gbps uplink gets the floor of two full frames.
  CHECK(u.pacing_burst_bytes == 23'750u);
  CHECK(c.uplinks[1].pacing_burst_bytes >= 2 * 1518u);
  CHECK(u.buffer_bytes == 8 * kMiB);
  CHECK(u.buffer_packets == 1024);
  CHECK(u.message_limit_bytes == 256 * kKiB);
  CHECK(u.drop == DropPolicy::kTail);
  CHECK(u.max_messages == 1000);
  CHECK(u.scheduler.share == Share::kPriority);
  REQUIRE(u.scheduler.tenants.size() == 2);
  const Tenant& ta = u.scheduler.tenants[0];
  CHECK(ta.name == "tenant-a");
  CHECK(ta.weight == 2);
  CHECK(ta.priority == 1);
  CHECK(ta.share == Share::kPriority);
  CHECK(ta.classes == std::vector<std::string>{"interactive", "bulk"});
  const Tenant& tb = u.scheduler.tenants[1];
  CHECK(tb.weight == 1);
  CHECK(tb.priority == 0);
  CHECK(tb.share == Share::kWfq);
  CHECK(c.uplinks[1].pacing_bps == 980'000'000u);  // 98% of the rate by default
  CHECK(c.uplinks[1].scheduler.tenants.empty());   // one implicit tenant

  REQUIRE(c.templates.size() == 1);
  const VmSettings& s = c.templates[0].settings;
  CHECK(s.vcpus == 2u);
  CHECK(s.memory_bytes == 64 * kMiB);
  CHECK(s.image == "guests/hello.elf");
  CHECK(s.initrd == "guests/initrd.img");
  CHECK(s.cmdline == "console=ttyS0 quiet");
  REQUIRE(s.nics->size() == 1);
  CHECK((*s.nics)[0].bridge == "br0");
  CHECK(s.disk->path == "disks/small.img");
  CHECK(s.disk->size_bytes == kGiB);
  CHECK(s.disk->max_size_bytes == 4 * kGiB);
  CHECK(s.serial_log_max_bytes == 256 * kKiB);
  CHECK(c.templates[0].ready == "hello: up");
  CHECK(c.templates[0].ready_timeout_ns == 20'000'000'000u);

  REQUIRE(c.vms.size() == 2);
  const Vm& vm1 = c.vms[0];  // everything from the template
  CHECK(vm1.template_name == "small");
  CHECK(vm1.vcpus == 2);
  CHECK(vm1.memory_bytes == 64 * kMiB);
  CHECK(vm1.image == "guests/hello.elf");
  CHECK(vm1.initrd == "guests/initrd.img");
  CHECK(vm1.cmdline == "console=ttyS0 quiet");
  REQUIRE(vm1.nics.size() == 1);
  CHECK(vm1.nics[0].port == "vm1.eth0");
  CHECK(vm1.nics[0].implicit_port);
  CHECK(vm1.nics[0].class_name == "interactive");
  CHECK(vm1.disk->path == "disks/small.img");
  CHECK(vm1.disk->max_size_bytes == 4 * kGiB);
  CHECK(vm1.serial_log_max_bytes == 256 * kKiB);
  CHECK(vm1.autostart);
  const Vm& vm2 = c.vms[1];  // every key overridden
  CHECK(vm2.vcpus == 4);
  CHECK(vm2.memory_bytes == 128 * kMiB);
  CHECK(vm2.image == "guests/other.elf");
  CHECK(vm2.initrd == "other.img");
  CHECK(vm2.cmdline == "");
  REQUIRE(vm2.nics.size() == 2);
  CHECK(vm2.nics[0].port == "vmport");
  CHECK_FALSE(vm2.nics[0].implicit_port);
  CHECK(vm2.nics[1].port == "vm2.eth1");
  CHECK(vm2.disk->path == "/var/lib/vm2.img");
  CHECK(vm2.disk->size_bytes == 2 * kGiB);
  CHECK(vm2.disk->max_size_bytes == 2 * kGiB);  // equal to the size: never grows
  CHECK(vm2.serial_log_max_bytes == 3'000'000u);
  CHECK_FALSE(vm2.autostart);

  REQUIRE(c.blueprints.size() == 1);
  REQUIRE(c.blueprints[0].tiers.size() == 2);
  const Tier& web = c.blueprints[0].tiers[0];
  CHECK(web.template_name == "small");
  CHECK(web.count == 2);
  CHECK(web.class_name == "interactive");
  CHECK(web.depends_on == std::vector<std::string>{"db"});
  CHECK(c.blueprints[0].tiers[1].count == 1);

  REQUIRE(c.hosts.size() == 3);
  CHECK(c.hosts[0].address == "192.0.2.10");
  CHECK(c.hosts[0].port == 7701);
  CHECK(c.hosts[1].address == "2001:db8::2");
  CHECK(c.hosts[1].port == 7700);
  CHECK(c.hosts[2].address == "box-d.example");

  REQUIRE(c.quotas.size() == 2);
  const Quota& devs = c.quotas[0];
  CHECK(devs.group == "devs");
  CHECK_FALSE(devs.user.has_value());
  CHECK(devs.vms == 4u);
  CHECK(devs.vcpus == 8u);
  CHECK(devs.memory_bytes == kGiB);
  CHECK(devs.disk_bytes == 0u);  // no disks at all
  CHECK(devs.classes == std::vector<std::string>{"interactive"});
  const Quota& alice = c.quotas[1];
  CHECK(alice.user == "alice");
  CHECK(alice.memory_bytes == 256 * kMiB);
  CHECK_FALSE(alice.vms.has_value());  // no limit
  CHECK_FALSE(alice.classes.has_value());

  CHECK(c.control.socket == "/tmp/qv.sock");
  CHECK(c.control.metrics == "127.0.0.1:9100");
  CHECK(c.control.group == "qosvisor");
}

TEST_CASE("positions are kept for later layers", "[config]") {
  const Config c = LoadOk(kFull, TestDir() + "/box.yaml");
  const Uplink& u = c.uplinks[0];
  CHECK(u.source.path == "uplinks[0]");
  CHECK(u.source.mark.line == 86);
  CHECK(u.source.mark.column == 5);
  CHECK(u.source.At("rate").line == 87);
  CHECK(u.source.At("rate").column == 11);
  CHECK(u.source.At("no-such-key").line == 86);             // falls back to the mapping
  CHECK(c.ports[9].source.path == "templates[0].nics[0]");  // implicit port: where its NIC is
}

TEST_CASE("empty sections give every default", "[config]") {
  for (const char* yaml : {"dataplane: {}\ncontrol: {}\n", "ports: []\nbridges:\n"}) {
    const Config c = LoadOk(yaml);
    CHECK(c.dataplane.lcores == 1);
    CHECK(c.dataplane.memory_bytes == kGiB);
    CHECK(c.dataplane.hugepages == Hugepages::kAuto);
    CHECK(c.dataplane.mbufs == 16383);
    CHECK(c.dataplane.burst == 32);
    CHECK_FALSE(c.dataplane.forward_unparsable);
    CHECK_FALSE(c.dataplane.isolate);
    CHECK(c.dataplane.file_prefix == "qosvisor");
    CHECK(c.ports.empty());
    CHECK(c.control.socket == "/run/qosvisor/qosvisor.sock");
    CHECK_FALSE(c.control.metrics);
    CHECK_FALSE(c.control.group);  // the socket stays root's (mode 0600)
  }
}

TEST_CASE("defaults inside list items", "[config]") {
  const Config c = LoadOk(R"(
ports: [{name: p, driver: ring}]
bridges: [{name: b, ports: [p]}]
classes: [{name: c, queue: 0, policy: fifo}]
uplinks: [{port: p, rate: 100Mbps}]
hosts: [{name: h, address: 10.0.0.1}]
)");
  CHECK(c.bridges[0].mac_aging_ns == 300'000'000'000ull);
  CHECK(c.bridges[0].mac_table_size == 8192);
  CHECK(c.classes[0].weight == 1);
  CHECK(c.classes[0].priority == 0);
  CHECK_FALSE(c.classes[0].tenant);
  const Uplink& u = c.uplinks[0];
  CHECK(u.pacing_bps == 98'000'000u);
  CHECK(u.buffer_bytes == 4 * kMiB);
  CHECK(u.buffer_packets == 4096);
  CHECK_FALSE(u.message_limit_bytes);
  CHECK(u.drop == DropPolicy::kWorst);
  CHECK(u.max_messages == 65536);
  CHECK(u.scheduler.share == Share::kWfq);
  CHECK(c.hosts[0].port == 7700);
}

TEST_CASE("a VM's serial log cap and its disk's growth limit have defaults", "[config]") {
  const Config c = LoadOk(R"(
templates:
  - {name: t, vcpus: 1, memory: 2MiB, image: a.elf, serial_log_max: 64KiB}
vms:
  - {name: plain, vcpus: 1, memory: 2MiB, image: a.elf, disk: {path: d.img, size: 1MiB}}
  - {name: from-t, template: t}
  - {name: over, template: t, serial_log_max: 1GiB}
)");
  CHECK(c.vms[0].serial_log_max_bytes == kMiB);
  REQUIRE(c.vms[0].disk);
  CHECK_FALSE(c.vms[0].disk->max_size_bytes);  // as far as the file system has room
  CHECK(c.vms[1].serial_log_max_bytes == 64 * kKiB);
  CHECK(c.vms[2].serial_log_max_bytes == kGiB);
  const std::string text = Format(c);
  INFO(text);
  CHECK(text.find("serial_log_max: 1MiB") != std::string::npos);  // the default, explicit
  CHECK(text.find("max_size") == std::string::npos);
  CHECK(text.find("group") == std::string::npos);
}

TEST_CASE("rates in every unit", "[config][units]") {
  auto [text, bps] = GENERATE(table<const char*, uint64_t>({
      {"800bps", 800},
      {"64Kbps", 64'000},
      {"250Mbps", 250'000'000},
      {"2.5Gbps", 2'500'000'000},
      {"1Tbps", 1'000'000'000'000},
  }));
  const Config c =
      LoadOk(std::string("ports: [{name: p, driver: ring}]\nuplinks: [{port: p, rate: ") + text +
             ", pacing: " + text + "}]\n");
  CHECK(c.uplinks[0].rate_bps == bps);
  CHECK(c.uplinks[0].pacing_bps == bps);
}

TEST_CASE("sizes in every unit", "[config][units]") {
  auto [text, bytes] = GENERATE(table<const char*, uint64_t>({
      {"4096", 4096},
      {"4096B", 4096},
      {"2KB", 2'000},
      {"3MB", 3'000'000},
      {"2GB", 2'000'000'000},
      {"1TB", 1'000'000'000'000},
      {"2KiB", 2 * kKiB},
      {"3MiB", 3 * kMiB},
      {"2GiB", 2 * kGiB},
      {"1TiB", 1024 * kGiB},
  }));
  const Config c = LoadOk(std::string("ports: [{name: p, driver: ring}]\nuplinks: [{port: p, "
                                      "rate: 1Gbps, buffer: ") +
                          text + "}]\n");
  CHECK(c.uplinks[0].buffer_bytes == bytes);
}

TEST_CASE("durations in every unit", "[config][units]") {
  auto [text, ns] = GENERATE(table<const char*, uint64_t>({
      {"500ns", 500},
      {"100us", 100'000},
      {"5ms", 5'000'000},
      {"300s", 300'000'000'000},
      {"5m", 300'000'000'000},
      {"1h", 3'600'000'000'000},
  }));
  const Config c = LoadOk(std::string("bridges: [{name: b, mac_aging: ") + text + "}]\n");
  CHECK(c.bridges[0].mac_aging_ns == ns);
}

TEST_CASE("a VM without a template, and template overrides replace lists whole", "[config]") {
  const Config c = LoadOk(R"(
bridges: [{name: br0}]
classes: [{name: c, queue: 1, policy: fifo}]
templates:
  - {name: t, vcpus: 1, memory: 2MiB, image: a.elf, nics: [{bridge: br0}, {bridge: br0}]}
vms:
  - {name: plain, vcpus: 2, memory: 8MiB, image: b.elf}
  - {name: none, template: t, nics: []}
  - {name: one, template: t, nics: [{bridge: br0, class: c}]}
)");
  CHECK_FALSE(c.vms[0].template_name);
  CHECK(c.vms[0].nics.empty());
  CHECK(c.vms[1].nics.empty());
  REQUIRE(c.vms[2].nics.size() == 1);
  CHECK(c.vms[2].nics[0].port == "one.eth0");
  REQUIRE(c.bridges[0].ports.size() == 1);
  CHECK(c.ports.size() == 1);
}

TEST_CASE("Format() output loads back to an equal Config", "[config][format]") {
  const std::string file = TestDir() + "/box.yaml";
  const Config c = LoadOk(kFull, file);
  const std::string text = Format(c);
  INFO(text);
  const Config again = LoadOk(text, file);
  CHECK(again == c);
  CHECK(Format(again) == text);  // normalized: a fixed point
  CHECK(text.find("rate: 10Gbps") != std::string::npos);
  CHECK(text.find("memory: 512MiB") != std::string::npos);
  CHECK(text.find("mac_aging: 10m") != std::string::npos);
  CHECK(text.find("vm1.eth0") == std::string::npos);  // implicit ports are recreated, not printed
  CHECK(text.find("group: qosvisor") != std::string::npos);
  CHECK(text.find("max_size: 4GiB") != std::string::npos);
  CHECK(text.find("serial_log_max: 256KiB") != std::string::npos);
  CHECK(text.find("ready_timeout: 20s") != std::string::npos);
  CHECK(text.find("group: devs") != std::string::npos);

  Config changed = again;
  changed.uplinks[0].pacing_bps -= 1;
  CHECK_FALSE(changed == c);
  changed = again;
  changed.control.group.reset();
  CHECK_FALSE(changed == c);
  changed = again;
  changed.quotas[0].vcpus = 9;
  CHECK_FALSE(changed == c);
}

TEST_CASE("LoadFromFile reads files and reports unreadable ones", "[config]") {
  const std::string path = TestDir() + "/small.yaml";
  std::ofstream(path) << "dataplane:\n  lcores: 3\n";
  LoadResult r = LoadFromFile(path);
  REQUIRE(r.ok());
  CHECK(r.config->dataplane.lcores == 3);

  LoadResult missing = LoadFromFile(TestDir() + "/does-not-exist.yaml");
  CHECK_FALSE(missing.ok());
  REQUIRE(missing.errors.size() == 1);
  CHECK(missing.errors[0].ToString() ==
        TestDir() +
            "/does-not-exist.yaml:1:1: cannot read the configuration file: No such file "
            "or directory");
  CHECK_FALSE(LoadFromFile(TestDir()).ok());  // a directory is not a file
}

TEST_CASE("Diagnostic and LoadResult text", "[config]") {
  Diagnostic d{"box.yaml", 3, 7, "uplinks[1].rate", "bad"};
  CHECK(d.ToString() == "box.yaml:3:7: uplinks[1].rate: bad");
  d.path.clear();
  CHECK(d.ToString() == "box.yaml:3:7: bad");
  CHECK(Diagnostic{"box.yaml", 0, 0, "", "empty"}.ToString() == "box.yaml: empty");  // no spot
  LoadResult r;
  r.errors = {d, d};
  CHECK(r.ErrorText() == "box.yaml:3:7: bad\nbox.yaml:3:7: bad\n");
  CHECK_FALSE(r.ok());
}

}  // namespace qosvisor::config
