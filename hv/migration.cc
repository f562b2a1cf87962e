#include "hv/migration.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <thread>

#include "hv/page_bitmap.h"
#include "hv/state_codec.h"

namespace qosvisor::hv {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kPageBytes = 4096;
constexpr auto kThrottlePeriod = std::chrono::milliseconds(20);
constexpr uint32_t kMaxSections = 4096;

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// What changed since the previous harvest: pages (vCPUs' and devices' writes) and disk blocks.
struct Changes {
  std::vector<uint64_t> pages;
  std::vector<uint64_t> blocks;
  uint64_t page_count() const { return CountBits(pages); }
  uint64_t block_count() const { return CountBits(blocks); }
  uint64_t bytes() const {
    return page_count() * kPageBytes + block_count() * VirtioBlk::kTrackBlockBytes;
  }
};

class Sender {
 public:
  Sender(Vm& vm, MigrationChannel& channel, const MigrationTuning& tuning,
         const MigrationProgressFn& progress)
      : vm_(vm),
        channel_(channel),
        tuning_(tuning),
        progress_(progress),
        heat_(tuning.heat ? *tuning.heat : PageHeat(vm.memory().size())) {}

  Result<MigrationResult> Run() {
    was_running_ = vm_.state() == VmState::kRunning;
    if (!was_running_ && vm_.state() != VmState::kPaused) {
      return Status::Error(fmt::format("vm '{}' is {}: only a running or paused VM migrates",
                                       vm_.name(), VmStateName(vm_.state())));
    }
    if (Status s = vm_.TrackChanges(Vm::ChangeReader::kMigration, true); !s) return s;
    Status done = PreCopyThenStop();
    if (!done) {
      Undo();
      return done;
    }
    (void)vm_.TrackChanges(Vm::ChangeReader::kMigration, false);
    return result_;
  }

 private:
  Status PreCopyThenStop() {
    started_ = Clock::now();
    throttle_epoch_ = started_;
    last_harvest_ = started_;
    auto first = EverythingWithData();
    if (!first) return first.status();
    Changes pending = std::move(first).value();
    for (uint32_t round = 0;; ++round) {
      result_.rounds = round + 1;
      if (Status s = SendChanges(pending, round); !s) return s;
      auto changed = Harvest();
      if (!changed) return changed.status();
      OrInto(changed->pages, pending.pages);  // what the round held back
      pending = std::move(changed).value();
      if (ReadyToStop(pending, round)) break;
      AdjustThrottle(pending);
    }
    return StopAndCopy(std::move(pending));
  }

  // Round 0: every page and disk block that may hold something other than zeros (only the pages
  // the VM wrote itself when the destination holds its base image). Tracking is already on, so
  // nothing written from here on is missed.
  Result<Changes> EverythingWithData() {
    Changes c;
    auto pages = tuning_.base_at_destination ? vm_.memory().PrivatelyWrittenPages()
                                             : vm_.memory().PopulatedPages();
    if (!pages) return pages.status();
    c.pages = std::move(pages).value();
    if (VirtioBlk* disk = vm_.disk()) {
      auto blocks = disk->AllocatedBlocks();
      if (!blocks) return blocks.status();
      c.blocks = std::move(blocks).value();
    }
    return c;
  }

  Result<Changes> Harvest() {
    Changes c;
    auto changed = vm_.TakeChangedPages(Vm::ChangeReader::kMigration);
    if (!changed) return changed.status();
    c.pages = std::move(changed).value();
    if (VirtioBlk* disk = vm_.disk()) c.blocks = disk->TakeWrittenBlocks();
    const double seconds = std::max(MsSince(last_harvest_) / 1000.0, 1e-6);
    last_harvest_ = Clock::now();
    dirty_rate_ = static_cast<double>(c.page_count()) / seconds;
    heat_.Add(c.pages, seconds);
    return c;
  }

