// Resetting a record on the data path (per packet, per new message).
#pragma once

#include <cstring>
#include <type_traits>

namespace qosvisor {

// Gives `x` its default value by copying a constant default one: a few vector stores, where
// `x = {}` compiles to `rep stos`, which costs tens of cycles per call.
template <typename T>
inline void ResetToDefault(T& x) {
  static_assert(std::is_trivially_copyable_v<T>);
  static constexpr T kDefault{};
  std::memcpy(&x, &kDefault, sizeof(T));
}

}  // namespace qosvisor
