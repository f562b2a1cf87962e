// Message identification: Homa RPCs, TCP bursts split at idle gaps, datagrams.
#include "vswitch/message_identifier.h"

#include <catch2/catch.hpp>
#include <unordered_set>

#include "frames.h"

namespace qosvisor::vswitch {
namespace {

ParsedPacket Parsed(const testing::Frame& f) {
  ParsedPacket p;
  REQUIRE(ParsePacket(f.bytes.data(), static_cast<uint32_t>(f.bytes.size()), p) ==
          ParseStatus::kOk);
  return p;
}

uint32_t Len(const testing::Frame& f) { return static_cast<uint32_t>(f.bytes.size()); }

}  // namespace

TEST_CASE("Homa: packets of one RPC share an id, size and offsets come from the header",
          "[message]") {
  MessageIdentifier ids(1024, 1'000'000);
  auto f0 = testing::Homa4(77, 3000, 0, 1400);
  auto f1 = testing::Homa4(77, 3000, 1400, 1400);
  auto f2 = testing::Homa4(77, 3000, 2800, 200);
  auto other = testing::Homa4(78, 3000, 0, 1400);
  const MessageIdentity m0 = ids.Identify(MessageMode::kHoma, Parsed(f0), Len(f0), 0, 0);
  const MessageIdentity m1 = ids.Identify(MessageMode::kHoma, Parsed(f1), Len(f1), 0, 0);
  const MessageIdentity m2 = ids.Identify(MessageMode::kHoma, Parsed(f2), Len(f2), 0, 0);
  const MessageIdentity mo = ids.Identify(MessageMode::kHoma, Parsed(other), Len(other), 0, 0);
  CHECK(m0.id == m1.id);
  CHECK(m1.id == m2.id);
  CHECK(mo.id != m0.id);
  CHECK(m0.size == 3000);
  CHECK(m1.offset == 1400);
  CHECK_FALSE(m0.last);
  CHECK_FALSE(m1.last);
  CHECK(m2.last);
  // Only a message that one packet holds from its first byte is whole: the scheduler queues
  // such a packet without indexing its id.
  CHECK_FALSE(m0.whole);
  CHECK_FALSE(m2.whole);  // the last packet of three
  auto single = testing::Homa4(79, 900, 0, 900);
  const MessageIdentity ms = ids.Identify(MessageMode::kHoma, Parsed(single), Len(single), 0, 0);
  CHECK(ms.last);
  CHECK(ms.whole);
}

TEST_CASE("Homa: the last packet is known from the datagram, not the wire or padded length",
          "[message]") {
  MessageIdentifier ids(1024, 1'000'000);
  // 2810 bytes in 1400 + 1400 + 10: the second packet ends 10 bytes short of the message, less
  // than the 24 bytes of preamble and gap a wire length adds; the last arrives as is.
  auto f1 = testing::Homa4(90, 2810, 1400, 1400);
  auto f2 = testing::Homa4(90, 2810, 2800, 10);
  const uint32_t wire = 24;  // what a switch adds to a frame's length for the wire
  CHECK_FALSE(ids.Identify(MessageMode::kHoma, Parsed(f1), Len(f1) + wire, 0, 0).last);
  CHECK(ids.Identify(MessageMode::kHoma, Parsed(f2), Len(f2) + wire, 0, 0).last);
  // A short last-but-one segment followed by Ethernet padding is not taken for the last either.
  auto f3 = testing::Homa4(91, 20, 0, 4);
  f3.Zeros(64);
  CHECK_FALSE(ids.Identify(MessageMode::kHoma, Parsed(f3), Len(f3) + wire, 0, 0).last);
}

TEST_CASE("Homa: every sender, port and RPC id is a message of its own", "[message]") {
  MessageIdentifier ids(1024, 1'000'000);
  auto f = testing::Homa4(1, 3000, 0, 1400);
  ParsedPacket p = Parsed(f);
  std::unordered_set<uint64_t> seen;
  size_t made = 0;
  for (uint32_t sender = 0; sender < 64; ++sender) {
    for (uint16_t port = 4000; port < 4016; ++port) {
      for (uint64_t rpc = 0; rpc < 256; ++rpc) {
        p.ip4_src = 0x0a000000 | sender;
        p.src_port = port;
        // Clients number their RPCs upwards; some id spaces sit high in the 64 bits.
        p.homa_rpc_id = (sender & 1 ? 0 : uint64_t{sender} << 48) + rpc;
        seen.insert(ids.Identify(MessageMode::kHoma, p, Len(f), 0, 0).id);
        ++made;
      }
    }
  }
  CHECK(seen.size() == made);
  // The same RPC from the same sender is the same message whatever packet of it comes.
  p.homa_offset = 1400;
  const uint64_t again = ids.Identify(MessageMode::kHoma, p, Len(f), 0, 0).id;
  p.homa_offset = 0;
  CHECK(ids.Identify(MessageMode::kHoma, p, Len(f), 0, 0).id == again);
}

TEST_CASE("tcp-gap: a flow's packets form one message until an idle gap", "[message]") {
  MessageIdentifier ids(1024, 1'000'000'000);
  const uint64_t idle = 1000;
  auto seg = testing::Tcp4(40000, 80, 1, 0x10, 100);
  const ParsedPacket p = Parsed(seg);
  const MessageIdentity a = ids.Identify(MessageMode::kTcpGap, p, Len(seg), idle, 10'000);
  const MessageIdentity b = ids.Identify(MessageMode::kTcpGap, p, Len(seg), idle, 10'900);
  const MessageIdentity c = ids.Identify(MessageMode::kTcpGap, p, Len(seg), idle, 11'800);
  const MessageIdentity d = ids.Identify(MessageMode::kTcpGap, p, Len(seg), idle, 12'801);
  CHECK(a.id == b.id);
  CHECK(b.id == c.id);  // gaps of 900 are below the threshold
  CHECK(d.id != c.id);  // 1001 idle starts a new message
  CHECK(b.offset == Len(seg));
  CHECK(d.offset == 0);
  CHECK(ids.tcp_messages_started() == 2);

  auto other_flow = testing::Tcp4(40001, 80, 1, 0x10, 100);
  CHECK(ids.Identify(MessageMode::kTcpGap, Parsed(other_flow), Len(other_flow), idle, 12'802).id !=
        d.id);
  auto fin = testing::Tcp4(40000, 80, 1, 0x11, 0);
  const MessageIdentity closing =
      ids.Identify(MessageMode::kTcpGap, Parsed(fin), Len(fin), idle, 12'900);
  CHECK(closing.last);
  CHECK_FALSE(closing.whole);  // it ends the burst that d started
  CHECK_FALSE(d.whole);
  // A FIN after an idle gap is a burst of its own, but not marked whole: a retransmitted FIN
  // would carry its id.
  const MessageIdentity lone =
      ids.Identify(MessageMode::kTcpGap, Parsed(fin), Len(fin), idle, 20'000);
  CHECK(lone.offset == 0);
  CHECK(lone.last);
  CHECK_FALSE(lone.whole);
}

TEST_CASE("tcp-gap: a flow whose state was dropped never takes back an earlier burst's id",
          "[message]") {
  const uint64_t ttl = 5'000, idle = 1'000;
  MessageIdentifier ids(8, ttl);  // one probe window: a ninth flow evicts a live one
  auto seg = testing::Tcp4(40000, 80, 1, 0x10, 100);
  const ParsedPacket p = Parsed(seg);
  std::unordered_set<uint64_t> seen;
  uint64_t now = 10'000;
  auto next_burst = [&](uint64_t gap) {
    now += gap;
    const MessageIdentity m = ids.Identify(MessageMode::kTcpGap, p, Len(seg), idle, now);
    CHECK(m.offset == 0);
    return seen.insert(m.id).second;
  };
  CHECK(next_burst(0));
  CHECK(next_burst(idle + 1));
  CHECK(next_burst(ttl + 1));  // the flow's state aged out in between
  CHECK(next_burst(idle + 1));
  // Eight other flows push it out of its probe window while it is live.
  for (uint16_t port = 1; port <= 8; ++port) {
    auto other = testing::Tcp4(port, 80, 1, 0x10, 100);
    ids.Identify(MessageMode::kTcpGap, Parsed(other), Len(other), idle, now + port);
  }
  CHECK(next_burst(idle + 1));
  CHECK(next_burst(idle + 1));
  CHECK(seen.size() == 6);
  CHECK(ids.tcp_messages_started() == 6 + 8);
}

TEST_CASE("datagrams are one message each, other modes fall back to datagrams", "[message]") {
  MessageIdentifier ids(64, 1000);
  auto udp = testing::Udp4(1, 2);
  const ParsedPacket p = Parsed(udp);
  const MessageIdentity a = ids.Identify(MessageMode::kDatagram, p, Len(udp), 0, 0);
  const MessageIdentity b = ids.Identify(MessageMode::kDatagram, p, Len(udp), 0, 0);
  CHECK(a.id != b.id);
  CHECK(a.last);
  CHECK(a.whole);
  CHECK(a.size == Len(udp));
  // UDP under a homa or tcp-gap class is not what those modes read: each is its own message.
  const MessageIdentity c = ids.Identify(MessageMode::kHoma, p, Len(udp), 0, 0);
  const MessageIdentity d = ids.Identify(MessageMode::kTcpGap, p, Len(udp), 10, 0);
  CHECK(c.last);
  CHECK(d.last);
  CHECK(c.id != d.id);
}

}  // namespace qosvisor::vswitch
