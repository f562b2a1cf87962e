// The leader election's loop: campaign while the key is absent, renew the lease while leading,
// look at the key at short intervals otherwise.
#include "control/fleet_leader.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace qosvisor::control {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string HostOf(const std::string& value) {
  const json j = json::parse(value, nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.contains("host") && j["host"].is_string() ? j["host"].get<std::string>()
                                                                      : "an unreadable record";
}

}  // namespace

LeaderElection::LeaderElection(const config::Fleet& fleet, std::string instance)
    : fleet_(fleet),
      instance_(std::move(instance)),
      poll_(std::clamp<std::chrono::milliseconds>(
          std::chrono::milliseconds(fleet.lease_ttl_ns / 10'000'000),
          std::chrono::milliseconds(100), std::chrono::milliseconds(1000))),
      etcd_(EtcdOptions{fleet.etcd}) {}

LeaderElection::~LeaderElection() { Stop(); }

void LeaderElection::Start() {
  thread_.Start([this] { Loop(); });
}

void LeaderElection::Stop() {
  thread_.Stop();
  const int64_t lease = lease_.exchange(0);
  const bool was_leading = leading_.exchange(false);
  if (lease == 0) return;
  // The key goes with the lease: the others need not wait for it to expire.
  if (Status s = etcd_.LeaseRevoke(lease); !s.ok()) {
    spdlog::warn("fleet: could not give up the lead (another daemon takes over within {} s): {}",
                 fleet_.lease_ttl_ns / 1'000'000'000, s.message());
  } else if (was_leading) {
    spdlog::info("fleet: host {} no longer leads the fleet's planning", fleet_.host);
  }
}

void LeaderElection::Loop() {
  const auto renew_every = std::chrono::nanoseconds(fleet_.lease_ttl_ns) / 3;
  Clock::time_point next_renew = Clock::now();
  while (!thread_.stopping()) {
    Status s = Status::Ok();
    if (!leading_.load()) {
      s = Campaign();
      next_renew = Clock::now() + renew_every;
    } else if (Clock::now() >= next_renew) {
      s = Renew();
      next_renew = Clock::now() + renew_every;
    }
    if (!s.ok()) Lost(s.message());
    const auto wake = leading_.load() ? next_renew : Clock::now() + poll_;
    if (!thread_.SleepUntil(wake)) break;
  }
}

std::string LeaderElection::Value() const {
  return json{{"host", fleet_.host}, {"instance", instance_}, {"since_unix_ms", UnixMs()}}.dump();
}

// Takes the key if it is absent, else notes who holds it. A lease is granted for each attempt
// and given back when it wins nothing, so a follower holds no lease it must renew.
Status LeaderElection::Campaign() {
  const std::string key(kLeaderKey);
  auto held = etcd_.Range(key);
  if (!held.ok()) return held.status();
  if (!held->kvs.empty()) {
    SetLeader(HostOf(held->kvs.front().value));
    return Status::Ok();
  }
  const auto ttl_s = static_cast<int64_t>((fleet_.lease_ttl_ns + 999'999'999) / 1'000'000'000);
  auto lease = etcd_.LeaseGrant(ttl_s);
  if (!lease.ok()) return lease.status();
  auto won = etcd_.Txn({EtcdCompare::CreateRevision(key, 0)}, {EtcdOp::Put(key, Value(), *lease)});
  if (!won.ok() || !*won) {
    (void)etcd_.LeaseRevoke(*lease);  // best effort: it holds nothing and would expire anyway
    return won.ok() ? Status::Ok() : won.status();  // lost the race: the next look says to whom
  }
  lease_.store(*lease);
  leading_.store(true);
  {
    std::lock_guard lock(mu_);
    leading_since_unix_ms_ = UnixMs();
    last_error_.clear();
  }
  SetLeader(fleet_.host);
  spdlog::info("fleet: host {} leads the fleet's planning (key {}, lease {})", fleet_.host, key,
               *lease);
  return Status::Ok();
}

Status LeaderElection::Renew() {
  auto ttl = etcd_.LeaseKeepAliveOnce(lease_.load());
  if (!ttl.ok()) return ttl.status();
  if (*ttl == 0) return Status::Error("the leader's lease expired (etcd was out of reach)");
  return Status::Ok();
}

void LeaderElection::Lost(const std::string& why) {
  const bool was_leading = leading_.exchange(false);
  // Whatever the lease still holds is no longer ours to rely on; it is given up when etcd
  // answers (or expires).
  if (const int64_t lease = lease_.exchange(0); lease != 0) (void)etcd_.LeaseRevoke(lease);
  std::lock_guard lock(mu_);
  if (was_leading) {
    spdlog::warn("fleet: host {} stops leading the fleet's planning: {}", fleet_.host, why);
    leader_.clear();
  }
  last_error_ = why;
}

void LeaderElection::SetLeader(const std::string& host) {
  std::lock_guard lock(mu_);
  if (host != leader_ && host != fleet_.host) {
    spdlog::info("fleet: host {} leads the fleet's planning", host);
  }
  leader_ = host;
  if (host != fleet_.host) last_error_.clear();
}

std::string LeaderElection::leader() const {
  std::lock_guard lock(mu_);
  return leader_;
}

Result<LeaderElection::Holder> LeaderElection::HolderNow() {
  auto held = etcd_.Range(std::string(kLeaderKey));
  if (!held.ok()) {
    return Status::Error(fmt::format("cannot tell who leads the fleet: {}", held.message()));
  }
  if (held->kvs.empty()) return Holder{};
  const EtcdKeyValue& kv = held->kvs.front();
  const int64_t lease = lease_.load();
  return Holder{HostOf(kv.value), leading_.load() && lease != 0 && kv.lease == lease};
}

Status LeaderElection::CheckLeading() {
  auto holder = HolderNow();
  if (!holder.ok()) return holder.status();
  if (holder->me) return Status::Ok();
  if (holder->host.empty()) {
    return Status::Error(
        "no daemon leads the fleet's planning right now (the leader left; "
        "another takes over within fleet.lease_ttl)");
  }
  return Status::Error(fmt::format("host {} leads the fleet's planning, not this one ({})",
                                   holder->host, fleet_.host));
}

json LeaderElection::StatusJson() const {
  std::lock_guard lock(mu_);
  return {{"leader", leader_},
          {"leading", leading_.load()},
          {"leading_since_unix_ms", leading_.load() ? leading_since_unix_ms_ : 0},
          {"election_error", last_error_}};
}

}  // namespace qosvisor::control
