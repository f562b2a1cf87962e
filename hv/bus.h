// Port-I/O and MMIO buses, as in kvmtool: devices register address ranges and implement
// Read/Write; the vCPU exit loop dispatches each access to the device whose range holds it.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <span>
#include <string>

#include "common/status.h"

namespace qosvisor::hv {

// A device on a bus. `offset` is relative to the start of the range it registered; `data` is the
// access (1, 2, 4 or 8 bytes, guest byte order). Called from vCPU threads, possibly several at
// once: devices serialize their own state.
class Device {
 public:
  virtual ~Device() = default;
  virtual const char* name() const = 0;
  // Fill `data`; bytes left untouched read as whatever the bus pre-filled (all ones).
  virtual void Read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void Write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class Bus {
 public:
  explicit Bus(std::string name) : name_(std::move(name)) {}
  // Registers [base, base + size) for `device` (not owned). Refuses empty or overlapping ranges.
  // Not thread-safe with accesses: register everything before vCPUs run.
  Status Register(uint64_t base, uint64_t size, Device* device);

  // Dispatch an access; returns false if no device owns it (reads then return all ones).
  bool Read(uint64_t addr, std::span<uint8_t> data);
  bool Write(uint64_t addr, std::span<const uint8_t> data);

  uint64_t unhandled() const { return unhandled_.load(std::memory_order_relaxed); }

 private:
  struct Range {
    uint64_t size;
    Device* device;
  };
  // The device whose range holds [addr, addr + len) entirely; nullptr if none.
  Device* Find(uint64_t addr, uint64_t len, uint64_t* offset) const;

  std::string name_;
  std::map<uint64_t, Range> ranges_;  // keyed by base
  std::atomic<uint64_t> unhandled_{0};
};

}  // namespace qosvisor::hv
