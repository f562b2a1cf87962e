// Internal to config/: the two stages of loading. Parse turns YAML text into structs (syntax,
// unknown keys, types, single-value ranges); Validate checks what spans keys and sections.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "config/diagnostic.h"

namespace qosvisor::config {

// A VM as written, before its template is applied.
struct ParsedVm {
  std::string name;
  std::optional<std::string> template_name;
  VmSettings settings;
  bool autostart = true;
  Source source;
};

struct Parsed {
  Config config;  // everything but vms, which Validate resolves from 'vms' below
  std::vector<ParsedVm> vms;
};

// Returns nothing when the text is not YAML at all or holds nothing but comments and blanks
// (the error is reported); otherwise whatever could be read, with an error reported for every
// key that could not.
std::optional<Parsed> Parse(std::string_view yaml_text, Diagnostics& diag);

// Cross-key checks, template expansion and implicit VM ports; reports every problem found.
void Validate(Parsed& parsed, Diagnostics& diag);

// "host:port" or "[v6]:port" with a port 1..65535.
bool IsHostPort(std::string_view text);
// IPv4/IPv6 literal or RFC 1123 hostname.
bool IsHostAddress(std::string_view text);

}  // namespace qosvisor::config
