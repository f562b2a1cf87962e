// The KVM system handle (/dev/kvm): API version check, capabilities and the host-wide facts that
// every VM needs (supported CPUID, size of the vCPU run area).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "hv/kvm_abi.h"
#include "hv/unique_fd.h"

namespace qosvisor::hv {

inline constexpr const char* kKvmDevice = "/dev/kvm";

class Kvm {
 public:
  // Opens /dev/kvm and checks the API version; the error says why KVM is unusable.
  static Result<Kvm> Open(const std::string& device = kKvmDevice);
  // Empty when KVM can be used here, else the reason (for tests that skip).
  static std::string UnavailableReason(const std::string& device = kKvmDevice);

  int fd() const { return fd_.get(); }
  int CheckExtension(long cap) const;
  int vcpu_mmap_size() const { return vcpu_mmap_size_; }
  const std::vector<kvm_cpuid_entry2>& supported_cpuid() const { return supported_cpuid_; }

  // A new VM fd.
  Result<UniqueFd> CreateVmFd() const;

 private:
  UniqueFd fd_;
  int vcpu_mmap_size_ = 0;
  std::vector<kvm_cpuid_entry2> supported_cpuid_;
};

}  // namespace qosvisor::hv
