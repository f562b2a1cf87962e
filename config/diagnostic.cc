// Formatting of diagnostics (escaped, so a binary file cannot drive the terminal) and the
// edit-distance suggestion that turns "unknown key" into a message a user can act on.
#include "config/diagnostic.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

namespace qosvisor::config {
namespace {

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      const bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                        std::tolower(static_cast<unsigned char>(b[j - 1]));
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (same ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Bytes in the UTF-8 sequence that 'lead' starts, or 0 if no well-formed sequence starts with
// it (a continuation byte, an overlong lead 0xc0/0xc1, or one past U+10FFFF).
size_t SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

// Length of the well-formed UTF-8 sequence at the start of 'text' (overlong forms, surrogates
// and code points past U+10FFFF are not), or 0; its code point in 'cp'.
size_t DecodeUtf8(std::string_view text, char32_t& cp) {
  const size_t length = SequenceLength(static_cast<unsigned char>(text[0]));
  if (length == 0 || text.size() < length) return 0;
  if (length == 1) {
    cp = static_cast<unsigned char>(text[0]);
    return 1;
  }
  cp = static_cast<unsigned char>(text[0]) & (0x7f >> length);
  for (size_t i = 1; i < length; ++i) {
    const auto next = static_cast<unsigned char>(text[i]);
    if ((next & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (next & 0x3f);
  }
  const char32_t min = length == 2 ? 0x80 : length == 3 ? 0x800 : 0x10000;
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return length;
}

// Characters a terminal acts on instead of showing: C0 and C1 controls (ESC starts escape
// sequences, 0x9b is CSI on its own), and the invisible ones that reorder or hide text
// (bidirectional overrides and isolates, zero-width characters, line separators, BOM).
bool IsUnprintable(char32_t cp) {
  return cp < 0x20 || (cp >= 0x7f && cp < 0xa0) || (cp >= 0x200b && cp <= 0x200f) ||
         (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x206f) || cp == 0xfeff;
}

}  // namespace

std::string Printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    char32_t cp = 0;
    const size_t length = DecodeUtf8(text, cp);
    // A broken sequence is escaped one byte at a time, so the next byte gets its own chance.
    const size_t taken = length == 0 ? 1 : length;
    if (length == 0 || IsUnprintable(cp)) {
      for (size_t i = 0; i < taken; ++i) {
        out += fmt::format("\\x{:02x}", static_cast<unsigned char>(text[i]));
      }
    } else {
      out.append(text.substr(0, taken));
    }
    text.remove_prefix(taken);
  }
  return out;
}

// Values in messages come from the file, which may be binary: everything is passed through
// Printable() here, the one place that turns a diagnostic into text.
std::string Diagnostic::ToString() const {
  std::string where = Printable(file);
  if (line > 0) where += fmt::format(":{}:{}", line, column);  // 0: not about one spot
  if (path.empty()) return fmt::format("{}: {}", where, Printable(message));
  return fmt::format("{}: {}: {}", where, Printable(path), Printable(message));
}

void Diagnostics::Error(Mark mark, std::string_view path, std::string message) {
  errors_.push_back(
      Diagnostic{file_, mark.line, mark.column, std::string(path), std::move(message)});
}

std::string Suggest(std::string_view wrong, const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  size_t best_distance = 0;
  for (const std::string& c : candidates) {
    const size_t d = EditDistance(wrong, c);
    if (best == nullptr || d < best_distance) {
      best = &c;
      best_distance = d;
    }
  }
  // Close means a typo or two, scaled for long names; otherwise a guess would mislead.
  if (best == nullptr || best_distance > std::max<size_t>(2, wrong.size() / 3)) return "";
  return fmt::format("did you mean '{}'?", *best);
}

}  // namespace qosvisor::config
