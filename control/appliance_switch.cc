// The appliance's switch commands on the control socket: bridges and their ports, a bridge's
// flow rules dumped, added and deleted live (ovs-ofctl syntax), and the traffic classes with
// their counters on every uplink.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/mac_address.h"
#include "common/units.h"
#include "config/config.h"
#include "control/appliance.h"
#include "control/capture.h"
#include "control/control_server.h"
#include "control/jobs.h"

namespace qosvisor::control {

using nlohmann::json;

namespace {

// A rule's match part (what precedes "actions="), spaces removed, for deletion by match.
std::string MatchOf(const std::string& rule) {
  std::string match = rule.substr(0, rule.find("actions="));
  std::erase_if(match, [](char c) { return c == ' ' || c == '\t'; });
  while (!match.empty() && match.back() == ',') match.pop_back();
  return match;
}

}  // namespace

Result<json> Appliance::BridgesJson() {
  auto stats = StatsJson();
  json out = json::array();
  for (const std::string& name : switch_->bridge_names()) {
    std::lock_guard lock(switch_control_mu_);
    auto ports = switch_->BridgePorts(name);
    auto flows = switch_->Flows(name);
    if (!ports.ok()) return ports.status();
    json row = {{"name", name}, {"flows", flows.ok() ? flows->size() : 0}};
    json list = json::array();
    for (size_t i = 0; i < ports->size(); ++i) {
      if (!(*ports)[i].empty()) list.push_back({{"ofport", i + 1}, {"port", (*ports)[i]}});
    }
    row["ports"] = list;
    if (stats.ok()) {
      for (const json& b : (*stats)["bridges"]) {
        if (b["name"] == name) row["learned_macs"] = b["learned_macs"];
      }
    }
    out.push_back(std::move(row));
  }
  return out;
}

Result<json> Appliance::FlowsCommand(const json& args) {
  if (!args.contains("bridge") || !args["bridge"].is_string() || !args.contains("action") ||
      !args["action"].is_string()) {
    return Status::Error("flows needs string arguments 'bridge' and 'action' (dump, add, del)");
  }
  const std::string bridge = args["bridge"].get<std::string>();
  const std::string action = args["action"].get<std::string>();
  std::lock_guard lock(switch_control_mu_);
  auto rules = switch_->Flows(bridge);
  if (!rules.ok()) return rules.status();
  if (action == "dump") {
    json out = json::array();
    for (const vswitch::FlowRule& r : *rules)
      out.push_back({{"rule", r.text}, {"cookie", r.cookie}});
    return out;
  }
  const std::string rule = args.value("rule", "");
  if (action == "add") {
    if (rule.find("actions=") == std::string::npos) {
      return Status::Error(
          fmt::format("flows add: '{}' has no actions= (ovs-ofctl syntax, e.g. "
                      "\"priority=10,udp,tp_dst=53,actions=set_queue:1,NORMAL\")",
                      rule));
    }
    rules->push_back({rule, next_flow_cookie_++});
  } else if (action == "del") {
    const bool all = args.value("all", false);
    if (!all && rule.empty()) return Status::Error("flows del: give the rule's match, or --all");
    const size_t before = rules->size();
    std::erase_if(*rules, [&](const vswitch::FlowRule& r) {
      return all || MatchOf(r.text) == MatchOf(rule);
    });
    if (rules->size() == before) {
      return Status::Error(
          fmt::format("flows del: no rule of bridge '{}' matches '{}'", bridge, MatchOf(rule)));
    }
  } else {
    return Status::Error(fmt::format("unknown flows action '{}'; use dump, add or del", action));
  }
  if (Status s = switch_->ReplaceFlows(bridge, *rules); !s.ok()) return s;
  spdlog::info("bridge {}: flow rules replaced ({} {}), {} rules", bridge, action,
               rule.empty() ? "all" : rule, rules->size());
  return json{{"bridge", bridge}, {"rules", rules->size()}};
}

Result<json> Appliance::ClassesJson() {
  auto stats = StatsJson();
  json out = json::array();
  for (const config::TrafficClass& c : config_.classes) {
    json row = {{"name", c.name},
                {"queue", c.queue},
                {"policy", config::ToString(c.policy)},
                {"tenant", c.tenant.value_or("")},
                {"weight", c.weight},
                {"priority", c.priority}};
    if (c.deadline_ns) row["deadline_ns"] = *c.deadline_ns;
    if (c.rate_bps) row["rate_bps"] = *c.rate_bps;
    json uplinks = json::array();
    if (stats.ok()) {
      for (const json& u : (*stats)["uplinks"]) {
        for (const json& cs : u["classes"]) {
          if (cs["class"] != c.name) continue;
          json counters = cs;
          counters["uplink"] = u["port"];
          uplinks.push_back(counters);
        }
      }
    }
    row["uplinks"] = uplinks;
    out.push_back(std::move(row));
  }
  return out;
}

Result<json> Appliance::FdbJson(const std::string& bridge) {
  const auto& names = switch_->bridge_names();
  const auto it = std::find(names.begin(), names.end(), bridge);
  if (it == names.end()) return Status::Error(fmt::format("no bridge named '{}'", bridge));
  std::vector<std::string> ports;
  {
    std::lock_guard lock(switch_control_mu_);
    auto p = switch_->BridgePorts(bridge);
    if (!p.ok()) return p.status();
    ports = std::move(p).value();
  }
  Result<vswitch::Switch::Snapshot> taken = Status::Error("not taken");
  {
    std::lock_guard lock(stats_mu_);
    taken = switch_->TakeSnapshot(lcore_running_, vswitch::Switch::kSnapshotTimeout,
                                  static_cast<int>(it - names.begin()));
  }
  if (!taken.ok()) return taken.status();
  json out = json::array();
  for (const vswitch::Switch::FdbEntry& e : taken->fdb) {
    out.push_back({{"mac", FormatMac(e.mac)},
                   {"vlan", e.vlan},
                   {"ofport", e.ofport},
                   {"port", e.ofport <= ports.size() ? ports[e.ofport - 1] : ""},
                   {"age_s", static_cast<double>(e.age_ns) / 1e9}});
  }
  return out;
}

Result<json> Appliance::CaptureCommand(const json& args) {
  CaptureRequest r;
  r.port = args.value("port", "");
  r.file = args.value("file", "");
  r.count = args.value("count", uint64_t{0});
  if (args.contains("duration")) {
    if (!args["duration"].is_string())
      return Status::Error("capture: 'duration' is a string, e.g. \"5s\"");
    auto d = ParseDuration(args["duration"].get<std::string>());
    if (!d.ok()) return Status::Error(fmt::format("capture --duration: {}", d.message()));
    r.duration_ns = *d;
  }
  if (Status s = ValidateCapture(r); !s.ok()) return s;
  if (FindPort(r.port) == nullptr) {
    bool known = false;  // a port that joined while running (a VM's) is in a bridge's list
    for (const std::string& b : switch_->bridge_names()) {
      std::lock_guard lock(switch_control_mu_);
      auto ports = switch_->BridgePorts(b);
      if (ports.ok() && std::find(ports->begin(), ports->end(), r.port) != ports->end())
        known = true;
    }
    if (!known) return Status::Error(fmt::format("no port named '{}'", r.port));
  }
  const uint64_t id = jobs_->Start("capture", r.port, [this, r](JobProgress& p) {
    return RunCapture(*switch_, switch_control_mu_, r, p);
  });
  return json{{"job", id}};
}

void Appliance::RegisterSwitchCommands() {
  server_->Register("capture", [this](const json& args) { return CaptureCommand(args); });
  server_->Register("fdb", [this](const json& args) -> Result<json> {
    if (!args.contains("bridge") || !args["bridge"].is_string()) {
      return Status::Error("fdb needs a string argument 'bridge'");
    }
    return FdbJson(args["bridge"].get<std::string>());
  });
  server_->Register("bridges", [this](const json&) { return BridgesJson(); });
  server_->Register("flows", [this](const json& args) { return FlowsCommand(args); });
  server_->Register("classes", [this](const json&) { return ClassesJson(); });
  server_->Register("uplinks", [this](const json& args) { return UplinksJson(args); });
  server_->Register("reload", [this](const json& args) {
    return Reload(args.contains("dry_run") && args["dry_run"].is_boolean() &&
                  args["dry_run"].get<bool>());
  });
}

}  // namespace qosvisor::control
