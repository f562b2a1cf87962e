// 16550 register model (enough for polled output from any driver) and the debug-exit port.
// Log writes happen per line so that readers of the log never see half a line being written.
#include "hv/serial.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace qosvisor::hv {
namespace {

constexpr uint64_t kRbrThr = 0, kIer = 1, kIirFcr = 2, kLcr = 3, kLsr = 5, kMsr = 6;
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kLsrThrEmpty = 0x20, kLsrTxEmpty = 0x40;
constexpr uint8_t kIirNoInterrupt = 0x01;
constexpr uint8_t kMsrDcdDsrCts = 0xb0;

// Guest output may hold what the guest's owner alone should read.
constexpr mode_t kLogMode = 0600;

UniqueFd OpenLog(const std::string& path) {
  return UniqueFd(
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, kLogMode));
}

void WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // a full disk must not stop the guest; output is best effort
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

Result<std::unique_ptr<Serial>> Serial::Create(const std::string& vm_name,
                                               const std::string& log_path, bool console,
                                               uint64_t log_max_bytes) {
  if (log_max_bytes == 0) {
    return Status::Error(fmt::format("vm '{}': serial log size cap must be above 0", vm_name));
  }
  UniqueFd log;
  if (!log_path.empty()) {
    log = OpenLog(log_path);
    if (!log.valid()) {
      return Status::Error(
          fmt::format("vm '{}': serial log '{}': {}", vm_name, log_path, std::strerror(errno)));
    }
  }
  return std::unique_ptr<Serial>(
      new Serial(vm_name, log_path, std::move(log), console, log_max_bytes));
}

Serial::~Serial() { Flush(); }

void Serial::Read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  uint8_t v = 0;
  bool dlab = (regs_[kLcr] & kLcrDlab) != 0;
  switch (offset) {
    case kRbrThr:
      v = dlab ? dll_ : 0;
      break;  // no input
    case kIer:
      v = dlab ? dlm_ : regs_[kIer];
      break;
    case kIirFcr:
      v = kIirNoInterrupt;
      break;
    case kLsr:
      v = kLsrThrEmpty | kLsrTxEmpty;
      break;
    case kMsr:
      v = kMsrDcdDsrCts;
      break;
    default:
      v = regs_[offset & 7];
      break;
  }
  data[0] = v;
}

void Serial::Write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard lock(mu_);
  uint8_t v = data[0];
  bool dlab = (regs_[kLcr] & kLcrDlab) != 0;
  if (offset == kRbrThr && !dlab) {
    bytes_.fetch_add(1, std::memory_order_relaxed);
    if (v == '\n') {
      line_.push_back('\n');
      if (lines_.fetch_add(1, std::memory_order_relaxed) == 0) {
        first_line_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                             std::memory_order_release);
      }
      EmitLocked();
    } else if (v != '\r') {
      line_.push_back(static_cast<char>(v));
      if (line_.size() >= kMaxLine) EmitLocked();
    }
    return;
  }
  if (offset == kRbrThr) {
    dll_ = v;
  } else if (offset == kIer && dlab) {
    dlm_ = v;
  } else if (offset != kLsr) {
    regs_[offset & 7] = v;
  }
}

void Serial::EmitLocked() {
  if (line_.empty()) return;
  if (log_.valid()) WriteLogLocked(line_);
  if (console_) {
    std::string out = fmt::format("[{}] {}", vm_name_, line_);
    if (out.back() != '\n') out.push_back('\n');
    WriteAll(STDOUT_FILENO, out.data(), out.size());
  }
  line_.clear();
}

void Serial::WriteLogLocked(const std::string& text) {
  if (log_bytes_ + text.size() > log_max_bytes_ && log_bytes_ > 0) {
    RotateLocked();
    if (!log_.valid()) return;
  }
  // A line longer than the whole cap keeps its start: the cap is a promise about disk use.
  const size_t n = static_cast<size_t>(std::min<uint64_t>(text.size(), log_max_bytes_));
  WriteAll(log_.get(), text.data(), n);
  log_bytes_ += n;
}

// LOG becomes LOG.1 (the previous LOG.1 goes) and a fresh LOG is opened. If the new file cannot
// be opened, output stops rather than growing LOG.1.
void Serial::RotateLocked() {
  const std::string rotated = log_path_ + ".1";
  if (::rename(log_path_.c_str(), rotated.c_str()) != 0) {
    // Renaming failed (the directory went read-only?): start LOG afresh in place.
    if (::ftruncate(log_.get(), 0) != 0) return;
  } else {
    log_ = OpenLog(log_path_);
  }
  log_bytes_ = 0;
  rotations_.fetch_add(1, std::memory_order_relaxed);
}

void Serial::Flush() {
  std::lock_guard lock(mu_);
  EmitLocked();
}

void Serial::DropPartialLine() {
  std::lock_guard lock(mu_);
  line_.clear();
}

std::vector<uint8_t> Serial::SaveState() {
  std::lock_guard lock(mu_);
  StateWriter w;
  w.Put(regs_);
  w.Put(dll_);
  w.Put(dlm_);
  w.PutString(line_);
  return w.Take();
}

Status Serial::LoadState(std::span<const uint8_t> state) {
  std::lock_guard lock(mu_);
  StateReader r(state, "serial state");
  uint8_t regs[sizeof(regs_)] = {};
  uint8_t dll = 0, dlm = 0;
  std::string line;
  r.Get(&regs, "registers");
  r.Get(&dll, "divisor low");
  r.Get(&dlm, "divisor high");
  r.GetString(&line, "partial line", kMaxLine);
  if (!r.Finish()) return Status::Error(r.error());
  std::memcpy(regs_, regs, sizeof(regs_));
  dll_ = dll;
  dlm_ = dlm;
  line_ = std::move(line);
  return Status::Ok();
}

void Serial::Reset() {
  std::lock_guard lock(mu_);
  line_.clear();
  if (log_.valid() && ::ftruncate(log_.get(), 0) != 0) {
    // Keep appending: a log that could not be truncated is still a log.
  }
  log_bytes_ = 0;
  bytes_.store(0);
  lines_.store(0);
  first_line_ns_.store(0);
}

}  // namespace qosvisor::hv
