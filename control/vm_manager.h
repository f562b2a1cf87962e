// The appliance's VMs: built from the configuration (templates already applied), their
// virtio-net NICs attached to `vm` switch ports once they run, the lifecycle commands the control
// API exposes, and the VMs made while running — restored from snapshots and forked — each on
// `vm` ports of its own that join the running switch with the NIC's bridge, VLAN and class.
//
// Thread use: every call may come from the control thread or a job thread. A short mutex guards
// the list of VMs; a long operation marks its VM busy (other operations on it are refused, naming
// the operation) and runs without the mutex, so `vms` answers while a snapshot is written.
#pragma once

#include <chrono>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "control/image_store.h"
#include "control/quota.h"
#include "dataplane/port.h"
#include "hv/migration.h"
#include "hv/vm.h"
#include "vswitch/switch.h"

namespace qosvisor::control {

// The operation a VM migrating in holds its entry with until the source commits.
inline constexpr const char* kIncomingMigration = "incoming migration";

// What VmManager needs from the switch. Calls are serialized by the caller's implementation.
struct SwitchAccess {
  // A switch port by name (the configured `vm` ports).
  std::function<dataplane::Port*(const std::string&)> find_port;
  // Returns once the data plane has let go of every NIC detached before the call.
  std::function<void()> quiesce;
  // How a configured port is attached: its bridge, VLAN settings and default queue (class).
  std::function<Result<vswitch::PortJoin>(const std::string& port)> attachment_of;
  std::function<Result<uint32_t>(const vswitch::PortJoin&)> add_port;
  std::function<Status(const std::string& port)> remove_port;
};

// Called with bytes done / total while a long operation runs, and with a phase name.
struct OperationProgress {
  std::function<void(const std::string& phase)> phase = [](const std::string&) {};
  hv::ProgressFn bytes;
  std::function<void(const nlohmann::json& detail)> detail = [](const nlohmann::json&) {};
};

// What a box lets in when a VM migrates to it.
struct IncomingPolicy {
  // Ok, or why this box has no room for the VM (its fleet budget); null: no budget to keep.
  std::function<Status(const VmDemand&)> admit;
  std::chrono::milliseconds message_timeout{10000};
};

// Who a VM belongs to: the user who created it over the socket (the VMs of the configuration,
// restores and forks belong to the user qosvisor runs as), the quotas it is charged to, and the
// app (a deployed blueprint) it is part of.
struct VmOwner {
  uint32_t uid = 0;
  std::string name;
  std::vector<std::string> charged;  // quota labels (see quota.h); empty: charged to none
  std::string app;
};

// What a deploy watches while it waits for a VM.
struct VmBrief {
  std::string state;  // hv::VmStateName, or "suspended"
  std::string last_exit;
  std::string serial_log;
  VmOwner owner;
};

class VmManager {
 public:
  // `log_dir` receives <vm>.serial.log files.
  static Result<std::unique_ptr<VmManager>> Create(const config::Config& config,
                                                   SwitchAccess access, rte_mempool* pool,
                                                   std::string log_dir);
  ~VmManager();  // detaches the NICs, stops and destroys every VM, removes the ports it added

  // Starts the VMs marked autostart; stops at the first that cannot start.
  Status StartAutostart(std::vector<std::string>& log);
  // action: start | stop | pause | resume | destroy. Errors name the VM and the state. Starting
  // a destroyed configured VM creates it anew; destroying a restored or forked VM removes it and
  // its ports. Resuming a suspended VM is a job (ResumeSuspended).
  Status Act(const std::string& name, const std::string& action);
  // Grows a VM's vflash disk online: metadata written atomically, file grown, guest notified.
  Status ResizeDisk(const std::string& name, uint64_t new_size_bytes);

