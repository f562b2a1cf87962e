// virtio-mmio transport and vflash tests without KVM: the test plays a (sometimes hostile) guest
// driver, programming registers and writing rings into guest memory directly.
#include "hv/virtio_blk.h"

#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstring>
#include <filesystem>

#include "hv_test_util.h"

namespace qosvisor::hv {
namespace {

using testing::ReadWholeFile;
using testing::TempFile;

constexpr uint64_t kMemBytes = 1 << 20;
constexpr uint64_t kDesc = 0x1000, kAvail = 0x2000, kUsed = 0x3000;
constexpr uint64_t kHeader = 0x4000, kData = 0x5000, kStatus = 0x7000;
constexpr uint16_t kQueueSize = 8;

// Plays the guest driver of one virtio-mmio device.
class Driver {
 public:
  Driver(VirtioMmioDevice& dev, GuestMemory& mem) : dev_(dev), mem_(mem) {}

  uint32_t Reg(uint64_t off) {
    uint32_t v = 0;
    // SAFETY: the 4 bytes of v, viewed as bytes (allowed aliasing).
    dev_.Read(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), 4));
    return v;
  }
  void Set(uint64_t off, uint32_t v) {
    // SAFETY: as above.
    dev_.Write(off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), 4));
  }
  // Full init: features VERSION_1 (+ extra), one queue at the fixed ring addresses.
  bool Init(uint64_t extra_features = 0, uint64_t desc = kDesc) {
    Set(0x70, 0);
    Set(0x70, 1);
    Set(0x70, 3);
    uint64_t f = (1ull << 32) | extra_features;
    Set(0x24, 0);
    Set(0x20, static_cast<uint32_t>(f));
    Set(0x24, 1);
    Set(0x20, static_cast<uint32_t>(f >> 32));
    Set(0x70, 3 | 8);
    if (!(Reg(0x70) & 8)) return false;
    Set(0x30, 0);
    Set(0x38, kQueueSize);
    Set(0x80, static_cast<uint32_t>(desc));
    Set(0x84, static_cast<uint32_t>(desc >> 32));
    Set(0x90, kAvail);
    Set(0xa0, kUsed);
    Set(0x44, 1);
    Set(0x70, 3 | 8 | 4);
    return (Reg(0x70) & 0x40) == 0;
  }
  void Desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next) {
    uint8_t d[16];
    std::memcpy(d, &addr, 8);
    std::memcpy(d + 8, &len, 4);
    std::memcpy(d + 12, &flags, 2);
    std::memcpy(d + 14, &next, 2);
    REQUIRE(mem_.Write(kDesc + 16ull * i, d, 16));
  }
  // Publishes `head` and notifies queue 0.
  void Kick(uint16_t head, uint16_t idx_step = 1) {
    REQUIRE(mem_.Write(kAvail + 4 + 2ull * (avail_idx_ % kQueueSize), &head, 2));
    avail_idx_ = static_cast<uint16_t>(avail_idx_ + idx_step);
    REQUIRE(mem_.Write(kAvail + 2, &avail_idx_, 2));
    Set(0x50, 0);
  }
  uint16_t UsedIdx() {
    uint16_t v = 0;
    REQUIRE(mem_.Read(kUsed + 2, &v, 2));
    return v;
  }
  // A three-descriptor blk request; returns the status byte the device wrote.
  uint8_t Blk(uint32_t type, uint64_t sector, uint32_t len, bool data_writable) {
    uint32_t hdr[4] = {type, 0, static_cast<uint32_t>(sector), static_cast<uint32_t>(sector >> 32)};
    REQUIRE(mem_.Write(kHeader, hdr, 16));
    uint8_t ff = 0xff;
    REQUIRE(mem_.Write(kStatus, &ff, 1));
    Desc(0, kHeader, 16, 1, 1);
    Desc(1, kData, len, static_cast<uint16_t>(1 | (data_writable ? 2 : 0)), 2);
    Desc(2, kStatus, 1, 2, 0);
    Kick(0);
    uint8_t s = 0;
    REQUIRE(mem_.Read(kStatus, &s, 1));
    return s;
  }

 private:
  VirtioMmioDevice& dev_;
  GuestMemory& mem_;
  uint16_t avail_idx_ = 0;
};

