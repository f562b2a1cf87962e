// Checks that span keys and sections (references, duplicates, limits between values), expands
// templates into VMs and creates the implicit VM ports, reporting every problem it finds.
#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "common/units.h"
#include "config/flows.h"
#include "config/parse.h"

namespace qosvisor::config {
namespace {

constexpr uint64_t kMinFrameBytes = 1518;  // one full-size Ethernet frame
constexpr uint64_t kPageBytes = 4096;
constexpr uint64_t kHugepageBytes = 2ull << 20;
constexpr uint64_t kMinPublishIntervalNs = 100'000'000ull;

std::string Child(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
}

template <typename T>
std::vector<std::string> NamesOf(const std::vector<T>& items) {
  std::vector<std::string> names;
  for (const T& item : items) names.push_back(item.name);
  return names;
}

// Kinds of argument a port driver takes; values are checked and normalized by kind.
enum class ArgKind { kText, kUint, kBool, kRole };

struct ArgSpec {
  std::string_view name;
  ArgKind kind;
  bool required;
  std::string_view help;
};

std::vector<ArgSpec> ArgsOf(Driver driver) {
  switch (driver) {
    case Driver::kRing:
    case Driver::kVm:
      return {};
    case Driver::kNull:
      return {{"size", ArgKind::kUint, false, "frame size in bytes"},
              {"no_rx", ArgKind::kBool, false, "a pure sink: receives nothing"}};
    case Driver::kTap:
      return {{"iface", ArgKind::kText, false, "the tap interface name"}};
    case Driver::kAfPacket:
      return {{"iface", ArgKind::kText, true, "the host interface, e.g. eth0"},
              {"qpairs", ArgKind::kUint, false, "queue pairs"}};
    case Driver::kAfXdp:
      return {{"iface", ArgKind::kText, true, "the host interface, e.g. eth0"},
              {"queue", ArgKind::kUint, false, "the first queue"}};
    case Driver::kMemif:
      return {{"socket", ArgKind::kText, true, "the memif control socket path"},
              {"role", ArgKind::kRole, false, "server or client"},
              {"id", ArgKind::kUint, false, "the interface id"},
              {"rx_queues", ArgKind::kUint, false, "receive queues, 1..16"}};
    case Driver::kVhostUser:
      return {{"path", ArgKind::kText, true, "the vhost-user socket path"},
              {"mode", ArgKind::kRole, false, "server or client"},
              {"queues", ArgKind::kUint, false, "queue pairs"}};
    case Driver::kPcap:
      return {{"rx_pcap", ArgKind::kText, false, "a capture file to read"},
              {"tx_pcap", ArgKind::kText, false, "a capture file to write"},
              {"loop", ArgKind::kBool, false, "replay rx_pcap forever"}};
  }
  return {};
}

class Validator {
 public:
  Validator(Parsed& parsed, Diagnostics& diag)
      : parsed_(parsed), config_(parsed.config), diag_(diag) {}

  void Run() {
    CheckDataplane();
    CheckTemplates();
    CheckPortArgs();
    ResolveVms();
    CheckUnique(config_.ports, "port name");
    CheckBridges();
    CheckVmPortUse();
    CheckClasses();
    CheckFlows();
    CheckMessages();
    CheckUplinks();
    CheckClassTenants();
    CheckBlueprints();
    CheckUnique(config_.hosts, "host name");
    CheckQuotas();
    CheckFleet();
    CheckMigration();
    CheckGuestMemory();
  }

 private:
  void Error(const Source& source, std::string_view key, std::string message) {
    diag_.Error(source.At(key), key.empty() ? source.path : Child(source.path, key),
                std::move(message));
  }

  // Reports an unknown reference with a suggestion; empty names were reported by the parser.
  bool CheckRef(const std::string& name, const std::vector<std::string>& known,
                const Source& source, std::string_view key, std::string_view what) {
    if (name.empty() || std::find(known.begin(), known.end(), name) != known.end()) return true;
    std::string hint = Suggest(name, known);
    if (hint.empty()) {
      std::vector<std::string> unique;
      for (const std::string& k : known) {
        if (std::find(unique.begin(), unique.end(), k) == unique.end()) unique.push_back(k);
      }
      const std::string plural = std::string(what) + (what.ends_with("s") ? "es" : "s");
      hint = unique.empty() ? fmt::format("no {} are defined", plural)
                            : fmt::format("defined {}: {}", plural, fmt::join(unique, ", "));
    }
    Error(source, key, fmt::format("unknown {} '{}'; {}", what, name, hint));
    return false;
  }

