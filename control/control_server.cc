// Unix-socket JSON-lines server and client for the control API.
#include "control/control_server.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace qosvisor::control {
namespace {

using nlohmann::json;

Result<sockaddr_un> SocketAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Status::Error(fmt::format("control socket path '{}' must be 1..{} characters", path,
                                     sizeof(addr.sun_path) - 1));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

bool SomeoneListens(const sockaddr_un& addr) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  // SAFETY: sockaddr_un is a sockaddr by the socket API's contract.
  const bool live = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return live;
}

void SetTimeouts(int fd, int timeout_ms) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Reads one '\n'-terminated line of at most kMaxRequestBytes; false on EOF, timeout or overflow.
bool ReadLine(int fd, std::string& buffer, std::string& line) {
  for (;;) {
    if (auto nl = buffer.find('\n'); nl != std::string::npos) {
      line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      return true;
    }
    if (buffer.size() > kMaxRequestBytes) return false;
    char chunk[4096];
    const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

std::string Reply(bool ok, const json& payload) {
  json reply =
      ok ? json{{"ok", true}, {"result", payload}} : json{{"ok", false}, {"error", payload}};
  return reply.dump() + "\n";
}

}  // namespace

Result<std::unique_ptr<ControlServer>> ControlServer::Listen(const std::string& path) {
  auto addr = SocketAddress(path);
  if (!addr.ok()) return addr.status();
  std::error_code ec;
  const auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Status::Error(fmt::format("cannot create the control socket directory {}: {}",
                                     dir.string(), ec.message()));
  }
  if (SomeoneListens(*addr)) {
    return Status::Error(
        fmt::format("control socket {} is in use by a running qosvisor; stop it "
                    "or set control.socket to another path",
                    path));
  }
  unlink(path.c_str());  // a stale socket from a process that died
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  // SAFETY: sockaddr_un is a sockaddr by the socket API's contract.
  if (fd < 0 || bind(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0 ||
      listen(fd, 16) != 0) {
    const std::string why = std::strerror(errno);
    if (fd >= 0) close(fd);
    return Status::Error(fmt::format("cannot listen on control socket {}: {}", path, why));
  }
  chmod(path.c_str(), 0660);
  return std::unique_ptr<ControlServer>(new ControlServer(fd, path));
}

ControlServer::~ControlServer() {
  close(fd_);
  unlink(path_.c_str());
}

void ControlServer::Register(const std::string& command, Handler handler) {
  handlers_[command] = std::move(handler);
}

std::string ControlServer::Answer(const std::string& line) const {
  const json request = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded()) return Reply(false, "request is not valid JSON");
  if (!request.is_object()) return Reply(false, "request must be a JSON object");
  auto command = request.find("command");
  if (command == request.end() || !command->is_string()) {
    return Reply(false, "request needs a string field 'command'");
  }
  auto handler = handlers_.find(command->get<std::string>());
  if (handler == handlers_.end()) {
    std::string known;
    for (const auto& [name, unused] : handlers_) known += (known.empty() ? "" : ", ") + name;
    return Reply(
        false, fmt::format("unknown command '{}'; known: {}", command->get<std::string>(), known));
  }
  const json args = request.value("args", json::object());
  if (!args.is_object()) return Reply(false, "'args' must be a JSON object");
  Result<json> result = handler->second(args);
  return result.ok() ? Reply(true, *result) : Reply(false, result.message());
}

void ControlServer::ServeClient(int client) const {
  SetTimeouts(client, 1000);
  std::string buffer, line;
  while (ReadLine(client, buffer, line)) {
    if (!WriteAll(client, Answer(line))) break;
  }
  if (buffer.size() > kMaxRequestBytes) {
    WriteAll(client, Reply(false, fmt::format("request longer than {} bytes", kMaxRequestBytes)));
  }
}

void ControlServer::ServeOnce(int timeout_ms) {
  pollfd pfd{fd_, POLLIN, 0};
  if (poll(&pfd, 1, timeout_ms) <= 0) return;
  for (;;) {
    const int client = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return;
    ServeClient(client);
    close(client);
  }
}

Result<json> Request(const std::string& socket_path, const std::string& command, const json& args,
                     int timeout_ms) {
  auto addr = SocketAddress(socket_path);
  if (!addr.ok()) return addr.status();
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Error(fmt::format("socket: {}", std::strerror(errno)));
  SetTimeouts(fd, timeout_ms);
  // SAFETY: sockaddr_un is a sockaddr by the socket API's contract.
  if (connect(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
    const std::string why = std::strerror(errno);
    close(fd);
    return Status::Error(
        fmt::format("cannot reach qosvisor at {}: {} (is `qosvisor run` going, "
                    "and is this its control.socket?)",
                    socket_path, why));
  }
  std::string buffer, line;
  const bool ok = WriteAll(fd, json{{"command", command}, {"args", args}}.dump() + "\n") &&
                  ReadLine(fd, buffer, line);
  close(fd);
  if (!ok) return Status::Error(fmt::format("no reply from qosvisor at {}", socket_path));
  json reply = json::parse(line, nullptr, false);
  if (reply.is_discarded() || !reply.is_object()) {
    return Status::Error("qosvisor sent a reply that is not a JSON object");
  }
  if (!reply.value("ok", false)) return Status::Error(reply.value("error", "unknown error"));
  return reply["result"];
}

}  // namespace qosvisor::control
