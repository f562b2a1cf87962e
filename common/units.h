// Quantities as people write them: rates "10Gbps", sizes "64KiB", durations "100us".
// Used by the YAML loader and by command-line flags; errors say what would be right.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace qosvisor {

// Bits per second. Accepts bps, Kbps, Mbps, Gbps, Tbps (SI, factor 1000), case of the prefix
// letter ignored ("10gbps", "10Gbps"), optional space, decimals ("2.5Gbps").
Result<uint64_t> ParseRate(std::string_view text);
// Bytes. Accepts B, KB/MB/GB/TB (1000) and KiB/MiB/GiB/TiB (1024), or a bare integer.
Result<uint64_t> ParseSize(std::string_view text);
// Nanoseconds. Accepts ns, us, ms, s, m (minutes), h.
Result<uint64_t> ParseDuration(std::string_view text);

// Canonical spellings, chosen so that Parse(Format(x)) == x.
std::string FormatRate(uint64_t bits_per_second);
std::string FormatSize(uint64_t bytes);
std::string FormatDuration(uint64_t nanoseconds);

}  // namespace qosvisor
