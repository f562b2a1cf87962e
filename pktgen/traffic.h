// A message workload and the two ends that measure it: the Generator turns message arrivals
// (Poisson, constant rate or on/off bursts) into frames leaving paced sender links; the Analyser
// receives them and reports per-class latency, message completion time and slowdown by size,
// throughput (also over time), loss, duplicates and reordering.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/size_distribution.h"
#include "common/status.h"
#include "pktgen/frame.h"
#include "pktgen/histogram.h"

namespace qosvisor::pktgen {

// How messages of a class arrive. All three offer the same mean load (load × share × bottleneck);
// on/off concentrates it into the on periods, Poisson inside them.
enum class Arrival : uint8_t { kPoisson, kConstant, kOnOff };
const char* ArrivalName(Arrival arrival);

struct ClassWorkload {
  std::string name;
  std::string size_name;  // how the sizes were described ("W4", "fixed 1000B"), for reports
  SizeDistribution sizes = SizeDistribution::Fixed(1000);
  double share = 1.0;  // fraction of the offered load
  Framing framing = Framing::kUdp;
  uint16_t dst_port = 5000;
  uint16_t tenant = 0;
  uint16_t sender = 0;  // which sender link (generator port) carries it
  Arrival arrival = Arrival::kPoisson;
  uint64_t on_ns = 0;                             // kOnOff: length of a burst
  uint64_t off_ns = 0;                            // kOnOff: silence between bursts
  int vlan = -1;                                  // 802.1Q VLAN id, -1: untagged
  std::optional<std::array<uint8_t, 6>> dst_mac;  // default: WorkloadSpec::receiver_mac
  uint32_t dst_ip = 0;                            // default (0): WorkloadSpec::receiver_ip
};

// How senders pace a message's bytes. kOpen sends every byte as fast as the sender link allows,
// whatever happens downstream. kWindow keeps at most `window_bytes` unacknowledged per message
// (acks come from the receive side). kHoma sends `rtt_bytes` unscheduled and the rest as the
// receiver grants it: the receiver grants the `overcommit` messages with the fewest bytes left
// (SRPT, as in Homa) up to `rtt_bytes` beyond what arrived. When a message makes no progress for
// `rto_ns`, window resends from the first missing byte; homa resends what the receiver grants
// from there on, and one packet per timeout until the receiver knows the message.
enum class Transport : uint8_t { kOpen, kWindow, kHoma };
const char* TransportName(Transport t);

struct TransportSpec {
  Transport kind = Transport::kOpen;
  uint32_t window_bytes = 64 * 1024;
  uint32_t rtt_bytes = 24 * 1024;
  uint32_t overcommit = 7;  // Homa's own setting in its paper (8 priorities, 7 granted)
  // Above the deepest queue on the path (a 1 MiB buffer drains in 8.4 ms at 1 Gbps), so that a
  // message that waits in a queue is not sent twice.
  uint64_t rto_ns = 50'000'000;
};

// What the receive side tells senders of a closed-loop transport, by message id.
class TransportFeedback {
 public:
  virtual ~TransportFeedback() = default;
  // Bytes of the message received in order from its start (0 for a message not seen yet,
  // UINT32_MAX once it is complete).
  virtual uint32_t Acked(uint64_t message_id) const = 0;
  // Whether the chunk at `offset` has arrived (a resend skips it, as a selective resend would).
  virtual bool HasChunk(uint64_t message_id, uint32_t offset) const = 0;
  // Homa's grants as they stand: (message id, offset granted up to) for the messages the
  // receiver grants now; a grant once given is not taken back.
  virtual void Grants(std::vector<std::pair<uint64_t, uint32_t>>& out) = 0;
};

struct WorkloadSpec {
  std::vector<ClassWorkload> classes;
  uint64_t bottleneck_bps = 1'000'000'000;  // load is a fraction of it; slowdown relative to it
  double load = 0.9;
  uint64_t sender_bps = 10'000'000'000;  // each sender link's rate
  uint32_t mss = 1400;                   // message payload bytes per packet
  uint64_t seed = 1;
  uint16_t senders = 1;
  TransportSpec transport;
  // > 0: each class's arrival rate is scaled so that the messages arriving in this window offer
  // exactly its share of the load. A heavy-tailed workload's Poisson arrivals otherwise offer,
  // over seconds, anywhere between about 0.8 and 1.1 times the load asked for (W4 at 1 Gbps).
  uint64_t exact_load_ns = 0;
  uint8_t receiver_mac[6] = {0x02, 0x51, 0x56, 0, 0, 0xfe};
  uint32_t receiver_ip = 0x0a010001;  // 10.1.0.1
};

Status ValidateWorkload(const WorkloadSpec& spec);

// Bytes a message of `size` payload bytes occupies on the wire: frames + preamble/IFG/FCS.
uint64_t MessageWireBytes(const WorkloadSpec& spec, const ClassWorkload& c, uint64_t size);

// Where class `cls`'s frames from sender `sender` go, and from where.
inline FrameAddress AddressOf(const WorkloadSpec& spec, uint16_t cls, uint16_t sender,
                              uint16_t src_port);  // in traffic_inl.h: per packet

struct GeneratedPacket {
  uint16_t sender;
  uint32_t length;  // frame bytes
};

class Generator {
 public:
  Generator(const WorkloadSpec& spec, uint64_t tsc_hz, uint64_t start_tsc);
  // Where a closed-loop transport's acks and grants come from (the analyser). Required unless
  // the transport is open loop.
  void SetFeedback(TransportFeedback* feedback) { feedback_ = feedback; }
  // Moves time zero of the schedule (before the first poll): building the generator samples the
  // size distributions, which takes long enough to make the first arrivals look late.
  void Restart(uint64_t start_tsc);

