// Fuzz target: arbitrary bytes as a control-API request line; the reply is always one JSON object.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "control/control_server.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<qosvisor::control::ControlServer> server = [] {
    auto s = qosvisor::control::ControlServer::Listen("/tmp/qv_control_fuzz.sock");
    (*s)->Register("echo",
                   [](const nlohmann::json& a) -> qosvisor::Result<nlohmann::json> { return a; });
    return std::move(s).value();
  }();
  const std::string reply = server->Answer(std::string(reinterpret_cast<const char*>(data), size));
  const auto parsed = nlohmann::json::parse(reply, nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object() || !parsed.contains("ok")) __builtin_trap();
  return 0;
}
