// Rendering the text exposition format and serving it over HTTP.
#include "control/metrics.h"

#include <fmt/format.h>
#include <httplib.h>

#include <map>
#include <vector>

namespace qosvisor::control {
namespace {

using nlohmann::json;
using Labels = std::vector<std::pair<std::string, std::string>>;

// Label values escaped as the format requires (backslash, quote, newline).
std::string Escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    out += c == '\n' ? 'n' : c;
    if (c == '\n') out.insert(out.size() - 1, "\\");
  }
  return out;
}

class Exposition {
 public:
  // Starts family `name` (HELP and TYPE once); samples follow with Sample.
  void Family(const std::string& name, const char* type, const char* help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    name_ = name;
  }
  void Sample(const Labels& labels, double value, const std::string& suffix = "") {
    std::string l;
    for (const auto& [k, v] : labels)
      l += fmt::format("{}{}=\"{}\"", l.empty() ? "" : ",", k, Escape(v));
    out_ += fmt::format("{}{}{}{}{}{} {}\n", name_, suffix, l.empty() ? "" : "{", l,
                        l.empty() ? "" : "}", "", value);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
  std::string name_;
};

double Num(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

// One family per field, a sample per row: rows are JSON objects, `label` names each.
void PerRow(Exposition& e, const json& rows, const char* label, const char* label_key,
            const std::string& name, const char* type, const char* help, const char* field) {
  e.Family(name, type, help);
  for (const json& row : rows) e.Sample({{label, row.value(label_key, "")}}, Num(row, field));
}

void PortMetrics(Exposition& e, const json& ports) {
  struct F {
    const char* name;
    const char* field;
    const char* help;
  };
  for (const F& f : {F{"qosvisor_port_received_packets_total", "rx_packets", "Frames received."},
                     F{"qosvisor_port_received_bytes_total", "rx_bytes", "Bytes received."},
                     F{"qosvisor_port_transmitted_packets_total", "tx_packets", "Frames sent."},
                     F{"qosvisor_port_transmitted_bytes_total", "tx_bytes", "Bytes sent."},
                     F{"qosvisor_port_receive_missed_packets_total", "rx_missed",
                       "Frames the port dropped for want of room."},
                     F{"qosvisor_port_receive_errors_total", "rx_errors", "Receive errors."},
                     F{"qosvisor_port_transmit_errors_total", "tx_errors", "Transmit errors."}}) {
    PerRow(e, ports, "port", "name", f.name, "counter", f.help, f.field);
  }
  e.Family("qosvisor_port_link_up", "gauge", "1 when the port's link is up.");
  for (const json& p : ports) {
    e.Sample({{"port", p.value("name", "")}, {"driver", p.value("driver", "")}},
             p.value("link", "") == "up" ? 1 : 0);
  }
}

void SwitchMetrics(Exposition& e, const json& stats) {
  const json& sw = stats["switch"];
  e.Family("qosvisor_switch_received_packets_total", "counter", "Frames the switch polled.");
  e.Sample({}, Num(sw, "rx_packets"));
  e.Family("qosvisor_switch_dropped_packets_total", "counter", "Frames dropped, by reason.");
  for (const char* reason : {"malformed", "truncated", "vlan_dropped", "no_bridge", "flow_dropped",
                             "copy_failed", "tx_dropped", "sched_dropped", "handoff_dropped"}) {
    std::string r = reason;
    if (r.ends_with("_dropped")) r.resize(r.size() - 8);
    e.Sample({{"reason", r}}, Num(sw, reason));
  }
  e.Family("qosvisor_switch_flooded_packets_total", "counter", "Frames flooded.");
  e.Sample({}, Num(sw, "flooded"));
  e.Family("qosvisor_flow_cache_lookups_total", "counter", "Flow cache lookups, by result.");
  e.Sample({{"result", "hit"}}, Num(sw, "flow_cache_hits"));
  e.Sample({{"result", "miss"}}, Num(sw, "flow_cache_misses"));
  e.Family("qosvisor_switch_poll_gaps_total", "counter",
           "Gaps between a worker's polls longer than the threshold.");
  e.Sample({{"over", "100us"}}, Num(sw, "poll_gaps_over_100us"));
  e.Sample({{"over", "1ms"}}, Num(sw, "poll_gaps_over_1ms"));
  e.Family("qosvisor_switch_longest_poll_gap_seconds", "gauge", "Longest gap between polls.");
  e.Sample({}, Num(sw, "longest_poll_gap_us") / 1e6);
  PerRow(e, stats["bridges"], "bridge", "name", "qosvisor_bridge_learned_macs", "gauge",
         "Addresses in the bridge's MAC table.", "learned_macs");
}

void UplinkMetrics(Exposition& e, const json& uplinks) {
  PerRow(e, uplinks, "uplink", "port", "qosvisor_uplink_line_rate_bytes_per_second", "gauge",
         "The uplink's line rate.", "rate_bytes_per_second");
  PerRow(e, uplinks, "uplink", "port", "qosvisor_uplink_pacing_rate_bytes_per_second", "gauge",
         "The rate the scheduler paces the uplink at.", "pacing_bytes_per_second");
  PerRow(e, uplinks, "uplink", "port", "qosvisor_uplink_messages", "gauge",
         "Messages in the uplink's message table.", "live_messages");
  PerRow(e, uplinks, "uplink", "port", "qosvisor_uplink_message_table_capacity", "gauge",
         "Messages the uplink's message table holds.", "max_messages");
  e.Family("qosvisor_uplink_dropped_packets_total", "counter",
           "Packets the uplink dropped outside any class, by reason.");
  for (const json& u : uplinks) {
    e.Sample({{"uplink", u.value("port", "")}, {"reason", "reconfigured"}},
             Num(u, "dropped_reconfigured"));
  }
  struct F {
    const char* name;
    const char* type;
    const char* help;
    const char* field;
  };
  for (const F& f :
       {F{"qosvisor_class_enqueued_packets_total", "counter", "Packets queued.",
          "enqueued_packets"},
        F{"qosvisor_class_enqueued_bytes_total", "counter", "Bytes queued.", "enqueued_bytes"},
        F{"qosvisor_class_dequeued_packets_total", "counter", "Packets sent.", "dequeued_packets"},
        F{"qosvisor_class_dequeued_bytes_total", "counter", "Bytes sent.", "dequeued_bytes"},
        F{"qosvisor_class_queued_packets", "gauge", "Packets waiting.", "queued_packets"},
        F{"qosvisor_class_queued_bytes", "gauge", "Bytes waiting.", "queued_bytes"}}) {
    e.Family(f.name, f.type, f.help);
    for (const json& u : uplinks) {
      for (const json& c : u["classes"]) {
        e.Sample({{"uplink", u.value("port", "")}, {"class", c.value("class", "")}},
                 Num(c, f.field));
      }
    }
  }
  e.Family("qosvisor_class_dropped_packets_total", "counter", "Packets dropped, by reason.");
  for (const json& u : uplinks) {
    for (const json& c : u["classes"]) {
      for (const char* reason : {"tail", "worst", "message_limit"}) {
        e.Sample(
            {{"uplink", u.value("port", "")}, {"class", c.value("class", "")}, {"reason", reason}},
            Num(c, (std::string("dropped_") + reason).c_str()));
      }
    }
  }
}

// Time packets waited in the scheduler: cumulative buckets as Prometheus histograms are.
void WaitHistograms(Exposition& e, const json& uplinks, const json& bounds) {
  e.Family("qosvisor_class_wait_seconds", "histogram",
           "Time from a packet's arrival in the switch to its departure from the uplink's "
           "scheduler.");
  for (const json& u : uplinks) {
    for (const json& c : u["classes"]) {
      const json& counts = c.value("wait_counts", json::array());
      const Labels base = {{"uplink", u.value("port", "")}, {"class", c.value("class", "")}};
      double total = 0;
      size_t counted = 0;
      for (size_t b = 0; b <= bounds.size(); ++b) {  // the last bucket (+Inf) takes the rest
        const size_t upto = std::min(b < bounds.size() ? b + 1 : counts.size(), counts.size());
        for (; counted < upto; ++counted) total += counts[counted].get<double>();
        Labels l = base;
        l.emplace_back("le", b < bounds.size() ? fmt::format("{:g}", bounds[b].get<double>())
                                               : std::string("+Inf"));
        e.Sample(l, total, "_bucket");
      }
      e.Sample(base, Num(c, "wait_sum_seconds"), "_sum");
      e.Sample(base, total, "_count");
    }
  }
}

void VmMetrics(Exposition& e, const json& vms) {
  e.Family("qosvisor_vm_state", "gauge", "1 for the state the VM is in.");
  for (const json& vm : vms) {
    for (const char* state :
         {"created", "running", "paused", "stopping", "stopped", "destroyed", "suspended"}) {
      e.Sample({{"vm", vm.value("name", "")}, {"state", state}},
               vm.value("state", "") == state ? 1 : 0);
    }
  }
  PerRow(e, vms, "vm", "name", "qosvisor_vm_exits_total", "counter", "Exits to the VMM, all vCPUs.",
         "exits");
  PerRow(e, vms, "vm", "name", "qosvisor_vm_vcpus", "gauge", "Virtual CPUs.", "vcpus");
  PerRow(e, vms, "vm", "name", "qosvisor_vm_memory_bytes", "gauge", "Guest memory size.",
         "memory_bytes");
  PerRow(e, vms, "vm", "name", "qosvisor_vm_charged_memory_bytes", "gauge",
         "Host memory the VM holds for itself (copy-on-write VMs: what they wrote).",
         "charged_bytes");
  // Only the VMs the page tracker has harvested: 0 would claim a VM changes nothing.
  json tracked = json::array();
  for (const json& vm : vms) {
    if (vm.contains("changed_pages")) tracked.push_back(vm);
  }
  PerRow(e, tracked, "vm", "name", "qosvisor_vm_page_change_rate", "gauge",
         "Guest pages (4 KiB) changed per second, over the page tracker's window.",
         "pages_per_second");
  PerRow(e, tracked, "vm", "name", "qosvisor_vm_changed_pages", "gauge",
         "Distinct guest pages changed within the page tracker's window.", "changed_pages");
  PerRow(e, tracked, "vm", "name", "qosvisor_vm_hot_regions", "gauge",
         "2 MiB regions of guest memory the page tracker counts as hot.", "hot_regions");
  PerRow(e, tracked, "vm", "name", "qosvisor_vm_huge_regions", "gauge",
         "2 MiB regions of guest memory the huge-page policy backs with a huge page.",
         "huge_regions");
}

// Only for a box with fleet: (status has a fleet object then).
void FleetMetrics(Exposition& e, const json& fleet) {
  e.Family("qosvisor_fleet_connected", "gauge",
           "1 while the fleet agent reaches etcd and holds its host record's lease.");
  e.Sample({{"host", fleet.value("host", "")}}, fleet.value("connected", false) ? 1 : 0);
  e.Family("qosvisor_fleet_registrations_total", "counter",
           "Times the host registered in the fleet registry (again after etcd was away).");
  e.Sample({{"host", fleet.value("host", "")}}, Num(fleet, "registrations"));
}

}  // namespace

std::string RenderMetrics(const MetricsInput& in) {
  Exposition e;
  e.Family("qosvisor_up", "gauge", "1 while the appliance serves.");
  e.Sample({}, 1);
  e.Family("qosvisor_uptime_seconds", "gauge", "Seconds since the appliance started.");
  e.Sample({}, Num(in.status, "uptime_s"));
  e.Family("qosvisor_mbufs", "gauge", "Packet buffers in the pool, by state.");
  e.Sample({{"state", "free"}}, Num(in.status, "mbufs_free"));
  e.Sample({{"state", "in_use"}}, Num(in.status, "mbufs_total") - Num(in.status, "mbufs_free"));
  if (auto fleet = in.status.find("fleet"); fleet != in.status.end() && fleet->is_object()) {
    FleetMetrics(e, *fleet);
  }
  PortMetrics(e, in.ports);
  e.Family("qosvisor_dataplane_answered", "gauge",
           "1 when every data-plane worker answered the statistics request in time.");
  e.Sample({}, in.stats.is_object() ? 1 : 0);
  if (in.stats.is_object()) {
    SwitchMetrics(e, in.stats);
    UplinkMetrics(e, in.stats["uplinks"]);
    WaitHistograms(e, in.stats["uplinks"], in.stats.value("wait_bucket_le_seconds", json::array()));
  }
  VmMetrics(e, in.vms);
  return e.Take();
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& host_port,
                                                            std::function<std::string()> render) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) {
    return Status::Error(fmt::format("control.metrics '{}': expected host:port", host_port));
  }
  std::string host = host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const int port = std::atoi(host_port.c_str() + colon + 1);
  std::unique_ptr<MetricsServer> m(new MetricsServer());
  m->server_ = std::make_unique<httplib::Server>();
  m->server_->Get("/metrics", [render](const httplib::Request&, httplib::Response& res) {
    res.set_content(render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  m->port_ = port == 0 ? m->server_->bind_to_any_port(host) : port;
  if (m->port_ < 0 || (port != 0 && !m->server_->bind_to_port(host, port))) {
    return Status::Error(
        fmt::format("control.metrics: cannot listen on {}: {}", host_port, std::strerror(errno)));
  }
  m->thread_ = std::thread([s = m->server_.get()] { s->listen_after_bind(); });
  return m;
}

MetricsServer::~MetricsServer() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace qosvisor::control
