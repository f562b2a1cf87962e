// A keyed 64-bit hash for tables indexed by values a sender picks (message ids, RPC ids): without
// the per-process key nobody can compute which ids share an index position.
#pragma once

#include <cstdint>

namespace qosvisor {

struct HashKey {
  uint64_t k0 = 0;
  uint64_t k1 = 1;
  bool operator==(const HashKey&) const = default;

  // Fresh random key material from the kernel (getrandom), different in every process.
  static HashKey Random();
};

// One 64x64→128 multiply of the keyed input by the odd key, folded (as wyhash's mum), then
// mixed once more: the fold of a product with an unknown factor gives no arithmetic handle for
// crafting collisions (unlike a fixed multiplicative hash), and the final xor-shift and multiply
// spread it into the high bits used as an index. Without them, consecutive ids under some keys
// (about one in twenty) crowd into runs of 30 and more, as a Weyl sequence does for a poor
// multiplier.
inline uint64_t KeyedHash64(uint64_t x, const HashKey& key) {
  const unsigned __int128 p = static_cast<unsigned __int128>(x ^ key.k0) * key.k1;
  uint64_t h = static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
  h ^= h >> 32;
  return h * 0x9E3779B97F4A7C15ull;
}

}  // namespace qosvisor
