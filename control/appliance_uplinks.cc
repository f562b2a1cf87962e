// The `uplinks` command: per uplink its rates, what is queued against its buffer, drops by
// reason, each class's wait percentiles, the messages holding the backlog and how the ranks of
// queued heads spread, from an inspection its owner's lcore runs on request.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <string_view>

#include "common/tsc.h"
#include "control/appliance.h"

namespace qosvisor::control {

using nlohmann::json;

namespace {

constexpr uint32_t kDefaultTop = 10;

// Ranks are bytes (srpt, las), TSC cycles (shown in seconds) or wfq start tags (bytes of virtual
// time).
const char* RankUnit(sched::Policy p) {
  switch (p) {
    case sched::Policy::kSrpt:
    case sched::Policy::kLas:
      return "bytes";
    case sched::Policy::kWfq:
      return "tag";
    default:
      return "seconds";
  }
}

// row["wait_<name>_seconds"]: the upper bound of the power-of-two bucket in which the
// q-quantile of a class's waits falls, null before any packet left; row["wait_<name>_open"]: it
// fell into the last bucket, which is open, and the value is that bucket's lower bound.
void AddWaitQuantile(json& row, const char* name, const sched::ClassStats& cs, double q,
                     double hz) {
  uint64_t total = 0;
  for (uint64_t n : cs.sojourn) total += n;
  const auto rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * total)));
  uint64_t seen = 0;
  int b = 0;
  for (; b + 1 < sched::kSojournBuckets; ++b) {
    seen += cs.sojourn[b];
    if (seen >= rank) break;
  }
  const bool open = b + 1 == sched::kSojournBuckets;
  row[fmt::format("wait_{}_seconds", name)] =
      total == 0 ? json(nullptr) : json(std::ldexp(1.0, b + sched::kSojournShift - open) / hz);
  row[fmt::format("wait_{}_open", name)] = total != 0 && open;
}

// Distance 0 (the next head and its ties), then the buckets from the first to the last that
// holds heads (the empty ones between included, so that a chart keeps its scale): [lo, hi) in
// the class's unit.
json RankBuckets(const sched::ClassRanks& ranks, sched::Policy policy, double hz) {
  const double scale = RankUnit(policy) == std::string_view("seconds") ? 1 / hz : 1;
  const uint64_t* d = ranks.distance;
  int first = 1, last = sched::kRankDistanceBuckets - 1;
  while (first <= last && d[first] == 0) ++first;
  while (last >= first && d[last] == 0) --last;
  json out = json::array();
  if (d[0] != 0) out.push_back({{"lo", 0}, {"hi", 0}, {"count", d[0]}});
  for (int b = first; b <= last; ++b) {
    out.push_back({{"lo", std::ldexp(1.0, b - 1) * scale},
                   {"hi", std::ldexp(1.0, b) * scale},
                   {"count", d[b]}});
  }
  return out;
}

json TopMessages(const sched::SchedulerDetail& d, const std::vector<std::string>& class_names,
                 uint32_t top, double hz) {
  json out = json::array();
  for (size_t i = 0; i < d.top.size() && i < top; ++i) {
    const sched::QueuedMessage& m = d.top[i];
    const uint64_t waited = d.taken_tsc > m.head_arrival_tsc ? d.taken_tsc - m.head_arrival_tsc : 0;
    out.push_back({{"message_id", m.message_id},
                   {"class", m.class_id < class_names.size() ? class_names[m.class_id] : ""},
                   {"queued_bytes", m.bytes_queued},
                   {"queued_packets", m.packets},
                   {"more_packets", m.more_packets},
                   {"sent_bytes", m.bytes_sent},
                   {"head_wait_seconds", static_cast<double>(waited) / hz},
                   {"default_queue", m.default_queue}});
  }
  return out;
}

// The top count asked for: a whole number from 1 to Switch::kDetailTopMessages.
Result<uint32_t> TopArgument(const json& args) {
  if (!args.contains("top")) return kDefaultTop;
  const json& t = args["top"];
  const uint32_t most = vswitch::Switch::kDetailTopMessages;
  if (!t.is_number_integer() || t.get<int64_t>() < 1 || t.get<int64_t>() > most) {
    return Status::Error(
        fmt::format("uplinks: 'top' must be a whole number from 1 to {}, not {}", most, t.dump()));
  }
  return t.get<uint32_t>();
}

}  // namespace

