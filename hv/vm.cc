// VM creation (KVM fds, memfd memory slot, irqchip, PIT, CPUID, devices) and the lifecycle state
// machine. vCPU threads report back through WaitWhilePaused/RequestStop/OnVcpuThreadExit.
#include "hv/vm.h"

#include <elf.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "hv/boot_abi.h"
#include "hv/mptable.h"
#include "hv/vcpu.h"
#include "hv/x86_boot.h"

namespace qosvisor::hv {
namespace {

// Where KVM may put the TSS that VMX needs for real mode; just below the 4 GiB BIOS area,
// outside guest RAM (at most 3 GiB).
constexpr uint64_t kKvmTssAddr = 0xfffbd000;

int64_t NowNs() { return std::chrono::steady_clock::now().time_since_epoch().count(); }

// Copies every page of `memory` that may hold data into `fd` (same size, zero-filled).
Status CopyPopulatedPages(const GuestMemory& memory, int fd) {
  auto pages = memory.PopulatedPages();
  if (!pages) return pages.status();
  for (uint64_t word = 0; word < pages->size(); ++word) {
    for (uint64_t bits = (*pages)[word]; bits != 0; bits &= bits - 1) {
      const uint64_t gpa = (word * 64 + static_cast<uint64_t>(__builtin_ctzll(bits))) * 4096;
      const uint8_t* src = memory.HostPtr(gpa, 4096);
      if (::pwrite(fd, src, 4096, static_cast<off_t>(gpa)) != 4096) {
        return Status::Error(fmt::format("copying guest memory: {}", std::strerror(errno)));
      }
    }
  }
  return Status::Ok();
}

// The live VMs of this process, whose memory is promised: guests touch their memory lazily, so
// MemAvailable alone would let many VMs be created that could not all be backed later. A plain
// VM is charged its whole memory; a copy-on-write VM what it has written (Vm::ChargedBytes).
// The mutex also orders a VM's memory remapping against another thread's charge scan.
std::mutex g_committed_mu;
std::vector<const Vm*> g_live_vms;  // guarded by g_committed_mu
// Frozen images, charged once each for as long as any VM (or suspended child's owner) holds one.
std::vector<std::weak_ptr<const FrozenImage>> g_images;  // guarded by g_committed_mu

uint64_t FileBytes(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

uint64_t CommittedBytesLocked() {
  uint64_t total = 0;
  for (const Vm* vm : g_live_vms) total += vm->ChargedBytesLocked();
  std::erase_if(g_images, [](const auto& w) { return w.expired(); });
  for (const auto& w : g_images) {
    if (auto image = w.lock()) total += FileBytes(image->fd.get());
  }
  return total;
}

}  // namespace

const char* VmStateName(VmState state) {
  switch (state) {
    case VmState::kCreated:
      return "created";
    case VmState::kRunning:
      return "running";
    case VmState::kPaused:
      return "paused";
    case VmState::kStopping:
      return "stopping";
    case VmState::kStopped:
      return "stopped";
    case VmState::kDestroyed:
      return "destroyed";
  }
  return "?";
}

const char* VmExitReasonName(VmExitReason reason) {
  switch (reason) {
    case VmExitReason::kNone:
      return "none";
    case VmExitReason::kDebugExit:
      return "debug-exit";
    case VmExitReason::kGuestShutdown:
      return "guest-shutdown";
    case VmExitReason::kForced:
      return "forced";
    case VmExitReason::kError:
      return "error";
  }
  return "?";
}

Result<std::unique_ptr<Vm>> Vm::Create(const VmOptions& options) {
  return CreateVm(options, Origin::kBoot);
}

Status Vm::LoadBootImage() {
  const VmOptions& options = options_;
  // Validate the image before any KVM work: a bad image is the commonest mistake.
  auto bytes = ReadImageFile(options.image);
  if (!bytes) return Status::Error(fmt::format("vm '{}': {}", options.name, bytes.message()));
  auto refuse = [&](const std::string& why) {
    return Status::Error(fmt::format("vm '{}': {}", options.name, why));
  };
  bool is_elf = bytes->size() >= SELFMAG && std::memcmp(bytes->data(), ELFMAG, SELFMAG) == 0;
  if (!is_elf && LooksLikeBzImage(*bytes)) {
    if (options.boot == BootProtocol::kPvh) {
      return refuse(
          fmt::format("image '{}': PVH boot needs an ELF image, this is a bzImage", options.image));
    }
    auto bz = ParseBzImage(*bytes, options.memory_bytes, options.image);
    if (!bz) return refuse(bz.message());
    bzimage_ = std::move(bz).value();
  } else {
    auto image = ParseElf(*bytes, options.memory_bytes, options.image);
    if (!image) return refuse(image.message());
    if (options.boot == BootProtocol::kPvh && !image->pvh_entry) {
      return refuse(
          fmt::format("image '{}': PVH boot asked for but the image has no "
                      "XEN_ELFNOTE_PHYS32_ENTRY note",
                      options.image));
    }
    image_ = std::move(image).value();
  }
  image_bytes_ = std::move(bytes).value();
  if (!options.initrd.empty()) {
    auto initrd = ReadImageFile(options.initrd);
    if (!initrd) return refuse("initrd: " + initrd.message());
    initrd_bytes_ = std::move(initrd).value();
  }
  image_loaded_ = true;
  return Status::Ok();
}

Result<std::unique_ptr<Vm>> Vm::CreateVm(const VmOptions& options, Origin origin) {
  const bool load_image = origin == Origin::kBoot;
  const bool copy_on_write = origin == Origin::kCopyOnWrite;
  int64_t t0 = NowNs();
  if (Status s = ValidateVmOptions(options); !s) return s;
  auto host = ReadHostResources(options.meminfo_path);
  if (!host) return host.status();
  std::unique_ptr<Vm> vm;
  {
    std::lock_guard lock(g_committed_mu);
    std::optional<uint64_t> charge;
    if (copy_on_write) charge = kCopyOnWriteReserveBytes;
    if (Status s = CheckHostResources(options, *host, CommittedBytesLocked(), charge); !s) {
      return s;
    }
    vm.reset(new Vm(options));
    vm->copy_on_write_ = copy_on_write;  // charged by what it writes from the start
    g_live_vms.push_back(vm.get());    // removed by Destroy()
  }
  vm->created_ns_ = t0;
  if (load_image) {
    if (Status s = vm->LoadBootImage(); !s) return s;
  }

  auto fail = [&](const std::string& what) {
    return Status::Error(fmt::format("vm '{}': {}: {}", options.name, what, std::strerror(errno)));
  };
  auto kvm = Kvm::Open();
  if (!kvm) return Status::Error(fmt::format("vm '{}': {}", options.name, kvm.message()));
  vm->kvm_ = std::move(kvm).value();
  auto vm_fd = vm->kvm_.CreateVmFd();
  if (!vm_fd) return Status::Error(fmt::format("vm '{}': {}", options.name, vm_fd.message()));
  vm->vm_fd_ = std::move(vm_fd).value();
  const int fd = vm->vm_fd_.get();
  if (::ioctl(fd, KVM_SET_TSS_ADDR, kKvmTssAddr) != 0) return fail("KVM_SET_TSS_ADDR");
  if (::ioctl(fd, KVM_CREATE_IRQCHIP, 0) != 0) return fail("KVM_CREATE_IRQCHIP");
  kvm_pit_config pit{};
  // SAFETY: pit is a zeroed kvm_pit_config (size checked in kvm_abi.h) the kernel only reads.
  if (::ioctl(fd, KVM_CREATE_PIT2, &pit) != 0) return fail("KVM_CREATE_PIT2");

  auto mem =
      GuestMemory::Create("qv-" + options.name, options.memory_bytes, options.prefault_memory);
  if (!mem) return Status::Error(fmt::format("vm '{}': {}", options.name, mem.message()));
  vm->memory_ = std::move(mem).value();
  if (Status s = vm->SetMemoryRegion(0); !s) return s;

  auto serial = Serial::Create(options.name, options.serial_log, options.serial_console,
                               options.serial_log_max_bytes);
  if (!serial) return serial.status();
  vm->serial_ = std::move(serial).value();
  Vm* self = vm.get();
  vm->debug_exit_ = std::make_unique<DebugExit>([self](uint32_t code) {
    self->RequestStop(VmExitReason::kDebugExit, code, fmt::format("guest exit code {}", code));
  });
  if (Status s = vm->pio_.Register(Serial::kPortBase, Serial::kPortCount, vm->serial_.get()); !s) {
    return s;
  }
  if (Status s =
          vm->pio_.Register(DebugExit::kPortBase, DebugExit::kPortCount, vm->debug_exit_.get());
      !s) {
    return s;
  }

  vm->guest_cmdline_ = options.cmdline;
  if (options.disk) {
    auto disk = VirtioBlk::Create(vm->memory_, *options.disk);
    if (!disk) return Status::Error(fmt::format("vm '{}': {}", options.name, disk.message()));
    vm->disk_ = std::move(disk).value();
    if (Status s = vm->AddVirtio(vm->disk_.get()); !s) return s;
  }
  for (const auto& nic_options : options.nics) {
    vm->nics_.push_back(std::make_unique<VirtioNet>(vm->memory_, nic_options));
    VirtioNet* nic = vm->nics_.back().get();
    if (Status s = vm->AddVirtio(nic); !s) return s;
    for (uint16_t q : {VirtioNet::kRxQueue, VirtioNet::kTxQueue}) {
      kvm_ioeventfd ioev{};
      ioev.datamatch = q;
      ioev.addr = nic->base() + 0x50;  // QueueNotify
      ioev.len = 4;
      ioev.fd = nic->notify_fd(q);
      ioev.flags = KVM_IOEVENTFD_FLAG_DATAMATCH;
      // SAFETY: ioev is a fully initialized kvm_ioeventfd (size checked in kvm_abi.h), read only.
      if (::ioctl(fd, KVM_IOEVENTFD, &ioev) != 0) return fail("KVM_IOEVENTFD");
    }
  }

  for (uint32_t i = 0; i < options.vcpus; ++i) {
    auto vcpu = Vcpu::Create(self, vm->kvm_, fd, i, options.vcpus);
    if (!vcpu) return Status::Error(fmt::format("vm '{}': {}", options.name, vcpu.message()));
    vm->vcpus_.push_back(std::move(vcpu).value());
  }
  return vm;
}

Vm::~Vm() {
  if (state() != VmState::kDestroyed) (void)Destroy();
}

Status Vm::Refuse(const char* transition, const char* allowed) const {
  return Status::Error(fmt::format("vm '{}': cannot {}: the vm is {} ({} needs {})", options_.name,
                                   transition, VmStateName(state_), transition, allowed));
}

Status Vm::AddPioDevice(uint64_t base, uint64_t size, Device* device) {
  std::lock_guard lock(mu_);
  if (state_ != VmState::kCreated) return Refuse("add a device", "created");
  return pio_.Register(base, size, device);
}

Status Vm::AddMmioDevice(uint64_t base, uint64_t size, Device* device) {
  std::lock_guard lock(mu_);
  if (state_ != VmState::kCreated) return Refuse("add a device", "created");
  return mmio_.Register(base, size, device);
}

Status Vm::SetMemoryRegion(uint32_t flags) {
  kvm_userspace_memory_region region{};
  region.slot = 0;
  region.flags = flags;
  region.guest_phys_addr = 0;
  region.memory_size = memory_.size();
  // SAFETY: the whole GuestMemory mapping; Destroy() closes the VM fd before unmapping it.
  region.userspace_addr = reinterpret_cast<uint64_t>(memory_.host_base());
  // SAFETY: region is a fully initialized kvm_userspace_memory_region the kernel only reads.
  if (::ioctl(vm_fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0) {
    return Status::Error(fmt::format("vm '{}': KVM_SET_USER_MEMORY_REGION: {}", options_.name,
                                     std::strerror(errno)));
  }
  return Status::Ok();
}

uint64_t Vm::ChargedBytes() const {
  std::lock_guard committed(g_committed_mu);
  return ChargedBytesLocked();
}

uint64_t Vm::ChargedBytesLocked() const {
  // g_committed_mu orders this against the remapping below.
  if (!copy_on_write_) return options_.memory_bytes;
  auto written = memory_.PrivateBytes();
  return kCopyOnWriteReserveBytes + (written ? *written : options_.memory_bytes);
}

uint64_t Vm::CommittedBytes() {
  std::lock_guard committed(g_committed_mu);
  return CommittedBytesLocked();
}

Status Vm::MapMemoryPrivate(UniqueFd fd) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) < memory_.size()) {
    return Status::Error(
        fmt::format("vm '{}': memory image is smaller than the VM's memory", options_.name));
  }
  std::lock_guard committed(g_committed_mu);
  if (Status s = memory_.RebaseOnto(std::move(fd)); !s) return s;
  copy_on_write_ = true;
  return Status::Ok();
}

