// Lines from a file descriptor (a pipe, a socket) the benchmarks read their peers through, each
// waited for until a deadline.
#pragma once

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "common/status.h"

namespace qosvisor::bench {

class LineReader {
 public:
  using Clock = std::chrono::steady_clock;
  // `what` names the source in errors ("QEMU's QMP socket"); the fd is not owned.
  LineReader(int fd, std::string what) : fd_(fd), what_(std::move(what)) {}

  Result<std::string> Next(Clock::time_point deadline) {
    for (;;) {
      if (const auto nl = buffered_.find('\n'); nl != std::string::npos) {
        std::string line = buffered_.substr(0, nl);
        buffered_.erase(0, nl + 1);
        return line;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) {
        return Status::Error("no line from " + what_ + " in time");
      }
      char buf[4096];
      const ssize_t n = read(fd_, buf, sizeof(buf));
      if (n <= 0) return Status::Error(what_ + " was closed (did QEMU exit?)");
      buffered_.append(buf, static_cast<size_t>(n));
    }
  }

 private:
  int fd_;
  std::string what_;
  std::string buffered_;
};

}  // namespace qosvisor::bench