struct Fixture {
  TempFile disk{"vflash.img"};
  TempFile meta{"vflash.img.meta"};
  GuestMemory mem = std::move(GuestMemory::Create("blk-test", kMemBytes, false)).value();
  std::unique_ptr<VirtioBlk> blk;
  Fixture() {
    auto b = VirtioBlk::Create(mem, VflashOptions{disk.path(), 64 * 1024, "flash0"});
    REQUIRE(b.ok());
    blk = std::move(b).value();
  }
};

TEST_CASE("vflash serves read, write, flush and get-id", "[virtio][blk]") {
  Fixture f;
  Driver d(*f.blk, f.mem);
  CHECK(d.Reg(0x000) == 0x74726976);
  CHECK(d.Reg(0x004) == 2);
  CHECK(d.Reg(0x008) == 2);
  REQUIRE(d.Init(1ull << 9));
  CHECK(f.blk->driver_ok());
  CHECK(d.Reg(0x100) == 128);  // capacity in sectors

  std::vector<uint8_t> pattern(1024);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(i * 3);
  REQUIRE(f.mem.Write(kData, pattern.data(), pattern.size()));
  CHECK(d.Blk(1, 4, 1024, false) == 0);
  CHECK(d.Blk(4, 0, 0, true) == 0);  // flush; its empty data descriptor carries nothing
  std::vector<uint8_t> zero(1024, 0);
  REQUIRE(f.mem.Write(kData, zero.data(), zero.size()));
  CHECK(d.Blk(0, 4, 1024, true) == 0);
  std::vector<uint8_t> back(1024);
  REQUIRE(f.mem.Read(kData, back.data(), back.size()));
  CHECK(back == pattern);
  std::string file = ReadWholeFile(f.disk.path());
  REQUIRE(file.size() == 64 * 1024);
  CHECK(std::memcmp(file.data() + 4 * 512, pattern.data(), 1024) == 0);

  CHECK(d.Blk(8, 0, 20, true) == 0);
  char id[21] = {};
  REQUIRE(f.mem.Read(kData, id, 20));
  CHECK(std::string(id) == "flash0");

  CHECK(d.Blk(0, 127, 1024, true) == 1);  // runs past the end: IOERR
  CHECK(d.Blk(0, 0, 100, true) == 1);     // not a whole sector
  CHECK(d.Blk(99, 0, 512, true) == 2);    // unsupported
  auto c = f.blk->blk_counters();
  CHECK(c.writes == 1);
  CHECK(c.reads == 3);
  CHECK(c.get_ids == 1);
  CHECK(c.io_errors == 2);
  CHECK(c.flushes == 1);
  CHECK(c.unsupported == 1);
  CHECK(d.UsedIdx() == 7);
  CHECK_FALSE(f.blk->is_broken());
  CHECK(f.blk->counters().interrupts == 7);
}

TEST_CASE("vflash resize grows the file, writes metadata atomically, tells the guest",
          "[virtio][blk]") {
  Fixture f;
  Driver d(*f.blk, f.mem);
  REQUIRE(d.Init());
  uint32_t gen = d.Reg(0xfc);
  Status s = f.blk->Resize(32 * 1024);
  REQUIRE_FALSE(s.ok());
  CHECK(s.message().find("only growing is supported") != std::string::npos);
  CHECK_FALSE(f.blk->Resize(100000 + 1).ok());
  REQUIRE(f.blk->Resize(256 * 1024).ok());
  CHECK(f.blk->capacity_bytes() == 256 * 1024);
  CHECK(std::filesystem::file_size(f.disk.path()) == 256 * 1024);
  CHECK(ReadWholeFile(f.meta.path()).find("\"size_bytes\":262144") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(f.meta.path() + ".tmp"));
  CHECK(d.Reg(0x100) == 512);
  CHECK(d.Reg(0xfc) == gen + 1);
  CHECK((d.Reg(0x60) & 2) != 0);  // config-change interrupt pending
  d.Set(0x64, 2);
  CHECK((d.Reg(0x60) & 2) == 0);
  CHECK(f.blk->counters().config_interrupts == 1);
  // The new end of the disk is usable.
  CHECK(d.Blk(0, 511, 512, true) == 0);

  // Reopening takes the size from the metadata, and grows a file a crash left short.
  f.blk.reset();
  REQUIRE(::truncate(f.disk.path().c_str(), 1024) == 0);
  auto again = VirtioBlk::Create(f.mem, VflashOptions{f.disk.path(), 4096, ""});
  REQUIRE(again.ok());
  CHECK((*again)->capacity_bytes() == 256 * 1024);
  CHECK(std::filesystem::file_size(f.disk.path()) == 256 * 1024);
}

