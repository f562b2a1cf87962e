// Tests of the pieces that need no /dev/kvm: buses, the 16550 serial and debug-exit devices,
// guest memory bounds, the boot area, and the host-resource checks.
#include <sys/mman.h>

#include <fmt/format.h>

#include <array>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "hv/boot_abi.h"
#include "hv/bus.h"
#include "hv/debug_exit.h"
#include "hv/guest_memory.h"
#include "hv/serial.h"
#include "hv/vm_options.h"
#include "hv/x86_boot.h"
#include "hv_test_util.h"

namespace qosvisor::hv {
namespace {

using testing::ReadWholeFile;
using testing::TempFile;

class Recorder : public Device {
 public:
  const char* name() const override { return "recorder"; }
  void Read(uint64_t offset, std::span<uint8_t> data) override {
    last_offset = offset;
    for (auto& b : data) b = 0x42;
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    last_offset = offset;
    last_size = data.size();
  }
  uint64_t last_offset = ~0ull;
  size_t last_size = 0;
};

TEST_CASE("bus dispatches by range and refuses overlaps", "[bus]") {
  Bus bus("pio");
  Recorder a, b;
  REQUIRE(bus.Register(0x100, 0x10, &a).ok());
  REQUIRE(bus.Register(0x110, 0x10, &b).ok());
  Status s = bus.Register(0x108, 0x10, &b);
  REQUIRE_FALSE(s.ok());
  CHECK(s.message() == "pio bus: recorder at [0x108, 0x118) overlaps recorder at 0x110");
  CHECK_FALSE(bus.Register(0xf8, 0x10, &b).ok());
  CHECK_FALSE(bus.Register(0x200, 0, &b).ok());
  CHECK_FALSE(bus.Register(~0ull - 4, 0x10, &b).ok());

  uint8_t data[4] = {};
  CHECK(bus.Write(0x114, std::span<const uint8_t>(data, 2)));
  CHECK(b.last_offset == 4);
  CHECK(b.last_size == 2);
  CHECK(bus.Read(0x10c, std::span<uint8_t>(data, 4)));
  CHECK(a.last_offset == 0xc);
  CHECK(data[3] == 0x42);
  // An access straddling the end of a range belongs to nobody.
  CHECK_FALSE(bus.Read(0x11e, std::span<uint8_t>(data, 4)));
  CHECK(data[0] == 0xff);
  CHECK_FALSE(bus.Write(0x50, std::span<const uint8_t>(data, 1)));
  CHECK(bus.unhandled() == 2);
}

TEST_CASE("serial writes whole lines to the log and always reports ready", "[serial]") {
  TempFile log("serial.log");
  auto serial = Serial::Create("s", log.path(), false);
  REQUIRE(serial.ok());
  Serial& s = **serial;
  auto out = [&](uint64_t off, uint8_t v) { s.Write(off, std::span<const uint8_t>(&v, 1)); };
  auto in = [&](uint64_t off) {
    uint8_t v = 0;
    s.Read(off, std::span<uint8_t>(&v, 1));
    return v;
  };
  CHECK((in(5) & 0x60) == 0x60);  // LSR: transmitter empty
  CHECK(in(2) == 0x01);           // IIR: no interrupt pending
  out(3, 0x80);                   // DLAB on: offset 0 is the divisor, not output
  out(0, 0x01);
  CHECK(in(0) == 0x01);
  out(3, 0x03);
  CHECK(s.first_line_ns() == 0);
  for (char c : std::string("ab\r\ncd")) out(0, static_cast<uint8_t>(c));
  CHECK(ReadWholeFile(log.path()) == "ab\n");  // the partial line waits
  CHECK(s.lines() == 1);
  CHECK(s.first_line_ns() > 0);
  s.Flush();
  CHECK(ReadWholeFile(log.path()) == "ab\ncd");
  s.Reset();
  CHECK(ReadWholeFile(log.path()).empty());
  CHECK(s.lines() == 0);

  auto bad = Serial::Create("s", "/nonexistent-dir/x.log", false);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.message().find("vm 's': serial log '/nonexistent-dir/x.log'") == 0);
}

TEST_CASE("a guest that prints forever keeps the log and one rotated file under the cap",
          "[serial]") {
  TempFile log("serial_cap.log");
  const std::string rotated = log.path() + ".1";
  auto serial = Serial::Create("s", log.path(), false, 4096);
  REQUIRE(serial.ok());
  Serial& s = **serial;
  // 1 MiB of numbered 100-byte lines.
  for (int i = 0; i < 10'000; ++i) {
    std::string line = fmt::format("{:06d}", i) + std::string(93, 'x') + "\n";
    for (char c : line) s.Write(0, std::span<const uint8_t>(reinterpret_cast<uint8_t*>(&c), 1));
  }
  const std::string now = ReadWholeFile(log.path());
  const std::string before = ReadWholeFile(rotated);
  CHECK(now.size() <= 4096);
  CHECK(before.size() <= 4096);
  CHECK(before.size() > 4096 - 100);
  CHECK(s.log_rotations() > 200);
  // Whole lines, and the newest at the end.
  CHECK(now.substr(now.size() - 100) == "009999" + std::string(93, 'x') + "\n");
  CHECK(before.back() == '\n');
  // A line longer than the cap keeps its first cap bytes.
  for (int i = 0; i < 3 * 4096; ++i) s.Write(0, std::span<const uint8_t>(std::array<uint8_t, 1>{'y'}));
  s.Flush();
  CHECK(ReadWholeFile(log.path()).size() <= 4096);
  CHECK(Serial::Create("s", log.path(), false, 0).message() ==
        "vm 's': serial log size cap must be above 0");
  std::remove(rotated.c_str());
}

TEST_CASE("debug-exit reports the written value", "[serial]") {
  uint32_t got = 0;
  DebugExit d([&](uint32_t code) { got = code; });
  uint8_t v[4] = {0x34, 0x12, 0, 0};
  d.Write(0, std::span<const uint8_t>(v, 4));
  CHECK(got == 0x1234);
  d.Write(0, std::span<const uint8_t>(v, 1));
  CHECK(got == 0x34);
}

TEST_CASE("guest memory is bounds checked and shared through its memfd", "[memory]") {
  auto mem = GuestMemory::Create("mem-test", 1 << 20, false);
  REQUIRE(mem.ok());
  CHECK(mem->HostPtr(0, 1 << 20) != nullptr);
  CHECK(mem->HostPtr((1 << 20) - 8, 8) != nullptr);
  CHECK(mem->HostPtr((1 << 20) - 7, 8) == nullptr);
  CHECK(mem->HostPtr(~0ull - 2, 8) == nullptr);  // gpa + len would wrap
  CHECK(mem->HostPtr(8, ~0ull) == nullptr);
  uint64_t v = 0;
  CHECK_FALSE(mem->LoadAtomic<uint64_t>(4, &v));  // misaligned
  REQUIRE(mem->StoreAtomic<uint64_t>(0x1000, 0xfeedULL));

  // SAFETY: a second read-only mapping of the same memfd, unmapped below.
  void* other = ::mmap(nullptr, 1 << 20, PROT_READ, MAP_SHARED, mem->memfd(), 0);
  REQUIRE(other != MAP_FAILED);
  uint64_t seen;
  std::memcpy(&seen, static_cast<uint8_t*>(other) + 0x1000, 8);
  CHECK(seen == 0xfeed);
  REQUIRE(mem->Clear().ok());
  std::memcpy(&seen, static_cast<uint8_t*>(other) + 0x1000, 8);
  CHECK(seen == 0);
  ::munmap(other, 1 << 20);

  CHECK_FALSE(GuestMemory::Create("x", 1000, false).ok());
}

TEST_CASE("boot area: GDT, TSS I/O bitmap, identity pages, boot info", "[boot]") {
  auto mem = GuestMemory::Create("boot-test", 8ull << 20, false);
  REQUIRE(mem.ok());
  REQUIRE(WriteBootArea(*mem, "a=1 b=2", 2500000).ok());
  uint64_t gdt[7];
  REQUIRE(mem->Read(QV_BOOT_GDT_GPA, gdt, sizeof(gdt)));
  CHECK(gdt[0] == 0);
  CHECK(gdt[1] == 0x00af9b000000ffffULL);  // 64-bit kernel code
  CHECK(gdt[4] == 0x00affb000000ffffULL);  // 64-bit user code, DPL 3
  CHECK(((gdt[5] >> 16) & 0xffffff) == QV_BOOT_TSS_GPA);
  uint16_t iomap = 0;
  REQUIRE(mem->Read(QV_BOOT_TSS_GPA + 102, &iomap, 2));
  CHECK(iomap == 104);
  uint8_t b = 0;
  REQUIRE(mem->Read(QV_BOOT_TSS_GPA + 104 + 0x3f8 / 8, &b, 1));
  CHECK(b == 0);  // serial port allowed from ring 3
  REQUIRE(mem->Read(QV_BOOT_TSS_GPA + 104 + 8192, &b, 1));
  CHECK(b == 0xff);
  uint64_t pde = 0;
  REQUIRE(mem->Read(QV_BOOT_PD_GPA + 8 * 3, &pde, 8));
  CHECK(pde == ((3ull << 21) | 0x87));

  qv_boot_info info;
  REQUIRE(mem->Read(QV_BOOT_INFO_GPA, &info, sizeof(info)));
  CHECK(info.magic == QV_BOOT_INFO_MAGIC);
  CHECK(info.mem_bytes == 8ull << 20);
  CHECK(info.tsc_khz == 2500000);
  CHECK(info.cmdline_len == 7);
  // SAFETY: bytes as chars; the boot area wrote a NUL-terminated cmdline there.
  CHECK(std::string(reinterpret_cast<const char*>(mem->HostPtr(info.cmdline_gpa, 8))) == "a=1 b=2");
  REQUIRE(info.e820_count == 3);
  CHECK(info.e820[2].addr == 0x100000);
  CHECK(info.e820[2].size == (8ull << 20) - 0x100000);
  CHECK(info.e820[1].type == QV_E820_RESERVED);

  CHECK_FALSE(WriteBootArea(*mem, std::string(5000, 'x'), 0).ok());
  auto small = GuestMemory::Create("boot-small", 1 << 20, false);
  REQUIRE(small.ok());
  CHECK_FALSE(WriteBootArea(*small, "", 0).ok());
}

TEST_CASE("host resources and option checks", "[options]") {
  TempFile meminfo("meminfo");
  {
    std::ofstream f(meminfo.path());
    f << "MemTotal:       1000000 kB\nMemFree:         500000 kB\nMemAvailable:    262144 kB\n";
  }
  auto host = ReadHostResources(meminfo.path());
  REQUIRE(host.ok());
  CHECK(host->mem_available_bytes == 262144ull * 1024);
  CHECK(host->cpus >= 1);

  VmOptions o;
  o.name = "v";
  o.image = "x.elf";
  o.memory_bytes = 512ull << 20;
  Status s = CheckHostResources(o, {256ull << 20, 2});
  REQUIRE_FALSE(s.ok());
  CHECK(s.message() ==
        "vm 'v': memory 512MiB exceeds what the host has available (256MiB MemAvailable)");
  o.memory_bytes = 64ull << 20;
  o.vcpus = 4;
  s = CheckHostResources(o, {256ull << 20, 2});
  CHECK(s.message() == "vm 'v': 4 vcpus but the host has 2 CPUs online");
  o.vcpus = 2;
  CHECK(CheckHostResources(o, {256ull << 20, 2}).ok());
  CHECK(CheckHostResources(o, {256ull << 20, 2}, 192ull << 20).ok());
  s = CheckHostResources(o, {256ull << 20, 2}, 200ull << 20);
  CHECK(s.message() ==
        "vm 'v': memory 64MiB plus the 200MiB of the VMs already created exceeds what the host "
        "has available (256MiB MemAvailable)");

  CHECK(ValidateVmOptions(o).ok());
  o.memory_bytes = 1 << 20;
  CHECK(ValidateVmOptions(o).message().find("must be a multiple of 4KiB between 2MiB") !=
        std::string::npos);
  o.memory_bytes = 4ull << 30;
  CHECK_FALSE(ValidateVmOptions(o).ok());
  o.memory_bytes = 64ull << 20;
  o.image.clear();
  CHECK(ValidateVmOptions(o).message() == "vm 'v': no image given");

  auto missing = ReadHostResources("/nonexistent/meminfo");
  CHECK_FALSE(missing.ok());
}

}  // namespace
}  // namespace qosvisor::hv
