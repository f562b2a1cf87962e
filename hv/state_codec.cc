// CRC-32C with the SSE4.2 instruction where the CPU has it (every x86-64 server of the last
// decade; 8 bytes a cycle), a table otherwise; and the bounds checks of StateReader.
#include "hv/state_codec.h"

#include <fmt/format.h>
#include <nmmintrin.h>

#include <array>

namespace qosvisor::hv {
namespace {

constexpr uint32_t kCastagnoliReflected = 0x82f63b78;

constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? (c >> 1) ^ kCastagnoliReflected : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

uint32_t Crc32cTable(std::span<const uint8_t> data, uint32_t crc) {
  for (uint8_t b : data) crc = kCrcTable[(crc ^ b) & 0xff] ^ (crc >> 8);
  return crc;
}

__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(std::span<const uint8_t> data,
                                                       uint32_t crc) {
  const uint8_t* p = data.data();
  size_t n = data.size();
  uint64_t c = crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
  }
  auto c32 = static_cast<uint32_t>(c);
  for (; n > 0; --n, ++p) c32 = _mm_crc32_u8(c32, *p);
  return c32;
}

bool HasSse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}

}  // namespace

uint32_t Crc32c(std::span<const uint8_t> data, uint32_t crc) {
  crc = ~crc;
  crc = HasSse42() ? Crc32cSse42(data, crc) : Crc32cTable(data, crc);
  return ~crc;
}

bool StateReader::Need(uint64_t n, const char* field) {
  if (!ok()) return false;
  if (n > data_.size() - pos_) {
    error_ = fmt::format("{}: ends inside field '{}' (needs {} bytes, {} left)", what_, field, n,
                         data_.size() - pos_);
    return false;
  }
  return true;
}

bool StateReader::GetBytes(std::vector<uint8_t>* out, const char* field, uint64_t max_len) {
  uint64_t len = 0;
  if (!Get(&len, field)) return false;
  if (len > max_len) return Invalid(field, fmt::format("length {} exceeds {}", len, max_len));
  if (!Need(len, field)) return false;
  out->assign(data_.begin() + static_cast<ptrdiff_t>(pos_),
              data_.begin() + static_cast<ptrdiff_t>(pos_ + len));
  pos_ += len;
  return true;
}

bool StateReader::GetString(std::string* out, const char* field, uint64_t max_len) {
  std::vector<uint8_t> bytes;
  if (!GetBytes(&bytes, field, max_len)) return false;
  out->assign(bytes.begin(), bytes.end());
  return true;
}

bool StateReader::Invalid(const char* field, const std::string& why) {
  if (ok()) error_ = fmt::format("{}: field '{}': {}", what_, field, why);
  return false;
}

bool StateReader::Finish() {
  if (ok() && pos_ != data_.size()) {
    error_ =
        fmt::format("{}: {} unexpected bytes after the last field", what_, data_.size() - pos_);
  }
  return ok();
}

}  // namespace qosvisor::hv
