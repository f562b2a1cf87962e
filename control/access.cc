// The one table of self-service commands, and the admission check built on it.
#include "control/access.h"

#include <fmt/format.h>

#include <array>
#include <string_view>

namespace qosvisor::control {
namespace {

// A command, and for commands with actions ("vm", "flows") the action; empty: any use.
struct SelfService {
  std::string_view command;
  std::string_view action;
};

// Read-only commands, and what quotas govern. Ownership (only one's own VMs and apps) is checked
// by the handlers, which know the owners. Deliberately absent: fdb (other tenants' addresses),
// uplinks (their messages, and a scan on the data-plane lcore), capture (their packets), flows
// add/del, reload, stop, and every other VM operation.
constexpr std::array kSelfService = {
    SelfService{"status", ""},    SelfService{"ports", ""},     SelfService{"stats", ""},
    SelfService{"vms", ""},       SelfService{"bridges", ""},   SelfService{"classes", ""},
    SelfService{"jobs", ""},      SelfService{"job", ""},       SelfService{"apps", ""},
    SelfService{"quota", ""},     SelfService{"flows", "dump"}, SelfService{"vm", "create"},
    SelfService{"vm", "destroy"}, SelfService{"deploy", ""},    SelfService{"undeploy", ""},
    SelfService{"hosts", ""},     SelfService{"place", ""},
};

std::string ActionOf(const nlohmann::json& args) {
  auto it = args.find("action");
  return it != args.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

std::string SelfServiceCommands() {
  std::string out;
  for (const SelfService& s : kSelfService) {
    out += fmt::format("{}{}{}{}", out.empty() ? "" : ", ", s.command, s.action.empty() ? "" : " ",
                       s.action);
  }
  return out;
}

Status AdmitCommand(const std::string& command, const nlohmann::json& args, const Caller& caller) {
  if (caller.privileged) return Status::Ok();
  const std::string action = ActionOf(args);
  for (const SelfService& s : kSelfService) {
    if (s.command == command && (s.action.empty() || s.action == action)) return Status::Ok();
  }
  const bool has_action = command == "vm" || command == "flows";
  return Status::Error(fmt::format(
      "permission denied: '{}{}{}' is for root and the user qosvisor runs as; {} may use {} "
      "(creating and destroying only its own VMs and apps, within its quota)",
      command, has_action && !action.empty() ? " " : "", has_action ? action : "",
      caller.Describe(), SelfServiceCommands()));
}

}  // namespace qosvisor::control
