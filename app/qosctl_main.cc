// qosctl: the control CLI. Talks JSON lines to a running qosvisor over its Unix socket.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>

#include "control/control_server.h"

namespace {

using nlohmann::json;

std::string DefaultSocket() {
  const char* env = std::getenv("QOSVISOR_SOCKET");
  return env != nullptr ? env : "/run/qosvisor/qosvisor.sock";
}

void PrintPorts(const json& ports) {
  std::printf("%-16s %-10s %-5s %12s %14s %12s %14s %10s\n", "port", "driver", "link", "rx_pkts",
              "rx_bytes", "tx_pkts", "tx_bytes", "rx_missed");
  for (const json& p : ports) {
    std::printf("%-16s %-10s %-5s %12llu %14llu %12llu %14llu %10llu\n",
                p.value("name", "").c_str(), p.value("driver", "").c_str(),
                p.value("link", "").c_str(), p.value("rx_packets", 0ull), p.value("rx_bytes", 0ull),
                p.value("tx_packets", 0ull), p.value("tx_bytes", 0ull), p.value("rx_missed", 0ull));
  }
}

void PrintStats(const json& stats) {
  std::printf("switch:");
  for (const auto& [key, value] : stats["switch"].items()) {
    std::printf(" %s=%llu", key.c_str(), value.get<unsigned long long>());
  }
  std::printf("\n");
  for (const json& up : stats["uplinks"]) {
    std::printf("uplink %s: %llu messages live, %llu packets queued\n",
                up.value("port", "").c_str(), up.value("live_messages", 0ull),
                up.value("queued_packets", 0ull));
    std::printf("  %-14s %12s %14s %12s %14s %10s %10s\n", "class", "in_pkts", "in_bytes",
                "out_pkts", "out_bytes", "dropped", "queued");
    for (const json& c : up["classes"]) {
      std::printf("  %-14s %12llu %14llu %12llu %14llu %10llu %10llu\n",
                  c.value("class", "").c_str(), c.value("enqueued_packets", 0ull),
                  c.value("enqueued_bytes", 0ull), c.value("dequeued_packets", 0ull),
                  c.value("dequeued_bytes", 0ull), c.value("dropped_packets", 0ull),
                  c.value("queued_packets", 0ull));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qosctl: control a running qosvisor"};
  std::string socket = DefaultSocket();
  bool as_json = false;
  app.add_option("-s,--socket", socket,
                 "Control socket (default: $QOSVISOR_SOCKET or /run/qosvisor/qosvisor.sock)");
  app.add_flag("--json", as_json, "Print the raw JSON reply");
  app.require_subcommand(1);
  auto* status = app.add_subcommand("status", "Uptime, EAL, mempool");
  auto* ports = app.add_subcommand("ports", "Per-port counters and link state");
  auto* stats = app.add_subcommand("stats", "Switch counters and per-class scheduler statistics");
  auto* vms = app.add_subcommand("vms", "The VMs and their states");
  auto* vm =
      app.add_subcommand("vm", "Start, stop, pause, resume or destroy a VM; resize its disk");
  std::string vm_name, vm_action, vm_size;
  vm->add_option("NAME", vm_name, "VM name")->required();
  vm->add_option("ACTION", vm_action, "start | stop | pause | resume | destroy | resize")
      ->required()
      ->check(CLI::IsMember({"start", "stop", "pause", "resume", "destroy", "resize"}));
  vm->add_option("SIZE", vm_size, "resize: the vflash disk's new size, e.g. 2GiB");
  auto* stop = app.add_subcommand("stop", "Stop the appliance");
  CLI11_PARSE(app, argc, argv);

  const std::string command = *status  ? "status"
                              : *ports ? "ports"
                              : *stats ? "stats"
                              : *vms   ? "vms"
                              : *vm    ? "vm"
                              : *stop  ? "stop"
                                       : "";
  nlohmann::json args = nlohmann::json::object();
  if (*vm) args = {{"name", vm_name}, {"action", vm_action}};
  if (*vm && vm_action == "resize") args["size"] = vm_size;
  auto reply = qosvisor::control::Request(socket, command, args, 30000);
  if (!reply.ok()) {
    std::fprintf(stderr, "qosctl: %s\n", reply.message().c_str());
    return 1;
  }
  if (as_json || (command != "ports" && command != "stats")) {
    std::printf("%s\n", reply->dump(2).c_str());
  } else if (command == "ports") {
    PrintPorts(*reply);
  } else {
    PrintStats(*reply);
  }
  return 0;
}
