// VM creation from the configuration, NIC attachment to switch ports, lifecycle commands, and
// the VMs made while running: restore, fork, suspend and resume, each on ports of its own.
#include "control/vm_manager.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <functional>

#include "common/mac_address.h"
#include "common/units.h"
#include "control/switch_builder.h"
#include "hv/virtio_blk.h"

namespace qosvisor::control {

using nlohmann::json;

std::array<uint8_t, 6> DefaultMac(const std::string& vm_name, size_t nic) {
  const size_t h = std::hash<std::string>{}(vm_name);
  return {0x52,
          0x54,
          static_cast<uint8_t>(h >> 16),
          static_cast<uint8_t>(h >> 8),
          static_cast<uint8_t>(h),
          static_cast<uint8_t>(nic)};
}

hv::VmOptions VmOptionsFrom(const config::Config& config, const config::Vm& vm,
                            const std::string& serial_log) {
  hv::VmOptions o;
  o.name = vm.name;
  o.vcpus = vm.vcpus;
  o.memory_bytes = vm.memory_bytes;
  o.image = config.Resolve(vm.image);
  if (vm.initrd) o.initrd = config.Resolve(*vm.initrd);
  o.cmdline = vm.cmdline.value_or("");
  o.serial_log = serial_log;
  o.serial_log_max_bytes = vm.serial_log_max_bytes;
  if (vm.disk) {
    o.disk = hv::VflashOptions{config.Resolve(vm.disk->path), vm.disk->size_bytes, "",
                               vm.disk->max_size_bytes.value_or(0)};
  }
  for (size_t i = 0; i < vm.nics.size(); ++i) {
    hv::VirtioNetOptions nic;
    nic.mac = vm.nics[i].mac ? vm.nics[i].mac->bytes : DefaultMac(vm.name, i);
    o.nics.push_back(nic);
  }
  return o;
}

json AttachmentJson(const std::vector<vswitch::PortJoin>& nics) {
  json out = json::array();
  for (const vswitch::PortJoin& j : nics) {
    const char* mode = j.vlan_mode == vswitch::VlanMode::kAccess  ? "access"
                       : j.vlan_mode == vswitch::VlanMode::kTrunk ? "trunk"
                                                                  : "none";
    out.push_back({{"bridge", j.bridge},
                   {"vlan_mode", mode},
                   {"access_tag", j.access_tag},
                   {"trunk_tags", j.trunk_tags},
                   {"queue", j.default_queue}});
  }
  return json{{"nics", out}};
}

Result<std::vector<vswitch::PortJoin>> ParseAttachment(const std::string& json_text) {
  std::vector<vswitch::PortJoin> nics;
  try {
    const json parsed = json::parse(json_text);  // kept alive for the loop below
    for (const json& n : parsed.at("nics")) {
      vswitch::PortJoin j;
      j.bridge = n.at("bridge").get<std::string>();
      const std::string mode = n.at("vlan_mode").get<std::string>();
      if (mode != "access" && mode != "trunk" && mode != "none") {
        return Status::Error(fmt::format("unknown vlan_mode '{}'", mode));
      }
      j.vlan_mode = mode == "access"  ? vswitch::VlanMode::kAccess
                    : mode == "trunk" ? vswitch::VlanMode::kTrunk
                                      : vswitch::VlanMode::kNone;
      j.access_tag = n.at("access_tag").get<uint16_t>();
      j.trunk_tags = n.at("trunk_tags").get<std::vector<uint16_t>>();
      j.default_queue = n.at("queue").get<int>();
      nics.push_back(std::move(j));
    }
  } catch (const json::exception& e) {
    return Status::Error(fmt::format("the VM's switch attachment is unreadable: {}", e.what()));
  }
  return nics;
}


Result<std::unique_ptr<VmManager>> VmManager::Create(const config::Config& config,
                                                     SwitchAccess access, rte_mempool* pool,
                                                     std::string log_dir) {
  std::unique_ptr<VmManager> m(new VmManager(config, std::move(access), pool, std::move(log_dir)));
  for (const config::Vm& vm : config.vms) {
    Entry e;
    e.name = vm.name;
    e.autostart = vm.autostart;
    e.configured = true;
    e.serial_log = m->log_dir_ + "/" + vm.name + ".serial.log";
    auto created = hv::Vm::Create(VmOptionsFrom(config, vm, e.serial_log));
    if (!created.ok()) return created.status();  // hv names the VM
    e.vm = std::move(created).value();
    e.options = e.vm->options();
    std::vector<vswitch::PortJoin> attachment;
    for (const config::Nic& nic : vm.nics) {
      const std::string port_name = nic.port.value_or("");
      auto* port = dynamic_cast<dataplane::VmPort*>(m->access_.find_port(port_name));
      if (port == nullptr) {
        return Status::Error(fmt::format("vm '{}': NIC port '{}' is not a vm port of the switch",
                                         vm.name, port_name));
      }
      e.ports.push_back(port);
      auto join = m->access_.attachment_of(port_name);
      if (!join.ok()) return Status::Error(fmt::format("vm '{}': {}", vm.name, join.message()));
      attachment.push_back(*join);
    }
    // Carried through snapshots and forks: copies join the switch as this VM's NICs did.
    e.vm->set_attachment(AttachmentJson(attachment).dump());
    m->vms_.push_back(std::move(e));
  }
  return m;
}

VmManager::~VmManager() {
  for (Entry& e : vms_) {
    if (!e.vm) continue;
    Detach(e);
    (void)e.vm->Destroy();
    UnplugOwnPorts(e);
  }
}

VmManager::Entry* VmManager::FindLocked(const std::string& name) {
  for (Entry& e : vms_) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

Result<VmManager::Entry*> VmManager::Claim(const std::string& name, const std::string& operation) {
  std::lock_guard lock(mu_);
  Entry* e = FindLocked(name);
  if (e == nullptr) return Status::Error(fmt::format("no vm named '{}'", name));
  if (!e->busy.empty()) {
    return Status::Error(
        fmt::format("vm '{}' is busy: {} under way (see qosctl jobs)", name, e->busy));
  }
  if (!e->migrated_to.empty() && operation != "remove" && operation != kIncomingMigration) {
    return Status::Error(fmt::format("vm '{}' migrated to {}: it runs there now", name,
                                     e->migrated_to));
  }
  e->busy = operation;
  return e;
}

bool VmManager::IsSuspended(const std::string& name) {
  std::lock_guard lock(mu_);
  Entry* e = FindLocked(name);
  return e != nullptr && !e->suspended_dir.empty();
}

void VmManager::Detach(Entry& e) {
  for (dataplane::VmPort* port : e.ports) port->Detach();
  if (access_.quiesce) access_.quiesce();
}

void VmManager::Attach(Entry& e) {
  for (size_t i = 0; i < e.ports.size(); ++i) e.ports[i]->Attach(e.vm->nic(i));
}

Status VmManager::Start(Entry& e) {
  if (e.vm->state() == hv::VmState::kDestroyed) {
    auto created = hv::Vm::Create(e.vm->options());
    if (!created.ok()) return created.status();
    created.value()->set_attachment(e.vm->attachment());
    std::lock_guard lock(mu_);
    e.vm = std::move(created).value();
  }
  if (Status s = e.vm->Start(); !s.ok()) return s;
  Attach(e);
  return Status::Ok();
}

Status VmManager::StartAutostart(std::vector<std::string>& log) {
  for (Entry& e : vms_) {
    if (!e.autostart) continue;
    if (Status s = Start(e); !s.ok()) return s;
    log.push_back(fmt::format("vm {}: started, {} NIC(s), serial log {}", e.name, e.ports.size(),
                              e.serial_log));
  }
  return Status::Ok();
}

Status VmManager::Act(const std::string& name, const std::string& action) {
  Status s = ActLocked(name, action);
  if (s.ok()) {
    const char* done = action == "start"    ? "started"
                       : action == "stop"   ? "stopped"
                       : action == "pause"  ? "paused"
                       : action == "resume" ? "resumed"
                                            : "destroyed";
    spdlog::info("vm {}: {}", name, done);
  } else {
    spdlog::warn("vm {}: {} refused: {}", name, action, s.message());
  }
  return s;
}

Status VmManager::ActLocked(const std::string& name, const std::string& action) {
  if (action != "start" && action != "pause" && action != "resume" && action != "stop" &&
      action != "destroy") {
    return Status::Error(
        fmt::format("unknown vm action '{}'; use start, stop, pause, resume or destroy", action));
  }
  auto claimed = Claim(name, action);
  if (!claimed.ok()) return claimed.status();
  Entry& e = **claimed;
  BusyGuard guard(*this, &e);
  if (!e.suspended_dir.empty()) {
    if (action == "destroy") {
      guard.Release();
      Remove(&e);
      return Status::Ok();
    }
    return Status::Error(fmt::format("vm '{}' is suspended to {}: resume it (or destroy it)", name,
                                     e.suspended_dir));
  }
  if (action == "start") return Start(e);
  if (action == "pause") return e.vm->Pause();
  if (action == "resume") return e.vm->Resume();
  Detach(e);  // the data plane stops using the NIC before the device can go away
  if (action == "stop") {
    auto stopped = e.vm->Stop();
    return stopped.ok() ? Status::Ok() : stopped.status();
  }
  if (Status s = e.vm->Destroy(); !s.ok()) return s;
  if (!e.configured) {
    // A VM made while running has no configuration to come back from: it goes with its ports.
    guard.Release();
    Remove(&e);
  }
  return Status::Ok();
}

void VmManager::Remove(Entry* e) {
  if (e->vm && e->vm->state() != hv::VmState::kDestroyed) {
    Detach(*e);
    (void)e->vm->Destroy();
  }
  UnplugOwnPorts(*e);
  {
    std::lock_guard lock(mu_);
    vms_.remove_if([e](const Entry& x) { return &x == e; });
  }
  images_.Sweep();  // a pre-migrated image asked to go may have lost its last VM here
}

Status VmManager::ResizeDisk(const std::string& name, uint64_t new_size_bytes) {
  auto claimed = Claim(name, "resize");
  if (!claimed.ok()) return claimed.status();
  BusyGuard guard(*this, *claimed);
  if (!(*claimed)->vm) return Status::Error(fmt::format("vm '{}' is suspended", name));
  hv::VirtioBlk* disk = (*claimed)->vm->disk();
  if (disk == nullptr) return Status::Error(fmt::format("vm '{}' has no vflash disk", name));
  return disk->Resize(new_size_bytes);
}

Status VmManager::PlugNewPorts(Entry& e, const std::string& attachment) {
  auto nics = ParseAttachment(attachment);
  if (!nics.ok()) return nics.status();
  if (nics->size() != e.vm->nic_count()) {
    return Status::Error(fmt::format("the attachment lists {} NICs, the VM has {}", nics->size(),
                                     e.vm->nic_count()));
  }
  for (size_t i = 0; i < nics->size(); ++i) {
    auto port = std::make_unique<dataplane::VmPort>(fmt::format("{}.eth{}", e.name, i), pool_);
    vswitch::PortJoin join = (*nics)[i];
    join.port = port.get();
    auto added = access_.add_port(join);
    if (!added.ok()) {
      UnplugOwnPorts(e);
      return added.status();
    }
    spdlog::info("port {}: joined bridge {} as OpenFlow port {}", port->name(), join.bridge,
                 *added);
    std::lock_guard lock(mu_);
    e.ports.push_back(port.get());
    e.own_ports.push_back(std::move(port));
  }
  return Status::Ok();
}

void VmManager::UnplugOwnPorts(Entry& e) {
  std::vector<std::unique_ptr<dataplane::VmPort>> gone;
  {
    // Out of the lists first, under the lock: a listing sees all of them or none.
    std::lock_guard lock(mu_);
    gone = std::move(e.own_ports);
    e.own_ports.clear();
    std::erase_if(e.ports, [&](dataplane::VmPort* p) {
      return std::any_of(gone.begin(), gone.end(), [p](const auto& own) { return own.get() == p; });
    });
  }
  for (auto& port : gone) {
    port->Detach();
    Status removed = access_.remove_port(port->name());  // waits until the data plane let go
    if (removed.ok()) {
      spdlog::info("port {}: left the switch", port->name());
    } else {
      spdlog::error("port {}: {}", port->name(), removed.message());
    }
  }
}

void VmManager::ForEachOwnPort(const std::function<void(const dataplane::Port*)>& fn) {
  std::lock_guard lock(mu_);
  for (const Entry& e : vms_) {
    for (const auto& port : e.own_ports) fn(port.get());
  }
}

Result<VmManager::Entry*> VmManager::Adopt(std::unique_ptr<hv::Vm> vm, const std::string& parent,
                                           const VmOwner& owner, const VmDemand& demand,
                                           const std::string& busy) {
  Entry fresh;
  fresh.owner = owner;
  fresh.demand = demand;
  fresh.name = vm->name();
  fresh.serial_log = vm->options().serial_log;
  fresh.options = vm->options();
  fresh.parent = parent;
  fresh.autostart = false;
  fresh.busy = "adopt";
  fresh.vm = std::move(vm);
  Entry* e = nullptr;
  {
    std::lock_guard lock(mu_);
    if (FindLocked(fresh.name) != nullptr) {
      return Status::Error(fmt::format("a vm named '{}' exists already", fresh.name));
    }
    vms_.push_back(std::move(fresh));
    e = &vms_.back();
  }
  BusyGuard guard(*this, e);
  Status plugged = PlugNewPorts(*e, e->vm->attachment());
  if (plugged.ok()) {
    Attach(*e);
    if (busy.empty()) plugged = e->vm->Resume();
  }
  if (!plugged.ok()) {
    guard.Release();
    Remove(e);
    return plugged;
  }
  if (!busy.empty()) {
    guard.Release();
    std::lock_guard lock(mu_);
    e->busy = busy;
  }
  return e;
}

Status VmManager::AddConfigured(const config::Config& config, const std::string& name) {
  auto vm = std::find_if(config.vms.begin(), config.vms.end(),
                         [&](const config::Vm& v) { return v.name == name; });
  if (vm == config.vms.end()) return Status::Error(fmt::format("no vm named '{}'", name));
  {
    std::lock_guard lock(mu_);
    if (FindLocked(name) != nullptr) {
      return Status::Error(fmt::format("a vm named '{}' exists already", name));
    }
  }
  Entry e;
  e.name = name;
  e.autostart = vm->autostart;
  e.configured = true;
  e.serial_log = log_dir_ + "/" + name + ".serial.log";
  auto created = hv::Vm::Create(VmOptionsFrom(config, *vm, e.serial_log));
  if (!created.ok()) return created.status();
  e.vm = std::move(created).value();
  e.options = e.vm->options();
  std::vector<vswitch::PortJoin> attachment;
  std::vector<vswitch::PortJoin> new_ports;
  for (const config::Nic& nic : vm->nics) {
    vswitch::PortJoin join;
    join.bridge = nic.bridge.value_or("");
    if (nic.class_name) {
      if (const config::TrafficClass* c = FindClass(config, *nic.class_name)) {
        join.default_queue = static_cast<int>(c->queue);
      }
    }
    if (nic.implicit_port) {
      new_ports.push_back(join);
    } else {
      auto* port = dynamic_cast<dataplane::VmPort*>(access_.find_port(nic.port.value_or("")));
      if (port == nullptr) {
        return Status::Error(fmt::format("vm '{}': NIC port '{}' is not a vm port of the switch",
                                         name, nic.port.value_or("")));
      }
      auto join_of_port = access_.attachment_of(*nic.port);
      if (!join_of_port.ok()) return join_of_port.status();
      join = *join_of_port;
      e.ports.push_back(port);
    }
    attachment.push_back(join);
  }
  e.vm->set_attachment(AttachmentJson(attachment).dump());
  Entry* added = nullptr;
  {
    std::lock_guard lock(mu_);
    vms_.push_back(std::move(e));
    added = &vms_.back();
  }
  // Implicit ports ("<vm>.eth<i>" on a bridge) join the running switch now.
  if (!new_ports.empty()) {
    if (Status s = PlugNewPorts(*added, AttachmentJson(new_ports).dump()); !s.ok()) {
      Remove(added);
      return s;
    }
  }
  spdlog::info("vm {}: added by reload", name);
  if (!added->autostart) return Status::Ok();
  if (Status s = Start(*added); !s.ok()) return s;
  spdlog::info("vm {}: started", name);
  return Status::Ok();
}

Status VmManager::RemoveConfigured(const std::string& name) {
  auto claimed = Claim(name, "remove");
  if (!claimed.ok()) return claimed.status();
  spdlog::info("vm {}: removed by reload", name);
  Remove(*claimed);
  return Status::Ok();
}

void VmManager::SetConfig(const config::Config& config) {
  std::lock_guard lock(mu_);
  config_ = config;
}

Status VmManager::ValidNewName(const std::string& name) {
  const bool valid =
      !name.empty() && name.size() <= 32 && std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
      });
  if (!valid) {
    return Status::Error(
        fmt::format("vm name '{}': use 1 to 32 letters, digits, '-' or '_' (it "
                    "names files and ports)",
                    name));
  }
  return Status::Ok();
}

