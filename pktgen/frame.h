// Frames qosgen sends: Ethernet / IPv4 / UDP, Homa (IP protocol 146, HomaModule's DATA header) or
// TCP-like segments, each carrying a probe right after the L4 header: send time, message id,
// offset and length, so the receiver measures latency and message completion from the packet.
#pragma once

#include <cstdint>

namespace qosvisor::pktgen {

enum class Framing : uint8_t { kUdp, kHoma, kTcp };

inline constexpr uint32_t kProbeMagic = 0x51565047;  // "QVPG"
// Probes qosgen sends before a run, one at a time, to measure the unloaded path: ReadProbe finds
// them, the analyser counts them as foreign.
inline constexpr uint32_t kCalibrationMagic = kProbeMagic ^ 0xffu;

struct Probe {
  uint32_t magic;
  uint16_t class_id;
  uint16_t tenant;
  uint64_t message_id;
  uint32_t message_length;  // payload bytes of the whole message
  uint32_t offset;          // payload bytes of the message before this packet
  uint32_t chunk;           // payload bytes this packet carries
  uint32_t sender_wait;     // TSC ticks from the message's arrival to its first byte (saturating)
  uint64_t send_tsc;           // when the packet left the generator
  uint64_t message_start_tsc;  // when the message's first byte left the generator
  uint64_t seq;                // per-class packet sequence number
};
static_assert(sizeof(Probe) == 56);

// What a one-packet message shorter than the full probe carries instead, so that frames stay as
// small as the workload asks, down to 60 bytes (64 on the wire): the receiver rebuilds a Probe
// from it (message id from the class and sequence number, message start = send time).
inline constexpr uint16_t kCompactProbeMagic = 0x4351;  // "QC"
inline constexpr uint64_t kCompactMessageIdBit = 1ull << 47;
// A message id is its class above bit 48 and, below, a counter (the generator's message number,
// or a compact probe's bit and sequence number).
inline constexpr int kMessageClassShift = 48;
inline uint64_t MessageId(uint64_t class_id, uint64_t counter) {
  return class_id << kMessageClassShift | (counter & ((uint64_t{1} << kMessageClassShift) - 1));
}
inline uint64_t MessageClass(uint64_t id) { return id >> kMessageClassShift; }
inline uint64_t MessageCounter(uint64_t id) {
  return id & ((uint64_t{1} << kMessageClassShift) - 1);
}
struct CompactProbe {
  uint16_t magic;
  uint8_t class_id;
  uint8_t tenant;
  uint8_t chunk;  // payload bytes (< sizeof(Probe))
  uint8_t reserved;
  uint32_t seq;  // low 32 bits of the class's sequence number
  uint64_t send_tsc;
} __attribute__((packed));
static_assert(sizeof(CompactProbe) == 18);

// Whether a packet goes out with the compact probe: the whole message in one packet, shorter
// than the full probe, and class and tenant small enough to fit.
inline bool UsesCompactProbe(uint32_t offset, uint32_t chunk, uint32_t message_length,
                             uint32_t class_id, uint32_t tenant) {
  return offset == 0 && chunk == message_length && chunk < sizeof(Probe) && class_id < 256 &&
         tenant < 256;
}
inline bool UsesCompactProbe(const Probe& p) {
  return UsesCompactProbe(p.offset, p.chunk, p.message_length, p.class_id, p.tenant);
}

struct FrameAddress {
  uint8_t dst_mac[6];
  uint8_t src_mac[6];
  uint32_t src_ip;
  uint32_t dst_ip;
  uint16_t src_port;
  uint16_t dst_port;
  int vlan = -1;  // -1: untagged
};

// Header bytes before the probe for a framing (Ethernet + IPv4 + L4, plus 4 with a VLAN tag).
uint32_t HeaderLength(Framing framing, bool vlan);
// The frame length for `chunk` payload bytes: headers + max(chunk, probe), at least 60 bytes
// (`compact`: with the compact probe).
uint32_t FrameLength(Framing framing, bool vlan, uint32_t chunk, bool compact = false);

// Writes headers and probe into `frame` (FrameLength bytes); the payload after the probe is left
// as it is (its bytes do not matter).
// `compact_allowed` false: always the full probe (closed-loop transports, whose acks name the
// sender's message id, which a compact probe does not carry).
void WriteFrame(uint8_t* frame, Framing framing, const FrameAddress& addr, const Probe& probe,
                bool compact_allowed = true);

// Finds the probe in a received frame; false if the frame is not one of ours or is cut short.
bool ReadProbe(const uint8_t* frame, uint32_t length, Probe& probe);

}  // namespace qosvisor::pktgen
