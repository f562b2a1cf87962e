// `--help` as a manual page: NAME, SYNOPSIS, DESCRIPTION, the commands with every argument and
// option (read from the CLI11 definitions, so help cannot miss one), EXIT STATUS, FILES,
// ENVIRONMENT and EXAMPLES; `PROGRAM COMMAND --help` gives the same sections for one command.
#pragma once

#include <CLI/CLI.hpp>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace qosvisor::app {

struct ManPage {
  std::string name;     // "qosctl"
  std::string summary;  // "control a running qosvisor"
  std::vector<std::string> synopsis;
  std::vector<std::string> description;  // paragraphs
  // Longer text for one command's page (and its entry in the program's page), by command name.
  std::map<std::string, std::vector<std::string>> command_details;
  std::vector<std::pair<std::string, std::string>> exit_status;  // code, meaning
  std::vector<std::pair<std::string, std::string>> files;        // path, what it is
  std::vector<std::pair<std::string, std::string>> environment;  // variable, what it does
  std::vector<std::pair<std::string, std::string>> examples;     // command line, what it does
};

// Install before adding subcommands: they inherit the formatter of their parent.
std::shared_ptr<CLI::FormatterBase> ManPageFormatter(ManPage page);

// `text` broken into lines of at most `width` columns, each indented by `indent` spaces.
std::string Wrap(const std::string& text, size_t indent, size_t width = 80);

}  // namespace qosvisor::app
