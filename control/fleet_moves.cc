// Move requests in etcd: their JSON, the leader's request-and-wait, the source's server.
#include "control/fleet_moves.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <optional>
#include <thread>

namespace qosvisor::control {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string MoveKey(const std::string& from, const std::string& vm) {
  return fmt::format("{}{}/{}", kMovesPrefix, from, vm);
}

json MoveRecordJson(const MoveRecord& m) {
  return {{"plan", m.plan},     {"vm", m.vm},       {"from", m.from},   {"to", m.to},
          {"leader", m.leader}, {"state", m.state}, {"error", m.error}, {"result", m.result}};
}

Result<MoveRecord> ParseMoveRecord(const std::string& text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::Error("the move record is not a JSON object");
  MoveRecord m;
  for (auto [key, out] : {std::pair{"plan", &m.plan},
                          {"vm", &m.vm},
                          {"from", &m.from},
                          {"to", &m.to},
                          {"leader", &m.leader},
                          {"state", &m.state},
                          {"error", &m.error}}) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) {
      return Status::Error(fmt::format("the move record's {} is missing or not a string", key));
    }
    *out = it->get<std::string>();
  }
  if (m.state != "requested" && m.state != "running" && m.state != "done" && m.state != "failed") {
    return Status::Error(fmt::format("the move record's state '{}' is unknown", m.state));
  }
  m.result = j.value("result", json());
  return m;
}

namespace {

// Reads the request back; nullopt when it is gone.
Result<std::optional<MoveRecord>> ReadMove(EtcdClient& etcd, const std::string& key) {
  auto range = etcd.Range(key);
  if (!range.ok()) return range.status();
  if (range->kvs.empty()) return std::optional<MoveRecord>();
  auto move = ParseMoveRecord(range->kvs.front().value);
  if (!move.ok()) return Status::Error(fmt::format("{}: {}", key, move.message()));
  return std::optional<MoveRecord>(std::move(move).value());
}

Result<MoveRecord> WaitForOutcome(EtcdClient& etcd, const MoveRecord& request,
                                  const MoveWait& wait) {
  const std::string key = MoveKey(request.from, request.vm);
  const auto started = Clock::now();
  bool picked_up = false;
  for (;;) {
    if (Status s = wait.still_valid(); !s.ok()) return s;
    auto read = ReadMove(etcd, key);
    if (!read.ok()) return read.status();
    if (!*read) {
      return Status::Error(fmt::format("the request {} vanished (the leader's lease ended?)", key));
    }
    const MoveRecord& now = **read;
    if (now.state == "done" || now.state == "failed") return now;
    picked_up = picked_up || now.state == "running";
    const auto waited = Clock::now() - started;
    if (!picked_up && waited > wait.pickup) {
      return Status::Error(fmt::format(
          "host {} did not take up the move within {} ms (is its daemon running, and new enough "
          "to serve moves?)",
          request.from, wait.pickup.count()));
    }
    if (waited > wait.timeout) {
      return Status::Error(fmt::format("host {} did not finish the move within {} s", request.from,
                                       wait.timeout.count() / 1000));
    }
    std::this_thread::sleep_for(wait.poll);
  }
}

}  // namespace

Result<MoveRecord> RunMoveThroughEtcd(EtcdClient& etcd, const MoveRecord& request, int64_t lease,
                                      const MoveWait& wait) {
  const std::string key = MoveKey(request.from, request.vm);
  auto created = etcd.Txn({EtcdCompare::CreateRevision(key, 0)},
                          {EtcdOp::Put(key, MoveRecordJson(request).dump(), lease)});
  if (!created.ok()) return created.status();
  if (!*created) {
    return Status::Error(
        fmt::format("a move of vm '{}' is already requested ({})", request.vm, key));
  }
  auto outcome = WaitForOutcome(etcd, request, wait);
  // Removed whatever the outcome: a request left behind would block the VM's next move.
  (void)etcd.DeleteRange(key);
  return outcome;
}

MoveServer::MoveServer(const config::Fleet& fleet, std::chrono::milliseconds poll, RunMove run)
    : fleet_(fleet), poll_(poll), run_(std::move(run)), etcd_(EtcdOptions{fleet.etcd}) {}

MoveServer::~MoveServer() { Stop(); }

void MoveServer::Start() {
  thread_.Start([this] { Loop(); });
}

void MoveServer::Stop() { thread_.Stop(); }

void MoveServer::Loop() {
  while (!thread_.stopping()) {
    Status s = ServeOnce();
    // An unreachable etcd is the registry agent's to report; said here once per new reason.
    if (!s.ok() && s.message() != last_error_) {
      spdlog::warn("fleet: cannot read this host's move requests: {}", s.message());
    }
    last_error_ = s.ok() ? "" : s.message();
    if (!thread_.SleepUntil(Clock::now() + poll_)) break;
  }
}

Status MoveServer::ServeOnce() {
  const std::string prefix = fmt::format("{}{}/", kMovesPrefix, fleet_.host);
  auto range = etcd_.RangePrefix(prefix);
  if (!range.ok()) return range.status();
  for (const EtcdKeyValue& kv : range->kvs) {
    if (thread_.stopping()) break;
    auto move = ParseMoveRecord(kv.value);
    if (!move.ok()) {
      spdlog::warn("fleet: ignoring the move request {}: {}", kv.key, move.message());
      continue;
    }
    // A request still "running" was this daemon's before it restarted: its outcome is unknown
    // here, and the leader gives up on it by its own timeout.
    if (move->state == "requested") Serve(kv, std::move(move).value());
  }
  return Status::Ok();
}

void MoveServer::Serve(const EtcdKeyValue& kv, MoveRecord move) {
  if (move.from != fleet_.host || kv.key != MoveKey(fleet_.host, move.vm)) {
    move.state = "failed";
    move.error =
        fmt::format("the request {} names vm '{}' on host '{}'", kv.key, move.vm, move.from);
    (void)Update(kv, move);
    return;
  }
  move.state = "running";
  if (Status s = Update(kv, move); !s.ok()) {
    spdlog::warn("fleet: not moving vm '{}': {}", move.vm, s.message());
    return;
  }
  spdlog::info("fleet: moving vm '{}' to {} for host {}'s plan {}", move.vm, move.to, move.leader,
               move.plan);
  auto result = run_(move.vm, move.to);
  move.state = result.ok() ? "done" : "failed";
  if (result.ok()) {
    move.result = *result;
  } else {
    move.error = result.message();
  }
  done_.fetch_add(1);
  if (Status s = Update(kv, move); !s.ok()) {
    spdlog::warn("fleet: the move of vm '{}' to {} {}{}, but the outcome could not be written: {}",
                 move.vm, move.to, move.state, result.ok() ? "" : ": " + move.error, s.message());
  }
}

Status MoveServer::Update(const EtcdKeyValue& kv, const MoveRecord& move) {
  // Same request (same creation) and the leader's lease kept, or nothing.
  auto written = etcd_.Txn({EtcdCompare::CreateRevision(kv.key, kv.create_revision)},
                           {EtcdOp::Put(kv.key, MoveRecordJson(move).dump(), kv.lease)});
  if (!written.ok()) return written.status();
  if (!*written)
    return Status::Error(fmt::format("the request {} is gone (its leader left)", kv.key));
  return Status::Ok();
}

}  // namespace qosvisor::control