  // Frames due by `now`, built by `emit(sender, frame_length, probe, address)`, which writes them
  // into buffers and returns false when it cannot take more (back-pressure: retried later).
  template <typename Emit>
  void Poll(uint64_t now, bool arrivals_open, Emit&& emit) {
    PollUntil(now, arrivals_open ? UINT64_MAX : 0, emit);
  }
  // As Poll, with arrivals scheduled before `arrivals_end` (TSC) taken even if `now` is later:
  // a poll delayed past the end of a run (preemption) still generates the whole schedule.
  // Returns whether a sender stopped at kFramesPerPoll with frames still due: the caller should
  // poll again at once rather than sleep.
  template <typename Emit>
  bool PollUntil(uint64_t now, uint64_t arrivals_end, Emit&& emit);

  uint64_t messages_generated() const { return messages_; }
  uint64_t packets_sent() const { return packets_; }
  uint64_t bytes_sent() const { return wire_bytes_; }  // wire bytes incl. overhead
  // Wire bytes of every message that arrived, counted at its scheduled arrival time: the offered
  // load measured against the virtual schedule, whatever the sender or the machine did.
  uint64_t bytes_offered() const { return offered_bytes_; }
  std::vector<uint64_t> packets_per_class() const { return class_packets_; }
  // Messages whose every byte left the sender, per class and size bucket: what the receive side
  // should have completed.
  const std::vector<std::array<uint64_t, 5>>& messages_sent() const { return sent_messages_; }
  uint64_t retransmitted_packets() const { return retransmitted_; }
  bool idle() const;  // no message waits to be sent

