// Fuzz target: arbitrary text as a configuration file; the loader must answer with errors, never
// crash, hang or throw, and anything it accepts must format and load back to the same config.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "config/loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 16384) return 0;  // deep YAML nesting is bounded by the loader; keep runs fast
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto loaded = qosvisor::config::LoadFromString(text, "fuzz.yaml");
  if (loaded.ok()) {
    const auto again = qosvisor::config::LoadFromString(qosvisor::config::Format(*loaded.config),
                                                        "fuzz-normalized.yaml");
    if (!again.ok() || !(*again.config == *loaded.config)) __builtin_trap();
  }
  return 0;
}
