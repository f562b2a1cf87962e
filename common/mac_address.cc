// MAC address text in and out.
#include "common/mac_address.h"

#include <fmt/format.h>

#include <cstdio>

namespace qosvisor {

std::string FormatMac(const uint8_t* m) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4],
                     m[5]);
}

bool ParseMac(const std::string& text, uint8_t out[6]) {
  unsigned b[6];
  char tail = 0;
  if (text.size() != 17 || std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1],
                                       &b[2], &b[3], &b[4], &b[5], &tail) != 6) {
    return false;
  }
  for (int i = 0; i < 6; ++i) out[i] = static_cast<uint8_t>(b[i]);
  return true;
}

}  // namespace qosvisor