  template <typename T>
  void CheckUnique(const std::vector<T>& items, std::string_view what) {
    std::map<std::string, const T*> seen;
    for (const T& item : items) {
      if (item.name.empty()) continue;
      auto [it, inserted] = seen.emplace(item.name, &item);
      if (!inserted) {
        Error(item.source, "name",
              fmt::format("duplicate {} '{}' (already defined at line {}, {}); names must be "
                          "unique",
                          what, item.name, it->second->source.mark.line, it->second->source.path));
      }
    }
  }

  // ---- dataplane ----------------------------------------------------------------------------

  void CheckDataplane() {
    const Dataplane& d = config_.dataplane;
    if (d.memory_bytes % kHugepageBytes != 0) {
      Error(d.source, "memory",
            fmt::format("{} is not a multiple of 2MiB (the hugepage size); use e.g. {}",
                        FormatSize(d.memory_bytes),
                        FormatSize((d.memory_bytes / kHugepageBytes + 1) * kHugepageBytes)));
    }
    const bool prefix_ok =
        !d.file_prefix.empty() &&
        std::all_of(d.file_prefix.begin(), d.file_prefix.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
        });
    if (!prefix_ok) {
      Error(d.source, "file_prefix",
            fmt::format("'{}' is not a valid file prefix; use letters, digits, '_' and '-' "
                        "(e.g. qosvisor-b)",
                        d.file_prefix));
    }
  }

  // ---- ports --------------------------------------------------------------------------------

  void CheckPortArgs() {
    for (Port& port : config_.ports) CheckArgs(port);
  }

  void CheckArgs(Port& port) {
    const std::vector<ArgSpec> specs = ArgsOf(port.driver);
    std::vector<std::string> names;
    for (const ArgSpec& s : specs) names.emplace_back(s.name);
    for (auto& [key, value] : port.args) {
      const std::string& arg = key;  // clang 14 cannot capture structured bindings
      auto spec =
          std::find_if(specs.begin(), specs.end(), [&](const ArgSpec& s) { return s.name == arg; });
      const std::string where = "args." + key;
      if (spec == specs.end()) {
        std::string hint = Suggest(key, names);
        if (hint.empty()) {
          hint = names.empty() ? "it takes no arguments"
                               : fmt::format("it takes: {}", fmt::join(names, ", "));
        }
        diag_.Error(
            port.source.At(where + ".key"), Child(port.source.path, where),
            fmt::format("driver {} has no argument '{}'; {}", ToString(port.driver), key, hint));
        continue;
      }
      CheckArgValue(port, *spec, value);
    }
    for (const ArgSpec& s : specs) {
      if (s.required && !port.args.contains(std::string(s.name))) {
        Error(port.source, "args",
              fmt::format("driver {} needs argument '{}' ({})", ToString(port.driver), s.name,
                          s.help));
      }
    }
    if (port.driver == Driver::kPcap && !port.args.contains("rx_pcap") &&
        !port.args.contains("tx_pcap")) {
      Error(port.source, "args",
            "driver pcap needs 'rx_pcap' or 'tx_pcap' (or both): a capture file to read or write");
    }
    if (port.driver == Driver::kMemif && !port.args.contains("role")) port.args["role"] = "client";
    if (port.driver == Driver::kVhostUser && !port.args.contains("mode")) {
      port.args["mode"] = "server";
    }
  }

  void CheckArgValue(Port& port, const ArgSpec& spec, std::string& value) {
    const std::string where = fmt::format("args.{}", spec.name);
    switch (spec.kind) {
      case ArgKind::kText:
        if (value.empty()) Error(port.source, where, fmt::format("needs {}", spec.help));
        return;
      case ArgKind::kUint:
        if (value.empty() ||
            !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
            value.size() > 9) {
          Error(port.source, where,
                fmt::format("expected a non-negative integer, got '{}'", value));
        }
        return;
      case ArgKind::kBool:
        if (value == "true" || value == "yes" || value == "on") {
          value = "true";
        } else if (value == "false" || value == "no" || value == "off") {
          value = "false";
        } else {
          Error(port.source, where, fmt::format("expected true or false, got '{}'", value));
        }
        return;
      case ArgKind::kRole:
        if (value != "server" && value != "client") {
          Error(port.source, where, fmt::format("'{}' is not a role; use server or client", value));
        }
        return;
    }
  }

  // ---- templates and VMs --------------------------------------------------------------------

  void CheckSettings(const VmSettings& s, const Source& source) {
    if (s.memory_bytes && (*s.memory_bytes % kPageBytes != 0 || *s.memory_bytes < kHugepageBytes)) {
      Error(source, "memory",
            fmt::format("{} is not usable guest memory; use a multiple of 4KiB (the page size) "
                        "of at least 2MiB, e.g. 64MiB",
                        FormatSize(*s.memory_bytes)));
    }
    if (s.disk) CheckDisk(*s.disk);
    if (s.nics) {
      for (const Nic& nic : *s.nics) CheckNicShape(nic);
    }
  }

