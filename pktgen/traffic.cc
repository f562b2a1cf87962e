// Workload validation, the arrival schedules, and the analyser's bookkeeping and report.
#include "pktgen/traffic.h"

#include <fmt/format.h>

#include <cmath>

#include "common/tsc.h"

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

// Non-empty buckets as [lower, upper, count] rows, scaled: enough to redraw a CDF or write a CSV
// from the JSON report alone (a few hundred rows, not one per sample).
nlohmann::json Buckets(const Histogram& h) {
  nlohmann::json rows = nlohmann::json::array();
  for (int i = 0; i < Histogram::kBuckets; ++i) {
    if (h.CountAt(i) == 0) continue;
    rows.push_back({Histogram::LowerEdge(i), Histogram::UpperEdge(i), h.CountAt(i)});
  }
  return rows;
}

}  // namespace

const char* ArrivalName(Arrival arrival) {
  switch (arrival) {
    case Arrival::kPoisson:
      return "poisson";
    case Arrival::kConstant:
      return "constant";
    case Arrival::kOnOff:
      return "on_off";
  }
  return "?";
}

const char* TransportName(Transport t) {
  switch (t) {
    case Transport::kOpen:
      return "open";
    case Transport::kWindow:
      return "window";
    case Transport::kHoma:
      return "homa";
  }
  return "?";
}

