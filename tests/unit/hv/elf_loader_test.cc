// ELF loader tests on hand-made images (no /dev/kvm needed): a valid image loads byte-exact with
// its bss zeroed; each kind of bad image is refused with a message saying what is wrong.
#include "hv/elf_loader.h"

#include <elf.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <vector>

#include "hv/boot_abi.h"
#include "hv_test_util.h"

namespace qosvisor::hv {
namespace {

struct Seg {
  uint64_t paddr;
  uint64_t filesz;
  uint64_t memsz;
  uint32_t flags = PF_R | PF_X;
};

// An ELF64 x86-64 executable: header, program headers, then each segment's bytes (filled with
// 0xa0 + segment index).
std::vector<uint8_t> MakeElf(const std::vector<Seg>& segs, uint64_t entry) {
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_entry = entry;
  eh.e_phoff = sizeof(Elf64_Ehdr);
  eh.e_ehsize = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = static_cast<uint16_t>(segs.size());
  std::vector<uint8_t> out(sizeof(eh) + segs.size() * sizeof(Elf64_Phdr));
  std::memcpy(out.data(), &eh, sizeof(eh));
  for (size_t i = 0; i < segs.size(); ++i) {
    Elf64_Phdr ph{};
    ph.p_type = PT_LOAD;
    ph.p_flags = segs[i].flags;
    ph.p_offset = out.size();
    ph.p_vaddr = ph.p_paddr = segs[i].paddr;
    ph.p_filesz = segs[i].filesz;
    ph.p_memsz = segs[i].memsz;
    ph.p_align = 0x1000;
    std::memcpy(out.data() + sizeof(eh) + i * sizeof(Elf64_Phdr), &ph, sizeof(ph));
    out.insert(out.end(), segs[i].filesz, static_cast<uint8_t>(0xa0 + i));
  }
  return out;
}

constexpr uint64_t kMem = 4ull << 20;

std::string ParseError(const std::vector<uint8_t>& file, uint64_t mem = kMem) {
  auto r = ParseElf(file, mem, "bad.elf");
  REQUIRE_FALSE(r.ok());
  return r.message();
}

TEST_CASE("a valid ELF loads its segments and zeroes bss", "[elf]") {
  auto file = MakeElf({{0x100000, 0x300, 0x1000}, {0x200000, 0x10, 0x10, PF_R | PF_W}}, 0x100010);
  auto image = ParseElf(file, kMem, "good.elf");
  REQUIRE(image.ok());
  CHECK(image->entry == 0x100010);
  REQUIRE(image->segments.size() == 2);
  CHECK(image->lowest_gpa() == 0x100000);
  CHECK(image->highest_gpa() == 0x200010);
  CHECK_FALSE(image->pvh_entry.has_value());

  auto mem = GuestMemory::Create("elf-test", kMem, false);
  REQUIRE(mem.ok());
  std::memset(mem->HostPtr(0x100000, 0x1000), 0x55, 0x1000);  // bss must be cleared
  REQUIRE(CopyElfToGuest(*image, file, *mem).ok());
  const uint8_t* p = mem->HostPtr(0x100000, 0x1000);
  CHECK(p[0] == 0xa0);
  CHECK(p[0x2ff] == 0xa0);
  CHECK(p[0x300] == 0);
  CHECK(p[0xfff] == 0);
  CHECK(mem->HostPtr(0x200000, 1)[0] == 0xa1);
}

TEST_CASE("bad images are refused with clear errors", "[elf]") {
  auto good = MakeElf({{0x100000, 0x100, 0x100}}, 0x100000);
  REQUIRE(ParseElf(good, kMem, "good.elf").ok());

  SECTION("not an ELF file") {
    std::vector<uint8_t> text = {'h', 'e', 'l', 'l', 'o'};
    CHECK(ParseError(text) == "image 'bad.elf': not an ELF file (5 bytes, no \\x7fELF magic)");
  }
  SECTION("truncated header") {
    std::vector<uint8_t> cut(good.begin(), good.begin() + 40);
    CHECK(ParseError(cut).find("truncated: 40 bytes, smaller than the 64-byte ELF header") !=
          std::string::npos);
  }
  SECTION("truncated program headers") {
    std::vector<uint8_t> cut(good.begin(), good.begin() + 80);
    CHECK(ParseError(cut).find("truncated: program headers") != std::string::npos);
  }
  SECTION("truncated segment data") {
    std::vector<uint8_t> cut(good.begin(), good.end() - 1);
    CHECK(ParseError(cut).find("truncated: segment 0 needs file bytes") != std::string::npos);
  }
  SECTION("32-bit class") {
    auto bad = good;
    bad[EI_CLASS] = ELFCLASS32;
    CHECK(ParseError(bad).find("32-bit ELF (ELFCLASS32)") != std::string::npos);
  }
  SECTION("big endian") {
    auto bad = good;
    bad[EI_DATA] = ELFDATA2MSB;
    CHECK(ParseError(bad).find("big-endian") != std::string::npos);
  }
  SECTION("wrong machine") {
    auto bad = good;
    uint16_t machine = EM_AARCH64;
    std::memcpy(bad.data() + offsetof(Elf64_Ehdr, e_machine), &machine, 2);
    CHECK(ParseError(bad) == "image 'bad.elf': machine 183 is not x86-64 (EM_X86_64 = 62)");
  }
  SECTION("not an executable") {
    auto bad = good;
    uint16_t type = ET_DYN;
    std::memcpy(bad.data() + offsetof(Elf64_Ehdr, e_type), &type, 2);
    CHECK(ParseError(bad).find("is not ET_EXEC") != std::string::npos);
  }
  SECTION("overlapping segments") {
    auto bad = MakeElf({{0x100000, 0x100, 0x2000}, {0x101000, 0x100, 0x100}}, 0x100000);
    CHECK(ParseError(bad) ==
          "image 'bad.elf': overlapping segments: [0x100000, 0x102000) and [0x101000, 0x101100)");
  }
  SECTION("larger than memory") {
    auto bad = MakeElf({{0x100000, 0x100, kMem}}, 0x100000);
    CHECK(ParseError(bad).find("larger than memory: segment 0 [0x100000, +0x400000) does not "
                               "fit in 4194304 bytes") != std::string::npos);
  }
  SECTION("address overflow is caught, not wrapped") {
    auto bad = MakeElf({{0xfffffffffffff000ull, 0x100, 0x2000}}, 0xfffffffffffff000ull);
    CHECK(ParseError(bad).find("larger than memory") != std::string::npos);
  }
  SECTION("segment over the VMM boot area") {
    auto bad = MakeElf({{0x8000, 0x100, 0x100}}, 0x8000);
    CHECK(ParseError(bad).find("overlaps the VMM boot area") != std::string::npos);
  }
  SECTION("entry outside every executable segment") {
    auto bad = MakeElf({{0x100000, 0x100, 0x100}}, 0x300000);
    CHECK(ParseError(bad) ==
          "image 'bad.elf': entry point 0x300000 is outside every executable segment");
    auto data_only = MakeElf({{0x100000, 0x100, 0x100, PF_R | PF_W}}, 0x100000);
    CHECK(ParseError(data_only).find("outside every executable segment") != std::string::npos);
  }
  SECTION("file size beyond memory size") {
    auto bad = MakeElf({{0x100000, 0x200, 0x100}}, 0x100000);
    CHECK(ParseError(bad).find("file size 0x200 exceeds memory size 0x100") != std::string::npos);
  }
  SECTION("no loadable segment") {
    auto bad = MakeElf({}, 0x100000);
    CHECK(ParseError(bad).find("no program headers") != std::string::npos);
  }
}

TEST_CASE("the test guests parse, with their PVH entry note", "[elf]") {
  for (const char* name : {"hello", "counter", "memtouch", "fault"}) {
    INFO(name);
    auto bytes = ReadImageFile(testing::GuestPath(name));
    REQUIRE(bytes.ok());
    auto image = ParseElf(*bytes, 32ull << 20, name);
    REQUIRE(image.ok());
    CHECK(image->lowest_gpa() == 0x100000);
    REQUIRE(image->pvh_entry.has_value());
    CHECK(*image->pvh_entry > 0x100000);
    CHECK(*image->pvh_entry < image->highest_gpa());
  }
  auto missing = ReadImageFile("/nonexistent.elf");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.message().find("image '/nonexistent.elf': cannot open") == 0);
}

}  // namespace
}  // namespace qosvisor::hv