  void CheckDisk(const Disk& disk) {
    if (disk.size_bytes % 512 != 0) {
      Error(disk.source, "size",
            fmt::format("{} is not a multiple of 512 bytes (the sector size); use e.g. 1GiB",
                        FormatSize(disk.size_bytes)));
    }
    if (disk.max_size_bytes && *disk.max_size_bytes < disk.size_bytes) {
      Error(disk.source, "max_size",
            fmt::format("max_size {} is below the disk's size {}; use at least {}, or leave "
                        "max_size out to grow as far as the file system has room",
                        FormatSize(*disk.max_size_bytes), FormatSize(disk.size_bytes),
                        FormatSize(disk.size_bytes)));
    }
  }

  void CheckNicShape(const Nic& nic) {
    if (nic.bridge && nic.port) {
      Error(nic.source, "port",
            "give either 'bridge' (an implicit port is created) or 'port' (an explicit port of "
            "driver vm), not both");
    } else if (!nic.bridge && !nic.port) {
      Error(nic.source, "",
            "missing 'bridge' or 'port': a NIC attaches to a bridge (e.g. bridge: br0) or to an "
            "explicit port of driver vm");
    }
  }

  void CheckTemplates() {
    CheckUnique(config_.templates, "template name");
    for (const VmTemplate& t : config_.templates) {
      CheckSettings(t.settings, t.source);
      if (t.ready_timeout_ns && !t.ready) {
        Error(t.source, "ready_timeout",
              "a ready_timeout needs 'ready': the text the guest prints on its serial line once "
              "it serves");
      }
    }
  }

  const VmTemplate* FindTemplate(const std::string& name) const {
    for (const VmTemplate& t : config_.templates) {
      if (t.name == name) return &t;
    }
    return nullptr;
  }

  void ResolveVms() {
    std::vector<std::string> vm_names;
    for (const ParsedVm& pv : parsed_.vms) {
      CheckSettings(pv.settings, pv.source);
      config_.vms.push_back(ResolveVm(pv));
    }
    CheckUnique(config_.vms, "VM name");
  }

  Vm ResolveVm(const ParsedVm& pv) {
    Vm vm;
    vm.name = pv.name;
    vm.template_name = pv.template_name;
    vm.autostart = pv.autostart;
    vm.source = pv.source;
    VmSettings s;
    bool template_known = true;
    if (pv.template_name) {
      if (const VmTemplate* t = FindTemplate(*pv.template_name)) {
        s = t->settings;
      } else {
        template_known = false;
        CheckRef(*pv.template_name, NamesOf(config_.templates), pv.source, "template", "template");
      }
    }
    Overlay(pv.settings, s);
    // With an unknown template, "missing vcpus" would only repeat the same mistake three times.
    if (template_known) RequireSettings(vm, s);
    vm.vcpus = s.vcpus.value_or(1);
    vm.memory_bytes = s.memory_bytes.value_or(0);
    vm.image = s.image.value_or("");
    vm.initrd = s.initrd;
    vm.cmdline = s.cmdline;
    vm.disk = s.disk;
    vm.serial_log_max_bytes = s.serial_log_max_bytes.value_or(kDefaultSerialLogMaxBytes);
    if (s.nics) vm.nics = *s.nics;
    for (size_t i = 0; i < vm.nics.size(); ++i) AttachNic(vm, i);
    return vm;
  }

  // Keys given on the VM replace the template's; lists and the disk as a whole.
  static void Overlay(const VmSettings& over, VmSettings& base) {
    if (over.vcpus) base.vcpus = over.vcpus;
    if (over.memory_bytes) base.memory_bytes = over.memory_bytes;
    if (over.image) base.image = over.image;
    if (over.initrd) base.initrd = over.initrd;
    if (over.cmdline) base.cmdline = over.cmdline;
    if (over.nics) base.nics = over.nics;
    if (over.disk) base.disk = over.disk;
    if (over.serial_log_max_bytes) base.serial_log_max_bytes = over.serial_log_max_bytes;
  }

  void RequireSettings(const Vm& vm, const VmSettings& s) {
    RequireSetting(vm, s.vcpus.has_value(), "vcpus", "e.g. vcpus: 1");
    RequireSetting(vm, s.memory_bytes.has_value(), "memory", "e.g. memory: 64MiB");
    RequireSetting(vm, s.image.has_value(), "image", "a guest kernel, e.g. guests/hello.elf");
  }

  void RequireSetting(const Vm& vm, bool present, std::string_view key, std::string_view help) {
    // A key that was given but invalid has been reported already; "missing" would mislead.
    if (present || vm.source.keys.contains(key)) return;
    Error(vm.source, "",
          fmt::format("missing '{}' ({}); give it here{}", key, help,
                      vm.template_name ? fmt::format(" or in template '{}'", *vm.template_name)
                                       : std::string(" or through a template")));
  }

