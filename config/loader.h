// Entry points of config/: YAML text or file → validated Config, with every error at once,
// and the reverse (a normalized YAML that loads back to an equal Config).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "config/diagnostic.h"

namespace qosvisor::config {

struct LoadResult {
  std::optional<Config> config;  // set only when there are no errors
  std::vector<Diagnostic> errors;

  bool ok() const { return config.has_value() && errors.empty(); }
  // Every error on its own line, in file order.
  std::string ErrorText() const;
};

// Parses and validates; never throws. 'file_name' appears in messages, and its directory is
// the base for relative paths (the current directory if it has none).
LoadResult LoadFromString(std::string_view yaml_text, std::string_view file_name);
// Reads the file (an error if it cannot), then as LoadFromString.
LoadResult LoadFromFile(const std::string& path);

// The normalized configuration as YAML: every value explicit, units canonical, templates kept
// and VMs printed fully resolved with their template reference, implicit ports left out.
// LoadFromString(Format(c)) gives a Config equal to c.
std::string Format(const Config& config);

}  // namespace qosvisor::config
