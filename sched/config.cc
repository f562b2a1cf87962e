// Validation of a scheduler configuration: ranges, references and conflicts, all reported at once
// with the path of the offending field, so the YAML layer can add file:line:col.
#include "sched/config.h"

#include <bit>

#include "fmt/format.h"

namespace qosvisor::sched {

const char* PolicyName(Policy p) {
  switch (p) {
    case Policy::kFifo:
      return "fifo";
    case Policy::kPriority:
      return "priority";
    case Policy::kSrpt:
      return "srpt";
    case Policy::kLas:
      return "las";
    case Policy::kWfq:
      return "wfq";
    case Policy::kEdf:
      return "edf";
    case Policy::kPace:
      return "pace";
  }
  return "?";
}

namespace {

constexpr size_t kMaxClasses = 4096;

// The first of items[0, i) named as items[i], or -1 (also for an unnamed item).
template <typename T>
int FirstNamed(const std::vector<T>& items, size_t i) {
  if (items[i].name.empty()) return -1;
  for (size_t j = 0; j < i; ++j) {
    if (items[j].name == items[i].name) return static_cast<int>(j);
  }
  return -1;
}

}  // namespace

Status Validate(const SchedulerConfig& c) {
  std::string errors;
  auto error = [&errors, &c](std::string text) {
    if (!errors.empty()) errors += '\n';
    errors += c.name.empty() ? text : fmt::format("{}: {}", c.name, text);
  };
  if (c.rate_bps == 0) error("rate: must be above 0 (the uplink's line rate, e.g. 10Gbps)");
  if (c.pacing_bps > c.rate_bps && c.rate_bps != 0) {
    error(fmt::format("pacing: {} bps is above the line rate {} bps; pace at or below it",
                      c.pacing_bps, c.rate_bps));
  }
  if (c.buffer_bytes == 0) error("buffer_bytes: must be above 0");
  if (c.buffer_packets == 0) error("buffer_packets: must be above 0");
  if (c.max_messages == 0) error("max_messages: must be above 0");
  if (c.max_messages > (1u << 28)) error("max_messages: at most 268435456");
  if (c.message_idle_timeout_ns > kMaxMessageIdleNs) {
    error(fmt::format("message_idle_timeout: {} ns is above the most, one hour",
                      c.message_idle_timeout_ns));
  }
  if (c.rank_buckets < 64 || c.rank_buckets > (1u << 24) || !std::has_single_bit(c.rank_buckets)) {
    error(fmt::format("rank_buckets: {} must be a power of two between 64 and 16777216",
                      c.rank_buckets));
  }
  if (c.classes.empty()) error("classes: at least one class is needed");
  if (c.classes.size() > kMaxClasses) error(fmt::format("classes: at most {}", kMaxClasses));
  for (size_t i = 0; i < c.classes.size(); ++i) {
    const ClassConfig& k = c.classes[i];
    std::string where = fmt::format("classes[{}]", i);
    if (!k.name.empty()) where += fmt::format(" ({})", k.name);
    if (k.weight == 0) error(where + ".weight: must be at least 1");
    if (k.priority > 7) error(where + fmt::format(".priority: {} is not in 0..7", k.priority));
    if (k.policy == Policy::kPace && k.rate_bps == 0) {
      error(where + ".rate: policy pace needs a rate, e.g. rate: 1Gbps");
    }
    if (k.policy == Policy::kEdf && k.deadline_ns == 0) {
      error(where + ".deadline: policy edf needs a deadline, e.g. deadline: 100us");
    }
    if (k.srpt_aging_ns != 0 && k.policy != Policy::kSrpt) {
      error(where +
            fmt::format(".aging: only policy srpt ages, this class is {}", PolicyName(k.policy)));
    }
    if (k.rank_shift > 48) error(where + ".rank_shift: at most 48");
    if (k.message_idle_ns > kMaxMessageIdleNs) {
      error(where +
            fmt::format(".message_idle: {} ns is above the most, one hour", k.message_idle_ns));
    }
    // A live reload carries a class's counts and messages over by its name. (Pairs are
    // compared: past the limit on classes, already refused, that would take long.)
    if (const int first = c.classes.size() <= kMaxClasses ? FirstNamed(c.classes, i) : -1;
        first >= 0) {
      error(where + fmt::format(".name: already the name of classes[{}]", first));
    }
  }
  if (c.tenants.size() > 64) error("tenants: at most 64");
  std::vector<int> owner(c.classes.size(), -1);
  for (size_t t = 0; t < c.tenants.size(); ++t) {
    const TenantConfig& tc = c.tenants[t];
    std::string where = fmt::format("tenants[{}]", t);
    if (!tc.name.empty()) where += fmt::format(" ({})", tc.name);
    if (tc.weight == 0) error(where + ".weight: must be at least 1");
    if (tc.priority > 7) error(where + fmt::format(".priority: {} is not in 0..7", tc.priority));
    if (tc.classes.empty()) error(where + ".classes: a tenant needs at least one class");
    if (tc.classes.size() > 64) error(where + ".classes: at most 64 per tenant");
    if (const int first = FirstNamed(c.tenants, t); first >= 0) {
      error(where + fmt::format(".name: already the name of tenants[{}]", first));
    }
    for (uint16_t k : tc.classes) {
      if (k >= c.classes.size()) {
        error(where +
              fmt::format(".classes: class {} does not exist (there are {})", k, c.classes.size()));
      } else if (owner[k] >= 0) {
        error(where +
              fmt::format(".classes: class {} already belongs to tenants[{}]", k, owner[k]));
      } else {
        owner[k] = static_cast<int>(t);
      }
    }
  }
  if (!c.tenants.empty()) {
    for (size_t k = 0; k < c.classes.size(); ++k) {
      if (owner[k] < 0) error(fmt::format("classes[{}]: belongs to no tenant", k));
    }
  } else if (c.classes.size() > 64) {
    error("classes: more than 64 classes need tenants (at most 64 classes per tenant)");
  }
  if (errors.empty()) return Status::Ok();
  return Status::Error(errors);
}

}  // namespace qosvisor::sched