  // What the link has carried while sending, or the configured cap when that is lower (the
  // time Pace() sleeps to keep the cap is not spent in Send).
  double LinkBytesPerSecond() const {
    if (send_seconds_ <= 0) return 0;
    const double measured = static_cast<double>(sent_while_timed_) / send_seconds_;
    if (tuning_.bandwidth_bps == 0) return measured;
    return std::min(measured, static_cast<double>(tuning_.bandwidth_bps) / 8.0);
  }

  double ExpectedDowntimeMs(const Changes& c) const {
    const double rate = LinkBytesPerSecond();
    if (rate <= 0) return c.bytes() == 0 ? 0 : 1e9;
    return static_cast<double>(c.bytes()) / rate * 1000.0;
  }

  bool ReadyToStop(const Changes& pending, uint32_t round) {
    expected_downtime_ms_ = ExpectedDowntimeMs(pending);
    Report("pre-copy", round + 1, pending.page_count());
    if (expected_downtime_ms_ <= static_cast<double>(tuning_.downtime.count())) return true;
    if (round + 1 >= tuning_.max_rounds) {
      result_.converged = false;
      return true;
    }
    return false;
  }

  // Auto-converge: when a round leaves as much to send as the one before, the guest dirties
  // memory as fast as the link drains it; take a growing share of its CPU time away.
  void AdjustThrottle(const Changes& pending) {
    const uint64_t left = pending.bytes();
    if (previous_left_ != 0 && left * 10 >= previous_left_ * 9) {
      throttle_percent_ = std::min<uint32_t>(throttle_percent_ == 0 ? 30 : throttle_percent_ + 15, 95);
      result_.max_throttle_percent = std::max(result_.max_throttle_percent, throttle_percent_);
    }
    previous_left_ = left;
  }

  Status StopAndCopy(Changes pending) {
    if (Status s = PauseForGood(); !s) return s;
    const auto paused_at = Clock::now();
    result_.expected_downtime_ms = expected_downtime_ms_;
    result_.precopy_ms = MsSince(started_);
    auto last = Harvest();
    if (!last) return last.status();
    OrInto(pending.pages, last->pages);
    OrInto(pending.blocks, last->blocks);
    result_.final_pages = pending.page_count();
    Report("stop-and-copy", result_.rounds, result_.final_pages);
    if (Status s = SendChanges(pending, result_.rounds); !s) return s;
    auto sections = vm_.CaptureMigrationState();
    if (!sections) return sections.status();
    if (Status s = TimedSend(MigrationMessageType::kDeviceState, EncodeSections(*sections)); !s) {
      return s;
    }
    if (Status s = TimedSend(MigrationMessageType::kComplete, {}); !s) return s;
    result_.paused_ms = MsSince(paused_at);
    result_.bytes_sent = channel_.bytes_sent();
    return Status::Ok();
  }

  // Sends what changed (and, in pre-copy, keeps in `c` the hot pages it held back for later).
  Status SendChanges(Changes& c, uint32_t round) {
    std::vector<uint64_t> held_back(c.pages.size(), 0);
    if (Status s = SendPages(PagesInSendOrder(c.pages), held_back); !s) return s;
    c.pages = std::move(held_back);
    if (Status s = SendBlocks(SetBits(c.blocks)); !s) return s;
    const uint32_t r = round;
    // SAFETY: u32 as its 4 bytes.
    const auto* bytes = reinterpret_cast<const uint8_t*>(&r);
    return TimedSend(MigrationMessageType::kRoundEnd, {bytes, bytes + sizeof(r)});
  }

  bool ordered() const { return tuning_.order_by_heat; }

  // Page numbers region by region, coldest region first (address order when not ordering).
  std::vector<uint64_t> PagesInSendOrder(const std::vector<uint64_t>& bitmap) const {
    if (!ordered()) return SetBits(bitmap);
    constexpr size_t kWords = PageHeat::kPagesPerRegion / 64;
    std::vector<uint64_t> out;
    out.reserve(CountBits(bitmap));
    for (uint32_t region : heat_.ColdestFirst()) {
      for (size_t w = region * kWords; w < (region + 1) * kWords && w < bitmap.size(); ++w) {
        for (uint64_t bits = bitmap[w]; bits != 0; bits &= bits - 1) {
          out.push_back(w * 64 + static_cast<uint64_t>(std::countr_zero(bits)));
        }
      }
    }
    return out;
  }