  // Snapshot of a running or paused VM to `dir`; it runs on afterwards, or stays stopped.
  Status Snapshot(const std::string& name, const std::string& dir, bool stop,
                  const OperationProgress& progress);
  // A new VM `as` (default: the snapshot's own name) from the snapshot in `dir`, on new ports,
  // running where the snapshot left it.
  Result<std::string> Restore(const std::string& dir, const std::string& as,
                              const OperationProgress& progress);
  // `count` children of a running or paused VM, named <prefix>-1.. (prefix default: the VM's
  // name), each running on its own ports with its own MACs. Returns their names.
  Result<std::vector<std::string>> Fork(const std::string& name, uint32_t count,
                                        const std::string& prefix);
  // Saves the VM to `dir` (a fork child or parent: only the pages it changed over its frozen
  // image) and takes it off the box: its ports go, its name stays, `resume` brings it back.
  // A parent with children is refused, naming them, unless `force` (the frozen image stays alive
  // for them anyway).
  Status Suspend(const std::string& name, const std::string& dir, bool force,
                 const OperationProgress& progress);
  Status ResumeSuspended(const std::string& name, const OperationProgress& progress);
  // A new VM from template `template_name` of the configuration, with `overrides` (memory,
  // vcpus, class, disk_size, cmdline), started on new ports on its NICs' bridges. Destroying it
  // removes it, its ports and nothing else (its vflash disk file stays).
  Status CreateFromTemplate(const std::string& name, const std::string& template_name,
                            const std::map<std::string, std::string>& overrides,
                            const VmOwner& owner);
  Status CreateFromTemplate(const std::string& name, const std::string& template_name,
                            const std::map<std::string, std::string>& overrides) {
    return CreateFromTemplate(name, template_name, overrides, BoxOwner());
  }
  // What a VM made from the template with `overrides` would take from a quota (errors as
  // CreateFromTemplate's would be).
  Result<VmDemand> DemandOf(const std::string& template_name,
                            const std::map<std::string, std::string>& overrides);
  // Every VM's name and what it is charged to quotas.
  std::map<std::string, QuotaCharge> Charges();
  Result<VmBrief> Brief(const std::string& name);
  // The options of a VM that is not suspended (what a migration needs room for).
  Result<hv::VmOptions> OptionsOf(const std::string& name);
  // The owner of the VMs from the configuration, restores and forks.
  static VmOwner BoxOwner();
  // True when `name` is suspended (its resume is a job).
  bool IsSuspended(const std::string& name);

  // Reload: a VM added to the configuration (created on its configured or new implicit ports,
  // started if autostart), or removed from it (destroyed, its ports gone); the templates and
  // classes later creates use.
  Status AddConfigured(const config::Config& config, const std::string& name);
  Status RemoveConfigured(const std::string& name);
  void SetConfig(const config::Config& config);

  // --- live migration (vm_manager_migrate.cc) ---
  // Sends VM `name` over `channel` (authenticated, to `destination`'s listener): an offer the
  // destination checks, then memory, disk and state (hv/migration.h). The VM stays this box's,
  // and runs again here after any failure, until the destination holds it paused on ports with
  // the same QoS; then this box commits, lets it go and the destination resumes it. Returns the
  // migration's figures.
  Result<nlohmann::json> MigrateOut(const std::string& name, hv::MigrationChannel& channel,
                                    const hv::MigrationTuning& tuning,
                                    const std::string& destination,
                                    const OperationProgress& progress);
  // The other end: takes one VM from `channel` (authenticated, from a source's MigrateOut) if
  // the offer fits this box (name free, bridges and classes present, `policy.admit`), on new
  // ports with the same bridge, VLAN, class and MACs, resumed when the source commits. On any
  // failure nothing of it stays here. Returns the VM's name.
  Result<std::string> ServeIncoming(hv::MigrationChannel& channel, const IncomingPolicy& policy);
  // Removes the disk files of incoming migrations that never finished (the box was killed).
  void RemoveUnfinishedIncoming();

  // --- pre-migration (vm_manager_premigrate.cc) ---
  // Copies the frozen image VM `name` shares with its fork family to the host at the other end
  // of `channel` (authenticated), paced to `bandwidth_bps`; nothing is sent when the host holds a
  // verified copy already. Remembers the host, so that a child migrating there later sends only
  // its own pages, and the image is dropped there once no VM here uses it.
  Result<nlohmann::json> Premigrate(const std::string& name, hv::MigrationChannel& channel,
                                    const std::string& host, const std::string& this_host,
                                    uint64_t bandwidth_bps,
                                    std::chrono::milliseconds message_timeout,
                                    const OperationProgress& progress);
  // Asks the host at the other end to remove image `id` (at once, or when its VMs using it go).
  Result<nlohmann::json> DropPremigrated(const std::string& id, hv::MigrationChannel& channel,
                                         const std::string& host,
                                         std::chrono::milliseconds message_timeout);
  // Images pre-migrated from here that no VM here uses any more, with the hosts holding them;
  // each is returned once.
  std::vector<std::pair<std::string, std::vector<std::string>>> UnusedPremigrations();
  // The images this box holds for others, and those it sent.
  nlohmann::json ImagesJson();
  Result<std::string> RemoveImage(const std::string& id);
  // The id of the frozen image VM `name`'s fork family shares.
  Result<std::string> ImageIdOf(const std::string& name);

