// The vCPU exit loop and the kick that gets a vCPU out of KVM_RUN (signal + immediate_exit).
// Guest-controlled exit data is range-checked before the buses see it.
#include "hv/vcpu.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>

#include "hv/vcpu_seccomp.h"
#include "hv/vm.h"

namespace qosvisor::hv {
namespace {

int KickSignal() { return SIGRTMIN + 6; }

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    // An empty handler: its only job is to make KVM_RUN return EINTR (no SA_RESTART).
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sigaction(KickSignal(), &sa, nullptr);
  });
}

}  // namespace

Result<std::unique_ptr<Vcpu>> Vcpu::Create(Vm* vm, const Kvm& kvm, int vm_fd, uint32_t index,
                                           uint32_t vcpu_count) {
  InstallKickHandler();
  std::unique_ptr<Vcpu> v(new Vcpu(vm, index));
  v->fd_ = UniqueFd(::ioctl(vm_fd, KVM_CREATE_VCPU, static_cast<unsigned long>(index)));
  if (!v->fd_.valid()) {
    return Status::Error(fmt::format("KVM_CREATE_VCPU {}: {}", index, std::strerror(errno)));
  }
  v->run_size_ = static_cast<size_t>(kvm.vcpu_mmap_size());
  // SAFETY: maps the vCPU's kvm_run area, of the size KVM_GET_VCPU_MMAP_SIZE reported; it stays
  // mapped until the destructor, after the thread using it was joined.
  void* p = ::mmap(nullptr, v->run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd_.get(), 0);
  if (p == MAP_FAILED) {
    return Status::Error(fmt::format("mmap kvm_run of vcpu {}: {}", index, std::strerror(errno)));
  }
  v->run_ = static_cast<kvm_run*>(p);
  if (Status s = v->SetCpuid(kvm.supported_cpuid(), vcpu_count); !s) return s;
  return v;
}

Vcpu::~Vcpu() {
  Join();
  // SAFETY: run_/run_size_ are the mapping made in Create; no thread uses it any more.
  if (run_ != nullptr) ::munmap(run_, run_size_);
}

Status Vcpu::SetCpuid(const std::vector<kvm_cpuid_entry2>& supported, uint32_t vcpu_count) {
  std::vector<kvm_cpuid_entry2> entries = supported;
  for (auto& e : entries) {
    if (e.function == 1) {
      e.ebx = (e.ebx & 0x0000ffff) | (std::min(vcpu_count, 255u) << 16) | (index_ << 24);
      e.ecx |= 1u << 31;  // running under a hypervisor
    } else if (e.function == 0xb || e.function == 0x1f) {
      e.edx = index_;  // x2APIC id
    }
  }
  std::vector<uint8_t> buf(sizeof(KvmCpuidHeader) + entries.size() * sizeof(kvm_cpuid_entry2));
  KvmCpuidHeader header{static_cast<uint32_t>(entries.size()), 0};
  std::memcpy(buf.data(), &header, sizeof(header));
  std::memcpy(buf.data() + sizeof(header), entries.data(),
              entries.size() * sizeof(kvm_cpuid_entry2));
  // SAFETY: buf holds a C-layout kvm_cpuid2 header followed by header.nent entries, and the ioctl
  // number was built for that header size (kvm_abi.h).
  if (::ioctl(fd_.get(), kKvmSetCpuid2, buf.data()) != 0) {
    return Status::Error(fmt::format("KVM_SET_CPUID2 vcpu {}: {}", index_, std::strerror(errno)));
  }
  return Status::Ok();
}

uint64_t Vcpu::TscKhz() const {
  int khz = ::ioctl(fd_.get(), KVM_GET_TSC_KHZ, 0);
  return khz > 0 ? static_cast<uint64_t>(khz) : 0;
}

Status Vcpu::ResetApState() {
  kvm_mp_state mp{};
  mp.mp_state = KVM_MP_STATE_UNINITIALIZED;
  // SAFETY: mp is a kvm_mp_state the kernel only reads.
  if (::ioctl(fd_.get(), KVM_SET_MP_STATE, &mp) != 0) {
    return Status::Error(fmt::format("KVM_SET_MP_STATE vcpu {}: {}", index_, std::strerror(errno)));
  }
  return Status::Ok();
}

void Vcpu::StartThread() {
  Join();
  thread_live_.store(true);
  thread_ = std::thread([this] {
    thread_handle_.store(pthread_self());
    // "<vm>/vcpu<i>" in top and gdb; the kernel keeps 15 characters.
    std::string name = fmt::format("{}/vcpu{}", vm_->name(), index_).substr(0, 15);
    pthread_setname_np(pthread_self(), name.c_str());
    if (Confine()) Loop();
    thread_live_.store(false);
    vm_->OnVcpuThreadExit(index_);
  });
}

