// Config → SwitchSpec / SchedulerConfig mapping.
#include "control/switch_builder.h"

#include <fmt/format.h>

#include <algorithm>

namespace qosvisor::control {
namespace {

sched::Policy ToSched(config::Policy p) {
  switch (p) {
    case config::Policy::kFifo:
      return sched::Policy::kFifo;
    case config::Policy::kPriority:
      return sched::Policy::kPriority;
    case config::Policy::kSrpt:
      return sched::Policy::kSrpt;
    case config::Policy::kLas:
      return sched::Policy::kLas;
    case config::Policy::kWfq:
      return sched::Policy::kWfq;
    case config::Policy::kEdf:
      return sched::Policy::kEdf;
    case config::Policy::kPace:
      return sched::Policy::kPace;
  }
  return sched::Policy::kFifo;
}

sched::Share ToSched(config::Share s) {
  return s == config::Share::kPriority ? sched::Share::kPriority : sched::Share::kWfq;
}

vswitch::MessageMode ToSwitch(config::Identify i) {
  switch (i) {
    case config::Identify::kHoma:
      return vswitch::MessageMode::kHoma;
    case config::Identify::kTcpGap:
      return vswitch::MessageMode::kTcpGap;
    case config::Identify::kDatagram:
      return vswitch::MessageMode::kDatagram;
    case config::Identify::kEbpf:
      return vswitch::MessageMode::kEbpf;
  }
  return vswitch::MessageMode::kDatagram;
}

int PortIndex(const config::Config& c, const std::string& name) {
  for (size_t i = 0; i < c.ports.size(); ++i) {
    if (c.ports[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

// How long a message of class `name` can wait for another packet: a tcp-gap burst ends when its
// flow is quiet for `idle` (the flow's next packet starts a new message), so its slot goes back
// then, not at the uplink's timeout; 0 for messages that end with a last packet or no rule.
uint64_t MessageIdleOf(const config::Config& config, const std::string& name) {
  for (const config::MessageRule& r : config.messages) {
    if (r.class_name == name && r.identify == config::Identify::kTcpGap) {
      return r.idle_ns.value_or(0);
    }
  }
  return 0;
}

sched::ClassConfig ClassFrom(const config::TrafficClass& c) {
  sched::ClassConfig out;
  out.name = c.name;
  out.policy = ToSched(c.policy);
  out.weight = c.weight;
  out.priority = static_cast<uint8_t>(c.priority);
  out.deadline_ns = c.deadline_ns.value_or(0);
  out.rate_bps = c.rate_bps.value_or(0);
  out.srpt_aging_ns = c.aging_ns.value_or(0);
  return out;
}

// Migration streams cross the switch in migration.class: every bridge sends TCP to and from the
// listener's port to that class's queue (the same port on every box of a fleet), ahead of any
// rule of the file. Their cookies are out of the range of configured and live rules.
constexpr uint32_t kMigrationFlowCookie = 0xfffff000u;

std::vector<vswitch::FlowRule> MigrationFlows(const config::Config& config) {
  const config::Migration& m = config.migration;
  const size_t colon = m.listen.rfind(':');
  if (m.class_name.empty() || colon == std::string::npos) return {};
  const config::TrafficClass* c = FindClass(config, m.class_name);
  if (c == nullptr) return {};  // validation names the missing class
  const std::string port = m.listen.substr(colon + 1);
  std::vector<vswitch::FlowRule> rules;
  for (const char* field : {"tp_dst", "tp_src"}) {
    rules.push_back({fmt::format("priority=65000,tcp,{}={},actions=set_queue:{},NORMAL", field,
                                 port, c->queue),
                     kMigrationFlowCookie + static_cast<uint32_t>(rules.size())});
  }
  return rules;
}

}  // namespace

const config::TrafficClass* FindClass(const config::Config& c, const std::string& name) {
  for (const auto& cls : c.classes) {
    if (cls.name == name) return &cls;
  }
  return nullptr;
}

sched::SchedulerConfig BuildSchedulerConfig(const config::Config& config,
                                            const config::Uplink& uplink,
                                            std::vector<uint32_t>& class_queues) {
  sched::SchedulerConfig s;
  s.name = uplink.port;
  s.rate_bps = uplink.rate_bps;
  s.pacing_bps = uplink.pacing_bps;
  s.pacer_burst_bytes = static_cast<uint32_t>(uplink.pacing_burst_bytes);
  s.buffer_bytes = uplink.buffer_bytes;
  s.buffer_packets = uplink.buffer_packets;
  s.message_limit_bytes = static_cast<uint32_t>(uplink.message_limit_bytes.value_or(0));
  s.drop =
      uplink.drop == config::DropPolicy::kTail ? sched::DropMode::kTail : sched::DropMode::kWorst;
  s.max_messages = uplink.max_messages;
  s.tenant_share = ToSched(uplink.scheduler.share);
  class_queues.clear();
  auto add_class = [&](const config::TrafficClass& c) {
    class_queues.push_back(c.queue);
    s.classes.push_back(ClassFrom(c));
    s.classes.back().message_idle_ns = MessageIdleOf(config, c.name);
    return static_cast<uint16_t>(s.classes.size() - 1);
  };
  if (uplink.scheduler.tenants.empty()) {
    for (const auto& c : config.classes) add_class(c);
  } else {
    for (const config::Tenant& t : uplink.scheduler.tenants) {
      sched::TenantConfig tc;
      tc.name = t.name;
      tc.weight = t.weight;
      tc.priority = static_cast<uint8_t>(t.priority);
      tc.class_share = ToSched(t.share);
      for (const std::string& name : t.classes) {
        if (const config::TrafficClass* c = FindClass(config, name)) {
          tc.classes.push_back(add_class(*c));
        }
      }
      s.tenants.push_back(std::move(tc));
    }
  }
  if (s.classes.empty()) {
    // No classes configured: one FIFO class so the uplink still schedules and paces.
    s.classes.push_back({.name = "default", .policy = sched::Policy::kFifo});
    class_queues.push_back(0);
    if (!s.tenants.empty()) s.tenants.front().classes.push_back(0);
  }
  return s;
}

Result<vswitch::SwitchSpec> BuildSwitchSpec(const config::Config& config) {
  vswitch::SwitchSpec spec;
  spec.burst = static_cast<uint16_t>(config.dataplane.burst);
  spec.forward_unparsable = config.dataplane.forward_unparsable;
  for (const config::Bridge& b : config.bridges) {
    vswitch::BridgeSpec bs;
    bs.name = b.name;
    bs.mac_aging_ns = b.mac_aging_ns;
    bs.mac_table_size = b.mac_table_size;
    for (const config::BridgePort& bp : b.ports) {
      vswitch::BridgeMember m;
      m.port = static_cast<uint16_t>(PortIndex(config, bp.port));
      if (bp.vlan) {
        m.vlan_mode = bp.vlan->mode == config::VlanMode::kAccess ? vswitch::VlanMode::kAccess
                                                                 : vswitch::VlanMode::kTrunk;
        m.access_tag = bp.vlan->tag;
        m.trunk_tags = bp.vlan->tags;
      }
      bs.members.push_back(m);
    }
    for (size_t f = 0; f < config.flows.size(); ++f) {
      const config::Flow& flow = config.flows[f];
      if (flow.bridge != b.name) continue;
      if (flow.table != 0) {
        return Status::Error(
            fmt::format("flows[{}]: table {}: only table 0 is supported; put "
                        "the rule in table 0 with a priority",
                        f, flow.table));
      }
      bs.flows.push_back({flow.rule, static_cast<uint32_t>(f)});
    }
    for (vswitch::FlowRule& rule : MigrationFlows(config)) bs.flows.push_back(std::move(rule));
    spec.bridges.push_back(std::move(bs));
  }
  for (const config::TrafficClass& c : config.classes) {
    vswitch::ClassSpec cs;
    cs.queue = c.queue;
    for (const config::MessageRule& r : config.messages) {
      if (r.class_name != c.name) continue;
      cs.mode = ToSwitch(r.identify);
      cs.idle_ns = r.idle_ns.value_or(cs.idle_ns);
      if (r.program) cs.ebpf_object = config.Resolve(*r.program);
      cs.ebpf_program = r.section.value_or("");
    }
    spec.classes.push_back(cs);
  }
  spec.port_default_queue.assign(config.ports.size(), -1);
  for (const config::Vm& vm : config.vms) {
    for (const config::Nic& nic : vm.nics) {
      if (!nic.class_name || !nic.port) continue;
      const config::TrafficClass* c = FindClass(config, *nic.class_name);
      const int port = PortIndex(config, *nic.port);
      if (c != nullptr && port >= 0) spec.port_default_queue[port] = static_cast<int>(c->queue);
    }
  }
  for (const config::Uplink& u : config.uplinks) {
    vswitch::UplinkSpec us;
    us.port = static_cast<uint16_t>(PortIndex(config, u.port));
    us.scheduler = BuildSchedulerConfig(config, u, us.class_queues);
    auto zero = std::find(us.class_queues.begin(), us.class_queues.end(), 0u);
    us.default_class =
        static_cast<uint16_t>(zero != us.class_queues.end() ? zero - us.class_queues.begin()
                                                            : us.class_queues.size() - 1);
    if (Status s = sched::Validate(us.scheduler); !s.ok()) {
      return Status::Error(
          fmt::format("uplinks[{}] ({}): {}", &u - config.uplinks.data(), u.port, s.message()));
    }
    spec.uplinks.push_back(std::move(us));
  }
  return spec;
}

}  // namespace qosvisor::control
