// qosgen's parts: histogram percentiles against known distributions, frame round trips, the
// analyser's bookkeeping, and a ring loopback whose counts must match exactly.
#include <rte_mbuf.h>
#include <rte_ring.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "app/traffic_flags.h"
#include "common/tsc.h"
#include "dataplane/mempool.h"
#include "pktgen/clock_map.h"
#include "pktgen/enqueue_stamps.h"
#include "pktgen/frame.h"
#include "pktgen/histogram.h"
#include "pktgen/ring_runner.h"
#include "pktgen/traffic.h"
#include "tests/unit/test_eal.h"

namespace qosvisor::pktgen {

TEST_CASE("histogram percentiles are within 1/64 of the exact order statistic", "[pktgen]") {
  Histogram h;
  std::vector<uint64_t> values;
  std::mt19937_64 rng(3);
  std::lognormal_distribution<double> dist(8.0, 2.0);
  for (int i = 0; i < 200'000; ++i) {
    const auto v = static_cast<uint64_t>(dist(rng));
    values.push_back(v);
    h.Record(v);
  }
  std::sort(values.begin(), values.end());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const uint64_t exact = values[static_cast<size_t>(std::ceil(q * values.size())) - 1];
    const uint64_t got = h.Percentile(q);
    INFO("q=" << q << " exact=" << exact << " got=" << got);
    CHECK(got >= exact);
    CHECK(static_cast<double>(got) <= static_cast<double>(exact) * (1.0 + 1.0 / 64) + 1);
  }
  CHECK(h.Percentile(1.0) == values.back());
  CHECK(h.count() == values.size());
}

TEST_CASE("histogram of a uniform 1..1000 and edge cases", "[pktgen]") {
  Histogram h;
  for (uint64_t v = 1; v <= 1000; ++v) h.Record(v);
  CHECK(h.Percentile(0.5) >= 500);
  CHECK(h.Percentile(0.5) <= 508);
  CHECK(h.Percentile(0.0) == 1);
  CHECK(h.max() == 1000);
  CHECK(h.mean() == Approx(500.5));
  Histogram empty;
  CHECK(empty.Percentile(0.99) == 0);
  Histogram big;
  big.Record(UINT64_MAX);
  CHECK(big.Percentile(0.5) == UINT64_MAX);
  for (int i = 0; i < Histogram::kBuckets; i += 97) {
    CHECK(Histogram::Index(Histogram::LowerEdge(i)) == i);
    CHECK(Histogram::Index(Histogram::UpperEdge(i)) == i);
  }
}

TEST_CASE("frames of every framing carry their probe, foreign frames are rejected", "[pktgen]") {
  for (Framing f : {Framing::kUdp, Framing::kHoma, Framing::kTcp}) {
    for (int vlan : {-1, 7}) {
      Probe p{};
      p.magic = kProbeMagic;
      p.class_id = 2;
      p.message_id = 99;
      p.message_length = 5000;
      p.offset = 1400;
      p.chunk = 1400;
      p.seq = 12345;
      FrameAddress a{};
      a.vlan = vlan;
      std::vector<uint8_t> frame(FrameLength(f, vlan >= 0, p.chunk));
      WriteFrame(frame.data(), f, a, p);
      Probe back{};
      REQUIRE(ReadProbe(frame.data(), frame.size(), back));
      CHECK(back.message_id == 99);
      CHECK(back.seq == 12345);
      CHECK_FALSE(ReadProbe(frame.data(), HeaderLength(f, vlan >= 0) + 10, back));
    }
  }
  CHECK(FrameLength(Framing::kUdp, false, 1) == 14 + 20 + 8 + sizeof(Probe));
  std::vector<uint8_t> arp(60, 0);
  arp[12] = 0x08;
  arp[13] = 0x06;
  Probe p;
  CHECK_FALSE(ReadProbe(arp.data(), arp.size(), p));
}

