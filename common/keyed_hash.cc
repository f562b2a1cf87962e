// Per-process hash keys from the kernel's random pool.
#include "common/keyed_hash.h"

#include <random>

namespace qosvisor {

HashKey HashKey::Random() {
  std::random_device rd;  // getrandom(2) on Linux
  const auto draw = [&rd] { return uint64_t{rd()} << 32 | rd(); };
  HashKey key;
  key.k0 = draw();
  key.k1 = draw() | 1;  // odd, so the multiply is a bijection on the low half
  return key;
}

}  // namespace qosvisor
