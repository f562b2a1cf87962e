// Ethernet addresses as text: "52:54:00:12:34:56", lower-case hex, for configs, snapshots, the
// control API and the generator's flags.
#pragma once

#include <cstdint>
#include <string>

namespace qosvisor {

std::string FormatMac(const uint8_t* mac);
// Exactly six colon-separated hex pairs; false (out untouched) otherwise.
bool ParseMac(const std::string& text, uint8_t out[6]);

}  // namespace qosvisor
