// The architectural state KVM keeps for a vCPU and for the VM around it, as bytes: what a
// snapshot, a fork child or a migration needs to go on exactly where the guest was. Taken and
// applied only while the vCPU threads are out of KVM_RUN (the VM is paused).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "hv/kvm.h"

namespace qosvisor::hv {

// One vCPU: general and special registers, FPU/SSE/AVX state (XSAVE), XCRs, debug registers,
// every MSR KVM reports as saveable, the local APIC, pending events and the MP state.
Result<std::vector<uint8_t>> SaveVcpuState(const Kvm& kvm, int vcpu_fd, uint32_t index);
// Applies state in the order KVM needs it (special registers before the APIC, the TSC before its
// deadline, pending events last). A field KVM refuses is named in the error.
Status RestoreVcpuState(int vcpu_fd, uint32_t index, std::span<const uint8_t> state);

// The VM-wide part: both PICs and the IOAPIC, the PIT, and kvmclock.
Result<std::vector<uint8_t>> SaveVmKvmState(int vm_fd);
Status RestoreVmKvmState(int vm_fd, std::span<const uint8_t> state);

}  // namespace qosvisor::hv