Result<std::shared_ptr<const FrozenImage>> Vm::FreezeMemory() {
  auto image = std::make_shared<FrozenImage>();
  image->size = memory_.size();
  image->id = fmt::format("{:016x}", RandomNonZero64());
  std::lock_guard committed(g_committed_mu);
  if (memory_.shared()) {
    // The memfd itself becomes the image: nothing is copied.
    if (Status s = memory_.Freeze(); !s) return s;
    image->fd = UniqueFd(::fcntl(memory_.memfd(), F_DUPFD_CLOEXEC, 0));
  } else {
    // Already a private view (restored, a child, or forked before): copy what it shows into a
    // new memfd and go on over that. Costs the bytes it holds, not its size.
    UniqueFd fd(::memfd_create(("qv-frozen-" + options_.name).c_str(), MFD_CLOEXEC));
    if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(memory_.size())) != 0) {
      return Status::Error(
          fmt::format("vm '{}': frozen image: {}", options_.name, std::strerror(errno)));
    }
    if (Status s = CopyPopulatedPages(memory_, fd.get()); !s) return s;
    image->fd = UniqueFd(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
    if (Status s = memory_.RebaseOnto(std::move(fd)); !s) return s;
  }
  if (!image->fd.valid()) {
    return Status::Error(
        fmt::format("vm '{}': dup frozen image: {}", options_.name, std::strerror(errno)));
  }
  copy_on_write_ = true;
  base_image_ = image;
  g_images.push_back(image);
  return std::shared_ptr<const FrozenImage>(image);
}

