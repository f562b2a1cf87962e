// Unix-socket JSON-lines server and client for the control API.
#include "control/control_server.h"

#include <fmt/format.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
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

uint64_t NowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// How deeply arrays and objects nest in `text`, read as JSON (brackets inside strings do not
// count). Checked before parsing, so a hostile request cannot make the parser or the
// destructor of its result recurse deeply.
int NestingDepth(const std::string& text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char ch : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (ch == '\\') {
        escaped = true;
      } else if (ch == '"') {
        in_string = false;
      }
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (ch == ']' || ch == '}') {
      --depth;
    }
  }
  return deepest;
}

Result<gid_t> GroupId(const std::string& name) {
  std::vector<char> buf(16384);
  group g{};
  group* found = nullptr;
  const int err = getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found);
  if (found == nullptr) {
    return Status::Error(fmt::format("control.group: no Unix group '{}' on this host{}", name,
                                     err != 0 ? std::string(": ") + std::strerror(err) : ""));
  }
  return g.gr_gid;
}

}  // namespace

std::string UserNameOf(uid_t uid) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  getpwuid_r(uid, &pw, buf.data(), buf.size(), &found);
  return found != nullptr ? found->pw_name : fmt::format("uid {}", uid);
}

namespace {

std::optional<std::string> GroupName(gid_t gid) {
  std::vector<char> buf(16384);
  group g{};
  group* found = nullptr;
  getgrgid_r(gid, &g, buf.data(), buf.size(), &found);
  if (found == nullptr) return std::nullopt;
  return std::string(found->gr_name);
}

// The peer's identity as its credentials give it; names are looked up once, at connect.
Caller CallerOf(int fd, const ucred& cred) {
  Caller c;
  c.uid = cred.uid;
  c.gid = cred.gid;
  c.privileged = cred.uid == 0 || cred.uid == geteuid();
  gid_t groups[256];
  socklen_t glen = sizeof(groups);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0) {
    c.groups.assign(groups, groups + glen / sizeof(gid_t));
  }
  c.name = UserNameOf(cred.uid);
  std::vector<gid_t> all = c.groups;
  all.insert(all.begin(), cred.gid);
  for (gid_t g : all) {
    auto name = GroupName(g);
    if (name &&
        std::find(c.group_names.begin(), c.group_names.end(), *name) == c.group_names.end()) {
      c.group_names.push_back(*name);
    }
  }
  return c;
}

// Anything at `path` may be replaced only if it is a socket nobody serves (left by a process
// that died); a regular file, directory or link there is the user's and stays.
Status ClearStaleSocket(const std::string& path, const sockaddr_un& addr) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::Error(fmt::format("control socket {}: {}", path, std::strerror(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Status::Error(
        fmt::format("control socket path {} exists and is not a socket; refusing to replace it "
                    "(remove it or set control.socket to another path)",
                    path));
  }
  if (SomeoneListens(addr)) {
    return Status::Error(
        fmt::format("control socket {} is in use by a running qosvisor; stop it "
                    "or set control.socket to another path",
                    path));
  }
  unlink(path.c_str());
  return Status::Ok();
}

// Binds with the umask that gives the socket its final mode at creation: there is no window in
// which a chmod has yet to narrow it. (umask is process-wide; this runs at start-up, before any
// other thread creates files.)
int BindListening(const sockaddr_un& addr, mode_t mode) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  const mode_t old_mask = umask(static_cast<mode_t>(~mode & 0777));
  // SAFETY: sockaddr_un is a sockaddr by the socket API's contract.
  const int bound = bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int saved_errno = errno;
  umask(old_mask);
  if (bound != 0 || listen(fd, 16) != 0) {
    if (bound != 0) errno = saved_errno;
    const int why = errno;
    close(fd);
    errno = why;
    return -1;
  }
  return fd;
}

}  // namespace

