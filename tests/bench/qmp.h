// A QMP connection to a QEMU peer (-qmp unix:PATH,server=on,wait=off), capabilities negotiated;
// the benchmarks that measure QEMU in the same run drive it through this. Events that arrive on
// the way are kept, for EventNs.
#pragma once

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "hv/unique_fd.h"
#include "tests/bench/line_reader.h"

namespace qosvisor::bench {

class Qmp {
 public:
  using Clock = std::chrono::steady_clock;
  explicit Qmp(hv::UniqueFd fd) : fd_(std::move(fd)) {}

  // Retries until QEMU has created its socket, or the deadline.
  static Result<std::unique_ptr<Qmp>> Connect(const std::string& path, Clock::time_point deadline) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path)) return Status::Error(path + ": path too long");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    for (;;) {
      hv::UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      // SAFETY: addr is a filled sockaddr_un; connect reads sizeof(addr) bytes of it.
      if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
        auto qmp = std::make_unique<Qmp>(std::move(fd));
        if (auto greeting = qmp->ReadLine(deadline); !greeting.ok()) return greeting.status();
        if (auto r = qmp->Run("qmp_capabilities"); !r.ok()) return r.status();
        return qmp;
      }
      if (Clock::now() > deadline) {
        return Status::Error(fmt::format("QMP connect {}: {}", path, std::strerror(errno)));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  // The command's "return" value; events on the way are kept.
  Result<nlohmann::json> Run(const std::string& command, const nlohmann::json& args = nullptr) {
    nlohmann::json request = {{"execute", command}};
    if (!args.is_null()) request["arguments"] = args;
    const std::string text = request.dump() + "\n";
    if (send(fd_.get(), text.data(), text.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(text.size())) {
      return Status::Error(fmt::format("QMP send {}: {}", command, std::strerror(errno)));
    }
    for (;;) {
      auto reply = ReadMessage(Clock::now() + std::chrono::seconds(60));
      if (!reply.ok()) return Status::Error(command + ": " + reply.message());
      if (reply->contains("return")) return (*reply)["return"];
      if (reply->contains("error")) return Status::Error(command + ": " + (*reply)["error"].dump());
    }
  }

  // The realtime stamp (ns) of event `name`, kept or waited for until the deadline.
  Result<int64_t> EventNs(const std::string& name, Clock::time_point deadline) {
    for (;;) {
      for (const nlohmann::json& e : events_) {
        if (e.value("event", "") == name) {
          return e["timestamp"]["seconds"].get<int64_t>() * 1'000'000'000 +
                 e["timestamp"]["microseconds"].get<int64_t>() * 1000;
        }
      }
      auto m = ReadMessage(deadline);
      if (!m.ok()) return Status::Error("no " + name + " event: " + m.message());
    }
  }

 private:
  // One JSON message; events are kept and returned too.
  Result<nlohmann::json> ReadMessage(Clock::time_point deadline) {
    auto line = ReadLine(deadline);
    if (!line.ok()) return line.status();
    nlohmann::json m = nlohmann::json::parse(*line, nullptr, /*allow_exceptions=*/false);
    if (m.is_discarded()) return Status::Error("unreadable QMP message " + *line);
    if (m.contains("event")) events_.push_back(m);
    return m;
  }

  Result<std::string> ReadLine(Clock::time_point deadline) { return lines_.Next(deadline); }

  hv::UniqueFd fd_;
  LineReader lines_{fd_.get(), "QEMU's QMP socket"};
  std::vector<nlohmann::json> events_;
};

}  // namespace qosvisor::bench
