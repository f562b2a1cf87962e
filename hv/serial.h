// A 16550 UART at 0x3f8, output only: guest bytes go, a line at a time, to a per-VM log file and
// optionally to the console. It raises no interrupts (the guest polls LSR, which is always ready).
// The log is capped: a guest printing forever keeps at most the log and one rotated file (LOG.1).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"
#include "hv/bus.h"
#include "hv/state_codec.h"
#include "hv/unique_fd.h"

namespace qosvisor::hv {

class Serial : public Device {
 public:
  static constexpr uint64_t kPortBase = 0x3f8;
  static constexpr uint64_t kPortCount = 8;
  static constexpr size_t kMaxLine = 4096;  // longer lines are written in pieces

  static constexpr uint64_t kDefaultLogMaxBytes = 1 << 20;

  // log_path empty: no log file. The file is truncated: one log per VM run. When the next line
  // would take it past log_max_bytes it is renamed to log_path + ".1" (replacing the previous
  // one) and started afresh.
  static Result<std::unique_ptr<Serial>> Create(const std::string& vm_name,
                                                const std::string& log_path, bool console,
                                                uint64_t log_max_bytes = kDefaultLogMaxBytes);
  ~Serial() override;

  const char* name() const override { return "serial"; }
  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // UART registers and the line being assembled (the log file itself is not guest state).
  std::vector<uint8_t> SaveState();
  Status LoadState(std::span<const uint8_t> state);

  // Writes a partial last line out (on stop).
  void Flush();
  // Forgets a partial last line: the VM migrated, and the line, part of the saved state, goes
  // on and is written on the destination.
  void DropPartialLine();
  // Truncates the log (a restart starts a fresh log) and resets the counters.
  void Reset();

  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  uint64_t lines() const { return lines_.load(std::memory_order_relaxed); }
  uint64_t log_rotations() const { return rotations_.load(std::memory_order_relaxed); }
  // steady_clock time (ns since epoch of steady_clock) at which the first line ended; 0 if none.
  int64_t first_line_ns() const { return first_line_ns_.load(std::memory_order_acquire); }

 private:
  Serial(std::string vm_name, std::string log_path, UniqueFd log, bool console,
         uint64_t log_max_bytes)
      : vm_name_(std::move(vm_name)),
        log_path_(std::move(log_path)),
        log_(std::move(log)),
        console_(console),
        log_max_bytes_(log_max_bytes) {}
  void EmitLocked();
  void WriteLogLocked(const std::string& text);
  void RotateLocked();

  std::string vm_name_;
  std::string log_path_;
  UniqueFd log_;
  bool console_;
  uint64_t log_max_bytes_;
  uint64_t log_bytes_ = 0;  // in the current log file, guarded by mu_
  std::mutex mu_;
  std::string line_;      // guarded by mu_
  uint8_t regs_[8] = {};  // scratch/LCR/MCR/IER/divisor, guarded by mu_
  uint8_t dll_ = 0, dlm_ = 0;
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> lines_{0};
  std::atomic<int64_t> first_line_ns_{0};
  std::atomic<uint64_t> rotations_{0};
};

}  // namespace qosvisor::hv
