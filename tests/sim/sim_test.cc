// QoS properties of the real scheduler in the simulator (deterministic, virtual time, not timed):
// srpt vs fifo slowdowns on W4, wfq shares, pacing accuracy and srpt aging against starvation.
#include "tests/sim/sim.h"

#include <catch2/catch.hpp>

namespace qosvisor::sim {
namespace {

constexpr uint64_t k10G = 10'000'000'000;

SimConfig OneClassConfig(sched::Policy policy) {
  SimConfig c;
  c.sched.name = "sim";
  c.sched.rate_bps = k10G;
  c.sched.buffer_bytes = 1ull << 30;
  c.sched.buffer_packets = 1u << 22;
  c.sched.max_messages = 1u << 16;
  c.sched.classes = {sched::ClassConfig{.name = "all", .policy = policy}};
  return c;
}

}  // namespace

TEST_CASE("srpt cuts the p99 slowdown of one-packet messages 5x vs fifo on W4 at 80% load",
          "[sim][srpt]") {
  auto w4 = BuiltinWorkload("W4");
  REQUIRE(w4.ok());
  double p99[2];
  sched::Policy policies[2] = {sched::Policy::kSrpt, sched::Policy::kFifo};
  for (int i = 0; i < 2; ++i) {
    SimConfig c = OneClassConfig(policies[i]);
    c.traffic = {ClassTraffic{.class_id = 0, .sizes = *w4}};
    c.load = 0.8;
    c.num_messages = 20'000;
    c.seed = 42;
    auto r = Run(c);
    REQUIRE(r.ok());
    CHECK(r->packets_dropped == 0);
    p99[i] = SlowdownPercentile(*r, k10G, 99, 0, c.mtu_payload);
    REQUIRE(p99[i] > 0);
  }
  CAPTURE(p99[0], p99[1]);
  CHECK(p99[0] * 5 <= p99[1]);
}

TEST_CASE("wfq 1:2:4 under saturation gives shares within 2% of 1/7, 2/7, 4/7", "[sim][wfq]") {
  bool tenants = GENERATE(true, false);  // the share between tenants, or between classes
  SimConfig c = OneClassConfig(sched::Policy::kFifo);
  c.sched.classes.clear();
  uint32_t weights[3] = {1, 2, 4};
  for (uint16_t k = 0; k < 3; ++k) {
    c.sched.classes.push_back(sched::ClassConfig{.policy = sched::Policy::kSrpt, .weight = 1});
    if (tenants) {
      c.sched.tenants.push_back(sched::TenantConfig{.weight = weights[k], .classes = {k}});
    } else {
      c.sched.classes[k].weight = weights[k];
    }
    // Sizes spread over 1..30 packets so shares cannot fall out of packet counts by accident.
    c.traffic.push_back(ClassTraffic{
        .class_id = k, .sizes = *SizeDistribution::Uniform(100, 44'000), .backlog_messages = 8});
  }
  c.saturate = true;
  c.duration_ns = 20'000'000;
  auto r = Run(c, 2'000'000, 20'000'000);
  REQUIRE(r.ok());
  const std::vector<uint64_t>& bytes = tenants ? r->tenant_bytes : r->class_bytes;
  double total = static_cast<double>(bytes[0] + bytes[1] + bytes[2]);
  for (int k = 0; k < 3; ++k) {
    double share = static_cast<double>(bytes[k]) / total;
    double expect = weights[k] / 7.0;
    CAPTURE(tenants, k, share, expect);
    CHECK(std::abs(share - expect) <= 0.02 * expect);
  }
  // Saturated: the link never idled in the window.
  CHECK(total * 8 / 0.018 >= 0.99 * k10G);
}

TEST_CASE("a 1 Gbps pacer sends within 0.5% of 1 Gb per simulated second", "[sim][pacer]") {
  SimConfig c = OneClassConfig(sched::Policy::kFifo);
  c.sched.pacing_bps = 1'000'000'000;
  c.traffic = {ClassTraffic{
      .class_id = 0, .sizes = *SizeDistribution::Uniform(64, 64'000), .backlog_messages = 16}};
  c.saturate = true;
  c.duration_ns = 1'200'000'000;
  auto r = Run(c, 100'000'000, 1'100'000'000);
  REQUIRE(r.ok());
  double bits = static_cast<double>(r->class_bytes[0]) * 8;
  CAPTURE(bits);
  CHECK(std::abs(bits - 1e9) <= 0.005 * 1e9);
}

TEST_CASE("srpt with aging completes a large message under a steady stream of small ones",
          "[sim][srpt][aging]") {
  uint64_t aging_ns = GENERATE(0ull, 10'000ull);
  SimConfig c = OneClassConfig(sched::Policy::kSrpt);
  c.sched.classes[0].srpt_aging_ns = aging_ns;
  const uint64_t stream_end = 30'000'000;
  c.scheduled = {SimConfig::Scheduled{0, 0, 1'000'000}};
  // 1000-byte messages (1040 wire bytes) every 832 ns: exactly the line rate.
  c.periodic = {SimConfig::Periodic{0, stream_end, 832, 0, 1'000}};
  auto r = Run(c);
  REQUIRE(r.ok());
  const MessageRecord& large = r->messages.front();
  REQUIRE(large.size == 1'000'000);
  REQUIRE(large.completion_ns != 0);
  CAPTURE(aging_ns, large.completion_ns);
  if (aging_ns == 0) {
    CHECK(large.completion_ns > stream_end);  // starved while the stream lasted
  } else {
    // ~9.8 ms of waiting outweighs 1 MB at 1 KiB per 10 us, then ~0.8 ms to send it.
    CHECK(large.completion_ns < 15'000'000);
  }
}

TEST_CASE("the simulation is deterministic for a seed, heap and ffs alike", "[sim]") {
  auto w3 = BuiltinWorkload("W3");
  REQUIRE(w3.ok());
  SimConfig c = OneClassConfig(sched::Policy::kSrpt);
  c.traffic = {ClassTraffic{.class_id = 0, .sizes = *w3}};
  c.num_messages = 2'000;
  c.seed = 9;
  auto a = Run(c);
  auto b = Run(c);
  c.use_heap = true;
  auto h = Run(c);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(h.ok());
  REQUIRE(a->messages.size() == 2'000);
  REQUIRE(b->messages.size() == 2'000);
  for (size_t i = 0; i < a->messages.size(); ++i) {
    REQUIRE(a->messages[i].completion_ns == b->messages[i].completion_ns);
    // Same key semantics: the heap orders exactly as the FFS queue does.
    REQUIRE(a->messages[i].completion_ns == h->messages[i].completion_ns);
  }
}

}  // namespace qosvisor::sim