  // --- page tracking (vm_manager_pages.cc) ---
  // One harvest for every running or paused VM that no long operation holds: its changed pages
  // into its counters, then the huge-page policy. Called by the page tracker's thread.
  void HarvestPages(const config::GuestMemory& settings);
  // What `qosctl vm NAME pages` shows: a summary and one row per 2 MiB region.
  Result<nlohmann::json> PagesJson(const std::string& name);
  // Each tracked VM's changed pages and rate, by name (placement, the fleet record).
  std::map<std::string, hv::VmPageSummary> PageSummaries();

  nlohmann::json ListJson();
  // Calls `fn` for every port this manager added to the switch, holding its lock.
  void ForEachOwnPort(const std::function<void(const dataplane::Port*)>& fn);
  size_t size();

 private:
  struct Entry {
    std::string name;
    std::unique_ptr<hv::Vm> vm;             // null while suspended
    std::vector<dataplane::VmPort*> ports;  // NIC i's switch port
    // Ports this manager made (restored and forked VMs) and joined to the switch.
    std::vector<std::unique_ptr<dataplane::VmPort>> own_ports;
    bool autostart = true;
    bool configured = false;  // from the configuration file (its ports are the config's)
    std::string serial_log;
    std::string parent;         // fork parent, if any
    std::string busy;           // the long operation under way, if any
    std::string suspended_dir;  // non-empty while suspended
    // A configured VM that migrated away: where to (its ports wait here, should it come back).
    std::string migrated_to;
    std::shared_ptr<const hv::FrozenImage> suspended_base;
    hv::VmOptions options;  // kept for listing while suspended
    VmOwner owner = BoxOwner();
    VmDemand demand;  // what it takes from the quotas it is charged to
    // What the page tracker learnt of this VM's memory, for the Vm object it was learnt from
    // (a restart from scratch makes a new one, and the counters begin again).
    struct PageTracking {
      const hv::Vm* vm = nullptr;
      std::unique_ptr<hv::PageHeat> heat;
      std::chrono::steady_clock::time_point last_harvest;
      std::vector<int8_t> applied;  // per region: -1 not yet, 0 small, 1 huge
      std::string error;            // the last harvest's or policy's failure, if any
    } pages;
  };
  VmManager(const config::Config& config, SwitchAccess access, rte_mempool* pool,
            std::string log_dir)
      : config_(config), access_(std::move(access)), pool_(pool), log_dir_(std::move(log_dir)) {}
  // The options and attachment of a VM made from a template (errors name the key at fault).
  // `config` is a copy taken under the lock: a reload may replace config_ meanwhile.
  Result<hv::VmOptions> OptionsFromTemplate(const config::Config& config, const std::string& name,
                                            const std::string& template_name,
                                            const std::map<std::string, std::string>& overrides,
                                            std::vector<vswitch::PortJoin>* nics,
                                            VmDemand* demand) const;
  config::Config ConfigCopy();
  // Refuses names that could not be a file or port name part; CheckNewName also those a VM has.
  static Status ValidNewName(const std::string& name);
  Status CheckNewName(const std::string& name);
  Entry* FindLocked(const std::string& name);
  // Marks `name` busy with `operation` for the guard's life; errors if missing or busy.
  class BusyGuard {
   public:
    BusyGuard(VmManager& m, Entry* e) : m_(m), e_(e) {}
    ~BusyGuard() {
      if (e_ == nullptr) return;
      std::lock_guard lock(m_.mu_);
      e_->busy.clear();
    }
    void Release() { e_ = nullptr; }  // the entry was removed