namespace {

// What a refused or failed resize must leave alone: the file, its metadata, the guest's view.
struct DiskState {
  uint64_t file_bytes, capacity;
  std::string meta;
  uint32_t config_generation;
  bool operator==(const DiskState&) const = default;
};

DiskState StateOf(const std::string& path, VirtioBlk& blk, Driver& d) {
  return {std::filesystem::file_size(path), blk.capacity_bytes(),
          ReadWholeFile(VirtioBlk::MetadataPath(path)), d.Reg(0xfc)};
}

// A tmpfs of `bytes` mounted on a fresh directory, unmounted and removed at the end.
class SmallTmpfs {
 public:
  explicit SmallTmpfs(uint64_t bytes) : dir_("/tmp/qv-hv-test-" + std::to_string(getpid()) + "-fs") {
    std::filesystem::create_directory(dir_);
    const std::string opts = "size=" + std::to_string(bytes) + ",mode=0700";
    mounted_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) == 0;
  }
  ~SmallTmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    std::filesystem::remove_all(dir_);
  }
  bool mounted() const { return mounted_; }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
  bool mounted_ = false;
};

}  // namespace

TEST_CASE("vflash files are the owner's alone, resize stays within max_size", "[virtio][blk]") {
  TempFile disk("capped.img"), meta("capped.img.meta");
  auto mem = GuestMemory::Create("blk-cap", kMemBytes, false);
  REQUIRE(mem.ok());
  auto blk = VirtioBlk::Create(*mem, VflashOptions{disk.path(), 64 * 1024, "", 128 * 1024});
  REQUIRE(blk.ok());
  struct stat st {};
  REQUIRE(::stat(disk.path().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat(meta.path().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  Driver d(**blk, *mem);
  REQUIRE(d.Init());
  const DiskState before = StateOf(disk.path(), **blk, d);
  CHECK((*blk)->Resize(256 * 1024).message() ==
        "vflash '" + disk.path() + "': 262144 bytes is above the disk's max_size of 131072");
  CHECK(StateOf(disk.path(), **blk, d) == before);
  CHECK((*blk)->Resize(128 * 1024).ok());
}

TEST_CASE("a grow the file system cannot hold leaves disk, metadata and guest view as they were",
          "[virtio][blk]") {
  if (geteuid() != 0) {
    WARN("SKIP: mounting a small tmpfs needs root");
    return;
  }
  SmallTmpfs fs(1 << 20);
  REQUIRE(fs.mounted());
  auto mem = GuestMemory::Create("blk-full", kMemBytes, false);
  REQUIRE(mem.ok());
  const std::string path = fs.Path("disk.img");
  auto blk = VirtioBlk::Create(*mem, VflashOptions{path, 64 * 1024, "", 0});
  REQUIRE(blk.ok());
  Driver d(**blk, *mem);
  REQUIRE(d.Init());
  const DiskState before = StateOf(path, **blk, d);
  // More than the file system has free: refused up front.
  const Status too_big = (*blk)->Resize(4 << 20);
  CHECK_THAT(too_big.message(), Catch::Contains("free on its file system"));
  CHECK(StateOf(path, **blk, d) == before);
  // A grow that passes the checks but fails while allocating (here: the file-size limit, which
  // makes fallocate fail with EFBIG) is rolled back. In a child, whose limit it is.
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    const rlimit limit{128 * 1024, 128 * 1024};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    const Status failed = (*blk)->Resize(512 * 1024);
    const bool reported = failed.message().find("growing to 524288 bytes") != std::string::npos;
    _exit(!reported ? 2 : StateOf(path, **blk, d) == before ? 0 : 3);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // 2: not reported as a failed grow; 3: state changed
  CHECK(StateOf(path, **blk, d) == before);
  // Within the file system's room it grows.
  CHECK((*blk)->Resize(512 * 1024).ok());
  CHECK(std::filesystem::file_size(path) == 512 * 1024);
}

TEST_CASE("vflash create errors", "[virtio][blk]") {
  auto mem = GuestMemory::Create("blk-err", kMemBytes, false);
  REQUIRE(mem.ok());
  auto r = VirtioBlk::Create(*mem, VflashOptions{"/nonexistent-dir/disk.img", 4096, ""});
  REQUIRE_FALSE(r.ok());
  CHECK(r.message().find("vflash '/nonexistent-dir/disk.img': cannot open") == 0);
  TempFile odd("odd.img"), odd_meta("odd.img.meta");
  r = VirtioBlk::Create(*mem, VflashOptions{odd.path(), 1000, ""});
  REQUIRE_FALSE(r.ok());
  CHECK(r.message().find("is not a multiple of 512") != std::string::npos);
  {
    std::ofstream m(odd_meta.path());
    m << "not json";
  }
  r = VirtioBlk::Create(*mem, VflashOptions{odd.path(), 4096, ""});
  REQUIRE_FALSE(r.ok());
  CHECK(r.message().find("is not valid JSON") != std::string::npos);
}

TEST_CASE("hostile virtqueue input marks the device broken and the host carries on",
          "[virtio][hostile]") {
  Fixture f;
  Driver d(*f.blk, f.mem);
  REQUIRE(d.Init());
  std::string expect;

  SECTION("descriptor outside guest memory") {
    d.Desc(0, kMemBytes - 8, 16, 0, 0);
    d.Kick(0);
    expect = "outside guest memory";
  }
  SECTION("absurd length") {
    d.Desc(0, kHeader, 0xffffffff, 0, 0);
    d.Kick(0);
    expect = "outside guest memory";
  }
  SECTION("descriptor loop") {
    d.Desc(0, kHeader, 16, 1, 1);
    d.Desc(1, kData, 16, 1, 0);
    d.Kick(0);
    expect = "or a loop";
  }
  SECTION("next index beyond the queue") {
    d.Desc(0, kHeader, 16, 1, 200);
    d.Kick(0);
    expect = "links to 200";
  }
  SECTION("head index beyond the queue") {
    d.Kick(77);
    expect = "head descriptor 77";
  }
  SECTION("avail index jump") {
    d.Desc(0, kHeader, 16, 0, 0);
    d.Kick(0, 1000);
    expect = "avail index jumped";
  }
  SECTION("indirect descriptor") {
    d.Desc(0, kHeader, 16, 4, 0);
    d.Kick(0);
    expect = "indirect";
  }
  SECTION("readable after writable") {
    d.Desc(0, kHeader, 16, 2 | 1, 1);
    d.Desc(1, kData, 16, 0, 0);
    d.Kick(0);
    expect = "after a writable";
  }
  SECTION("request without status byte") {
    d.Desc(0, kHeader, 16, 0, 0);
    d.Kick(0);
    expect = "without a 16-byte header and a status byte";
  }
  CHECK(f.blk->is_broken());
  CHECK_FALSE(f.blk->driver_ok());
  CHECK(f.blk->broken_reason().find(expect) != std::string::npos);
  CHECK(f.blk->counters().broken == 1);
  CHECK((d.Reg(0x70) & 0x40) != 0);  // DEVICE_NEEDS_RESET
  CHECK(d.UsedIdx() == 0);
  // Further notifications are ignored, and a reset brings the device back.
  d.Kick(0);
  CHECK(f.blk->counters().broken == 1);
  REQUIRE(d.Init());
  CHECK_FALSE(f.blk->is_broken());
}

TEST_CASE("bad ring placement and bad registers are refused", "[virtio][hostile]") {
  Fixture f;
  Driver d(*f.blk, f.mem);
  // Rings beyond guest memory: the queue never goes live.
  CHECK_FALSE(d.Init(0, kMemBytes - 16));
  CHECK(f.blk->is_broken());
  CHECK(f.blk->broken_reason().find("ring outside guest memory") != std::string::npos);

  Fixture g;
  Driver e(*g.blk, g.mem);
  uint64_t before = g.blk->counters().bad_register;
  e.Set(0x0c8, 1);           // no such register
  CHECK(e.Reg(0x0c8) == 0);  // left untouched (on a real bus: the all-ones pre-fill)
  uint8_t byte = 1;
  g.blk->Write(0x070, std::span<const uint8_t>(&byte, 1));  // wrong width
  CHECK(g.blk->counters().bad_register == before + 3);
  CHECK(g.blk->status() == 0);
  // Features the device did not offer make FEATURES_OK fail.
  e.Set(0x70, 3);
  e.Set(0x24, 0);
  e.Set(0x20, 1u << 31);
  e.Set(0x24, 1);
  e.Set(0x20, 1);
  e.Set(0x70, 3 | 8);
  CHECK((e.Reg(0x70) & 8) == 0);
  // A legacy driver (no VERSION_1) is refused as well.
  e.Set(0x70, 0);
  e.Set(0x70, 3);
  e.Set(0x70, 3 | 8);
  CHECK((e.Reg(0x70) & 8) == 0);
  // Notifying an unknown queue or before DRIVER_OK does nothing.
  e.Set(0x50, 5);
  e.Set(0x50, 0);
  CHECK(e.UsedIdx() == 0);
}

TEST_CASE("a tracked disk reports the blocks the guest wrote and, unasked, the blocks with data",
          "[virtio][blk][migration]") {
  Fixture f;
  Driver d(*f.blk, f.mem);
  REQUIRE(d.Init(1ull << 9));
  CHECK(f.blk->TakeWrittenBlocks().empty());  // nothing before tracking starts
  f.blk->TrackWrites(true);
  std::vector<uint8_t> pattern(1024, 0x5a);
  REQUIRE(f.mem.Write(kData, pattern.data(), pattern.size()));
  CHECK(d.Blk(1, 4, 1024, false) == 0);  // a write: block 0 of 64 KiB
  CHECK(d.Blk(0, 4, 1024, true) == 0);   // a read changes no block
  auto written = f.blk->TakeWrittenBlocks();
  REQUIRE(written.size() == 1);
  CHECK(written[0] == 1);
  CHECK(f.blk->TakeWrittenBlocks().empty());  // taking clears
  // The read wrote guest memory through HostPtr: tracked pages see it when tracking is on.
  f.mem.TrackWrites(true);
  CHECK(d.Blk(0, 4, 1024, true) == 0);
  auto pages = f.mem.TakeWrittenPages();
  CHECK((pages[kData / 4096 / 64] >> (kData / 4096 % 64) & 1) == 1);
  f.blk->TrackWrites(false);

  auto allocated = f.blk->AllocatedBlocks();
  REQUIRE(allocated.ok());
  CHECK((*allocated)[0] == 1);  // the file's only data is in block 0
  auto block = f.blk->ReadBlock(0);
  REQUIRE(block.ok());
  CHECK(block->size() == 64 * 1024);
  CHECK((*block)[4 * 512] == 0x5a);
  CHECK_FALSE(f.blk->ReadBlock(1).ok());  // beyond the 64 KiB disk
  CHECK_FALSE(f.blk->WriteBlock(0, std::vector<uint8_t>(64 * 1024 + 1)).ok());
  REQUIRE(f.blk->WriteBlock(0, std::vector<uint8_t>(512, 7)).ok());
  CHECK(ReadWholeFile(f.disk.path())[0] == 7);
}

}  // namespace
}  // namespace qosvisor::hv
