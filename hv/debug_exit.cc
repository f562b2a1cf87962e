// The debug-exit port: a guest write of v hands v to the VM as its exit code.
// Reads are ignored (QEMU's device has no readable state either).
#include "hv/debug_exit.h"

#include <algorithm>
#include <cstring>

namespace qosvisor::hv {

void DebugExit::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset != 0) return;
  uint32_t code = 0;
  std::memcpy(&code, data.data(), std::min<size_t>(data.size(), 4));
  on_exit_(code);
}

}  // namespace qosvisor::hv
