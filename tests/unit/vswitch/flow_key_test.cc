// Cache keys: which bytes of a frame they keep, when a burst's next frame repeats the previous
// key, and how much of the frame they read.
#include "vswitch/flow_key.h"

#include <catch2/catch.hpp>
#include <vector>

#include "frames.h"

namespace qosvisor::vswitch {

using testing::Frame;
using testing::Ipv6Frame;
using testing::UdpHeader;

TEST_CASE("cache keys ignore per-packet fields and keep matchable ones", "[flow]") {
  ParsedPacket p1, p2;
  Frame a = testing::Udp4(1, 5000);
  Frame b = a;
  b.bytes[18] = 0x12;  // IP id
  b.bytes[24] = 0x34;  // IP checksum
  b.bytes[40] = 0x56;  // UDP checksum
  REQUIRE(ParsePacket(a.bytes.data(), a.bytes.size(), p1) == ParseStatus::kOk);
  REQUIRE(ParsePacket(b.bytes.data(), b.bytes.size(), p2) == ParseStatus::kOk);
  FlowKey ka, kb;
  BuildFlowKey(a.bytes.data(), a.bytes.size(), a.bytes.size(), p1, 1, ka);
  BuildFlowKey(b.bytes.data(), b.bytes.size(), b.bytes.size(), p2, 1, kb);
  // 42 bytes of Ethernet, IPv4 and UDP headers: the sixth word holds only the UDP checksum.
  CHECK(ka.words == 5);
  CHECK(ka == kb);

  Frame c = testing::Udp4(1, 5001);
  ParsedPacket p3;
  REQUIRE(ParsePacket(c.bytes.data(), c.bytes.size(), p3) == ParseStatus::kOk);
  FlowKey kc;
  BuildFlowKey(c.bytes.data(), c.bytes.size(), c.bytes.size(), p3, 1, kc);
  CHECK_FALSE(ka == kc);
  FlowKey kd;
  BuildFlowKey(a.bytes.data(), a.bytes.size(), a.bytes.size(), p1, 2, kd);  // another input port
  CHECK_FALSE(ka == kd);
}

TEST_CASE("a burst's next key repeats the previous one only for the same flow and port",
          "[flow]") {
  Frame a = testing::Udp4(1, 5000), b = a, c = testing::Udp4(1, 5001);
  b.bytes[18] = 0x12;  // IP id: not part of the flow
  ParsedPacket pa, pb, pc;
  REQUIRE(ParsePacket(a.bytes.data(), a.bytes.size(), pa) == ParseStatus::kOk);
  REQUIRE(ParsePacket(b.bytes.data(), b.bytes.size(), pb) == ParseStatus::kOk);
  REQUIRE(ParsePacket(c.bytes.data(), c.bytes.size(), pc) == ParseStatus::kOk);
  FlowKey ka, kb, kc, kd, built;
  const uint32_t n = static_cast<uint32_t>(a.bytes.size());
  CHECK_FALSE(BuildNextFlowKey(a.bytes.data(), n, n, pa, 1, nullptr, ka));
  BuildFlowKey(a.bytes.data(), n, n, pa, 1, built);
  CHECK(ka == built);  // the first key of a burst is hashed like any other
  CHECK(BuildNextFlowKey(b.bytes.data(), n, n, pb, 1, &ka, kb));
  CHECK_FALSE(BuildNextFlowKey(c.bytes.data(), n, n, pc, 1, &ka, kc));
  BuildFlowKey(c.bytes.data(), n, n, pc, 1, built);
  CHECK(kc == built);
  CHECK_FALSE(BuildNextFlowKey(a.bytes.data(), n, n, pa, 2, &ka, kd));  // another input port

  // Headers too long to cache (a VLAN tag, IPv4 with 40 bytes of options, then TCP: 98 bytes)
  // never repeat: such frames always go to the classifier.
  Frame t = testing::Tcp4(1, 80, 1000, 0x10);
  const uint8_t tag[4] = {0x81, 0x00, 0x00, 0x05};
  t.bytes.insert(t.bytes.begin() + 12, tag, tag + 4);
  t.bytes.insert(t.bytes.begin() + 38, 40, 0);
  t.bytes[18] = 0x4f;  // IHL 15
  const uint16_t total = static_cast<uint16_t>((t.bytes[20] << 8 | t.bytes[21]) + 40);
  t.bytes[20] = static_cast<uint8_t>(total >> 8);
  t.bytes[21] = static_cast<uint8_t>(total);
  ParsedPacket pt;
  REQUIRE(ParsePacket(t.bytes.data(), t.bytes.size(), pt) == ParseStatus::kOk);
  FlowKey k1, k2;
  const uint32_t tn = static_cast<uint32_t>(t.bytes.size());
  CHECK_FALSE(BuildNextFlowKey(t.bytes.data(), tn, tn, pt, 1, nullptr, k1));
  CHECK(k1.words == 0);
  CHECK_FALSE(BuildNextFlowKey(t.bytes.data(), tn, tn, pt, 1, &k1, k2));
}

TEST_CASE("a long key repeats only when its words past the first 48 bytes repeat too", "[flow]") {
  // IPv6 and UDP: 62 bytes, eight words; the ports sit past the first three 16-byte vectors.
  // Loaded from the frame's own bytes, and copied first (a frame that ends near its buffer's end).
  const uint32_t readable = GENERATE(128u, 62u);
  auto frame = [](uint16_t dport) {
    std::vector<uint8_t> bytes = Ipv6Frame(17, UdpHeader(dport)).bytes;
    bytes.resize(128, 0xee);  // slack after the frame, which no key may take in
    return bytes;
  };
  const std::vector<uint8_t> a = frame(80), b = frame(81), a_again = frame(80);
  const uint32_t n = 62;
  ParsedPacket pa, pb, pa2;
  REQUIRE(ParsePacket(a.data(), n, pa) == ParseStatus::kOk);
  REQUIRE(ParsePacket(b.data(), n, pb) == ParseStatus::kOk);
  REQUIRE(ParsePacket(a_again.data(), n, pa2) == ParseStatus::kOk);
  FlowKey ka, kb, ka2, built;
  CHECK_FALSE(BuildNextFlowKey(a.data(), n, readable, pa, 1, nullptr, ka));
  CHECK(ka.words == 8);
  CHECK_FALSE(BuildNextFlowKey(b.data(), n, readable, pb, 1, &ka, kb));
  BuildFlowKey(b.data(), n, readable, pb, 1, built);
  CHECK(kb == built);
  CHECK_FALSE(kb == ka);
  CHECK(BuildNextFlowKey(a_again.data(), n, readable, pa2, 1, &ka, ka2));
  CHECK(ka2.words == 8);
  CHECK(ka2 == ka);  // a repeat's key is whole, its hash too

  // Seven words (IPv6 with no next header: the key ends with the addresses), differing only in
  // the seventh, the destination's last byte.
  std::vector<uint8_t> c = Ipv6Frame(59, {}).bytes, d = c;
  d[53] = 3;
  c.resize(128, 0xee);
  d.resize(128, 0xee);
  ParsedPacket pc, pd;
  REQUIRE(ParsePacket(c.data(), 54, pc) == ParseStatus::kOk);
  REQUIRE(ParsePacket(d.data(), 54, pd) == ParseStatus::kOk);
  FlowKey kc, kd;
  CHECK_FALSE(BuildNextFlowKey(c.data(), 54, readable, pc, 1, nullptr, kc));
  CHECK(kc.words == 7);
  CHECK_FALSE(BuildNextFlowKey(d.data(), 54, readable, pd, 1, &kc, kd));
}

TEST_CASE("a key leaves out its last words when only masked fields fill them", "[flow]") {
  auto tagged = [](Frame f) {
    const uint8_t tag[4] = {0x81, 0x00, 0x00, 0x05};
    f.bytes.insert(f.bytes.begin() + 12, tag, tag + 4);
    return f;
  };
  // Built one after the other, as a burst's frames are; the returned flag says "repeat".
  struct Built {
    FlowKey key;
    bool repeat;
  };
  auto next_key = [](const Frame& f, const FlowKey* previous) {
    ParsedPacket q;
    REQUIRE(ParsePacket(f.bytes.data(), f.bytes.size(), q) == ParseStatus::kOk);
    const auto n = static_cast<uint32_t>(f.bytes.size());
    Built out;
    out.repeat = BuildNextFlowKey(f.bytes.data(), n, n, q, 1, previous, out.key);
    return out;
  };
  SECTION("untagged IPv4 TCP: six words, the three vectors") {
    // The key ends at byte 54, but bytes 48 to 53 are the window, checksum and urgent pointer.
    const Built ack = next_key(testing::Tcp4(1000, 80, 7, 0x10), nullptr);
    CHECK(ack.key.words == 6);
    CHECK_FALSE(ack.repeat);
    const Built later = next_key(testing::Tcp4(1000, 80, 99'999, 0x10), &ack.key);
    CHECK(later.repeat);  // another sequence number: the same flow
    CHECK(later.key == ack.key);
    CHECK_FALSE(next_key(testing::Tcp4(1000, 81, 7, 0x10), &ack.key).repeat);
    CHECK_FALSE(next_key(testing::Tcp4(1000, 80, 7, 0x02), &ack.key).repeat);  // SYN: flags
  }
  SECTION("tagged IPv4 TCP: seven words, the flags in the seventh") {
    const Built ack = next_key(tagged(testing::Tcp4(1000, 80, 7, 0x10)), nullptr);
    CHECK(ack.key.words == 7);
    const Built syn = next_key(tagged(testing::Tcp4(1000, 80, 7, 0x02)), &ack.key);
    CHECK_FALSE(syn.repeat);
    CHECK_FALSE(syn.key == ack.key);
    CHECK(next_key(tagged(testing::Tcp4(1000, 80, 8, 0x10)), &ack.key).repeat);
  }
}

TEST_CASE("cache keys do not depend on bytes past the headers or on read slack", "[flow]") {
  // The same frame once in a tight buffer and once followed by garbage that the word loads may
  // read: equal keys, and the payload never enters the key.
  Frame a = testing::Udp4(1, 5000);
  ParsedPacket p;
  REQUIRE(ParsePacket(a.bytes.data(), a.bytes.size(), p) == ParseStatus::kOk);
  std::vector<uint8_t> padded = a.bytes;
  padded.resize(a.bytes.size() + 64, 0xee);
  for (size_t i = 42; i < a.bytes.size(); ++i) padded[i] = static_cast<uint8_t>(i * 7);
  FlowKey tight, slack;
  BuildFlowKey(a.bytes.data(), 42, 42, p, 1, tight);
  BuildFlowKey(padded.data(), a.bytes.size(), padded.size(), p, 1, slack);
  CHECK(tight == slack);

  // A TCP frame: sequence and window fields are masked, flags are kept.
  Frame t1 = testing::Tcp4(1, 80, 1000, 0x10), t2 = t1;
  t2.bytes[38] ^= 0xff;  // sequence number
  t2.bytes[48] ^= 0xff;  // window
  ParsedPacket q1, q2;
  REQUIRE(ParsePacket(t1.bytes.data(), t1.bytes.size(), q1) == ParseStatus::kOk);
  REQUIRE(ParsePacket(t2.bytes.data(), t2.bytes.size(), q2) == ParseStatus::kOk);
  FlowKey k1, k2;
  BuildFlowKey(t1.bytes.data(), t1.bytes.size(), t1.bytes.size(), q1, 1, k1);
  BuildFlowKey(t2.bytes.data(), t2.bytes.size(), t2.bytes.size(), q2, 1, k2);
  CHECK(k1 == k2);
  t2.bytes[47] ^= 0x02;  // SYN flag
  REQUIRE(ParsePacket(t2.bytes.data(), t2.bytes.size(), q2) == ParseStatus::kOk);
  BuildFlowKey(t2.bytes.data(), t2.bytes.size(), t2.bytes.size(), q2, 1, k2);
  CHECK_FALSE(k1 == k2);
}

}  // namespace qosvisor::vswitch
