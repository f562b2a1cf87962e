// The control API: one JSON object per line over a Unix socket, served by the control thread.
// Request {"command": "...", "args": {...}}; reply {"ok": true, "result": ...} or {"ok": false,
// "error": "..."}. Malformed requests get an error reply, never a crash.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace qosvisor::control {

inline constexpr size_t kMaxRequestBytes = 64 * 1024;

class ControlServer {
 public:
  // A handler returns the result, or an error Status whose message goes back to the client.
  using Handler = std::function<Result<nlohmann::json>(const nlohmann::json& args)>;

  // Creates the socket's directory if needed; refuses to take over a socket a live server holds.
  static Result<std::unique_ptr<ControlServer>> Listen(const std::string& path);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  void Register(const std::string& command, Handler handler);
  // Waits up to timeout_ms for a client and answers its requests; returns so the caller can
  // check for shutdown between calls.
  void ServeOnce(int timeout_ms);
  const std::string& path() const { return path_; }

  // Answers one request line (exposed for tests and fuzzing).
  std::string Answer(const std::string& line) const;

 private:
  ControlServer(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  void ServeClient(int client) const;
  int fd_;
  std::string path_;
  std::map<std::string, Handler> handlers_;
};

// Client side (qosctl): sends one request and waits for its reply.
Result<nlohmann::json> Request(const std::string& socket_path, const std::string& command,
                               const nlohmann::json& args = nlohmann::json::object(),
                               int timeout_ms = 5000);

}  // namespace qosvisor::control
