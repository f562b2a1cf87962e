// One virtual CPU: its KVM fd, the shared kvm_run area, and the thread running the exit loop
// (one switch on the exit reason; port I/O and MMIO go to the VM's buses).
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "common/status.h"
#include "hv/kvm.h"

namespace qosvisor::hv {

class Vm;

class Vcpu {
 public:
  static Result<std::unique_ptr<Vcpu>> Create(Vm* vm, const Kvm& kvm, int vm_fd, uint32_t index,
                                              uint32_t vcpu_count);
  ~Vcpu();
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;

  uint32_t index() const { return index_; }
  int fd() const { return fd_.get(); }
  uint64_t exits() const { return exits_.load(std::memory_order_relaxed); }

  void StartThread();
  void Join();
  // Makes the thread leave KVM_RUN soon (or not enter it) so it sees a new command.
  void Kick();
  // Puts an application processor back in wait-for-SIPI (restart).
  Status ResetApState();
  // The host's TSC frequency as KVM gives it to this vCPU; 0 if unknown.
  uint64_t TscKhz() const;

 private:
  Vcpu(Vm* vm, uint32_t index) : vm_(vm), index_(index) {}
  Status SetCpuid(const std::vector<kvm_cpuid_entry2>& supported, uint32_t vcpu_count);
  void Loop();
  // Handles the exit in run_; false when the vCPU must stop.
  bool HandleExit();
  // Confines this thread (vcpu_seccomp.h); false (the VM stopped) if that failed.
  bool Confine();
  // Stops the VM if the thread attempted a forbidden system call; true if it did.
  bool StoppedForViolation();

  Vm* vm_;
  uint32_t index_;
  UniqueFd fd_;
  kvm_run* run_ = nullptr;
  size_t run_size_ = 0;
  std::thread thread_;
  std::atomic<pthread_t> thread_handle_{};
  std::atomic<bool> thread_live_{false};
  std::atomic<uint64_t> exits_{0};
  std::atomic<long> seccomp_violation_{0};  // the first forbidden call's number, set on SIGSYS
};

}  // namespace qosvisor::hv
