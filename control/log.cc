// Logger setup: a stderr sink (timestamped, level-tagged lines) or the systemd journal sink.
#include "control/log.h"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/systemd_sink.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

namespace qosvisor::control {

Result<spdlog::level::level_enum> ParseLogLevel(const std::string& text) {
  for (auto level : {spdlog::level::trace, spdlog::level::debug, spdlog::level::info,
                     spdlog::level::warn, spdlog::level::err, spdlog::level::off}) {
    const auto name = spdlog::level::to_string_view(level);
    if (text == std::string(name.data(), name.size()) ||
        (text == "error" && level == spdlog::level::err)) {
      return level;
    }
  }
  return Status::Error(
      fmt::format("log level '{}': use trace, debug, info, warn, error or off", text));
}

bool StderrIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  return ::fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

void InitLogging(spdlog::level::level_enum level, bool journal) {
  std::shared_ptr<spdlog::logger> logger;
  if (journal) {
    // The journal stamps time and process itself; the level becomes the syslog priority.
    auto sink = std::make_shared<spdlog::sinks::systemd_sink_mt>("qosvisor");
    sink->set_pattern("%v");
    logger = std::make_shared<spdlog::logger>("qosvisor", sink);
  } else {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %v");
    logger = std::make_shared<spdlog::logger>("qosvisor", sink);
  }
  logger->set_level(level);
  logger->flush_on(spdlog::level::info);  // a line is on its way before the next event
  spdlog::set_default_logger(logger);
}

}  // namespace qosvisor::control