  void AttachNic(Vm& vm, size_t index) {
    Nic& nic = vm.nics[index];
    if (nic.class_name) {
      CheckRef(*nic.class_name, NamesOf(config_.classes), nic.source, "class", "class");
    }
    if (nic.port && !nic.bridge) {
      explicit_nic_ports_.push_back({*nic.port, nic.source});
      return;
    }
    if (!nic.bridge || vm.name.empty()) return;
    const std::string port_name = fmt::format("{}.eth{}", vm.name, index);
    nic.port = port_name;
    nic.implicit_port = true;
    auto bridge = std::find_if(config_.bridges.begin(), config_.bridges.end(),
                               [&](const Bridge& b) { return b.name == *nic.bridge; });
    if (bridge == config_.bridges.end()) {
      CheckRef(*nic.bridge, NamesOf(config_.bridges), nic.source, "bridge", "bridge");
      return;
    }
    Port port;
    port.name = port_name;
    port.driver = Driver::kVm;
    port.mac = nic.mac;
    port.implicit = true;
    port.source = nic.source;
    config_.ports.push_back(std::move(port));
    BridgePort member;
    member.port = port_name;
    member.implicit = true;
    member.source = nic.source;
    bridge->ports.push_back(std::move(member));
  }

  // Every explicit port of driver vm is the NIC of exactly one VM.
  void CheckVmPortUse() {
    std::map<std::string, const Source*> user;  // port → the NIC using it
    for (const auto& [name, source] : explicit_nic_ports_) {
      const std::string& wanted = name;  // clang 14 cannot capture structured bindings
      auto port = std::find_if(config_.ports.begin(), config_.ports.end(),
                               [&](const Port& p) { return p.name == wanted && !p.implicit; });
      if (port == config_.ports.end()) {
        std::vector<std::string> vm_ports;
        for (const Port& p : config_.ports) {
          if (p.driver == Driver::kVm && !p.implicit) vm_ports.push_back(p.name);
        }
        CheckRef(name, vm_ports, source, "port", "vm port");
        continue;
      }
      if (port->driver != Driver::kVm) {
        Error(source, "port",
              fmt::format("port '{}' has driver {}; a VM NIC needs a port of driver vm, or use "
                          "'bridge' to get one implicitly",
                          name, ToString(port->driver)));
        continue;
      }
      auto [it, inserted] = user.emplace(name, &source);
      if (!inserted) {
        Error(source, "port",
              fmt::format("port '{}' is already the NIC at {}; a vm port serves exactly one NIC",
                          name, it->second->path));
      }
    }
    for (const Port& p : config_.ports) {
      if (p.driver == Driver::kVm && !p.implicit && !p.name.empty() && !user.contains(p.name)) {
        Error(p.source, "driver",
              fmt::format("port '{}' has driver vm but no VM NIC uses it; name it in a VM's "
                          "nics (port: {}) or remove it",
                          p.name, p.name));
      }
    }
  }

  // ---- bridges and flows --------------------------------------------------------------------

  void CheckBridges() {
    CheckUnique(config_.bridges, "bridge name");
    std::map<std::string, std::string> owner;  // port → path of the member that took it
    for (const Bridge& b : config_.bridges) {
      if (b.mac_aging_ns == 0) Error(b.source, "mac_aging", "must be > 0, e.g. 300s");
      for (const BridgePort& m : b.ports) {
        if (!m.implicit && !CheckRef(m.port, NamesOf(config_.ports), m.source, "port", "port")) {
          continue;
        }
        auto [it, inserted] = owner.emplace(m.port, m.source.path);
        if (!inserted) {
          Error(m.source, m.implicit ? "bridge" : "port",
                fmt::format("port '{}' is already a member at {}; a port belongs to one bridge, "
                            "once",
                            m.port, it->second));
        }
      }
    }
  }

  void CheckFlows() {
    std::map<uint32_t, std::string> queues;
    for (const TrafficClass& c : config_.classes) queues.emplace(c.queue, c.name);
    for (Flow& f : config_.flows) {
      auto bridge = std::find_if(config_.bridges.begin(), config_.bridges.end(),
                                 [&](const Bridge& b) { return b.name == f.bridge; });
      if (bridge == config_.bridges.end()) {
        CheckRef(f.bridge, NamesOf(config_.bridges), f.source, "bridge", "bridge");
        continue;
      }
      if (f.rule.empty()) continue;
      std::vector<std::string> names;
      for (const BridgePort& m : bridge->ports) names.push_back(m.port);
      Result<std::string> normalized = CheckFlowRule(f.rule, names);
      if (!normalized.ok()) {
        Error(f.source, "rule",
              fmt::format("Open vSwitch rejects the rule: {}; write it as for ovs-ofctl "
                          "add-flow, e.g. \"priority=100,udp,tp_dst=5000,actions=set_queue:1,"
                          "NORMAL\"",
                          normalized.message()));
        continue;
      }
      f.normalized = *normalized;
      for (uint32_t q : SetQueueIds(f.normalized)) {
        if (queues.contains(q)) continue;
        std::vector<std::string> known;
        for (const auto& [id, name] : queues) known.push_back(fmt::format("{} ({})", id, name));
        Error(
            f.source, "rule",
            fmt::format("set_queue:{} names no class queue; {}", q,
                        known.empty() ? std::string("no classes are defined")
                                      : fmt::format("defined queues: {}", fmt::join(known, ", "))));
      }
    }
  }

