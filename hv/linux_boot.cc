// Linux x86 boot protocol (Documentation/x86/boot.rst, zero-page.rst) and PVH (xen/arch-x86
// hvm_start_info). Offsets are the documented ones; the image header is untrusted input.
#include "hv/linux_boot.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "hv/boot_abi.h"
#include "hv/kvm_abi.h"
#include "hv/x86_boot.h"

namespace qosvisor::hv {
namespace {

// boot_params / setup_header offsets.
constexpr size_t kSetupHeaderStart = 0x1f1;
constexpr size_t kSetupSects = 0x1f1;
constexpr size_t kBootFlag = 0x1fe;
constexpr size_t kHeaderMagic = 0x202;
constexpr size_t kVersion = 0x206;
constexpr size_t kTypeOfLoader = 0x210;
constexpr size_t kLoadFlags = 0x211;
constexpr size_t kRamdiskImage = 0x218;
constexpr size_t kRamdiskSize = 0x21c;
constexpr size_t kInitrdAddrMax = 0x22c;
constexpr size_t kCmdLinePtr = 0x228;
constexpr size_t kCmdlineSize = 0x238;
constexpr size_t kXLoadFlags = 0x236;
constexpr size_t kE820Entries = 0x1e8;
constexpr size_t kE820Table = 0x2d0;
constexpr size_t kZeroPageSize = 4096;
constexpr uint8_t kLoadedHigh = 0x01;
constexpr uint16_t kXlfKernel64 = 0x01;

constexpr uint32_t kPvhMagic = 0x336ec578;

template <typename T>
T Get(std::span<const uint8_t> b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof(T));
  return v;
}
template <typename T>
void Put(uint8_t* b, size_t off, T v) {
  std::memcpy(b + off, &v, sizeof(T));
}

}  // namespace

bool LooksLikeBzImage(std::span<const uint8_t> file) {
  return file.size() > kHeaderMagic + 4 && std::memcmp(file.data() + kHeaderMagic, "HdrS", 4) == 0;
}

Result<BzImage> ParseBzImage(std::span<const uint8_t> file, uint64_t mem_size,
                             const std::string& what) {
  auto fail = [&](std::string why) {
    return Status::Error(fmt::format("image '{}': {}", what, why));
  };
  if (file.size() < 0x270)
    return fail(fmt::format("truncated: {} bytes, no bzImage setup header", file.size()));
  if (!LooksLikeBzImage(file)) return fail("not a bzImage (no \"HdrS\" magic at 0x202)");
  if (Get<uint16_t>(file, kBootFlag) != 0xaa55) return fail("bzImage boot flag 0xaa55 missing");
  uint16_t version = Get<uint16_t>(file, kVersion);
  if (version < 0x20c) {
    return fail(fmt::format("boot protocol {}.{:02} has no 64-bit entry; need 2.12 or newer",
                            version >> 8, version & 0xff));
  }
  if (!(Get<uint16_t>(file, kXLoadFlags) & kXlfKernel64)) {
    return fail("kernel does not support the 64-bit entry (XLF_KERNEL_64 not set)");
  }
  if (!(file[kLoadFlags] & kLoadedHigh)) return fail("kernel is not loadable at 1 MiB");
  uint64_t setup_sects = file[kSetupSects] == 0 ? 4 : file[kSetupSects];
  BzImage img;
  img.payload_offset = (setup_sects + 1) * 512;
  if (img.payload_offset >= file.size()) {
    return fail(fmt::format("truncated: setup of {} sectors but the file has {} bytes", setup_sects,
                            file.size()));
  }
  img.payload_size = file.size() - img.payload_offset;
  if (kKernelLoadGpa + img.payload_size > mem_size) {
    return fail(
        fmt::format("larger than memory: kernel of {} bytes at 1 MiB does not fit in {} "
                    "bytes of guest memory",
                    img.payload_size, mem_size));
  }
  // The header's own length is at 0x201 (jump offset) + 0x202; 0x290 covers every version.
  size_t header_end = std::min<size_t>(0x290, file.size());
  img.setup_header.assign(file.begin() + kSetupHeaderStart, file.begin() + header_end);
  img.entry = kKernelLoadGpa + 0x200;
  img.initrd_addr_max = Get<uint32_t>(file, kInitrdAddrMax);
  return img;
}

Result<InitrdPlacement> PlaceInitrd(uint64_t size, uint64_t mem_size, uint64_t lowest_free,
                                    uint32_t initrd_addr_max) {
  uint64_t top = mem_size;
  if (initrd_addr_max != 0) top = std::min<uint64_t>(top, uint64_t{initrd_addr_max} + 1);
  if (size > top || ((top - size) & ~uint64_t{0xfff}) < lowest_free) {
    return Status::Error(
        fmt::format("initrd of {} bytes does not fit between the kernel's end "
                    "{:#x} and {:#x}",
                    size, lowest_free, top));
  }
  return InitrdPlacement{(top - size) & ~uint64_t{0xfff}, size};
}

