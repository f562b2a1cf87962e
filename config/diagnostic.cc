// Formatting of diagnostics and the edit-distance suggestion used for unknown keys and names.
// Suggestions are what turns "unknown key" into a message a user can fix without the manual.
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

}  // namespace

std::string Diagnostic::ToString() const {
  if (path.empty()) return fmt::format("{}:{}:{}: {}", file, line, column, message);
  return fmt::format("{}:{}:{}: {}: {}", file, line, column, path, message);
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
