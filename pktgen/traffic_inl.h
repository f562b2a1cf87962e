// Generator::Poll, inline because it runs per packet with the caller's emit function.
#pragma once

#include <algorithm>

namespace qosvisor::pktgen {

template <typename Emit>
void Generator::PollUntil(uint64_t now, uint64_t arrivals_end, Emit&& emit) {
  const uint64_t horizon = std::min(now + 1, arrivals_end);  // arrivals at times < horizon
  for (uint16_t c = 0; c < spec_.classes.size(); ++c) {
    while (next_arrival_[c] < horizon) {
      Arrive(c, next_arrival_[c]);
      Advance(c);
    }
  }
  for (uint16_t s = 0; s < senders_.size(); ++s) {
    Sender& sender = senders_[s];
    while (!sender.queue.empty() && sender.free_tsc <= now) {
      Pending& m = sender.queue.front();
      if (m.sent == 0) m.first_send_tsc = now;
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
      FrameAddress addr{};
      if (cls.dst_mac) {
        std::copy(cls.dst_mac->begin(), cls.dst_mac->end(), addr.dst_mac);
      } else {
        std::copy(spec_.receiver_mac, spec_.receiver_mac + 6, addr.dst_mac);
      }
      const uint8_t src_mac[6] = {
          0x02, 0x51, 0x56, 0, static_cast<uint8_t>(cls.tenant), static_cast<uint8_t>(s + 1)};
      std::copy(src_mac, src_mac + 6, addr.src_mac);
      addr.src_ip = 0x0a000000u | uint32_t{cls.tenant} << 8 | (s + 1u);
      addr.dst_ip = cls.dst_ip != 0 ? cls.dst_ip : spec_.receiver_ip;
      addr.vlan = cls.vlan;
      addr.src_port = m.src_port;
      addr.dst_port = cls.dst_port;
      const uint32_t length =
          FrameLength(cls.framing, cls.vlan >= 0, chunk, UsesCompactProbe(probe));
      if (!emit(s, length, probe, addr, cls.framing)) return;  // back-pressure: try again later
      ++class_seq_[m.cls];
      ++class_packets_[m.cls];
      ++packets_;
      wire_bytes_ += length + 24;
      m.sent += chunk;
      sender.free_tsc += uint64_t{length + 24} * 8 * hz_ / spec_.sender_bps;
      Pending done = m;
      sender.queue.pop_front();
      if (done.sent < done.size) sender.queue.push_back(done);
    }
  }
}

}  // namespace qosvisor::pktgen