std::shared_ptr<const FrozenImage> Vm::base_image() const {
  std::lock_guard committed(g_committed_mu);
  return base_image_;
}

Status Vm::SetDirtyLogging(bool on) {
  std::lock_guard lock(mu_);
  if (state_ == VmState::kDestroyed) return Refuse("track dirty pages", "any state but destroyed");
  return SetMemoryRegion(on ? KVM_MEM_LOG_DIRTY_PAGES : 0);
}

Result<std::vector<uint64_t>> Vm::TakeDirtyLog() {
  std::lock_guard lock(mu_);
  if (state_ == VmState::kDestroyed) return Refuse("read dirty pages", "any state but destroyed");
  std::vector<uint64_t> bitmap((memory_.size() / 4096 + 63) / 64, 0);
  kvm_dirty_log log{};
  log.slot = 0;
  log.dirty_bitmap = bitmap.data();
  // SAFETY: bitmap has one bit per page of slot 0 (rounded up to 64), which the kernel fills.
  if (::ioctl(vm_fd_.get(), KVM_GET_DIRTY_LOG, &log) != 0) {
    return Status::Error(fmt::format("vm '{}': KVM_GET_DIRTY_LOG (is logging on?): {}",
                                     options_.name, std::strerror(errno)));
  }
  return bitmap;
}

