// The typed configuration of one box, as read from its YAML file and validated.
// Lower layers take these plain structs as arguments; none of them knows about YAML.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qosvisor::config {

// A 1-based position in the YAML file (0 means "not from the file", e.g. a default).
struct Mark {
  int line = 0;
  int column = 0;
  // Positions are bookkeeping, not meaning: a reformatted file yields an equal Config.
  friend bool operator==(const Mark&, const Mark&) { return true; }
};

// Where a struct came from: its mapping, and the value of every key that was given, so that
// checks made after parsing (and by later layers) can point at the exact spot.
struct Source {
  Mark mark;
  std::string path;  // key path of the struct, e.g. "uplinks[1]"
  std::map<std::string, Mark, std::less<>> keys;

  // Position of the value of 'key', or of the mapping when the key was not given.
  Mark At(std::string_view key) const {
    auto it = keys.find(key);
    return it == keys.end() ? mark : it->second;
  }
  friend bool operator==(const Source&, const Source&) { return true; }
};

struct MacAddress {
  std::array<uint8_t, 6> bytes{};
  std::string ToString() const;  // "02:00:00:00:00:01"
  bool operator==(const MacAddress&) const = default;
};

// ---- dataplane -------------------------------------------------------------------------------

enum class Hugepages { kAuto, kOn, kOff };

struct Dataplane {
  uint32_t lcores = 1;
  uint64_t memory_bytes = 1ull << 30;
  Hugepages hugepages = Hugepages::kAuto;
  uint32_t mbufs = 16383;
  uint32_t burst = 32;
  bool forward_unparsable = false;  // forward truncated/malformed frames at L2 instead of dropping
  // Room for ports that join the running switch (VMs restored, forked or created later).
  uint32_t spare_ports = 64;
  // Keep other tasks, unbound workqueues and interrupts off the workers' CPUs while running.
  bool isolate = false;
  std::string file_prefix = "qosvisor";
  Source source;
  bool operator==(const Dataplane&) const = default;
};

// ---- ports and bridges -----------------------------------------------------------------------

enum class Driver { kRing, kNull, kTap, kAfPacket, kAfXdp, kMemif, kVhostUser, kPcap, kVm };

struct Port {
  std::string name;
  Driver driver = Driver::kRing;
  std::optional<MacAddress> mac;
  // Driver arguments as written (scalars as text), checked per driver; defaults of memif 'role'
  // and vhost-user 'mode' are filled in so that lower layers need not know them.
  std::map<std::string, std::string> args;
  // Created by the loader for a VM NIC attached by 'bridge' (named "<vm>.eth<i>"); not printed
  // by Format() because reloading creates it again.
  bool implicit = false;
  Source source;
  bool operator==(const Port&) const = default;
};

enum class VlanMode { kAccess, kTrunk };

struct Vlan {
  VlanMode mode = VlanMode::kAccess;
  uint16_t tag = 0;            // access mode
  std::vector<uint16_t> tags;  // trunk mode
  bool operator==(const Vlan&) const = default;
};

struct BridgePort {
  std::string port;
  std::optional<Vlan> vlan;  // none: untagged member
  bool implicit = false;     // a VM NIC's implicit port, appended after the written members
  Source source;
  bool operator==(const BridgePort&) const = default;
};

struct Bridge {
  std::string name;
  std::vector<BridgePort> ports;  // OpenFlow port numbers are 1..n in this order
  uint64_t mac_aging_ns = 300'000'000'000ull;
  uint32_t mac_table_size = 8192;
  Source source;
  bool operator==(const Bridge&) const = default;
};

struct Flow {
  std::string bridge;
  uint32_t table = 0;
  std::string rule;        // as written (ovs-ofctl syntax)
  std::string normalized;  // as the Open vSwitch parser prints it back; filled by validation
  Source source;
  bool operator==(const Flow&) const = default;
};

// ---- classes, messages, uplinks --------------------------------------------------------------

enum class Policy { kFifo, kPriority, kSrpt, kLas, kWfq, kEdf, kPace };

struct TrafficClass {
  std::string name;
  uint32_t queue = 0;  // the N of flow action set_queue:N
  Policy policy = Policy::kFifo;
  std::optional<std::string> tenant;
  uint32_t weight = 1;
  uint32_t priority = 0;                // 0 is highest
  std::optional<uint64_t> deadline_ns;  // edf only (required there)
  std::optional<uint64_t> rate_bps;     // required for pace
  std::optional<uint64_t> aging_ns;     // srpt only
  Source source;
  bool operator==(const TrafficClass&) const = default;
};

enum class Identify { kHoma, kTcpGap, kDatagram, kEbpf };

// How packets of one class are grouped into messages.
struct MessageRule {
  std::string class_name;
  Identify identify = Identify::kDatagram;
  std::optional<uint64_t> idle_ns;     // tcp-gap only (required there)
  std::optional<std::string> program;  // ebpf only (required there); relative to Config::base_dir
  std::optional<std::string> section;  // ebpf only
  Source source;
  bool operator==(const MessageRule&) const = default;
};

