// Fuzz target: virtio-mmio register sequences from a hostile driver, against a vflash device
// whose rings and requests live in guest memory the input also fills. Reads, writes and queue
// notifications in any order and with any values: the device may end up broken, but the host
// must not crash or touch memory outside the guest's.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "hv/guest_memory.h"
#include "hv/virtio_blk.h"

namespace {

using qosvisor::hv::GuestMemory;
using qosvisor::hv::VirtioBlk;

constexpr uint64_t kMemBytes = 64 * 1024;
constexpr uint64_t kConfigSpace = 0x100;

struct Rig {
  GuestMemory mem = std::move(GuestMemory::Create("fuzz-mmio", kMemBytes, false)).value();
  std::string disk = "/tmp/qv-fuzz-mmio-" + std::to_string(getpid()) + ".img";
  std::unique_ptr<VirtioBlk> blk;
  Rig() {
    blk = std::move(VirtioBlk::Create(mem, {disk, 64 * 1024, "fuzz", 0})).value();
    std::remove(VirtioBlk::MetadataPath(disk).c_str());
    ::unlink(disk.c_str());  // the open descriptor keeps it; nothing is left behind
  }
};

Rig& TheRig() {
  static Rig rig;
  return rig;
}

// One register operation per 7 input bytes: op, offset (16 bits), value (32 bits).
void Apply(VirtioBlk& dev, const uint8_t* op) {
  uint16_t offset;
  uint32_t value;
  std::memcpy(&offset, op + 1, 2);
  std::memcpy(&value, op + 3, 4);
  // Mostly the transport's registers and the config space; sometimes anywhere in the window.
  const uint64_t off = (op[0] & 0x80) ? offset % 0x1000 : offset % (kConfigSpace + 0x40);
  const size_t width = size_t{1} << ((op[0] >> 4) & 3);  // 1, 2, 4 or 8 bytes
  uint8_t bytes[8] = {};
  std::memcpy(bytes, &value, 4);
  if (op[0] & 1) {
    dev.Write(off, std::span<const uint8_t>(bytes, width));
  } else {
    dev.Read(off, std::span<uint8_t>(bytes, width));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Rig& rig = TheRig();
  rig.blk->Reset();
  // The first half of the input (up to 16 KiB) is guest memory, the rest register operations.
  const size_t image = size / 2 < 16384 ? size / 2 : 16384;
  std::vector<uint8_t> mem(kMemBytes, 0);
  if (image > 0) std::memcpy(mem.data(), data, image);
  if (!rig.mem.Write(0, mem.data(), mem.size())) __builtin_trap();
  for (size_t i = image; i + 7 <= size; i += 7) Apply(*rig.blk, data + i);
  return 0;
}
