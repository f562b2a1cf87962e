// A fixed-capacity hash table whose entries age out: MAC learning and per-flow state on the data
// path. No allocation after construction; when a probe window is full the stalest entry is
// replaced, so a flood of new keys degrades lookups to misses instead of failing.
#pragma once

#include <cstdint>
#include <memory>

namespace qosvisor {

template <typename Value>
class AgingTable {
 public:
  static constexpr uint32_t kProbe = 8;

  // capacity is rounded up to a power of two; ttl in the caller's time unit (e.g. TSC cycles).
  AgingTable(uint32_t capacity, uint64_t ttl) : ttl_(ttl) {
    uint32_t n = kProbe;
    while (n < capacity) n <<= 1;
    mask_ = n - 1;
    slots_ = std::make_unique<Slot[]>(n);
  }

  // The live value for key, or nullptr. Keys are nonzero (0 marks an empty slot).
  Value* Find(uint64_t key, uint64_t now) {
    Slot* s = Probe(key, now);
    return s != nullptr && s->key == key ? &s->value : nullptr;
  }

  // The value for key, inserted (value-initialised) if absent or aged out; refreshes its age.
  // `inserted` tells the caller whether the entry is new.
  Value& Upsert(uint64_t key, uint64_t now, bool& inserted) {
    Slot* s = Probe(key, now);
    inserted = s->key != key;
    if (inserted) {
      if (s->key != 0 && Live(*s, now)) ++evictions_;
      s->key = key;
      s->value = Value{};
    }
    s->seen = now;
    return s->value;
  }

  uint32_t capacity() const { return mask_ + 1; }
  uint64_t evictions() const { return evictions_; }
  uint32_t CountLive(uint64_t now) const {
    uint32_t n = 0;
    for (uint32_t i = 0; i <= mask_; ++i) n += slots_[i].key != 0 && Live(slots_[i], now);
    return n;
  }
  template <typename Fn>
  void ForEachLive(uint64_t now, Fn&& fn) const {
    for (uint32_t i = 0; i <= mask_; ++i) {
      if (slots_[i].key != 0 && Live(slots_[i], now)) fn(slots_[i].key, slots_[i].value);
    }
  }

 private:
  struct Slot {
    uint64_t key = 0;
    uint64_t seen = 0;
    Value value{};
  };
  bool Live(const Slot& s, uint64_t now) const { return now - s.seen <= ttl_; }
  static uint64_t Mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    return k ^ (k >> 33);
  }
  // The slot holding key, else the first empty or aged slot, else the stalest in the window.
  Slot* Probe(uint64_t key, uint64_t now) {
    const uint64_t start = Mix(key);
    Slot* reusable = nullptr;
    Slot* stalest = nullptr;
    for (uint32_t i = 0; i < kProbe; ++i) {
      Slot& s = slots_[(start + i) & mask_];
      if (s.key == key) return Live(s, now) ? &s : (s.key = 0, &s);
      const bool free = s.key == 0 || !Live(s, now);
      if (free && reusable == nullptr) reusable = &s;
      if (stalest == nullptr || s.seen < stalest->seen) stalest = &s;
    }
    return reusable != nullptr ? reusable : stalest;
  }

  uint64_t ttl_;
  uint32_t mask_ = 0;
  uint64_t evictions_ = 0;
  std::unique_ptr<Slot[]> slots_;
};

}  // namespace qosvisor