enum class DropPolicy { kWorst, kTail };
enum class Share { kWfq, kPriority };

struct Tenant {
  std::string name;
  uint32_t weight = 1;
  uint32_t priority = 0;
  Share share = Share::kWfq;  // among this tenant's classes
  std::vector<std::string> classes;
  Source source;
  bool operator==(const Tenant&) const = default;
};

struct SchedulerConfig {
  Share share = Share::kWfq;  // among tenants
  // Empty means one implicit tenant "default" (weight 1, share wfq) holding every class.
  std::vector<Tenant> tenants;
  Source source;
  bool operator==(const SchedulerConfig&) const = default;
};

struct Uplink {
  std::string port;
  uint64_t rate_bps = 0;
  uint64_t pacing_bps = 0;  // 98% of rate_bps unless given
  // Credit the pacer may bank while the uplink is idle or its lcore stalled; 0 until validated
  // (default: 20 us at the pacing rate, at least two full frames).
  uint64_t pacing_burst_bytes = 0;
  uint64_t buffer_bytes = 4ull << 20;
  uint32_t buffer_packets = 4096;
  std::optional<uint64_t> message_limit_bytes;
  DropPolicy drop = DropPolicy::kWorst;
  uint32_t max_messages = 65536;
  SchedulerConfig scheduler;
  Source source;
  bool operator==(const Uplink&) const = default;
};

// ---- virtual machines ------------------------------------------------------------------------

struct Nic {
  std::optional<std::string> bridge;  // attach through an implicit port "<vm>.eth<i>"
  // An explicit ports[] entry of driver vm; for a bridge NIC of a resolved Vm, the implicit
  // port's name (then implicit_port is true).
  std::optional<std::string> port;
  bool implicit_port = false;
  std::optional<std::string> class_name;
  std::optional<MacAddress> mac;
  Source source;
  bool operator==(const Nic&) const = default;
};

struct Disk {
  std::string path;  // relative to Config::base_dir unless absolute
  uint64_t size_bytes = 0;
  // How far an online resize may grow the disk; none: as far as the file system has room.
  std::optional<uint64_t> max_size_bytes;
  Source source;
  bool operator==(const Disk&) const = default;
};

// Size a VM's serial log grows to before it is rotated, unless the VM's settings give another.
inline constexpr uint64_t kDefaultSerialLogMaxBytes = 1ull << 20;

// The keys a template and a VM share; every one optional so that a VM can override a template.
struct VmSettings {
  std::optional<uint32_t> vcpus;
  std::optional<uint64_t> memory_bytes;
  std::optional<std::string> image;  // relative to Config::base_dir; need not exist yet
  std::optional<std::string> initrd;
  std::optional<std::string> cmdline;
  std::optional<std::vector<Nic>> nics;  // replaces the template's list as a whole
  std::optional<Disk> disk;
  std::optional<uint64_t> serial_log_max_bytes;
  bool operator==(const VmSettings&) const = default;
};

struct VmTemplate {
  std::string name;
  VmSettings settings;
  // Text the guest prints on its serial line once it serves: a blueprint's dependants wait for
  // it (within ready_timeout_ns) before they start.
  std::optional<std::string> ready;
  std::optional<uint64_t> ready_timeout_ns;
  Source source;
  bool operator==(const VmTemplate&) const = default;
};

// A VM with its template applied: every value is final.
struct Vm {
  std::string name;
  std::optional<std::string> template_name;
  uint32_t vcpus = 1;
  uint64_t memory_bytes = 0;
  std::string image;
  std::optional<std::string> initrd;
  std::optional<std::string> cmdline;
  std::vector<Nic> nics;
  std::optional<Disk> disk;
  // Size at which <vm>.serial.log is renamed to <vm>.serial.log.1 and started afresh.
  uint64_t serial_log_max_bytes = kDefaultSerialLogMaxBytes;
  bool autostart = true;
  Source source;
  bool operator==(const Vm&) const = default;
};

struct Tier {
  std::string name;
  std::string template_name;
  uint32_t count = 1;
  std::optional<std::string> class_name;  // NIC class override
  std::vector<std::string> depends_on;
  Source source;
  bool operator==(const Tier&) const = default;
};

struct Blueprint {
  std::string name;
  std::vector<Tier> tiers;
  Source source;
  bool operator==(const Blueprint&) const = default;
};

// What a non-root member of control.group may create over the socket. A quota names either a
// user or a group; a caller is bound by its user's quota and by those of all its groups, each
// counting the VMs charged to it. An absent limit is no limit; a caller no quota names may
// create nothing.
struct Quota {
  std::optional<std::string> user;
  std::optional<std::string> group;
  std::optional<uint32_t> vms;
  std::optional<uint32_t> vcpus;
  std::optional<uint64_t> memory_bytes;
  std::optional<uint64_t> disk_bytes;
  std::optional<std::vector<std::string>> classes;  // the NIC classes allowed; none: any
  Source source;
  bool operator==(const Quota&) const = default;
};

