// Opening /dev/kvm and querying what the host's KVM supports.
// Done once per VM; the results feed CPUID setup and vCPU mmaps.
#include "hv/kvm.h"

#include <fcntl.h>
#include <fmt/format.h>

#include <cerrno>
#include <cstring>

namespace qosvisor::hv {

std::string Kvm::UnavailableReason(const std::string& device) {
  auto kvm = Open(device);
  return kvm.ok() ? std::string() : kvm.message();
}

int Kvm::CheckExtension(long cap) const {
  int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

Result<Kvm> Kvm::Open(const std::string& device) {
  Kvm kvm;
  kvm.fd_ = UniqueFd(::open(device.c_str(), O_RDWR | O_CLOEXEC));
  if (!kvm.fd_.valid()) {
    return Status::Error(fmt::format("cannot open {}: {}", device, std::strerror(errno)));
  }
  int version = ::ioctl(kvm.fd(), KVM_GET_API_VERSION, 0);
  if (version < 0) {
    return Status::Error(fmt::format("{}: KVM_GET_API_VERSION: {} (is this a KVM device?)", device,
                                     std::strerror(errno)));
  }
  if (version != KVM_API_VERSION) {
    return Status::Error(
        fmt::format("{}: KVM API version {} (expected {})", device, version, KVM_API_VERSION));
  }
  for (long cap : {KVM_CAP_IRQCHIP, KVM_CAP_USER_MEMORY, KVM_CAP_IOEVENTFD, KVM_CAP_IRQFD,
                   KVM_CAP_PIT2, KVM_CAP_EXT_CPUID, KVM_CAP_IMMEDIATE_EXIT}) {
    if (kvm.CheckExtension(cap) <= 0) {
      return Status::Error(fmt::format("{}: required KVM capability {} is missing", device, cap));
    }
  }
  kvm.vcpu_mmap_size_ = ::ioctl(kvm.fd(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (kvm.vcpu_mmap_size_ < static_cast<int>(sizeof(kvm_run))) {
    return Status::Error(fmt::format("{}: KVM_GET_VCPU_MMAP_SIZE failed", device));
  }
  // The kernel says E2BIG until the buffer is large enough; start at a size that fits today's CPUs.
  for (uint32_t nent = 64; nent <= 4096; nent *= 2) {
    std::vector<uint8_t> buf(sizeof(KvmCpuidHeader) + nent * sizeof(kvm_cpuid_entry2));
    // SAFETY: buf is a byte vector sized for the header plus nent entries; headers are POD.
    auto* header = reinterpret_cast<KvmCpuidHeader*>(buf.data());
    header->nent = nent;
    // SAFETY: the kernel writes at most header->nent entries, which buf has room for.
    if (::ioctl(kvm.fd(), kKvmGetSupportedCpuid, buf.data()) == 0) {
      kvm.supported_cpuid_.resize(header->nent);
      std::memcpy(kvm.supported_cpuid_.data(), buf.data() + sizeof(KvmCpuidHeader),
                  header->nent * sizeof(kvm_cpuid_entry2));
      return kvm;
    }
    if (errno != E2BIG) break;
  }
  return Status::Error(
      fmt::format("{}: KVM_GET_SUPPORTED_CPUID failed: {}", device, std::strerror(errno)));
}

Result<UniqueFd> Kvm::CreateVmFd() const {
  // Retry on EINTR: the VM type argument 0 is the default x86 VM.
  int fd;
  do {
    fd = ::ioctl(fd_.get(), KVM_CREATE_VM, 0);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return Status::Error(fmt::format("KVM_CREATE_VM: {}", std::strerror(errno)));
  return UniqueFd(fd);
}

}  // namespace qosvisor::hv
