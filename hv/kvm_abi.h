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

// struct kvm_msr_list (C size 4) and struct kvm_xsave (C size 4096: C++ counts the empty
// flexible array `extra` as 4 bytes).
struct KvmMsrListHeader {
  uint32_t nmsrs;
};
static_assert(sizeof(KvmMsrListHeader) == 4);
struct KvmXsave {
  uint32_t region[1024];
};
static_assert(sizeof(KvmXsave) == 4096);

// Ioctl numbers encode the argument size, so the ones built from the C++-mis-sized structs are
// recomputed from our headers and checked against the values a C compiler produces.
inline constexpr unsigned long kKvmGetSupportedCpuid = _IOWR(KVMIO, 0x05, KvmCpuidHeader);
inline constexpr unsigned long kKvmSetCpuid2 = _IOW(KVMIO, 0x90, KvmCpuidHeader);
inline constexpr unsigned long kKvmSetMsrs = _IOW(KVMIO, 0x89, KvmMsrsHeader);
inline constexpr unsigned long kKvmGetMsrs = _IOWR(KVMIO, 0x88, KvmMsrsHeader);
inline constexpr unsigned long kKvmGetMsrIndexList = _IOWR(KVMIO, 0x02, KvmMsrListHeader);
inline constexpr unsigned long kKvmGetXsave = _IOR(KVMIO, 0xa4, KvmXsave);
inline constexpr unsigned long kKvmSetXsave = _IOW(KVMIO, 0xa5, KvmXsave);
static_assert(kKvmGetMsrs == 0xc008ae88UL);
static_assert(kKvmGetMsrIndexList == 0xc004ae02UL);
static_assert(kKvmGetXsave == 0x9000aea4UL);
static_assert(kKvmSetXsave == 0x5000aea5UL);
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
static_assert(sizeof(kvm_fpu) == 416);
static_assert(sizeof(kvm_xcrs) == 392);
static_assert(sizeof(kvm_lapic_state) == 1024);
static_assert(sizeof(kvm_vcpu_events) == 64);
static_assert(sizeof(kvm_mp_state) == 4);
static_assert(sizeof(kvm_debugregs) == 128);
static_assert(sizeof(kvm_irqchip) == 520);
static_assert(sizeof(kvm_pit_state2) == 112);
static_assert(sizeof(kvm_clock_data) == 48);

}  // namespace qosvisor::hv