Status VmManager::CheckNewName(const std::string& name) {
  if (Status s = ValidNewName(name); !s.ok()) return s;
  std::lock_guard lock(mu_);
  if (FindLocked(name) != nullptr) {
    return Status::Error(fmt::format("a vm named '{}' exists already", name));
  }
  return Status::Ok();
}

Result<hv::VmOptions> VmManager::OptionsFromTemplate(
    const config::Config& config, const std::string& name, const std::string& template_name,
    const std::map<std::string, std::string>& overrides, std::vector<vswitch::PortJoin>* nics,
    VmDemand* demand) const {
  auto t = std::find_if(config.templates.begin(), config.templates.end(),
                        [&](const config::VmTemplate& x) { return x.name == template_name; });
  if (t == config.templates.end()) {
    return Status::Error(fmt::format("no template named '{}'", template_name));
  }
  const config::VmSettings& s = t->settings;
  if (!s.image || !s.memory_bytes) {
    return Status::Error(
        fmt::format("template '{}' has no {}", t->name, !s.image ? "image" : "memory"));
  }
  config::Vm vm;
  vm.name = name;
  vm.vcpus = s.vcpus.value_or(1);
  vm.memory_bytes = *s.memory_bytes;
  vm.image = *s.image;
  vm.initrd = s.initrd;
  vm.cmdline = s.cmdline;
  vm.disk = s.disk;
  vm.serial_log_max_bytes = s.serial_log_max_bytes.value_or(config::kDefaultSerialLogMaxBytes);
  if (s.nics) vm.nics = *s.nics;
  std::optional<std::string> nic_class;
  for (const auto& [key, value] : overrides) {
    auto bad = [&](const std::string& why) {
      return Status::Error(fmt::format("--set {}={}: {}", key, value, why));
    };
    if (key == "memory" || key == "disk_size") {
      auto bytes = ParseSize(value);
      if (!bytes.ok()) return bad(bytes.message());
      if (key == "memory") vm.memory_bytes = *bytes;
      if (key == "disk_size") {
        if (!vm.disk) return bad(fmt::format("template '{}' has no disk", t->name));
        vm.disk->size_bytes = *bytes;
      }
    } else if (key == "vcpus") {
      char* end = nullptr;
      const unsigned long n = std::strtoul(value.c_str(), &end, 10);
      if (end == value.c_str() || *end != '\0' || n == 0 || n > hv::kMaxVcpus) {
        return bad(fmt::format("give 1 to {} vCPUs", hv::kMaxVcpus));
      }
      vm.vcpus = static_cast<uint32_t>(n);
    } else if (key == "class") {
      if (FindClass(config, value) == nullptr) {
        return bad("no class of that name in the configuration");
      }
      nic_class = value;
    } else if (key == "cmdline") {
      vm.cmdline = value;
    } else {
      return bad("unknown key; use memory, vcpus, class, disk_size or cmdline");
    }
  }
  *demand = VmDemand{vm.vcpus, vm.memory_bytes, vm.disk ? vm.disk->size_bytes : 0, {}};
  // Each created VM has a disk file of its own next to its serial log.
  if (vm.disk) vm.disk->path = log_dir_ + "/" + name + ".vflash";
  hv::VmOptions o = VmOptionsFrom(config, vm, log_dir_ + "/" + name + ".serial.log");
  for (size_t i = 0; i < vm.nics.size(); ++i) {
    const config::Nic& nic = vm.nics[i];
    if (!nic.bridge) {
      return Status::Error(
          fmt::format("template '{}': NIC {} names port '{}', which a created VM "
                      "cannot share; give the template's NICs a bridge",
                      t->name, i, nic.port.value_or("")));
    }
    vswitch::PortJoin join;
    join.bridge = *nic.bridge;
    const std::string cls = nic_class.value_or(nic.class_name.value_or(""));
    if (const config::TrafficClass* c = FindClass(config, cls)) {
      join.default_queue = static_cast<int>(c->queue);
      demand->classes.push_back(cls);
    }
    nics->push_back(join);
  }
  return o;
}