Status Vm::AddVirtio(VirtioMmioDevice* device) {
  uint32_t n = static_cast<uint32_t>(virtio_.size());
  if (n == kMaxVirtioDevices) {
    return Status::Error(
        fmt::format("vm '{}': more than {} virtio devices", options_.name, kMaxVirtioDevices));
  }
  uint64_t base = kVirtioMmioBase + n * VirtioMmioDevice::kRegionSize;
  uint32_t gsi = kVirtioFirstGsi + n;
  if (Status s = mmio_.Register(base, VirtioMmioDevice::kRegionSize, device); !s) return s;
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(device->irq_fd());
  irqfd.gsi = gsi;
  // SAFETY: irqfd is a fully initialized kvm_irqfd (size checked in kvm_abi.h), read only.
  if (::ioctl(vm_fd_.get(), KVM_IRQFD, &irqfd) != 0) {
    return Status::Error(
        fmt::format("vm '{}': KVM_IRQFD gsi {}: {}", options_.name, gsi, std::strerror(errno)));
  }
  device->SetPlacement(base, gsi);
  virtio_.push_back(device);
  guest_cmdline_ +=
      fmt::format("{}virtio_mmio.device=4K@{:#x}:{}", guest_cmdline_.empty() ? "" : " ", base, gsi);
  return Status::Ok();
}

