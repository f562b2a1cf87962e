// A configuration the loader must refuse, and where and with which words it must say so.
#pragma once

#include <catch2/catch.hpp>
#include <string>

#include "config/loader.h"

namespace qosvisor::config {

struct BadConfig {
  std::string yaml;
  const char* where;  // "line:col: path", as printed after "box.yaml:"
  const char* words;  // must appear in that error's message
};

// Loads `c.yaml` as box.yaml and checks that one of its errors is at `where` and says `words`.
inline void CheckRefused(const BadConfig& c) {
  const LoadResult r = LoadFromString(c.yaml, "box.yaml");
  INFO("YAML:\n" << c.yaml);
  INFO("errors:\n" << r.ErrorText());
  CHECK_FALSE(r.ok());
  const std::string prefix = std::string("box.yaml:") + c.where + ": ";
  bool found = false;
  for (const Diagnostic& d : r.errors) {
    const std::string text = d.ToString();
    found = found || (text.rfind(prefix, 0) == 0 && text.find(c.words) != std::string::npos);
  }
  INFO("expected: " << prefix << "... " << c.words);
  CHECK(found);
}

}  // namespace qosvisor::config