config::Config VmManager::ConfigCopy() {
  std::lock_guard lock(mu_);
  return config_;
}

VmOwner VmManager::BoxOwner() {
  static const VmOwner box{static_cast<uint32_t>(geteuid()), UserNameOf(geteuid()), {}, {}};
  return box;
}

Result<VmDemand> VmManager::DemandOf(const std::string& template_name,
                                     const std::map<std::string, std::string>& overrides) {
  std::vector<vswitch::PortJoin> nics;
  VmDemand demand;
  auto options = OptionsFromTemplate(ConfigCopy(), "-", template_name, overrides, &nics, &demand);
  if (!options.ok()) return options.status();
  return demand;
}

Status VmManager::CreateFromTemplate(const std::string& name, const std::string& template_name,
                                     const std::map<std::string, std::string>& overrides,
                                     const VmOwner& owner) {
  if (Status s = CheckNewName(name); !s.ok()) return s;
  std::vector<vswitch::PortJoin> nics;
  VmDemand demand;
  auto options = OptionsFromTemplate(ConfigCopy(), name, template_name, overrides, &nics, &demand);
  if (!options.ok()) return options.status();
  auto vm = hv::Vm::Create(*options);
  if (!vm.ok()) return vm.status();
  (*vm)->set_attachment(AttachmentJson(nics).dump());
  // Started paused, so that it joins the switch like a restored VM and then runs.
  if (Status s = (*vm)->Start(); !s.ok()) return s;
  if (Status s = (*vm)->Pause(); !s.ok()) return s;
  auto adopted = Adopt(std::move(vm).value(), "", owner, demand);
  if (!adopted.ok()) return adopted.status();
  spdlog::info("vm {}: created from template {} for {}, running", name, template_name, owner.name);
  return Status::Ok();
}

