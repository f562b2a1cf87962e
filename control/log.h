// The appliance's log: spdlog, one line per event naming the object it concerns ("vm web: ...",
// "port web.eth0: ..."), to stderr, or to the journal (with syslog priorities) when systemd runs
// the daemon. Levels: trace, debug, info (default), warn, error, off.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

#include "common/status.h"

namespace qosvisor::control {

// Parses a --log-level value; the error lists the allowed ones.
Result<spdlog::level::level_enum> ParseLogLevel(const std::string& text);
// Sets up the default logger. `journal`: systemd started us (JOURNAL_STREAM is set).
void InitLogging(spdlog::level::level_enum level, bool journal);
// True when stderr is connected to the journal (systemd sets JOURNAL_STREAM to its device:inode).
bool StderrIsJournal();

}  // namespace qosvisor::control
