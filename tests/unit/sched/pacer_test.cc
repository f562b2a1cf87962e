// The pacer: long-run rate exact whatever the packet sizes, burst depth bounded, and the time at
// which it next allows a packet.
#include "sched/pacer.h"

#include <catch2/catch.hpp>
#include <random>

namespace qosvisor::sched {

TEST_CASE("pacer sends at its rate over a long run", "[pacer]") {
  const uint64_t hz = 2'500'000'000;
  uint64_t rate = GENERATE(1'000'000'000ull, 9'800'000'000ull, 100'000'000ull);
  Pacer p(rate, hz, 32 * 1538);
  std::mt19937_64 rng(rate);
  uint64_t now = 1'000'000, sent_bits = 0;
  const uint64_t start = now, duration = hz / 10;  // 100 ms
  p.Refill(now);
  while (now < start + duration) {
    now += rng() % 5000;
    p.Refill(now);
    while (p.CanSend()) {
      uint32_t len = 64 + static_cast<uint32_t>(rng() % 1455);
      p.Consume(len);
      sent_bits += len * 8ull;
    }
  }
  double expect = static_cast<double>(rate) * static_cast<double>(now - start) / hz;
  // The initial full bucket (32 frames) is the only allowed excess.
  CHECK(static_cast<double>(sent_bits) <= expect + 32 * 1538 * 8 + 1519 * 8);
  CHECK(static_cast<double>(sent_bits) >= expect * 0.999);
}

TEST_CASE("pacer bucket depth caps a burst after idling", "[pacer]") {
  const uint64_t hz = 1'000'000'000;
  Pacer p(1'000'000'000, hz, 3000);
  p.Refill(0);
  p.Refill(1'000'000'000);  // a long idle period earns no more than the bucket
  int n = 0;
  while (p.CanSend()) {
    p.Consume(1000);
    ++n;
  }
  CHECK(n == 3);
  uint64_t t = p.NextSendTsc();
  CHECK(t > 1'000'000'000);
  p.Refill(t - 1);
  CHECK_FALSE(p.CanSend());
  p.Refill(t);
  CHECK(p.CanSend());
}

TEST_CASE("a pacer at rate 0 never holds packets back", "[pacer]") {
  Pacer p(0, 1'000'000'000, 1000);
  p.Refill(5);
  for (int i = 0; i < 100; ++i) p.Consume(1500);
  CHECK(p.CanSend());
  CHECK_FALSE(p.enabled());
}

TEST_CASE("a reload's pacer goes on from the old one's debt, at its own rate and depth",
          "[pacer]") {
  const uint64_t hz = 1'000'000'000;  // with 1 Gbps: a bit a cycle
  Pacer old(1'000'000'000, hz, 2'500);
  old.Refill(0);
  for (int i = 0; i < 3; ++i) old.Consume(1'000);  // 20,000 bits of credit, 24,000 sent
  REQUIRE_FALSE(old.CanSend());
  SECTION("at half the rate the 4,000-bit debt takes twice as long") {
    Pacer next(500'000'000, hz, 2'500);
    next.ContinueFrom(old);
    CHECK(next.NextSendTsc() == 8'001);
    next.Refill(7'999);
    CHECK_FALSE(next.CanSend());
    next.Refill(8'001);
    CHECK(next.CanSend());
  }
  SECTION("credit is capped at the new bucket") {
    Pacer fresh(1'000'000'000, hz, 2'500);
    fresh.Refill(0);  // a full bucket, 20,000 bits
    Pacer small(1'000'000'000, hz, 500);
    small.ContinueFrom(fresh);
    small.Consume(500);  // the small bucket's 4,000 bits, not 20,000
    CHECK_FALSE(small.CanSend());
  }
  SECTION("nothing to go on from: a disabled or unstarted pacer, another clock") {
    Pacer unstarted(1'000'000'000, hz, 2'500);
    Pacer disabled(0, hz, 2'500);
    Pacer other_clock(1'000'000'000, 2 * hz, 2'500);
    other_clock.Refill(0);
    for (int i = 0; i < 3; ++i) other_clock.Consume(1'000);  // in debt on its own clock
    for (const Pacer* from : {&unstarted, &disabled, &other_clock}) {
      Pacer next(1'000'000'000, hz, 2'500);
      next.ContinueFrom(*from);
      next.Refill(0);  // starts with a full bucket, as a new pacer does
      for (int i = 0; i < 2; ++i) next.Consume(1'000);
      CHECK(next.CanSend());
    }
    Pacer off(0, hz, 2'500);
    off.ContinueFrom(old);
    CHECK(off.CanSend());
  }
}

}  // namespace qosvisor::sched