Result<std::unique_ptr<ControlServer>> ControlServer::Listen(const std::string& path,
                                                             const ListenOptions& options) {
  auto addr = SocketAddress(path);
  if (!addr.ok()) return addr.status();
  std::optional<gid_t> gid;
  if (options.group) {
    auto g = GroupId(*options.group);
    if (!g.ok()) return g.status();
    gid = *g;
  }
  std::error_code ec;
  const auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Status::Error(fmt::format("cannot create the control socket directory {}: {}",
                                     dir.string(), ec.message()));
  }
  if (Status s = ClearStaleSocket(path, *addr); !s.ok()) return s;
  const int fd = BindListening(*addr, gid ? 0660 : 0600);
  if (fd < 0) {
    return Status::Error(
        fmt::format("cannot listen on control socket {}: {}", path, std::strerror(errno)));
  }
  if (gid && lchown(path.c_str(), static_cast<uid_t>(-1), *gid) != 0) {
    const std::string why = std::strerror(errno);
    close(fd);
    unlink(path.c_str());
    return Status::Error(fmt::format("cannot give control socket {} to group '{}': {}", path,
                                     *options.group, why));
  }
  return std::unique_ptr<ControlServer>(new ControlServer(fd, path, gid, options));
}

ControlServer::~ControlServer() {
  for (Client& c : clients_) close(c.fd);
  close(fd_);
  unlink(path_.c_str());
}

void ControlServer::Register(const std::string& command, Handler handler) {
  handlers_[command] = [handler = std::move(handler)](const json& args, const Caller&) {
    return handler(args);
  };
}

void ControlServer::Register(const std::string& command, CallerHandler handler) {
  handlers_[command] = std::move(handler);
}

std::string Caller::Describe() const {
  return name.starts_with("uid ") ? name : fmt::format("{} (uid {})", name, uid);
}

std::string ControlServer::Answer(const std::string& line, const Caller& caller) const {
  if (NestingDepth(line) > kMaxJsonDepth) {
    return Reply(false, fmt::format("request nests arrays/objects deeper than {}", kMaxJsonDepth));
  }
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
  if (admission_) {
    if (Status s = admission_(handler->first, args, caller); !s.ok()) {
      return Reply(false, s.message());
    }
  }
  Result<json> result = handler->second(args, caller);
  return result.ok() ? Reply(true, *result) : Reply(false, result.message());
}

std::optional<std::string> ControlServer::Refusal(int client_fd, Caller& caller) const {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(client_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return fmt::format("cannot read the client's credentials: {}", std::strerror(errno));
  }
  caller = CallerOf(client_fd, cred);
  if (caller.privileged) return std::nullopt;
  if (gid_) {
    if (cred.gid == *gid_) return std::nullopt;
    if (std::find(caller.groups.begin(), caller.groups.end(), *gid_) != caller.groups.end()) {
      return std::nullopt;
    }
    return fmt::format("permission denied: uid {} is neither root nor a member of group '{}'",
                       cred.uid, *options_.group);
  }
  return fmt::format(
      "permission denied: uid {} is not root (set control.group to let a group in)", cred.uid);
}

void ControlServer::AcceptClients(uint64_t now_ms) {
  for (;;) {
    const int fd = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    // A refused client is still read until its first request is whole: closing at once would
    // make its send fail, and it would never learn why.
    Client c{fd, now_ms + options_.request_deadline_ms, {}, {}, false, {}, {}};
    if (auto why = Refusal(fd, c.caller)) {
      c.refusal = Reply(false, *why);
    } else if (clients_.size() >= kMaxClients) {
      c.refusal = Reply(false, fmt::format("too many control clients (at most {})", kMaxClients));
    }
    clients_.push_back(std::move(c));
  }
}

