#include "app/images_format.h"

#include <fmt/format.h>

namespace qosvisor::app {
namespace {

using json = nlohmann::json;

std::string Mib(uint64_t bytes) { return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20)); }

}  // namespace

std::string FormatImages(const json& images) {
  std::string out = "held here for other hosts:\n";
  const json& held = images.value("held", json::array());
  if (held.empty()) out += "  none\n";
  for (const json& i : held) {
    out += fmt::format("  {}  {} (on disk {}), parent {} on {}{}{}\n", i.value("id", ""),
                       Mib(i.value("size", 0ull)), Mib(i.value("bytes_on_disk", 0ull)),
                       i.value("parent", ""), i.value("source", ""),
                       i.value("in_use", false) ? ", in use" : "",
                       i.value("removal_pending", false) ? ", goes when unused" : "");
  }
  out += "sent from here:\n";
  const json& sent = images.value("sent", json::array());
  if (sent.empty()) out += "  none\n";
  for (const json& i : sent) {
    std::string hosts;
    for (const json& h : i.value("hosts", json::array())) {
      hosts += (hosts.empty() ? "" : ", ") + h.get<std::string>();
    }
    out += fmt::format("  {}  of {} to {}{}\n", i.value("id", ""), i.value("parent", ""), hosts,
                       i.value("in_use", false) ? "" : " (no VM here uses it: being dropped)");
  }
  return out;
}

std::string FormatPremigration(const json& job) {
  const json& r = job.value("result", json::object());
  std::string out;
  for (const json& h : r.value("hosts", json::array())) {
    if (h.contains("result")) {
      out += fmt::format("image {} on {}: {}\n", h.value("image", ""), h.value("host", ""),
                         h.value("result", ""));
    } else if (h.value("sent_bytes", 0ull) == 0) {
      out += fmt::format("image {} ({}) of vm {} on {}: {}\n", h.value("image", ""),
                         Mib(h.value("size", 0ull)), h.value("vm", ""), h.value("host", ""),
                         h.value("note", std::string("nothing sent")));
    } else {
      out += fmt::format("image {} ({}) of vm {} copied to {}: {} sent\n", h.value("image", ""),
                         Mib(h.value("size", 0ull)), h.value("vm", ""), h.value("host", ""),
                         Mib(h.value("sent_bytes", 0ull)));
    }
  }
  return out.empty() ? "no host\n" : out;
}

}  // namespace qosvisor::app
