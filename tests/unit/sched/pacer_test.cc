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

}  // namespace qosvisor::sched
