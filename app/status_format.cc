// Port and switch/scheduler statistics as terminal tables.
#include "app/status_format.h"

#include <fmt/format.h>

#include "app/fleet_format.h"
#include "app/uplinks_format.h"

namespace qosvisor::app {

using nlohmann::json;

std::string FormatPorts(const json& ports) {
  std::string out =
      fmt::format("{:<16} {:<10} {:<5} {:>12} {:>14} {:>12} {:>14} {:>10}\n", "port", "driver",
                  "link", "rx_pkts", "rx_bytes", "tx_pkts", "tx_bytes", "rx_missed");
  for (const json& p : ports) {
    out +=
        fmt::format("{:<16} {:<10} {:<5} {:>12} {:>14} {:>12} {:>14} {:>10}\n", p.value("name", ""),
                    p.value("driver", ""), p.value("link", ""), p.value("rx_packets", 0ull),
                    p.value("rx_bytes", 0ull), p.value("tx_packets", 0ull),
                    p.value("tx_bytes", 0ull), p.value("rx_missed", 0ull));
  }
  return out;
}

std::string FormatStats(const json& stats) {
  std::string out = "switch:";
  for (const auto& [key, value] : stats["switch"].items()) {
    out += fmt::format(" {}={}", key, value.get<unsigned long long>());
  }
  out += "\n";
  for (const json& up : stats["uplinks"]) {
    out += fmt::format("uplink {}: {} messages live, {} packets queued\n", up.value("port", ""),
                       up.value("live_messages", 0ull), up.value("queued_packets", 0ull));
    out += fmt::format("  {:<14} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}\n", "class", "in_pkts",
                       "in_bytes", "out_pkts", "out_bytes", "dropped", "queued");
    for (const json& c : up["classes"]) {
      out +=
          fmt::format("  {:<14} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}\n", c.value("class", ""),
                      c.value("enqueued_packets", 0ull), c.value("enqueued_bytes", 0ull),
                      c.value("dequeued_packets", 0ull), c.value("dequeued_bytes", 0ull),
                      c.value("dropped_packets", 0ull), c.value("queued_packets", 0ull));
    }
  }
  return out;
}

namespace {

std::string Mib(uint64_t bytes) { return fmt::format("{:.1f}MiB", bytes / 1048576.0); }

std::string JoinStrings(const json& list, const char* separator = ",") {
  std::string out;
  for (const json& s : list) out += (out.empty() ? "" : separator) + s.get<std::string>();
  return out.empty() ? "-" : out;
}

}  // namespace

namespace {

// "edge-a, connected to http://127.0.0.1:2379 (lease 7587...)", or what keeps it from etcd.
std::string FleetLine(const json& f) {
  if (f.value("connected", false)) {
    return fmt::format("{}, connected to {} (lease {}, registered {} time{})", f.value("host", ""),
                       f.value("endpoint", ""), f.value("lease_id", 0ll),
                       f.value("registrations", 0ull),
                       f.value("registrations", 0ull) == 1 ? "" : "s");
  }
  const std::string error = f.value("last_error", "");
  return fmt::format("{}, disconnected: {}", f.value("host", ""),
                     error.empty() ? "not registered yet" : error);
}

}  // namespace

std::string FormatStatus(const json& s) {
  std::string out = fmt::format(
      "config     {}\nuptime     {:.1f} s\nhugepages  {}\nmbufs      {} free of {}\nports      "
      "{}\n",
      s.value("config", ""), s.value("uptime_s", 0.0), s.value("hugepages", false) ? "on" : "off",
      s.value("mbufs_free", 0ull), s.value("mbufs_total", 0ull), s.value("ports", 0ull));
  if (auto f = s.find("fleet"); f != s.end() && f->is_object()) {
    out += fmt::format("fleet      {}\n", FleetLine(*f));
    const std::string leader = f->value("leader", "");
    if (f->value("leading", false)) {
      out += "leader     this box plans for the fleet\n";
    } else if (!leader.empty()) {
      out += fmt::format("leader     {}\n", leader);
    }
  }
  return out;
}

namespace {

// Sizes and rates rounded for a table (the JSON has them exact).
std::string Bytes(uint64_t bytes) {
  if (bytes >= (1ull << 30)) return fmt::format("{:.1f}GiB", bytes / 1073741824.0);
  return Mib(bytes);
}
std::string Bits(uint64_t bps) {
  if (bps >= 1'000'000'000ull) return fmt::format("{:.1f}Gbps", bps / 1e9);
  if (bps >= 1'000'000ull) return fmt::format("{:.1f}Mbps", bps / 1e6);
  return fmt::format("{:.0f}Kbps", bps / 1e3);
}

}  // namespace

std::string FormatHosts(const json& hosts) {
  const char* row = "{:<16} {:<5} {:>4} {:>7} {:>17} {:>19} {:<21} {}\n";
  std::string out = fmt::format(fmt::runtime(row), "host", "alive", "vms", "vcpus", "memory",
                                "uplink", "migration", "labels");
  for (const json& h : hosts) {
    const json budget = h.value("budget", json::object());
    const json load = h.value("load", json::object());
    const json label_map = h.value("labels", json::object());
    std::string labels;
    for (const auto& [k, v] : label_map.items()) {
      labels += fmt::format("{}{}={}", labels.empty() ? "" : ",", k,
                            v.is_string() ? v.get<std::string>() : v.dump());
    }
    const std::string migration = h.value("migration_address", "");
    out += fmt::format(
        fmt::runtime(row), h.value("name", ""), h.value("alive", false) ? "yes" : "no",
        load.value("vms", 0u),
        fmt::format("{}/{}", load.value("vcpus", 0u), budget.value("vcpus", 0u)),
        Bytes(load.value("memory_bytes", 0ull)) + "/" + Bytes(budget.value("memory_bytes", 0ull)),
        Bits(load.value("uplink_bps", 0ull)) + "/" + Bits(budget.value("uplink_bps", 0ull)),
        migration.empty() ? "-" : migration, labels.empty() ? "-" : labels);
  }
  return out;
}

std::string FormatVms(const json& vms) {
  const char* row = "{:<14} {:<10} {:>5} {:>10} {:>10} {:<10} {:<22} {:<10} {}\n";
  std::string out = fmt::format(fmt::runtime(row), "vm", "state", "vcpus", "memory", "charged",
                                "owner", "ports", "parent", "macs");
  for (const json& v : vms) {
    const std::string owner = v.value("owner", "");
    const std::string app = v.value("app", "");
    out += fmt::format(
        fmt::runtime(row), v.value("name", ""),
        v.value("state", "") + (v.contains("busy") ? "*" : ""), v.value("vcpus", 0u),
        Mib(v.value("memory_bytes", 0ull)), Mib(v.value("charged_bytes", 0ull)),
        owner.empty() ? "-" : owner, JoinStrings(v.value("ports", json::array())),
        v.value("parent", "").empty() ? (app.empty() ? "-" : "app:" + app) : v.value("parent", ""),
        JoinStrings(v.value("macs", json::array())));
  }
  return out;
}

std::string FormatApps(const json& apps) {
  const char* row = "{:<16} {:<12} {:<10} {:<11} {:<10} {}\n";
  std::string out =
      fmt::format(fmt::runtime(row), "app", "blueprint", "owner", "state", "tier", "vms");
  for (const json& a : apps) {
    for (const json& t : a["tiers"]) {
      std::string vms;
      for (const json& vm : t["vms"]) {
        // A fleet app's VMs: where each runs, and whether that host's daemon is still there.
        const std::string where =
            !vm.contains("host") ? ""
            : vm.value("host_alive", false)
                ? " on " + vm.value("host", "")
                : fmt::format(" on {}, which left the fleet", vm.value("host", ""));
        vms += fmt::format("{}{} ({}{})", vms.empty() ? "" : ", ", vm.value("name", ""),
                           vm.value("state", ""), where);
      }
      out += fmt::format(fmt::runtime(row), a.value("name", ""), a.value("blueprint", ""),
                         a.value("owner", ""), a.value("state", ""), t.value("name", ""), vms);
    }
  }
  return out;
}

std::string FormatQuota(const json& q) {
  std::string out = fmt::format(
      "{} (uid {}){}\n", q.value("user", ""), q.value("uid", 0u),
      q.value("privileged", false) ? ": root or the daemon's user, bound by no quota" : "");
  if (!q.value("privileged", false) && q["quotas"].empty()) {
    out += "no quota names you or one of your groups: you may create no VMs\n";
  }
  const std::string row = "  {:<10} {:>10} {:>10}\n";
  for (const json& quota : q["quotas"]) {
    out += fmt::format("quota of {}:\n", quota.value("quota", ""));
    out += fmt::format(fmt::runtime(row), "", "limit", "in use");
    const json& limits = quota["limits"];
    const json& used = quota["in_use"];
    for (const char* key : {"vms", "vcpus"}) {
      out += fmt::format(fmt::runtime(row), key,
                         limits.contains(key) ? std::to_string(limits[key].get<uint64_t>()) : "-",
                         used.value(key, 0ull));
    }
    for (const char* key : {"memory_bytes", "disk_bytes"}) {
      const std::string name = std::string(key).substr(0, std::string(key).find('_'));
      out += fmt::format(fmt::runtime(row), name,
                         limits.contains(key) ? Mib(limits[key].get<uint64_t>()) : "-",
                         Mib(used.value(key, 0ull)));
    }
    out += fmt::format("  {:<10} {:>10}\n", "classes",
                       limits.contains("classes") ? JoinStrings(limits["classes"]) : "any");
  }
  return out;
}

std::string FormatJob(const json& j) {
  std::string line = fmt::format("{:>4} {:<9} {:<14} {:<8} {:>7.1f}s  {}", j.value("id", 0ull),
                                 j.value("kind", ""), j.value("vm", ""), j.value("state", ""),
                                 j.value("elapsed_s", 0.0), j.value("phase", ""));
  if (j.value("bytes_total", 0ull) > 0) {
    line +=
        fmt::format(" {}/{}", Mib(j.value("bytes_done", 0ull)), Mib(j.value("bytes_total", 0ull)));
  }
  if (j.contains("error")) line += "  error: " + j["error"].get<std::string>();
  return line + "\n";
}

std::string FormatJobs(const json& jobs) {
  std::string out = fmt::format("{:>4} {:<9} {:<14} {:<8} {:>8}  {}\n", "job", "kind", "vm",
                                "state", "elapsed", "phase");
  for (const json& j : jobs) out += FormatJob(j);
  return out;
}

std::string FormatBridges(const json& bridges) {
  std::string out;
  for (const json& b : bridges) {
    out += fmt::format("bridge {}: {} flow rules, {} learned MACs\n", b.value("name", ""),
                       b.value("flows", 0ull), b.value("learned_macs", 0ull));
    for (const json& p : b["ports"]) {
      out += fmt::format("  {:>4} {}\n", p.value("ofport", 0ull), p.value("port", ""));
    }
  }
  return out;
}

std::string FormatFlows(const json& flows) {
  std::string out;
  for (const json& f : flows) out += f.value("rule", "") + "\n";
  return out;
}

std::string FormatClasses(const json& classes) {
  std::string out = fmt::format(
      "{:<14} {:>5} {:<8} {:<10} {:>6} {:>4} {:<12} {:>12} {:>10} {:>10}\n", "class", "queue",
      "policy", "tenant", "weight", "prio", "uplink", "out_pkts", "dropped", "queued");
  for (const json& c : classes) {
    const std::string head = fmt::format(
        "{:<14} {:>5} {:<8} {:<10} {:>6} {:>4}", c.value("name", ""), c.value("queue", 0u),
        c.value("policy", ""), c.value("tenant", "").empty() ? "-" : c.value("tenant", ""),
        c.value("weight", 0u), c.value("priority", 0u));
    if (c["uplinks"].empty()) out += head + "\n";
    for (const json& u : c["uplinks"]) {
      out += fmt::format("{} {:<12} {:>12} {:>10} {:>10}\n", head, u.value("uplink", ""),
                         u.value("dequeued_packets", 0ull), u.value("dropped_packets", 0ull),
                         u.value("queued_packets", 0ull));
    }
  }
  return out;
}

namespace {

// A finished migration: where it went and what it cost.
std::string FormatMigration(const std::string& vm, const json& r) {
  std::string out = fmt::format(
      "vm {}: migrated to {} in {:.0f} ms: {} rounds, {} bytes sent ({} pages, {} disk blocks), "
      "downtime {}{}\n",
      vm, r.value("destination", ""), r.value("total_ms", 0.0), r.value("rounds", 0),
      r.value("bytes_sent", 0ull), r.value("pages_sent", 0ull), r.value("disk_blocks_sent", 0ull),
      r.contains("downtime_ms") ? fmt::format("{:.1f} ms", r["downtime_ms"].get<double>())
                                : std::string("unknown"),
      r.value("max_throttle_percent", 0) > 0
          ? fmt::format(", vCPUs throttled up to {}%", r.value("max_throttle_percent", 0))
          : std::string());
  if (!r.value("converged", true)) out += "  pre-copy did not converge: the rest went while paused\n";
  if (r.contains("base")) out += "  " + r["base"].get<std::string>() + "\n";
  return out;
}

}  // namespace

std::string FormatReply(const std::string& command, const json& reply) {
  if (command == "ports") return FormatPorts(reply);
  if (command == "stats") return FormatStats(reply);
  if (command == "status") return FormatStatus(reply);
  if (command == "vms") return FormatVms(reply);
  if (command == "apps") return FormatApps(reply);
  if (command == "quota") return FormatQuota(reply);
  if (command == "jobs") return FormatJobs(reply);
  if (command == "job") return FormatJobs(json::array({reply}));
  if (command == "bridges") return FormatBridges(reply);
  if (command == "classes") return FormatClasses(reply);
  if (command == "uplinks") return FormatUplinks(reply);
  if (command == "hosts") return FormatHosts(reply);
  if (command == "place" || command == "rebalance") return FormatPlacement(command, reply);
  if (command == "fdb") {
    std::string out =
        fmt::format("{:>6} {:<16} {:>4} {:<19} {:>8}\n", "ofport", "port", "vlan", "mac", "age");
    for (const json& e : reply) {
      out += fmt::format("{:>6} {:<16} {:>4} {:<19} {:>7.1f}s\n", e.value("ofport", 0u),
                         e.value("port", ""), e.value("vlan", 0u), e.value("mac", ""),
                         e.value("age_s", 0.0));
    }
    return out;
  }
  if (command == "reload") {
    std::string out = reply.value("dry_run", false) ? "would change:\n" : "applied:\n";
    for (const json& c : reply["changes"]) out += "  " + c.get<std::string>() + "\n";
    if (reply["changes"].empty()) out += "  nothing: the file and the running box agree\n";
    return out;
  }
  if (command == "flows" && reply.is_array()) return FormatFlows(reply);
  if (reply.is_object() && reply.value("kind", "") == "capture" && reply.contains("result")) {
    const json& r = reply["result"];
    const uint64_t lost = r.value("not_copied", 0ull);
    return fmt::format("port {}: {} packets written to {}{}\n", r.value("port", ""),
                       r.value("packets", 0ull), r.value("file", ""),
                       lost == 0 ? "" : fmt::format(" ({} not copied: the ring was full)", lost));
  }
  if (reply.is_object() && reply.value("kind", "") == "deploy" && reply.contains("result")) {
    const json& r = reply["result"];
    std::string vms = JoinStrings(r["vms"], ", ");
    if (r.contains("hosts")) {  // deployed across the fleet
      vms.clear();
      for (const json& vm : r["vms"]) {
        const std::string name = vm.get<std::string>();
        vms += fmt::format("{}{} on {}", vms.empty() ? "" : ", ", name, r["hosts"].value(name, "?"));
      }
    }
    return fmt::format("app {} (blueprint {}): {} VMs running: {}\n", r.value("app", ""),
                       r.value("blueprint", ""), r["vms"].size(), vms);
  }
  if (reply.is_object() && reply.value("kind", "") == "undeploy" && reply.contains("result")) {
    const json& r = reply["result"];
    return fmt::format("app {}: {} VMs destroyed: {}\n", r.value("app", ""), r["destroyed"].size(),
                       JoinStrings(r["destroyed"], ", "));
  }
  if (reply.is_object() && reply.value("kind", "") == "migrate" && reply.contains("result")) {
    return FormatMigration(reply.value("vm", ""), reply["result"]);
  }
  if (reply.is_object() && reply.contains("kind")) return FormatJobs(json::array({reply}));
  if (reply.is_object() && reply.contains("bridge") && reply.contains("rules")) {
    return fmt::format("bridge {}: {} flow rules, applied\n", reply["bridge"].get<std::string>(),
                       reply["rules"].get<uint64_t>());
  }
  if (reply.is_object() && reply.contains("name") && reply.contains("done")) {
    const json charged = reply.value("charged_to", json::array());
    return fmt::format("vm {}: {} done{}\n", reply["name"].get<std::string>(),
                       reply["done"].get<std::string>(),
                       charged.empty() ? "" : ", charged to " + JoinStrings(charged, ", "));
  }
  return reply.dump(2) + "\n";
}

}  // namespace qosvisor::app
