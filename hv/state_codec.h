// Device and vCPU state as bytes: a little-endian writer and a bounds-checked reader. A reader
// that runs past its end or finds an impossible value stays failed and names the first field that
// was wrong, so a corrupted snapshot ends in one clear error instead of a half-loaded device.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace qosvisor::hv {

// CRC-32C (Castagnoli) of `data`, continuing from `crc` (0 to start).
uint32_t Crc32c(std::span<const uint8_t> data, uint32_t crc = 0);

class StateWriter {
 public:
  template <typename T>
  void Put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    // SAFETY: a trivially copyable object may be read as its sizeof(T) bytes.
    const auto* p = reinterpret_cast<const uint8_t*>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  void PutBytes(std::span<const uint8_t> data) {
    Put<uint64_t>(data.size());
    bytes_.insert(bytes_.end(), data.begin(), data.end());
  }
  void PutString(const std::string& s) {
    // SAFETY: char and uint8_t have the same size; the span covers the string's bytes.
    PutBytes({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  std::vector<uint8_t> Take() { return std::move(bytes_); }

 private:
  std::vector<uint8_t> bytes_;
};

class StateReader {
 public:
  StateReader(std::span<const uint8_t> data, std::string what)
      : data_(data), what_(std::move(what)) {}

  // Reads a T named `field`; on failure leaves *out untouched and the reader failed.
  template <typename T>
  bool Get(T* out, const char* field) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (!Need(sizeof(T), field)) return false;
    std::memcpy(out, data_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool GetBytes(std::vector<uint8_t>* out, const char* field, uint64_t max_len);
  bool GetString(std::string* out, const char* field, uint64_t max_len);
  // Marks the reader failed: `field` holds an impossible value.
  bool Invalid(const char* field, const std::string& why);
  // True if everything so far was read and the data was consumed exactly.
  bool Finish();

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  bool Need(uint64_t n, const char* field);

  std::span<const uint8_t> data_;
  std::string what_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace qosvisor::hv
