// The manual-page formatter: one page for the program, one per command.
#include "app/man_page.h"

#include <fmt/format.h>

#include <sstream>

namespace qosvisor::app {
namespace {

constexpr size_t kIndent = 7;  // as man(1) indents body text
constexpr size_t kOptionIndent = 11;

bool TakesValue(const CLI::Option* opt) {
  return opt->get_type_size() != 0 && !opt->get_type_name().empty();
}

std::vector<const CLI::Option*> OptionsOf(const CLI::App* app, bool positional) {
  std::vector<const CLI::Option*> out;
  for (const CLI::Option* opt : app->get_options()) {
    if (opt == app->get_help_ptr()) continue;
    if (opt->get_positional() == positional) out.push_back(opt);
  }
  return out;
}

// "vm NAME ACTION [ARG] [--template T] ..." for a command's synopsis.
std::string Usage(const CLI::App* command) {
  std::string out = command->get_name();
  for (const CLI::Option* opt : OptionsOf(command, true)) {
    const std::string name = opt->get_name(true);
    out += opt->get_required() ? " " + name : " [" + name + "]";
  }
  for (const CLI::Option* opt : OptionsOf(command, false)) {
    std::string flag = opt->get_name();
    if (TakesValue(opt)) flag += " " + opt->get_type_name();
    out += " [" + flag + "]";
  }
  return out;
}

std::string Section(const std::string& title) { return "\n" + title + "\n"; }

// One argument or option: its name on a line, its description wrapped below.
std::string OptionEntry(const CLI::Option* opt, size_t indent) {
  std::string head = opt->get_positional() ? opt->get_name(true) : opt->get_name(false, true);
  if (!opt->get_positional() && TakesValue(opt)) head += " " + opt->get_type_name();
  if (opt->get_positional() && opt->get_required()) head += " (required)";
  std::string out = std::string(indent, ' ') + head + "\n";
  out += Wrap(opt->get_description(), indent + 4);
  return out;
}

std::string Arguments(const CLI::App* app, size_t indent) {
  std::string out;
  for (const CLI::Option* opt : OptionsOf(app, true)) out += OptionEntry(opt, indent);
  for (const CLI::Option* opt : OptionsOf(app, false)) out += OptionEntry(opt, indent);
  return out;
}

// Heads short enough to leave room share their line with the text, as man(1) lays out tags.
std::string Pairs(const std::vector<std::pair<std::string, std::string>>& items) {
  std::string out;
  for (const auto& [head, text] : items) {
    out += std::string(kIndent, ' ') + head;
    const std::string body = Wrap(text, kOptionIndent);
    if (head.size() + 1 < kOptionIndent - kIndent) {
      out += body.substr(kIndent + head.size());
    } else {
      out += "\n" + body;
    }
  }
  return out;
}

class Formatter : public CLI::FormatterBase {
 public:
  explicit Formatter(ManPage page) : page_(std::move(page)) {}

  std::string make_help(const CLI::App* app, std::string, CLI::AppFormatMode) const override {
    return app->get_parent() == nullptr ? ProgramPage(app) : CommandPage(app);
  }

 private:
  std::string Details(const std::string& command, size_t indent) const {
    std::string out;
    auto it = page_.command_details.find(command);
    if (it == page_.command_details.end()) return out;
    for (const std::string& paragraph : it->second) out += Wrap(paragraph, indent);
    return out;
  }

  std::string ProgramPage(const CLI::App* app) const {
    std::string out = "NAME\n" + Wrap(page_.name + " - " + page_.summary, kIndent);
    out += Section("SYNOPSIS");
    for (const std::string& s : page_.synopsis) out += Wrap(s, kIndent);
    out += Section("DESCRIPTION");
    for (size_t i = 0; i < page_.description.size(); ++i) {
      out += (i ? "\n" : "") + Wrap(page_.description[i], kIndent);
    }
    out += Section("OPTIONS");
    out += Arguments(app, kIndent);
    out += std::string(kIndent, ' ') + "-h,--help\n" +
           Wrap("this page; COMMAND --help: the page of one command", kOptionIndent);
    out += Section("COMMANDS");
    for (const CLI::App* command : app->get_subcommands({})) {
      out += Wrap(Usage(command), kIndent);
      out += Wrap(command->get_description(), kOptionIndent);
      out += Details(command->get_name(), kOptionIndent);
      out += Arguments(command, kOptionIndent);
      out += "\n";
    }
    out += "EXIT STATUS\n" + Pairs(page_.exit_status);
    if (!page_.files.empty()) out += Section("FILES") + Pairs(page_.files);
    if (!page_.environment.empty()) out += Section("ENVIRONMENT") + Pairs(page_.environment);
    if (!page_.examples.empty()) out += Section("EXAMPLES") + Pairs(page_.examples);
    out += Section("SEE ALSO");
    out += Wrap(fmt::format("{} COMMAND --help for one command's page; README.md and "
                            "docs/configuration.md (installed under share/doc/qosvisor).",
                            page_.name),
                kIndent);
    return out;
  }

  std::string CommandPage(const CLI::App* command) const {
    const std::string name = command->get_name();
    std::string out =
        "NAME\n" + Wrap(page_.name + " " + name + " - " + command->get_description(), kIndent);
    out += Section("SYNOPSIS") + Wrap(page_.name + " [OPTIONS] " + Usage(command), kIndent);
    if (page_.command_details.contains(name)) {
      out += Section("DESCRIPTION") + Details(name, kIndent);
    }
    const std::string arguments = Arguments(command, kIndent);
    if (!arguments.empty()) out += Section("ARGUMENTS AND OPTIONS") + arguments;
    out += Section("EXIT STATUS") + Pairs(page_.exit_status);
    out += Section("SEE ALSO") + Wrap(page_.name + " --help for every command", kIndent);
    return out;
  }

  ManPage page_;
};

}  // namespace

std::string Wrap(const std::string& text, size_t indent, size_t width) {
  std::string out, line;
  std::istringstream words(text);
  for (std::string word; words >> word;) {
    if (!line.empty() && indent + line.size() + 1 + word.size() > width) {
      out += std::string(indent, ' ') + line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
  }
  if (!line.empty()) out += std::string(indent, ' ') + line + "\n";
  return out;
}

std::shared_ptr<CLI::FormatterBase> ManPageFormatter(ManPage page) {
  return std::make_shared<Formatter>(std::move(page));
}

}  // namespace qosvisor::app
