// isa-debug-exit for test guests, as QEMU's device: one write ends the VM with a status code.
// QEMU exits with (v << 1) | 1; qosvisor reports v itself as the guest's exit code.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "hv/bus.h"

namespace qosvisor::hv {

// isa-debug-exit at 0xf4 (4 ports): a guest write of v ends the VM with exit code v.
class DebugExit : public Device {
 public:
  static constexpr uint64_t kPortBase = 0xf4;
  static constexpr uint64_t kPortCount = 4;
  using Callback = std::function<void(uint32_t code)>;
  explicit DebugExit(Callback on_exit) : on_exit_(std::move(on_exit)) {}
  const char* name() const override { return "debug-exit"; }
  void Read(uint64_t, std::span<uint8_t>) override {}
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  Callback on_exit_;
};

}  // namespace qosvisor::hv
