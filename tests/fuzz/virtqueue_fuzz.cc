// Fuzz target: a split virtqueue over guest memory the input fills: ring placement, size,
// descriptors, avail entries and indexes are all the guest's. Every chain popped must lie inside
// guest memory and stay within the chain bound; copies must stay inside the chain.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "hv/guest_memory.h"
#include "hv/virtqueue.h"

namespace {

using qosvisor::hv::GuestMemory;
using qosvisor::hv::Virtqueue;

constexpr uint64_t kMemBytes = 64 * 1024;

GuestMemory& Memory() {
  static GuestMemory mem = std::move(GuestMemory::Create("fuzz-vq", kMemBytes, false)).value();
  return mem;
}

// Reads an integer from the front of the input (zero past its end).
template <typename T>
T Take(const uint8_t*& data, size_t& size) {
  T v{};
  const size_t n = size < sizeof(T) ? size : sizeof(T);
  if (n == 0) return v;  // (an empty input may come with a null pointer)
  std::memcpy(&v, data, n);
  data += n;
  size -= n;
  return v;
}

void CheckChain(const GuestMemory& mem, const Virtqueue::Chain& c) {
  if (c.readable < 0 || c.writable < 0 || c.readable + c.writable > Virtqueue::kMaxChain) {
    __builtin_trap();
  }
  uint64_t readable = 0, writable = 0;
  for (int i = 0; i < c.readable + c.writable; ++i) {
    if (!mem.Contains(c.bufs[i].gpa, c.bufs[i].len)) __builtin_trap();
    (i < c.readable ? readable : writable) += c.bufs[i].len;
  }
  if (readable != c.readable_bytes || writable != c.writable_bytes) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  GuestMemory& mem = Memory();
  Virtqueue q;
  q.size = Take<uint16_t>(data, size);
  // Ring addresses mostly inside the 64 KiB, sometimes anywhere.
  const uint8_t wide = Take<uint8_t>(data, size);
  auto gpa = [&](uint64_t raw) { return (wide & 1) ? raw : raw % kMemBytes; };
  q.desc_gpa = gpa(Take<uint64_t>(data, size));
  q.avail_gpa = gpa(Take<uint64_t>(data, size));
  q.used_gpa = gpa(Take<uint64_t>(data, size));
  const bool event_idx = (wide & 2) != 0;
  // The rest of the input is guest memory.
  std::vector<uint8_t> image(kMemBytes, 0);
  if (size > 0) std::memcpy(image.data(), data, size < kMemBytes ? size : kMemBytes);
  if (!mem.Write(0, image.data(), image.size())) __builtin_trap();
  q.ready = true;
  if (!q.Activate(&mem, event_idx)) return 0;
  Virtqueue::Chain chain;
  uint8_t scratch[4096];
  for (int i = 0; i < 512; ++i) {
    const Virtqueue::PopResult r = q.Pop(&chain);
    if (r != Virtqueue::PopResult::kChain) break;
    CheckChain(mem, chain);
    const uint64_t offset = chain.head % 97;
    const uint64_t got = qosvisor::hv::CopyFromChain(mem, chain, offset, scratch, sizeof(scratch));
    if (got > chain.readable_bytes) __builtin_trap();
    const uint64_t put = qosvisor::hv::CopyToChain(mem, chain, offset, scratch, sizeof(scratch));
    if (put > chain.writable_bytes) __builtin_trap();
    q.PushUsed(chain.head, static_cast<uint32_t>(put));
    q.ShouldInterrupt();
    q.PublishAvailEvent();
    q.Pending();
  }
  return 0;
}
