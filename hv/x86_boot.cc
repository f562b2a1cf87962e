// Builds the long-mode boot area in guest memory and the matching vCPU register state.
// Values follow notes/kvm.md: EFER=LME|LMA, CR0=0x80050033, CR4=PAE, 2 MiB identity pages.
#include "hv/x86_boot.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "hv/kvm_abi.h"
#include "hv/linux_boot.h"

namespace qosvisor::hv {
namespace {

constexpr uint64_t kTssSize = 104;
constexpr uint64_t kIoBitmapBytes = 8192;
constexpr uint64_t kTssLimit = kTssSize + kIoBitmapBytes;  // includes the 0xff terminator byte
constexpr uint64_t kPageTablePresent = 1, kPageTableWrite = 2, kPageTableUser = 4,
                   kPageTableHuge = 0x80;
constexpr uint64_t kEfer = 0x500;  // LME | LMA: LME alone is refused by KVM_SET_SREGS here
constexpr uint64_t kCr0 = 0x80050033;
constexpr uint64_t kCr4Pae = 0x20;

// A GDT descriptor; `flags` holds access byte (bits 0-7) and flags nibble (bits 12-15).
constexpr uint64_t GdtEntry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((uint64_t{base} & 0xff000000) << 32) | ((uint64_t{base} & 0x00ffffff) << 16) |
         (uint64_t{limit} & 0x0000ffff) | ((uint64_t{limit} & 0x000f0000) << 32) |
         (uint64_t{flags} & 0xf0ff) << 40;
}

kvm_segment Segment(uint16_t selector, uint8_t type, uint8_t dpl, bool code64) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = selector;
  s.type = type;
  s.present = 1;
  s.dpl = dpl;
  s.db = code64 ? 0 : 1;
  s.s = 1;
  s.l = code64 ? 1 : 0;
  s.g = 1;
  return s;
}

}  // namespace

std::vector<E820Entry> BuildE820(uint64_t mem_bytes) {
  std::vector<E820Entry> map;
  map.push_back({0, 0x9fc00, QV_E820_RAM});
  map.push_back({0x9fc00, 0x100000 - 0x9fc00, QV_E820_RESERVED});
  if (mem_bytes > 0x100000) map.push_back({0x100000, mem_bytes - 0x100000, QV_E820_RAM});
  return map;
}

Status WriteBootArea(GuestMemory& mem, const std::string& cmdline, uint64_t tsc_khz) {
  if (mem.size() < 2 * 0x100000) {
    return Status::Error(
        fmt::format("guest memory {} bytes is below the 2 MiB minimum", mem.size()));
  }
  if (cmdline.size() + 1 > QV_BOOT_CMDLINE_MAX) {
    return Status::Error(fmt::format("cmdline is {} bytes; at most {} fit", cmdline.size(),
                                     QV_BOOT_CMDLINE_MAX - 1));
  }
  const uint64_t gdt[] = {
      0,
      GdtEntry(0xa09b, 0, 0xfffff),  // kernel code, 64-bit
      GdtEntry(0xc093, 0, 0xfffff),  // kernel data
      GdtEntry(0xc0f3, 0, 0xfffff),  // user data (DPL 3)
      GdtEntry(0xa0fb, 0, 0xfffff),  // user code, 64-bit (DPL 3)
      GdtEntry(0x0089, static_cast<uint32_t>(QV_BOOT_TSS_GPA), kTssLimit),  // available TSS
      QV_BOOT_TSS_GPA >> 32,                                                // TSS base 63:32
  };
  bool ok = mem.Write(QV_BOOT_GDT_GPA, gdt, sizeof(gdt));

  // TSS: rsp0 for ring-3 -> ring-0 transitions, iomap_base pointing at an all-zero bitmap
  // (every port allowed from ring 3), then the mandatory 0xff byte.
  uint8_t tss[kTssSize] = {};
  uint64_t rsp0 = QV_BOOT_STACK_TOP;
  std::memcpy(tss + 4, &rsp0, 8);
  uint16_t iomap_base = kTssSize;
  std::memcpy(tss + 102, &iomap_base, 2);
  ok = ok && mem.Write(QV_BOOT_TSS_GPA, tss, sizeof(tss));
  std::vector<uint8_t> bitmap(kIoBitmapBytes + 1, 0);
  bitmap.back() = 0xff;
  ok = ok && mem.Write(QV_BOOT_TSS_GPA + kTssSize, bitmap.data(), bitmap.size());

  // Identity map of the first 4 GiB with 2 MiB pages, user-accessible so that ring-3 guest code
  // can run from and touch any of its memory.
  constexpr uint64_t kFlags = kPageTablePresent | kPageTableWrite | kPageTableUser;
  uint64_t pml4 = QV_BOOT_PDPT_GPA | kFlags;
  ok = ok && mem.Write(QV_BOOT_PML4_GPA, &pml4, 8);
  for (uint64_t i = 0; i < 4; ++i) {
    uint64_t pdpte = (QV_BOOT_PD_GPA + i * 0x1000) | kFlags;
    ok = ok && mem.Write(QV_BOOT_PDPT_GPA + i * 8, &pdpte, 8);
  }
  for (uint64_t i = 0; i < 4 * 512; ++i) {
    uint64_t pde = (i << 21) | kFlags | kPageTableHuge;
    ok = ok && mem.Write(QV_BOOT_PD_GPA + i * 8, &pde, 8);
  }

  qv_boot_info info{};
  info.magic = QV_BOOT_INFO_MAGIC;
  info.mem_bytes = mem.size();
  info.tsc_khz = tsc_khz;
  info.cmdline_gpa = QV_BOOT_CMDLINE_GPA;
  info.cmdline_len = static_cast<uint32_t>(cmdline.size());
  auto e820 = BuildE820(mem.size());
  info.e820_count = static_cast<uint32_t>(e820.size());
  for (size_t i = 0; i < e820.size(); ++i) {
    info.e820[i] = {e820[i].addr, e820[i].size, e820[i].type, 0};
  }
  ok = ok && mem.Write(QV_BOOT_INFO_GPA, &info, sizeof(info));
  ok = ok && mem.Write(QV_BOOT_CMDLINE_GPA, cmdline.c_str(), cmdline.size() + 1);
  if (!ok) return Status::Error("boot area does not fit in guest memory");
  return Status::Ok();
}

