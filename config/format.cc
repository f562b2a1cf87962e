// Format(): a Config back to YAML in the schema's key order, every value explicit and units in
// canonical form, so that the result loads to an equal Config (see loader.h for the choices).
#include <yaml-cpp/yaml.h>

#include "common/units.h"
#include "config/loader.h"

namespace qosvisor::config {
namespace {

template <typename T>
void Put(YAML::Emitter& out, std::string_view key, const T& value) {
  out << YAML::Key << std::string(key) << YAML::Value << value;
}
void Put(YAML::Emitter& out, std::string_view key, std::string_view value) {
  out << YAML::Key << std::string(key) << YAML::Value << std::string(value);
}
template <typename T>
void PutIf(YAML::Emitter& out, std::string_view key, const std::optional<T>& value) {
  if (value) Put(out, key, *value);
}
void Key(YAML::Emitter& out, std::string_view key) { out << YAML::Key << std::string(key); }

void PutNames(YAML::Emitter& out, std::string_view key, const std::vector<std::string>& names) {
  Key(out, key);
  out << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const std::string& n : names) out << n;
  out << YAML::EndSeq;
}

void EmitDataplane(YAML::Emitter& out, const Dataplane& d) {
  Key(out, "dataplane");
  out << YAML::Value << YAML::BeginMap;
  Put(out, "lcores", d.lcores);
  Put(out, "memory", FormatSize(d.memory_bytes));
  Put(out, "hugepages", ToString(d.hugepages));
  Put(out, "mbufs", d.mbufs);
  Put(out, "burst", d.burst);
  Put(out, "forward_unparsable", d.forward_unparsable);
  Put(out, "spare_ports", d.spare_ports);
  Put(out, "isolate", d.isolate);
  Put(out, "file_prefix", d.file_prefix);
  out << YAML::EndMap;
}

void EmitPort(YAML::Emitter& out, const Port& p) {
  out << YAML::BeginMap;
  Put(out, "name", p.name);
  Put(out, "driver", ToString(p.driver));
  if (p.mac) Put(out, "mac", p.mac->ToString());
  if (!p.args.empty()) {
    Key(out, "args");
    out << YAML::Value << YAML::BeginMap;
    for (const auto& [k, v] : p.args) Put(out, k, v);
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
}

void EmitBridgePort(YAML::Emitter& out, const BridgePort& m) {
  if (!m.vlan) {
    out << m.port;
    return;
  }
  out << YAML::Flow << YAML::BeginMap;
  Put(out, "port", m.port);
  Key(out, "vlan");
  out << YAML::Value << YAML::BeginMap;
  Put(out, "mode", ToString(m.vlan->mode));
  if (m.vlan->mode == VlanMode::kAccess) {
    Put(out, "tag", m.vlan->tag);
  } else {
    Key(out, "tags");
    out << YAML::Value << YAML::Flow << m.vlan->tags;
  }
  out << YAML::EndMap << YAML::EndMap;
}

void EmitBridge(YAML::Emitter& out, const Bridge& b) {
  out << YAML::BeginMap;
  Put(out, "name", b.name);
  Key(out, "ports");
  out << YAML::Value << YAML::BeginSeq;
  for (const BridgePort& m : b.ports) {
    if (!m.implicit) EmitBridgePort(out, m);
  }
  out << YAML::EndSeq;
  Put(out, "mac_aging", FormatDuration(b.mac_aging_ns));
  Put(out, "mac_table_size", b.mac_table_size);
  out << YAML::EndMap;
}

void EmitFlow(YAML::Emitter& out, const Flow& f) {
  out << YAML::BeginMap;
  Put(out, "bridge", f.bridge);
  Put(out, "table", f.table);
  Put(out, "rule", f.rule);
  out << YAML::EndMap;
}

void EmitClass(YAML::Emitter& out, const TrafficClass& c) {
  out << YAML::BeginMap;
  Put(out, "name", c.name);
  Put(out, "queue", c.queue);
  Put(out, "policy", ToString(c.policy));
  PutIf(out, "tenant", c.tenant);
  Put(out, "weight", c.weight);
  Put(out, "priority", c.priority);
  if (c.deadline_ns) Put(out, "deadline", FormatDuration(*c.deadline_ns));
  if (c.rate_bps) Put(out, "rate", FormatRate(*c.rate_bps));
  if (c.aging_ns) Put(out, "aging", FormatDuration(*c.aging_ns));
  out << YAML::EndMap;
}

void EmitMessage(YAML::Emitter& out, const MessageRule& m) {
  out << YAML::BeginMap;
  Put(out, "class", m.class_name);
  Put(out, "identify", ToString(m.identify));
  if (m.idle_ns) Put(out, "idle", FormatDuration(*m.idle_ns));
  PutIf(out, "program", m.program);
  PutIf(out, "section", m.section);
  out << YAML::EndMap;
}

void EmitTenant(YAML::Emitter& out, const Tenant& t) {
  out << YAML::BeginMap;
  Put(out, "name", t.name);
  Put(out, "weight", t.weight);
  Put(out, "priority", t.priority);
  Put(out, "share", ToString(t.share));
  PutNames(out, "classes", t.classes);
  out << YAML::EndMap;
}

void EmitUplink(YAML::Emitter& out, const Uplink& u) {
  out << YAML::BeginMap;
  Put(out, "port", u.port);
  Put(out, "rate", FormatRate(u.rate_bps));
  Put(out, "pacing", FormatRate(u.pacing_bps));
  Put(out, "pacing_burst", FormatSize(u.pacing_burst_bytes));
  Put(out, "buffer", FormatSize(u.buffer_bytes));
  Put(out, "buffer_packets", u.buffer_packets);
  if (u.message_limit_bytes) Put(out, "message_limit", FormatSize(*u.message_limit_bytes));
  Put(out, "drop", ToString(u.drop));
  Put(out, "max_messages", u.max_messages);
  Key(out, "scheduler");
  out << YAML::Value << YAML::BeginMap;
  Put(out, "share", ToString(u.scheduler.share));
  if (!u.scheduler.tenants.empty()) {
    Key(out, "tenants");
    out << YAML::Value << YAML::BeginSeq;
    for (const Tenant& t : u.scheduler.tenants) EmitTenant(out, t);
    out << YAML::EndSeq;
  }
  out << YAML::EndMap << YAML::EndMap;
}

void EmitNic(YAML::Emitter& out, const Nic& nic) {
  out << YAML::BeginMap;
  PutIf(out, "bridge", nic.bridge);
  if (!nic.implicit_port) PutIf(out, "port", nic.port);  // the loader recreates implicit ones
  PutIf(out, "class", nic.class_name);
  if (nic.mac) Put(out, "mac", nic.mac->ToString());
  out << YAML::EndMap;
}

void EmitNics(YAML::Emitter& out, const std::vector<Nic>& nics) {
  Key(out, "nics");
  out << YAML::Value << YAML::BeginSeq;
  for (const Nic& nic : nics) EmitNic(out, nic);
  out << YAML::EndSeq;
}

void EmitDisk(YAML::Emitter& out, const std::optional<Disk>& disk) {
  if (!disk) return;
  Key(out, "disk");
  out << YAML::Value << YAML::BeginMap;
  Put(out, "path", disk->path);
  Put(out, "size", FormatSize(disk->size_bytes));
  if (disk->max_size_bytes) Put(out, "max_size", FormatSize(*disk->max_size_bytes));
  out << YAML::EndMap;
}

void EmitTemplate(YAML::Emitter& out, const VmTemplate& t) {
  const VmSettings& s = t.settings;
  out << YAML::BeginMap;
  Put(out, "name", t.name);
  PutIf(out, "vcpus", s.vcpus);
  if (s.memory_bytes) Put(out, "memory", FormatSize(*s.memory_bytes));
  PutIf(out, "image", s.image);
  PutIf(out, "initrd", s.initrd);
  PutIf(out, "cmdline", s.cmdline);
  if (s.serial_log_max_bytes) Put(out, "serial_log_max", FormatSize(*s.serial_log_max_bytes));
  if (s.nics) EmitNics(out, *s.nics);
  EmitDisk(out, s.disk);
  PutIf(out, "ready", t.ready);
  if (t.ready_timeout_ns) Put(out, "ready_timeout", FormatDuration(*t.ready_timeout_ns));
  out << YAML::EndMap;
}

// Every value is printed, so the template reference only documents where the VM came from:
// a value absent here is absent in the template too, and so stays absent on reload.
void EmitVm(YAML::Emitter& out, const Vm& vm) {
  out << YAML::BeginMap;
  Put(out, "name", vm.name);
  PutIf(out, "template", vm.template_name);
  Put(out, "vcpus", vm.vcpus);
  Put(out, "memory", FormatSize(vm.memory_bytes));
  Put(out, "image", vm.image);
  PutIf(out, "initrd", vm.initrd);
  PutIf(out, "cmdline", vm.cmdline);
  Put(out, "serial_log_max", FormatSize(vm.serial_log_max_bytes));
  EmitNics(out, vm.nics);
  EmitDisk(out, vm.disk);
  Put(out, "autostart", vm.autostart);
  out << YAML::EndMap;
}

void EmitBlueprint(YAML::Emitter& out, const Blueprint& b) {
  out << YAML::BeginMap;
  Put(out, "name", b.name);
  Key(out, "tiers");
  out << YAML::Value << YAML::BeginSeq;
  for (const Tier& t : b.tiers) {
    out << YAML::BeginMap;
    Put(out, "name", t.name);
    Put(out, "template", t.template_name);
    Put(out, "count", t.count);
    PutIf(out, "class", t.class_name);
    if (!t.depends_on.empty()) PutNames(out, "depends_on", t.depends_on);
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
}

void EmitHost(YAML::Emitter& out, const Host& h) {
  out << YAML::BeginMap;
  Put(out, "name", h.name);
  Put(out, "address", h.address);
  Put(out, "port", h.port);
  out << YAML::EndMap;
}

void EmitQuota(YAML::Emitter& out, const Quota& q) {
  out << YAML::BeginMap;
  PutIf(out, "user", q.user);
  PutIf(out, "group", q.group);
  PutIf(out, "vms", q.vms);
  PutIf(out, "vcpus", q.vcpus);
  if (q.memory_bytes) Put(out, "memory", FormatSize(*q.memory_bytes));
  if (q.disk_bytes) Put(out, "disk", FormatSize(*q.disk_bytes));
  if (q.classes) PutNames(out, "classes", *q.classes);
  out << YAML::EndMap;
}

void EmitFleet(YAML::Emitter& out, const std::optional<Fleet>& fleet) {
  if (!fleet) return;
  const Fleet& f = *fleet;
  Key(out, "fleet");
  out << YAML::Value << YAML::BeginMap;
  Put(out, "host", f.host);
  Key(out, "etcd");
  out << YAML::Value << YAML::Flow << f.etcd;
  Put(out, "lease_ttl", FormatDuration(f.lease_ttl_ns));
  Put(out, "publish_interval", FormatDuration(f.publish_interval_ns));
  Key(out, "budget");
  out << YAML::Value << YAML::Flow << YAML::BeginMap;
  Put(out, "vcpus", f.budget_vcpus);
  Put(out, "memory", FormatSize(f.budget_memory_bytes));
  Put(out, "uplink", FormatRate(f.budget_uplink_bps));
  out << YAML::EndMap;
  if (!f.labels.empty()) {
    Key(out, "labels");
    out << YAML::Value << YAML::BeginMap;
    // Quoted: a label "3" must stay the string "3" (and "yes" not become true) when read back.
    for (const auto& [k, v] : f.labels) {
      out << YAML::Key << k << YAML::Value << YAML::DoubleQuoted << v;
    }
    out << YAML::EndMap;
  }
  if (!f.anti_affinity.empty()) {
    Key(out, "anti_affinity");
    out << YAML::Value << YAML::BeginSeq;
    for (const AntiAffinityGroup& g : f.anti_affinity) {
      out << YAML::Flow << YAML::BeginMap;
      Put(out, "name", g.name);
      Key(out, "vms");
      out << YAML::Value << YAML::Flow << g.vms;
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
  if (f.rebalance_choose != LeaveRule::kFewestChangedPages) {
    Key(out, "rebalance");
    out << YAML::Value << YAML::Flow << YAML::BeginMap;
    Put(out, "choose", ToString(f.rebalance_choose));
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
}

// Printed only when it says something: the defaults of every key are what an absent section means.
void EmitMigration(YAML::Emitter& out, const Migration& m) {
  if (m == Migration{}) return;
  Key(out, "migration");
  out << YAML::Value << YAML::BeginMap;
  if (!m.listen.empty()) Put(out, "listen", m.listen);
  if (!m.key_file.empty()) Put(out, "key_file", m.key_file);
  Put(out, "downtime", FormatDuration(m.downtime_ns));
  if (!m.class_name.empty()) Put(out, "class", m.class_name);
  Put(out, "timeout", FormatDuration(m.timeout_ns));
  if (m.bandwidth_bps == 0) {
    Put(out, "bandwidth", 0);
  } else {
    Put(out, "bandwidth", FormatRate(m.bandwidth_bps));
  }
  out << YAML::EndMap;
}

void EmitGuestMemory(YAML::Emitter& out, const GuestMemory& g) {
  if (g == GuestMemory{}) return;
  Key(out, "guest_memory");
  out << YAML::Value << YAML::BeginMap;
  Put(out, "track", g.track);
  Put(out, "track_period", FormatDuration(g.track_period_ns));
  Put(out, "counter_bits", g.counter_bits);
  Put(out, "huge_pages", ToString(g.huge_pages));
  out << YAML::EndMap;
}

template <typename T, typename F>
void EmitList(YAML::Emitter& out, std::string_view key, const std::vector<T>& items, F emit) {
  if (items.empty()) return;
  Key(out, key);
  out << YAML::Value << YAML::BeginSeq;
  for (const T& item : items) emit(out, item);
  out << YAML::EndSeq;
}

}  // namespace

std::string Format(const Config& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  EmitDataplane(out, c.dataplane);
  std::vector<Port> ports;
  for (const Port& p : c.ports) {
    if (!p.implicit) ports.push_back(p);
  }
  EmitList(out, "ports", ports, EmitPort);
  EmitList(out, "bridges", c.bridges, EmitBridge);
  EmitList(out, "flows", c.flows, EmitFlow);
  EmitList(out, "classes", c.classes, EmitClass);
  EmitList(out, "messages", c.messages, EmitMessage);
  EmitList(out, "uplinks", c.uplinks, EmitUplink);
  EmitList(out, "templates", c.templates, EmitTemplate);
  EmitList(out, "vms", c.vms, EmitVm);
  EmitList(out, "blueprints", c.blueprints, EmitBlueprint);
  EmitList(out, "hosts", c.hosts, EmitHost);
  EmitList(out, "quotas", c.quotas, EmitQuota);
  Key(out, "control");
  out << YAML::Value << YAML::BeginMap;
  Put(out, "socket", c.control.socket);
  PutIf(out, "group", c.control.group);
  PutIf(out, "metrics", c.control.metrics);
  out << YAML::EndMap;
  EmitFleet(out, c.fleet);
  EmitMigration(out, c.migration);
  EmitGuestMemory(out, c.guest_memory);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace qosvisor::config