void ControlServer::ReadRequests(Client& c, uint64_t now_ms) {
  char chunk[4096];
  bool hung_up = false;
  for (;;) {
    const ssize_t n = recv(c.fd, chunk, sizeof(chunk), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    if (n <= 0) {
      hung_up = true;  // answer what it sent whole (it may only have shut its side), then close
      break;
    }
    c.in.append(chunk, static_cast<size_t>(n));
    if (c.in.size() > kMaxRequestBytes + sizeof(chunk)) break;
  }
  for (size_t nl; !c.closing && (nl = c.in.find('\n')) != std::string::npos;) {
    if (nl > kMaxRequestBytes) break;
    if (!c.refusal.empty()) {
      c.out += c.refusal;
      c.closing = true;
      break;
    }
    c.out += Answer(c.in.substr(0, nl), c.caller);
    c.in.erase(0, nl + 1);
    c.deadline_ms = now_ms + options_.request_deadline_ms;
    if (c.out.size() > kMaxPendingReply) c.closing = true;  // it does not read its replies
  }
  if (!c.closing && c.in.size() > kMaxRequestBytes) {
    c.out += Reply(false, fmt::format("request longer than {} bytes", kMaxRequestBytes));
    c.closing = true;
  }
  if (hung_up) c.closing = true;
}

void ControlServer::WriteReplies(Client& c) {
  while (!c.out.empty()) {
    const ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
      c.out.clear();
      c.closing = true;
      return;
    }
    c.out.erase(0, static_cast<size_t>(n));
  }
}

// Closes clients that are done (or hung up) and those whose request is overdue; an overdue
// client is told why.
void ControlServer::DropFinishedClients(uint64_t now_ms) {
  for (size_t i = 0; i < clients_.size();) {
    Client& c = clients_[i];
    if (!c.closing && now_ms >= c.deadline_ms) {
      c.out += Reply(false, fmt::format("request not complete within {} ms",
                                        options_.request_deadline_ms));
      c.closing = true;
      WriteReplies(c);
    }
    if (c.closing && (c.out.empty() || now_ms >= c.deadline_ms)) {
      close(c.fd);
      clients_[i] = std::move(clients_.back());
      clients_.pop_back();
      continue;
    }
    ++i;
  }
}

void ControlServer::ServeOnce(int timeout_ms) {
  std::vector<pollfd> fds;
  fds.push_back({fd_, POLLIN, 0});
  uint64_t now = NowMs();
  int wait = timeout_ms;
  for (const Client& c : clients_) {
    fds.push_back({c.fd, static_cast<short>((c.closing ? 0 : POLLIN) | (c.out.empty() ? 0 : POLLOUT)),
                   0});
    wait = std::min<int>(wait, static_cast<int>(c.deadline_ms > now ? c.deadline_ms - now : 0));
  }
  if (poll(fds.data(), fds.size(), wait) < 0) return;
  now = NowMs();
  // clients_ may grow below; the pollfds cover the clients that were there before.
  for (size_t i = 1; i < fds.size(); ++i) {
    Client& c = clients_[i - 1];
    if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) ReadRequests(c, now);
    WriteReplies(c);
  }
  if (fds[0].revents & POLLIN) AcceptClients(now);
  DropFinishedClients(now);
}

Result<json> Request(const std::string& socket_path, const std::string& command, const json& args,
                     int timeout_ms, bool* unreachable) {
  bool scratch = false;
  bool& no_daemon = unreachable != nullptr ? *unreachable : scratch;
  no_daemon = true;  // until a reply arrives
  auto addr = SocketAddress(socket_path);
  if (!addr.ok()) return addr.status();
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Error(fmt::format("socket: {}", std::strerror(errno)));
  SetTimeouts(fd, timeout_ms);
  // SAFETY: sockaddr_un is a sockaddr by the socket API's contract.
  if (connect(fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
    const int err = errno;
    const std::string why = std::strerror(err);
    close(fd);
    if (err == EACCES) {
      return Status::Error(fmt::format(
          "permission denied on {}: the control socket admits root, the user qosvisor runs as, "
          "and members of its control.group",
          socket_path));
    }
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
  no_daemon = false;
  json reply = json::parse(line, nullptr, false);
  if (reply.is_discarded() || !reply.is_object()) {
    return Status::Error("qosvisor sent a reply that is not a JSON object");
  }
  if (!reply.value("ok", false)) return Status::Error(reply.value("error", "unknown error"));
  return reply["result"];
}

}  // namespace qosvisor::control
