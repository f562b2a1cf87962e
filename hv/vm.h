// A KVM virtual machine and its lifecycle: create (host resources checked, image validated),
// start, pause, resume, stop (shutdown request, forced after a timeout), destroy.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "hv/bus.h"
#include "hv/debug_exit.h"
#include "hv/elf_loader.h"
#include "hv/guest_memory.h"
#include "hv/kvm.h"
#include "hv/linux_boot.h"
#include "hv/serial.h"
#include "hv/snapshot_file.h"
#include "hv/unique_fd.h"
#include "hv/vcpu.h"
#include "hv/virtio_blk.h"
#include "hv/virtio_mmio.h"
#include "hv/virtio_net.h"
#include "hv/vm_options.h"

namespace qosvisor::hv {

// The lifecycle. Allowed transitions (anything else is refused with a message):
//   created --start--> running --pause--> paused --resume--> running
//   running|paused --stop--> stopping --> stopped --start--> running (memory reset, image reloaded)
//   running --guest exits by itself--> stopped
//   any but destroyed --destroy--> destroyed
enum class VmState { kCreated, kRunning, kPaused, kStopping, kStopped, kDestroyed };
const char* VmStateName(VmState state);

enum class VmExitReason {
  kNone,           // still running, or never ran
  kDebugExit,      // the guest wrote its exit code to the debug-exit port
  kGuestShutdown,  // triple fault, HLT without irqchip, or a system event
  kForced,         // Stop() timed out waiting for the guest, or Destroy() of a running VM
  kError,          // KVM or the VMM failed; detail says how
};
const char* VmExitReasonName(VmExitReason reason);

struct VmExit {
  VmExitReason reason = VmExitReason::kNone;
  uint32_t code = 0;   // debug-exit value
  std::string detail;  // human-readable, for logs and error messages
};

enum class VcpuCommand { kRun, kPause, kStop };

// A parent's memory frozen by Fork(): a memfd nobody writes any more, which the parent and its
// children map copy-on-write. It lives as long as any VM (or a suspended child's owner) holds it.
struct FrozenImage {
  UniqueFd fd;
  uint64_t size = 0;
  std::string id;  // random, recorded in a suspended child's snapshot to find its base again
};

struct SnapshotOptions {
  bool stop = false;  // leave the VM stopped afterwards instead of resuming it
  // Save only the pages the VM wrote over its frozen base image (a fork child's suspend): the
  // snapshot then needs that image to be restored.
  bool diff_against_base = false;
  ProgressFn progress;  // bytes of memory examined / total
};

// What makes a restored VM or a fork child a VM of its own.
struct CloneIdentity {
  std::string name;
  std::string serial_log;                    // empty: none
  std::vector<std::array<uint8_t, 6>> macs;  // per NIC; empty: keep the saved MACs
};

// Lifecycle calls (Start ... Destroy, TrackChanges) come from one control thread at a time;
// state(), counters and WaitForExit may be called from anywhere. A NIC attached to a VmPort must
// be detached before Destroy(): the device goes away with the VM.
class Vm {
 public:
  // Validates options and image, checks host resources, creates the KVM VM, memory, devices and
  // vCPUs. Nothing runs until Start().
  static Result<std::unique_ptr<Vm>> Create(const VmOptions& options);
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  // From created or stopped. A restart boots afresh: memory cleared, image reloaded, devices reset.
  Status Start();
  // Returns once no vCPU runs guest code any more.
  Status Pause();
  Status Resume();
  // Asks the guest to shut down (boot-info shutdown_request), waits up to `timeout`
  // (options.shutdown_timeout if not given), then forces the vCPUs out. Returns how it ended.
  Result<VmExit> Stop(std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  // Stops (forced, no grace period) if needed and frees the VM's KVM resources and memory.
  Status Destroy();

  // Waits until the guest stops by itself (or `timeout` passes: nullopt).
  std::optional<VmExit> WaitForExit(std::chrono::milliseconds timeout);

  VmState state() const;
  VmExit last_exit() const;
  const VmOptions& options() const { return options_; }
  const std::string& name() const { return options_.name; }
  GuestMemory& memory() { return memory_; }
  const Serial& serial() const { return *serial_; }
  const ElfImage& image() const { return image_; }  // empty for a bzImage
  int vm_fd() const { return vm_fd_.get(); }
  uint64_t exits() const;  // KVM exits handled in user space, all vCPUs
  // steady_clock ns at the start of Create(), for boot-time measurements.
  int64_t created_ns() const { return created_ns_; }

  // The vflash disk, if options.disk was given (Resize() it through the control path).
  VirtioBlk* disk() { return disk_.get(); }
  // NIC i (options.nics order): the backend to Attach() to its `vm` switch port.
  VirtioNet* nic(size_t i) { return i < nics_.size() ? nics_[i].get() : nullptr; }
  size_t nic_count() const { return nics_.size(); }
  // The cmdline the guest gets: options.cmdline plus "virtio_mmio.device=4K@<base>:<gsi>" per
  // virtio device, as Linux expects them.
  const std::string& guest_cmdline() const { return guest_cmdline_; }

  // First virtio-mmio window and its GSI; device i sits at kVirtioMmioBase + i * 0x1000.
  static constexpr uint64_t kVirtioMmioBase = 0xd0000000;
  static constexpr uint32_t kVirtioFirstGsi = 5;
  static constexpr uint32_t kMaxVirtioDevices = 8;
  // What a copy-on-write VM is charged before it writes: its rings, page tables, device buffers.
  static constexpr uint64_t kCopyOnWriteReserveBytes = 1ull << 20;

  // Who reads which guest pages changed. KVM's dirty log clears when it is read, so the VM fans
  // each harvest out: every reader gets every page changed since its own previous take, however
  // the readers' takes interleave (a migration's rounds and the page tracker's period).
  enum class ChangeReader : uint8_t { kMigration, kPageTracker };
  static constexpr size_t kChangeReaders = 2;
  // Starts or stops `reader`: KVM's dirty log and the devices' writes into guest memory are
  // tracked while any reader is on; the vflash disk's written blocks while kMigration is.
  Status TrackChanges(ChangeReader reader, bool on);
  bool tracking(ChangeReader reader) const;
  // One bit per 4 KiB page (bit i of word i / 64 = page i): the pages the vCPUs or the VMM's
  // devices wrote since `reader`'s previous take, or since it began. An error if it is off.
  Result<std::vector<uint64_t>> TakeChangedPages(ChangeReader reader);

  // --- snapshots and forks (vm_snapshot.cc) ---
  // Pauses the VM (from running or paused), writes `dir` (created if missing; it must not hold
  // a snapshot already), then resumes it, or stops it with options.stop. Guest memory, vCPU,
  // VM and device state, and attachment() are saved. On failure the VM is as it was and `dir`
  // holds no state file.
  Status Snapshot(const std::string& dir, const SnapshotOptions& options = {});
  // A VM made from the snapshot in `dir`, paused and ready to Resume() exactly where the guest
  // was. Memory is mapped lazily from the snapshot's image (restore time does not grow with
  // memory size). A diff snapshot needs its `base` image. Everything in the snapshot is checked
  // before anything is created; on failure nothing is left behind.
  static Result<std::unique_ptr<Vm>> Restore(const std::string& dir, const CloneIdentity& identity,
                                             std::shared_ptr<const FrozenImage> base = nullptr);
  // The options saved in the snapshot in `dir` (its state file checked whole), without
  // creating anything: what a caller needs to choose a name and MACs for the restored VM.
  static Result<VmOptions> SnapshotOptionsOf(const std::string& dir);
  // Freezes this VM's memory (it goes on, from running or paused, on a private copy-on-write
  // mapping) and makes one paused child per identity on the frozen image: same vCPU and device
  // state, its own name, MACs (the guest is told through a config-change interrupt) and a new
  // generation id in the boot-info page.
  Result<std::vector<std::unique_ptr<Vm>>> Fork(const std::vector<CloneIdentity>& children);
  // The frozen image this VM's memory is a copy-on-write view of (null for a plain VM).
  std::shared_ptr<const FrozenImage> base_image() const;
  // The boot-info generation id (0 for a VM that booted).
  uint64_t generation() const { return generation_; }
  // control/'s description of the VM's switch attachment (JSON), carried through snapshots.
  void set_attachment(std::string json) { attachment_ = std::move(json); }
  const std::string& attachment() const { return attachment_; }
  // Host memory this VM holds for itself now: its whole size for a plain VM; for a
  // copy-on-write VM a small reserve plus the pages it wrote. Frozen images are charged apart,
  // once each, while they live.
  uint64_t ChargedBytes() const;
  uint64_t ChargedBytesLocked() const;  // the process-wide memory lock held (vm.cc)
  // What the host-memory check counts for this process's live VMs (the sum of ChargedBytes).
  static uint64_t CommittedBytes();

  // --- live migration (hv/migration.cc drives these) ---
  // A VM to receive a migrating guest into: created as `options` say, no image loaded; nothing
  // runs until ApplyIncomingState(). Without `base` its memory is its own, zeroed and charged
  // whole; with it (a pre-migrated frozen image of the same size) its memory is a copy-on-write
  // view of the image, charged by what it writes, and only the guest's own pages need to come.
  static Result<std::unique_ptr<Vm>> CreateIncoming(
      const VmOptions& options, std::shared_ptr<const FrozenImage> base = nullptr);
  // The state sections (config, VM, vCPUs, devices) of this VM, which must be paused.
  Result<std::vector<Section>> CaptureMigrationState() const;
  // Applies another VM's captured state to this incoming VM (memory already copied) and leaves
  // it paused with its threads started, ready to Resume(). Its name and MACs stay its own.
  Status ApplyIncomingState(const std::vector<Section>& sections);
  // The destination runs the VM now: the serial line the guest had begun printing here was
  // saved with the state and ends there, so it is not written here too.
  void HandOverSerialLine() { serial_->DropPartialLine(); }

  // Devices added before Start(); not owned.
  Status AddPioDevice(uint64_t base, uint64_t size, Device* device);
  Status AddMmioDevice(uint64_t base, uint64_t size, Device* device);

  // --- for Vcpu threads ---
  Bus& pio_bus() { return pio_; }
  Bus& mmio_bus() { return mmio_; }
  // Blocks while the VM is paused; returns what the vCPU must do next.
  VcpuCommand WaitWhilePaused();
  // Ends the run (first reason wins) and kicks every vCPU out of the guest.
  void RequestStop(VmExitReason reason, uint32_t code, std::string detail);
  void OnVcpuThreadExit(uint32_t index);

 private:
  explicit Vm(VmOptions options) : options_(std::move(options)), pio_("pio"), mmio_("mmio") {}
  // How a VM comes to be: booted (image loaded, charged its whole memory); restored or forked
  // (memory already holds the guest on a copy-on-write mapping, charged by what it writes); or
  // migrated in (memory of its own that the migration fills, charged whole). Without the boot
  // image, the image is read only if the VM is later restarted from scratch.
  enum class Origin { kBoot, kCopyOnWrite, kIncoming };
  static Result<std::unique_ptr<Vm>> CreateVm(const VmOptions& options, Origin origin);
  Status LoadBootImage();
  // Pause from running; no-op from paused. *was_running says which.
  Status PauseForCapture(bool* was_running);
  // Every section of a snapshot but memory (config, VM, vCPUs, devices). VM paused.
  Result<std::vector<Section>> CaptureState(bool diff) const;
  // Applies captured state to this freshly created VM and leaves it paused, threads started.
  Status ApplyState(const std::vector<Section>& sections);
  void StartPaused();
  // A new run's bookkeeping, before the vCPU threads start (mu_ held).
  void BeginRunLocked(VcpuCommand command, VmState state);
  // Puts `memory_` on a private mapping of `fd` in place (KVM's slot keeps its address).
  Status MapMemoryPrivate(UniqueFd fd);
  // Freezes memory for Fork(): the image children map, with this VM going on over it privately.
  Result<std::shared_ptr<const FrozenImage>> FreezeMemory();
  Status WriteGeneration(uint64_t generation);
  Status Refuse(const char* transition, const char* allowed) const;
  Status ResetForStart();
  // Places a virtio device in the next MMIO window, binds its interrupt eventfd to a GSI.
  Status AddVirtio(VirtioMmioDevice* device);
  void KickAll();
  // Forces the vCPUs out and joins them. Caller does not hold mu_.
  void ForceStopAndJoin(const std::string& detail);
  void JoinAll();
  Status SetMemoryRegion(uint32_t flags);
  // KVM's dirty log (vCPU writes) on or off, and its bits since the previous read (cleared).
  Status SetDirtyLogging(bool on);
  Result<std::vector<uint64_t>> TakeDirtyLog();

  VmOptions options_;
  int64_t created_ns_ = 0;
  Kvm kvm_;
  UniqueFd vm_fd_;
  GuestMemory memory_;
  std::vector<uint8_t> image_bytes_;
  ElfImage image_;                  // when the image is an ELF file
  std::optional<BzImage> bzimage_;  // when it is a bzImage
  std::vector<uint8_t> initrd_bytes_;
  Bus pio_;
  Bus mmio_;
  std::unique_ptr<Serial> serial_;
  std::unique_ptr<DebugExit> debug_exit_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  std::unique_ptr<VirtioBlk> disk_;
  std::vector<std::unique_ptr<VirtioNet>> nics_;
  std::vector<VirtioMmioDevice*> virtio_;
  std::string guest_cmdline_;
  bool image_loaded_ = false;
  bool copy_on_write_ = false;  // memory is a private view of a snapshot or frozen image
  std::shared_ptr<const FrozenImage> base_image_;  // fork parent and children
  uint64_t generation_ = 0;
  std::string attachment_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  VmState state_ = VmState::kCreated;                    // guarded by mu_
  std::atomic<VcpuCommand> command_{VcpuCommand::kRun};  // written under mu_
  uint32_t paused_vcpus_ = 0;                            // guarded by mu_
  uint32_t exited_vcpus_ = 0;                            // guarded by mu_
  VmExit exit_;                                          // guarded by mu_
  bool ran_ = false;                                     // a previous run left state behind

  // Change readers: one at a time takes (changes_mu_), each keeping what the others' takes
  // harvested for it. A reader that is off has no pending bitmap.
  mutable std::mutex changes_mu_;
  std::array<std::optional<std::vector<uint64_t>>, kChangeReaders> pending_changes_;
};

// A VM's options as JSON text (what snapshots and migration offers carry) and back, checked
// field by field and then as Create() would check them.
std::string VmOptionsJsonText(const VmOptions& options);
Result<VmOptions> VmOptionsFromJsonText(std::string_view text);

}  // namespace qosvisor::hv