  // The round's hot pages (the last `remaining` of its list: hot regions come last) are held
  // back whole or not at all: whole when they fit half the downtime budget at the link's rate,
  // which the cold regions sent before them have measured by then. A part held back would only
  // add to what the next round sends, as the rest changes again anyway. Stop-and-copy sends all.
  bool HoldBack(uint64_t page, size_t remaining) {
    if (!ordered() || final_) return false;
    if (heat_.Heat(page / PageHeat::kPagesPerRegion) != RegionHeat::kHot) return false;
    if (!hot_decided_) {
      hot_decided_ = true;
      const double budget = LinkBytesPerSecond() *
                            static_cast<double>(tuning_.downtime.count()) / 1000.0 / 2.0;
      hold_hot_ = static_cast<double>(remaining * kPageBytes) <= budget;
    }
    if (!hold_hot_) return false;
    ++held_this_round_;
    return true;
  }

  Status SendPages(const std::vector<uint64_t>& in_order, std::vector<uint64_t>& held_back) {
    held_this_round_ = 0;
    hot_decided_ = false;
    const size_t step = std::max<size_t>(tuning_.batch_pages, 1);
    std::vector<uint64_t> chunk;
    chunk.reserve(step);
    for (size_t next = 0; next < in_order.size();) {
      // Filled as it goes, so a hold-back decision sees the rate measured so far.
      chunk.clear();
      while (chunk.size() < step && next < in_order.size()) {
        const uint64_t page = in_order[next];
        if (HoldBack(page, in_order.size() - next++)) {
          held_back[page / 64] |= 1ull << (page % 64);
        } else {
          chunk.push_back(page);
        }
      }
      for (const PageBatch& batch : BatchPages(vm_.memory(), chunk, step)) {
        result_.pages_sent += batch.data_pages.size() + batch.zero_pages.size();
        result_.zero_pages_sent += batch.zero_pages.size();
        if (Status s = TimedSend(MigrationMessageType::kMemoryPages, EncodePageBatch(batch)); !s) {
          return s;
        }
      }
      if (Status s = Pace(); !s) return s;
    }
    result_.pages_held_back += held_this_round_;
    return Status::Ok();
  }

  Status SendBlocks(const std::vector<uint64_t>& blocks) {
    VirtioBlk* disk = vm_.disk();
    if (disk == nullptr) return Status::Ok();
    for (uint64_t block : blocks) {
      auto data = disk->ReadBlock(block);
      if (!data) return data.status();
      BlockBatch batch{VirtioBlk::kTrackBlockBytes, {block}, std::move(data).value()};
      ++result_.disk_blocks_sent;
      if (Status s = TimedSend(MigrationMessageType::kDiskBlocks, EncodeBlockBatch(batch)); !s) {
        return s;
      }
      if (Status s = Pace(); !s) return s;
    }
    return Status::Ok();
  }

  Status TimedSend(MigrationMessageType type, const std::vector<uint8_t>& payload) {
    const auto t0 = Clock::now();
    const uint64_t before = channel_.bytes_sent();
    if (Status s = channel_.Send(type, payload, tuning_.message_timeout); !s) return s;
    send_seconds_ += std::chrono::duration<double>(Clock::now() - t0).count();
    sent_while_timed_ += channel_.bytes_sent() - before;
    return Status::Ok();
  }

