// The appliance's VMs: built from the configuration (templates already applied), their
// virtio-net NICs attached to `vm` switch ports once they run, and the lifecycle commands the
// control API exposes. Runs on the control thread only.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "dataplane/port.h"
#include "hv/vm.h"

namespace qosvisor::control {

class VmManager {
 public:
  // `find_port` resolves a switch port by name; `quiesce` returns once the data plane has let go
  // of every NIC detached before the call; `log_dir` receives <vm>.serial.log files.
  using PortLookup = std::function<dataplane::Port*(const std::string&)>;
  static Result<std::unique_ptr<VmManager>> Create(const config::Config& config,
                                                   PortLookup find_port,
                                                   std::function<void()> quiesce,
                                                   std::string log_dir);
  ~VmManager();  // detaches the NICs, stops and destroys every VM

  // Starts the VMs marked autostart; stops at the first that cannot start.
  Status StartAutostart(std::vector<std::string>& log);
  // action: start | stop | pause | resume | destroy. Errors name the VM and the state. Starting
  // a destroyed VM creates it anew from its configuration.
  Status Act(const std::string& name, const std::string& action);
  // Grows a VM's vflash disk online: metadata written atomically, file grown, guest notified.
  Status ResizeDisk(const std::string& name, uint64_t new_size_bytes);
  nlohmann::json ListJson() const;
  size_t size() const { return vms_.size(); }

 private:
  struct Entry {
    std::unique_ptr<hv::Vm> vm;
    std::vector<dataplane::VmPort*> ports;  // NIC i's switch port
    bool autostart = true;
    std::string serial_log;
  };
  explicit VmManager(std::function<void()> quiesce) : quiesce_(std::move(quiesce)) {}
  Entry* Find(const std::string& name);
  Status Start(Entry& e);
  // Unplugs the VM's NICs from their ports and waits until the data plane no longer uses them:
  // after this the VM's devices and memory may go.
  void Detach(Entry& e);
  std::function<void()> quiesce_;
  std::vector<Entry> vms_;
};

// config::Vm → hv::VmOptions (paths resolved against the configuration's directory).
hv::VmOptions VmOptionsFrom(const config::Config& config, const config::Vm& vm,
                            const std::string& serial_log);

}  // namespace qosvisor::control