  // ---- classes, messages, uplinks -----------------------------------------------------------

  void CheckClasses() {
    CheckUnique(config_.classes, "class name");
    std::map<uint32_t, const TrafficClass*> queues;
    for (const TrafficClass& c : config_.classes) {
      auto [it, inserted] = queues.emplace(c.queue, &c);
      if (!inserted) {
        Error(c.source, "queue",
              fmt::format("queue {} is already used by class '{}'; each class needs its own id",
                          c.queue, it->second->name));
      }
      CheckPolicyKeys(c);
    }
  }

  void CheckPolicyKeys(const TrafficClass& c) {
    const std::string_view policy = ToString(c.policy);
    if (c.policy == Policy::kEdf && !c.deadline_ns) {
      Error(c.source, "", "policy edf needs 'deadline' (e.g. deadline: 100us)");
    }
    if (c.policy != Policy::kEdf && c.deadline_ns) {
      Error(c.source, "deadline",
            fmt::format("'deadline' applies only to policy edf, not {}; remove it or use "
                        "policy: edf",
                        policy));
    }
    if (c.policy == Policy::kPace && !c.rate_bps) {
      Error(c.source, "", "policy pace needs 'rate' (e.g. rate: 100Mbps)");
    }
    if (c.policy != Policy::kSrpt && c.aging_ns) {
      Error(c.source, "aging",
            fmt::format("'aging' applies only to policy srpt, not {}; remove it", policy));
    }
  }

  void CheckMessages() {
    std::map<std::string, std::string> seen;
    for (const MessageRule& m : config_.messages) {
      CheckRef(m.class_name, NamesOf(config_.classes), m.source, "class", "class");
      auto [it, inserted] = seen.emplace(m.class_name, m.source.path);
      if (!inserted && !m.class_name.empty()) {
        Error(m.source, "class",
              fmt::format("class '{}' already has a message rule at {}; give each class one",
                          m.class_name, it->second));
      }
      CheckIdentifyKeys(m);
    }
  }

  void CheckIdentifyKeys(const MessageRule& m) {
    const bool gap = m.identify == Identify::kTcpGap;
    const bool ebpf = m.identify == Identify::kEbpf;
    if (gap && !m.idle_ns) Error(m.source, "", "identify tcp-gap needs 'idle' (e.g. idle: 1ms)");
    // (An hour: the most the scheduler lets a class keep a quiet message for.)
    constexpr uint64_t kMaxIdleNs = 3'600'000'000'000ull;
    if (gap && m.idle_ns && *m.idle_ns > kMaxIdleNs) {
      Error(m.source, "idle",
            fmt::format("{} is longer than a tcp-gap burst may stay quiet (at most 1h; e.g. 1ms)",
                        FormatDuration(*m.idle_ns)));
    }
    if (!gap && m.idle_ns) {
      Error(m.source, "idle",
            fmt::format("'idle' applies only to identify tcp-gap, not {}", ToString(m.identify)));
    }
    if (ebpf && !m.program) {
      Error(m.source, "", "identify ebpf needs 'program' (an eBPF object, e.g. bpf/classify.o)");
    }
    for (const auto& [key, given] : {std::pair{"program", m.program.has_value()},
                                     std::pair{"section", m.section.has_value()}}) {
      if (!ebpf && given) {
        Error(m.source, key,
              fmt::format("'{}' applies only to identify ebpf, not {}", key, ToString(m.identify)));
      }
    }
    if (ebpf && m.program) {
      const std::string path = config_.Resolve(*m.program);
      std::error_code ec;
      if (!std::filesystem::is_regular_file(path, ec)) {
        Error(m.source, "program",
              fmt::format("eBPF object '{}' not found (looked for {}); build it first or fix "
                          "the path (relative paths start at the YAML file's directory)",
                          *m.program, path));
      }
    }
  }

