// Parsing of --class flags and the terminal table of a traffic report.
#include "app/traffic_flags.h"

#include <fmt/format.h>

#include <sstream>

#include "common/units.h"

namespace qosvisor::app {
namespace {

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string part;
  std::istringstream in(s);
  while (std::getline(in, part, sep)) out.push_back(part);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

Result<SizeDistribution> ParseSizes(const std::string& text) {
  if (text.rfind("fixed=", 0) == 0) {
    auto bytes = ParseSize(text.substr(6));
    if (!bytes.ok()) return bytes.status();
    if (*bytes == 0) return Status::Error("a fixed size must be > 0");
    return SizeDistribution::Fixed(*bytes);
  }
  if (text.rfind("uniform=", 0) == 0) {
    const auto range = Split(text.substr(8), '-');
    if (range.size() != 2) return Status::Error("uniform sizes are written uniform=MIN-MAX");
    auto lo = ParseSize(range[0]);
    auto hi = ParseSize(range[1]);
    if (!lo.ok()) return lo.status();
    if (!hi.ok()) return hi.status();
    return SizeDistribution::Uniform(*lo, *hi);
  }
  return BuiltinWorkload(text);
}

}  // namespace

Result<pktgen::ClassWorkload> ParseClassFlag(const std::string& text) {
  const auto parts = Split(text, ':');
  auto bad = [&](const std::string& why) {
    return Status::Error(
        fmt::format("--class '{}': {} (form: NAME:FRAMING:DST_PORT:SIZES:SHARE:"
                    "TENANT:SENDER, e.g. rpc:homa:5000:W1:0.2:0:0)",
                    text, why));
  };
  if (parts.size() != 7) return bad(fmt::format("{} fields, expected 7", parts.size()));
  pktgen::ClassWorkload c;
  c.name = parts[0];
  if (c.name.empty()) return bad("the name is empty");
  if (parts[1] == "udp") {
    c.framing = pktgen::Framing::kUdp;
  } else if (parts[1] == "homa") {
    c.framing = pktgen::Framing::kHoma;
  } else if (parts[1] == "tcp") {
    c.framing = pktgen::Framing::kTcp;
  } else {
    return bad(fmt::format("framing '{}' is not udp, homa or tcp", parts[1]));
  }
  try {
    size_t used = 0;
    const unsigned long port = std::stoul(parts[2], &used);
    if (used != parts[2].size() || port == 0 || port > 65535) throw std::invalid_argument("");
    c.dst_port = static_cast<uint16_t>(port);
  } catch (const std::exception&) {
    return bad(fmt::format("destination port '{}' is not 1..65535", parts[2]));
  }
  auto sizes = ParseSizes(parts[3]);
  if (!sizes.ok()) return bad(fmt::format("sizes '{}': {}", parts[3], sizes.message()));
  c.sizes = std::move(sizes).value();
  c.size_name = parts[3];
  try {
    size_t used = 0;
    c.share = std::stod(parts[4], &used);
    if (used != parts[4].size() || !(c.share > 0) || c.share > 1) throw std::invalid_argument("");
  } catch (const std::exception&) {
    return bad(fmt::format("share '{}' is not a number in (0, 1]", parts[4]));
  }
  try {
    size_t used = 0;
    const unsigned long tenant = std::stoul(parts[5], &used);
    const unsigned long sender = std::stoul(parts[6], &used);
    if (tenant > 255 || sender > 255) throw std::invalid_argument("");
    c.tenant = static_cast<uint16_t>(tenant);
    c.sender = static_cast<uint16_t>(sender);
  } catch (const std::exception&) {
    return bad("tenant and sender must be numbers 0..255");
  }
  return c;
}

std::vector<pktgen::ClassWorkload> DemoClasses() {
  std::vector<pktgen::ClassWorkload> classes;
  for (const char* flag :
       {"rpc:homa:5000:W1:0.2:0:0", "bulk:tcp:6000:W4:0.5:0:0", "besteffort:udp:7000:W2:0.3:1:1"}) {
    classes.push_back(std::move(ParseClassFlag(flag)).value());
  }
  return classes;
}

std::string FormatReport(const nlohmann::json& r) {
  std::string out =
      fmt::format("traffic: {:.1f} s at {:.0f}% of {}, {} messages, offered {:.0f} Mbps\n",
                  r.value("duration_s", 0.0), r.value("load", 0.0) * 100,
                  FormatRate(r.value("bottleneck_bps", uint64_t{0})),
                  r.value("generated_messages", 0ull), r.value("offered_bps", 0.0) / 1e6);
  out += fmt::format("{:<11} {:>6} {:>9} {:>9} {:>7} {:>9} {:>9} {:>10} {:>10}  {}\n", "class",
                     "tenant", "sent", "received", "lost", "Mbps", "share", "lat p50us",
                     "lat p99us", "slowdown p50/p99 by message size");
  for (const auto& c : r["classes"]) {
    std::string slow;
    for (const auto& [bucket, s] : c["slowdown"].items()) {
      const uint64_t incomplete = s.value("incomplete", uint64_t{0});
      slow += fmt::format("{} {:.1f}/{:.1f}{}  ", bucket, s.value("p50", 0.0), s.value("p99", 0.0),
                          incomplete ? fmt::format(" ({} incomplete)", incomplete) : "");
    }
    out +=
        fmt::format("{:<11} {:>6} {:>9} {:>9} {:>7} {:>9.1f} {:>8.1f}% {:>10.1f} {:>10.1f}  {}\n",
                    c.value("class", ""), c.value("tenant", 0), c.value("sent_packets", 0ull),
                    c.value("received_packets", 0ull), c.value("lost_packets", 0ull),
                    c.value("throughput_bps", 0.0) / 1e6, c.value("byte_share", 0.0) * 100,
                    c["latency_us"].value("p50", 0.0), c["latency_us"].value("p99", 0.0), slow);
  }
  if (r.contains("unloaded_latency_us") && r["unloaded_latency_us"].value("probes_answered", 0)) {
    out += fmt::format(
        "slowdown = completion time / (bytes at the bottleneck rate + the unloaded path's {:.1f}-"
        "{:.1f} us); incomplete: sent whole, never completed (packets lost)\n",
        r["unloaded_latency_us"].value("small_frame", 0.0),
        r["unloaded_latency_us"].value("full_frame", 0.0));
  }
  return out;
}

}  // namespace qosvisor::app
