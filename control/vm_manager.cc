// VM creation from the configuration, NIC attachment to switch ports, lifecycle commands.
#include "control/vm_manager.h"

#include <fmt/format.h>

#include <functional>

#include "hv/virtio_blk.h"

namespace qosvisor::control {

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
    if (vm.nics[i].mac) {
      nic.mac = vm.nics[i].mac->bytes;
    } else {
      // A stable locally administered address per (VM, NIC), so restarts keep their MAC.
      const size_t h = std::hash<std::string>{}(vm.name);
      nic.mac = {0x52,
                 0x54,
                 static_cast<uint8_t>(h >> 16),
                 static_cast<uint8_t>(h >> 8),
                 static_cast<uint8_t>(h),
                 static_cast<uint8_t>(i)};
    }
    o.nics.push_back(nic);
  }
  return o;
}

Result<std::unique_ptr<VmManager>> VmManager::Create(const config::Config& config,
                                                     PortLookup find_port,
                                                     std::function<void()> quiesce,
                                                     std::string log_dir) {
  std::unique_ptr<VmManager> m(new VmManager(std::move(quiesce)));
  for (const config::Vm& vm : config.vms) {
    Entry e;
    e.autostart = vm.autostart;
    e.serial_log = log_dir + "/" + vm.name + ".serial.log";
    auto created = hv::Vm::Create(VmOptionsFrom(config, vm, e.serial_log));
    if (!created.ok()) return created.status();  // hv names the VM
    e.vm = std::move(created).value();
    for (const config::Nic& nic : vm.nics) {
      const std::string port_name = nic.port.value_or("");
      auto* port = dynamic_cast<dataplane::VmPort*>(find_port(port_name));
      if (port == nullptr) {
        return Status::Error(fmt::format("vm '{}': NIC port '{}' is not a vm port of the switch",
                                         vm.name, port_name));
      }
      e.ports.push_back(port);
    }
    m->vms_.push_back(std::move(e));
  }
  return m;
}

VmManager::~VmManager() {
  for (Entry& e : vms_) {
    Detach(e);
    (void)e.vm->Destroy();
  }
}

VmManager::Entry* VmManager::Find(const std::string& name) {
  for (Entry& e : vms_) {
    if (e.vm->name() == name) return &e;
  }
  return nullptr;
}

void VmManager::Detach(Entry& e) {
  for (dataplane::VmPort* port : e.ports) port->Detach();
  if (quiesce_) quiesce_();
}

Status VmManager::Start(Entry& e) {
  if (e.vm->state() == hv::VmState::kDestroyed) {
    auto created = hv::Vm::Create(e.vm->options());
    if (!created.ok()) return created.status();
    e.vm = std::move(created).value();
  }
  if (Status s = e.vm->Start(); !s.ok()) return s;
  for (size_t i = 0; i < e.ports.size(); ++i) e.ports[i]->Attach(e.vm->nic(i));
  return Status::Ok();
}

Status VmManager::StartAutostart(std::vector<std::string>& log) {
  for (Entry& e : vms_) {
    if (!e.autostart) continue;
    if (Status s = Start(e); !s.ok()) return s;
    log.push_back(fmt::format("vm {}: started, {} NIC(s), serial log {}", e.vm->name(),
                              e.ports.size(), e.serial_log));
  }
  return Status::Ok();
}

Status VmManager::Act(const std::string& name, const std::string& action) {
  Entry* e = Find(name);
  if (e == nullptr) return Status::Error(fmt::format("no vm named '{}'", name));
  if (action == "start") return Start(*e);
  if (action == "pause") return e->vm->Pause();
  if (action == "resume") return e->vm->Resume();
  if (action == "stop" || action == "destroy") {
    Detach(*e);  // the data plane stops using the NIC before the device can go away
    if (action == "stop") {
      auto stopped = e->vm->Stop();
      return stopped.ok() ? Status::Ok() : stopped.status();
    }
    return e->vm->Destroy();
  }
  return Status::Error(
      fmt::format("unknown vm action '{}'; use start, stop, pause, resume or "
                  "destroy",
                  action));
}

Status VmManager::ResizeDisk(const std::string& name, uint64_t new_size_bytes) {
  Entry* e = Find(name);
  if (e == nullptr) return Status::Error(fmt::format("no vm named '{}'", name));
  hv::VirtioBlk* disk = e->vm->disk();
  if (disk == nullptr) return Status::Error(fmt::format("vm '{}' has no vflash disk", name));
  return disk->Resize(new_size_bytes);
}

nlohmann::json VmManager::ListJson() const {
  nlohmann::json out = nlohmann::json::array();
  for (const Entry& e : vms_) {
    const hv::VmOptions& o = e.vm->options();
    out.push_back({{"name", o.name},
                   {"state", hv::VmStateName(e.vm->state())},
                   {"last_exit", hv::VmExitReasonName(e.vm->last_exit().reason)},
                   {"vcpus", o.vcpus},
                   {"memory_bytes", o.memory_bytes},
                   {"nics", e.ports.size()},
                   {"exits", e.vm->exits()},
                   {"serial_log", e.serial_log}});
  }
  return out;
}

}  // namespace qosvisor::control