  void CheckUplinks() {
    std::map<std::string, std::string> by_port;
    for (Uplink& u : config_.uplinks) {
      if (CheckRef(u.port, NamesOf(config_.ports), u.source, "port", "port") && !u.port.empty()) {
        auto [it, inserted] = by_port.emplace(u.port, u.source.path);
        if (!inserted) {
          Error(u.source, "port",
                fmt::format("port '{}' already has an uplink at {}; one uplink per port", u.port,
                            it->second));
        }
      }
      CheckUplinkLimits(u);
      CheckTenants(u);
    }
  }

  // The pacer's bucket bounds what leaves at once after the lcore was kept from polling (by the
  // kernel or the host): a deep bucket turns a stall into a burst that queues in the NIC's FIFO,
  // behind the scheduler, where a 2% pacing margin takes 50 times the burst's length to drain.
  void CheckPacingBurst(Uplink& u) {
    constexpr uint64_t kDefaultBurstNs = 20'000;
    constexpr uint64_t kMaxBurstBytes = 1ull << 30;
    if (u.pacing_burst_bytes == 0) {
      const uint64_t timed = u.pacing_bps / 8 * kDefaultBurstNs / 1'000'000'000;
      u.pacing_burst_bytes = std::max<uint64_t>(2 * kMinFrameBytes, timed);
    } else if (u.pacing_burst_bytes < kMinFrameBytes || u.pacing_burst_bytes > kMaxBurstBytes) {
      Error(u.source, "pacing_burst",
            fmt::format("{} must be between one full-size frame ({}B) and 1GiB; leave it out "
                        "for 20us at the pacing rate",
                        FormatSize(u.pacing_burst_bytes), kMinFrameBytes));
    }
  }

  void CheckUplinkLimits(Uplink& u) {
    if (u.rate_bps == 0) return;  // missing or bad: reported by the parser
    if (u.pacing_bps == 0) {
      // Slightly below line rate so queues build here, where ranks decide (docs/architecture.md).
      u.pacing_bps = std::max<uint64_t>(1, u.rate_bps / 100 * 98 + u.rate_bps % 100 * 98 / 100);
    } else if (u.pacing_bps > u.rate_bps) {
      Error(u.source, "pacing",
            fmt::format("pacing {} is above the line rate {}; pace at or below it (e.g. {})",
                        FormatRate(u.pacing_bps), FormatRate(u.rate_bps),
                        FormatRate(u.rate_bps / 100 * 98)));
    }
    CheckPacingBurst(u);
    if (u.buffer_bytes < kMinFrameBytes) {
      Error(u.source, "buffer",
            fmt::format("{} cannot hold one full-size frame ({}B); use e.g. 4MiB",
                        FormatSize(u.buffer_bytes), kMinFrameBytes));
    }
    if (u.message_limit_bytes &&
        (*u.message_limit_bytes < kMinFrameBytes || *u.message_limit_bytes > u.buffer_bytes)) {
      Error(u.source, "message_limit",
            fmt::format("{} is outside {}B..{} (one full-size frame up to the buffer); use e.g. "
                        "256KiB",
                        FormatSize(*u.message_limit_bytes), kMinFrameBytes,
                        FormatSize(u.buffer_bytes)));
    }
  }

  void CheckTenants(const Uplink& u) {
    CheckUnique(u.scheduler.tenants, "tenant name");
    std::map<std::string, std::string> owner;  // class → tenant on this uplink
    for (const Tenant& t : u.scheduler.tenants) {
      tenant_names_.insert(t.name);
      for (size_t i = 0; i < t.classes.size(); ++i) {
        const std::string& name = t.classes[i];
        Source item = t.source;
        item.path = fmt::format("{}.classes[{}]", t.source.path, i);
        item.mark = t.source.At(fmt::format("classes[{}]", i));
        // Empty: an item that was not a name, already reported by the parser (two of them must
        // not read as one class listed twice).
        if (name.empty() || !CheckRef(name, NamesOf(config_.classes), item, "", "class")) continue;
        auto [it, inserted] = owner.emplace(name, t.name);
        if (!inserted) {
          Error(item, "",
                fmt::format("class '{}' is already in tenant '{}' of this uplink; a class "
                            "belongs to one tenant",
                            name, it->second));
        }
        CheckClassTenantMatches(name, t, item);
      }
    }
  }

  void CheckClassTenantMatches(const std::string& class_name, const Tenant& t, const Source& item) {
    for (const TrafficClass& c : config_.classes) {
      if (c.name == class_name && c.tenant && *c.tenant != t.name) {
        Error(item, "",
              fmt::format("class '{}' says tenant: {} (line {}), but is listed in tenant '{}'",
                          class_name, *c.tenant, c.source.At("tenant").line, t.name));
      }
    }
  }