TEST_CASE("one-packet messages below the full probe travel in 64-byte frames", "[pktgen]") {
  Probe p{};
  p.magic = kProbeMagic;
  p.class_id = 3;
  p.tenant = 2;
  p.message_id = 77;
  p.message_length = p.chunk = 18;
  p.send_tsc = p.message_start_tsc = 123456789;
  p.seq = (5ull << 32) | 42;  // only the low 32 bits travel
  REQUIRE(UsesCompactProbe(p));
  const uint32_t length = FrameLength(Framing::kUdp, false, p.chunk, true);
  CHECK(length == 60);  // 64 on the wire with the FCS
  std::vector<uint8_t> frame(length);
  WriteFrame(frame.data(), Framing::kUdp, FrameAddress{}, p);
  Probe back{};
  REQUIRE(ReadProbe(frame.data(), frame.size(), back));
  CHECK(back.class_id == 3);
  CHECK(back.tenant == 2);
  CHECK(back.chunk == 18);
  CHECK(back.message_length == 18);
  CHECK(back.offset == 0);
  CHECK(back.send_tsc == 123456789);
  CHECK(back.message_start_tsc == 123456789);
  CHECK(back.seq == 42);
  CHECK(back.message_id == (3ull << 48 | kCompactMessageIdBit | 42));
  CHECK_FALSE(ReadProbe(frame.data(), 42 + 10, back));  // cut short

  // Messages of more than one packet, or as long as the full probe, keep the full probe.
  Probe multi = p;
  multi.message_length = 3000;
  CHECK_FALSE(UsesCompactProbe(multi));
  Probe big = p;
  big.message_length = big.chunk = sizeof(Probe);
  CHECK_FALSE(UsesCompactProbe(big));

  // Sequence numbers are extended against the highest one seen, across the 32-bit wrap.
  CHECK(ExtendSeq(42, 0) == 42);
  CHECK(ExtendSeq(5, (1ull << 32) - 3) == (1ull << 32) + 5);
  CHECK(ExtendSeq(0xfffffff0u, (1ull << 32) + 5) == 0xfffffff0u);  // a late one from before
  CHECK(ExtendSeq(7, (3ull << 32) + 9) == (3ull << 32) + 7);
}

TEST_CASE("bad --class flags name the flag and the part that is wrong", "[pktgen]") {
  CHECK(app::ParseClassFlag("rpc:homa:5000:W1:0.2:0:0").ok());
  CHECK(app::ParseClassFlag("x:udp:1:fixed=64KiB:1:0:0")->sizes.Max() == 65536);
  CHECK(app::ParseClassFlag("x:udp:1:uniform=100-2KB:1:0:0")->sizes.Max() == 2000);
  CHECK_THAT(app::ParseClassFlag("rpc:homa:5000").message(),
             Catch::Contains("3 fields, expected 7"));
  CHECK_THAT(app::ParseClassFlag("rpc:quic:5000:W1:0.2:0:0").message(),
             Catch::Contains("framing 'quic' is not udp, homa or tcp"));
  CHECK_THAT(app::ParseClassFlag("rpc:udp:70000:W1:0.2:0:0").message(),
             Catch::Contains("destination port '70000' is not 1..65535"));
  CHECK_THAT(app::ParseClassFlag("rpc:udp:1:W9:0.2:0:0").message(), Catch::Contains("sizes 'W9'"));
  CHECK_THAT(app::ParseClassFlag("rpc:udp:1:fixed=10Gbps:0.2:0:0").message(),
             Catch::Contains("is not a size"));
  CHECK_THAT(app::ParseClassFlag("rpc:udp:1:W1:1.5:0:0").message(),
             Catch::Contains("share '1.5' is not a number in (0, 1]"));
  CHECK_THAT(app::ParseClassFlag("rpc:udp:1:W1:0.5:x:0").message(),
             Catch::Contains("tenant and sender must be numbers"));
}

TEST_CASE("workload validation reports every problem", "[pktgen]") {
  WorkloadSpec spec;
  spec.load = 0;
  spec.classes.push_back({.name = "a", .share = 0.5, .sender = 3});
  const Status s = ValidateWorkload(spec);
  CHECK_THAT(s.message(), Catch::Contains("load 0 must be in (0, 10]"));
  CHECK_THAT(s.message(), Catch::Contains("sender 3 but only 1 sender(s)"));
  CHECK_THAT(s.message(), Catch::Contains("class shares add up to 0.5, not 1"));
}

TEST_CASE("ring loopback: every packet counted once, in-process latency is tiny", "[pktgen]") {
  qosvisor::testing::TestEal();
  auto pool = dataplane::Mempool::Create("pktgen_loop", 8191);
  REQUIRE(pool.ok());
  rte_ring* ring = rte_ring_create("pktgen_loop_ring", 8192, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  REQUIRE(ring != nullptr);
  WorkloadSpec spec;
  spec.classes.push_back(std::move(app::ParseClassFlag("small:udp:5000:W1:0.5:0:0")).value());
  spec.classes.push_back(std::move(app::ParseClassFlag("mid:homa:5001:W2:0.5:1:0")).value());
  spec.bottleneck_bps = 200'000'000;
  spec.sender_bps = 200'000'000;
  spec.load = 0.5;
  RingEndpoints rings{{ring}, ring, nullptr, (*pool)->get()};
  RunOptions options;
  options.duration_ns = 300'000'000;
  auto result = RunOverRings(spec, rings, options);
  REQUIRE(result.ok());
  const auto& r = result->report;
  uint64_t sent = 0, received = 0;
  for (const auto& c : r["classes"]) {
    sent += c["sent_packets"].get<uint64_t>();
    received += c["received_packets"].get<uint64_t>();
    CHECK(c["lost_packets"] == 0);
    CHECK(c["duplicates"] == 0);
    CHECK(c["reordered"] == 0);
    CHECK(c["messages_incomplete"] == 0);
    CHECK(c["messages_completed"].get<uint64_t>() > 0);
  }
  CHECK(sent == result->generated_packets);
  CHECK(received == sent);
  CHECK(sent > 1000);
  // The latency distribution is consistent (its absolute size is a benchmark's business: a loaded
  // machine may preempt the generator at any point).
  const auto& lat = r["classes"][0]["latency_us"];
  CHECK(lat["p50"].get<double>() > 0);
  CHECK(lat["p50"].get<double>() <= lat["p99"].get<double>());
  CHECK(lat["p99"].get<double>() <= lat["max"].get<double>());
  rte_ring_free(ring);
  CHECK((*pool)->available() == (*pool)->capacity());
}

}  // namespace qosvisor::pktgen