Status Vm::ResetForStart() {
  for (auto* d : virtio_) d->Reset();
  if (ran_) {
    // A restart boots from scratch: fresh zeroed memory, fresh log, APs back in wait-for-SIPI.
    {
      std::lock_guard committed(g_committed_mu);
      if (Status s = memory_.Clear(); !s) return s;
      copy_on_write_ = false;  // its own memory now, charged in full
      base_image_.reset();
    }
    serial_->Reset();
    for (size_t i = 1; i < vcpus_.size(); ++i) {
      if (Status s = vcpus_[i]->ResetApState(); !s) return s;
    }
  }
  if (!image_loaded_) {
    // A restored or forked VM restarted from scratch boots its image like any other.
    if (Status s = LoadBootImage(); !s) return s;
  }
  uint64_t kernel_end = 0;
  if (bzimage_) {
    uint8_t* dst = memory_.HostPtr(kKernelLoadGpa, bzimage_->payload_size);
    if (dst == nullptr) return Status::Error("kernel does not fit in guest memory");
    std::memcpy(dst, image_bytes_.data() + bzimage_->payload_offset, bzimage_->payload_size);
    // The kernel decompresses in place and needs init_size bytes from its load address.
    uint32_t init_size = 0;
    if (bzimage_->setup_header.size() >= 0x264 - 0x1f1) {
      std::memcpy(&init_size, bzimage_->setup_header.data() + (0x260 - 0x1f1), 4);
    }
    kernel_end = kKernelLoadGpa + std::max<uint64_t>(bzimage_->payload_size, init_size);
  } else {
    if (Status s = CopyElfToGuest(image_, image_bytes_, memory_); !s) return s;
    kernel_end = image_.highest_gpa();
  }
  if (Status s = WriteBootArea(memory_, guest_cmdline_, vcpus_[0]->TscKhz()); !s) return s;
  if (Status s = WriteMpTable(memory_, static_cast<uint32_t>(vcpus_.size())); !s) return s;
  std::optional<InitrdPlacement> initrd;
  if (!initrd_bytes_.empty()) {
    auto placed = PlaceInitrd(initrd_bytes_.size(), memory_.size(), kernel_end,
                              bzimage_ ? bzimage_->initrd_addr_max : 0);
    if (!placed) return placed.status();
    initrd = *placed;
    if (!memory_.Write(initrd->gpa, initrd_bytes_.data(), initrd_bytes_.size())) {
      return Status::Error("initrd does not fit in guest memory");
    }
  }
  if (options_.boot == BootProtocol::kPvh) {
    if (Status s = WritePvhStartInfo(memory_, initrd); !s) return s;
    return ConfigurePvhVcpu(vcpus_[0]->fd(), *image_.pvh_entry);
  }
  std::span<const uint8_t> header;
  if (bzimage_) header = bzimage_->setup_header;
  if (Status s =
          WriteZeroPage(memory_, static_cast<uint32_t>(guest_cmdline_.size()), initrd, header);
      !s) {
    return s;
  }
  return ConfigureLongModeVcpu(vcpus_[0]->fd(), bzimage_ ? bzimage_->entry : image_.entry);
}

