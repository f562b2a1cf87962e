// qosgen through its own code path: plans from flags and workload files (and their errors), ring
// loopback counts and rate accuracy, the NDR search against a rate-capped port, the emulated
// link's drain rate and tail drops, and the plots.
#include <fmt/format.h>
#include <rte_mbuf.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <deque>
#include <filesystem>
#include <fstream>

#include "app/qosgen_output.h"
#include "app/qosgen_run.h"
#include "common/tsc.h"
#include "config/workload.h"
#include "dataplane/mempool.h"
#include "pktgen/link_emulator.h"
#include "pktgen/ndr.h"
#include "pktgen/port_runner.h"
#include "tests/unit/test_eal.h"

namespace qosvisor {
namespace {

namespace fs = std::filesystem;

dataplane::Mempool& TestPool() {
  static std::unique_ptr<dataplane::Mempool> pool = [] {
    testing::TestEal();
    auto p = dataplane::Mempool::Create("qosgen_test", 8191);
    REQUIRE(p.ok());
    return std::move(p).value();
  }();
  return *pool;
}

fs::path TempDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / fmt::format("qosgen_test_{}_{}", getpid(), name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

app::GenFlags RingFlags() {
  app::GenFlags f;
  f.port = "ring";
  f.classes = {"fixed:udp:5000:fixed=1000:1:0:0"};
  f.arrival = "constant";
  f.rate = "100Mbps";
  f.load = "0.5";
  f.duration = "300ms";
  return f;
}

// Forwards what it is sent to its receive side, except that frames beyond `cap_bps` are dropped:
// a token bucket (two frames deep) run on the probes' scheduled message arrival times, so the
// verdict does not depend on how busy this machine is.
class RateCappedPort : public dataplane::Port {
 public:
  explicit RateCappedPort(uint64_t cap_bps)
      : Port("capped", dataplane::Driver::kRing), cap_bps_(cap_bps), hz_(TscHz()) {}
  ~RateCappedPort() override {
    for (rte_mbuf* m : queue_) rte_pktmbuf_free(m);
  }
  uint16_t Recv(PacketBatch& batch) override {
    uint16_t n = 0;
    while (!queue_.empty() && !batch.full()) {
      batch.Push(queue_.front());
      queue_.pop_front();
      ++n;
    }
    return n;
  }
  uint16_t Send(PacketBatch& batch) override {
    const uint16_t n = batch.count;
    for (uint16_t i = 0; i < n; ++i) {
      rte_mbuf* m = batch.pkts[i];
      pktgen::Probe p;
      const uint32_t len = rte_pktmbuf_data_len(m);
      if (!pktgen::ReadProbe(rte_pktmbuf_mtod(m, const uint8_t*), len, p)) {
        rte_pktmbuf_free(m);
        continue;
      }
      const double bits = (len + 24) * 8.0;
      // The schedule's clock (arrival time), not the wall clock: a busy machine that delays the
      // sender must not look like a rate above the cap.
      const uint64_t arrival = p.message_start_tsc - p.sender_wait;
      if (arrival >= last_tsc_) {
        tokens_ += static_cast<double>(arrival - last_tsc_) * static_cast<double>(cap_bps_) /
                   static_cast<double>(hz_);
        last_tsc_ = arrival;
      }
      tokens_ = std::min(tokens_, 2 * bits);
      if (tokens_ + 1e-6 >= bits) {
        tokens_ -= bits;
        queue_.push_back(m);
      } else {
        rte_pktmbuf_free(m);
      }
    }
    batch.count = 0;
    return n;
  }
  dataplane::PortCounters Counters() const override { return {}; }
  bool LinkUp() const override { return true; }
  void Reset() {
    tokens_ = 1e9;  // a new trial starts with a full bucket
    last_tsc_ = 0;
  }

 private:
  uint64_t cap_bps_;
  uint64_t hz_;
  double tokens_ = 1e9;
  uint64_t last_tsc_ = 0;
  std::deque<rte_mbuf*> queue_;
};

}  // namespace

TEST_CASE("qosgen ring loopback: exact counts, constant rate within 1% of the request",
          "[qosgen]") {
  auto plan = app::BuildPlan(RingFlags());
  REQUIRE(plan.ok());
  auto ports = app::OpenPlanPorts(*plan, TestPool());
  INFO(ports.message());
  REQUIRE(ports.ok());
  auto run = pktgen::RunOverPorts(plan->spec, ports->endpoints, plan->options);
  REQUIRE(run.ok());
  const auto& r = run->report;
  const auto& c = r["classes"][0];
  CHECK(c["sent_packets"].get<uint64_t>() == run->generated_packets);
  CHECK(c["received_packets"] == c["sent_packets"]);
  CHECK(c["lost_packets"] == 0);
  CHECK(c["duplicates"] == 0);
  CHECK(c["messages_incomplete"] == 0);
  CHECK(r["foreign_frames"] == 0);
  // Measured against the generator's own schedule (what arrived before the end, in wire bytes),
  // not wall time; and everything offered was sent.
  const double offered = r["offered_bps"].get<double>();
  INFO("offered " << offered);
  CHECK(offered == Approx(50e6).epsilon(0.01));
  CHECK(r["sent_bps"].get<double>() == Approx(offered).epsilon(1e-9));
  CHECK(c["rx_bytes_per_bin"].size() >= 3);  // 300 ms in 100 ms bins

  // Poisson and heavy-tailed sizes over two senders on the same loopback: counts still exact.
  app::GenFlags f = RingFlags();
  f.classes = {"a:homa:5000:W1:0.5:0:0", "b:tcp:6000:W2:0.5:1:1"};
  f.arrival = "poisson";
  auto plan2 = app::BuildPlan(f);
  REQUIRE(plan2.ok());
  CHECK(plan2->spec.senders == 2);
  pktgen::PortEndpoints two = ports->endpoints;
  two.senders.push_back(two.senders.front());
  auto run2 = pktgen::RunOverPorts(plan2->spec, two, plan2->options);
  INFO(run2.message());
  REQUIRE(run2.ok());
  uint64_t sent = 0, received = 0;
  for (const auto& k : run2->report["classes"]) {
    sent += k["sent_packets"].get<uint64_t>();
    received += k["received_packets"].get<uint64_t>();
    CHECK(k["duplicates"] == 0);
  }
  CHECK(sent == run2->generated_packets);
  CHECK(received == sent);
  CHECK(sent > 100);
}

TEST_CASE("constant and on/off arrivals follow their schedules in virtual time", "[qosgen]") {
  pktgen::WorkloadSpec spec;
  spec.bottleneck_bps = 100'000'000;
  spec.load = 0.5;
  pktgen::ClassWorkload c;
  c.name = "burst";
  c.sizes = SizeDistribution::Fixed(1000);
  c.arrival = pktgen::Arrival::kOnOff;
  c.on_ns = 1'000'000;
  c.off_ns = 3'000'000;
  spec.classes.push_back(c);
  const uint64_t hz = 1'000'000'000;  // one tick per ns keeps the arithmetic readable
  pktgen::Generator gen(spec, hz, 0);
  uint64_t in_off = 0, frames = 0;
  auto emit = [&](uint16_t, uint32_t, const pktgen::Probe& p, const pktgen::FrameAddress&,
                  pktgen::Framing) {
    // Arrival = first byte sent - the wait before it.
    if ((p.message_start_tsc - p.sender_wait) % 4'000'000 >= 1'000'000) ++in_off;
    ++frames;
    return true;
  };
  for (uint64_t t = 0; t < 2'000'000'000; t += 100'000) gen.PollUntil(t, 2'000'000'000, emit);
  CHECK(in_off == 0);
  // Mean offered rate stays the requested 50 Mbps (Poisson inside the bursts: a few % noise).
  const double rate = static_cast<double>(gen.bytes_offered()) * 8 / 2.0;
  CHECK(rate == Approx(50e6).epsilon(0.05));
  CHECK(frames == gen.packets_sent());

  spec.classes[0].arrival = pktgen::Arrival::kConstant;
  pktgen::Generator constant(spec, hz, 0);
  constant.PollUntil(5'000'000'000, 1'000'000'000, emit);  // a late poll still gets all of them
  CHECK(static_cast<double>(constant.bytes_offered()) * 8 == Approx(50e6).epsilon(0.001));
}

// W4 at 1 Gbps for 10 s: a few thousand messages per class, one of 10 MB is 2% of its bytes.
// Drawn plainly the schedule strays from the load; with exact_load it offers the load within a
// large message, and it is the same schedule however the polls fall.
TEST_CASE("exact load: heavy-tailed Poisson arrivals offer the load asked for, whatever the polls",
          "[qosgen]") {
  pktgen::WorkloadSpec spec;
  spec.bottleneck_bps = 1'000'000'000;
  spec.load = 0.9;
  for (int i = 0; i < 2; ++i) {
    pktgen::ClassWorkload c;
    c.name = fmt::format("w4_{}", i);
    c.sizes = BuiltinWorkload("W4").value();
    c.share = 0.5;
    spec.classes.push_back(c);
  }
  const uint64_t hz = 1'000'000'000;
  const uint64_t window = 10'000'000'000;
  auto offered = [&](const pktgen::WorkloadSpec& s, uint64_t poll_step) {
    pktgen::Generator gen(s, hz, 0);
    auto emit = [](uint16_t, uint32_t, const pktgen::Probe&, const pktgen::FrameAddress&,
                   pktgen::Framing) { return true; };
    for (uint64_t t = 0; t <= window; t += poll_step) gen.PollUntil(t, window, emit);
    return static_cast<double>(gen.bytes_offered()) * 8 / 10.0;
  };
  const double plain = offered(spec, 100'000);
  spec.exact_load_ns = window;
  const double exact = offered(spec, 100'000);
  INFO("plain " << plain << " exact " << exact);
  CHECK(exact == Approx(900e6).epsilon(0.02));
  CHECK(std::abs(plain - 900e6) > std::abs(exact - 900e6));
  // Each class draws from its own stream: polls a hundred times coarser, the same schedule.
  CHECK(offered(spec, 10'000'000) == exact);
}

// A generator far behind its schedule (its process preempted) must not emit the whole backlog in
// one poll: its caller polls the receive side between polls, and frames coming back would wait.
TEST_CASE("a sender behind its schedule catches up a bounded number of frames per poll",
          "[qosgen]") {
  pktgen::WorkloadSpec spec;
  spec.bottleneck_bps = 1'000'000'000;
  spec.sender_bps = 1'000'000'000;
  spec.load = 0.5;
  spec.senders = 2;
  for (uint16_t sender = 0; sender < 2; ++sender) {
    pktgen::ClassWorkload c;
    c.name = fmt::format("fixed{}", sender);
    c.sizes = SizeDistribution::Fixed(1000);
    c.arrival = pktgen::Arrival::kConstant;
    c.share = 0.5;
    c.sender = sender;
    spec.classes.push_back(c);
  }
  const uint64_t hz = 1'000'000'000;
  pktgen::Generator gen(spec, hz, 0);
  std::vector<uint64_t> per_sender(spec.senders);
  auto emit = [&](uint16_t sender, uint32_t, const pktgen::Probe&, const pktgen::FrameAddress&,
                  pktgen::Framing) {
    ++per_sender[sender];
    return true;
  };
  // 50 ms late: about 2,900 messages of one frame are due, half on each sender.
  const uint64_t now = 50'000'000;
  int polls = 0;
  uint64_t last = 0;
  for (;;) {
    std::fill(per_sender.begin(), per_sender.end(), 0);
    const bool behind = gen.PollUntil(now, now, emit);
    ++polls;
    for (uint64_t n : per_sender) CHECK(n <= 64);
    if (polls == 1) {
      CHECK(per_sender == std::vector<uint64_t>{64, 64});
      CHECK(behind);  // the caller polls again without sleeping
    }
    if (per_sender[0] < 64 && per_sender[1] < 64) CHECK(!behind);
    const uint64_t total = per_sender[0] + per_sender[1];
    if (total == 0 || polls > 1000) break;
    last = total;
  }
  CHECK(last > 0);
  CHECK(polls > 20);  // caught up over many polls...
  CHECK(polls < 1000);
  // ...and completely: every message that arrived left whole, as one unbounded poll would send.
  uint64_t whole = 0;
  for (const auto& buckets : gen.messages_sent())
    for (uint64_t n : buckets) whole += n;
  CHECK(gen.messages_generated() > 2'500);
  CHECK(whole == gen.messages_generated());
  CHECK(gen.idle());
}

TEST_CASE("VLAN and per-class destinations reach the frame", "[qosgen]") {
  pktgen::WorkloadSpec spec;
  pktgen::ClassWorkload c;
  c.name = "v";
  c.vlan = 42;
  c.dst_mac = std::array<uint8_t, 6>{2, 0, 0, 0, 0, 9};
  c.dst_ip = 0x0a000909;
  spec.classes.push_back(c);
  pktgen::Generator gen(spec, 1'000'000'000, 0);
  std::vector<uint8_t> frame;
  gen.PollUntil(10'000'000, 10'000'000,
                [&](uint16_t, uint32_t len, const pktgen::Probe& p, const pktgen::FrameAddress& a,
                    pktgen::Framing f) {
                  if (!frame.empty()) return true;
                  frame.resize(len);
                  pktgen::WriteFrame(frame.data(), f, a, p);
                  return true;
                });
  REQUIRE(frame.size() > 18);
  CHECK(frame[0] == 2);
  CHECK(frame[5] == 9);
  CHECK(frame[12] == 0x81);
  CHECK(frame[13] == 0x00);
  CHECK(((frame[14] & 0x0f) << 8 | frame[15]) == 42);
  CHECK(frame[18 + 16] == 10);  // IPv4 destination 10.0.9.9
  CHECK(frame[18 + 19] == 9);
}

TEST_CASE("NDR search converges on the rate a port starts dropping at", "[qosgen]") {
  // Pure search first: a device that drops above 437 Mbps.
  const uint64_t cap = 437'000'000;
  pktgen::NdrOptions o;
  o.min_bps = 10'000'000;
  o.max_bps = 1'000'000'000;
  o.precision = 0.01;
  auto pure = pktgen::SearchNdr(o, [&](uint64_t rate) -> Result<pktgen::NdrTrial> {
    pktgen::NdrTrial t;
    t.sent = 100'000;
    t.received = rate <= cap ? t.sent : t.sent * cap / rate;
    return t;
  });
  REQUIRE(pure.ok());
  REQUIRE(pure->found);
  CHECK(pure->rate_bps <= cap);
  CHECK(static_cast<double>(pure->rate_bps) >= static_cast<double>(cap) * 0.98);
  CHECK(pure->trials.size() < 12);

  // Then real trials through qosgen's runner into a port capped at 40 Mbps.
  app::GenFlags f = RingFlags();
  f.duration = "100ms";
  auto plan = app::BuildPlan(f);
  REQUIRE(plan.ok());
  TestPool();
  RateCappedPort port(40'000'000);
  pktgen::PortEndpoints ends;
  ends.senders = {&port};
  ends.receiver = &port;
  ends.pool = TestPool().get();
  pktgen::NdrOptions live;
  live.min_bps = 1'000'000;
  live.max_bps = 100'000'000;
  live.precision = 0.01;
  std::vector<std::string> lines;
  auto result = pktgen::SearchNdr(
      live,
      [&](uint64_t rate) {
        port.Reset();
        return app::RunNdrTrial(*plan, ends, rate, 100'000'000);
      },
      [&](const pktgen::NdrTrial& t) { lines.push_back(app::FormatNdrTrial(t, lines.size())); });
  REQUIRE(result.ok());
  for (const std::string& l : lines) UNSCOPED_INFO(l);
  REQUIRE(result->found);
  // Within the search's precision of the cap (a finite trial lets a hair above it through).
  CHECK(result->rate_bps <= 40'400'000);
  CHECK(result->rate_bps >= 39'200'000);
  CHECK(result->trials.front().pass == false);  // 100 Mbps is over the cap
  CHECK_THAT(app::FormatNdrResult(*result, 0), Catch::Contains("NDR"));

  CHECK_THAT(pktgen::ValidateNdr({.min_bps = 5, .max_bps = 5}).message(),
             Catch::Contains("is empty"));
}

TEST_CASE("the emulated link drains at its rate and tail-drops when full", "[qosgen]") {
  const uint64_t hz = 1'000'000'000;
  // 1 Gbps: a 1000-byte frame (1024 on the wire) takes 8192 ns.
  pktgen::LinkEmulator link(1'000'000'000, 10'000, hz);
  pktgen::Probe p{};
  p.magic = pktgen::kProbeMagic;
  int queued = 0;
  for (int i = 0; i < 20; ++i) queued += link.Offer(p, 1000, 0) ? 1 : 0;
  CHECK(queued == 10);
  CHECK(link.dropped_frames() == 10);
  CHECK(link.queued_bytes() == 10'000);
  std::vector<uint64_t> departures;
  auto out = [&](const pktgen::Probe&, uint32_t, uint64_t at) { departures.push_back(at); };
  link.Drain(8191, out);
  CHECK(departures.empty());
  link.Drain(8192 * 5, out);
  REQUIRE(departures.size() == 5);
  for (size_t i = 0; i < departures.size(); ++i) CHECK(departures[i] == 8192 * (i + 1));
  // Room for five again; the link stays busy, so new frames queue behind the rest.
  for (int i = 0; i < 6; ++i) queued += link.Offer(p, 1000, 8192 * 5) ? 1 : 0;
  CHECK(queued == 15);
  CHECK(link.dropped_frames() == 11);
  link.Flush(out);
  REQUIRE(departures.size() == 15);
  CHECK(departures.back() == 8192 * 15);
  // Over a long run the drain rate is exact (no per-frame rounding drift).
  pktgen::LinkEmulator slow(3'000'000, 1 << 20, 2'600'000'000);
  for (int i = 0; i < 1000; ++i) REQUIRE(slow.Offer(p, 100, 0));
  uint64_t last = 0;
  slow.Flush([&](const pktgen::Probe&, uint32_t, uint64_t at) { last = at; });
  const double seconds = static_cast<double>(last) / 2.6e9;
  CHECK(1000 * 124 * 8 / seconds == Approx(3e6).epsilon(1e-6));

  // Through the runner: 50 Mbps offered into a 20 Mbps link loses the excess at the link.
  app::GenFlags f = RingFlags();
  f.link_rate = "20Mbps";
  f.link_buffer = "64KiB";
  auto plan = app::BuildPlan(f);
  REQUIRE(plan.ok());
  auto ports = app::OpenPlanPorts(*plan, TestPool());
  REQUIRE(ports.ok());
  auto run = pktgen::RunOverPorts(plan->spec, ports->endpoints, plan->options);
  REQUIRE(run.ok());
  const auto& r = run->report;
  REQUIRE(r.contains("link"));
  CHECK(r["link"]["dropped_frames"].get<uint64_t>() > 0);
  CHECK(r["link"]["max_queued_bytes"].get<uint64_t>() <= 65536);
  const auto& c = r["classes"][0];
  CHECK(c["sent_packets"].get<uint64_t>() ==
        c["received_packets"].get<uint64_t>() + r["link"]["dropped_frames"].get<uint64_t>());
}

// Multi-packet messages into an emulated link too slow and too shallow for them: open-loop
// senders lose packets and those messages are counted incomplete by size; window and homa senders
// resend what is missing and complete every message.
TEST_CASE(
    "closed-loop transports complete every message through a lossy bottleneck, open loop "
    "counts the incomplete ones",
    "[qosgen]") {
  auto run_with = [](const std::string& transport) {
    app::GenFlags f = RingFlags();
    f.classes = {"bulk:homa:5000:fixed=20000:1:0:0"};
    f.rate = "20Mbps";
    f.load = "0.9";
    f.sender_rate = "1Gbps";
    f.arrival = "poisson";
    f.link_rate = "20Mbps";
    f.link_buffer = "16KiB";
    f.duration = "400ms";
    f.drain = "3s";
    f.transport = transport;
    if (transport == "window") f.window = "8KiB";
    if (transport != "open") f.rto = "3ms";
    auto plan = app::BuildPlan(f);
    INFO(plan.message());
    REQUIRE(plan.ok());
    auto ports = app::OpenPlanPorts(*plan, TestPool());
    REQUIRE(ports.ok());
    auto run = pktgen::RunOverPorts(plan->spec, ports->endpoints, plan->options);
    INFO(run.message());
    REQUIRE(run.ok());
    return run->report;
  };
  const auto open = run_with("open");
  const auto& oc = open["classes"][0];
  CHECK(open["link"]["dropped_frames"].get<uint64_t>() > 0);
  CHECK(oc["messages_incomplete"].get<uint64_t>() > 0);
  CHECK(oc["slowdown"]["<=100KB"]["incomplete"] == oc["messages_incomplete"]);
  CHECK(open["transport"]["retransmitted_packets"] == 0);
  for (const char* transport : {"window", "homa"}) {
    INFO(transport);
    const auto r = run_with(transport);
    const auto& c = r["classes"][0];
    CHECK(r["transport"]["kind"] == transport);
    CHECK(c["messages_incomplete"] == 0);
    CHECK(c["messages_completed"].get<uint64_t>() == r["generated_messages"].get<uint64_t>());
    CHECK(r["unsent_at_end"] == false);
    // Frames the link dropped came again; never was a message counted twice.
    if (r["link"]["dropped_frames"].get<uint64_t>() > 0) {
      CHECK(r["transport"]["retransmitted_packets"].get<uint64_t>() > 0);
    }
    CHECK(c["slowdown"]["<=100KB"]["count"] == c["messages_completed"]);
  }
}

TEST_CASE("workload files map to the generator's spec", "[qosgen]") {
  const fs::path dir = TempDir("wl");
  std::ofstream(dir / "sizes.cdf") << "100 0.5\n2000 1\n";
  const std::string yaml = R"(rate: 2Gbps
load: 0.5
duration: 250ms
dst_mac: "02:00:00:00:00:aa"
tenants: [gold, silver]
classes:
  - name: rpc
    tenant: silver
    framing: homa
    dst_port: 7000
    sizes: W1
    share: 0.25
    arrival: {on: 1ms, off: 3ms}
    vlan: 12
  - name: bulk
    sizes: {cdf: sizes.cdf}
    share: 0.5
    arrival: constant
    sender: 1
  - name: fix
    sizes: {uniform: [64B, 2KB]}
    share: 0.25
)";
  std::ofstream(dir / "w.yaml") << yaml;
  app::GenFlags f;
  f.port = "ring";
  f.workload = (dir / "w.yaml").string();
  auto plan = app::BuildPlan(f);
  INFO(plan.message());
  REQUIRE(plan.ok());
  const pktgen::WorkloadSpec& s = plan->spec;
  CHECK(s.bottleneck_bps == 2'000'000'000);
  CHECK(s.load == 0.5);
  CHECK(s.senders == 2);
  CHECK(s.receiver_mac[5] == 0xaa);
  CHECK(plan->options.duration_ns == 250'000'000);
  REQUIRE(s.classes.size() == 3);
  CHECK(s.classes[0].tenant == 1);
  CHECK(s.classes[0].framing == pktgen::Framing::kHoma);
  CHECK(s.classes[0].arrival == pktgen::Arrival::kOnOff);
  CHECK(s.classes[0].on_ns == 1'000'000);
  CHECK(s.classes[0].vlan == 12);
  CHECK(s.classes[1].sizes.Max() == 2000);
  CHECK(s.classes[1].arrival == pktgen::Arrival::kConstant);
  CHECK(s.classes[2].sizes.Min() == 64);
  fs::remove_all(dir);
}

TEST_CASE("bad workload files get file:line:col and what would be right", "[qosgen]") {
  auto errors = [](const std::string& yaml) {
    return config::LoadWorkloadFromString(yaml, "w.yaml").ErrorText();
  };
  CHECK_THAT(errors("rate: 10Gbs\nclasses:\n  - {name: a, sizes: W1}\n"),
             Catch::Contains("w.yaml:1:7: rate:") && Catch::Contains("10Gbps"));
  CHECK_THAT(errors("classes:\n  - name: a\n    sizes: W1\n    shrae: 1\n"),
             Catch::Contains("w.yaml:4:5: classes[0].shrae: unknown key; did you mean 'share'?"));
  CHECK_THAT(errors("classes:\n  - name: a\n    sizes: W9\n"),
             Catch::Contains("w.yaml:3:12: classes[0].sizes: 'W9' is not a built-in workload"));
  CHECK_THAT(errors("classes:\n  - {name: a, sizes: W1, share: 0.5}\n"),
             Catch::Contains("shares add up to 0.5, not 1"));
  CHECK_THAT(errors("tenants: [gold]\nclasses:\n  - {name: a, sizes: W1, tenant: glod}\n"),
             Catch::Contains("unknown tenant 'glod' (did you mean 'gold'?)"));
  CHECK_THAT(errors("classes:\n  - {name: a, sizes: W1, arrival: {on: 1ms}}\n"),
             Catch::Contains("on/off arrivals need 'off'"));
  CHECK_THAT(errors("classes:\n  - {name: a, sizes: {cdf: /nonexistent.cdf}}\n"),
             Catch::Contains("w.yaml:2:28: classes[0].sizes.cdf: cannot read '/nonexistent.cdf'"));
  CHECK_THAT(errors("classes: [\n"), Catch::Contains("w.yaml:2:1:"));
  CHECK_THAT(errors("load: 0.9\n"), Catch::Contains("classes: expected a list of at least one"));
  // Several problems come out together.
  const auto many = config::LoadWorkloadFromString(
      "mss: 9\nvlan: 3\nclasses:\n  - {name: a, sizes: W1, dst_port: 0}\n", "w.yaml");
  CHECK(many.errors.size() == 3);
  CHECK_FALSE(config::LoadWorkloadFromFile("/nonexistent/w.yaml").ok());
}

TEST_CASE("bad flags name the flag and what would be right", "[qosgen]") {
  auto message = [](app::GenFlags f) { return app::BuildPlan(f).message(); };
  app::GenFlags f = RingFlags();
  f.rate = "10Gbs";
  CHECK_THAT(message(f), Catch::Contains("--rate '10Gbs'"));
  f = RingFlags();
  f.port = "quic:x=1";
  CHECK_THAT(message(f), Catch::Contains("--port 'quic:x=1': unknown driver 'quic'"));
  f.port = "memif:role=client";
  CHECK_THAT(message(f), Catch::Contains("driver memif needs socket="));
  f.port = "af_packet:iface=veth0,speed=1";
  CHECK_THAT(message(f), Catch::Contains("has no argument 'speed'"));
  f = RingFlags();
  f.port = "memif:socket=/run/qv/v.sock,role=client";
  f.rx_port = "memif:socket=/run/qv/v.sock,role=client";
  CHECK_THAT(message(f), Catch::Contains("--rx-port: memif socket '/run/qv/v.sock' is --port's"));
  f = RingFlags();
  f.arrival = "onoff=1ms";
  CHECK_THAT(message(f), Catch::Contains("--arrival 'onoff=1ms': use poisson, constant or onoff"));
  f = RingFlags();
  f.load = "2x";
  f.link_buffer = "1MiB";
  const std::string both = message(f);
  CHECK_THAT(both, Catch::Contains("--load '2x'") && Catch::Contains("--link-buffer needs"));
  f = RingFlags();
  f.classes.clear();
  CHECK_THAT(message(f), Catch::Contains("no workload"));
  f = RingFlags();
  f.workload = "x.yaml";
  CHECK_THAT(message(f), Catch::Contains("either --workload FILE or --class"));
  f = RingFlags();
  f.transport = "tcp";
  CHECK_THAT(message(f), Catch::Contains("--transport 'tcp': use open, window or homa"));
  f.transport = "open";
  f.window = "8KiB";
  CHECK_THAT(message(f), Catch::Contains("need --transport window or homa"));
  f.transport = "homa";
  f.window.clear();
  f.overcommit = "0";
  CHECK_THAT(message(f), Catch::Contains("--overcommit '0'"));
  f.overcommit = "4";
  f.rtt_bytes = "100B";
  CHECK_THAT(message(f), Catch::Contains("homa needs rtt_bytes >= one packet"));
  f = RingFlags();
  f.poll = "nap";
  CHECK_THAT(message(f), Catch::Contains("--poll 'nap': use busy or sleep=DURATION"));
  f.poll = "sleep=0s";
  CHECK_THAT(message(f), Catch::Contains("--poll 'sleep=0s'"));
  f = RingFlags();
  f.realtime = true;
  CHECK_THAT(message(f), Catch::Contains("--realtime needs --poll sleep=DURATION"));
  f.poll = "sleep=20us";
  REQUIRE(app::BuildPlan(f).ok());
  CHECK(app::BuildPlan(f)->options.poll_sleep_ns == 20'000);
  f = RingFlags();
  f.rx_port = "pcap:rx_iface=veth1,snaplen=9";
  CHECK_THAT(message(f), Catch::Contains("has no argument 'snaplen'"));
  f.rx_port = "pcap:rx_iface=veth1";
  CHECK(app::BuildPlan(f).ok());
  CHECK_THAT(app::ParseFraction("1%", "--loss").value(), Catch::WithinAbs(0.01, 1e-12));
  CHECK_THAT(app::ParseFraction("abc", "--loss").message(), Catch::Contains("--loss 'abc'"));
}

TEST_CASE("plots, CSV and the comparison come out of a run's report", "[qosgen]") {
  app::GenFlags f = RingFlags();
  f.classes = {"small:udp:5000:W1:0.5:0:0", "big:tcp:6000:W3:0.5:1:0"};
  f.arrival = "poisson";
  auto plan = app::BuildPlan(f);
  REQUIRE(plan.ok());
  auto ports = app::OpenPlanPorts(*plan, TestPool());
  REQUIRE(ports.ok());
  auto run = pktgen::RunOverPorts(plan->spec, ports->endpoints, plan->options);
  REQUIRE(run.ok());
  const fs::path dir = TempDir("out");
  REQUIRE(app::WriteCsv(dir.string(), run->report).ok());
  CHECK(fs::file_size(dir / "latency_ns.csv") > 40);
  CHECK(fs::file_size(dir / "throughput.csv") > 20);
  const std::string compare = app::FormatCompare({run->report, run->report}, {"one", "two"});
  CHECK_THAT(compare,
             Catch::Contains("one") && Catch::Contains("two") && Catch::Contains("1pkt p50/p99"));
  REQUIRE(app::WriteJsonFile((dir / "run.json").string(), {{"report", run->report}}).ok());
  auto back = app::ReadJsonFile((dir / "run.json").string());
  REQUIRE(back.ok());
  CHECK(app::ReportOf(*back)["classes"].size() == 2);
  // Plots are part of what qosgen promises; scripts/setup installs gnuplot-nox.
  INFO("gnuplot is not installed: run scripts/setup (or apt-get install gnuplot-nox)");
  REQUIRE(app::GnuplotAvailable());
  REQUIRE(app::WritePlots(dir.string(), run->report, "test").ok());
  REQUIRE(app::WriteComparePlot(dir.string(), {*back, *back}, {"a", "b"}).ok());
  for (const char* name : {"slowdown", "latency_cdf", "throughput", "compare"}) {
    for (const char* ext : {".png", ".svg"}) {
      const fs::path p = dir / (std::string(name) + ext);
      INFO(p);
      REQUIRE(fs::exists(p));
      CHECK(fs::file_size(p) > 1000);
    }
  }
  std::ifstream png(dir / "slowdown.png", std::ios::binary);
  char magic[4] = {};
  png.read(magic, 4);
  CHECK(std::string(magic + 1, 3) == "PNG");
  fs::remove_all(dir);
}

}  // namespace qosvisor

namespace qosvisor {
namespace {

struct Exec {
  int status = -1;
  std::string output;  // stdout and stderr
};

Exec RunQosgen(const std::string& args) {
  Exec e;
  FILE* p = popen((std::string(QOSGEN_BINARY) + " " + args + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) e.output.append(buf, n);
  const int rc = pclose(p);
  e.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return e;
}

}  // namespace

TEST_CASE("the qosgen binary: usage errors exit 2, a ring run writes its report", "[qosgen]") {
  Exec bad = RunQosgen("run --port ring --class x:udp:1:W1:1:0:0 --rate 10Gbs");
  CHECK(bad.status == 2);
  CHECK_THAT(bad.output, Catch::Contains("--rate '10Gbs'") && Catch::Contains("10Gbps"));
  const fs::path dir = TempDir("bin");
  std::ofstream(dir / "bad.yaml") << "classes:\n  - name: a\n    sizes: W1\n    shrae: 1\n";
  Exec file = RunQosgen("run --port ring --workload " + (dir / "bad.yaml").string());
  CHECK(file.status == 2);
  CHECK_THAT(file.output, Catch::Contains("bad.yaml:4:5: classes[0].shrae: unknown key"));
  CHECK(RunQosgen("ndr --port ring --class x:udp:1:W1:1:0:0 --precision 2").status == 2);
  CHECK(RunQosgen("compare " + (dir / "missing.json").string()).status == 2);

  Exec run = RunQosgen(
      "run --port ring --class x:udp:5000:fixed=1000:1:0:0 --arrival constant "
      "--rate 100Mbps --load 0.5 --duration 300ms --json " +
      (dir / "run.json").string());
  INFO(run.output);
  REQUIRE(run.status == 0);
  CHECK_THAT(run.output, Catch::Contains("offered") && Catch::Contains("received"));
  auto doc = app::ReadJsonFile((dir / "run.json").string());
  REQUIRE(doc.ok());
  const auto& c = app::ReportOf(*doc)["classes"][0];
  CHECK(c["received_packets"] == c["sent_packets"]);
  CHECK(c["sent_packets"].get<uint64_t>() > 1000);
  CHECK(app::ReportOf(*doc)["offered_bps"].get<double>() == Approx(50e6).epsilon(0.01));
  Exec cmp = RunQosgen("compare " + (dir / "run.json").string() + " " +
                       (dir / "run.json").string() + " --name one --name two");
  CHECK(cmp.status == 0);
  CHECK_THAT(cmp.output, Catch::Contains("two"));
  fs::remove_all(dir);
}

}  // namespace qosvisor

namespace qosvisor {

TEST_CASE("the documented example workload loads", "[qosgen]") {
  auto loaded =
      config::LoadWorkloadFromFile(QOSVISOR_SOURCE_DIR "/tests/unit/pktgen/workload_example.yaml");
  INFO(loaded.ErrorText());
  REQUIRE(loaded.ok());
  const pktgen::WorkloadSpec spec = app::SpecFromWorkload(*loaded.workload);
  CHECK(pktgen::ValidateWorkload(spec).ok());
  REQUIRE(spec.classes.size() == 3);
  CHECK(spec.classes[2].tenant == 2);
  CHECK(spec.classes[2].dst_ip == 0x0a010002);
  CHECK(spec.classes[1].vlan == 20);
}

}  // namespace qosvisor

namespace qosvisor {

TEST_CASE("the analyser bins received bytes per class in 100 ms", "[qosgen]") {
  pktgen::WorkloadSpec spec;
  pktgen::ClassWorkload c;
  c.name = "a";
  spec.classes.push_back(c);
  const uint64_t hz = 1'000'000'000;
  for (uint64_t start : {uint64_t{1'000}, uint64_t{0}}) {
    pktgen::Analyser a(spec, hz, start);
    pktgen::Probe p{};
    p.magic = pktgen::kProbeMagic;
    p.message_length = 100;
    p.chunk = 100;
    for (uint64_t t : {50'000'000, 60'000'000, 150'000'000, 350'000'000}) {
      a.ReceiveProbe(p, 200, start + t);
      ++p.seq;
      ++p.message_id;
    }
    const auto& bins = a.classes()[0].bytes_per_bin;
    INFO("start " << start);
    // With no time zero given, the first frame (at 50 ms) starts the bins; here both ways put
    // 50 and 60 ms in bin 0, 150 ms in bin 1 and 350 ms in bin 3 (224 wire bytes per frame).
    CHECK(bins == std::vector<uint64_t>{448, 224, 0, 224});
    CHECK(a.received_bytes() == 4 * 224);
  }
}

}  // namespace qosvisor
