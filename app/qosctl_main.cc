// qosctl: the control CLI. Talks JSON lines to a running qosvisor over its Unix socket.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>

#include "app/status_format.h"
#include "control/control_server.h"

namespace {

using nlohmann::json;

std::string DefaultSocket() {
  const char* env = std::getenv("QOSVISOR_SOCKET");
  return env != nullptr ? env : "/run/qosvisor/qosvisor.sock";
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
    std::fputs(qosvisor::app::FormatPorts(*reply).c_str(), stdout);
  } else {
    std::fputs(qosvisor::app::FormatStats(*reply).c_str(), stdout);
  }
  return 0;
}
