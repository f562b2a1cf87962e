// Message-size distributions: the built-in Homa workloads match their published statistics,
// parsing rejects malformed CDFs with a line number, and sampling is deterministic and unbiased.
#include "common/size_distribution.h"

#include <catch2/catch.hpp>

namespace qosvisor {

TEST_CASE("built-in workloads have the published means", "[size_distribution]") {
  // Step-CDF means from data/workloads/README.md.
  struct Expect {
    const char* name;
    double mean;
    uint64_t min, max;
  };
  for (Expect e : {Expect{"W1", 187.51, 1, 100'000}, Expect{"W2", 440.79, 2, 3'529'904},
                   Expect{"W3", 2'927.35, 3, 15'158'197}, Expect{"W4", 127'796.64, 53, 10'000'000},
                   Expect{"w5", 2'564'714.97, 1'470, 29'400'000}}) {
    auto d = BuiltinWorkload(e.name);
    REQUIRE(d.ok());
    CHECK(d->Mean() == Approx(e.mean).epsilon(1e-4));
    CHECK(d->Min() == e.min);
    CHECK(d->Max() == e.max);
  }
  CHECK(BuiltinWorkloadNames().size() == 5);
  CHECK(BuiltinWorkload("W4")->CdfAt(1460) == Approx(0.6424).epsilon(1e-3));
  auto bad = BuiltinWorkload("W9");
  REQUIRE(!bad.ok());
  CHECK(bad.message() == "workload 'W9' is not built in; use one of W1, W2, W3, W4, W5");
}

TEST_CASE("sampling W4 reproduces its CDF and is deterministic", "[size_distribution]") {
  auto d = BuiltinWorkload("W4");
  REQUIRE(d.ok());
  std::mt19937_64 a(7), b(7);
  int small = 0;
  const int n = 200'000;
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    uint64_t s = d->Sample(a);
    CHECK(s == d->Sample(b));
    CHECK(s >= 53);
    small += s <= 1460;
    sum += static_cast<double>(s);
  }
  CHECK(static_cast<double>(small) / n == Approx(0.6424).margin(0.005));
  // W4's mean is dominated by rare 10 MB messages; 10% is several standard errors here.
  CHECK(sum / n == Approx(d->Mean()).epsilon(0.10));
}

TEST_CASE("fixed and uniform distributions", "[size_distribution]") {
  std::mt19937_64 rng(1);
  auto fixed = SizeDistribution::Fixed(1500);
  CHECK(fixed.Sample(rng) == 1500);
  CHECK(fixed.Mean() == 1500.0);
  auto uni = SizeDistribution::Uniform(100, 200);
  REQUIRE(uni.ok());
  for (int i = 0; i < 1000; ++i) {
    uint64_t s = uni->Sample(rng);
    CHECK(s >= 100);
    CHECK(s <= 200);
  }
  CHECK(uni->Mean() == 150.0);
  auto bad = SizeDistribution::Uniform(5, 1);
  REQUIRE(!bad.ok());
  CHECK(bad.message() == "uniform sizes: min 5 is above max 1; swap them");
}

TEST_CASE("CDF text: comments, atoms and errors with line numbers", "[size_distribution]") {
  auto d = SizeDistribution::ParseCdf("# sizes\n100 0.5\n\n1000 1.0  # tail\n", "t.cdf");
  REQUIRE(d.ok());
  CHECK(d->Mean() == 550.0);
  CHECK(d->CdfAt(99) == 0.0);
  CHECK(d->CdfAt(100) == 0.5);
  CHECK(d->CdfAt(999) == 0.5);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 100; ++i) {
    uint64_t s = d->Sample(rng);
    CHECK((s == 100 || s == 1000));
  }

  auto r1 = SizeDistribution::ParseCdf("100 0.5\n90 1.0\n", "t.cdf");
  REQUIRE(!r1.ok());
  CHECK(r1.message() == "t.cdf:2: size 90 does not increase (previous 100)");
  auto r2 = SizeDistribution::ParseCdf("100 0.5\n200 0.9\n", "t.cdf");
  REQUIRE(!r2.ok());
  CHECK(r2.message() == "t.cdf: the last probability is 0.9, it must be 1.0");
  auto r3 = SizeDistribution::ParseCdf("abc 0.5\n", "t.cdf");
  REQUIRE(!r3.ok());
  CHECK(r3.message() == "t.cdf:1: 'abc 0.5' does not start with a size in bytes");
  auto r4 = SizeDistribution::ParseCdf("100 1.5\n", "t.cdf");
  REQUIRE(!r4.ok());
  CHECK(r4.message() == "t.cdf:1: probability 1.5 is outside [0, 1]");
  auto r5 = SizeDistribution::ParseCdf("100 0.7\n200 0.6\n300 1\n", "t.cdf");
  REQUIRE(!r5.ok());
  CHECK(r5.message() == "t.cdf:2: probability 0.6 decreases (previous 0.7)");
  auto r6 = SizeDistribution::ParseCdf("100\n", "t.cdf");
  REQUIRE(!r6.ok());
  CHECK(r6.message() == "t.cdf:1: expected '<size_bytes> <cumulative_probability>'");
  auto r7 = SizeDistribution::ParseCdf("# nothing\n", "t.cdf");
  REQUIRE(!r7.ok());
  CHECK(r7.message() == "t.cdf: no CDF points");
}

}  // namespace qosvisor
