// Helpers for hv/ tests: skipping [kvm] tests visibly when /dev/kvm is unusable, finding the
// test guests, temporary files, polling with a deadline, and the two ends of a migration stream.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

#include "hv/kvm.h"
#include "hv/migration_stream.h"
#include "hv/vm_options.h"

// ctest marks a test whose output matches "SKIPPED:" as skipped (tests/unit/hv/CMakeLists.txt).
#define QV_REQUIRE_KVM()                                                  \
  do {                                                                    \
    std::string qv_kvm_reason = ::qosvisor::hv::Kvm::UnavailableReason(); \
    if (!qv_kvm_reason.empty()) {                                         \
      WARN("SKIPPED: /dev/kvm is not usable here: " << qv_kvm_reason);    \
      return;                                                             \
    }                                                                     \
  } while (0)

namespace qosvisor::hv::testing {

// The two ends of one migration stream over a socketpair, keyed alike, no handshake.
struct ChannelPair {
  MigrationChannel source;
  MigrationChannel destination;
};
inline ChannelPair ConnectedChannels() {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  std::array<uint8_t, 32> key{};
  key[0] = 7;
  return {MigrationChannel::ForTesting(UniqueFd(fds[0]), key, MigrationRole::kSource),
          MigrationChannel::ForTesting(UniqueFd(fds[1]), key, MigrationRole::kDestination)};
}

inline std::string GuestPath(const std::string& name) {
  return std::string(QOSVISOR_GUEST_DIR) + "/" + name + ".elf";
}

// A 32 MiB VM running test guest `guest`, its serial output to `log` ("" for none).
inline VmOptions GuestOptions(const std::string& name, const std::string& guest,
                              const std::string& log) {
  VmOptions o;
  o.name = name;
  o.memory_bytes = 32ull << 20;
  o.image = GuestPath(guest);
  o.serial_log = log;
  return o;
}

// A per-process path under /tmp, removed by the caller's TempFile guard.
class TempFile {
 public:
  explicit TempFile(const std::string& stem)
      : path_("/tmp/qv-hv-test-" + std::to_string(::getpid()) + "-" + stem) {
    std::remove(path_.c_str());
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return done();
}

}  // namespace qosvisor::hv::testing
