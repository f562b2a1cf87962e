// The control API: replies to good and malformed requests, a real round trip over a socket, who
// may connect (modes, credentials), and clients that are slow, stalled or hostile.
#include "control/control_server.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

namespace qosvisor::control {
namespace {

using nlohmann::json;

std::string TempSocket(const char* tag) {
  return "/tmp/qv_ctl_" + std::string(tag) + "_" + std::to_string(getpid()) + ".sock";
}

std::unique_ptr<ControlServer> EchoServer(const std::string& path,
                                          const ListenOptions& options = {}) {
  auto server = ControlServer::Listen(path, options);
  REQUIRE(server.ok());
  (*server)->Register("echo", [](const json& args) -> Result<json> { return args; });
  (*server)->Register("fail", [](const json&) -> Result<json> {
    return Status::Error("vm 'x' is not running");
  });
  return std::move(server).value();
}

json Parse(const std::string& reply) { return json::parse(reply); }

// A raw client connection, for clients that do not behave like qosctl.
int Connect(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  // SAFETY: sockaddr_un is a sockaddr by the socket API's contract.
  REQUIRE(connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0);
  return fd;
}

// Everything the server sends until it closes the connection.
std::string ReadToEnd(int fd) {
  std::string got;
  char buf[512];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) got.append(buf, static_cast<size_t>(n));
  return got;
}

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  REQUIRE(lstat(path.c_str(), &st) == 0);
  return st.st_mode & 0777;
}

// Runs `request` in a child process with uid/gid 65534 (nobody) and the supplementary groups
// given, while this process serves; returns the child's outcome ("ok" or the error). Forks
// before any thread exists in this process, so the child may use the allocator freely.
std::string RequestAsNobody(ControlServer& server, const std::vector<gid_t>& groups,
                            const std::string& command = "echo") {
  int pipe_fds[2];
  REQUIRE(pipe(pipe_fds) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    close(pipe_fds[0]);
    std::string outcome = "could not drop privileges";
    if (setgroups(groups.size(), groups.data()) == 0 && setresgid(65534, 65534, 65534) == 0 &&
        setresuid(65534, 65534, 65534) == 0) {
      auto reply = Request(server.path(), command, json{{"x", 1}}, 5000);
      outcome = !reply.ok() ? reply.message() : command == "echo" ? "ok" : reply->dump();
    }
    (void)!write(pipe_fds[1], outcome.data(), outcome.size());
    _exit(0);
  }
  close(pipe_fds[1]);
  int status = 0;
  while (waitpid(child, &status, WNOHANG) == 0) server.ServeOnce(20);
  const std::string outcome = ReadToEnd(pipe_fds[0]);
  close(pipe_fds[0]);
  return outcome;
}