Status Vm::Start() {
  std::unique_lock lock(mu_);
  if (state_ != VmState::kCreated && state_ != VmState::kStopped) {
    return Refuse("start", "created or stopped");
  }
  lock.unlock();
  JoinAll();  // threads of a run that ended by itself
  if (Status s = ResetForStart(); !s) {
    return Status::Error(fmt::format("vm '{}': start: {}", options_.name, s.message()));
  }
  lock.lock();
  BeginRunLocked(VcpuCommand::kRun, VmState::kRunning);
  lock.unlock();
  for (auto& v : vcpus_) v->StartThread();
  return Status::Ok();
}

void Vm::BeginRunLocked(VcpuCommand command, VmState state) {
  ran_ = true;
  exit_ = VmExit{};
  paused_vcpus_ = 0;
  exited_vcpus_ = 0;
  command_.store(command);
  state_ = state;
}

Status Vm::Pause() {
  std::unique_lock lock(mu_);
  if (state_ != VmState::kRunning) return Refuse("pause", "running");
  command_.store(VcpuCommand::kPause);
  KickAll();
  const uint32_t n = static_cast<uint32_t>(vcpus_.size());
  cv_.wait(lock, [&] { return paused_vcpus_ + exited_vcpus_ >= n; });
  if (exited_vcpus_ == n) {
    return Status::Error(
        fmt::format("vm '{}': cannot pause: the guest stopped ({})", options_.name, exit_.detail));
  }
  state_ = VmState::kPaused;
  for (auto* d : virtio_) d->SetQuiesced(true);
  return Status::Ok();
}

Status Vm::Resume() {
  std::lock_guard lock(mu_);
  if (state_ != VmState::kPaused) return Refuse("resume", "paused");
  for (auto* d : virtio_) d->SetQuiesced(false);
  command_.store(VcpuCommand::kRun);
  state_ = VmState::kRunning;
  cv_.notify_all();
  return Status::Ok();
}

Result<VmExit> Vm::Stop(std::optional<std::chrono::milliseconds> timeout) {
  std::unique_lock lock(mu_);
  if (state_ != VmState::kRunning && state_ != VmState::kPaused) {
    return Refuse("stop", "running or paused");
  }
  state_ = VmState::kStopping;
  // Ask first, then let a paused guest run so it can see the request. Only a pause is undone:
  // a stop the guest requested meanwhile (kStop) must stand.
  (void)memory_.StoreAtomic<uint64_t>(QV_BOOT_INFO_GPA + offsetof(qv_boot_info, shutdown_request),
                                      1);  // in bounds: guest memory is at least 2 MiB
  VcpuCommand paused = VcpuCommand::kPause;
  command_.compare_exchange_strong(paused, VcpuCommand::kRun);
  cv_.notify_all();
  const uint32_t n = static_cast<uint32_t>(vcpus_.size());
  bool graceful = cv_.wait_for(lock, timeout.value_or(options_.shutdown_timeout),
                               [&] { return exited_vcpus_ == n; });
  lock.unlock();
  if (!graceful) {
    ForceStopAndJoin(fmt::format("guest did not shut down within {} ms",
                                 timeout.value_or(options_.shutdown_timeout).count()));
  }
  JoinAll();
  serial_->Flush();
  for (auto* d : virtio_) {
    d->Reset();
    d->SetQuiesced(false);
  }
  lock.lock();
  state_ = VmState::kStopped;
  return exit_;
}

