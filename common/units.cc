// Parsing and formatting of rates, sizes and durations with exact integer arithmetic, so that
// "2.5Gbps" is 2,500,000,000 bps and never 2,499,999,999.
#include "common/units.h"

#include <fmt/format.h>

#include <array>
#include <cctype>

namespace qosvisor {
namespace {

struct Unit {
  std::string_view name;
  uint64_t factor;
};

constexpr std::array kRateUnits = {
    Unit{"bps", 1},
    Unit{"kbps", 1'000},
    Unit{"mbps", 1'000'000},
    Unit{"gbps", 1'000'000'000},
    Unit{"tbps", 1'000'000'000'000},
};
constexpr std::array kSizeUnits = {
    Unit{"", 1},
    Unit{"b", 1},
    Unit{"kb", 1'000},
    Unit{"mb", 1'000'000},
    Unit{"gb", 1'000'000'000},
    Unit{"tb", 1'000'000'000'000},
    Unit{"kib", 1ull << 10},
    Unit{"mib", 1ull << 20},
    Unit{"gib", 1ull << 30},
    Unit{"tib", 1ull << 40},
};
constexpr std::array kDurationUnits = {
    Unit{"ns", 1},
    Unit{"us", 1'000},
    Unit{"ms", 1'000'000},
    Unit{"s", 1'000'000'000},
    Unit{"m", 60'000'000'000},
    Unit{"h", 3'600'000'000'000},
};

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Splits "2.5 Gbps" into integer digits, fraction digits and unit; scales exactly.
template <size_t N>
Result<uint64_t> ParseQuantity(std::string_view text, const std::array<Unit, N>& units,
                               std::string_view what, std::string_view unit_list,
                               std::string_view example) {
  const std::string original(text);
  auto bad = [&](std::string_view why) {
    return Status::Error(
        fmt::format("'{}' is not a {}{}; use e.g. {}", original, what, why, example));
  };
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())))
    text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.remove_suffix(1);
  size_t pos = 0;
  unsigned __int128 integer = 0;
  unsigned __int128 fraction = 0;
  unsigned __int128 fraction_scale = 1;
  bool any_digit = false;
  for (; pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos])); ++pos) {
    integer = integer * 10 + static_cast<unsigned>(text[pos] - '0');
    if (integer > UINT64_MAX) return bad(" (too large)");
    any_digit = true;
  }
  if (pos < text.size() && text[pos] == '.') {
    for (++pos; pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos])); ++pos) {
      if (fraction_scale < 1'000'000'000'000'000'000ull) {
        fraction = fraction * 10 + static_cast<unsigned>(text[pos] - '0');
        fraction_scale *= 10;
      }
      any_digit = true;
    }
  }
  if (!any_digit) return bad("");
  while (pos < text.size() && text[pos] == ' ') ++pos;
  const std::string unit = Lower(text.substr(pos));
  for (const Unit& u : units) {
    if (u.name != unit) continue;
    const unsigned __int128 scaled_fraction = fraction * u.factor;
    if (scaled_fraction % fraction_scale != 0) return bad(" (not a whole number of the base unit)");
    const unsigned __int128 value = integer * u.factor + scaled_fraction / fraction_scale;
    if (value > UINT64_MAX) return bad(" (too large)");
    return static_cast<uint64_t>(value);
  }
  if (unit.empty()) return bad(fmt::format(" (the unit is missing: {})", unit_list));
  return bad(fmt::format(" (unknown unit '{}': {})", text.substr(pos), unit_list));
}

template <size_t N>
std::string FormatQuantity(uint64_t value, const std::array<Unit, N>& units,
                           std::string_view (*spell)(std::string_view)) {
  // Largest unit that divides the value exactly keeps the text short and lossless.
  const Unit* best = nullptr;
  for (const Unit& u : units) {
    if (u.name.empty()) continue;
    if (value % u.factor == 0 && (best == nullptr || u.factor > best->factor)) best = &u;
  }
  if (value == 0 || best == nullptr) return fmt::format("{}{}", value, spell(units[0].name));
  return fmt::format("{}{}", value / best->factor, spell(best->name));
}

std::string_view SpellRate(std::string_view u) {
  if (u == "bps") return "bps";
  if (u == "kbps") return "Kbps";
  if (u == "mbps") return "Mbps";
  if (u == "gbps") return "Gbps";
  return "Tbps";
}
std::string_view SpellSize(std::string_view u) {
  if (u.empty() || u == "b") return "B";
  if (u == "kib") return "KiB";
  if (u == "mib") return "MiB";
  if (u == "gib") return "GiB";
  if (u == "tib") return "TiB";
  if (u == "kb") return "KB";
  if (u == "mb") return "MB";
  if (u == "gb") return "GB";
  return "TB";
}
std::string_view SpellDuration(std::string_view u) { return u; }

}  // namespace

Result<uint64_t> ParseRate(std::string_view text) {
  return ParseQuantity(text, kRateUnits, "rate", "bps, Kbps, Mbps, Gbps, Tbps",
                       "10Gbps or 250Mbps");
}
Result<uint64_t> ParseSize(std::string_view text) {
  return ParseQuantity(text, kSizeUnits, "size", "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB",
                       "64KiB or 2MiB");
}
Result<uint64_t> ParseDuration(std::string_view text) {
  return ParseQuantity(text, kDurationUnits, "duration", "ns, us, ms, s, m, h", "100us or 5ms");
}

std::string FormatRate(uint64_t bps) { return FormatQuantity(bps, kRateUnits, SpellRate); }
std::string FormatDuration(uint64_t ns) {
  return FormatQuantity(ns, kDurationUnits, SpellDuration);
}
std::string FormatSize(uint64_t bytes) {
  // Prefer binary units for sizes: memory and buffers are counted in KiB/MiB.
  constexpr std::array kBinary = {Unit{"b", 1}, Unit{"kib", 1ull << 10}, Unit{"mib", 1ull << 20},
                                  Unit{"gib", 1ull << 30}, Unit{"tib", 1ull << 40}};
  return FormatQuantity(bytes, kBinary, SpellSize);
}

}  // namespace qosvisor
