#include "pktgen/enqueue_stamps.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

namespace qosvisor::pktgen {
namespace {

// Whether the kernel may stamp on enqueue at all (net.core.netdev_tstamp_prequeue, default 1).
bool PrequeueAllowed() {
  std::ifstream in("/proc/sys/net/core/netdev_tstamp_prequeue");
  int value = 1;
  return !(in >> value) || value != 0;
}

}  // namespace

Result<EnqueueStamps> EnqueueStamps::Enable() {
  if (!PrequeueAllowed()) {
    return Status::Error(
        "net.core.netdev_tstamp_prequeue is 0: the kernel stamps frames only when their receive "
        "softirq runs (sysctl -w net.core.netdev_tstamp_prequeue=1)");
  }
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return Status::Error(fmt::format("cannot open a socket to ask for receive timestamps: {}",
                                     std::strerror(errno)));
  }
  const int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0) {
    const int err = errno;
    close(fd);
    return Status::Error(
        fmt::format("cannot ask for receive timestamps (SO_TIMESTAMPNS): {}", std::strerror(err)));
  }
  return EnqueueStamps(fd);
}

EnqueueStamps& EnqueueStamps::operator=(EnqueueStamps&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

EnqueueStamps::~EnqueueStamps() {
  if (fd_ >= 0) close(fd_);
}

}  // namespace qosvisor::pktgen