   private:
    VmManager& m_;
    Entry* e_;
  };
  Result<Entry*> Claim(const std::string& name, const std::string& operation);
  Status ActLocked(const std::string& name, const std::string& action);  // Act without its log
  Status Start(Entry& e);
  // Unplugs the VM's NICs from their ports and waits until the data plane no longer uses them:
  // after this the VM's devices and memory may go.
  void Detach(Entry& e);
  void Attach(Entry& e);
  // New `vm` ports "<vm>.eth<i>" joined to the switch as the attachment JSON says.
  Status PlugNewPorts(Entry& e, const std::string& attachment);
  void UnplugOwnPorts(Entry& e);
  // Takes a paused VM made by restore or fork into the list, on new ports, and resumes it.
  // `busy`: left marked with that operation, and paused (a migration's VM waits for the commit).
  Result<Entry*> Adopt(std::unique_ptr<hv::Vm> vm, const std::string& parent,
                       const VmOwner& owner = BoxOwner(), const VmDemand& demand = {},
                       const std::string& busy = "");
  std::vector<std::string> ChildrenOf(const std::string& name);
  // Migration's halves (vm_manager_migrate.cc).
  Result<nlohmann::json> OfferFor(const Entry& e);
  struct Incoming;
  Result<Incoming> AcceptOffer(const nlohmann::json& offer, const IncomingPolicy& policy);
  Status CompleteIncoming(Incoming& in, hv::MigrationChannel& channel,
                          const IncomingPolicy& policy);
  // The entry of a configured VM that migrated away and comes back (held busy), null for a VM
  // new to this box, or an error when the name is taken.
  Result<Entry*> ClaimReturning(const std::string& name);
  void ReleaseReturning(Entry* e);
  // Checks the offer against this box and makes the VM to fill (AcceptOffer's second half).
  Status FitIncoming(Incoming& in, hv::VmOptions options,
                     const std::vector<vswitch::PortJoin>& joins, const config::Config& config,
                     const IncomingPolicy& policy);
  Status PlaceIncomingDisk(Incoming& in, hv::VmOptions& options);
  void OpenBase(const nlohmann::json& base, Incoming& in);
  // The filled VM into the list, paused on its ports; and out again when the migration fails.
  Result<Entry*> TakeIncoming(Incoming& in);
  void DropIncoming(Entry* e);
  // "suspended", "migrated" or the VM's state.
  static std::string StateOf(const Entry& e);
  // Pre-migration's steps (vm_manager_premigrate.cc).
  struct FamilyImage {
    std::shared_ptr<const hv::FrozenImage> image;
    std::string sha256;
  };
  Result<FamilyImage> FamilyImageOf(const std::string& name);
  bool ImageUsedLocked(const std::string& id);
  // The base image part of a migration offer, when the image was pre-migrated anywhere.
  std::optional<nlohmann::json> BaseOfferFor(const Entry& e);
  // An image or drop-image offer, served on the listener's thread.
  Result<std::string> ServeImage(const nlohmann::json& offer, hv::MigrationChannel& channel,
                                 const IncomingPolicy& policy);
  // The page tracker's steps for one entry (mu_ held).
  void HarvestEntry(Entry& e, const config::GuestMemory& settings);
  void ApplyHugePolicy(Entry& e, config::HugePagePolicy policy);
  static nlohmann::json PageSummaryJson(const Entry& e);
  // A migrated-in VM's vflash file and its metadata (a failed migration leaves neither).
  static void RemoveDiskFiles(const std::string& path);
  void Remove(Entry* e);

  config::Config config_;  // templates, classes and paths, as loaded
  SwitchAccess access_;
  rte_mempool* pool_;
  std::string log_dir_;
  std::mutex mu_;
  std::list<Entry> vms_;  // guarded by mu_; a list, so that entries stay put while busy
  // Images pre-migrated from here, by id: their checksum, the VM they were sent for, where to.
  struct Premigrated {
    std::string sha256;
    std::string parent;
    std::set<std::string> hosts;
    bool dropping = false;  // no VM here uses it; the hosts have been asked to drop it
  };
  std::map<std::string, Premigrated> premigrated_;  // guarded by mu_
  ImageStore images_{log_dir_ + "/images"};        // images pre-migrated to this box
};

// config::Vm → hv::VmOptions (paths resolved against the configuration's directory).
hv::VmOptions VmOptionsFrom(const config::Config& config, const config::Vm& vm,
                            const std::string& serial_log);
// A stable locally administered MAC for NIC `nic` of VM `vm_name` (restarts keep it).
std::array<uint8_t, 6> DefaultMac(const std::string& vm_name, size_t nic);
// The attachment JSON of a VM's NICs (bridge, VLAN, class queue per NIC) and back.
nlohmann::json AttachmentJson(const std::vector<vswitch::PortJoin>& nics);
Result<std::vector<vswitch::PortJoin>> ParseAttachment(const std::string& json_text);

}  // namespace qosvisor::control