inline constexpr uint64_t kDefaultReadyTimeoutNs = 60'000'000'000ull;

// ---- hosts and control -----------------------------------------------------------------------

struct Host {
  std::string name;
  std::string address;  // IPv4/IPv6 literal or hostname
  uint16_t port = 7700;
  Source source;
  bool operator==(const Host&) const = default;
};

struct Control {
  std::string socket = "/run/qosvisor/qosvisor.sock";
  std::optional<std::string> metrics;  // host:port
  // Unix group whose members may use the socket (mode 0660, that group); none: mode 0600, root
  // only. Whether the group exists is checked when the socket is created.
  std::optional<std::string> group;
  Source source;
  bool operator==(const Control&) const = default;
};

// ---- fleet and migration ---------------------------------------------------------------------

// Which VM leaves a host that is over its budget or breaks an anti-affinity rule: the one that
// is cheapest to move by this measure.
enum class LeaveRule { kFewestChangedPages, kLowestPageRate, kSmallestMemory };

// VMs that must not share a host (replicas of one service, say). Members may live anywhere in
// the fleet; the planner warns about those it finds on no host.
struct AntiAffinityGroup {
  std::string name;
  std::vector<std::string> vms;
  Source source;
  bool operator==(const AntiAffinityGroup&) const = default;
};

// This box as a member of a fleet whose shared state lives in etcd. Absent: the box needs no etcd.
struct Fleet {
  std::string host;               // its name in the registry: [a-z0-9-], at most 63
  std::vector<std::string> etcd;  // endpoints "http://host:port", tried in turn
  uint64_t lease_ttl_ns = 10'000'000'000ull;
  uint64_t publish_interval_ns = 2'000'000'000ull;  // below lease_ttl_ns
  // What the box offers the fleet.
  uint32_t budget_vcpus = 0;
  uint64_t budget_memory_bytes = 0;
  uint64_t budget_uplink_bps = 0;
  std::map<std::string, std::string> labels;
  // Read by the daemon that leads the fleet's planning (and by `place` on any box).
  std::vector<AntiAffinityGroup> anti_affinity;
  LeaveRule rebalance_choose = LeaveRule::kFewestChangedPages;
  Source source;
  bool operator==(const Fleet&) const = default;
};

// Live migration of VMs between boxes. Every value has a default: no listener, no key.
struct Migration {
  std::string listen;    // address:port the listener binds; empty: no listener
  std::string key_file;  // the shared key; relative to Config::base_dir unless absolute
  uint64_t downtime_ns = 50'000'000ull;
  std::string class_name;  // the traffic class migration streams use; empty: none
  uint64_t timeout_ns = 60'000'000'000ull;  // the whole migration
  uint64_t bandwidth_bps = 0;               // the sender's rate limit; 0: none
  Source source;
  bool operator==(const Migration&) const = default;
};

// ---- guest memory ----------------------------------------------------------------------------

// Which regions of guest memory a transparent huge page backs: the tracker's decision per 2 MiB
// region (dense and steadily used), none, or all of it.
enum class HugePagePolicy { kAuto, kOff, kAll };

// What the VMM learns from its VMs' memory: a page tracker harvests each VM's changed pages every
// track_period into per-2 MiB counters of counter_bits bits (see hv/page_heat.h).
struct GuestMemory {
  bool track = true;
  uint64_t track_period_ns = 1'000'000'000ull;
  uint32_t counter_bits = 8;
  HugePagePolicy huge_pages = HugePagePolicy::kAuto;
  Source source;
  bool operator==(const GuestMemory&) const = default;
};

struct Config {
  // Directory of the YAML file: relative paths (images, disks, eBPF programs) are relative to it.
  std::string base_dir;
  Dataplane dataplane;
  std::vector<Port> ports;  // written ports first, then the implicit ports of VM NICs
  std::vector<Bridge> bridges;
  std::vector<Flow> flows;
  std::vector<TrafficClass> classes;
  std::vector<MessageRule> messages;
  std::vector<Uplink> uplinks;
  std::vector<VmTemplate> templates;
  std::vector<Vm> vms;
  std::vector<Blueprint> blueprints;
  std::vector<Host> hosts;
  std::vector<Quota> quotas;
  Control control;
  std::optional<Fleet> fleet;
  Migration migration;
  GuestMemory guest_memory;

  // 'path' made absolute against base_dir (unchanged if already absolute).
  std::string Resolve(const std::string& path) const;
  bool operator==(const Config&) const = default;
};

// Canonical spellings of the enums, as accepted in YAML ("vhost-user", "tcp-gap").
std::string_view ToString(Hugepages v);
std::string_view ToString(Driver v);
std::string_view ToString(VlanMode v);
std::string_view ToString(Policy v);
std::string_view ToString(Identify v);
std::string_view ToString(DropPolicy v);
std::string_view ToString(Share v);
std::string_view ToString(LeaveRule v);
std::string_view ToString(HugePagePolicy v);

}  // namespace qosvisor::config