Status Vm::Destroy() {
  std::unique_lock lock(mu_);
  if (state_ == VmState::kDestroyed) return Refuse("destroy", "any state but destroyed");
  bool live =
      state_ == VmState::kRunning || state_ == VmState::kPaused || state_ == VmState::kStopping;
  lock.unlock();
  if (live) ForceStopAndJoin("destroyed while running");
  JoinAll();
  if (serial_) serial_->Flush();
  // The VM fd goes first: KVM must drop its use of guest memory before the mapping goes.
  vcpus_.clear();
  vm_fd_.Reset();
  virtio_.clear();
  disk_.reset();
  nics_.clear();
  {
    std::lock_guard committed(g_committed_mu);
    memory_ = GuestMemory();
    base_image_.reset();
    std::erase(g_live_vms, this);
  }
  lock.lock();
  state_ = VmState::kDestroyed;
  return Status::Ok();
}

std::optional<VmExit> Vm::WaitForExit(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  const uint32_t n = static_cast<uint32_t>(vcpus_.size());
  if (state_ == VmState::kCreated || state_ == VmState::kDestroyed) return std::nullopt;
  if (!cv_.wait_for(lock, timeout, [&] { return exited_vcpus_ == n; })) return std::nullopt;
  return exit_;
}

VmState Vm::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

VmExit Vm::last_exit() const {
  std::lock_guard lock(mu_);
  return exit_;
}

uint64_t Vm::exits() const {
  uint64_t total = 0;
  for (const auto& v : vcpus_) total += v->exits();
  return total;
}

VcpuCommand Vm::WaitWhilePaused() {
  VcpuCommand c = command_.load();
  if (c != VcpuCommand::kPause) return c;
  std::unique_lock lock(mu_);
  if (command_.load() != VcpuCommand::kPause) return command_.load();
  ++paused_vcpus_;
  cv_.notify_all();
  cv_.wait(lock, [&] { return command_.load() != VcpuCommand::kPause; });
  --paused_vcpus_;
  return command_.load();
}

void Vm::RequestStop(VmExitReason reason, uint32_t code, std::string detail) {
  {
    std::lock_guard lock(mu_);
    if (exit_.reason == VmExitReason::kNone) exit_ = VmExit{reason, code, std::move(detail)};
    command_.store(VcpuCommand::kStop);
    cv_.notify_all();
  }
  KickAll();
}

void Vm::OnVcpuThreadExit(uint32_t /*index*/) {
  std::lock_guard lock(mu_);
  ++exited_vcpus_;
  if (exited_vcpus_ == vcpus_.size()) {
    // A guest that ended by itself: the lifecycle follows without a Stop() call.
    if (state_ == VmState::kRunning || state_ == VmState::kPaused) state_ = VmState::kStopped;
  } else if (command_.load() != VcpuCommand::kStop) {
    // One vCPU ending ends the VM: the others would run a guest missing a CPU.
    command_.store(VcpuCommand::kStop);
    for (auto& v : vcpus_) v->Kick();
  }
  cv_.notify_all();
}

void Vm::KickAll() {
  for (auto& v : vcpus_) v->Kick();
}

void Vm::ForceStopAndJoin(const std::string& detail) {
  RequestStop(VmExitReason::kForced, 0, detail);
  JoinAll();
}

void Vm::JoinAll() {
  for (auto& v : vcpus_) v->Join();
}

}  // namespace qosvisor::hv