std::map<std::string, QuotaCharge> VmManager::Charges() {
  std::lock_guard lock(mu_);
  std::map<std::string, QuotaCharge> out;
  for (const Entry& e : vms_) out[e.name] = QuotaCharge{e.owner.charged, e.demand};
  return out;
}

Result<VmBrief> VmManager::Brief(const std::string& name) {
  std::lock_guard lock(mu_);
  const Entry* e = FindLocked(name);
  if (e == nullptr) return Status::Error(fmt::format("no vm named '{}'", name));
  return VmBrief{StateOf(*e),
                 e->vm ? hv::VmExitReasonName(e->vm->last_exit().reason) : "none", e->serial_log,
                 e->owner};
}

Status VmManager::Snapshot(const std::string& name, const std::string& dir, bool stop,
                           const OperationProgress& progress) {
  auto claimed = Claim(name, "snapshot");
  if (!claimed.ok()) return claimed.status();
  Entry& e = **claimed;
  BusyGuard guard(*this, &e);
  if (!e.vm) return Status::Error(fmt::format("vm '{}' is suspended", name));
  progress.phase("writing memory and state");
  hv::SnapshotOptions options{.stop = stop, .progress = progress.bytes};
  if (stop) Detach(e);
  Status s = e.vm->Snapshot(dir, options);
  if (stop && !s.ok()) Attach(e);
  if (s.ok())
    spdlog::info("vm {}: snapshot written to {}{}", name, dir, stop ? ", vm stopped" : "");
  return s;
}

