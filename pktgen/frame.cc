// Frame building and probe extraction (a parser of our own frames only; bounds-checked).
#include "pktgen/frame.h"

#include <algorithm>
#include <cstring>

namespace qosvisor::pktgen {
namespace {

constexpr uint8_t kProtoUdp = 17, kProtoTcp = 6, kProtoHoma = 146;
constexpr uint32_t kHomaHeader = 56;

void Be16(uint8_t* p, uint16_t v) {
  p[0] = v >> 8;
  p[1] = v & 0xff;
}
void Be32(uint8_t* p, uint32_t v) {
  Be16(p, v >> 16);
  Be16(p + 2, v & 0xffff);
}
void Be64(uint8_t* p, uint64_t v) {
  Be32(p, v >> 32);
  Be32(p + 4, static_cast<uint32_t>(v));
}
uint16_t Rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint16_t Rd16Le(const uint8_t* p) { return static_cast<uint16_t>(p[1] << 8 | p[0]); }

uint32_t L4Length(Framing f) {
  switch (f) {
    case Framing::kUdp:
      return 8;
    case Framing::kTcp:
      return 20;
    case Framing::kHoma:
      return kHomaHeader;
  }
  return 8;
}

uint16_t Checksum(const uint8_t* p, size_t n) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

}  // namespace

uint32_t HeaderLength(Framing framing, bool vlan) {
  return 14 + (vlan ? 4 : 0) + 20 + L4Length(framing);
}

uint32_t FrameLength(Framing framing, bool vlan, uint32_t chunk, bool compact) {
  const uint32_t probe = compact ? sizeof(CompactProbe) : sizeof(Probe);
  const uint32_t len = HeaderLength(framing, vlan) + std::max<uint32_t>(chunk, probe);
  return std::max<uint32_t>(len, 60);
}

void WriteFrame(uint8_t* f, Framing framing, const FrameAddress& a, const Probe& probe,
                bool compact_allowed) {
  const bool vlan = a.vlan >= 0;
  const bool compact = compact_allowed && UsesCompactProbe(probe);
  const uint32_t total = FrameLength(framing, vlan, probe.chunk, compact);
  std::memcpy(f, a.dst_mac, 6);
  std::memcpy(f + 6, a.src_mac, 6);
  uint32_t off = 12;
  if (vlan) {
    Be16(f + off, 0x8100);
    Be16(f + off + 2, static_cast<uint16_t>(a.vlan));
    off += 4;
  }
  Be16(f + off, 0x0800);
  off += 2;
  uint8_t* ip = f + off;
  const uint32_t ip_len = total - off;
  ip[0] = 0x45;
  ip[1] = 0;
  Be16(ip + 2, static_cast<uint16_t>(ip_len));
  Be16(ip + 4, static_cast<uint16_t>(probe.seq));
  Be16(ip + 6, 0x4000);  // don't fragment
  ip[8] = 64;
  ip[9] = framing == Framing::kUdp ? kProtoUdp : framing == Framing::kTcp ? kProtoTcp : kProtoHoma;
  Be16(ip + 10, 0);
  Be32(ip + 12, a.src_ip);
  Be32(ip + 16, a.dst_ip);
  Be16(ip + 10, Checksum(ip, 20));
  uint8_t* l4 = ip + 20;
  std::memset(l4, 0, L4Length(framing));
  Be16(l4, a.src_port);
  Be16(l4 + 2, a.dst_port);
  switch (framing) {
    case Framing::kUdp:
      Be16(l4 + 4, static_cast<uint16_t>(ip_len - 20));
      break;
    case Framing::kTcp:
      Be32(l4 + 4, probe.offset);
      l4[12] = 0x50;
      l4[13] = probe.offset + probe.chunk >= probe.message_length ? 0x18 : 0x10;  // PSH at end
      Be16(l4 + 14, 0xffff);
      break;
    case Framing::kHoma:
      l4[12] = static_cast<uint8_t>((kHomaHeader / 4) << 4);
      l4[13] = 0x10;  // DATA
      Be64(l4 + 20, probe.message_id);
      Be32(l4 + 28, probe.message_length);
      Be32(l4 + 52, probe.offset);
      break;
  }
  if (compact) {
    const CompactProbe c{kCompactProbeMagic,
                         static_cast<uint8_t>(probe.class_id),
                         static_cast<uint8_t>(probe.tenant),
                         static_cast<uint8_t>(probe.chunk),
                         0,
                         static_cast<uint32_t>(probe.seq),
                         probe.send_tsc};
    std::memcpy(l4 + L4Length(framing), &c, sizeof(c));
    return;
  }
  std::memcpy(l4 + L4Length(framing), &probe, sizeof(Probe));
}

bool ReadProbe(const uint8_t* f, uint32_t length, Probe& probe) {
  if (length < 14) return false;
  uint32_t off = 12;
  if (Rd16(f + off) == 0x8100) off += 4;
  if (length < off + 2 + 20 || Rd16(f + off) != 0x0800) return false;
  off += 2;
  const uint8_t* ip = f + off;
  const uint32_t ihl = (ip[0] & 0x0f) * 4u;
  if ((ip[0] >> 4) != 4 || ihl < 20 || length < off + ihl) return false;
  uint32_t l4_len = 0;
  switch (ip[9]) {
    case kProtoUdp:
      l4_len = 8;
      break;
    case kProtoHoma:
      l4_len = kHomaHeader;
      break;
    case kProtoTcp:
      if (length < off + ihl + 13) return false;
      l4_len = (ip[ihl + 12] >> 4) * 4u;
      break;
    default:
      return false;
  }
  const uint32_t at = off + ihl + l4_len;
  if (length >= at + sizeof(CompactProbe) && Rd16Le(f + at) == kCompactProbeMagic) {
    CompactProbe c;
    std::memcpy(&c, f + at, sizeof(c));
    if (c.chunk >= sizeof(Probe)) return false;
    probe = Probe{};
    probe.magic = kProbeMagic;
    probe.class_id = c.class_id;
    probe.tenant = c.tenant;
    probe.message_id = MessageId(c.class_id, kCompactMessageIdBit | c.seq);
    probe.message_length = probe.chunk = c.chunk;
    probe.send_tsc = probe.message_start_tsc = c.send_tsc;
    probe.seq = c.seq;  // 32 bits: the analyser extends it
    return true;
  }
  if (length < at + sizeof(Probe)) return false;
  std::memcpy(&probe, f + at, sizeof(Probe));
  return probe.magic == kProbeMagic || probe.magic == kCalibrationMagic;
}

}  // namespace qosvisor::pktgen