// A group other than root's that exists on Debian, for the socket's group.
std::optional<std::string> SomeGroup() {
  for (const char* name : {"daemon", "adm", "users"}) {
    if (getgrnam(name) != nullptr) return std::string(name);
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("control requests: good, unknown and malformed", "[control]") {
  auto server = EchoServer(TempSocket("answer"));
  CHECK(Parse(server->Answer(R"({"command":"echo","args":{"a":1}})")) ==
        json{{"ok", true}, {"result", {{"a", 1}}}});
  CHECK(Parse(server->Answer(R"({"command":"echo"})"))["result"] == json::object());
  CHECK(Parse(server->Answer(R"({"command":"fail"})")) ==
        json{{"ok", false}, {"error", "vm 'x' is not running"}});
  CHECK(Parse(server->Answer(R"({"command":"nope"})"))["error"] ==
        "unknown command 'nope'; known: echo, fail");
  CHECK(Parse(server->Answer("{not json"))["error"] == "request is not valid JSON");
  CHECK(Parse(server->Answer("[1,2]"))["error"] == "request must be a JSON object");
  CHECK(Parse(server->Answer(R"({"command":5})"))["error"] ==
        "request needs a string field 'command'");
  CHECK(Parse(server->Answer(R"({"command":"echo","args":[1]})"))["error"] ==
        "'args' must be a JSON object");
}

TEST_CASE("control round trip over a Unix socket, and a second server is refused", "[control]") {
  const std::string path = TempSocket("rt");
  auto server = EchoServer(path);
  std::atomic<bool> done{false};
  std::thread serve([&] {
    while (!done) server->ServeOnce(50);
  });
  auto reply = Request(path, "echo", json{{"vm", "web1"}});
  CHECK(reply.ok());
  CHECK(*reply == json{{"vm", "web1"}});
  auto failed = Request(path, "fail");
  CHECK(failed.message() == "vm 'x' is not running");
  auto second = ControlServer::Listen(path);
  CHECK_THAT(second.message(), Catch::Contains("is in use by a running qosvisor"));
  done = true;
  serve.join();
  server.reset();
  CHECK(access(path.c_str(), F_OK) != 0);  // the socket file is removed on shutdown
  CHECK_THAT(Request(path, "echo").message(), Catch::Contains("cannot reach qosvisor"));
}

TEST_CASE("control socket paths that cannot work are refused with the reason", "[control]") {
  CHECK_THAT(ControlServer::Listen(std::string(200, 'x')).message(),
             Catch::Contains("must be 1..107 characters"));
  CHECK_THAT(ControlServer::Listen("/proc/qv/ctl.sock").message(),
             Catch::Contains("cannot create the control socket directory /proc/qv"));
}

}  // namespace qosvisor::control

namespace qosvisor::control {

TEST_CASE("the control socket is 0600, or 0660 and group-owned with a control group",
          "[control]") {
  const std::string path = TempSocket("mode");
  {
    auto server = EchoServer(path);
    CHECK(ModeOf(path) == 0600);
  }
  const auto group = SomeGroup();
  if (!group) {
    WARN("SKIP: no daemon/adm/users group on this host for the group-owned socket");
    return;
  }
  auto server = EchoServer(path, ListenOptions{group});
  CHECK(ModeOf(path) == 0660);
  struct stat st {};
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK(st.st_gid == getgrnam(group->c_str())->gr_gid);
  CHECK_THAT(ControlServer::Listen(TempSocket("nogroup"), ListenOptions{"no-such-group-qv"})
                 .message(),
             Catch::Contains("control.group: no Unix group 'no-such-group-qv'"));
}

TEST_CASE("a path holding something other than a stale socket is never replaced", "[control]") {
  const std::string path = TempSocket("file");
  std::ofstream(path) << "precious\n";
  CHECK_THAT(ControlServer::Listen(path).message(),
             Catch::Contains("exists and is not a socket; refusing to replace it"));
  std::ifstream in(path);
  std::string kept;
  std::getline(in, kept);
  CHECK(kept == "precious");
  unlink(path.c_str());
  // A socket left by a process that died is taken over.
  {
    const int stale = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    // SAFETY: sockaddr_un is a sockaddr by the socket API's contract.
    REQUIRE(bind(stale, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0);
    close(stale);
  }
  CHECK(ControlServer::Listen(path).ok());
}

TEST_CASE("only root, the server's user and control-group members are served", "[control]") {
  if (geteuid() != 0) {
    WARN("SKIP: switching to an unprivileged user needs root");
    return;
  }
  const std::string path = TempSocket("cred");
  {
    auto server = EchoServer(path);
    // The file mode alone keeps others out ...
    CHECK_THAT(RequestAsNobody(*server, {}), Catch::Contains("permission denied on " + path));
    // ... and should the mode be widened by mistake, the credentials check still refuses.
    REQUIRE(chmod(path.c_str(), 0666) == 0);
    CHECK(RequestAsNobody(*server, {}) ==
          "permission denied: uid 65534 is not root (set control.group to let a group in)");
  }
  const auto group = SomeGroup();
  if (!group) {
    WARN("SKIP: no daemon/adm/users group on this host for the control group");
    return;
  }
  const gid_t gid = getgrnam(group->c_str())->gr_gid;
  auto server = EchoServer(path, ListenOptions{group});
  CHECK(RequestAsNobody(*server, {gid}) == "ok");
  REQUIRE(chmod(path.c_str(), 0666) == 0);
  CHECK(RequestAsNobody(*server, {}) == "permission denied: uid 65534 is neither root nor a "
                                        "member of group '" + *group + "'");
}

TEST_CASE("handlers learn who asks, and the admission refuses before any handler runs",
          "[control]") {
  if (geteuid() != 0) {
    WARN("SKIP: switching to an unprivileged user needs root");
    return;
  }
  const auto group = SomeGroup();
  if (!group) {
    WARN("SKIP: no daemon/adm/users group on this host for the control group");
    return;
  }
  const gid_t gid = getgrnam(group->c_str())->gr_gid;
  const std::string path = TempSocket("who");
  auto server = EchoServer(path, ListenOptions{group});
  server->Register("whoami", [](const json&, const Caller& c) -> Result<json> {
    return json{{"uid", c.uid}, {"privileged", c.privileged}, {"groups", c.group_names}};
  });
  bool secret_ran = false;
  server->Register("secret", [&](const json&) -> Result<json> {
    secret_ran = true;
    return json{};
  });
  server->SetAdmission([](const std::string& command, const json&, const Caller& c) {
    return command == "secret" && !c.privileged ? Status::Error("not for " + c.Describe())
                                                : Status::Ok();
  });
  const json who = json::parse(RequestAsNobody(*server, {gid}, "whoami"));
  CHECK(who["uid"] == 65534);
  CHECK(who["privileged"] == false);
  CHECK(who["groups"].dump().find("\"" + *group + "\"") != std::string::npos);
  CHECK(RequestAsNobody(*server, {gid}, "secret") == "not for nobody (uid 65534)");
  CHECK_FALSE(secret_ran);
  // In-process answers come from root, who may.
  CHECK(Parse(server->Answer(R"({"command":"secret"})"))["ok"] == true);
  CHECK(secret_ran);
}

TEST_CASE("a stalled client delays neither other clients nor shutdown", "[control]") {
  const std::string path = TempSocket("slow");
  ListenOptions options;
  options.request_deadline_ms = 1500;
  auto server = EchoServer(path, options);
  std::atomic<bool> done{false};
  std::atomic<int> rounds{0};
  std::thread serve([&] {
    while (!done) {
      server->ServeOnce(50);
      ++rounds;
    }
  });
  // One client never finishes its line, another sends a byte at a time.
  const int stalled = Connect(path);
  REQUIRE(write(stalled, "{\"command\":", 11) == 11);
  const int dribbling = Connect(path);
  std::thread dribble([&] {
    for (char ch : std::string(R"({"command":"echo","args":{"a":2}})") + "\n") {
      if (send(dribbling, &ch, 1, MSG_NOSIGNAL) != 1) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  // Meanwhile a well-behaved client is answered, and the serving loop keeps turning.
  const int before = rounds.load();
  auto reply = Request(path, "echo", json{{"vm", "web1"}});
  CHECK(reply.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(rounds.load() > before + 2);
  // Past the deadline both slow clients are told why and cut off.
  CHECK_THAT(ReadToEnd(stalled), Catch::Contains("request not complete within 1500 ms"));
  CHECK_THAT(ReadToEnd(dribbling), Catch::Contains("request not complete within 1500 ms"));
  dribble.join();
  close(stalled);
  close(dribbling);
  done = true;
  serve.join();
  CHECK(server->clients() == 0);
}

TEST_CASE("a client that hangs up after its request still gets the answer", "[control]") {
  const std::string path = TempSocket("half");
  auto server = EchoServer(path);
  const int fd = Connect(path);
  const std::string req = R"({"command":"echo","args":{"k":1}})" "\n" R"({"command":"nope"})" "\n";
  REQUIRE(write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size()));
  shutdown(fd, SHUT_WR);
  std::string got;
  for (int i = 0; i < 100 && std::count(got.begin(), got.end(), '\n') < 2; ++i) {
    server->ServeOnce(20);
    char buf[512];
    const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) got.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  CHECK_THAT(got, Catch::Contains(R"({"ok":true,"result":{"k":1}})"));
  CHECK_THAT(got, Catch::Contains("unknown command 'nope'"));
}

TEST_CASE("requests nested too deeply are refused before parsing", "[control]") {
  auto server = EchoServer(TempSocket("deep"));
  auto nested = [](int depth) {
    return R"({"command":"echo","args":{"a":)" + std::string(depth, '[') + std::string(depth, ']') +
           "}}";
  };
  CHECK(Parse(server->Answer(nested(30)))["ok"] == true);
  CHECK(Parse(server->Answer(nested(100000)))["error"] ==
        "request nests arrays/objects deeper than 32");
  // Brackets inside strings are text, not nesting.
  const std::string text = R"({"command":"echo","args":{"s":")" + std::string(100, '[') + R"("}})";
  CHECK(Parse(server->Answer(text))["ok"] == true);
}

}  // namespace qosvisor::control