Result<std::string> VmManager::Restore(const std::string& dir, const std::string& as,
                                       const OperationProgress& progress) {
  progress.phase("checking and mapping the snapshot");
  auto saved = hv::Vm::SnapshotOptionsOf(dir);
  if (!saved.ok()) return saved.status();
  const std::string name = as.empty() ? saved->name : as;
  if (Status s = CheckNewName(name); !s.ok()) {
    return Status::Error(s.message() + "; destroy it first or restore with --as NEWNAME");
  }
  // A copy under another name must not share the original's MACs on the bridge.
  hv::CloneIdentity id{name, log_dir_ + "/" + name + ".serial.log", {}};
  if (name != saved->name) {
    for (size_t i = 0; i < saved->nics.size(); ++i) id.macs.push_back(DefaultMac(name, i));
  }
  auto vm = hv::Vm::Restore(dir, id);
  if (!vm.ok()) return vm.status();
  progress.phase("joining the switch");
  auto adopted = Adopt(std::move(vm).value(), "");
  if (!adopted.ok()) return adopted.status();
  spdlog::info("vm {}: restored from {}, running", name, dir);
  return name;
}

Result<std::vector<std::string>> VmManager::Fork(const std::string& name, uint32_t count,
                                                 const std::string& prefix) {
  if (count == 0 || count > 256) {
    return Status::Error(fmt::format("fork of {} children: give 1 to 256", count));
  }
  auto claimed = Claim(name, "fork");
  if (!claimed.ok()) return claimed.status();
  Entry& parent = **claimed;
  BusyGuard guard(*this, &parent);
  if (!parent.vm) return Status::Error(fmt::format("vm '{}' is suspended", name));
  const std::string stem = prefix.empty() ? name : prefix;
  if (Status s = ValidNewName(stem); !s.ok()) {
    return Status::Error(fmt::format("fork prefix: {}", s.message()));
  }
  std::vector<hv::CloneIdentity> ids;
  {
    std::lock_guard lock(mu_);
    uint32_t n = 1;
    while (ids.size() < count) {
      std::string child = fmt::format("{}-{}", stem, n++);
      if (FindLocked(child) != nullptr) continue;
      hv::CloneIdentity id{child, log_dir_ + "/" + child + ".serial.log", {}};
      for (size_t i = 0; i < parent.vm->nic_count(); ++i) id.macs.push_back(DefaultMac(child, i));
      ids.push_back(std::move(id));
    }
  }
  auto children = parent.vm->Fork(ids);
  if (!children.ok()) return children.status();
  std::vector<std::string> names;
  for (auto& child : *children) {
    const std::string child_name = child->name();
    auto adopted = Adopt(std::move(child), name);
    if (!adopted.ok()) {
      return Status::Error(fmt::format("fork of '{}': child '{}': {} ({} children were made)", name,
                                       child_name, adopted.message(), names.size()));
    }
    names.push_back(child_name);
    spdlog::info("vm {}: forked from {}, running", child_name, name);
  }
  return names;
}

