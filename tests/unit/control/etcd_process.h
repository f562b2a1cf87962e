// A real etcd for tests: one member on loopback ports nobody holds, a temporary data directory,
// started and waited for (GET /health), stopped (and restarted on the same data) on request,
// and removed with its directory at the end.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

extern char** environ;

namespace qosvisor::testing {

inline constexpr const char* kEtcdBinary = "/usr/bin/etcd";

inline bool EtcdInstalled() { return ::access(kEtcdBinary, X_OK) == 0; }

// A loopback TCP port free at the time of asking.
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  // SAFETY: addr is a sockaddr_in, the size passed is its own.
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

class EtcdProcess {
 public:
  EtcdProcess() : client_port_(FreePort()), peer_port_(FreePort()) {
    char dir[] = "/tmp/qosvisor-etcd-XXXXXX";
    dir_ = ::mkdtemp(dir) != nullptr ? dir : "";
  }
  ~EtcdProcess() {
    Stop();
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(client_port_); }
  int client_port() const { return client_port_; }

  // Starts etcd (again, on the same data) and waits until it is healthy; false if it is not
  // within 10 s.
  bool Start() {
    if (pid_ > 0) return true;
    const std::string client = endpoint();
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
    const std::string data = dir_ + "/data";
    std::vector<std::string> args = {kEtcdBinary,
                                     "--name", "test",
                                     "--data-dir", data,
                                     "--listen-client-urls", client,
                                     "--advertise-client-urls", client,
                                     "--listen-peer-urls", peer,
                                     "--initial-advertise-peer-urls", peer,
                                     "--initial-cluster", "test=" + peer};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string out = dir_ + "/etcd.out";
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&pid_, kEtcdBinary, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = 0;
      return false;
    }
    return WaitHealthy();
  }

  // Kills etcd (SIGKILL: as a crash would) and reaps it.
  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = 0;
  }

 private:
  bool WaitHealthy() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      httplib::Client c("127.0.0.1", client_port_);
      c.set_connection_timeout(std::chrono::milliseconds(200));
      c.set_read_timeout(std::chrono::milliseconds(500));
      auto res = c.Get("/health");
      if (res && res->status == 200 && res->body.find("\"true\"") != std::string::npos) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  int client_port_;
  int peer_port_;
  std::string dir_;
  pid_t pid_ = 0;
};

// Polls `done` every 20 ms for up to `limit`.
inline bool Eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

// In a Catch2 test case: skips it, saying why, when `etcd` (an EtcdProcess*) is null.
#define REQUIRE_ETCD(etcd)                                                                      \
  if ((etcd) == nullptr) {                                                                      \
    WARN("SKIPPED: " << (::qosvisor::testing::EtcdInstalled()                                   \
                             ? "etcd did not start"                                             \
                             : "/usr/bin/etcd is not installed (Debian package etcd-server)")); \
    return;                                                                                     \
  }

// One etcd for a whole test binary, started on first use; nullptr (with the reason printed as a
// skip) when etcd is not installed or does not start.
inline EtcdProcess* SharedEtcd() {
  static std::unique_ptr<EtcdProcess> etcd = [] {
    if (!EtcdInstalled()) return std::unique_ptr<EtcdProcess>();
    auto e = std::make_unique<EtcdProcess>();
    if (!e->Start()) return std::unique_ptr<EtcdProcess>();
    return e;
  }();
  return etcd.get();
}

}  // namespace qosvisor::testing
