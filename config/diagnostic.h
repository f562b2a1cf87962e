// One error found in a configuration file, with where it is and which key it concerns,
// and the collector that parsing and validation append to so that all errors come out at once.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"

namespace qosvisor::config {

struct Diagnostic {
  std::string file;
  int line = 0;      // 1-based
  int column = 0;    // 1-based
  std::string path;  // key path, e.g. "uplinks[1].rate"
  std::string message;

  // "file:line:col: path: message" (path omitted when empty, e.g. for YAML syntax errors;
  // line:col omitted when line is 0, e.g. for an empty file), each part through Printable().
  std::string ToString() const;
  bool operator==(const Diagnostic&) const = default;
};

class Diagnostics {
 public:
  explicit Diagnostics(std::string file) : file_(std::move(file)) {}

  void Error(Mark mark, std::string_view path, std::string message);
  const std::vector<Diagnostic>& errors() const { return errors_; }
  std::vector<Diagnostic> Take() { return std::move(errors_); }
  size_t count() const { return errors_.size(); }
  const std::string& file() const { return file_; }

 private:
  std::string file_;
  std::vector<Diagnostic> errors_;
};

// 'text' safe to print on a terminal: bytes that are not valid UTF-8, and characters a
// terminal would act on or not show (controls, bidirectional overrides), written as \xNN per
// byte; printable UTF-8 such as "é" is kept.
std::string Printable(std::string_view text);

// "did you mean 'x'?" for the closest candidate by edit distance, or "" when nothing is close.
std::string Suggest(std::string_view wrong, const std::vector<std::string>& candidates);

}  // namespace qosvisor::config