std::vector<std::string> VmManager::ChildrenOf(const std::string& name) {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const Entry& e : vms_) {
    if (e.parent == name) out.push_back(e.name);
  }
  return out;
}

Status VmManager::Suspend(const std::string& name, const std::string& dir, bool force,
                          const OperationProgress& progress) {
  const std::vector<std::string> children = ChildrenOf(name);
  if (!children.empty() && !force) {
    std::string list;
    for (const auto& c : children) list += (list.empty() ? "" : ", ") + c;
    return Status::Error(
        fmt::format("vm '{}' has children ({}) that share its frozen image; "
                    "suspend them first, or --force to keep the image alive",
                    name, list));
  }
  auto claimed = Claim(name, "suspend");
  if (!claimed.ok()) return claimed.status();
  Entry& e = **claimed;
  BusyGuard guard(*this, &e);
  if (!e.vm) return Status::Error(fmt::format("vm '{}' is suspended already", name));
  auto base = e.vm->base_image();
  progress.phase(base ? "writing the pages it changed" : "writing memory and state");
  Detach(e);
  hv::SnapshotOptions options{
      .stop = true, .diff_against_base = base != nullptr, .progress = progress.bytes};
  if (Status s = e.vm->Snapshot(dir, options); !s.ok()) {
    Attach(e);
    return s;
  }
  (void)e.vm->Destroy();
  UnplugOwnPorts(e);
  std::lock_guard lock(mu_);
  e.vm.reset();
  e.suspended_dir = dir;
  e.suspended_base = base;
  spdlog::info("vm {}: suspended to {}{}", name, dir, base ? " (the pages it changed)" : "");
  return Status::Ok();
}

