// Linux boot paths: bzImage header checks, initrd placement, the zero page and PVH start info
// (no KVM), and booting the hello guest through PVH and as a synthetic bzImage ([kvm]).
#include "hv/linux_boot.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "hv/boot_abi.h"
#include "hv/elf_loader.h"
#include "hv/mptable.h"
#include "hv/vm.h"
#include "hv_test_util.h"

namespace qosvisor::hv {
namespace {

using namespace std::chrono_literals;
using testing::GuestPath;
using testing::ReadWholeFile;
using testing::TempFile;

template <typename T>
void Put(std::vector<uint8_t>& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof(T));
}
template <typename T>
T Get(const uint8_t* b, size_t off) {
  T v;
  std::memcpy(&v, b + off, sizeof(T));
  return v;
}

// A bzImage with one setup sector whose protected-mode payload is 0x200 bytes of padding and
// then `code` (so the 64-bit entry at load + 0x200 is the first byte of code).
std::vector<uint8_t> MakeBzImage(const std::vector<uint8_t>& code, uint16_t version = 0x20f,
                                 uint16_t xloadflags = 1) {
  std::vector<uint8_t> img(0x400 + 0x200 + code.size(), 0);
  img[0x1f1] = 1;  // setup_sects
  Put<uint16_t>(img, 0x1fe, 0xaa55);
  std::memcpy(img.data() + 0x202, "HdrS", 4);
  Put<uint16_t>(img, 0x206, version);
  img[0x211] = 0x01;  // LOADED_HIGH
  Put<uint32_t>(img, 0x22c, 0x7fffffff);
  Put<uint16_t>(img, 0x236, xloadflags);
  Put<uint32_t>(img, 0x260, static_cast<uint32_t>(code.size() + 0x200 + (256 << 10)));
  std::copy(code.begin(), code.end(), img.begin() + 0x600);
  return img;
}

TEST_CASE("bzImage headers are checked", "[linux]") {
  std::vector<uint8_t> code(4096, 0x90);
  auto good = MakeBzImage(code);
  auto bz = ParseBzImage(good, 16 << 20, "bz");
  REQUIRE(bz.ok());
  CHECK(bz->payload_offset == 0x400);
  CHECK(bz->payload_size == 0x200 + 4096);
  CHECK(bz->entry == 0x100200);
  CHECK(LooksLikeBzImage(good));

  CHECK(ParseBzImage(std::vector<uint8_t>(100), 16 << 20, "bz").message().find("truncated") !=
        std::string::npos);
  auto no_magic = good;
  no_magic[0x202] = 'X';
  CHECK(ParseBzImage(no_magic, 16 << 20, "bz").message() ==
        "image 'bz': not a bzImage (no \"HdrS\" magic at 0x202)");
  CHECK(ParseBzImage(MakeBzImage(code, 0x20a), 16 << 20, "bz").message() ==
        "image 'bz': boot protocol 2.10 has no 64-bit entry; need 2.12 or newer");
  CHECK(ParseBzImage(MakeBzImage(code, 0x20f, 0), 16 << 20, "bz")
            .message()
            .find("XLF_KERNEL_64 not set") != std::string::npos);
  CHECK(ParseBzImage(good, 1 << 20, "bz").message().find("larger than memory") !=
        std::string::npos);
  std::vector<uint8_t> cut(good.begin(), good.begin() + 0x300);
  CHECK(ParseBzImage(cut, 16 << 20, "bz").message().find("truncated: setup of 1 sectors") !=
        std::string::npos);
}

TEST_CASE("initrd placement, zero page and PVH start info", "[linux]") {
  auto p = PlaceInitrd(10000, 64 << 20, 0x200000, 0);
  REQUIRE(p.ok());
  CHECK(p->gpa == ((64u << 20) - 10000) / 4096 * 4096);
  p = PlaceInitrd(10000, 64 << 20, 0x200000, 0x37ffffff);
  REQUIRE(p.ok());
  CHECK(p->gpa + p->size <= (64u << 20));
  p = PlaceInitrd(10000, 64 << 20, 0x200000, 0x1fffff);  // kernel allows nothing above its end
  CHECK_FALSE(p.ok());
  CHECK_FALSE(PlaceInitrd(64 << 20, 32 << 20, 0x200000, 0).ok());

  auto mem = GuestMemory::Create("zp-test", 16 << 20, false);
  REQUIRE(mem.ok());
  REQUIRE(WriteZeroPage(*mem, 12, InitrdPlacement{0xf00000, 0x1234}, {}).ok());
  const uint8_t* zp = mem->HostPtr(kZeroPageGpa, 4096);
  CHECK(Get<uint16_t>(zp, 0x1fe) == 0xaa55);
  CHECK(std::memcmp(zp + 0x202, "HdrS", 4) == 0);
  CHECK(zp[0x210] == 0xff);
  CHECK(Get<uint32_t>(zp, 0x228) == QV_BOOT_CMDLINE_GPA);
  CHECK(Get<uint32_t>(zp, 0x238) == 12);
  CHECK(Get<uint32_t>(zp, 0x218) == 0xf00000);
  CHECK(Get<uint32_t>(zp, 0x21c) == 0x1234);
  REQUIRE(zp[0x1e8] == 3);
  CHECK(Get<uint64_t>(zp, 0x2d0 + 40) == 0x100000);
  CHECK(Get<uint64_t>(zp, 0x2d0 + 48) == (16u << 20) - 0x100000);
  CHECK(Get<uint32_t>(zp, 0x2d0 + 56) == 1);

  REQUIRE(WritePvhStartInfo(*mem, InitrdPlacement{0xf00000, 0x1234}).ok());
  const uint8_t* si = mem->HostPtr(kPvhStartInfoGpa, 4096);
  CHECK(Get<uint32_t>(si, 0) == 0x336ec578);
  CHECK(Get<uint32_t>(si, 4) == 1);
  CHECK(Get<uint32_t>(si, 12) == 1);
  CHECK(Get<uint64_t>(si, 24) == QV_BOOT_CMDLINE_GPA);
  CHECK(Get<uint32_t>(si, 48) == 3);
  uint64_t memmap = Get<uint64_t>(si, 40);
  CHECK(Get<uint64_t>(mem->HostPtr(memmap + 48, 8), 0) == 0x100000);
  uint64_t mod = Get<uint64_t>(si, 16);
  CHECK(Get<uint64_t>(mem->HostPtr(mod, 16), 0) == 0xf00000);
  CHECK(Get<uint64_t>(mem->HostPtr(mod, 16), 8) == 0x1234);
}

TEST_CASE("MP table: checksums, CPUs, I/O APIC and interrupt wiring", "[linux]") {
  auto mem = GuestMemory::Create("mp-test", 16 << 20, false);
  REQUIRE(mem.ok());
  REQUIRE(WriteMpTable(*mem, 3).ok());
  auto sum = [](const uint8_t* p, size_t n) {
    uint8_t s = 0;
    for (size_t i = 0; i < n; ++i) s = static_cast<uint8_t>(s + p[i]);
    return s;
  };
  const uint8_t* fp = mem->HostPtr(kMpTableGpa, 16);
  REQUIRE(std::memcmp(fp, "_MP_", 4) == 0);
  CHECK(sum(fp, 16) == 0);
  uint32_t config_gpa = Get<uint32_t>(fp, 4);
  const uint8_t* config = mem->HostPtr(config_gpa, 44);
  REQUIRE(std::memcmp(config, "PCMP", 4) == 0);
  uint16_t length = Get<uint16_t>(config, 4);
  CHECK(sum(mem->HostPtr(config_gpa, length), length) == 0);
  uint16_t count = Get<uint16_t>(config, 34);
  CHECK(count == 3 + 1 + 1 + 24 + 2);
  CHECK(Get<uint32_t>(config, 36) == kLocalApicAddress);
  const uint8_t* e = config + 44;
  CHECK(e[0] == 0);
  CHECK(e[3] == 3);  // CPU 0: enabled + bootstrap
  CHECK(e[20 + 1] == 1);
  CHECK(e[20 + 3] == 1);  // CPU 1: enabled only
  const uint8_t* ioapic = e + 3 * 20 + 8;
  CHECK(ioapic[0] == 2);
  CHECK(ioapic[1] == 3);  // id after the CPUs
  CHECK(Get<uint32_t>(ioapic, 4) == kIoApicAddress);
  const uint8_t* irq5 = ioapic + 8 + 5 * 8;
  CHECK(irq5[0] == 3);
  CHECK(irq5[5] == 5);
  CHECK(irq5[7] == 5);
  CHECK_FALSE(WriteMpTable(*mem, 0).ok());
}

TEST_CASE("the hello guest boots through its PVH entry", "[kvm][linux]") {
  QV_REQUIRE_KVM();
  TempFile log("pvh.log");
  VmOptions o;
  o.name = "pvh";
  o.memory_bytes = 32 << 20;
  o.image = GuestPath("hello");
  o.serial_log = log.path();
  o.boot = BootProtocol::kPvh;
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  REQUIRE((*vm)->Start().ok());
  auto exit = (*vm)->WaitForExit(20s);
  REQUIRE(exit.has_value());
  INFO(exit->detail);
  CHECK(exit->reason == VmExitReason::kDebugExit);
  CHECK(exit->code == 0);
  // Entered at the 32-bit PVH entry, which builds long mode itself and passes no qosvisor boot
  // info on: only the greeting, no memory line.
  CHECK(ReadWholeFile(log.path()) == "hello from the qosvisor test guest\n");

  // An ELF without the note cannot boot through PVH.
  TempFile bare("bare.elf");
  {
    auto bytes = ReadImageFile(GuestPath("hello"));
    REQUIRE(bytes.ok());
    // Turn the PT_NOTE program header into PT_NULL.
    auto image = ParseElf(*bytes, 32 << 20, "hello");
    REQUIRE(image.ok());
    uint64_t phoff = Get<uint64_t>(bytes->data(), 0x20);
    uint16_t phnum = Get<uint16_t>(bytes->data(), 0x38);
    for (uint16_t i = 0; i < phnum; ++i) {
      uint8_t* ph = bytes->data() + phoff + 56ull * i;
      if (Get<uint32_t>(ph, 0) == 4) std::memset(ph, 0, 4);  // PT_NOTE -> PT_NULL
    }
    std::ofstream(bare.path(), std::ios::binary)
        // SAFETY: bytes as chars for ostream::write, same size.
        .write(reinterpret_cast<const char*>(bytes->data()),
               static_cast<std::streamsize>(bytes->size()));
  }
  o.image = bare.path();
  auto no_note = Vm::Create(o);
  REQUIRE_FALSE(no_note.ok());
  CHECK(no_note.message().find("has no XEN_ELFNOTE_PHYS32_ENTRY note") != std::string::npos);
}

TEST_CASE("a bzImage boots through the 64-bit boot protocol with an initrd", "[kvm][linux]") {
  QV_REQUIRE_KVM();
  std::string flat = ReadWholeFile(std::string(QOSVISOR_GUEST_DIR) + "/hello_bz.bin");
  REQUIRE(flat.size() > 100);
  TempFile image("hello.bzImage"), initrd("initrd.img"), log("bz.log");
  {
    auto bz = MakeBzImage(std::vector<uint8_t>(flat.begin(), flat.end()));
    std::ofstream(image.path(), std::ios::binary)
        // SAFETY: bytes as chars for ostream::write, same size.
        .write(reinterpret_cast<const char*>(bz.data()), static_cast<std::streamsize>(bz.size()));
    std::ofstream(initrd.path(), std::ios::binary) << std::string(10000, 'R');
  }
  VmOptions o;
  o.name = "bz";
  o.memory_bytes = 32 << 20;
  o.image = image.path();
  o.initrd = initrd.path();
  o.cmdline = "console=ttyS0 exit=3";
  o.serial_log = log.path();
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  REQUIRE((*vm)->Start().ok());
  auto exit = (*vm)->WaitForExit(20s);
  REQUIRE(exit.has_value());
  CHECK(exit->code == 3);
  CHECK(ReadWholeFile(log.path()).find("cmdline=console=ttyS0 exit=3\n") != std::string::npos);
  // The zero page points at the initrd, which holds the file's bytes.
  const uint8_t* zp = (*vm)->memory().HostPtr(kZeroPageGpa, 4096);
  uint32_t rd = Get<uint32_t>(zp, 0x218), rd_size = Get<uint32_t>(zp, 0x21c);
  CHECK(rd_size == 10000);
  CHECK(rd % 4096 == 0);
  const uint8_t* bytes = (*vm)->memory().HostPtr(rd, rd_size);
  REQUIRE(bytes != nullptr);
  CHECK(bytes[0] == 'R');
  CHECK(bytes[rd_size - 1] == 'R');
  CHECK(Get<uint16_t>(zp, 0x206) == 0x20f);  // the image's own setup header was copied

  o.boot = BootProtocol::kPvh;
  auto pvh = Vm::Create(o);
  REQUIRE_FALSE(pvh.ok());
  CHECK(pvh.message().find("PVH boot needs an ELF image, this is a bzImage") != std::string::npos);
}

// Hidden: needs hardware virtualization (a stock kernel does not get through early boot in useful
// time under software KVM). QV_LINUX_KERNEL=/boot/vmlinuz-... [QV_LINUX_INITRD=...] hv_test "[.hw]"
TEST_CASE("a Linux bzImage boots to its first console lines", "[.hw][kvm][linux]") {
  QV_REQUIRE_KVM();
  const char* kernel = std::getenv("QV_LINUX_KERNEL");
  if (kernel == nullptr) {
    WARN("SKIPPED: set QV_LINUX_KERNEL to a bzImage (and QV_LINUX_INITRD to an initramfs)");
    return;
  }
  TempFile log("linux.log");
  VmOptions o;
  o.name = "linux";
  o.memory_bytes = 512ull << 20;
  o.image = kernel;
  if (const char* initrd = std::getenv("QV_LINUX_INITRD")) o.initrd = initrd;
  o.cmdline = "console=ttyS0 earlyprintk=serial,ttyS0 noapic nomodeset panic=-1 reboot=t";
  o.serial_log = log.path();
  o.serial_console = true;
  auto vm = Vm::Create(o);
  REQUIRE(vm.ok());
  REQUIRE((*vm)->Start().ok());
  CHECK(testing::WaitUntil(
      [&] { return ReadWholeFile(log.path()).find("Linux version") != std::string::npos; }, 120s));
  (void)(*vm)->Stop(1000ms);
}

}  // namespace
}  // namespace qosvisor::hv
