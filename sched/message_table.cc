// Message table: open addressing with linear probing and backward-shift deletion, so lookups never
// step over tombstones and the index stays at most half full. Backward shifts only move entries
// nearer their home, so the kMaxProbe bound that Insert establishes holds for good.
#include "sched/message_table.h"

#include <algorithm>
#include <bit>
#include <cstddef>

#include "common/reset.h"

namespace qosvisor::sched {

namespace {

uint64_t IndexSize(uint32_t capacity) {
  return std::max<uint64_t>(64, std::bit_ceil(uint64_t{capacity} * 2));
}

}  // namespace

MessageTable::MessageTable(uint32_t capacity, uint32_t reserved, HashKey key, PageOptions pages)
    : slots_(capacity, pages),
      index_(IndexSize(capacity), pages),
      key_(key),
      free_(capacity, pages),
      reserved_(reserved) {
  const uint64_t index_size = index_.size();
  index_mask_ = static_cast<uint32_t>(index_size - 1);
  index_shift_ = 64 - std::countr_zero(index_size);
  // Pop order = ascending slots, which keeps a lightly loaded table compact in memory.
  for (uint32_t s = capacity; s > reserved; --s) free_[free_count_++] = s - 1;
  for (uint32_t s = 0; s < reserved; ++s) slots_[s].flags = kMsgInUse | kMsgDefault;
}

void MessageTable::TallyPages(PageTally& tally) const {
  tally.Add(slots_.bytes(), slots_.kind());
  tally.Add(index_.bytes(), index_.kind());
  tally.Add(free_.bytes(), free_.kind());
}

uint32_t MessageTable::Insert(uint64_t message_id, uint16_t class_id, uint32_t home) {
  if (free_count_ == 0) return kNoId;
  uint32_t i = home;
  for (uint32_t d = 0; index_[i].slot != kNoId; ++d, i = (i + 1) & index_mask_) {
    if (d + 1 == kMaxProbe) return kNoId;
  }
  const uint32_t slot = Claim(message_id, class_id, kMsgInUse);
  index_[i] = Entry{message_id, slot, home};
  return slot;
}

uint32_t MessageTable::InsertUnindexed(uint64_t message_id, uint16_t class_id) {
  if (free_count_ == 0) return kNoId;
  return Claim(message_id, class_id, kMsgInUse | kMsgUnindexed);
}

uint32_t MessageTable::Claim(uint64_t message_id, uint16_t class_id, uint16_t flags) {
  const uint32_t slot = free_[--free_count_];
  if (slot >= high_water_) high_water_ = slot + 1;
  MessageState& m = slots_[slot];
  ResetToDefault(m);
  m.message_id = message_id;
  m.class_id = class_id;
  m.flags = flags;
  ++live_;
  return slot;
}

void MessageTable::EraseIndexed(uint32_t slot, uint32_t home_of_slot) {
  uint32_t i = home_of_slot;
  while (index_[i].slot != slot) i = (i + 1) & index_mask_;
  // Backward-shift: move later entries of the probe run into the hole if their home allows it.
  for (uint32_t j = (i + 1) & index_mask_;; j = (j + 1) & index_mask_) {
    if (index_[j].slot == kNoId) break;
    const uint32_t home = index_[j].home;
    // Entry j may move to i when its home is not in (i, j] (cyclically).
    bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!stays) {
      index_[i] = index_[j];
      i = j;
    }
  }
  index_[i] = Entry{};
  Release(slot);
}

uint32_t MessageTable::ReclaimIdle(uint32_t now, const uint32_t* timeout_of_class,
                                   uint32_t budget) {
  uint32_t n = capacity();
  if (n <= reserved_) return 0;
  // Slots beyond the highest ever handed out have never held a message (the free list starts in
  // ascending order), so the hand turns around there.
  const uint32_t end = std::min(n, high_water_);
  budget = std::min(budget, end > reserved_ ? end - reserved_ : 1);
  uint32_t freed = 0;
  for (uint32_t k = 0; k < budget; ++k) {
    if (++hand_ >= end) hand_ = reserved_;
    if (hand_ < reserved_) hand_ = reserved_;
    MessageState& m = slots_[hand_];
    if (!(m.flags & kMsgInUse) || !m.empty()) continue;
    // Signed: an arrival stamped on another lcore may be a little later than this poll's `now`.
    const auto timeout = static_cast<int32_t>(timeout_of_class[m.class_id]);
    if (timeout != 0 && static_cast<int32_t>(now - m.last_active) > timeout) {
      Erase(hand_);
      ++freed;
    }
  }
  // The next call's slots, which have rarely been touched lately: load them meanwhile (what the
  // test reads is all on the arrival line).
  constexpr uint32_t kAhead = 4;
  for (uint32_t k = 1; k <= kAhead && hand_ + k < end; ++k) PrefetchArrivalLine(hand_ + k, false);
  return freed;
}

}  // namespace qosvisor::sched
