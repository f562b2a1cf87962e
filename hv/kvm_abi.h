// The KVM ioctl ABI as this code uses it: <linux/kvm.h> plus our own definitions where that header
// compiled as C++ disagrees with the kernel (notes/kvm.md: kvm_cpuid2 is 12 bytes in C++, not 8).
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace qosvisor::hv {

// Header of struct kvm_cpuid2 as the kernel (a C compiler) lays it out; the entries follow.
struct KvmCpuidHeader {
  uint32_t nent;
  uint32_t padding;
};
static_assert(sizeof(KvmCpuidHeader) == 8);

// Header of struct kvm_msrs (C size 8; C++ makes it 16 for the same reason).
struct KvmMsrsHeader {
  uint32_t nmsrs;
  uint32_t pad;
};
static_assert(sizeof(KvmMsrsHeader) == 8);

// Ioctl numbers encode the argument size, so the ones built from the C++-mis-sized structs are
// recomputed from our headers and checked against the values a C compiler produces.
inline constexpr unsigned long kKvmGetSupportedCpuid = _IOWR(KVMIO, 0x05, KvmCpuidHeader);
inline constexpr unsigned long kKvmSetCpuid2 = _IOW(KVMIO, 0x90, KvmCpuidHeader);
inline constexpr unsigned long kKvmSetMsrs = _IOW(KVMIO, 0x89, KvmMsrsHeader);
static_assert(kKvmGetSupportedCpuid == 0xc008ae05UL);
static_assert(kKvmSetCpuid2 == 0x4008ae90UL);
static_assert(kKvmSetMsrs == 0x4008ae89UL);

// Every other struct passed by pointer to an ioctl, checked against its C size on x86-64.
static_assert(sizeof(kvm_cpuid_entry2) == 40);
static_assert(sizeof(kvm_regs) == 144);
static_assert(sizeof(kvm_sregs) == 312);
static_assert(sizeof(kvm_segment) == 24);
static_assert(sizeof(kvm_userspace_memory_region) == 32);
static_assert(sizeof(kvm_pit_config) == 64);
static_assert(sizeof(kvm_irqfd) == 32);
static_assert(sizeof(kvm_ioeventfd) == 64);
static_assert(sizeof(kvm_irq_level) == 8);
static_assert(sizeof(kvm_run) == 2352);
static_assert(sizeof(kvm_msr_entry) == 16);
static_assert(sizeof(kvm_dirty_log) == 16);

}  // namespace qosvisor::hv
