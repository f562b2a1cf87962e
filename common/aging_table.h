// A fixed-capacity hash table whose entries age out: MAC learning and per-flow state on the data
// path. No allocation after construction; when a probe window is full the stalest entry is
// replaced, so a flood of new keys degrades lookups to misses instead of failing. It keeps count
// of the entries it holds, so statistics never scan it on the data path.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>

namespace qosvisor {

template <typename Value>
class AgingTable {
 public:
  static constexpr uint32_t kProbe = 8;
  // Slots Age() looks at per call: a bounded cost per poll.
  static constexpr uint32_t kAgeSlots = 64;

  // capacity is rounded up to a power of two; ttl in the caller's time unit (e.g. TSC cycles).
  AgingTable(uint32_t capacity, uint64_t ttl) : ttl_(ttl) {
    uint32_t n = kProbe;
    while (n < capacity) n <<= 1;
    mask_ = n - 1;
    slots_ = std::make_unique<Slot[]>(n);
    // Age() passes over the whole table eight times per ttl, so an entry that aged out leaves
    // size() at most an eighth of the ttl late.
    const uint64_t rounds = (n + kAgeSlots - 1) / kAgeSlots;
    age_interval_ = std::max<uint64_t>(ttl / 8 / rounds, 1);
  }

  // The live value for key, or nullptr. Keys are nonzero (0 marks an empty slot).
  Value* Find(uint64_t key, uint64_t now) {
    Slot* s = Probe(key, now);
    return s != nullptr && s->key == key ? &s->value : nullptr;
  }

  // The value for key, inserted (value-initialised) if absent or aged out; refreshes its age.
  // `inserted` tells the caller whether the entry is new.
  Value& Upsert(uint64_t key, uint64_t now, bool& inserted) {
    uint64_t last_seen;
    return Upsert(key, now, inserted, last_seen);
  }
  // The same, telling when the entry was last upserted before (meaningless when inserted).
  Value& Upsert(uint64_t key, uint64_t now, bool& inserted, uint64_t& last_seen) {
    Slot* s = Probe(key, now);
    last_seen = s->seen;
    inserted = s->key != key;
    if (inserted) {
      if (s->key == 0) {
        ++size_;
      } else if (Live(*s, now)) {
        ++evictions_;
      }
      s->key = key;
      s->value = Value{};
    }
    s->seen = now;
    return s->value;
  }

  // Reclaims the slots of aged-out entries, kAgeSlots at a time and only as often as needed to
  // keep size() within an eighth of the ttl. The owner calls it every poll.
  void Age(uint64_t now) {
    if (now >= next_age_) AgeSome(now);
  }

  // Entries held: inserted, and neither replaced nor reclaimed since. O(1). An entry that aged
  // out is no longer found at once, and leaves this count when Age(), a lookup or a new key
  // reclaims its slot.
  uint32_t size() const { return size_; }
  uint32_t capacity() const { return mask_ + 1; }
  uint64_t evictions() const { return evictions_; }  // live entries replaced by new keys
  // Calls f(key, value, seen) for every live entry: a scan of the whole table, for the owner to
  // run on request only (dumps), never per packet.
  template <typename F>
  void ForEachLive(uint64_t now, F&& f) const {
    for (uint32_t i = 0; i <= mask_; ++i) {
      const Slot& s = slots_[i];
      if (s.key != 0 && Live(s, now)) f(s.key, s.value, s.seen);
    }
  }

 private:
  struct Slot {
    uint64_t key = 0;
    uint64_t seen = 0;
    Value value{};
  };
  bool Live(const Slot& s, uint64_t now) const { return now - s.seen <= ttl_; }
  void Clear(Slot& s) {
    s.key = 0;
    --size_;
  }
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
      if (s.key == key) {
        if (!Live(s, now)) Clear(s);
        return &s;
      }
      const bool free = s.key == 0 || !Live(s, now);
      if (free && reusable == nullptr) reusable = &s;
      if (stalest == nullptr || s.seen < stalest->seen) stalest = &s;
    }
    return reusable != nullptr ? reusable : stalest;
  }

  // Cold: it runs once per age interval, and the poll loop that checks for it stays straight.
  [[gnu::cold]] void AgeSome(uint64_t now) {
    const uint32_t end = std::min(age_next_slot_ + kAgeSlots, mask_ + 1);
    for (uint32_t i = age_next_slot_; i < end; ++i) {
      if (slots_[i].key != 0 && !Live(slots_[i], now)) Clear(slots_[i]);
    }
    age_next_slot_ = end & mask_;
    next_age_ = now + age_interval_;
  }

  uint64_t ttl_;
  uint32_t mask_ = 0;
  uint32_t size_ = 0;
  uint64_t evictions_ = 0;
  std::unique_ptr<Slot[]> slots_;
  uint64_t age_interval_ = 1;
  uint64_t next_age_ = 0;
  uint32_t age_next_slot_ = 0;
};

}  // namespace qosvisor
