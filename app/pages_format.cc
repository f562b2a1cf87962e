#include "app/pages_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <string_view>

namespace qosvisor::app {
namespace {

using json = nlohmann::json;

constexpr size_t kStripWidth = 64;  // regions per line of the strip: 128 MiB

// One character per region, from cold (' ') to saturated ('@'), coloured on a terminal from
// blue (cool) to red (hot) so that the eye finds the hot spots first.
std::string HeatCell(uint32_t counter, uint32_t max) {
  static constexpr std::string_view kShades = " .:-=+*#%@";
  static constexpr int kColours[] = {17, 19, 27, 33, 51, 118, 226, 214, 202, 196};
  const size_t level =
      counter == 0 ? 0 : 1 + static_cast<size_t>(counter) * (kShades.size() - 2) / max;
  const size_t i = std::min(level, kShades.size() - 1);
  return fmt::format("\x1b[48;5;{}m{}\x1b[0m", kColours[i], kShades[i]);
}

std::string Strip(const json& regions, uint32_t max) {
  std::string out = "heat, one cell per 2 MiB (blue: cold ... red: rewritten every period):\n";
  for (size_t r = 0; r < regions.size(); r += kStripWidth) {
    out += fmt::format("  {:#011x} ", regions[r].value("start", 0ull));
    for (size_t i = r; i < std::min(regions.size(), r + kStripWidth); ++i) {
      out += HeatCell(regions[i].value("counter", 0u), max);
    }
    out += '\n';
  }
  return out;
}

std::string Summary(const json& p) {
  uint32_t hot = 0, warm = 0, cold = 0;
  for (const json& r : p["region_list"]) {
    const std::string heat = r.value("heat", "");
    (heat == "hot" ? hot : heat == "warm" ? warm : cold) += 1;
  }
  std::string out = fmt::format(
      "vm {} ({}): {} regions of 2 MiB, {} harvests; {} pages changed in the window, {:.0f} "
      "pages/s\n",
      p.value("name", ""), p.value("state", ""), p.value("regions", 0u), p.value("harvests", 0ull),
      p.value("changed_pages", 0ull), p.value("pages_per_second", 0.0));
  out += fmt::format("regions: {} hot, {} warm, {} cold; huge pages: {} regions{} ({} memory)\n",
                     hot, warm, cold, p.value("huge_regions", 0u),
                     p.contains("huge_backed_bytes")
                         ? fmt::format(", {} MiB backed",
                                       p["huge_backed_bytes"].get<uint64_t>() >> 20)
                         : "",
                     p.value("memory", ""));
  if (p.contains("error")) out += fmt::format("last error: {}\n", p["error"].get<std::string>());
  return out;
}

std::string Table(const json& regions) {
  constexpr const char* kRow = "{:>6}  {:<11} {:>7}  {:<5} {:>7}  {:>9}  {:>6}  {:<8} {}\n";
  std::string out = fmt::format(kRow, "region", "start", "counter", "heat", "changed",
                                "populated", "recent", "decision", "huge");
  for (size_t i = 0; i < regions.size(); ++i) {
    const json& r = regions[i];
    out += fmt::format(kRow, i, fmt::format("{:#011x}", r.value("start", 0ull)),
                       r.value("counter", 0u), r.value("heat", ""), r.value("changed", 0u),
                       r.value("populated", 0u), fmt::format("{}/8", r.value("recent", 0u)),
                       r.value("decision", ""), r.value("huge", false) ? "yes" : "no");
  }
  return out;
}

}  // namespace

std::string FormatPages(const json& pages, bool terminal) {
  if (!pages.value("tracked", false)) {
    return fmt::format("vm {} ({}): not tracked: {}\n", pages.value("name", ""),
                       pages.value("state", ""), pages.value("why", ""));
  }
  const json& regions = pages["region_list"];
  std::string out = Summary(pages);
  if (terminal) out += Strip(regions, std::max(pages.value("counter_max", 255u), 1u));
  return out + Table(regions);
}

}  // namespace qosvisor::app
