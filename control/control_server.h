// The control API: one JSON object per line over a Unix socket, served by the control thread.
// Request {"command": "...", "args": {...}}; reply {"ok": true, "result": ...} or {"ok": false,
// "error": "..."}. Malformed requests get an error reply, never a crash.
//
// Who may talk to it: the socket is created 0600 (0660 with a control group) by the umask in
// force at bind, so it is never reachable by others even for an instant, and every client's
// credentials (SO_PEERCRED, SO_PEERGROUPS) are checked again on accept: root, the server's own
// user, or a member of the control group. Clients are served concurrently from one poll loop;
// each request must arrive whole within kRequestDeadlineMs, so a slow or stalled client delays
// neither the others nor shutdown.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace qosvisor::control {

inline constexpr size_t kMaxRequestBytes = 64 * 1024;
inline constexpr int kMaxJsonDepth = 32;          // nested arrays/objects in one request
inline constexpr int kRequestDeadlineMs = 5000;   // from a request's first byte (or connect)
inline constexpr size_t kMaxClients = 64;         // connections served at once
inline constexpr size_t kMaxPendingReply = 4 << 20;  // unread reply bytes before a client is cut

// Who sent a request, from the peer's credentials at connect (SO_PEERCRED, SO_PEERGROUPS).
struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;             // supplementary groups
  std::string name;                      // the user's name, or "uid N" when it has none
  std::vector<std::string> group_names;  // names of gid and groups that have one
  // Root or the server's own user: may do everything. The default (tests, Answer(line)).
  bool privileged = true;
  // "alice (uid 1001)", for messages.
  std::string Describe() const;
};

// A user's name from the password database, or "uid N" when it has none.
std::string UserNameOf(uid_t uid);

struct ListenOptions {
  // A Unix group whose members may use the socket (mode 0660, group-owned); none: 0600.
  std::optional<std::string> group;
  int request_deadline_ms = kRequestDeadlineMs;
};

class ControlServer {
 public:
  // A handler returns the result, or an error Status whose message goes back to the client.
  using Handler = std::function<Result<nlohmann::json>(const nlohmann::json& args)>;
  // A handler that needs to know who asks (ownership, quotas).
  using CallerHandler =
      std::function<Result<nlohmann::json>(const nlohmann::json& args, const Caller& caller)>;
  // Decides, before any handler runs, whether `caller` may send `command` with `args`; an
  // error's message is the refusal. Without one every admitted client may send everything.
  using Admission = std::function<Status(const std::string& command, const nlohmann::json& args,
                                         const Caller& caller)>;

  // Creates the socket's directory if needed; refuses to take over a socket a live server holds,
  // and to replace anything at `path` that is not a socket.
  static Result<std::unique_ptr<ControlServer>> Listen(const std::string& path,
                                                       const ListenOptions& options = {});
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  void Register(const std::string& command, Handler handler);
  void Register(const std::string& command, CallerHandler handler);
  void SetAdmission(Admission admission) { admission_ = std::move(admission); }
  // Waits up to timeout_ms for activity, serves what is ready and drops clients past their
  // deadline; returns so the caller can check for shutdown between calls.
  void ServeOnce(int timeout_ms);
  const std::string& path() const { return path_; }
  size_t clients() const { return clients_.size(); }

  // Answers one request line (exposed for tests and fuzzing); without a caller, as root.
  std::string Answer(const std::string& line) const { return Answer(line, Caller{}); }
  std::string Answer(const std::string& line, const Caller& caller) const;

 private:
  struct Client {
    int fd = -1;
    uint64_t deadline_ms = 0;  // the current request must be complete by then
    std::string in;            // bytes of requests not yet answered
    std::string out;           // reply bytes not yet sent
    bool closing = false;      // close once `out` is sent
    std::string refusal;       // not admitted: the answer to its first request, then close
    Caller caller;
  };

  ControlServer(int fd, std::string path, std::optional<gid_t> gid, ListenOptions options)
      : fd_(fd), path_(std::move(path)), gid_(gid), options_(std::move(options)) {}
  void AcceptClients(uint64_t now_ms);
  // Why this peer may not use the socket, or nullopt when it may; fills in who it is.
  std::optional<std::string> Refusal(int client_fd, Caller& caller) const;
  void ReadRequests(Client& c, uint64_t now_ms);
  void WriteReplies(Client& c);
  void DropFinishedClients(uint64_t now_ms);

  int fd_;
  std::string path_;
  std::optional<gid_t> gid_;
  ListenOptions options_;
  std::map<std::string, CallerHandler> handlers_;
  Admission admission_;
  std::vector<Client> clients_;
};

// Client side (qosctl): sends one request and waits for its reply.
// `unreachable` (if given) is set when the error is that no daemon answered (connect refused or
// denied, no reply) rather than the daemon refusing the request.
Result<nlohmann::json> Request(const std::string& socket_path, const std::string& command,
                               const nlohmann::json& args = nlohmann::json::object(),
                               int timeout_ms = 5000, bool* unreachable = nullptr);

}  // namespace qosvisor::control