  // Between frames: the deadline, the bandwidth cap and the throttle's duty cycle.
  Status Pace() {
    if (Clock::now() - started_ > tuning_.timeout) {
      return Status::Error(fmt::format("timed out after {} ms in round {}",
                                       tuning_.timeout.count(), result_.rounds));
    }
    // The cap is for the copy in the background; once the guest is paused, every millisecond
    // is downtime, and the rest goes as fast as the link takes it.
    if (tuning_.bandwidth_bps > 0 && !final_) {
      const double due_s = static_cast<double>(channel_.bytes_sent()) * 8.0 /
                           static_cast<double>(tuning_.bandwidth_bps);
      const double ahead_s = due_s - MsSince(started_) / 1000.0;
      if (ahead_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(ahead_s));
    }
    if (Clock::now() - last_report_ > std::chrono::milliseconds(200)) {
      Report("pre-copy", result_.rounds, last_pages_left_);
    }
    return Throttle();
  }

  Status Throttle() {
    if (!was_running_ || final_) return Status::Ok();
    const auto period = std::chrono::duration_cast<std::chrono::microseconds>(kThrottlePeriod);
    const auto into = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() -
                                                                            throttle_epoch_) %
                      period;
    const bool should_pause = into < period * throttle_percent_ / 100;
    if (should_pause && !throttled_) {
      if (Status s = vm_.Pause(); !s) return s;
      throttled_ = true;
    } else if (!should_pause && throttled_) {
      if (Status s = vm_.Resume(); !s) return s;
      throttled_ = false;
    }
    return Status::Ok();
  }

  Status PauseForGood() {
    final_ = true;
    if (!was_running_ || throttled_) return Status::Ok();
    return vm_.Pause();
  }

  void Undo() {
    (void)vm_.TrackChanges(Vm::ChangeReader::kMigration, false);
    if (was_running_ && vm_.state() == VmState::kPaused) (void)vm_.Resume();
  }

  void Report(const char* phase, uint32_t round, uint64_t pages_left) {
    last_report_ = Clock::now();
    last_pages_left_ = pages_left;
    if (!progress_) return;
    MigrationProgress p;
    p.phase = phase;
    p.round = round;
    p.bytes_sent = channel_.bytes_sent();
    p.pages_left = pages_left;
    p.dirty_pages_per_second = dirty_rate_;
    p.link_bytes_per_second = LinkBytesPerSecond();
    p.expected_downtime_ms = expected_downtime_ms_;
    p.throttle_percent = throttle_percent_;
    progress_(p);
  }

  Vm& vm_;
  MigrationChannel& channel_;
  const MigrationTuning& tuning_;
  const MigrationProgressFn& progress_;
  MigrationResult result_;
  PageHeat heat_;  // the tracker's, then each round's harvest added
  uint64_t held_this_round_ = 0;
  bool hot_decided_ = false;  // this round's hot pages met, and whether they are held back
  bool hold_hot_ = false;
  bool was_running_ = false;
  bool throttled_ = false;  // paused by the duty cycle, to resume
  bool final_ = false;
  uint32_t throttle_percent_ = 0;
  uint64_t previous_left_ = 0;
  uint64_t last_pages_left_ = 0;
  double dirty_rate_ = 0;
  double expected_downtime_ms_ = 0;
  double send_seconds_ = 0;
  uint64_t sent_while_timed_ = 0;
  Clock::time_point started_, throttle_epoch_, last_harvest_, last_report_;
};

Status ApplyBlocks(std::span<const uint8_t> payload, Vm& vm) {
  VirtioBlk* disk = vm.disk();
  if (disk == nullptr) return Status::Error("disk blocks for a VM without a vflash disk");
  const uint64_t blocks =
      (disk->capacity_bytes() + VirtioBlk::kTrackBlockBytes - 1) / VirtioBlk::kTrackBlockBytes;
  auto batch = DecodeBlockBatch(payload, blocks);
  if (!batch) return batch.status();
  if (batch->block_size != VirtioBlk::kTrackBlockBytes) {
    return Status::Error(fmt::format("disk blocks of {} bytes; this VMM moves blocks of {}",
                                     batch->block_size, VirtioBlk::kTrackBlockBytes));
  }
  uint64_t offset = 0;
  for (uint64_t block : batch->blocks) {
    const uint64_t start = block * VirtioBlk::kTrackBlockBytes;
    const uint64_t len = std::min<uint64_t>(VirtioBlk::kTrackBlockBytes,
                                            disk->capacity_bytes() - start);
    if (offset + len > batch->data.size()) {
      return Status::Error(fmt::format("disk block {} has fewer bytes than the disk needs", block));
    }
    if (Status s = disk->WriteBlock(block, {batch->data.data() + offset, len}); !s) return s;
    offset += len;
  }
  return Status::Ok();
}

}  // namespace