  void CheckClassTenants() {
    std::vector<std::string> known(tenant_names_.begin(), tenant_names_.end());
    for (const TrafficClass& c : config_.classes) {
      if (!c.tenant) continue;
      if (tenant_names_.contains(*c.tenant)) continue;
      std::string hint = Suggest(*c.tenant, known);
      Error(c.source, "tenant",
            fmt::format(
                "tenant '{}' is not defined in any uplink's scheduler.tenants; {}", *c.tenant,
                !hint.empty()   ? hint
                : known.empty() ? std::string("no tenants are defined")
                                : fmt::format("defined tenants: {}", fmt::join(known, ", "))));
    }
  }

  // ---- blueprints and hosts -----------------------------------------------------------------

  void CheckBlueprints() {
    CheckUnique(config_.blueprints, "blueprint name");
    for (const Blueprint& b : config_.blueprints) {
      CheckUnique(b.tiers, "tier name");
      const std::vector<std::string> tiers = NamesOf(b.tiers);
      for (const Tier& t : b.tiers) CheckTier(t, tiers);
      CheckCycles(b);
    }
  }

  void CheckTier(const Tier& t, const std::vector<std::string>& tiers) {
    if (!t.template_name.empty()) {
      if (const VmTemplate* tmpl = FindTemplate(t.template_name)) {
        const VmSettings& s = tmpl->settings;
        if (!s.vcpus || !s.memory_bytes || !s.image) {
          Error(t.source, "template",
                fmt::format("template '{}' lacks vcpus, memory or image, which a tier's VMs "
                            "need",
                            t.template_name));
        }
      } else {
        CheckRef(t.template_name, NamesOf(config_.templates), t.source, "template", "template");
      }
    }
    if (t.class_name) CheckRef(*t.class_name, NamesOf(config_.classes), t.source, "class", "class");
    for (size_t i = 0; i < t.depends_on.size(); ++i) {
      CheckRef(t.depends_on[i], tiers, t.source, fmt::format("depends_on[{}]", i), "tier");
    }
  }

  // Depth-first search; a tier met again while on the stack closes a cycle, reported once.
  void CheckCycles(const Blueprint& b) {
    std::map<std::string, const Tier*> by_name;
    for (const Tier& t : b.tiers) by_name.emplace(t.name, &t);
    std::map<std::string, int> state;  // 0 new, 1 on stack, 2 done
    std::vector<std::string> stack;
    std::function<void(const Tier&)> visit = [&](const Tier& t) {
      state[t.name] = 1;
      stack.push_back(t.name);
      for (size_t i = 0; i < t.depends_on.size(); ++i) {
        const std::string& d = t.depends_on[i];
        auto next = by_name.find(d);
        if (next == by_name.end()) continue;
        if (state[d] == 1) {
          auto start = std::find(stack.begin(), stack.end(), d);
          std::vector<std::string> cycle(start, stack.end());
          cycle.push_back(d);
          Error(t.source, fmt::format("depends_on[{}]", i),
                fmt::format("dependency cycle: {}; remove one dependency so the tiers can start "
                            "in order",
                            fmt::join(cycle, " -> ")));
        } else if (state[d] == 0) {
          visit(*next->second);
        }
      }
      stack.pop_back();
      state[t.name] = 2;
    };
    for (const Tier& t : b.tiers) {
      if (state[t.name] == 0) visit(t);
    }
  }

  // ---- quotas -------------------------------------------------------------------------------

  // A Unix user or group name as useradd/groupadd accept them.
  static bool IsUnixName(const std::string& name) {
    if (name.empty() || name.size() > 32 || name[0] == '-' ||
        std::isdigit(static_cast<unsigned char>(name[0]))) {
      return false;
    }
    return std::all_of(name.begin(), name.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
    });
  }

  void CheckQuotas() {
    if (!config_.quotas.empty() && !config_.control.group) {
      Error(config_.quotas.front().source, "",
            "quotas bind the members of control.group, and there is none: set control.group "
            "(without it only root may use the socket)");
    }
    std::map<std::string, const Quota*> seen;
    for (const Quota& q : config_.quotas) {
      if (q.user.has_value() == q.group.has_value()) {
        Error(q.source, q.user ? "group" : "",
              "a quota names either a 'user' or a 'group' (e.g. group: devs), not both and not "
              "neither");
        continue;
      }
      const char* key = q.user ? "user" : "group";
      const std::string& name = q.user ? *q.user : *q.group;
      if (!IsUnixName(name)) {
        Error(q.source, key,
              fmt::format("'{}' is not a Unix {} name; use up to 32 letters, digits, '_', '-' "
                          "or '.', starting with a letter or '_'",
                          name, key));
        continue;
      }
      auto [it, inserted] = seen.emplace(fmt::format("{} {}", key, name), &q);
      if (!inserted) {
        Error(q.source, key,
              fmt::format("duplicate quota for {} '{}' (first given at line {})", key, name,
                          it->second->source.At(key).line));
      }
      if (!q.classes) continue;
      for (size_t i = 0; i < q.classes->size(); ++i) {
        CheckRef((*q.classes)[i], NamesOf(config_.classes), q.source, fmt::format("classes[{}]", i),
                 "class");
      }
    }
  }