json Appliance::UplinkJson(size_t u, const vswitch::Switch::Snapshot& snap, uint32_t top) const {
  const double hz = static_cast<double>(TscHz());
  const sched::SchedulerStats& st = snap.uplinks[u];
  const sched::SchedulerDetail& d = snap.details[u];
  const sched::SchedulerConfig& sc = spec_.uplinks[u].scheduler;
  const std::vector<std::string>& names = uplink_class_names_[u];
  json classes = json::array();
  for (size_t i = 0; i < st.classes.size() && i < sc.classes.size(); ++i) {
    const sched::ClassStats& cs = st.classes[i];
    const sched::ClassRanks& ranks = i < d.classes.size() ? d.classes[i] : sched::ClassRanks{};
    classes.push_back({{"class", names[i]},
                       {"policy", sched::PolicyName(sc.classes[i].policy)},
                       {"queued_packets", cs.queued_packets},
                       {"queued_bytes", cs.queued_bytes},
                       {"queued_messages", ranks.queued_heads},
                       {"dropped",
                        {{"tail", cs.dropped_tail},
                         {"worst", cs.dropped_worst},
                         {"message_limit", cs.dropped_message_limit}}},
                       {"ranks",
                        {{"unit", RankUnit(sc.classes[i].policy)},
                         {"sampled", ranks.sampled_heads},
                         {"distance_buckets", RankBuckets(ranks, sc.classes[i].policy, hz)}}}});
    AddWaitQuantile(classes.back(), "p50", cs, 0.50, hz);
    AddWaitQuantile(classes.back(), "p99", cs, 0.99, hz);
  }
  return {
      {"port", uplink_ports_[u]},
      {"rate_bytes_per_second", sc.rate_bps / 8},
      {"pacing_bytes_per_second", sc.pacing_bps / 8},
      {"queued_packets", st.total.queued_packets},
      {"queued_bytes", st.total.queued_bytes},
      {"buffer_packets", sc.buffer_packets},
      {"buffer_bytes", sc.buffer_bytes},
      {"message_limit_bytes", sc.message_limit_bytes},
      {"queued_messages", d.queued_messages},
      {"live_messages", st.live_messages},
      {"max_messages", sc.max_messages},
      {"dropped",
       {{"reconfigured", st.dropped_reconfigured}, {"unknown_class", st.dropped_unknown_class}}},
      {"ranks_sampled", d.sampled_heads},
      {"table_slots_scanned", d.slots_scanned},
      {"classes", classes},
      {"top_messages", TopMessages(d, names, top, hz)}};
}

Result<json> Appliance::UplinksJson(const json& args) {
  auto top = TopArgument(args);
  if (!top.ok()) return top.status();
  std::vector<size_t> asked;
  if (args.contains("uplink")) {
    if (!args["uplink"].is_string()) return Status::Error("uplinks: 'uplink' is a port name");
    const std::string port = args["uplink"].get<std::string>();
    const auto it = std::find(uplink_ports_.begin(), uplink_ports_.end(), port);
    if (it == uplink_ports_.end()) {
      return Status::Error(fmt::format("uplinks: no uplink on port '{}' (uplinks: {})", port,
                                       fmt::join(uplink_ports_, ", ")));
    }
    asked.push_back(static_cast<size_t>(it - uplink_ports_.begin()));
  } else {
    for (size_t u = 0; u < uplink_ports_.size(); ++u) asked.push_back(u);
  }
  json out = json::array();
  // One request per uplink: each inspection is a scan of that uplink's message table on its
  // owner's lcore, spread over its polls and answered at the one that ends it.
  for (size_t u : asked) {
    std::lock_guard lock(stats_mu_);
    auto taken = switch_->TakeSnapshot(lcore_running_, vswitch::Switch::kInspectTimeout, -1,
                                       static_cast<int>(u));
    if (!taken.ok()) return taken.status();
    out.push_back(UplinkJson(u, *taken, *top));
  }
  return out;
}

}  // namespace qosvisor::control
