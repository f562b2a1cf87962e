// Every file in examples/ loads without errors, and formats to a file that loads back equal.
#include <catch2/catch.hpp>
#include <filesystem>

#include "config/loader.h"

namespace qosvisor::config {

TEST_CASE("every example loads and round-trips", "[config][examples]") {
  const std::filesystem::path dir = std::filesystem::path(QOSVISOR_SOURCE_DIR) / "examples";
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    ++count;
    INFO(entry.path().string());
    LoadResult r = LoadFromFile(entry.path().string());
    INFO(r.ErrorText());
    REQUIRE(r.ok());
    const std::string text = Format(*r.config);
    INFO(text);
    LoadResult again = LoadFromString(text, entry.path().string());
    INFO(again.ErrorText());
    REQUIRE(again.ok());
    CHECK(*again.config == *r.config);
  }
  CHECK(count >= 5);
}

}  // namespace qosvisor::config