 private:
  struct Pending {
    uint64_t id;
    uint16_t cls;
    uint32_t size;
    uint32_t sent;
    uint64_t arrival_tsc;
    uint64_t first_send_tsc;  // when its first byte left (completion time counts from there)
    uint16_t src_port;
    uint32_t acked = 0;         // closed loop: in-order bytes the receiver confirmed
    uint64_t progress_tsc = 0;  // closed loop: when `acked` last moved (or first send)
    bool counted = false;       // its last byte has left once (messages_sent)
    uint32_t high = 0;          // the furthest offset sent: below it, a send is a resend
    // homa: timed out once; from then on it sends only what the receiver grants (as Homa's
    // receiver-driven resends), plus one packet per timeout so an unknown message is heard of.
    bool recovering = false;
    uint32_t granted = 0;  // homa: the receiver's grant as last seen
  };
  struct Sender {
    // open and window: round robin between messages, as a host's flows share its NIC.
    std::deque<Pending> queue;
    // homa: messages not yet acknowledged whole; those with unscheduled bytes unsent (by size,
    // the sender's SRPT); those with granted or resend bytes unsent. Every pick looks at a few
    // messages, however many wait for grants.
    std::unordered_map<uint64_t, Pending> live;
    std::set<std::pair<uint32_t, uint64_t>> unscheduled;
    std::set<uint64_t> owed;
    // homa: the live messages' ids, walked a chunk per poll (see PollHoma).
    std::vector<uint64_t> scan_ids;
    size_t scan_next = 0;
    uint64_t free_tsc = 0;
  };
  // The message the sender sends its next packet from (nullptr: none may). open: the head.
  // window: the first with room in its window, at most kWindowScan looked at (round robin).
  // homa: the fewest bytes left among the smallest message with unscheduled bytes unsent and
  // the kHomaScan oldest with granted or resend bytes unsent.
  Pending* Pick(Sender& sender, uint64_t now);
  Pending* PickWindow(Sender& sender, uint64_t now);
  Pending* PickHoma(Sender& sender);
  // The sender's bookkeeping after `m` sent a packet (may move or drop `m`).
  void AfterSend(Sender& sender, Pending& m);
  // homa: takes the receiver's grants; every rto/8, acks, timeouts and finished messages.
  void PollHoma(uint64_t now);
  // Brings a closed-loop message's ack up to date; rewinds it after a timeout. True when the
  // receiver has all of it (the message is done).
  bool Refresh(Pending& m, uint64_t now);
  // A resend skips the chunks that arrived.
  void SkipReceived(Pending& m) const;
  // How far a homa message may be sent: its unscheduled bytes and its grant.
  uint32_t HomaLimit(const Pending& m) const;
  static constexpr int kWindowScan = 64;
  // homa: owed messages looked at per pick, oldest first (with the smallest unscheduled one).
  static constexpr int kHomaScan = 64;
  // Frames a sender emits per poll at most. A sender behind its schedule (the process was
  // preempted, or a debug build cannot keep up) catches up over several polls, so the caller's
  // receive side is polled in between: emitting the whole backlog at once with `now` fixed made
  // each catch-up longer than the last, and the frames coming back waited seconds, filling the
  // switch's uplink behind them.
  static constexpr int kFramesPerPoll = 64;
  void Arrive(uint16_t cls, uint64_t at);
  // Advances class `cls`'s schedule to its next arrival.
  void Advance(uint16_t cls);
  // Moves `clock` (on-time TSC) to class `cls`'s next arrival drawn from `rng`; returns its time
  // in TSC since the start.
  double NextArrival(uint16_t cls, std::mt19937_64& rng, double& clock) const;
  // The wire bytes class `cls`'s schedule offers in its first `window_tsc`, as drawn from a
  // fresh copy of its random stream.
  double OfferedIn(uint16_t cls, double window_tsc) const;
  void MatchLoad(uint16_t cls, uint64_t window_ns);

  WorkloadSpec spec_;
  uint64_t hz_;
  // One random stream per class: a class's arrivals and sizes do not depend on when the others'
  // were drawn, so a schedule is the same whatever the poll cadence (and for every system).
  std::vector<std::mt19937_64> rngs_;
  std::vector<double> mean_gap_tsc_;        // per class
  std::vector<uint64_t> fixed_wire_bytes_;  // per class: wire bytes if sizes are fixed, else 0
  std::vector<uint64_t> next_arrival_;
  std::vector<double> clock_;  // per class: arrival time in on-time TSC since start (fractional)
  uint64_t start_tsc_;
  std::vector<uint64_t> class_seq_;
  std::vector<uint64_t> class_packets_;
  std::vector<Sender> senders_;
  uint64_t messages_ = 0, packets_ = 0, wire_bytes_ = 0, offered_bytes_ = 0;
  uint64_t retransmitted_ = 0;
  uint64_t rto_tsc_ = 0;
  std::vector<std::array<uint64_t, 5>> sent_messages_;  // per class, per size bucket
  TransportFeedback* feedback_ = nullptr;
  std::vector<std::pair<uint64_t, uint32_t>> grants_;
  uint64_t next_scan_tsc_ = 0;
  bool scanning_ = false;  // a pass over the live messages is under way
  // Live messages a poll refreshes at most: after heavy loss hundreds of thousands may wait for
  // resends, and one pass over all of them would hold up sending for tens of milliseconds.
  static constexpr int kScanChunk = 512;
};

// A compact probe's 32-bit sequence number, placed in the 2^32 window nearest `highest`.
uint64_t ExtendSeq(uint64_t seq32, uint64_t highest);

// Message size buckets for slowdown: one packet, ≤10KB, ≤100KB, ≤1MB, larger.
inline constexpr int kSizeBuckets = 5;
const char* SizeBucketName(int bucket);
int SizeBucket(uint64_t size, uint32_t mss);

struct ClassReport {
  std::string name;
  uint16_t tenant = 0;
  uint64_t sent_packets = 0;
  uint64_t received_packets = 0;
  uint64_t received_bytes = 0;  // wire bytes
  uint64_t duplicates = 0;
  uint64_t reordered = 0;
  uint64_t messages_completed = 0;
  uint64_t messages_incomplete = 0;
  std::array<uint64_t, 5> completed_by_size{};   // kSizeBuckets
  uint64_t completed_wire_bytes = 0;             // of completed messages, as offered
  std::array<uint64_t, 5> incomplete_by_size{};  // sent whole by the sender, never completed
  Histogram latency_ns;                          // per packet, one way
  Histogram completion_ns;                       // per message
  Histogram slowdown_milli[kSizeBuckets];        // per message, slowdown × 1000, by size bucket
  std::vector<uint64_t> bytes_per_bin;           // received wire bytes per Analyser::kBinNs
};

class Analyser final : public TransportFeedback {
 public:
  static constexpr uint64_t kBinNs = 100'000'000;  // throughput-over-time resolution
  static constexpr size_t kMaxBins = 36'000;       // one hour; later bytes go into the last bin

