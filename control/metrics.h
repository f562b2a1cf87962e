// Prometheus metrics: the text exposition of what `ports`, `stats`, `vms` and `status` answer,
// rendered from their JSON (so the numbers are the ones qosctl shows), and an HTTP endpoint that
// serves it (cpp-httplib, its own thread). A scrape asks each data-plane worker for a copy of its
// counters at its next poll boundary, as `qosctl stats` does: nothing runs on the packet path.
// Names follow Prometheus conventions: qosvisor_<object>_<what>[_<unit>][_total].
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/status.h"

namespace httplib {
class Server;
}

namespace qosvisor::control {

struct MetricsInput {
  nlohmann::json status;  // Appliance::StatusJson
  nlohmann::json ports;   // Appliance::PortsJson
  nlohmann::json stats;   // Appliance::StatsJson (null when the data plane did not answer)
  nlohmann::json vms;     // VmManager::ListJson
};

std::string RenderMetrics(const MetricsInput& in);

class MetricsServer {
 public:
  // Listens on `host_port` ("127.0.0.1:9100", "[::1]:9100"; port 0 picks one) and answers
  // GET /metrics with render().
  static Result<std::unique_ptr<MetricsServer>> Start(const std::string& host_port,
                                                      std::function<std::string()> render);
  ~MetricsServer();
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace qosvisor::control