Status WriteZeroPage(GuestMemory& mem, uint32_t cmdline_size,
                     const std::optional<InitrdPlacement>& initrd,
                     std::span<const uint8_t> setup_header) {
  uint8_t zp[kZeroPageSize] = {};
  if (!setup_header.empty()) {
    size_t n = std::min(setup_header.size(), kZeroPageSize - kSetupHeaderStart);
    std::memcpy(zp + kSetupHeaderStart, setup_header.data(), n);
  } else {
    Put<uint16_t>(zp, kBootFlag, 0xaa55);
    std::memcpy(zp + kHeaderMagic, "HdrS", 4);
    Put<uint16_t>(zp, kVersion, 0x20f);
  }
  zp[kTypeOfLoader] = 0xff;  // "undefined" loader
  zp[kLoadFlags] |= kLoadedHigh;
  Put<uint32_t>(zp, kCmdLinePtr, static_cast<uint32_t>(QV_BOOT_CMDLINE_GPA));
  Put<uint32_t>(zp, kCmdlineSize, cmdline_size);
  if (initrd) {
    Put<uint32_t>(zp, kRamdiskImage, static_cast<uint32_t>(initrd->gpa));
    Put<uint32_t>(zp, kRamdiskSize, static_cast<uint32_t>(initrd->size));
  }
  auto e820 = BuildE820(mem.size());
  zp[kE820Entries] = static_cast<uint8_t>(e820.size());
  for (size_t i = 0; i < e820.size(); ++i) {
    Put<uint64_t>(zp, kE820Table + 20 * i, e820[i].addr);
    Put<uint64_t>(zp, kE820Table + 20 * i + 8, e820[i].size);
    Put<uint32_t>(zp, kE820Table + 20 * i + 16, e820[i].type);
  }
  if (!mem.Write(kZeroPageGpa, zp, sizeof(zp))) return Status::Error("zero page does not fit");
  return Status::Ok();
}

Status WritePvhStartInfo(GuestMemory& mem, const std::optional<InitrdPlacement>& initrd) {
  // hvm_start_info (56 bytes), then hvm_memmap_table_entry[] (24 bytes each), then one
  // hvm_modlist_entry (32 bytes) for the initrd.
  uint8_t page[4096] = {};
  auto e820 = BuildE820(mem.size());
  const uint64_t memmap = kPvhStartInfoGpa + 64;
  const uint64_t modlist = memmap + 24 * e820.size();
  Put<uint32_t>(page, 0, kPvhMagic);
  Put<uint32_t>(page, 4, 1);  // version
  Put<uint32_t>(page, 12, initrd ? 1 : 0);
  Put<uint64_t>(page, 16, initrd ? modlist : 0);
  Put<uint64_t>(page, 24, QV_BOOT_CMDLINE_GPA);
  Put<uint64_t>(page, 40, memmap);
  Put<uint32_t>(page, 48, static_cast<uint32_t>(e820.size()));
  for (size_t i = 0; i < e820.size(); ++i) {
    Put<uint64_t>(page, 64 + 24 * i, e820[i].addr);
    Put<uint64_t>(page, 64 + 24 * i + 8, e820[i].size);
    Put<uint32_t>(page, 64 + 24 * i + 16, e820[i].type);
  }
  if (initrd) {
    Put<uint64_t>(page, modlist - kPvhStartInfoGpa, initrd->gpa);
    Put<uint64_t>(page, modlist - kPvhStartInfoGpa + 8, initrd->size);
  }
  if (!mem.Write(kPvhStartInfoGpa, page, sizeof(page))) {
    return Status::Error("PVH start info does not fit");
  }
  return Status::Ok();
}

Status ConfigurePvhVcpu(int vcpu_fd, uint32_t entry) {
  kvm_sregs sregs{};
  // SAFETY: sregs is a kvm_sregs (size checked in kvm_abi.h) the kernel fills.
  if (::ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) != 0) {
    return Status::Error(fmt::format("KVM_GET_SREGS: {}", std::strerror(errno)));
  }
  auto flat = [](uint16_t selector, uint8_t type) {
    kvm_segment s{};
    s.limit = 0xffffffff;
    s.selector = selector;
    s.type = type;
    s.present = 1;
    s.db = 1;
    s.s = 1;
    s.g = 1;
    return s;
  };
  // PVH: 32-bit flat protected mode, paging off; the GDT may be anything, the caches count.
  sregs.cs = flat(QV_SEL_KERNEL_CODE, 0xb);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat(QV_SEL_KERNEL_DATA, 0x3);
  sregs.tr = kvm_segment{};
  sregs.tr.limit = 0x67;
  sregs.tr.type = 11;
  sregs.tr.present = 1;
  sregs.cr0 = 0x11;  // PE | ET
  sregs.cr3 = 0;
  sregs.cr4 = 0;
  sregs.efer = 0;
  // SAFETY: sregs is a fully initialized kvm_sregs the kernel only reads.
  if (::ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) != 0) {
    return Status::Error(fmt::format("KVM_SET_SREGS (PVH): {}", std::strerror(errno)));
  }
  kvm_regs regs{};
  regs.rip = entry;
  regs.rbx = kPvhStartInfoGpa;
  regs.rflags = 0x2;
  // SAFETY: regs is a fully initialized kvm_regs the kernel only reads.
  if (::ioctl(vcpu_fd, KVM_SET_REGS, &regs) != 0) {
    return Status::Error(fmt::format("KVM_SET_REGS (PVH): {}", std::strerror(errno)));
  }
  return Status::Ok();
}

}  // namespace qosvisor::hv
