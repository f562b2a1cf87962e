// The Intel MultiProcessor table (MP spec 1.4) that tells a Linux guest without ACPI about its
// CPUs, the I/O APIC and how ISA interrupts are wired; placed in the EBDA as Linux expects.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "hv/guest_memory.h"

namespace qosvisor::hv {

inline constexpr uint64_t kMpTableGpa = 0x9fc00;  // start of the EBDA (reserved in the e820 map)
inline constexpr uint32_t kIoApicAddress = 0xfec00000;
inline constexpr uint32_t kLocalApicAddress = 0xfee00000;
inline constexpr uint32_t kIoApicPins = 24;

// Writes the floating pointer and the configuration table for `vcpus` CPUs (APIC ids 0..n-1),
// one ISA bus, one I/O APIC (id n) with pins 0..23 = IRQs 0..23, ExtINT on LINT0, NMI on LINT1.
Status WriteMpTable(GuestMemory& mem, uint32_t vcpus);

}  // namespace qosvisor::hv
