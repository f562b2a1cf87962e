// A 16550 UART at 0x3f8, output only: guest bytes go, a line at a time, to a per-VM log file and
// optionally to the console. It raises no interrupts (the guest polls LSR, which is always ready).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"
#include "hv/bus.h"
#include "hv/unique_fd.h"

namespace qosvisor::hv {

class Serial : public Device {
 public:
  static constexpr uint64_t kPortBase = 0x3f8;
  static constexpr uint64_t kPortCount = 8;
  static constexpr size_t kMaxLine = 4096;  // longer lines are written in pieces

  // log_path empty: no log file. The file is truncated: one log per VM run.
  static Result<std::unique_ptr<Serial>> Create(const std::string& vm_name,
                                                const std::string& log_path, bool console);
  ~Serial() override;

  const char* name() const override { return "serial"; }
  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // Writes a partial last line out (on stop).
  void Flush();
  // Truncates the log (a restart starts a fresh log) and resets the counters.
  void Reset();

  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  uint64_t lines() const { return lines_.load(std::memory_order_relaxed); }
  // steady_clock time (ns since epoch of steady_clock) at which the first line ended; 0 if none.
  int64_t first_line_ns() const { return first_line_ns_.load(std::memory_order_acquire); }

 private:
  Serial(std::string vm_name, UniqueFd log, bool console)
      : vm_name_(std::move(vm_name)), log_(std::move(log)), console_(console) {}
  void EmitLocked();

  std::string vm_name_;
  UniqueFd log_;
  bool console_;
  std::mutex mu_;
  std::string line_;      // guarded by mu_
  uint8_t regs_[8] = {};  // scratch/LCR/MCR/IER/divisor, guarded by mu_
  uint8_t dll_ = 0, dlm_ = 0;
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> lines_{0};
  std::atomic<int64_t> first_line_ns_{0};
};

}  // namespace qosvisor::hv
