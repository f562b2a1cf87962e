// The appliance's VM commands on the control socket: lifecycle at once, snapshot, restore, fork,
// suspend and the resume of a suspended VM as jobs; and the switch access VmManager uses for the
// ports of VMs made while running.
#include <fmt/format.h>

#include <map>

#include "common/units.h"
#include "control/appliance.h"
#include "control/control_server.h"
#include "control/jobs.h"
#include "control/switch_builder.h"
#include "control/vm_manager.h"

namespace qosvisor::control {

using nlohmann::json;

SwitchAccess Appliance::MakeSwitchAccess() {
  SwitchAccess a;
  a.find_port = [this](const std::string& name) { return FindPort(name); };
  a.quiesce = [this] { switch_->Quiesce(); };
  a.attachment_of = [this](const std::string& port) { return AttachmentOf(port); };
  a.add_port = [this](const vswitch::PortJoin& join) {
    std::lock_guard lock(switch_control_mu_);
    return switch_->AddPort(join);
  };
  a.remove_port = [this](const std::string& port) {
    std::lock_guard lock(switch_control_mu_);
    return switch_->RemovePort(port);
  };
  return a;
}

Result<vswitch::PortJoin> Appliance::AttachmentOf(const std::string& port) const {
  return AttachmentIn(config_, port);
}

Result<vswitch::PortJoin> AttachmentIn(const config::Config& config, const std::string& name) {
  for (const config::Bridge& b : config.bridges) {
    for (const config::BridgePort& bp : b.ports) {
      if (bp.port != name) continue;
      vswitch::PortJoin join;
      join.bridge = b.name;
      if (bp.vlan) {
        join.vlan_mode = bp.vlan->mode == config::VlanMode::kAccess ? vswitch::VlanMode::kAccess
                                                                    : vswitch::VlanMode::kTrunk;
        join.access_tag = bp.vlan->tag;
        join.trunk_tags = bp.vlan->tags;
      }
      for (const config::Vm& vm : config.vms) {
        for (const config::Nic& nic : vm.nics) {
          if (nic.port != name || !nic.class_name) continue;
          if (const config::TrafficClass* c = FindClass(config, *nic.class_name)) {
            join.default_queue = static_cast<int>(c->queue);
          }
        }
      }
      return join;
    }
  }
  for (const config::Port& p : config.ports) {
    if (p.name == name) {
      return Status::Error(fmt::format(
          "port '{}' is in no bridge: copies of its VM would have nowhere to join", name));
    }
  }
  return Status::Error(fmt::format("no port named '{}'", name));
}

namespace {

Result<std::string> StringArg(const json& args, const char* key, const std::string& action) {
  if (!args.contains(key) || !args[key].is_string() || args[key].get<std::string>().empty()) {
    return Status::Error(fmt::format("{} needs a string argument '{}'", action, key));
  }
  return args[key].get<std::string>();
}

bool BoolArg(const json& args, const char* key) {
  return args.contains(key) && args[key].is_boolean() && args[key].get<bool>();
}

}  // namespace

OperationProgress ProgressOf(JobProgress& job) {
  OperationProgress p;
  p.phase = [&job](const std::string& phase) { job.Phase(phase); };
  p.bytes = [&job](uint64_t done, uint64_t total) { job.Bytes(done, total); };
  p.detail = [&job](const json& detail) { job.Detail(detail); };
  return p;
}

// The long operations: checked here, then run as a job that answers {"job": ID} at once.
Result<json> Appliance::VmJob(const json& args, const std::string& name,
                              const std::string& action) {
  VmManager* vms = vms_.get();
  if (action == "snapshot" || action == "suspend") {
    auto dir = StringArg(args, "dir", action);
    if (!dir.ok()) return dir.status();
    const bool flag = BoolArg(args, action == "snapshot" ? "stop" : "force");
    const uint64_t id = jobs_->Start(action, name, [=, dir = *dir](JobProgress& p) -> Result<json> {
      Status s = action == "snapshot" ? vms->Snapshot(name, dir, flag, ProgressOf(p))
                                      : vms->Suspend(name, dir, flag, ProgressOf(p));
      if (!s.ok()) return s;
      return json{{"vm", name}, {"dir", dir}};
    });
    return json{{"job", id}};
  }
  if (action == "restore") {
    auto dir = StringArg(args, "dir", action);
    if (!dir.ok()) return dir.status();
    std::string as = name;
    if (args.contains("as") && args["as"].is_string()) as = args["as"].get<std::string>();
    const uint64_t id = jobs_->Start(action, as, [=, dir = *dir](JobProgress& p) -> Result<json> {
      auto restored = vms->Restore(dir, as, ProgressOf(p));
      if (!restored.ok()) return restored.status();
      return json{{"vm", *restored}, {"dir", dir}};
    });
    return json{{"job", id}};
  }
  if (action == "fork") {
    if (!args.contains("count") || !args["count"].is_number_unsigned()) {
      return Status::Error("fork needs an unsigned integer argument 'count'");
    }
    const auto count = args["count"].get<uint32_t>();
    std::string prefix;
    if (args.contains("prefix") && args["prefix"].is_string()) {
      prefix = args["prefix"].get<std::string>();
    }
    const uint64_t id = jobs_->Start(action, name, [=](JobProgress& p) -> Result<json> {
      p.Phase(fmt::format("forking {} children", count));
      auto children = vms->Fork(name, count, prefix);
      if (!children.ok()) return children.status();
      return json{{"vm", name}, {"children", *children}};
    });
    return json{{"job", id}};
  }
  // resume of a suspended VM
  const uint64_t id = jobs_->Start("resume", name, [=](JobProgress& p) -> Result<json> {
    if (Status s = vms->ResumeSuspended(name, ProgressOf(p)); !s.ok()) return s;
    return json{{"vm", name}};
  });
  return json{{"job", id}};
}

Result<json> Appliance::VmCreate(const json& args, const std::string& name,
                                 const Caller& caller) {
  auto tmpl = StringArg(args, "template", "create");
  if (!tmpl.ok()) return tmpl.status();
  std::map<std::string, std::string> overrides;
  if (args.contains("set")) {
    if (!args["set"].is_object()) return Status::Error("create: 'set' must be an object");
    for (const auto& [key, value] : args["set"].items()) {
      if (!value.is_string()) {
        return Status::Error(fmt::format("create: --set {}: the value must be a string", key));
      }
      overrides[key] = value.get<std::string>();
    }
  }
  auto demand = vms_->DemandOf(*tmpl, overrides);
  if (!demand.ok()) return demand.status();
  auto owner = OwnerFor(caller, {*demand});
  if (!owner.ok()) return owner.status();
  if (Status s = vms_->CreateFromTemplate(name, *tmpl, overrides, *owner); !s.ok()) return s;
  return json{{"name", name}, {"done", "create"}, {"owner", owner->name},
              {"charged_to", owner->charged}};
}

Status Appliance::MayDestroy(const std::string& name, const Caller& caller) {
  auto brief = vms_->Brief(name);
  if (!brief.ok()) return brief.status();
  if (!caller.privileged && brief->owner.uid != caller.uid) {
    return Status::Error(fmt::format(
        "permission denied: vm '{}' belongs to {} (uid {}); {} may destroy only the VMs it "
        "created",
        name, brief->owner.name, brief->owner.uid, caller.Describe()));
  }
  if (!brief->owner.app.empty()) {
    return Status::Error(fmt::format("vm '{}' is part of app '{}': undeploy the app (qosctl "
                                     "undeploy {})",
                                     name, brief->owner.app, brief->owner.app));
  }
  return Status::Ok();
}

void Appliance::RegisterVmCommands() {
  server_->Register("vm", [this](const json& args, const Caller& caller) -> Result<json> {
    if (!args.contains("name") || !args["name"].is_string() || !args.contains("action") ||
        !args["action"].is_string()) {
      return Status::Error("vm needs string arguments 'name' and 'action'");
    }
    if (!vms_) return Status::Error("this configuration has no vms");
    const std::string name = args["name"].get<std::string>();
    const std::string action = args["action"].get<std::string>();
    if (action == "resize") {
      if (!args.contains("size") || !args["size"].is_string()) {
        return Status::Error("resize needs a string argument 'size', e.g. \"2GiB\"");
      }
      auto bytes = ParseSize(args["size"].get<std::string>());
      if (!bytes.ok()) return bytes.status();
      if (Status s = vms_->ResizeDisk(name, *bytes); !s.ok()) return s;
      return json{{"name", name}, {"disk_bytes", *bytes}};
    }
    if (action == "create") return VmCreate(args, name, caller);
    if (action == "pages") return vms_->PagesJson(name);
    if (action == "premigrate") {
      if (!caller.privileged) {
        return Status::Error(fmt::format("permission denied: {} may not copy images to other "
                                         "hosts",
                                         caller.Describe()));
      }
      return PremigrateCommand(args, name);
    }
    if (action == "migrate") {
      if (!caller.privileged) {
        return Status::Error(fmt::format("permission denied: {} may not move VMs between hosts",
                                         caller.Describe()));
      }
      return MigrateCommand(args, name);
    }
    if (action == "destroy") {
      if (Status s = MayDestroy(name, caller); !s.ok()) return s;
    }
    if (action == "snapshot" || action == "restore" || action == "fork" || action == "suspend" ||
        (action == "resume" && vms_->IsSuspended(name))) {
      return VmJob(args, name, action);
    }
    if (Status s = vms_->Act(name, action); !s.ok()) return s;
    return json{{"name", name}, {"done", action}};
  });
  server_->Register("jobs", [this](const json&) -> Result<json> { return jobs_->List(); });
  server_->Register("job", [this](const json& args) -> Result<json> {
    if (!args.contains("id") || !args["id"].is_number_unsigned()) {
      return Status::Error("job needs an unsigned integer argument 'id'");
    }
    return jobs_->Get(args["id"].get<uint64_t>());
  });
}

}  // namespace qosvisor::control
