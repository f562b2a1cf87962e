// The control API: replies to good and malformed requests, and a real round trip over a socket.
#include "control/control_server.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <thread>

namespace qosvisor::control {
namespace {

using nlohmann::json;

std::string TempSocket(const char* tag) {
  return "/tmp/qv_ctl_" + std::string(tag) + "_" + std::to_string(getpid()) + ".sock";
}

std::unique_ptr<ControlServer> EchoServer(const std::string& path) {
  auto server = ControlServer::Listen(path);
  REQUIRE(server.ok());
  (*server)->Register("echo", [](const json& args) -> Result<json> { return args; });
  (*server)->Register("fail", [](const json&) -> Result<json> {
    return Status::Error("vm 'x' is not running");
  });
  return std::move(server).value();
}

json Parse(const std::string& reply) { return json::parse(reply); }

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

TEST_CASE("control round trip over a Unix socket; a second server is refused", "[control]") {
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
