// The guest_memory: section: the page tracker's period and counter width, the huge-page policy,
// their defaults, the round trip through Format(), and each bad value named by key and position.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "bad_config.h"
#include "config/loader.h"

namespace qosvisor::config {
namespace {

Config Loaded(const std::string& yaml) {
  LoadResult r = LoadFromString(yaml, "/etc/qv/box.yaml");
  INFO(r.ErrorText());
  REQUIRE(r.ok());
  return *r.config;
}

TEST_CASE("guest_memory: defaults, every key, and the round trip", "[config][guest-memory]") {
  const Config d = Loaded("ports: [{name: p, driver: ring}]\n");
  CHECK(d.guest_memory.track);
  CHECK(d.guest_memory.track_period_ns == 1'000'000'000ull);
  CHECK(d.guest_memory.counter_bits == 8);
  CHECK(d.guest_memory.huge_pages == HugePagePolicy::kAuto);
  CHECK(Format(d).find("guest_memory") == std::string::npos);

  const Config c =
      Loaded("guest_memory: {track_period: 250ms, counter_bits: 4, huge_pages: all}\n");
  CHECK(c.guest_memory.track_period_ns == 250'000'000ull);
  CHECK(c.guest_memory.counter_bits == 4);
  CHECK(c.guest_memory.huge_pages == HugePagePolicy::kAll);
  const std::string text = Format(c);
  INFO(text);
  CHECK(Loaded(text) == c);

  const Config off = Loaded("guest_memory: {track: false, huge_pages: off}\n");
  CHECK_FALSE(off.guest_memory.track);
  CHECK(off.guest_memory.huge_pages == HugePagePolicy::kOff);
  CHECK_FALSE(off == d);
}

TEST_CASE("guest_memory: each bad value is named with its key", "[config][guest-memory]") {
  const std::vector<BadConfig> cases = {
      {"guest_memory: {track_period: often}\n", "1:30: guest_memory.track_period",
       "'often' is not a duration"},
      {"guest_memory: {track_period: 1ms}\n", "1:30: guest_memory.track_period",
       "too short: at least 10ms"},
      {"guest_memory: {counter_bits: 1}\n", "1:30: guest_memory.counter_bits", ""},
      {"guest_memory: {counter_bits: 17}\n", "1:30: guest_memory.counter_bits", ""},
      {"guest_memory: {huge_pages: some}\n", "1:28: guest_memory.huge_pages",
       "'some' is not a huge-page policy; use one of: auto, off, all"},
      {"guest_memory: {track: false}\n", "1:15: guest_memory.huge_pages",
       "with track: false use 'off' or 'all'"},
      {"guest_memory: {track: maybe}\n", "1:23: guest_memory.track", ""},
      {"guest_memory: {period: 1s}\n", "1:16: guest_memory.period", "unknown key 'period'"},
  };
  for (const BadConfig& c : cases) CheckRefused(c);
}

}  // namespace
}  // namespace qosvisor::config
