// The Prometheus exposition: names, labels and values from the control API's JSON, a format
// promtool accepts, and the HTTP endpoint answering a scrape.
#include "control/metrics.h"

#include <httplib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <string>

namespace qosvisor::control {
namespace {

using nlohmann::json;

MetricsInput SampleInput() {
  MetricsInput in;
  in.status = {{"uptime_s", 12.5},
               {"mbufs_total", 16383},
               {"mbufs_free", 16000},
               {"fleet", {{"host", "edge-a"}, {"connected", true}, {"registrations", 2}}}};
  in.ports = json::array({{{"name", "p0"},
                           {"driver", "ring"},
                           {"link", "up"},
                           {"rx_packets", 10},
                           {"rx_bytes", 640},
                           {"tx_packets", 7},
                           {"tx_bytes", 448},
                           {"rx_missed", 1},
                           {"rx_errors", 0},
                           {"tx_errors", 0}},
                          {{"name", "web.eth0"}, {"driver", "vm"}, {"link", "down"}}});
  json classes = json::array({{{"class", "rpc"},
                               {"enqueued_packets", 5},
                               {"dequeued_packets", 4},
                               {"dropped_tail", 1},
                               {"queued_bytes", 64},
                               {"wait_counts", {1, 0, 3}},
                               {"wait_sum_seconds", 0.25}},
                              {{"class", "bulk \"x\""}, {"enqueued_packets", 2}}});
  in.stats = {{"switch",
               {{"rx_packets", 17},
                {"vlan_dropped", 2},
                {"flow_cache_hits", 9},
                {"longest_poll_gap_us", 1500}}},
              {"bridges", json::array({{{"name", "br0"}, {"learned_macs", 3}}})},
              {"wait_bucket_le_seconds", {0.001, 0.002}},
              {"uplinks", json::array({{{"port", "p1"},
                                        {"rate_bytes_per_second", 125000000},
                                        {"pacing_bytes_per_second", 122500000},
                                        {"max_messages", 65536},
                                        {"live_messages", 4},
                                        {"dropped_reconfigured", 6},
                                        {"classes", classes}}})}};
  in.vms = json::array({{{"name", "web"},
                         {"state", "running"},
                         {"exits", 42},
                         {"vcpus", 1},
                         {"memory_bytes", 16777216},
                         {"charged_bytes", 1052672}}});
  return in;
}

bool Has(const std::string& text, const std::string& line) {
  return text.find(line + "\n") != std::string::npos;
}

TEST_CASE("metrics: every object's counters under Prometheus names and labels", "[metrics]") {
  const std::string text = RenderMetrics(SampleInput());
  INFO(text);
  CHECK(Has(text, "qosvisor_up 1"));
  CHECK(Has(text, "# TYPE qosvisor_port_received_packets_total counter"));
  CHECK(Has(text, "qosvisor_port_received_packets_total{port=\"p0\"} 10"));
  CHECK(Has(text, "qosvisor_port_link_up{port=\"web.eth0\",driver=\"vm\"} 0"));
  CHECK(Has(text, "qosvisor_switch_dropped_packets_total{reason=\"vlan\"} 2"));
  CHECK(Has(text, "qosvisor_flow_cache_lookups_total{result=\"hit\"} 9"));
  CHECK(Has(text, "qosvisor_switch_longest_poll_gap_seconds 0.0015"));
  CHECK(Has(text, "qosvisor_bridge_learned_macs{bridge=\"br0\"} 3"));
  CHECK(Has(text, "qosvisor_uplink_pacing_rate_bytes_per_second{uplink=\"p1\"} 122500000"));
  CHECK(Has(text, "qosvisor_uplink_messages{uplink=\"p1\"} 4"));
  CHECK(Has(text, "qosvisor_uplink_dropped_packets_total{uplink=\"p1\",reason=\"reconfigured\"} 6"));
  CHECK(Has(text, "# TYPE qosvisor_class_wait_seconds histogram"));
  CHECK(Has(text, "qosvisor_class_wait_seconds_bucket{uplink=\"p1\",class=\"rpc\",le=\"0.001\"} 1"));
  CHECK(Has(text, "qosvisor_class_wait_seconds_bucket{uplink=\"p1\",class=\"rpc\",le=\"0.002\"} 1"));
  CHECK(Has(text, "qosvisor_class_wait_seconds_bucket{uplink=\"p1\",class=\"rpc\",le=\"+Inf\"} 4"));
  CHECK(Has(text, "qosvisor_class_wait_seconds_sum{uplink=\"p1\",class=\"rpc\"} 0.25"));
  CHECK(Has(text, "qosvisor_class_wait_seconds_count{uplink=\"p1\",class=\"rpc\"} 4"));
  CHECK(Has(text, "qosvisor_class_dequeued_packets_total{uplink=\"p1\",class=\"rpc\"} 4"));
  CHECK(Has(text,
            "qosvisor_class_dropped_packets_total{uplink=\"p1\",class=\"rpc\",reason=\"tail\"} 1"));
  CHECK(Has(text, "qosvisor_class_queued_bytes{uplink=\"p1\",class=\"rpc\"} 64"));
  // Label values are escaped.
  CHECK(
      Has(text, "qosvisor_class_enqueued_packets_total{uplink=\"p1\",class=\"bulk \\\"x\\\"\"} 2"));
  CHECK(Has(text, "qosvisor_vm_state{vm=\"web\",state=\"running\"} 1"));
  CHECK(Has(text, "qosvisor_vm_state{vm=\"web\",state=\"paused\"} 0"));
  CHECK(Has(text, "qosvisor_vm_charged_memory_bytes{vm=\"web\"} 1052672"));
  CHECK(Has(text, "qosvisor_mbufs{state=\"in_use\"} 383"));
}

TEST_CASE("metrics: a data plane that did not answer is said, not guessed", "[metrics]") {
  MetricsInput in = SampleInput();
  in.stats = nullptr;
  const std::string text = RenderMetrics(in);
  CHECK(Has(text, "qosvisor_dataplane_answered 0"));
  CHECK(text.find("qosvisor_class_") == std::string::npos);
}

TEST_CASE("metrics: the fleet connection and registrations, only for a box with fleet:",
          "[metrics][fleet]") {
  MetricsInput in = SampleInput();
  std::string text = RenderMetrics(in);
  CHECK(Has(text, "# TYPE qosvisor_fleet_connected gauge"));
  CHECK(Has(text, "qosvisor_fleet_connected{host=\"edge-a\"} 1"));
  CHECK(Has(text, "# TYPE qosvisor_fleet_registrations_total counter"));
  CHECK(Has(text, "qosvisor_fleet_registrations_total{host=\"edge-a\"} 2"));
  in.status["fleet"]["connected"] = false;
  CHECK(Has(RenderMetrics(in), "qosvisor_fleet_connected{host=\"edge-a\"} 0"));
  in.status["fleet"] = nullptr;
  CHECK(RenderMetrics(in).find("qosvisor_fleet") == std::string::npos);
}

TEST_CASE("metrics: promtool accepts the exposition", "[metrics]") {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    WARN(
        "SKIPPED: promtool is not installed (Debian package prometheus; scripts/setup installs "
        "it)");
    return;
  }
  const std::string path = "/tmp/qv-metrics-" + std::to_string(::getpid()) + ".prom";
  std::ofstream(path) << RenderMetrics(SampleInput());
  const std::string cmd = "promtool check metrics < " + path + " > " + path + ".out 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream out(path + ".out");
  std::string report((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
  INFO("promtool: " << report);
  CHECK(rc == 0);
  std::remove(path.c_str());
  std::remove((path + ".out").c_str());
}

TEST_CASE("metrics: the endpoint serves a scrape and refuses a bad address", "[metrics]") {
  int renders = 0;
  auto server = MetricsServer::Start("127.0.0.1:0", [&] {
    ++renders;
    return std::string("qosvisor_up 1\n");
  });
  REQUIRE(server.ok());
  httplib::Client client("127.0.0.1", (*server)->port());
  auto res = client.Get("/metrics");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body == "qosvisor_up 1\n");
  CHECK(res->get_header_value("Content-Type").find("text/plain; version=0.0.4") == 0);
  CHECK(renders == 1);
  CHECK(client.Get("/other")->status == 404);
  auto bad = MetricsServer::Start("nonsense", [] { return std::string(); });
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.message().find("expected host:port") != std::string::npos);
}

}  // namespace
}  // namespace qosvisor::control