Result<MigrationResult> SendVm(Vm& vm, MigrationChannel& channel, const MigrationTuning& tuning,
                               const MigrationProgressFn& progress) {
  Sender sender(vm, channel, tuning, progress);
  return sender.Run();
}

Status ReceiveVm(Vm& vm, MigrationChannel& channel, std::chrono::milliseconds message_timeout,
                 const std::function<void(uint64_t received)>& received) {
  const uint64_t pages = vm.memory().size() / kPageBytes;
  std::vector<Section> sections;
  bool have_state = false;
  for (;;) {
    auto message = channel.Receive(message_timeout);
    if (!message) return message.status();
    if (received) received(channel.bytes_received());
    switch (message->type) {
      case MigrationMessageType::kMemoryPages: {
        auto batch = DecodePageBatch(message->payload, pages);
        if (!batch) return Status::Error("memory pages: " + batch.message());
        if (Status s = ApplyPageBatch(*batch, vm.memory()); !s) return s;
        break;
      }
      case MigrationMessageType::kDiskBlocks:
        if (Status s = ApplyBlocks(message->payload, vm); !s) {
          return Status::Error("disk blocks: " + s.message());
        }
        break;
      case MigrationMessageType::kRoundEnd:
        break;
      case MigrationMessageType::kDeviceState: {
        auto decoded = DecodeSections(message->payload);
        if (!decoded) return Status::Error("device state: " + decoded.message());
        sections = std::move(decoded).value();
        have_state = true;
        break;
      }
      case MigrationMessageType::kComplete:
        if (!have_state) return Status::Error("the source completed without sending the VM's state");
        return vm.ApplyIncomingState(sections);
      case MigrationMessageType::kAbort:
        return Status::Error("the source aborted the migration");
      default:
        return Status::Error(
            fmt::format("unexpected '{}' frame while receiving the VM", MigrationMessageTypeName(message->type)));
    }
  }
}

std::vector<uint8_t> EncodeSections(const std::vector<Section>& sections) {
  StateWriter w;
  w.Put<uint32_t>(static_cast<uint32_t>(sections.size()));
  for (const Section& s : sections) {
    w.Put<uint32_t>(static_cast<uint32_t>(s.kind));
    w.Put<uint32_t>(s.index);
    w.PutBytes(s.payload);
  }
  return w.Take();
}

Result<std::vector<Section>> DecodeSections(std::span<const uint8_t> payload) {
  StateReader r(payload, "state sections");
  uint32_t count = 0;
  if (!r.Get(&count, "count")) return Status::Error(r.error());
  if (count > kMaxSections) {
    r.Invalid("count", fmt::format("{} sections (at most {})", count, kMaxSections));
    return Status::Error(r.error());
  }
  std::vector<Section> sections;
  for (uint32_t i = 0; i < count && r.ok(); ++i) {
    uint32_t kind = 0;
    Section s{SectionKind::kConfig, 0, {}};
    if (!r.Get(&kind, "section kind") || !r.Get(&s.index, "section index")) break;
    if (kind < static_cast<uint32_t>(SectionKind::kConfig) ||
        kind > static_cast<uint32_t>(SectionKind::kMemory)) {
      r.Invalid("section kind", fmt::format("{} is no known section", kind));
      break;
    }
    s.kind = static_cast<SectionKind>(kind);
    if (!r.GetBytes(&s.payload, "section payload", payload.size())) break;
    sections.push_back(std::move(s));
  }
  if (!r.Finish()) return Status::Error(r.error());
  return sections;
}

}  // namespace qosvisor::hv
