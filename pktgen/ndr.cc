// The NDR/PDR binary search. Starts at the top (a device that keeps up ends the search at once),
// checks the bottom, then halves the interval between the best pass and the worst fail.
#include "pktgen/ndr.h"

#include <fmt/format.h>

namespace qosvisor::pktgen {

Status ValidateNdr(const NdrOptions& o) {
  if (o.min_bps == 0 || o.min_bps >= o.max_bps) {
    return Status::Error(
        fmt::format("ndr: the rate range {}..{} bps is empty; give --min-rate below --max-rate",
                    o.min_bps, o.max_bps));
  }
  if (!(o.precision > 0) || o.precision >= 1) {
    return Status::Error(
        fmt::format("ndr: precision {} must be in (0, 1), e.g. --precision 1%", o.precision));
  }
  if (!(o.loss >= 0) || o.loss >= 1) {
    return Status::Error(fmt::format("ndr: loss {} must be in [0, 1), e.g. --loss 0.1%", o.loss));
  }
  return Status::Ok();
}

Result<NdrResult> SearchNdr(const NdrOptions& options,
                            const std::function<Result<NdrTrial>(uint64_t)>& trial,
                            const std::function<void(const NdrTrial&)>& on_trial) {
  if (Status s = ValidateNdr(options); !s.ok()) return s;
  NdrResult result;
  auto run = [&](uint64_t rate) -> Result<bool> {
    auto t = trial(rate);
    if (!t.ok()) return t.status();
    NdrTrial r = *t;
    r.rate_bps = rate;
    const uint64_t lost = r.sent > r.received ? r.sent - r.received : 0;
    r.loss = r.sent == 0 ? 1.0 : static_cast<double>(lost) / static_cast<double>(r.sent);
    r.pass = r.sent != 0 && r.loss <= options.loss;
    result.trials.push_back(r);
    if (on_trial) on_trial(r);
    return r.pass;
  };
  auto top = run(options.max_bps);
  if (!top.ok()) return top.status();
  if (*top) {
    result.found = true;
    result.rate_bps = options.max_bps;
    return result;
  }
  auto bottom = run(options.min_bps);
  if (!bottom.ok()) return bottom.status();
  if (!*bottom) return result;
  uint64_t lo = options.min_bps, hi = options.max_bps;
  while (static_cast<double>(hi - lo) > options.precision * static_cast<double>(hi)) {
    const uint64_t mid = lo + (hi - lo) / 2;
    auto pass = run(mid);
    if (!pass.ok()) return pass.status();
    (*pass ? lo : hi) = mid;
  }
  result.found = true;
  result.rate_bps = lo;
  return result;
}

}  // namespace qosvisor::pktgen
