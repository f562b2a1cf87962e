// Change readers: KVM's dirty log and the devices' written pages, fanned out to each reader.
#include <fmt/format.h>

#include <algorithm>

#include "hv/page_bitmap.h"
#include "hv/vm.h"

namespace qosvisor::hv {
namespace {

const char* ReaderName(Vm::ChangeReader reader) {
  return reader == Vm::ChangeReader::kMigration ? "migration" : "page tracker";
}

}  // namespace

bool Vm::tracking(ChangeReader reader) const {
  std::lock_guard lock(changes_mu_);
  return pending_changes_[static_cast<size_t>(reader)].has_value();
}

Status Vm::TrackChanges(ChangeReader reader, bool on) {
  std::lock_guard lock(changes_mu_);
  auto& mine = pending_changes_[static_cast<size_t>(reader)];
  if (mine.has_value() == on) return Status::Ok();
  const bool others_on = std::any_of(pending_changes_.begin(), pending_changes_.end(),
                                     [&](const auto& p) { return &p != &mine && p.has_value(); });
  if (!others_on) {
    // The first reader turns the log on and the last one off; in between it stays as it is, so
    // a reader coming or going never costs another one the changes it has not taken yet.
    if (Status s = SetDirtyLogging(on); !s) return s;
    memory_.TrackWrites(on);
  }
  if (reader == ChangeReader::kMigration && disk_) disk_->TrackWrites(on);
  if (on) {
    mine.emplace((memory_.size() / 4096 + 63) / 64, 0);
  } else {
    mine.reset();
  }
  return Status::Ok();
}

Result<std::vector<uint64_t>> Vm::TakeChangedPages(ChangeReader reader) {
  std::lock_guard lock(changes_mu_);
  auto& mine = pending_changes_[static_cast<size_t>(reader)];
  if (!mine.has_value()) {
    return Status::Error(fmt::format("vm '{}': the {} is not tracking changed pages", name(),
                                     ReaderName(reader)));
  }
  auto fresh = TakeDirtyLog();
  if (!fresh) return fresh.status();
  OrInto(*fresh, memory_.TakeWrittenPages());
  for (auto& pending : pending_changes_) {
    if (pending.has_value() && &pending != &mine) OrInto(*pending, *fresh);
  }
  std::vector<uint64_t> taken = std::move(*fresh);
  OrInto(taken, *mine);
  std::fill(mine->begin(), mine->end(), 0);
  return taken;
}

}  // namespace qosvisor::hv
