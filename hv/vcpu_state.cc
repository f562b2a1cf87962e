// KVM_GET_* / KVM_SET_* for a vCPU and a VM, encoded with StateWriter. The layout is the
// kernel's x86-64 structs, which the snapshot header's architecture field guards.
#include "hv/vcpu_state.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "hv/state_codec.h"

namespace qosvisor::hv {
namespace {

constexpr uint32_t kMsrTscDeadline = 0x6e0;
constexpr uint32_t kMaxMsrs = 1024;

Status IoctlError(const char* what, uint32_t index) {
  return Status::Error(fmt::format("vcpu {}: {}: {}", index, what, std::strerror(errno)));
}

Result<std::vector<uint32_t>> SaveableMsrs(const Kvm& kvm) {
  std::vector<uint8_t> buf(sizeof(KvmMsrListHeader) + kMaxMsrs * sizeof(uint32_t));
  KvmMsrListHeader header{kMaxMsrs};
  std::memcpy(buf.data(), &header, sizeof(header));
  // SAFETY: buf is a C-layout kvm_msr_list with room for kMaxMsrs indices.
  if (::ioctl(kvm.fd(), kKvmGetMsrIndexList, buf.data()) != 0) {
    return Status::Error(fmt::format("KVM_GET_MSR_INDEX_LIST: {}", std::strerror(errno)));
  }
  std::memcpy(&header, buf.data(), sizeof(header));
  std::vector<uint32_t> indices(std::min(header.nmsrs, kMaxMsrs));
  std::memcpy(indices.data(), buf.data() + sizeof(header), indices.size() * sizeof(uint32_t));
  // The TSC deadline is relative to the TSC: it must be set after it.
  std::stable_partition(indices.begin(), indices.end(),
                        [](uint32_t msr) { return msr != kMsrTscDeadline; });
  return indices;
}

// KVM_GET_MSRS / KVM_SET_MSRS on `entries`; returns how many it handled (it stops at the first
// MSR it refuses).
int MsrIoctl(int vcpu_fd, unsigned long request, std::vector<kvm_msr_entry>& entries,
             size_t first) {
  const size_t n = entries.size() - first;
  std::vector<uint8_t> buf(sizeof(KvmMsrsHeader) + n * sizeof(kvm_msr_entry));
  KvmMsrsHeader header{static_cast<uint32_t>(n), 0};
  std::memcpy(buf.data(), &header, sizeof(header));
  std::memcpy(buf.data() + sizeof(header), entries.data() + first, n * sizeof(kvm_msr_entry));
  // SAFETY: buf is a C-layout kvm_msrs header followed by n entries; the request number was built
  // for that header size (kvm_abi.h).
  int r = ::ioctl(vcpu_fd, request, buf.data());
  if (r > 0) {
    std::memcpy(entries.data() + first, buf.data() + sizeof(header),
                static_cast<size_t>(r) * sizeof(kvm_msr_entry));
  }
  return r;
}

Result<std::vector<kvm_msr_entry>> ReadMsrs(const Kvm& kvm, int vcpu_fd, uint32_t index) {
  auto indices = SaveableMsrs(kvm);
  if (!indices) return indices.status();
  std::vector<kvm_msr_entry> entries;
  for (uint32_t msr : *indices) entries.push_back(kvm_msr_entry{msr, 0, 0});
  // KVM lists some MSRs it cannot read for this vCPU's CPUID; those are skipped one at a time.
  size_t done = 0;
  while (done < entries.size()) {
    int r = MsrIoctl(vcpu_fd, kKvmGetMsrs, entries, done);
    if (r < 0) return IoctlError("KVM_GET_MSRS", index);
    done += static_cast<size_t>(r);
    if (done < entries.size()) entries.erase(entries.begin() + static_cast<ptrdiff_t>(done));
  }
  return entries;
}

template <typename T>
Status GetInto(int fd, unsigned long request, T* out, const char* what, uint32_t index) {
  // SAFETY: `request` is the KVM_GET_* ioctl for T, whose size kvm_abi.h checks against C.
  if (::ioctl(fd, request, out) != 0) return IoctlError(what, index);
  return Status::Ok();
}

template <typename T>
Status SetFrom(int fd, unsigned long request, const T& in, const char* what, uint32_t index) {
  // SAFETY: `request` is the KVM_SET_* ioctl for T, which the kernel only reads.
  if (::ioctl(fd, request, &in) != 0) {
    return Status::Error(
        fmt::format("vcpu {}: {} refused the saved state: {}", index, what, std::strerror(errno)));
  }
  return Status::Ok();
}

// The fixed-size part of a vCPU's state, in one struct so save and restore list it once.
struct VcpuFixedState {
  kvm_regs regs;
  kvm_sregs sregs;
  KvmXsave xsave;
  kvm_xcrs xcrs;
  kvm_debugregs debugregs;
  kvm_lapic_state lapic;
  kvm_vcpu_events events;
  kvm_mp_state mp_state;
};

}  // namespace

Result<std::vector<uint8_t>> SaveVcpuState(const Kvm& kvm, int vcpu_fd, uint32_t index) {
  auto fixed = std::make_unique<VcpuFixedState>();
  std::memset(fixed.get(), 0, sizeof(VcpuFixedState));
  for (Status s :
       {GetInto(vcpu_fd, KVM_GET_REGS, &fixed->regs, "KVM_GET_REGS", index),
        GetInto(vcpu_fd, KVM_GET_SREGS, &fixed->sregs, "KVM_GET_SREGS", index),
        GetInto(vcpu_fd, kKvmGetXsave, &fixed->xsave, "KVM_GET_XSAVE", index),
        GetInto(vcpu_fd, KVM_GET_XCRS, &fixed->xcrs, "KVM_GET_XCRS", index),
        GetInto(vcpu_fd, KVM_GET_DEBUGREGS, &fixed->debugregs, "KVM_GET_DEBUGREGS", index),
        GetInto(vcpu_fd, KVM_GET_LAPIC, &fixed->lapic, "KVM_GET_LAPIC", index),
        GetInto(vcpu_fd, KVM_GET_VCPU_EVENTS, &fixed->events, "KVM_GET_VCPU_EVENTS", index),
        GetInto(vcpu_fd, KVM_GET_MP_STATE, &fixed->mp_state, "KVM_GET_MP_STATE", index)}) {
    if (!s) return s;
  }
  auto msrs = ReadMsrs(kvm, vcpu_fd, index);
  if (!msrs) return msrs.status();
  StateWriter w;
  w.Put(*fixed);
  w.Put<uint32_t>(static_cast<uint32_t>(msrs->size()));
  for (const kvm_msr_entry& e : *msrs) w.Put(e);
  return w.Take();
}

Status RestoreVcpuState(int vcpu_fd, uint32_t index, std::span<const uint8_t> state) {
  auto fixed = std::make_unique<VcpuFixedState>();
  StateReader r(state, fmt::format("vcpu {} state", index));
  uint32_t msr_count = 0;
  r.Get(fixed.get(), "registers");
  r.Get(&msr_count, "msr_count");
  if (r.ok() && msr_count > kMaxMsrs) r.Invalid("msr_count", fmt::format("{} MSRs", msr_count));
  std::vector<kvm_msr_entry> msrs(r.ok() ? msr_count : 0);
  for (auto& e : msrs) r.Get(&e, "msr");
  if (r.ok() && fixed->mp_state.mp_state > KVM_MP_STATE_AP_RESET_HOLD) {
    r.Invalid("mp_state", fmt::format("unknown MP state {}", fixed->mp_state.mp_state));
  }
  if (!r.Finish()) return Status::Error(r.error());
  for (Status s :
       {SetFrom(vcpu_fd, KVM_SET_MP_STATE, fixed->mp_state, "KVM_SET_MP_STATE", index),
        SetFrom(vcpu_fd, KVM_SET_REGS, fixed->regs, "KVM_SET_REGS", index),
        SetFrom(vcpu_fd, KVM_SET_SREGS, fixed->sregs, "KVM_SET_SREGS", index),
        SetFrom(vcpu_fd, kKvmSetXsave, fixed->xsave, "KVM_SET_XSAVE", index),
        SetFrom(vcpu_fd, KVM_SET_XCRS, fixed->xcrs, "KVM_SET_XCRS", index),
        SetFrom(vcpu_fd, KVM_SET_DEBUGREGS, fixed->debugregs, "KVM_SET_DEBUGREGS", index),
        SetFrom(vcpu_fd, KVM_SET_LAPIC, fixed->lapic, "KVM_SET_LAPIC", index)}) {
    if (!s) return s;
  }
  int set = msrs.empty() ? 0 : MsrIoctl(vcpu_fd, kKvmSetMsrs, msrs, 0);
  if (set < 0 || static_cast<size_t>(set) != msrs.size()) {
    const size_t bad = set < 0 ? 0 : static_cast<size_t>(set);
    return Status::Error(fmt::format("vcpu {}: KVM_SET_MSRS refused MSR {:#x}", index,
                                     bad < msrs.size() ? msrs[bad].index : 0));
  }
  return SetFrom(vcpu_fd, KVM_SET_VCPU_EVENTS, fixed->events, "KVM_SET_VCPU_EVENTS", index);
}

namespace {

struct VmFixedState {
  kvm_irqchip chips[3];  // PIC master, PIC slave, IOAPIC
  kvm_pit_state2 pit;
  kvm_clock_data clock;
};

Status VmIoctl(int vm_fd, unsigned long request, void* arg, const char* what) {
  // SAFETY: each caller passes the struct its request number was built for.
  if (::ioctl(vm_fd, request, arg) != 0) {
    return Status::Error(fmt::format("{}: {}", what, std::strerror(errno)));
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<uint8_t>> SaveVmKvmState(int vm_fd) {
  VmFixedState st{};
  std::memset(&st, 0, sizeof(st));
  for (uint32_t chip = 0; chip < 3; ++chip) {
    st.chips[chip].chip_id = chip;
    if (Status s = VmIoctl(vm_fd, KVM_GET_IRQCHIP, &st.chips[chip], "KVM_GET_IRQCHIP"); !s) {
      return s;
    }
  }
  if (Status s = VmIoctl(vm_fd, KVM_GET_PIT2, &st.pit, "KVM_GET_PIT2"); !s) return s;
  if (Status s = VmIoctl(vm_fd, KVM_GET_CLOCK, &st.clock, "KVM_GET_CLOCK"); !s) return s;
  StateWriter w;
  w.Put(st);
  return w.Take();
}

Status RestoreVmKvmState(int vm_fd, std::span<const uint8_t> state) {
  VmFixedState st{};
  StateReader r(state, "vm state");
  r.Get(&st, "irqchip, pit and clock");
  for (uint32_t chip = 0; r.ok() && chip < 3; ++chip) {
    if (st.chips[chip].chip_id != chip) r.Invalid("irqchip", "chips out of order");
  }
  if (!r.Finish()) return Status::Error(r.error());
  for (auto& chip : st.chips) {
    if (Status s = VmIoctl(vm_fd, KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP"); !s) return s;
  }
  if (Status s = VmIoctl(vm_fd, KVM_SET_PIT2, &st.pit, "KVM_SET_PIT2"); !s) return s;
  // The guest's clock goes on from the value saved: time while the snapshot sat on disk is not
  // seen as a jump (flags other than those KVM_SET_CLOCK accepts are dropped).
  kvm_clock_data clock{};
  clock.clock = st.clock.clock;
  return VmIoctl(vm_fd, KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK");
}

}  // namespace qosvisor::hv
