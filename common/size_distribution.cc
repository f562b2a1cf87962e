// Message-size distributions: parsing of step CDFs and sampling by inverse transform.
// The CDF text of W1-W5 comes from a source file generated at build time (embed_workloads.cmake).
#include "common/size_distribution.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include "fmt/format.h"

namespace qosvisor {

// Defined in the generated workloads_embedded.cc.
namespace embedded {
struct Workload {
  const char* name;
  const char* text;
};
extern const Workload kWorkloads[];
extern const int kNumWorkloads;
}  // namespace embedded

SizeDistribution SizeDistribution::Fixed(uint64_t bytes) {
  SizeDistribution d;
  d.kind_ = Kind::kFixed;
  d.lo_ = d.hi_ = bytes;
  return d;
}

Result<SizeDistribution> SizeDistribution::Uniform(uint64_t min_bytes, uint64_t max_bytes) {
  if (min_bytes > max_bytes) {
    return Status::Error(
        fmt::format("uniform sizes: min {} is above max {}; swap them", min_bytes, max_bytes));
  }
  SizeDistribution d;
  d.kind_ = Kind::kUniform;
  d.lo_ = min_bytes;
  d.hi_ = max_bytes;
  return d;
}

Result<SizeDistribution> SizeDistribution::ParseCdf(std::string_view text,
                                                    std::string_view origin) {
  SizeDistribution d;
  d.kind_ = Kind::kCdf;
  int line_no = 0;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    ++line_no;
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    auto skip_space = [&line] {
      while (!line.empty() && std::isspace(static_cast<unsigned char>(line.front()))) {
        line.remove_prefix(1);
      }
    };
    skip_space();
    if (line.empty()) continue;
    uint64_t size = 0;
    auto [p1, ec1] = std::from_chars(line.data(), line.data() + line.size(), size);
    if (ec1 != std::errc()) {
      return Status::Error(
          fmt::format("{}:{}: '{}' does not start with a size in bytes", origin, line_no, line));
    }
    line.remove_prefix(static_cast<size_t>(p1 - line.data()));
    skip_space();
    // strtod needs a terminated string; the probability is short.
    std::string prob_text(line);
    char* end = nullptr;
    double prob = std::strtod(prob_text.c_str(), &end);
    if (end == prob_text.c_str()) {
      return Status::Error(
          fmt::format("{}:{}: expected '<size_bytes> <cumulative_probability>'", origin, line_no));
    }
    while (*end != '\0' && std::isspace(static_cast<unsigned char>(*end))) ++end;
    if (*end != '\0') {
      return Status::Error(
          fmt::format("{}:{}: unexpected '{}' after the probability", origin, line_no, end));
    }
    if (!(prob >= 0.0 && prob <= 1.0)) {
      return Status::Error(
          fmt::format("{}:{}: probability {} is outside [0, 1]", origin, line_no, prob));
    }
    if (!d.sizes_.empty() && size <= d.sizes_.back()) {
      return Status::Error(fmt::format("{}:{}: size {} does not increase (previous {})", origin,
                                       line_no, size, d.sizes_.back()));
    }
    if (!d.cdf_.empty() && prob < d.cdf_.back()) {
      return Status::Error(fmt::format("{}:{}: probability {} decreases (previous {})", origin,
                                       line_no, prob, d.cdf_.back()));
    }
    d.sizes_.push_back(size);
    d.cdf_.push_back(prob);
  }
  if (d.sizes_.empty()) return Status::Error(fmt::format("{}: no CDF points", origin));
  if (std::fabs(d.cdf_.back() - 1.0) > 1e-9) {
    return Status::Error(
        fmt::format("{}: the last probability is {}, it must be 1.0", origin, d.cdf_.back()));
  }
  d.cdf_.back() = 1.0;
  d.lo_ = d.sizes_.front();
  for (size_t i = 0; i < d.sizes_.size(); ++i) {
    if (d.cdf_[i] > 0.0) {
      d.lo_ = d.sizes_[i];
      break;
    }
  }
  d.hi_ = d.sizes_.back();
  return d;
}

uint64_t SizeDistribution::Sample(std::mt19937_64& rng) const {
  switch (kind_) {
    case Kind::kFixed:
      return lo_;
    case Kind::kUniform:
      return std::uniform_int_distribution<uint64_t>(lo_, hi_)(rng);
    case Kind::kCdf: {
      // Inverse transform on the step CDF: the first atom whose F(i) exceeds u. Atoms with zero
      // probability (F equal to the previous point) are never chosen because of the strict '>'.
      double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
      auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u);
      if (it == cdf_.end()) return hi_;
      return sizes_[static_cast<size_t>(it - cdf_.begin())];
    }
  }
  return lo_;
}

double SizeDistribution::Mean() const {
  switch (kind_) {
    case Kind::kFixed:
      return static_cast<double>(lo_);
    case Kind::kUniform:
      return (static_cast<double>(lo_) + static_cast<double>(hi_)) / 2.0;
    case Kind::kCdf: {
      double mean = 0.0, prev = 0.0;
      for (size_t i = 0; i < sizes_.size(); ++i) {
        mean += static_cast<double>(sizes_[i]) * (cdf_[i] - prev);
        prev = cdf_[i];
      }
      return mean;
    }
  }
  return 0.0;
}

uint64_t SizeDistribution::Min() const { return lo_; }
uint64_t SizeDistribution::Max() const { return hi_; }

double SizeDistribution::CdfAt(uint64_t bytes) const {
  switch (kind_) {
    case Kind::kFixed:
      return bytes >= lo_ ? 1.0 : 0.0;
    case Kind::kUniform:
      if (bytes < lo_) return 0.0;
      if (bytes >= hi_) return 1.0;
      return static_cast<double>(bytes - lo_ + 1) / static_cast<double>(hi_ - lo_ + 1);
    case Kind::kCdf: {
      auto it = std::upper_bound(sizes_.begin(), sizes_.end(), bytes);
      if (it == sizes_.begin()) return 0.0;
      return cdf_[static_cast<size_t>(it - sizes_.begin()) - 1];
    }
  }
  return 0.0;
}

std::vector<std::string> BuiltinWorkloadNames() {
  std::vector<std::string> names;
  for (int i = 0; i < embedded::kNumWorkloads; ++i)
    names.emplace_back(embedded::kWorkloads[i].name);
  return names;
}

std::string_view BuiltinWorkloadText(std::string_view name) {
  for (int i = 0; i < embedded::kNumWorkloads; ++i) {
    std::string_view candidate = embedded::kWorkloads[i].name;
    if (candidate.size() == name.size() &&
        std::equal(candidate.begin(), candidate.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return embedded::kWorkloads[i].text;
    }
  }
  return {};
}

Result<SizeDistribution> BuiltinWorkload(std::string_view name) {
  std::string_view text = BuiltinWorkloadText(name);
  if (text.empty()) {
    return Status::Error(
        fmt::format("workload '{}' is not built in; use one of W1, W2, W3, W4, W5", name));
  }
  return SizeDistribution::ParseCdf(text, name);
}

}  // namespace qosvisor