bool Vcpu::Confine() {
  seccomp_violation_.store(0);
  if (Status s = ConfineVcpuThread(&seccomp_violation_); !s.ok()) {
    vm_->RequestStop(VmExitReason::kError, 0,
                     fmt::format("vcpu {}: cannot confine its thread: {}", index_, s.message()));
    return false;
  }
  if (const auto& hook = vm_->options().vcpu_thread_test_hook) hook(index_);
  return true;
}

bool Vcpu::StoppedForViolation() {
  const long nr = seccomp_violation_.load(std::memory_order_relaxed);
  if (nr == 0) return false;
  vm_->RequestStop(VmExitReason::kError, 0,
                   fmt::format("vcpu {}: forbidden system call {} (not allowed to vCPU threads); "
                               "the VM was stopped",
                               index_, SyscallName(nr)));
  return true;
}

void Vcpu::Join() {
  if (thread_.joinable()) thread_.join();
}

void Vcpu::Kick() {
  // Order matters: the command was published before this; immediate_exit covers the window in
  // which the thread is about to enter KVM_RUN, the signal the time it spends inside.
  __atomic_store_n(&run_->immediate_exit, 1, __ATOMIC_SEQ_CST);
  if (thread_live_.load()) {
    pthread_t t = thread_handle_.load();
    if (t != pthread_t{}) pthread_kill(t, KickSignal());
  }
}

void Vcpu::Loop() {
  while (!StoppedForViolation()) {
    __atomic_store_n(&run_->immediate_exit, 0, __ATOMIC_SEQ_CST);
    if (vm_->WaitWhilePaused() == VcpuCommand::kStop) return;
    // SAFETY: KVM_RUN takes no pointer argument; the run area it fills is mapped for our lifetime.
    int r = ::ioctl(fd_.get(), KVM_RUN, 0);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      vm_->RequestStop(VmExitReason::kError, 0,
                       fmt::format("vcpu {}: KVM_RUN: {}", index_, std::strerror(errno)));
      return;
    }
    exits_.fetch_add(1, std::memory_order_relaxed);
    if (!HandleExit()) return;
  }
}

bool Vcpu::HandleExit() {
  switch (run_->exit_reason) {
    case KVM_EXIT_IO: {
      auto& io = run_->io;
      uint64_t bytes = uint64_t{io.size} * io.count;
      if (io.size == 0 || io.size > 4 || io.data_offset > run_size_ ||
          bytes > run_size_ - io.data_offset) {
        vm_->RequestStop(VmExitReason::kError, 0,
                         fmt::format("vcpu {}: malformed port I/O exit", index_));
        return false;
      }
      // SAFETY: [data_offset, data_offset + size * count) was checked to lie inside the run area.
      uint8_t* data = reinterpret_cast<uint8_t*>(run_) + io.data_offset;
      for (uint32_t i = 0; i < io.count; ++i) {
        std::span<uint8_t> d(data + uint64_t{i} * io.size, io.size);
        if (io.direction == KVM_EXIT_IO_OUT) {
          vm_->pio_bus().Write(io.port, d);
        } else {
          vm_->pio_bus().Read(io.port, d);
        }
      }
      return true;
    }
    case KVM_EXIT_MMIO: {
      auto& m = run_->mmio;
      if (m.len == 0 || m.len > sizeof(m.data)) return true;  // ignore a malformed access
      if (m.is_write) {
        vm_->mmio_bus().Write(m.phys_addr, std::span<const uint8_t>(m.data, m.len));
      } else {
        vm_->mmio_bus().Read(m.phys_addr, std::span<uint8_t>(m.data, m.len));
      }
      return true;
    }
    case KVM_EXIT_INTR:
      return true;
    case KVM_EXIT_HLT:
      vm_->RequestStop(VmExitReason::kGuestShutdown, 0, fmt::format("vcpu {} halted", index_));
      return false;
    case KVM_EXIT_SHUTDOWN:
      vm_->RequestStop(VmExitReason::kGuestShutdown, 0,
                       fmt::format("vcpu {}: triple fault (KVM_EXIT_SHUTDOWN)", index_));
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      vm_->RequestStop(VmExitReason::kGuestShutdown, 0,
                       fmt::format("vcpu {}: system event {}", index_, run_->system_event.type));
      return false;
    case KVM_EXIT_FAIL_ENTRY:
      vm_->RequestStop(VmExitReason::kError, 0,
                       fmt::format("vcpu {}: entry failed, hardware reason {:#x}", index_,
                                   run_->fail_entry.hardware_entry_failure_reason));
      return false;
    case KVM_EXIT_INTERNAL_ERROR:
      vm_->RequestStop(
          VmExitReason::kError, 0,
          fmt::format("vcpu {}: KVM internal error, suberror {}", index_, run_->internal.suberror));
      return false;
    default:
      vm_->RequestStop(VmExitReason::kError, 0,
                       fmt::format("vcpu {}: unhandled exit reason {}", index_, run_->exit_reason));
      return false;
  }
}

}  // namespace qosvisor::hv
