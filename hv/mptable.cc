// MP table layout per the Intel MultiProcessor Specification 1.4, chapter 4; as Firecracker and
// kvmtool build it. Every structure is checksummed so that its bytes sum to zero.
#include "hv/mptable.h"

#include <fmt/format.h>

#include <cstring>
#include <vector>

namespace qosvisor::hv {
namespace {

constexpr uint8_t kEntryProcessor = 0, kEntryBus = 1, kEntryIoApic = 2, kEntryIoInterrupt = 3,
                  kEntryLocalInterrupt = 4;
constexpr uint8_t kCpuEnabled = 1, kCpuBootstrap = 2;
constexpr uint8_t kIntTypeInt = 0, kIntTypeNmi = 1, kIntTypeExtInt = 3;
constexpr uint8_t kApicVersion = 0x14, kIoApicVersion = 0x11;

uint8_t Checksum(const uint8_t* p, size_t n) {
  uint8_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum = static_cast<uint8_t>(sum + p[i]);
  return static_cast<uint8_t>(-sum);
}

template <typename T>
void Append(std::vector<uint8_t>& out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}

}  // namespace

Status WriteMpTable(GuestMemory& mem, uint32_t vcpus) {
  if (vcpus == 0 || vcpus > 254) {
    return Status::Error(fmt::format("MP table: {} CPUs do not fit APIC ids 0..253", vcpus));
  }
  const uint8_t ioapic_id = static_cast<uint8_t>(vcpus);
  std::vector<uint8_t> entries;
  uint16_t count = 0;
  for (uint32_t i = 0; i < vcpus; ++i, ++count) {
    entries.push_back(kEntryProcessor);
    entries.push_back(static_cast<uint8_t>(i));  // local APIC id
    entries.push_back(kApicVersion);
    entries.push_back(static_cast<uint8_t>(kCpuEnabled | (i == 0 ? kCpuBootstrap : 0)));
    Append<uint32_t>(entries, 0x600);  // CPU signature: family 6
    Append<uint32_t>(entries, 0x201);  // feature flags: FPU, APIC
    Append<uint64_t>(entries, 0);
  }
  entries.push_back(kEntryBus);
  entries.push_back(0);  // bus id
  for (char c : std::string("ISA   ")) entries.push_back(static_cast<uint8_t>(c));
  ++count;
  entries.push_back(kEntryIoApic);
  entries.push_back(ioapic_id);
  entries.push_back(kIoApicVersion);
  entries.push_back(1);  // enabled
  Append<uint32_t>(entries, kIoApicAddress);
  ++count;
  for (uint8_t pin = 0; pin < kIoApicPins; ++pin, ++count) {
    entries.push_back(kEntryIoInterrupt);
    entries.push_back(kIntTypeInt);
    Append<uint16_t>(entries, 0);  // polarity/trigger: conforms to the bus
    entries.push_back(0);          // source bus: ISA
    entries.push_back(pin);        // source IRQ
    entries.push_back(ioapic_id);
    entries.push_back(pin);
  }
  for (uint8_t type : {kIntTypeExtInt, kIntTypeNmi}) {
    entries.push_back(kEntryLocalInterrupt);
    entries.push_back(type);
    Append<uint16_t>(entries, 0);
    entries.push_back(0);                               // source bus
    entries.push_back(0);                               // source IRQ
    entries.push_back(0xff);                            // every local APIC
    entries.push_back(type == kIntTypeExtInt ? 0 : 1);  // LINT0 / LINT1
    ++count;
  }

  // Floating pointer (16 bytes) then the configuration table right after it.
  const uint64_t config_gpa = kMpTableGpa + 16;
  std::vector<uint8_t> config;
  for (char c : std::string("PCMP")) config.push_back(static_cast<uint8_t>(c));
  Append<uint16_t>(config, static_cast<uint16_t>(44 + entries.size()));
  config.push_back(4);  // spec revision 1.4
  config.push_back(0);  // checksum, below
  for (char c : std::string("QOSVISOR")) config.push_back(static_cast<uint8_t>(c));
  for (char c : std::string("qosvisor-vm ")) config.push_back(static_cast<uint8_t>(c));
  Append<uint32_t>(config, 0);  // OEM table pointer
  Append<uint16_t>(config, 0);  // OEM table size
  Append<uint16_t>(config, count);
  Append<uint32_t>(config, kLocalApicAddress);
  Append<uint16_t>(config, 0);  // extended table length
  config.push_back(0);          // extended checksum
  config.push_back(0);
  config.insert(config.end(), entries.begin(), entries.end());
  config[7] = Checksum(config.data(), config.size());

  uint8_t fp[16] = {'_', 'M', 'P', '_'};
  uint32_t config_addr = static_cast<uint32_t>(config_gpa);
  std::memcpy(fp + 4, &config_addr, 4);
  fp[8] = 1;  // length in 16-byte units
  fp[9] = 4;  // spec revision
  fp[10] = Checksum(fp, sizeof(fp));
  if (!mem.Write(kMpTableGpa, fp, sizeof(fp)) ||
      !mem.Write(config_gpa, config.data(), config.size())) {
    return Status::Error("MP table does not fit in guest memory");
  }
  return Status::Ok();
}

}  // namespace qosvisor::hv
