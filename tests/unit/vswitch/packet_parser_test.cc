// Parsing of well-formed frames of every supported kind, and of truncated, malformed and random
// frames (which must never be read past their end: run under ASan).
#include "vswitch/packet_parser.h"

#include <catch2/catch.hpp>
#include <random>

#include "frames.h"

namespace qosvisor::vswitch {
namespace {

using testing::Frame;

ParseStatus Parse(const Frame& f, ParsedPacket& p) {
  return ParsePacket(f.bytes.data(), static_cast<uint32_t>(f.bytes.size()), p);
}

}  // namespace

TEST_CASE("UDP over IPv4, with and without a VLAN tag", "[parse]") {
  ParsedPacket p;
  REQUIRE(Parse(testing::Udp4(1234, 5000), p) == ParseStatus::kOk);
  CHECK(p.ether_type == 0x0800);
  CHECK_FALSE(p.has_vlan);
  CHECK(p.ip_version == 4);
  CHECK(p.ip_proto == 17);
  CHECK(p.ip4_src == 0x0a000001);
  CHECK(p.ip4_dst == 0x0a000002);
  CHECK(p.src_port == 1234);
  CHECK(p.dst_port == 5000);
  CHECK(p.l3_offset == 14);
  CHECK(p.l4_offset == 34);
  CHECK(p.payload_offset == 42);
  CHECK(p.l3_end == 14 + 20 + 8 + 18);

  Frame padded = testing::Udp4(1, 2, 0);  // 42 bytes of headers, padded to the 60-byte minimum
  padded.Zeros(18);
  REQUIRE(Parse(padded, p) == ParseStatus::kOk);
  CHECK(p.l3_end == 42);

  REQUIRE(Parse(testing::Udp4(1, 2, 18, /*vlan=*/0x2064), p) == ParseStatus::kOk);
  CHECK(p.has_vlan);
  CHECK((p.vlan_tci & 0x0fff) == 0x064);
  CHECK(p.l3_offset == 18);
  CHECK(p.dst_port == 2);
}

TEST_CASE("TCP flags, sequence and payload offset", "[parse]") {
  ParsedPacket p;
  REQUIRE(Parse(testing::Tcp4(40000, 80, 0xdeadbeef, 0x18), p) == ParseStatus::kOk);
  CHECK(p.ip_proto == 6);
  CHECK(p.tcp_seq == 0xdeadbeef);
  CHECK(p.tcp_flags == 0x18);
  CHECK(p.payload_offset == 54);
}

TEST_CASE("Homa DATA: RPC id, message length and offset", "[parse]") {
  ParsedPacket p;
  REQUIRE(Parse(testing::Homa4(0x1122334455667788ull, 70000, 2800), p) == ParseStatus::kOk);
  CHECK(p.ip_proto == kIpProtoHoma);
  CHECK(p.homa_type == kHomaData);
  CHECK(p.homa_rpc_id == 0x1122334455667788ull);
  CHECK(p.homa_message_length == 70000);
  CHECK(p.homa_offset == 2800);
  CHECK(p.src_port == 4000);
  CHECK(p.dst_port == 5000);
}

TEST_CASE("IPv6 UDP and ICMPv6", "[parse]") {
  Frame f = testing::Ethernet(0x86DD);
  f.U32(0x60000000);
  f.U16(8 + 4);
  f.U8(17);
  f.U8(64);
  for (int i = 0; i < 32; ++i) f.U8(static_cast<uint8_t>(i));
  f.U16(53);
  f.U16(5353);
  f.U16(12);
  f.U16(0);
  f.U32(0);
  ParsedPacket p;
  REQUIRE(Parse(f, p) == ParseStatus::kOk);
  CHECK(p.ip_version == 6);
  CHECK(p.ip6_src[1] == 1);
  CHECK(p.ip6_dst[0] == 16);
  CHECK(p.src_port == 53);
  CHECK(p.dst_port == 5353);
  CHECK(p.payload_offset == 14 + 40 + 8);
  CHECK(p.l3_end == 14 + 40 + 12);
}

TEST_CASE("non-IP frames are fine at L2", "[parse]") {
  Frame arp = testing::Ethernet(0x0806);
  arp.Zeros(28);
  ParsedPacket p;
  CHECK(Parse(arp, p) == ParseStatus::kOk);
  CHECK(p.ether_type == 0x0806);
  CHECK(p.ip_version == 0);
}

TEST_CASE("truncated and malformed frames are recognised, earlier layers kept", "[parse]") {
  ParsedPacket p;
  Frame runt;
  runt.Zeros(13);
  CHECK(Parse(runt, p) == ParseStatus::kTruncated);

  Frame udp = testing::Udp4(1, 2);
  for (size_t cut = 14; cut < udp.bytes.size(); ++cut) {
    Frame shorter{std::vector<uint8_t>(udp.bytes.begin(), udp.bytes.begin() + cut)};
    INFO("cut at " << cut);
    CHECK(Parse(shorter, p) == ParseStatus::kTruncated);
    CHECK(p.ether_type == 0x0800);
  }

  Frame bad_ihl = testing::Udp4(1, 2);
  bad_ihl.bytes[14] = 0x44;  // IHL 4 words < 5
  CHECK(Parse(bad_ihl, p) == ParseStatus::kMalformed);

  Frame bad_version = testing::Udp4(1, 2);
  bad_version.bytes[14] = 0x65;
  CHECK(Parse(bad_version, p) == ParseStatus::kMalformed);

  Frame short_total = testing::Udp4(1, 2);
  short_total.bytes[16] = 0;
  short_total.bytes[17] = 10;  // total length < header
  CHECK(Parse(short_total, p) == ParseStatus::kMalformed);

  Frame bad_udp_len = testing::Udp4(1, 2);
  bad_udp_len.bytes[38] = 0;
  bad_udp_len.bytes[39] = 3;
  CHECK(Parse(bad_udp_len, p) == ParseStatus::kMalformed);

  Frame homa = testing::Homa4(1, 100, 0, 0);
  Frame cut_homa{std::vector<uint8_t>(homa.bytes.begin(), homa.bytes.end() - 10)};
  cut_homa.bytes[16] = 0;
  cut_homa.bytes[17] = static_cast<uint8_t>(20 + kHomaDataHeaderLen - 10);
  CHECK(Parse(cut_homa, p) == ParseStatus::kTruncated);
  CHECK(p.homa_rpc_id == 1);  // the common header was complete
}

TEST_CASE("random and bit-flipped frames never read out of bounds", "[parse]") {
  std::mt19937 rng(7);
  const Frame seeds[] = {testing::Udp4(1, 2), testing::Tcp4(3, 4, 5, 6), testing::Homa4(9, 9, 9),
                         testing::Udp4(1, 2, 18, 5)};
  ParsedPacket p;
  int ok = 0;
  for (int i = 0; i < 200'000; ++i) {
    Frame f = seeds[i % 4];
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) f.bytes[rng() % f.bytes.size()] ^= 1u << (rng() % 8);
    f.bytes.resize(rng() % (f.bytes.size() + 1));
    // An exactly sized heap copy lets ASan catch a read one byte past the end.
    std::vector<uint8_t> exact(f.bytes);
    const ParseStatus full = ParsePacket(exact.data(), static_cast<uint32_t>(exact.size()), p);
    if (full == ParseStatus::kOk) ++ok;
    if (p.payload_offset > exact.size()) FAIL("payload offset past the frame");
    // The checks-only parse of the L2 fast paths gives the same verdict and link layer.
    ParsedPacket c;
    const ParseStatus checked = CheckPacket(exact.data(), static_cast<uint32_t>(exact.size()), c);
    if (checked != full || c.has_vlan != p.has_vlan || c.vlan_tci != p.vlan_tci ||
        (full != ParseStatus::kTruncated && c.ether_type != p.ether_type) ||
        (full == ParseStatus::kOk && c.l3_offset != p.l3_offset)) {
      FAIL("CheckPacket disagrees with ParsePacket on frame " << i);
    }
  }
  CHECK(ok > 0);
}

}  // namespace qosvisor::vswitch
