// Workload validation, Poisson arrivals, and the analyser's bookkeeping and report.
#include "pktgen/traffic.h"

#include <fmt/format.h>

#include <cmath>

namespace qosvisor::pktgen {
namespace {

constexpr uint32_t kWireOverhead = 24;

nlohmann::json Percentiles(const Histogram& h, double scale) {
  auto at = [&](double q) { return static_cast<double>(h.Percentile(q)) * scale; };
  return {{"count", h.count()},      {"p50", at(0.50)},
          {"p90", at(0.90)},         {"p99", at(0.99)},
          {"p999", at(0.999)},       {"max", static_cast<double>(h.max()) * scale},
          {"mean", h.mean() * scale}};
}

}  // namespace

Status ValidateWorkload(const WorkloadSpec& spec) {
  std::string errors;
  auto err = [&](const std::string& e) { errors += (errors.empty() ? "" : "\n") + e; };
  if (spec.classes.empty()) err("workload: no classes; give at least one");
  if (spec.classes.size() > 65535) err("workload: too many classes");
  if (spec.bottleneck_bps == 0) err("workload: the bottleneck rate must be > 0");
  if (spec.sender_bps == 0) err("workload: the sender rate must be > 0");
  if (!(spec.load > 0) || spec.load > 10)
    err(fmt::format("workload: load {} must be in (0, 10]", spec.load));
  if (spec.mss < 64 || spec.mss > 9000)
    err(fmt::format("workload: mss {} must be in 64..9000", spec.mss));
  double shares = 0;
  for (size_t i = 0; i < spec.classes.size(); ++i) {
    const ClassWorkload& c = spec.classes[i];
    if (!(c.share > 0)) err(fmt::format("workload.classes[{}] ({}): share must be > 0", i, c.name));
    if (c.sender >= spec.senders) {
      err(fmt::format("workload.classes[{}] ({}): sender {} but only {} sender(s)", i, c.name,
                      c.sender, spec.senders));
    }
    if (c.sizes.Max() > UINT32_MAX) {
      err(fmt::format("workload.classes[{}] ({}): messages larger than 4 GiB", i, c.name));
    }
    shares += c.share;
  }
  if (shares > 0 && std::abs(shares - 1.0) > 1e-6) {
    err(fmt::format("workload: class shares add up to {}, not 1", shares));
  }
  return errors.empty() ? Status::Ok() : Status::Error(errors);
}

uint64_t MessageWireBytes(const WorkloadSpec& spec, const ClassWorkload& c, uint64_t size) {
  const uint64_t full = size / spec.mss;
  const uint64_t rest = size % spec.mss;
  uint64_t bytes = full * (FrameLength(c.framing, false, spec.mss) + kWireOverhead);
  if (rest != 0 || size == 0) {
    bytes += FrameLength(c.framing, false, static_cast<uint32_t>(rest)) + kWireOverhead;
  }
  return bytes;
}

Generator::Generator(const WorkloadSpec& spec, uint64_t tsc_hz, uint64_t start_tsc)
    : spec_(spec), hz_(tsc_hz), rng_(spec.seed), senders_(std::max<uint16_t>(spec.senders, 1)) {
  std::mt19937_64 estimate_rng(spec.seed ^ 0x5eed);
  for (uint16_t c = 0; c < spec_.classes.size(); ++c) {
    // Mean wire bytes per message, estimated from the distribution itself (framing included).
    const ClassWorkload& cls = spec_.classes[c];
    double sum = 0;
    constexpr int kSamples = 100'000;
    for (int i = 0; i < kSamples; ++i) {
      sum += static_cast<double>(MessageWireBytes(spec_, cls, cls.sizes.Sample(estimate_rng)));
    }
    const double mean_bits = sum / kSamples * 8;
    const double rate_bps = spec_.load * cls.share * static_cast<double>(spec_.bottleneck_bps);
    mean_gap_tsc_.push_back(mean_bits / rate_bps * static_cast<double>(hz_));
    next_arrival_.push_back(start_tsc);
    class_seq_.push_back(0);
    class_packets_.push_back(0);
  }
  for (uint16_t c = 0; c < spec_.classes.size(); ++c) next_arrival_[c] += NextGap(c);
  for (Sender& s : senders_) s.free_tsc = start_tsc;
}

uint64_t Generator::NextGap(uint16_t cls) {
  std::exponential_distribution<double> gap(1.0 / mean_gap_tsc_[cls]);
  return std::max<uint64_t>(1, static_cast<uint64_t>(gap(rng_)));
}

void Generator::Arrive(uint16_t cls, uint64_t at) {
  const ClassWorkload& c = spec_.classes[cls];
  Sender& sender = senders_[c.sender];
  if (sender.queue.empty()) sender.free_tsc = std::max(sender.free_tsc, at);
  const uint64_t size = std::max<uint64_t>(1, c.sizes.Sample(rng_));
  const uint64_t id = uint64_t{cls} << 48 | (messages_ & ((1ull << 48) - 1));
  // One source port per message, so tcp-gap sees every message as its own flow.
  const auto src_port = static_cast<uint16_t>(10000 + (messages_ % 50000));
  sender.queue.push_back({id, cls, static_cast<uint32_t>(size), 0, at, src_port});
  ++messages_;
}

bool Generator::idle() const {
  for (const Sender& s : senders_) {
    if (!s.queue.empty()) return false;
  }
  return true;
}

const char* SizeBucketName(int bucket) {
  static const char* const kNames[kSizeBuckets] = {"1pkt", "<=10KB", "<=100KB", "<=1MB", ">1MB"};
  return kNames[bucket];
}

int SizeBucket(uint64_t size, uint32_t mss) {
  if (size <= mss) return 0;
  if (size <= 10'000) return 1;
  if (size <= 100'000) return 2;
  if (size <= 1'000'000) return 3;
  return 4;
}

Analyser::Analyser(const WorkloadSpec& spec, uint64_t tsc_hz)
    : spec_(spec),
      hz_(tsc_hz),
      classes_(spec.classes.size()),
      seen_(spec.classes.size()),
      max_seq_(spec.classes.size(), 0) {
  for (size_t c = 0; c < classes_.size(); ++c) {
    classes_[c].name = spec.classes[c].name;
    classes_[c].tenant = spec.classes[c].tenant;
  }
}

void Analyser::Receive(const uint8_t* frame, uint32_t length, uint64_t now) {
  Probe p;
  if (!ReadProbe(frame, length, p) || p.class_id >= classes_.size() ||
      p.offset + p.chunk > p.message_length) {
    ++foreign_;
    return;
  }
  ClassReport& r = classes_[p.class_id];
  std::vector<uint64_t>& seen = seen_[p.class_id];
  if (seen.size() <= p.seq / 64) seen.resize(p.seq / 64 + 1024, 0);
  uint64_t& word = seen[p.seq / 64];
  if (word & (1ull << (p.seq % 64))) {
    ++r.duplicates;
    return;
  }
  word |= 1ull << (p.seq % 64);
  if (p.seq < max_seq_[p.class_id]) ++r.reordered;
  max_seq_[p.class_id] = std::max(max_seq_[p.class_id], p.seq);
  ++r.received_packets;
  r.received_bytes += length + kWireOverhead;
  r.latency_ns.Record(now > p.send_tsc ? (now - p.send_tsc) * 1'000'000'000 / hz_ : 0);

  MessageProgress& m = messages_[p.message_id];
  m.start_tsc = p.message_start_tsc;
  m.received += p.chunk;
  if (m.received < p.message_length) return;
  const uint64_t completion_ns = (now - m.start_tsc) * 1'000'000'000 / hz_;
  const ClassWorkload& cls = spec_.classes[p.class_id];
  const double ideal_ns = static_cast<double>(MessageWireBytes(spec_, cls, p.message_length)) *
                          8e9 / static_cast<double>(spec_.bottleneck_bps);
  const double slowdown = std::max(1.0, static_cast<double>(completion_ns) / ideal_ns);
  r.completion_ns.Record(completion_ns);
  r.slowdown_milli[SizeBucket(p.message_length, spec_.mss)].Record(
      static_cast<uint64_t>(slowdown * 1000));
  ++r.messages_completed;
  messages_.erase(p.message_id);
}

void Analyser::Finish(const Generator& generator, uint64_t duration_ns) {
  duration_ns_ = duration_ns;
  const std::vector<uint64_t> sent = generator.packets_per_class();
  for (size_t c = 0; c < classes_.size(); ++c) classes_[c].sent_packets = sent[c];
  for (const auto& [id, progress] : messages_) {
    const size_t cls = id >> 48;
    if (cls < classes_.size()) ++classes_[cls].messages_incomplete;
  }
}

nlohmann::json Analyser::Report() const {
  nlohmann::json out;
  out["duration_s"] = static_cast<double>(duration_ns_) / 1e9;
  out["bottleneck_bps"] = spec_.bottleneck_bps;
  out["load"] = spec_.load;
  out["foreign_frames"] = foreign_;
  uint64_t total_bytes = 0;
  for (const ClassReport& r : classes_) total_bytes += r.received_bytes;
  nlohmann::json classes = nlohmann::json::array();
  for (size_t c = 0; c < classes_.size(); ++c) {
    const ClassReport& r = classes_[c];
    nlohmann::json slowdown;
    for (int b = 0; b < kSizeBuckets; ++b) {
      if (r.slowdown_milli[b].count() == 0) continue;
      slowdown[SizeBucketName(b)] = Percentiles(r.slowdown_milli[b], 0.001);
    }
    const double seconds = std::max(1e-9, static_cast<double>(duration_ns_) / 1e9);
    classes.push_back(
        {{"class", r.name},
         {"sizes", spec_.classes[c].size_name},
         {"tenant", r.tenant},
         {"sent_packets", r.sent_packets},
         {"received_packets", r.received_packets},
         {"lost_packets", r.sent_packets - std::min(r.sent_packets, r.received_packets)},
         {"duplicates", r.duplicates},
         {"reordered", r.reordered},
         {"throughput_bps", static_cast<double>(r.received_bytes) * 8 / seconds},
         {"byte_share",
          total_bytes ? static_cast<double>(r.received_bytes) / static_cast<double>(total_bytes)
                      : 0.0},
         {"messages_completed", r.messages_completed},
         {"messages_incomplete", r.messages_incomplete},
         {"latency_us", Percentiles(r.latency_ns, 0.001)},
         {"completion_us", Percentiles(r.completion_ns, 0.001)},
         {"slowdown", slowdown}});
  }
  out["classes"] = classes;
  return out;
}

}  // namespace qosvisor::pktgen