Status ConfigureLongModeVcpu(int vcpu_fd, uint64_t entry) {
  kvm_sregs sregs{};
  // SAFETY: sregs is a kvm_sregs (size checked in kvm_abi.h) the kernel fills.
  if (::ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) != 0) {
    return Status::Error(fmt::format("KVM_GET_SREGS: {}", std::strerror(errno)));
  }
  sregs.cs = Segment(QV_SEL_KERNEL_CODE, 11, 0, true);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = Segment(QV_SEL_KERNEL_DATA, 3, 0, false);
  sregs.tr = kvm_segment{};
  sregs.tr.base = QV_BOOT_TSS_GPA;
  sregs.tr.limit = static_cast<uint32_t>(kTssLimit);
  sregs.tr.selector = QV_SEL_TSS;
  sregs.tr.type = 11;  // busy 64-bit TSS
  sregs.tr.present = 1;
  sregs.ldt = kvm_segment{};
  sregs.ldt.type = 2;
  sregs.ldt.present = 1;
  sregs.ldt.unusable = 1;
  sregs.gdt.base = QV_BOOT_GDT_GPA;
  sregs.gdt.limit = 7 * 8 - 1;
  sregs.idt.base = 0;
  sregs.idt.limit = 0;  // a guest fault before it installs an IDT triple-faults: a clear exit
  sregs.cr0 = kCr0;
  sregs.cr3 = QV_BOOT_PML4_GPA;
  sregs.cr4 = kCr4Pae;
  sregs.efer = kEfer;
  // SAFETY: sregs is a fully initialized kvm_sregs the kernel only reads.
  if (::ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) != 0) {
    return Status::Error(fmt::format("KVM_SET_SREGS (long mode): {}", std::strerror(errno)));
  }
  kvm_regs regs{};
  regs.rip = entry;
  regs.rsp = QV_BOOT_STACK_TOP;
  regs.rflags = 0x2;  // reserved bit 1; interrupts off
  regs.rdi = QV_BOOT_INFO_GPA;
  regs.rsi = kZeroPageGpa;  // Linux 64-bit boot protocol: boot_params
  // SAFETY: regs is a fully initialized kvm_regs the kernel only reads.
  if (::ioctl(vcpu_fd, KVM_SET_REGS, &regs) != 0) {
    return Status::Error(fmt::format("KVM_SET_REGS: {}", std::strerror(errno)));
  }
  return Status::Ok();
}

}  // namespace qosvisor::hv
