// Generator::Poll and AddressOf, inline because they run per packet with the caller's emit.
#pragma once

#include <algorithm>

namespace qosvisor::pktgen {

inline FrameAddress AddressOf(const WorkloadSpec& spec, uint16_t cls_index, uint16_t sender,
                              uint16_t src_port) {
  const ClassWorkload& cls = spec.classes[cls_index];
  FrameAddress addr{};
  if (cls.dst_mac) {
    std::copy(cls.dst_mac->begin(), cls.dst_mac->end(), addr.dst_mac);
  } else {
    std::copy(spec.receiver_mac, spec.receiver_mac + 6, addr.dst_mac);
  }
  const uint8_t src_mac[6] = {
      0x02, 0x51, 0x56, 0, static_cast<uint8_t>(cls.tenant), static_cast<uint8_t>(sender + 1)};
  std::copy(src_mac, src_mac + 6, addr.src_mac);
  addr.src_ip = 0x0a000000u | uint32_t{cls.tenant} << 8 | (sender + 1u);
  addr.dst_ip = cls.dst_ip != 0 ? cls.dst_ip : spec.receiver_ip;
  addr.vlan = cls.vlan;
  addr.src_port = src_port;
  addr.dst_port = cls.dst_port;
  return addr;
}

template <typename Emit>
bool Generator::PollUntil(uint64_t now, uint64_t arrivals_end, Emit&& emit) {
  const uint64_t horizon = std::min(now + 1, arrivals_end);  // arrivals at times < horizon
  for (uint16_t c = 0; c < spec_.classes.size(); ++c) {
    while (next_arrival_[c] < horizon) {
      Arrive(c, next_arrival_[c]);
      Advance(c);
    }
  }
  if (spec_.transport.kind == Transport::kHoma) PollHoma(now);
  bool behind = false;
  for (uint16_t s = 0; s < senders_.size(); ++s) {
    Sender& sender = senders_[s];
    int emitted = 0;
    for (; sender.free_tsc <= now && emitted < kFramesPerPoll; ++emitted) {
      Pending* picked = Pick(sender, now);
      if (picked == nullptr) {
        // Nothing may go (empty, or every message waits for acks or grants): an idle link
        // banks no time to burst with later.
        sender.free_tsc = now;
        break;
      }
      Pending& m = *picked;
      if (m.first_send_tsc == 0) m.first_send_tsc = now;
      const ClassWorkload& cls = spec_.classes[m.cls];
      const uint32_t chunk = std::min(spec_.mss, m.size - m.sent);
      Probe probe{};
      probe.magic = kProbeMagic;
      probe.class_id = m.cls;
      probe.tenant = cls.tenant;
      probe.message_id = m.id;
      probe.message_length = m.size;
      probe.offset = m.sent;
      probe.chunk = chunk;
      probe.send_tsc = now;
      probe.message_start_tsc = m.first_send_tsc;
      probe.sender_wait = static_cast<uint32_t>(
          std::min<uint64_t>(m.first_send_tsc - std::min(m.arrival_tsc, m.first_send_tsc), UINT32_MAX));
      probe.seq = class_seq_[m.cls];
      const FrameAddress addr = AddressOf(spec_, m.cls, s, m.src_port);
      const uint32_t length =
          FrameLength(cls.framing, cls.vlan >= 0, chunk,
                      spec_.transport.kind == Transport::kOpen && UsesCompactProbe(probe));
      if (!emit(s, length, probe, addr, cls.framing)) return false;  // back-pressure: later
      ++class_seq_[m.cls];
      ++class_packets_[m.cls];
      ++packets_;
      wire_bytes_ += length + 24;
      if (m.sent < m.high) ++retransmitted_;
      m.sent += chunk;
      m.high = std::max(m.high, m.sent);
      if (m.progress_tsc == 0) m.progress_tsc = now;
      if (m.sent == m.size && !m.counted) {
        m.counted = true;
        ++sent_messages_[m.cls][SizeBucket(m.size, spec_.mss)];
      }
      sender.free_tsc += uint64_t{length + 24} * 8 * hz_ / spec_.sender_bps;
      AfterSend(sender, m);
    }
    behind |= emitted == kFramesPerPoll && sender.free_tsc <= now;
  }
  return behind;
}

}  // namespace qosvisor::pktgen