Status ValidateWorkload(const WorkloadSpec& spec) {
  std::string errors;
  auto err = [&](const std::string& e) { errors += (errors.empty() ? "" : "\n") + e; };
  if (spec.classes.empty()) err("workload: no classes; give at least one");
  if (spec.classes.size() > 256) {
    err(fmt::format("workload: {} classes; at most 256", spec.classes.size()));
  }
  if (spec.bottleneck_bps == 0) err("workload: the bottleneck rate must be > 0");
  if (spec.sender_bps == 0) err("workload: the sender rate must be > 0");
  if (!(spec.load > 0) || spec.load > 10)
    err(fmt::format("workload: load {} must be in (0, 10]", spec.load));
  if (spec.mss < 64 || spec.mss > 9000)
    err(fmt::format("workload: mss {} must be in 64..9000", spec.mss));
  const TransportSpec& t = spec.transport;
  if (t.kind == Transport::kWindow && t.window_bytes < spec.mss) {
    err(fmt::format("transport: window {}B is smaller than one packet ({}B)", t.window_bytes,
                    spec.mss));
  }
  if (t.kind == Transport::kHoma && (t.rtt_bytes < spec.mss || t.overcommit == 0)) {
    err(fmt::format("transport: homa needs rtt_bytes >= one packet ({}B) and overcommit >= 1",
                    spec.mss));
  }
  if (t.kind != Transport::kOpen && t.rto_ns == 0) err("transport: the resend timeout must be > 0");
  double shares = 0;
  for (size_t i = 0; i < spec.classes.size(); ++i) {
    const ClassWorkload& c = spec.classes[i];
    if (!(c.share > 0)) err(fmt::format("workload.classes[{}] ({}): share must be > 0", i, c.name));
    if (c.sender >= spec.senders) {
      err(fmt::format("workload.classes[{}] ({}): sender {} but only {} sender(s)", i, c.name,
                      c.sender, spec.senders));
    }
    if (c.arrival == Arrival::kOnOff && (c.on_ns == 0 || c.off_ns == 0)) {
      err(fmt::format("workload.classes[{}] ({}): on/off arrivals need on and off times > 0", i,
                      c.name));
    }
    if (c.vlan > 4095) {
      err(fmt::format("workload.classes[{}] ({}): vlan {} is not 0..4095", i, c.name, c.vlan));
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
  const bool vlan = c.vlan >= 0;
  uint64_t bytes = full * (FrameLength(c.framing, vlan, spec.mss) + kWireOverhead);
  if (rest != 0 || size == 0) {
    // The last (or only) packet; class 0 stands for any, as a workload has at most 256 classes.
    const bool compact =
        full == 0 && spec.transport.kind == Transport::kOpen &&
        UsesCompactProbe(0, static_cast<uint32_t>(rest), static_cast<uint32_t>(size), 0, c.tenant);
    bytes += FrameLength(c.framing, vlan, static_cast<uint32_t>(rest), compact) + kWireOverhead;
  }
  return bytes;
}

Generator::Generator(const WorkloadSpec& spec, uint64_t tsc_hz, uint64_t start_tsc)
    : spec_(spec),
      hz_(tsc_hz),
      start_tsc_(start_tsc),
      senders_(std::max<uint16_t>(spec.senders, 1)) {
  std::mt19937_64 estimate_rng(spec.seed ^ 0x5eed);
  for (uint16_t c = 0; c < spec_.classes.size(); ++c) {
    // Mean wire bytes per message, estimated from the distribution itself (framing included);
    // exact for fixed sizes, so constant-rate arrivals offer exactly the requested rate.
    const ClassWorkload& cls = spec_.classes[c];
    double mean_bytes = 0;
    fixed_wire_bytes_.push_back(0);
    if (cls.sizes.Min() == cls.sizes.Max()) {
      fixed_wire_bytes_.back() =
          MessageWireBytes(spec_, cls, std::max<uint64_t>(1, cls.sizes.Min()));
      mean_bytes = static_cast<double>(fixed_wire_bytes_.back());
    } else {
      double sum = 0;
      constexpr int kSamples = 100'000;
      for (int i = 0; i < kSamples; ++i) {
        sum += static_cast<double>(MessageWireBytes(spec_, cls, cls.sizes.Sample(estimate_rng)));
      }
      mean_bytes = sum / kSamples;
    }
    const double mean_bits = mean_bytes * 8;
    const double rate_bps = spec_.load * cls.share * static_cast<double>(spec_.bottleneck_bps);
    mean_gap_tsc_.push_back(mean_bits / rate_bps * static_cast<double>(hz_));
    next_arrival_.push_back(start_tsc);
    clock_.push_back(0);
    class_seq_.push_back(0);
    class_packets_.push_back(0);
    rngs_.emplace_back(spec.seed * 0x9E3779B97F4A7C15ull + c);
  }
  for (uint16_t c = 0; c < spec_.classes.size(); ++c) {
    if (spec_.exact_load_ns != 0) MatchLoad(c, spec_.exact_load_ns);
    Advance(c);
  }
  for (Sender& s : senders_) s.free_tsc = start_tsc;
  sent_messages_.assign(spec_.classes.size(), {});
  rto_tsc_ = std::max<uint64_t>(1, NsToTsc(spec_.transport.rto_ns, hz_));
}

bool Generator::Refresh(Pending& m, uint64_t now) {
  const uint32_t acked = feedback_->Acked(m.id);
  if (acked > m.acked) {
    m.acked = std::min(acked, m.size);
    m.progress_tsc = now;
  }
  if (m.acked >= m.size) return true;
  // Nothing confirmed for a timeout with bytes outstanding: the rest is presumed lost. Go back
  // to the first missing byte (the receiver ignores chunks it already has).
  if (m.sent > m.acked && now - m.progress_tsc > rto_tsc_) {
    m.sent = m.acked;
    m.progress_tsc = now;
    m.recovering = spec_.transport.kind == Transport::kHoma;
  }
  return false;
}

void Generator::SkipReceived(Pending& m) const {
  while (m.sent < m.high && feedback_->HasChunk(m.id, m.sent)) {
    m.sent += std::min(spec_.mss, m.size - m.sent);
  }
}

uint32_t Generator::HomaLimit(const Pending& m) const {
  if (m.recovering) return std::max(m.granted, std::min(m.size, m.acked + spec_.mss));
  return std::max(m.granted, std::min(m.size, spec_.transport.rtt_bytes));
}

Generator::Pending* Generator::Pick(Sender& sender, uint64_t now) {
  switch (spec_.transport.kind) {
    case Transport::kOpen:
      return sender.queue.empty() ? nullptr : &sender.queue.front();
    case Transport::kWindow:
      return PickWindow(sender, now);
    case Transport::kHoma:
      return PickHoma(sender);
  }
  return nullptr;
}

Generator::Pending* Generator::PickWindow(Sender& sender, uint64_t now) {
  for (int scanned = 0; !sender.queue.empty() && scanned < kWindowScan; ++scanned) {
    Pending& m = sender.queue.front();
    if (m.sent != 0 && Refresh(m, now)) {
      sender.queue.pop_front();
      continue;
    }
    SkipReceived(m);
    if (m.sent < m.size && m.sent < m.acked + spec_.transport.window_bytes) return &m;
    const Pending waiting = m;  // its window is full: to the back, as round robin would
    sender.queue.pop_front();
    sender.queue.push_back(waiting);
  }
  return nullptr;
}

Generator::Pending* Generator::PickHoma(Sender& sender) {
  Pending* best = nullptr;
  uint32_t best_left = UINT32_MAX;
  auto consider = [&](Pending& m) {
    SkipReceived(m);
    if (m.sent < std::min(m.size, HomaLimit(m)) && m.size - m.sent < best_left) {
      best = &m;
      best_left = m.size - m.sent;
    }
  };
  // Bounded, as the window transport's scan is: after heavy loss thousands of messages may be
  // owed resends, and a scan of all of them per packet would stall the sender. The oldest are
  // looked at first (ids grow with time), which are the ones recovering longest.
  int scanned = 0;
  for (auto it = sender.owed.begin(); it != sender.owed.end() && scanned < kHomaScan; ++scanned) {
    auto live = sender.live.find(*it);
    if (live == sender.live.end()) {
      it = sender.owed.erase(it);
      continue;
    }
    Pending& m = live->second;
    SkipReceived(m);
    if (m.sent >= std::min(m.size, HomaLimit(m))) {
      it = sender.owed.erase(it);
      continue;
    }
    consider(m);
    ++it;
  }
  if (!sender.unscheduled.empty()) consider(sender.live.at(sender.unscheduled.begin()->second));
  return best;
}

void Generator::AfterSend(Sender& sender, Pending& m) {
  switch (spec_.transport.kind) {
    case Transport::kOpen: {  // a message sent whole is done
      const Pending next = m;
      sender.queue.pop_front();
      if (next.sent < next.size) sender.queue.push_back(next);
      break;
    }
    case Transport::kWindow: {  // kept until acknowledged
      const Pending next = m;
      sender.queue.pop_front();
      sender.queue.push_back(next);
      break;
    }
    case Transport::kHoma:
      if (m.sent >= std::min(m.size, spec_.transport.rtt_bytes)) {
        sender.unscheduled.erase({m.size, m.id});
      }
      break;
  }
}

void Generator::PollHoma(uint64_t now) {
  grants_.clear();
  feedback_->Grants(grants_);
  for (const auto& [id, offset] : grants_) {
    const auto cls = static_cast<uint16_t>(MessageClass(id));
    if (cls >= spec_.classes.size()) continue;
    Sender& sender = senders_[spec_.classes[cls].sender];
    auto it = sender.live.find(id);
    if (it == sender.live.end()) continue;
    Pending& m = it->second;
    m.granted = std::max(m.granted, offset);
    if (m.sent < std::min(m.size, m.granted)) sender.owed.insert(id);
  }
  if (now < next_scan_tsc_ && !scanning_) return;
  // Every rto/8 a pass over the live messages: acks, timeouts, finished messages. A pass goes a
  // chunk per poll, so that sending goes on between chunks however many messages wait.
  scanning_ = true;
  bool pass_done = true;
  for (Sender& sender : senders_) {
    for (int budget = kScanChunk; budget > 0 && sender.scan_next < sender.scan_ids.size();
         --budget) {
      uint64_t& slot = sender.scan_ids[sender.scan_next];
      auto it = sender.live.find(slot);
      if (it != sender.live.end()) {
        Pending& m = it->second;
        if (m.sent == 0 || !Refresh(m, now)) {
          if (m.recovering && m.sent < std::min(m.size, HomaLimit(m))) sender.owed.insert(m.id);
          ++sender.scan_next;
          continue;
        }
        sender.unscheduled.erase({m.size, m.id});
        sender.owed.erase(m.id);
        sender.live.erase(it);
      }
      slot = sender.scan_ids.back();  // done with: the last id takes its place, unscanned
      sender.scan_ids.pop_back();
    }
    pass_done &= sender.scan_next >= sender.scan_ids.size();
  }
  if (!pass_done) return;
  for (Sender& sender : senders_) sender.scan_next = 0;
  scanning_ = false;
  next_scan_tsc_ = now + rto_tsc_ / 8 + 1;
}

void Generator::Restart(uint64_t start_tsc) {
  for (uint64_t& t : next_arrival_) t = t - start_tsc_ + start_tsc;
  for (Sender& s : senders_) s.free_tsc = start_tsc;
  start_tsc_ = start_tsc;
}

double Generator::NextArrival(uint16_t cls, std::mt19937_64& rng, double& clock) const {
  const ClassWorkload& c = spec_.classes[cls];
  const double mean_gap = mean_gap_tsc_[cls];
  switch (c.arrival) {
    case Arrival::kPoisson: {
      std::exponential_distribution<double> gap(1.0 / mean_gap);
      clock += gap(rng);
      return clock;
    }
    case Arrival::kConstant:
      // Accumulated in floating point: rounding each gap to whole cycles would bias the rate.
      clock += mean_gap;
      return clock;
    case Arrival::kOnOff: {
      // The clock counts on-time only, so bursts are denser by (on + off) / on and the mean
      // load stays what was asked for; off periods are skipped when mapping to real time.
      const double on = static_cast<double>(NsToTsc(c.on_ns, hz_));
      const double off = static_cast<double>(NsToTsc(c.off_ns, hz_));
      std::exponential_distribution<double> gap((on + off) / (on * mean_gap));
      clock += gap(rng);
      const double periods = std::floor(clock / on);
      return periods * (on + off) + (clock - periods * on);
    }
  }
  return clock;
}

void Generator::Advance(uint16_t cls) {
  next_arrival_[cls] =
      start_tsc_ + static_cast<uint64_t>(NextArrival(cls, rngs_[cls], clock_[cls]));
}

double Generator::OfferedIn(uint16_t cls, double window_tsc) const {
  const ClassWorkload& c = spec_.classes[cls];
  std::mt19937_64 rng = rngs_[cls];
  double clock = 0, bytes = 0;
  while (NextArrival(cls, rng, clock) < window_tsc) {
    const uint64_t size = std::max<uint64_t>(1, c.sizes.Sample(rng));  // as Arrive draws it
    bytes += static_cast<double>(fixed_wire_bytes_[cls] != 0 ? fixed_wire_bytes_[cls]
                                                             : MessageWireBytes(spec_, c, size));
  }
  return bytes;
}

void Generator::MatchLoad(uint16_t cls, uint64_t window_ns) {
  const ClassWorkload& c = spec_.classes[cls];
  // Constant arrivals of fixed sizes are exact already; past ten million messages the sample's
  // mean is the distribution's (and drawing the schedule first would take seconds).
  const double window_tsc = static_cast<double>(NsToTsc(window_ns, hz_));
  if (c.arrival == Arrival::kConstant || window_tsc / mean_gap_tsc_[cls] > 1e7) return;
  const double target = spec_.load * c.share * static_cast<double>(spec_.bottleneck_bps) / 8 *
                        static_cast<double>(window_ns) / 1e9;
  // Scaling every gap by one factor keeps the draws (each gap is a fixed draw over the rate);
  // which messages fall inside the window then moves, and a message larger than the error can
  // only be in or out: a few rounds, keeping the closest.
  double best_gap = mean_gap_tsc_[cls], best_error = -1;
  for (int round = 0; round < 8; ++round) {
    const double offered = OfferedIn(cls, window_tsc);
    if (offered <= 0) break;
    const double error = std::abs(offered - target);
    if (best_error < 0 || error < best_error) {
      best_error = error;
      best_gap = mean_gap_tsc_[cls];
    }
    if (error < 1e-4 * target) break;
    mean_gap_tsc_[cls] *= offered / target;
  }
  mean_gap_tsc_[cls] = best_gap;
}

void Generator::Arrive(uint16_t cls, uint64_t at) {
  const ClassWorkload& c = spec_.classes[cls];
  Sender& sender = senders_[c.sender];
  if (sender.queue.empty() && sender.live.empty()) sender.free_tsc = std::max(sender.free_tsc, at);
  const uint64_t size = std::max<uint64_t>(1, c.sizes.Sample(rngs_[cls]));
  const uint64_t id = MessageId(cls, messages_);
  // One source port per message, so tcp-gap sees every message as its own flow.
  const auto src_port = static_cast<uint16_t>(10000 + (messages_ % 50000));
  const Pending m{id, cls, static_cast<uint32_t>(size), 0, at, /*first_send_tsc=*/0, src_port};
  if (spec_.transport.kind == Transport::kHoma) {
    sender.live.emplace(id, m);
    sender.unscheduled.insert({m.size, id});
    sender.scan_ids.push_back(id);
  } else {
    sender.queue.push_back(m);
  }
  ++messages_;
  offered_bytes_ +=
      fixed_wire_bytes_[cls] != 0 ? fixed_wire_bytes_[cls] : MessageWireBytes(spec_, c, size);
}

bool Generator::idle() const {
  for (const Sender& s : senders_) {
    if (!s.queue.empty() || !s.live.empty()) return false;
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

// A compact probe's 32-bit sequence number, placed in the 2^32 window nearest the highest seen.
uint64_t ExtendSeq(uint64_t seq32, uint64_t highest) {
  constexpr uint64_t kWindow = 1ull << 32;
  uint64_t seq = (highest & ~(kWindow - 1)) | seq32;
  if (seq + kWindow / 2 < highest) seq += kWindow;
  if (seq > highest + kWindow / 2 && seq >= kWindow) seq -= kWindow;
  return seq;
}

Analyser::Analyser(const WorkloadSpec& spec, uint64_t tsc_hz, uint64_t start_tsc)
    : spec_(spec),
      hz_(tsc_hz),
      classes_(spec.classes.size()),
      seen_(spec.classes.size()),
      max_seq_(spec.classes.size(), 0),
      start_tsc_(start_tsc),
      bin_tsc_(std::max<uint64_t>(1, NsToTsc(kBinNs, tsc_hz))) {
  for (size_t c = 0; c < classes_.size(); ++c) {
    classes_[c].name = spec.classes[c].name;
    classes_[c].tenant = spec.classes[c].tenant;
  }
}

void Analyser::Receive(const uint8_t* frame, uint32_t length, uint64_t now) {
  Probe p;
  if (!ReadProbe(frame, length, p)) {
    ++foreign_;
    return;
  }
  ReceiveProbe(p, length, now);
}

void Analyser::ReceiveProbe(const Probe& received, uint32_t length, uint64_t now) {
  if (received.magic != kProbeMagic || received.class_id >= classes_.size() ||
      uint64_t{received.offset} + received.chunk > received.message_length) {
    ++foreign_;
    return;
  }
  Probe p = received;
  if (p.message_id & kCompactMessageIdBit) p.seq = ExtendSeq(p.seq, max_seq_[p.class_id]);
  if (p.chunk == 0 && p.message_length != 0) {
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
  ++received_packets_;
  received_bytes_ += length + kWireOverhead;
  if (start_tsc_ == 0) start_tsc_ = now;  // no time zero given: the first frame is
  const size_t bin =
      std::min<size_t>(kMaxBins - 1, now > start_tsc_ ? (now - start_tsc_) / bin_tsc_ : 0);
  if (r.bytes_per_bin.size() <= bin) r.bytes_per_bin.resize(bin + 1, 0);
  r.bytes_per_bin[bin] += length + kWireOverhead;
  r.latency_ns.Record(now > p.send_tsc ? (now - p.send_tsc) * 1'000'000'000 / hz_ : 0);

  if (Completed(p.message_id)) return;  // a resent copy of a message already complete
  auto [it, fresh] = messages_.try_emplace(p.message_id);
  MessageProgress& m = it->second;
  if (fresh) {
    m.size = p.message_length;
    m.start_tsc = p.message_start_tsc;
    if (p.message_length > spec_.mss) m.chunks.resize((p.message_length / spec_.mss + 64) / 64);
  } else {
    by_remaining_.erase({m.size - m.received, p.message_id});
  }
  // A resent chunk that had arrived already adds nothing to its message.
  const uint32_t chunk_index = p.offset / spec_.mss;
  if (!m.chunks.empty()) {
    uint64_t& bits = m.chunks[chunk_index / 64];
    const uint64_t bit = uint64_t{1} << (chunk_index % 64);
    if ((bits & bit) == 0) {
      bits |= bit;
      m.received += p.chunk;
    }
    while (m.contiguous < m.size) {
      const uint32_t next = m.contiguous / spec_.mss;
      if ((m.chunks[next / 64] & (uint64_t{1} << (next % 64))) == 0) break;
      m.contiguous = std::min(m.size, m.contiguous + spec_.mss);
    }
  } else {
    m.received = m.contiguous = m.size;
  }
  if (m.received < m.size) {
    by_remaining_.insert({m.size - m.received, p.message_id});
    return;
  }
  const uint64_t completion_ns = (now - m.start_tsc) * 1'000'000'000 / hz_;
  const uint64_t wire_bytes = MessageWireBytes(spec_, spec_.classes[p.class_id], p.message_length);
  const double ideal_ns = IdealNs(wire_bytes, p.message_length);
  const double slowdown = std::max(1.0, static_cast<double>(completion_ns) / ideal_ns);
  const int bucket = SizeBucket(p.message_length, spec_.mss);
  r.completion_ns.Record(completion_ns);
  r.slowdown_milli[bucket].Record(static_cast<uint64_t>(slowdown * 1000));
  ++r.messages_completed;
  ++r.completed_by_size[bucket];
  r.completed_wire_bytes += wire_bytes;
  if (spec_.transport.kind != Transport::kOpen) MarkCompleted(p.message_id);
  messages_.erase(it);
}

// Closed-loop message ids are the generator's message counter below the class bits: one bit
// each says "complete", so acks and late copies find it without the message staying in a map
// that would grow (and rehash, stalling the loop) with every message of the run.
bool Analyser::Completed(uint64_t message_id) const {
  const uint64_t n = MessageCounter(message_id);
  return n / 64 < completed_.size() && (completed_[n / 64] >> (n % 64)) & 1;
}

void Analyser::MarkCompleted(uint64_t message_id) {
  const uint64_t n = MessageCounter(message_id);
  if (completed_.size() <= n / 64) completed_.resize(n / 64 + 1024, 0);
  completed_[n / 64] |= uint64_t{1} << (n % 64);
}

double Analyser::IdealNs(uint64_t wire_bytes, uint32_t message_length) const {
  const double wire_ns =
      static_cast<double>(wire_bytes) * 8e9 / static_cast<double>(spec_.bottleneck_bps);
  if (full_frame_ns_ == 0) return wire_ns;
  // The last frame's path latency, interpolated between a minimum and a full-size frame.
  const uint32_t last = message_length % spec_.mss == 0 ? spec_.mss : message_length % spec_.mss;
  const double f = static_cast<double>(last) / spec_.mss;
  return wire_ns + static_cast<double>(small_frame_ns_) +
         f * (static_cast<double>(full_frame_ns_) - static_cast<double>(small_frame_ns_));
}

void Analyser::SetUnloadedLatency(uint64_t small_frame_ns, uint64_t full_frame_ns) {
  small_frame_ns_ = small_frame_ns;
  full_frame_ns_ = std::max(full_frame_ns, small_frame_ns);
}

uint32_t Analyser::Acked(uint64_t message_id) const {
  if (Completed(message_id)) return UINT32_MAX;
  auto it = messages_.find(message_id);
  return it == messages_.end() ? 0 : it->second.contiguous;
}

bool Analyser::HasChunk(uint64_t message_id, uint32_t offset) const {
  if (Completed(message_id)) return true;
  auto it = messages_.find(message_id);
  if (it == messages_.end()) return false;
  const MessageProgress& m = it->second;
  if (m.received >= m.size) return true;
  const uint32_t chunk = offset / spec_.mss;
  if (m.chunks.empty() || chunk / 64 >= m.chunks.size()) return false;
  return (m.chunks[chunk / 64] >> (chunk % 64)) & 1;
}

void Analyser::Grants(std::vector<std::pair<uint64_t, uint32_t>>& out) {
  // The `overcommit` incomplete messages with the fewest bytes left, each up to rtt_bytes beyond
  // what arrived in order.
  uint32_t n = 0;
  for (auto it = by_remaining_.begin(); it != by_remaining_.end() && n < spec_.transport.overcommit;
       ++it, ++n) {
    MessageProgress& m = messages_.at(it->second);
    m.granted = std::max(m.granted, std::min(m.size, m.contiguous + spec_.transport.rtt_bytes));
    out.emplace_back(it->second, m.granted);
  }
}

void Analyser::Finish(const Generator& generator, uint64_t duration_ns) {
  duration_ns_ = duration_ns;
  const std::vector<uint64_t> sent = generator.packets_per_class();
  for (size_t c = 0; c < classes_.size(); ++c) classes_[c].sent_packets = sent[c];
  // A message the sender sent whole and the receiver never completed lost packets (or, open
  // loop, they were still queued at the end): counted by size, never silently left out.
  const auto& whole = generator.messages_sent();
  for (size_t c = 0; c < classes_.size(); ++c) {
    ClassReport& r = classes_[c];
    r.messages_incomplete = 0;
    for (int b = 0; b < kSizeBuckets; ++b) {
      r.incomplete_by_size[b] = whole[c][b] - std::min(whole[c][b], r.completed_by_size[b]);
      r.messages_incomplete += r.incomplete_by_size[b];
    }
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
      if (r.slowdown_milli[b].count() == 0 && r.incomplete_by_size[b] == 0) continue;
      nlohmann::json cell = Percentiles(r.slowdown_milli[b], 0.001);
      cell["incomplete"] = r.incomplete_by_size[b];
      slowdown[SizeBucketName(b)] = cell;
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
         {"completed_wire_bytes", r.completed_wire_bytes},
         {"latency_us", Percentiles(r.latency_ns, 0.001)},
         {"completion_us", Percentiles(r.completion_ns, 0.001)},
         {"slowdown", slowdown},
         {"arrival", ArrivalName(spec_.classes[c].arrival)},
         {"latency_ns_buckets", Buckets(r.latency_ns)},
         {"completion_ns_buckets", Buckets(r.completion_ns)},
         {"rx_bytes_per_bin", r.bytes_per_bin}});
  }
  out["classes"] = classes;
  out["bin_s"] = static_cast<double>(kBinNs) / 1e9;
  return out;
}

}  // namespace qosvisor::pktgen