Status VmManager::ResumeSuspended(const std::string& name, const OperationProgress& progress) {
  auto claimed = Claim(name, "resume");
  if (!claimed.ok()) return claimed.status();
  Entry& e = **claimed;
  BusyGuard guard(*this, &e);
  if (e.suspended_dir.empty()) return Status::Error(fmt::format("vm '{}' is not suspended", name));
  progress.phase("mapping its image and the pages it changed");
  auto vm = hv::Vm::Restore(e.suspended_dir, {name, e.serial_log, {}}, e.suspended_base);
  if (!vm.ok()) return vm.status();
  {
    std::lock_guard lock(mu_);
    e.vm = std::move(vm).value();
    e.ports.clear();
  }
  progress.phase("joining the switch");
  Status plugged = PlugNewPorts(e, e.vm->attachment());
  if (plugged.ok()) {
    Attach(e);
    plugged = e.vm->Resume();
  }
  if (!plugged.ok()) {
    Detach(e);
    (void)e.vm->Destroy();
    UnplugOwnPorts(e);
    std::lock_guard lock(mu_);
    e.vm.reset();
    return plugged;
  }
  std::lock_guard lock(mu_);
  spdlog::info("vm {}: resumed from {}", name, e.suspended_dir);
  e.suspended_dir.clear();
  e.suspended_base.reset();
  return Status::Ok();
}