  // ---- fleet and migration ------------------------------------------------------------------

  void CheckFleet() {
    if (!config_.fleet) return;
    const Fleet& f = *config_.fleet;
    if (f.publish_interval_ns >= f.lease_ttl_ns) {
      Error(f.source, "publish_interval",
            fmt::format("{} is not below lease_ttl ({}): the host would vanish between two "
                        "publications; use e.g. a third of lease_ttl",
                        FormatDuration(f.publish_interval_ns), FormatDuration(f.lease_ttl_ns)));
    } else if (f.publish_interval_ns < kMinPublishIntervalNs) {
      Error(f.source, "publish_interval",
            fmt::format("{} is too short for a write to etcd each time; use at least {}",
                        FormatDuration(f.publish_interval_ns),
                        FormatDuration(kMinPublishIntervalNs)));
    }
    CheckUnique(f.anti_affinity, "anti-affinity group");
    for (const AntiAffinityGroup& g : f.anti_affinity) CheckAntiAffinityGroup(g);
  }

  // A group of one constrains nothing, and a name twice in one group is a typo for another.
  void CheckAntiAffinityGroup(const AntiAffinityGroup& g) {
    std::set<std::string> seen;
    for (size_t i = 0; i < g.vms.size(); ++i) {
      if (!g.vms[i].empty() && !seen.insert(g.vms[i]).second) {
        Error(g.source, fmt::format("vms[{}]", i),
              fmt::format("vm '{}' is named twice in anti-affinity group '{}'", g.vms[i], g.name));
      }
    }
    if (g.vms.size() < 2) {
      Error(g.source, "vms",
            fmt::format("anti-affinity group '{}' needs at least two VMs (it keeps them apart)",
                        g.name));
    }
  }

  // A harvest takes the whole dirty log; much more often than this costs the guests more (each
  // harvest write-protects their memory again) than it teaches.
  void CheckGuestMemory() {
    const GuestMemory& g = config_.guest_memory;
    constexpr uint64_t kMinPeriodNs = 10'000'000;
    if (g.track_period_ns < kMinPeriodNs) {
      Error(g.source, "track_period",
            fmt::format("{} is too short: at least 10ms", FormatDuration(g.track_period_ns)));
    }
    if (!g.track && g.huge_pages == HugePagePolicy::kAuto) {
      Error(g.source, "huge_pages",
            "'auto' decides from the page tracker's counters; with track: false use 'off' or "
            "'all'");
    }
  }

  void CheckMigration() {
    const Migration& m = config_.migration;
    if (!m.listen.empty() && m.key_file.empty()) {
      Error(m.source, "listen",
            "a migration listener needs migration.key_file (the key both ends authenticate "
            "with, e.g. /etc/qosvisor/migration.key)");
    }
    if (!m.class_name.empty()) {
      CheckRef(m.class_name, NamesOf(config_.classes), m.source, "class", "class");
    }
    if (m.downtime_ns >= m.timeout_ns) {
      Error(m.source, "downtime",
            fmt::format("{} is not below migration.timeout ({})", FormatDuration(m.downtime_ns),
                        FormatDuration(m.timeout_ns)));
    }
  }

  Parsed& parsed_;
  Config& config_;
  Diagnostics& diag_;
  std::vector<std::pair<std::string, Source>> explicit_nic_ports_;
  std::set<std::string> tenant_names_;
};

}  // namespace

void Validate(Parsed& parsed, Diagnostics& diag) { Validator(parsed, diag).Run(); }

bool IsHostAddress(std::string_view text) {
  const std::string s(text);
  in6_addr v6;
  if (inet_pton(AF_INET, s.c_str(), &v6) == 1 || inet_pton(AF_INET6, s.c_str(), &v6) == 1) {
    return true;
  }
  // RFC 1123 hostname: dot-separated labels of letters, digits and inner hyphens.
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find('.', start);
    if (end == std::string::npos) end = s.size();
    const std::string_view label = text.substr(start, end - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
    }
    start = end + 1;
  }
  return true;
}

bool IsHostPort(std::string_view text) {
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string_view host = text.substr(0, colon);
  const std::string_view port = text.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return false;
    host = host.substr(1, host.size() - 2);
    in6_addr v6;
    if (inet_pton(AF_INET6, std::string(host).c_str(), &v6) != 1) return false;
  } else if (!IsHostAddress(host) || host.find(':') != std::string_view::npos) {
    return false;
  }
  if (port.empty() || port.size() > 5) return false;
  unsigned value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value >= 1 && value <= 65535;
}

}  // namespace qosvisor::config