namespace {
size_t OpenFds() {
  return static_cast<size_t>(std::distance(std::filesystem::directory_iterator("/proc/self/fd"),
                                           std::filesystem::directory_iterator{}));
}
}  // namespace

TEST_CASE("enqueue stamps hold one socket asking for receive timestamps while they live",
          "[pktgen]") {
  std::ifstream prequeue("/proc/sys/net/core/netdev_tstamp_prequeue");
  int allowed = 1;
  prequeue >> allowed;
  if (allowed == 0) {
    auto refused = qosvisor::pktgen::EnqueueStamps::Enable();
    REQUIRE_FALSE(refused.ok());
    CHECK_THAT(refused.message(), Catch::Contains("netdev_tstamp_prequeue is 0"));
    return;
  }
  const size_t before = OpenFds();
  {
    auto stamps = qosvisor::pktgen::EnqueueStamps::Enable();
    REQUIRE(stamps.ok());
    CHECK(OpenFds() == before + 1);
    qosvisor::pktgen::EnqueueStamps moved = std::move(stamps).value();
    CHECK(OpenFds() == before + 1);  // one owner after the move
  }
  CHECK(OpenFds() == before);
}

namespace qosvisor::pktgen {

TEST_CASE("receive stamps stay on the TSC over a run with the TSC rate a little off",
          "[pktgen][stamps]") {
  // The true clocks: the TSC at 2.6 GHz, CLOCK_REALTIME in ns since 0; our rate 20 ppm high,
  // about what a 20 ms calibration gets wrong.
  constexpr uint64_t kTrueHz = 2'600'000'000;
  const uint64_t our_hz = kTrueHz + kTrueHz / 50'000;
  auto true_tsc = [](uint64_t ns) { return static_cast<uint64_t>(ns * 2.6); };
  auto error_ns = [&](uint64_t tsc, uint64_t ns) {
    return std::abs(static_cast<double>(tsc) - static_cast<double>(true_tsc(ns))) / 2.6;
  };
  constexpr uint64_t kRun = 15'000'000'000, kStampAge = 3'000'000;
  const uint64_t stamp_ns = kRun - kStampAge;  // a frame received 3 ms before it is converted

  RealtimeToTsc once(our_hz);
  once.Anchor({true_tsc(0), 0});
  CHECK(error_ns(once.ToTsc(stamp_ns), stamp_ns) > 200'000);  // 15 s x 20 ppm = 300 us

  RealtimeToTsc kept(our_hz);
  kept.Anchor({true_tsc(0), 0});
  uint64_t anchors = 0;
  for (uint64_t ns = 0; ns <= kRun; ns += 100'000) {  // polls every 100 us
    if (kept.Stale(true_tsc(ns))) {
      kept.Anchor({true_tsc(ns), ns});
      ++anchors;
    }
  }
  CHECK(anchors >= 13'000);  // about one a millisecond (the first poll past it)
  CHECK(anchors <= 15'100);
  CHECK(error_ns(kept.ToTsc(stamp_ns), stamp_ns) < 1'000);

  SECTION("a real anchor is close to both clocks") {
    RealtimeToTsc now(TscHz());
    bool anchored = false;
    for (int i = 0; i < 100 && !anchored; ++i) anchored = now.AnchorNow();
    REQUIRE(anchored);
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    const uint64_t tsc = ReadTsc();
    const uint64_t ns = static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u +
                        static_cast<uint64_t>(ts.tv_nsec);
    const double off_ns =
        static_cast<double>(TscToNs(tsc - std::min(tsc, now.ToTsc(ns)), TscHz()));
    CHECK(off_ns < 1'000'000);  // within a millisecond even on a busy box
  }
}

}  // namespace qosvisor::pktgen
