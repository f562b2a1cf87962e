// Port and switch/scheduler statistics as terminal tables.
#include "app/status_format.h"

#include <fmt/format.h>

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

}  // namespace qosvisor::app
