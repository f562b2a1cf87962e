// `qosctl uplinks` as terminal tables: per uplink a summary, a class table (queue, drops by
// reason, wait percentiles), the messages holding the backlog and a bar chart per class of how
// far queued heads' ranks lie from the next one out.
#include "app/uplinks_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace qosvisor::app {

using nlohmann::json;

namespace {

constexpr int kBarWidth = 30;

std::string Bytes(double bytes) {
  if (bytes < 1024) return fmt::format("{:.0f}B", bytes);
  if (bytes < 1048576) return fmt::format("{:.1f}KiB", bytes / 1024);
  if (bytes < 1073741824) return fmt::format("{:.1f}MiB", bytes / 1048576);
  return fmt::format("{:.1f}GiB", bytes / 1073741824);
}

std::string Seconds(double s) {
  if (s < 1e-6) return fmt::format("{:.0f}ns", s * 1e9);
  if (s < 1e-3) return fmt::format("{:.1f}us", s * 1e6);
  if (s < 1) return fmt::format("{:.1f}ms", s * 1e3);
  return fmt::format("{:.2f}s", s);
}

std::string BitRate(uint64_t bytes_per_second) {
  const double bits = 8.0 * static_cast<double>(bytes_per_second);
  if (bits == 0) return "unpaced";
  if (bits >= 1e9) return fmt::format("{:.2f}Gbit/s", bits / 1e9);
  return fmt::format("{:.1f}Mbit/s", bits / 1e6);
}

// A wait percentile; one in the histogram's last bucket, which is open, is a lower bound.
std::string Wait(const json& c, const std::string& name) {
  const json seconds = c.value("wait_" + name + "_seconds", json(nullptr));
  if (seconds.is_null()) return "-";
  return (c.value("wait_" + name + "_open", false) ? ">=" : "") + Seconds(seconds);
}

// A rank distance in its class's unit: bytes, seconds, or wfq tags (bytes of virtual time).
std::string Distance(double value, const std::string& unit) {
  if (unit == "seconds") return Seconds(value);
  if (unit == "bytes") return Bytes(value);
  return fmt::format("{:.0f}", value);
}

std::string Summary(const json& u) {
  return fmt::format(
      "uplink {}: line {}, paced {}\n"
      "  queued: {} packets, {} (buffer: {} packets, {})\n"
      "  messages: {} queued, {} live in a table of {}; dropped: {} reconfigured, {} unknown "
      "class\n",
      u.value("port", ""), BitRate(u.value("rate_bytes_per_second", 0ull)),
      BitRate(u.value("pacing_bytes_per_second", 0ull)), u.value("queued_packets", 0ull),
      Bytes(u.value("queued_bytes", 0.0)), u.value("buffer_packets", 0ull),
      Bytes(u.value("buffer_bytes", 0.0)), u.value("queued_messages", 0ull),
      u.value("live_messages", 0ull), u.value("max_messages", 0ull),
      u["dropped"].value("reconfigured", 0ull), u["dropped"].value("unknown_class", 0ull));
}

std::string ClassTable(const json& classes) {
  const char* row = "  {:<14} {:<8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}\n";
  std::string out = fmt::format(fmt::runtime(row), "class", "policy", "messages", "queued", "pkts",
                                "tail", "worst", "msg_limit", "wait_p50", "wait_p99");
  for (const json& c : classes) {
    const json& d = c["dropped"];
    out +=
        fmt::format(fmt::runtime(row), c.value("class", ""), c.value("policy", ""),
                    c.value("queued_messages", 0ull), Bytes(c.value("queued_bytes", 0.0)),
                    c.value("queued_packets", 0ull), d.value("tail", 0ull), d.value("worst", 0ull),
                    d.value("message_limit", 0ull), Wait(c, "p50"), Wait(c, "p99"));
  }
  return out;
}

std::string TopTable(const json& top) {
  if (top.empty()) return "  no message is queued\n";
  const char* row = "  {:<20} {:<14} {:>10} {:>6} {:>10} {:>10}\n";
  std::string out =
      fmt::format(fmt::runtime(row), "message", "class", "queued", "pkts", "sent", "head_wait");
  for (const json& m : top) {
    const std::string id = m.value("default_queue", false)
                               ? "(default queue)"
                               : fmt::format("{:#x}", m.value("message_id", 0ull));
    out += fmt::format(
        fmt::runtime(row), id, m.value("class", ""), Bytes(m.value("queued_bytes", 0.0)),
        fmt::format("{}{}", m.value("queued_packets", 0ull),
                    m.value("more_packets", false) ? "+" : ""),
        Bytes(m.value("sent_bytes", 0.0)), Seconds(m.value("head_wait_seconds", 0.0)));
  }
  return out;
}

// One bar per bucket, scaled to the fullest.
std::string RankChart(const json& c) {
  const json& ranks = c["ranks"];
  const json& buckets = ranks["distance_buckets"];
  if (buckets.empty()) return "";
  const std::string unit = ranks.value("unit", "");
  uint64_t most = 1;
  for (const json& b : buckets) most = std::max<uint64_t>(most, b.value("count", 0ull));
  std::string out = fmt::format("  {} ({}, {}; {} of {} heads read):\n", c.value("class", ""),
                                c.value("policy", ""), unit, ranks.value("sampled", 0ull),
                                c.value("queued_messages", 0ull));
  for (const json& b : buckets) {
    const uint64_t n = b.value("count", 0ull);
    const double hi = b.value("hi", 0.0);
    const std::string label = hi == 0 ? "0" : "< " + Distance(hi, unit);
    // A bucket that holds heads gets a mark however few; an empty one none.
    const auto width = static_cast<size_t>(
        n == 0 ? 0
               : std::max<double>(1, std::round(kBarWidth * static_cast<double>(n) /
                                                static_cast<double>(most))));
    out += fmt::format("    {:>10} {:<30} {}\n", label, std::string(width, '#'), n);
  }
  return out;
}

}  // namespace

std::string FormatUplinks(const json& uplinks) {
  std::string out;
  for (const json& u : uplinks) {
    if (!out.empty()) out += "\n";
    out += Summary(u) + ClassTable(u["classes"]);
    out += "  top messages by backlog:\n" + TopTable(u["top_messages"]);
    std::string charts;
    for (const json& c : u["classes"]) charts += RankChart(c);
    if (!charts.empty()) {
      out += "  ranks of queued heads, distance from the next one out:\n" + charts;
    }
  }
  return out;
}

}  // namespace qosvisor::app