json VmManager::ListJson() {
  std::lock_guard lock(mu_);
  json out = json::array();
  for (const Entry& e : vms_) {
    const hv::VmOptions& o = e.options;
    json ports = json::array();
    for (const auto* p : e.ports) ports.push_back(p->name());
    json macs = json::array();
    for (const auto& nic : (e.vm ? e.vm->options() : o).nics) {
      macs.push_back(FormatMac(nic.mac.data()));
    }
    json row = {{"name", e.name},
                {"state", StateOf(e)},
                {"last_exit", e.vm ? hv::VmExitReasonName(e.vm->last_exit().reason) : "none"},
                {"vcpus", o.vcpus},
                {"memory_bytes", o.memory_bytes},
                {"charged_bytes", e.vm ? e.vm->ChargedBytes() : 0},
                {"nics", e.ports.size()},
                {"ports", ports},
                {"macs", macs},
                {"exits", e.vm ? e.vm->exits() : 0},
                {"generation", e.vm ? e.vm->generation() : 0},
                {"parent", e.parent},
                {"owner", e.owner.name},
                {"owner_uid", e.owner.uid},
                {"charged_to", e.owner.charged},
                {"app", e.owner.app},
                {"serial_log", e.serial_log}};
    if (!e.busy.empty()) row["busy"] = e.busy;
    if (e.pages.heat) {
      const json summary = PageSummaryJson(e);  // a temporary would die before the loop ran
      for (const auto& [key, value] : summary.items()) {
        if (key != "tracked" && key != "regions") row[key] = value;
      }
    }
    if (!e.suspended_dir.empty()) row["suspended_to"] = e.suspended_dir;
    if (!e.migrated_to.empty()) row["migrated_to"] = e.migrated_to;
    out.push_back(std::move(row));
  }
  return out;
}

std::string VmManager::StateOf(const Entry& e) {
  if (e.vm) return hv::VmStateName(e.vm->state());
  return e.migrated_to.empty() ? "suspended" : "migrated";
}

size_t VmManager::size() {
  std::lock_guard lock(mu_);
  return vms_.size();
}

}  // namespace qosvisor::control
