// LoadFromString/LoadFromFile: run Parse then Validate, collect every diagnostic in file order,
// and hand out a Config only when there was nothing to report.
#include "config/loader.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "config/parse.h"

namespace qosvisor::config {

std::string LoadResult::ErrorText() const {
  std::string text;
  for (const Diagnostic& d : errors) {
    text += d.ToString();
    text += '\n';
  }
  return text;
}

LoadResult LoadFromString(std::string_view yaml_text, std::string_view file_name) {
  Diagnostics diag{std::string(file_name)};
  LoadResult result;
  try {
    std::optional<Parsed> parsed = Parse(yaml_text, diag);
    if (parsed) {
      parsed->config.base_dir = std::filesystem::path(file_name).parent_path().string();
      Validate(*parsed, diag);
      if (diag.count() == 0) result.config = std::move(parsed->config);
    }
  } catch (const std::exception& e) {
    // Only allocation failure or a bug gets here; the caller still gets a message, not a throw.
    diag.Error(Mark{1, 1}, "", std::string("internal error while loading: ") + e.what());
  }
  result.errors = diag.Take();
  std::stable_sort(result.errors.begin(), result.errors.end(),
                   [](const Diagnostic& a, const Diagnostic& b) {
                     return std::pair(a.line, a.column) < std::pair(b.line, b.column);
                   });
  return result;
}

namespace {

LoadResult FileError(const std::string& path, std::string_view why) {
  LoadResult result;
  result.errors.push_back(
      Diagnostic{path, 1, 1, "", fmt::format("cannot read the configuration file: {}", why)});
  return result;
}

}  // namespace

LoadResult LoadFromFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return FileError(path, "it is a directory");
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) return FileError(path, errno != 0 ? std::strerror(errno) : "cannot open it");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return FileError(path, "read error");
  return LoadFromString(text, path);
}

}  // namespace qosvisor::config
