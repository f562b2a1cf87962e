// Range lookup for the port-I/O and MMIO buses.
// Accesses nobody claims are counted and read as all ones, like an empty ISA/PCI bus.
#include "hv/bus.h"

#include <fmt/format.h>

#include <algorithm>

namespace qosvisor::hv {

Status Bus::Register(uint64_t base, uint64_t size, Device* device) {
  if (size == 0 || base + size < base) {
    return Status::Error(fmt::format("{} bus: range [{:#x}, +{:#x}) for {} is empty or wraps",
                                     name_, base, size, device->name()));
  }
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < base + size) {
    return Status::Error(fmt::format("{} bus: {} at [{:#x}, {:#x}) overlaps {} at {:#x}", name_,
                                     device->name(), base, base + size, next->second.device->name(),
                                     next->first));
  }
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.size > base) {
      return Status::Error(fmt::format("{} bus: {} at [{:#x}, {:#x}) overlaps {} at {:#x}", name_,
                                       device->name(), base, base + size,
                                       prev->second.device->name(), prev->first));
    }
  }
  ranges_.emplace(base, Range{size, device});
  return Status::Ok();
}

Device* Bus::Find(uint64_t addr, uint64_t len, uint64_t* offset) const {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return nullptr;
  --it;
  uint64_t off = addr - it->first;
  if (off >= it->second.size || len > it->second.size - off) return nullptr;
  *offset = off;
  return it->second.device;
}

bool Bus::Read(uint64_t addr, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
  uint64_t offset = 0;
  Device* d = Find(addr, data.size(), &offset);
  if (d == nullptr) {
    unhandled_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  d->Read(offset, data);
  return true;
}

bool Bus::Write(uint64_t addr, std::span<const uint8_t> data) {
  uint64_t offset = 0;
  Device* d = Find(addr, data.size(), &offset);
  if (d == nullptr) {
    unhandled_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  d->Write(offset, data);
  return true;
}

}  // namespace qosvisor::hv