  // `start_tsc` is time zero of the throughput bins (0: the first received frame).
  Analyser(const WorkloadSpec& spec, uint64_t tsc_hz, uint64_t start_tsc = 0);
  // One received frame; frames that are not ours are counted and ignored.
  void Receive(const uint8_t* frame, uint32_t length, uint64_t now_tsc);
  // A frame already parsed (by ReadProbe), e.g. after it waited in an emulated link.
  void ReceiveProbe(const Probe& probe, uint32_t length, uint64_t now_tsc);
  void CountForeign() { ++foreign_; }
  void Finish(const Generator& generator, uint64_t duration_ns);
  uint32_t Acked(uint64_t message_id) const override;
  bool HasChunk(uint64_t message_id, uint32_t offset) const override;
  void Grants(std::vector<std::pair<uint64_t, uint32_t>>& out) override;
  // The unloaded path's one-way latency for a minimum and a full-size frame (measured before the
  // run): slowdown is completion time over the best time in an unloaded network, as in Homa —
  // the message's bytes at the bottleneck rate plus that latency for its last frame.
  void SetUnloadedLatency(uint64_t small_frame_ns, uint64_t full_frame_ns);
  const std::vector<ClassReport>& classes() const { return classes_; }
  uint64_t foreign_frames() const { return foreign_; }
  uint64_t received_packets() const { return received_packets_; }
  uint64_t received_bytes() const { return received_bytes_; }
  nlohmann::json Report() const;

 private:
  struct MessageProgress {
    uint32_t received = 0;  // distinct bytes
    uint32_t size = 0;
    uint32_t contiguous = 0;  // bytes received in order from the start
    uint32_t granted = 0;     // homa: the highest offset granted so far
    uint64_t start_tsc = 0;
    std::vector<uint64_t> chunks;  // which MSS-sized chunks arrived (multi-packet messages)
  };
  // The message's best time: its wire bytes at the bottleneck rate plus the unloaded path.
  double IdealNs(uint64_t wire_bytes, uint32_t message_length) const;
  bool Completed(uint64_t message_id) const;
  void MarkCompleted(uint64_t message_id);
  WorkloadSpec spec_;
  uint64_t hz_;
  std::vector<ClassReport> classes_;
  std::vector<std::vector<uint64_t>> seen_;  // per class, bitmap of sequence numbers
  std::vector<uint64_t> max_seq_;
  std::unordered_map<uint64_t, MessageProgress> messages_;
  std::set<std::pair<uint32_t, uint64_t>> by_remaining_;  // (bytes left, id), incomplete ones
  std::vector<uint64_t> completed_;                       // closed loop: a bit per message counter
  uint64_t small_frame_ns_ = 0, full_frame_ns_ = 0;
  uint64_t foreign_ = 0;
  uint64_t received_packets_ = 0, received_bytes_ = 0;
  uint64_t duration_ns_ = 0;
  uint64_t start_tsc_;
  uint64_t bin_tsc_;
};

}  // namespace qosvisor::pktgen

#include "pktgen/traffic_inl.h"
