// qosvisor-sim: runs one uplink of the real scheduler against a virtual clock and prints, as JSON
// lines, slowdown percentiles by message-size bucket (Homa-style figures) for a policy and load.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "common/units.h"
#include "tests/sim/sim.h"

using namespace qosvisor;

int main(int argc, char** argv) {
  CLI::App app{"qosvisor-sim: the scheduler on a simulated uplink"};
  std::string workload = "W4", policy = "srpt", rate = "10Gbps", queue = "ffs";
  double load = 0.8;
  uint64_t messages = 20'000, seed = 1;
  app.add_option("--workload", workload, "W1..W5, or fixed:<bytes>")->capture_default_str();
  app.add_option("--policy", policy, "fifo, srpt, las, wfq, edf")->capture_default_str();
  app.add_option("--load", load, "offered load, fraction of the line rate")->capture_default_str();
  app.add_option("--rate", rate, "line rate")->capture_default_str();
  app.add_option("--messages", messages, "messages to simulate")->capture_default_str();
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  app.add_option("--queue", queue, "ffs or heap")->capture_default_str();
  std::string buffer = "2GiB";
  uint32_t mss = 1460, header = 40;
  app.add_option("--buffer", buffer, "the uplink's buffer (drop worst beyond it)")
      ->capture_default_str();
  app.add_option("--mss", mss, "message payload bytes per packet")
      ->capture_default_str()
      ->check(CLI::Range(64, 9000));
  app.add_option("--header", header, "wire bytes per packet beyond its payload")
      ->capture_default_str()
      ->check(CLI::Range(0, 200));
  CLI11_PARSE(app, argc, argv);

  sim::SimConfig c;
  auto r = ParseRate(rate);
  if (!r.ok()) {
    std::fprintf(stderr, "--rate: %s\n", r.message().c_str());
    return 2;
  }
  c.sched.name = "sim";
  c.sched.rate_bps = *r;
  auto buf = ParseSize(buffer);
  if (!buf.ok()) {
    std::fprintf(stderr, "--buffer: %s\n", buf.message().c_str());
    return 2;
  }
  c.sched.buffer_bytes = *buf;
  c.mtu_payload = mss;
  c.header_bytes = header;
  c.sched.buffer_packets = 1u << 23;
  c.sched.max_messages = 1u << 20;
  sched::ClassConfig k;
  const sched::Policy all[] = {sched::Policy::kFifo, sched::Policy::kSrpt, sched::Policy::kLas,
                               sched::Policy::kWfq, sched::Policy::kEdf};
  bool found = false;
  for (sched::Policy p : all) {
    if (policy == sched::PolicyName(p)) {
      k.policy = p;
      found = true;
    }
  }
  if (!found) {
    std::fprintf(stderr, "--policy: '%s' is not one of fifo, srpt, las, wfq, edf\n",
                 policy.c_str());
    return 2;
  }
  k.deadline_ns = 1'000'000;
  c.sched.classes = {k};
  Result<SizeDistribution> sizes =
      workload.rfind("fixed:", 0) == 0
          ? Result<SizeDistribution>(SizeDistribution::Fixed(std::stoull(workload.substr(6))))
          : BuiltinWorkload(workload);
  if (!sizes.ok()) {
    std::fprintf(stderr, "--workload: %s\n", sizes.message().c_str());
    return 2;
  }
  c.traffic = {sim::ClassTraffic{.class_id = 0, .sizes = *sizes}};
  c.load = load;
  c.num_messages = messages;
  c.seed = seed;
  c.use_heap = queue == "heap";
  auto res = sim::Run(c);
  if (!res.ok()) {
    std::fprintf(stderr, "%s\n", res.message().c_str());
    return 1;
  }
  const uint64_t buckets[] = {c.mtu_payload, 10'000, 100'000, 1'000'000, UINT64_MAX};
  uint64_t lo = 0;
  for (uint64_t hi : buckets) {
    size_t n = 0;
    for (const auto& m : res->messages) n += m.completion_ns != 0 && m.size >= lo && m.size <= hi;
    nlohmann::json j = {{"sim", "slowdown"},
                        {"workload", workload},
                        {"policy", policy},
                        {"load", load},
                        {"size_min", lo},
                        {"size_max", hi},
                        {"messages", n},
                        {"p50", sim::SlowdownPercentile(*res, c.sched.rate_bps, 50, lo, hi)},
                        {"p99", sim::SlowdownPercentile(*res, c.sched.rate_bps, 99, lo, hi)}};
    std::printf("%s\n", j.dump().c_str());
    lo = hi + 1;
  }
  nlohmann::json total = {{"sim", "summary"},
                          {"messages", res->messages.size()},
                          {"packets_sent", res->packets_sent},
                          {"packets_dropped", res->packets_dropped},
                          {"simulated_ns", res->end_ns}};
  std::printf("%s\n", total.dump().c_str());
  return 0;
}
