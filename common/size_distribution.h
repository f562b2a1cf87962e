// Message-size distributions for simulations and benchmarks: fixed, uniform, or a step CDF
// (the Homa workloads W1-W5 are built into the binary, so no data files are needed at run time).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace qosvisor {

class SizeDistribution {
 public:
  // Every message has exactly `bytes` bytes.
  static SizeDistribution Fixed(uint64_t bytes);
  // Sizes uniform in [min_bytes, max_bytes].
  static Result<SizeDistribution> Uniform(uint64_t min_bytes, uint64_t max_bytes);
  // Parses "<size_bytes> <P(size <= size_bytes)>" lines ('#' starts a comment). Sizes are step
  // atoms: size i has probability F(i) - F(i-1), as in the Homa authors' generators. Sizes and
  // probabilities must increase (probabilities may stay equal) and the last probability must be 1.
  // `origin` names the text in error messages (a file name, "W4").
  static Result<SizeDistribution> ParseCdf(std::string_view text, std::string_view origin);

  // Draws one size; deterministic for a seeded engine.
  uint64_t Sample(std::mt19937_64& rng) const;
  double Mean() const;
  uint64_t Min() const;
  uint64_t Max() const;
  // P(size <= bytes).
  double CdfAt(uint64_t bytes) const;

 private:
  enum class Kind { kFixed, kUniform, kCdf };
  Kind kind_ = Kind::kFixed;
  uint64_t lo_ = 0;
  uint64_t hi_ = 0;
  std::vector<uint64_t> sizes_;  // kCdf: atoms, increasing
  std::vector<double> cdf_;      // kCdf: P(size <= sizes_[i])
};

// Names of the built-in workloads: "W1" .. "W5" (Homa, SIGCOMM 2018; see data/workloads/README.md).
std::vector<std::string> BuiltinWorkloadNames();
// A built-in workload by name (case-insensitive), parsed from text embedded at build time.
Result<SizeDistribution> BuiltinWorkload(std::string_view name);
// The embedded CDF text of a built-in workload, or empty if the name is unknown.
std::string_view BuiltinWorkloadText(std::string_view name);

}  // namespace qosvisor
