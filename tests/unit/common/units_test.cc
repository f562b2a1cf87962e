// Rates, sizes and durations as people write them, and the exact messages for bad spellings.
#include "common/units.h"

#include <catch2/catch.hpp>

namespace qosvisor {

TEST_CASE("rates in every unit, exact for decimals", "[units]") {
  CHECK(ParseRate("10Gbps").value() == 10'000'000'000ull);
  CHECK(ParseRate("250Mbps").value() == 250'000'000ull);
  CHECK(ParseRate("2.5Gbps").value() == 2'500'000'000ull);
  CHECK(ParseRate("64kbps").value() == 64'000ull);
  CHECK(ParseRate("64Kbps").value() == 64'000ull);
  CHECK(ParseRate("1 Tbps").value() == 1'000'000'000'000ull);
  CHECK(ParseRate("800bps").value() == 800ull);
  CHECK(ParseRate("0.001Gbps").value() == 1'000'000ull);
}

TEST_CASE("sizes in SI and binary units", "[units]") {
  CHECK(ParseSize("64KiB").value() == 65'536ull);
  CHECK(ParseSize("2MiB").value() == 2'097'152ull);
  CHECK(ParseSize("1GiB").value() == 1'073'741'824ull);
  CHECK(ParseSize("1TiB").value() == 1'099'511'627'776ull);
  CHECK(ParseSize("1500").value() == 1'500ull);
  CHECK(ParseSize("1500B").value() == 1'500ull);
  CHECK(ParseSize("9KB").value() == 9'000ull);
  CHECK(ParseSize("1.5MB").value() == 1'500'000ull);
  CHECK(ParseSize("4GB").value() == 4'000'000'000ull);
  CHECK(ParseSize("0.5KiB").value() == 512ull);
}

TEST_CASE("durations from ns to hours", "[units]") {
  CHECK(ParseDuration("100us").value() == 100'000ull);
  CHECK(ParseDuration("5ms").value() == 5'000'000ull);
  CHECK(ParseDuration("250ns").value() == 250ull);
  CHECK(ParseDuration("2s").value() == 2'000'000'000ull);
  CHECK(ParseDuration("1.5s").value() == 1'500'000'000ull);
  CHECK(ParseDuration("5m").value() == 300'000'000'000ull);
  CHECK(ParseDuration("1h").value() == 3'600'000'000'000ull);
}

TEST_CASE("bad quantities name the text and a correct example", "[units]") {
  auto rate = ParseRate("10Gbs");
  REQUIRE_FALSE(rate.ok());
  CHECK(
      rate.message() ==
      "'10Gbs' is not a rate (unknown unit 'Gbs': bps, Kbps, Mbps, Gbps, Tbps); use e.g. 10Gbps or "
      "250Mbps");
  auto missing = ParseRate("100");
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(missing.message(), Catch::Contains("the unit is missing"));
  CHECK_FALSE(ParseRate("fast").ok());
  CHECK_FALSE(ParseRate("").ok());
  CHECK_FALSE(ParseSize("-1KiB").ok());
  CHECK_THAT(ParseSize("1.3B").message(), Catch::Contains("not a whole number"));
  CHECK_THAT(ParseSize("99999999999TiB").message(), Catch::Contains("too large"));
  CHECK_THAT(ParseDuration("5 parsecs").message(), Catch::Contains("unknown unit 'parsecs'"));
}

TEST_CASE("formatting round-trips", "[units]") {
  for (uint64_t v :
       {0ull, 1ull, 999ull, 1'000ull, 250'000'000ull, 10'000'000'000ull, 1'234'567ull}) {
    CHECK(ParseRate(FormatRate(v)).value() == v);
    CHECK(ParseSize(FormatSize(v)).value() == v);
    CHECK(ParseDuration(FormatDuration(v)).value() == v);
  }
  CHECK(FormatRate(10'000'000'000ull) == "10Gbps");
  CHECK(FormatSize(65'536) == "64KiB");
  CHECK(FormatSize(1'500) == "1500B");
  CHECK(FormatDuration(100'000) == "100us");
}

}  // namespace qosvisor
