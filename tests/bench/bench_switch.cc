// bench_switch: qosvisor's port-to-port forwarding rate on one core, on DPDK null/ring ports:
// (a) plain L2, (b) with 1,000 flow rules, (c) every packet through an SRPT-scheduled uplink with
// 10,000 active messages. JSON lines; scripts/bench-switch runs OVS-DPDK on the same ports.
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/tsc.h"
#include "dataplane/eal.h"
#include "dataplane/mempool.h"
#include "dataplane/port.h"
#include "pktgen/gen_port.h"
#include "vswitch/packet_parser.h"
#include "vswitch/switch.h"

namespace {

using namespace qosvisor;

// The best window's rate, and the median window's alongside.
struct Figure {
  double mpps;
  double cycles_per_packet;
  double median_mpps = 0;
  double median_cycles_per_packet = 0;
};

// With --rx-pcap, inputs replay that file in a loop (net_pcap infinite_rx: real frames, the
// same port scripts/bench-switch gives OVS-DPDK); otherwise net_null inputs.
std::string g_rx_pcap;
std::string g_sched_pcap;  // Homa DATA frames of many messages, for the scheduled case

// A benchmark cannot go on without its ports and switch: say why and stop.
template <typename T>
T OrExit(Result<T> r) {
  if (!r.ok()) {
    std::fprintf(stderr, "%s\n", r.message().c_str());
    std::exit(1);
  }
  return std::move(r).value();
}

// Runs `body` in a loop on the EAL's second lcore (its own CPU and mempool cache) until
// destroyed.
class SecondLcoreLoop {
 public:
  explicit SecondLcoreLoop(std::function<void()> body) : body_(std::move(body)) {
    lcore_ = rte_get_next_lcore(rte_get_main_lcore(), 1, 0);
    if (lcore_ >= RTE_MAX_LCORE || rte_eal_remote_launch(&Run, this, lcore_) != 0) {
      std::fprintf(stderr, "bench_switch: no second lcore to run on\n");
      std::exit(1);
    }
  }
  ~SecondLcoreLoop() {
    stop_ = true;
    rte_eal_wait_lcore(lcore_);
  }

 private:
  static int Run(void* arg) {
    auto* self = static_cast<SecondLcoreLoop*>(arg);
    while (!self->stop_.load(std::memory_order_relaxed)) self->body_();
    return 0;
  }
  std::function<void()> body_;
  std::atomic<bool> stop_{false};
  unsigned lcore_ = 0;
};

// Null ports: the input generates 64-byte frames (or replays `rx_pcap`), the output is a sink
// that receives nothing (so only one direction is switched, as in the OVS-DPDK setup of
// scripts/bench-switch).
std::unique_ptr<dataplane::Port> MakePort(const std::string& name, dataplane::Driver driver,
                                          dataplane::Mempool& pool, bool sink = false,
                                          const std::string& rx_pcap = g_rx_pcap) {
  dataplane::PortOptions o;
  o.name = name;
  o.driver = driver;
  if (driver == dataplane::Driver::kNull) o.args = {{"size", "64"}};
  if (sink) o.args["no_rx"] = "true";
  if (driver == dataplane::Driver::kNull && !sink && !rx_pcap.empty()) {
    o.driver = dataplane::Driver::kPcap;
    o.args = {{"rx_pcap", rx_pcap}, {"loop", "true"}};
  }
  return OrExit(dataplane::CreatePort(o, pool));
}

// Everything from the first port to the second; above the bridge's default NORMAL rule
// (priority 0), which would otherwise tie with it.
constexpr const char* kPortToPortRule = "priority=1,in_port=1,actions=output:2";

vswitch::BridgeSpec Bridge(std::vector<vswitch::FlowRule> flows) {
  vswitch::BridgeSpec b;
  b.name = "br0";
  b.members = {{0}, {1}};
  b.flows = std::move(flows);
  return b;
}

// Calls `work(now)` in a loop (it may also sleep) for `seconds`, counted in kWindows equal
// windows, and returns the best window's rate of `sent()`, with the median's: this shared box
// now and then slows a run for seconds, and only ever slows it, so the best window is the
// figure least disturbed (scripts/bench-switch takes OVS-DPDK's the same way).
constexpr int kWindows = 10;
template <typename Sent, typename Work>
Figure WindowedRate(double seconds, Sent&& sent, Work&& work) {
  const uint64_t hz = TscHz();
  const auto span = static_cast<uint64_t>(seconds / kWindows * static_cast<double>(hz));
  std::array<Figure, kWindows> windows;
  for (Figure& f : windows) {
    const uint64_t tx0 = sent();
    const uint64_t start = ReadTsc();
    uint64_t now = start;
    while (now - start < span) {
      work(now);
      now = ReadTsc();
    }
    const uint64_t packets = sent() - tx0;
    f = {static_cast<double>(packets) / (static_cast<double>(now - start) / hz) / 1e6,
         static_cast<double>(now - start) / static_cast<double>(std::max<uint64_t>(packets, 1))};
  }
  std::sort(windows.begin(), windows.end(),
            [](const Figure& a, const Figure& b) { return a.mpps < b.mpps; });
  Figure f = windows[kWindows - 1];
  f.median_mpps = (windows[kWindows / 2 - 1].mpps + windows[kWindows / 2].mpps) / 2;
  f.median_cycles_per_packet =
      (windows[kWindows / 2 - 1].cycles_per_packet + windows[kWindows / 2].cycles_per_packet) / 2;
  return f;
}

// Polls the switch for `seconds` and reports what left port `out`; `between` runs after each
// poll (the recycling of the scheduled case).
// With `worker` set, only that worker is polled here (another thread runs the rest), and the
// counters are read from the port without a snapshot.
template <typename Between>
Figure Measure(vswitch::Switch& sw, dataplane::Port& out, double seconds, Between&& between,
               int worker = -1) {
  const uint64_t hz = TscHz();
  auto poll = [&](uint64_t now) {
    if (worker < 0) {
      sw.Poll(now);
    } else {
      sw.Poll(static_cast<uint16_t>(worker), now);
    }
  };
  for (uint64_t end = ReadTsc() + hz / 5; ReadTsc() < end;) {  // warm up caches and tables
    poll(ReadTsc());
    between();
  }
  const Figure f = WindowedRate(
      seconds, [&] { return out.Counters().tx_packets; },
      [&](uint64_t now) {
        poll(now);
        between();
      });
  if (getenv("QV_BENCH_DEBUG") && worker < 0) {
    const auto snap = sw.TakeSnapshot(false).value();  // (no lcore runs: cannot time out)
    std::fprintf(stderr,
                 "rx=%lu malformed=%lu truncated=%lu flow_dropped=%lu tx_dropped=%lu "
                 "cache_hits=%lu cache_misses=%lu\n",
                 snap.counters.rx_packets, snap.counters.malformed, snap.counters.truncated,
                 snap.counters.flow_dropped, snap.counters.tx_dropped,
                 snap.counters.flow_cache_hits, snap.counters.flow_cache_misses);
  }
  return f;
}

void Print(const char* scenario, const Figure& f, const std::string& extra = "") {
  nlohmann::json j = {{"bench", "switch"},
                      {"impl", "qosvisor"},
                      {"case", scenario},
                      {"mpps", f.mpps},
                      {"cycles_per_packet", f.cycles_per_packet},
                      {"median_mpps", f.median_mpps},
                      {"median_cycles_per_packet", f.median_cycles_per_packet},
                      {"tsc_hz", TscHz()}};
  if (!extra.empty()) j["note"] = extra;
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// The floor every switch on these ports pays: receive a burst, send it on, look at nothing
// (testpmd's "io" forwarding).
Figure IoForward(dataplane::Mempool& pool, double seconds, const std::string& rx_pcap = g_rx_pcap) {
  auto in = MakePort("io_in", dataplane::Driver::kNull, pool, false, rx_pcap);
  auto out = MakePort("io_out", dataplane::Driver::kNull, pool, true);
  PacketBatch batch;
  return WindowedRate(
      seconds, [&] { return out->Counters().tx_packets; },
      [&](uint64_t) {
        in->Recv(batch);
        out->Send(batch);
        rte_pktmbuf_free_bulk(batch.pkts, batch.count);
        batch.count = 0;
      });
}

Figure PlainL2(dataplane::Mempool& pool, double seconds, const std::string& rx_pcap = g_rx_pcap) {
  auto in = MakePort("l2_in", dataplane::Driver::kNull, pool, false, rx_pcap);
  auto out = MakePort("l2_out", dataplane::Driver::kNull, pool, true);
  vswitch::SwitchSpec spec;
  spec.ports = {in.get(), out.get()};
  spec.bridges = {Bridge({})};
  auto sw = vswitch::Switch::Create(spec, pool.get());
  return Measure(**sw, *out, seconds, [] {});
}

// One rule sends everything from the first port to the second: no learning, no flooding.
Figure PortToPort(dataplane::Mempool& pool, double seconds) {
  auto in = MakePort("pp_in", dataplane::Driver::kNull, pool);
  auto out = MakePort("pp_out", dataplane::Driver::kNull, pool, true);
  vswitch::SwitchSpec spec;
  spec.ports = {in.get(), out.get()};
  spec.bridges = {Bridge({{kPortToPortRule, 0}})};
  auto sw = vswitch::Switch::Create(spec, pool.get());
  return Measure(**sw, *out, seconds, [] {});
}

Figure WithFlows(dataplane::Mempool& pool, double seconds) {
  auto in = MakePort("fl_in", dataplane::Driver::kNull, pool);
  auto out = MakePort("fl_out", dataplane::Driver::kNull, pool, true);
  std::vector<vswitch::FlowRule> rules;
  for (uint32_t i = 0; i < 1000; ++i) {
    // Ten rule shapes (as OVS's subtables), a hundred rules each.
    const char* shapes[] = {"udp,tp_dst={}",
                            "tcp,tp_dst={}",
                            "udp,tp_src={}",
                            "tcp,tp_src={}",
                            "ip,nw_dst=10.1.{}.{}",
                            "ip,nw_src=10.2.{}.{}",
                            "dl_vlan={}",
                            "udp,nw_dst=10.3.0.0/16,tp_dst={}",
                            "tcp,nw_src=10.4.0.0/16,tp_dst={}",
                            "ipv6,tp_dst={}"};
    const uint32_t shape = i % 10, n = i / 10 + 1;
    std::string match = shapes[shape];
    match = fmt::format(fmt::runtime(match), n, n);
    if (shape == 9) match = fmt::format("udp6,tp_dst={}", n);
    rules.push_back(
        {fmt::format("priority={},{},actions=set_queue:1,output:fl_out", 10 + i, match), i});
  }
  vswitch::SwitchSpec spec;
  spec.ports = {in.get(), out.get()};
  spec.bridges = {Bridge(rules)};
  auto sw = OrExit(vswitch::Switch::Create(spec, pool.get()));
  return Measure(*sw, *out, seconds, [] {});
}

vswitch::SwitchSpec ScheduledSpec(dataplane::Port* in, dataplane::Port* out) {
  vswitch::SwitchSpec spec;
  spec.ports = {in, out};
  spec.bridges = {Bridge({{"priority=100,ip,nw_proto=146,actions=set_queue:1,output:2", 0}})};
  spec.classes = {{1, vswitch::MessageMode::kHoma, 0}};
  vswitch::UplinkSpec up;
  up.port = 1;
  up.scheduler.name = "bench";
  up.scheduler.rate_bps = 400'000'000'000ull;  // far above the offered load: no shaping
  up.scheduler.pacing_bps = 0;
  up.scheduler.max_messages = 65536;
  up.scheduler.classes = {{.name = "rpc", .policy = sched::Policy::kSrpt}};
  up.class_queues = {1};
  spec.uplinks = {up};
  return spec;
}

// With --sched-pcap: the file's Homa messages replayed in a loop into an SRPT uplink on a null
// sink, the same kind of ports as the other cases.
Figure ScheduledFromPcap(dataplane::Mempool& pool, double seconds, uint16_t workers = 1,
                         bool scheduled = true) {
  dataplane::PortOptions o;
  o.name = "sc_in";
  o.driver = dataplane::Driver::kPcap;
  o.args = {{"rx_pcap", g_sched_pcap}, {"loop", "true"}};
  auto in = OrExit(dataplane::CreatePort(o, pool));
  auto out = MakePort("sc_out", dataplane::Driver::kNull, pool, true);
  vswitch::SwitchSpec spec = ScheduledSpec(in.get(), out.get());
  if (!scheduled) spec.uplinks.clear();  // the same traffic and rule, as OVS-DPDK forwards it
  spec.workers = workers;
  auto sw = OrExit(vswitch::Switch::Create(spec, pool.get()));
  if (workers == 1) return Measure(*sw, *out, seconds, [] {});
  // The uplink's worker on the second lcore; this one is the bridge's worker.
  SecondLcoreLoop uplink_worker([&] { sw->Poll(1, ReadTsc()); });
  return Measure(*sw, *out, seconds, [] {}, 0);
}

// A Homa DATA frame of message `rpc` at `offset`, 1 GiB long (so that it never completes).
rte_mbuf* HomaFrame(dataplane::Mempool& pool, uint32_t rpc, uint32_t offset) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool.get());
  if (m == nullptr) {
    std::fprintf(stderr, "bench_switch: the pool ran dry building Homa frames\n");
    std::exit(1);
  }
  auto* f = rte_pktmbuf_mtod(m, uint8_t*);
  const uint32_t len = 14 + 20 + vswitch::kHomaDataHeaderLen + 10;
  rte_pktmbuf_append(m, static_cast<uint16_t>(len));
  std::memset(f, 0, len);
  f[0] = 0x02;
  f[5] = 0x01;
  f[6] = 0x02;
  f[11] = 0x02;
  f[12] = 0x08;
  f[14] = 0x45;
  f[16] = 0;
  f[17] = static_cast<uint8_t>(len - 14);
  f[22] = 64;
  f[23] = vswitch::kIpProtoHoma;
  vswitch::WriteHomaHeader(f + 34, {1, 2, vswitch::kHomaData, rpc, 1u << 30, offset});
  return m;
}

// Ring ports with recycling: what leaves the uplink goes back into the input, so the Homa
// messages stay active (their length is never reached) and the scheduler always has work.
// `backlog`: that many packets more than the rings hold wait in the scheduler all along. They
// are fed in while the uplink's port refuses (its ring full and not drained), so they pile up in
// the scheduler; afterwards what leaves goes back in, and every packet takes the scheduler's
// general path (message table, rank queue), never the idle-burst shortcut: an uplink with its
// queues built up, as when it is slower than what arrives. Without a backlog every burst finds
// the scheduler empty.
Figure Scheduled(dataplane::Mempool& pool, double seconds, uint32_t messages,
                 uint32_t backlog = 0) {
  if (!g_sched_pcap.empty() && backlog == 0) return ScheduledFromPcap(pool, seconds);
  auto in = MakePort("sc_in", dataplane::Driver::kRing, pool);
  auto out = MakePort("sc_out", dataplane::Driver::kRing, pool);
  auto* in_ring = dynamic_cast<dataplane::EthPort*>(in.get())->inject_ring();
  auto* out_ring = dynamic_cast<dataplane::EthPort*>(out.get())->drain_ring();
  const uint32_t packets = std::min<uint32_t>(messages * 2, 1000) + backlog;  // rings hold ~1000
  std::vector<rte_mbuf*> frames;
  for (uint32_t i = 0; i < packets; ++i) {
    frames.push_back(HomaFrame(pool, i % messages, (i / messages) * 100));
  }
  vswitch::SwitchSpec spec = ScheduledSpec(in.get(), out.get());
  // Room for the whole backlog: a drop would take its packet out of the recycling.
  spec.uplinks[0].scheduler.buffer_bytes = 256ull << 20;
  spec.uplinks[0].scheduler.buffer_packets = 4 * packets;
  auto sw = OrExit(vswitch::Switch::Create(spec, pool.get()));
  // Fed in without draining the uplink's port: once its ring is full the rest waits in the
  // scheduler.
  for (size_t fed = 0; fed < frames.size() || rte_ring_count(in_ring) != 0;) {
    fed += rte_ring_enqueue_burst(in_ring, reinterpret_cast<void**>(frames.data() + fed),
                                  static_cast<unsigned>(frames.size() - fed), nullptr);
    sw->Poll(ReadTsc());
  }
  void* moved[64];
  return Measure(*sw, *out, seconds, [&] {
    const unsigned n = rte_ring_dequeue_burst(out_ring, moved, 64, nullptr);
    rte_ring_enqueue_burst(in_ring, moved, n, nullptr);
  });
}

// The UDP frames of scripts/bench-switch's pcap: 32 flows, 60 bytes.
std::array<uint8_t, 60> FlowFrame(uint32_t i) {
  std::array<uint8_t, 60> f{};
  const uint8_t head[42] = {0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00,
                            0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1,
                            10, 0, 0, 2, 0x27, 0x10, 0, 1, 0, 26, 0, 0};
  std::memcpy(f.data(), head, sizeof(head));
  f[35] = static_cast<uint8_t>(0x10 + i % 32);  // source port 10000 + flow
  f[37] = static_cast<uint8_t>(1 + i % 32);     // destination port 1 + flow
  return f;
}

// --blast: the traffic source of the vhost-user cases, in its own process and EAL: a
// virtio_user client on `path` sending the 32 flows as fast as the switch takes them.
int Blast(const std::string& path, double seconds) {
  dataplane::EalOptions o;
  o.dataplane_lcores = 0;
  o.memory_bytes = 512ull << 20;
  o.file_prefix = "bench_blast_" + std::to_string(getpid());
  o.log_level = "error";
  auto eal = dataplane::Eal::Start(o);
  auto pool = eal.ok() ? dataplane::Mempool::Create("blast", 16383) : eal.status();
  if (!pool.ok()) {
    std::fprintf(stderr, "blast: %s\n", pool.message().c_str());
    return 1;
  }
  auto port = pktgen::OpenGenPort({"vhost-user", {{"path", path}}}, "blast", **pool);
  for (int tries = 0; !port.ok() && tries < 50; ++tries) {  // the server may still be starting
    usleep(100'000);
    port = pktgen::OpenGenPort({"vhost-user", {{"path", path}}}, "blast", **pool);
  }
  if (!port.ok()) {
    std::fprintf(stderr, "blast: %s\n", port.message().c_str());
    return 1;
  }
  std::array<std::array<uint8_t, 60>, 32> frames;
  for (uint32_t i = 0; i < 32; ++i) frames[i] = FlowFrame(i);
  const uint64_t end = ReadTsc() + static_cast<uint64_t>(seconds * static_cast<double>(TscHz()));
  PacketBatch batch;
  uint64_t sent = 0;
  while (ReadTsc() < end) {
    if (rte_pktmbuf_alloc_bulk((*pool)->get(), batch.pkts + batch.count,
                               kMaxBurst - batch.count) == 0) {
      for (uint16_t i = batch.count; i < kMaxBurst; ++i) {
        std::memcpy(rte_pktmbuf_append(batch.pkts[i], 60), frames[i].data(), 60);
      }
      batch.count = kMaxBurst;
    }
    sent += (*port)->Send(batch);
  }
  rte_pktmbuf_free_bulk(batch.pkts, batch.count);
  std::fprintf(stderr, "blast: %lu packets offered\n", sent);
  return 0;
}

// virtio_user (another process, --blast) → a vhost-user port → one port-to-port rule → a null
// sink. The switch polls on the EAL's second lcore so that the source has the first CPU.
Figure VhostUser(dataplane::Mempool& pool, double seconds, const std::string& self,
                 bool plain = false) {
  const std::string sock = fmt::format("/tmp/qv_bench_vhost_{}.sock", getpid());
  dataplane::PortOptions o;
  o.name = "vh_in";
  o.driver = dataplane::Driver::kVhostUser;
  o.args = {{"path", sock}, {"mode", "server"}};
  auto in = OrExit(dataplane::CreatePort(o, pool));
  auto out = MakePort("vh_out", dataplane::Driver::kNull, pool, true);
  vswitch::SwitchSpec spec;
  spec.ports = {in.get(), out.get()};
  spec.bridges = {Bridge({{kPortToPortRule, 0}})};
  auto sw = OrExit(vswitch::Switch::Create(spec, pool.get()));
  PacketBatch batch;
  auto loop = std::make_unique<SecondLcoreLoop>([&] {
    if (!plain) {
      sw->Poll(ReadTsc());
      return;
    }
    in->Recv(batch);  // the ports' own cost: no switching
    out->Send(batch);
    rte_pktmbuf_free_bulk(batch.pkts, batch.count);
    batch.count = 0;
  });
  const pid_t source = fork();
  if (source == 0) {
    const std::string secs = std::to_string(seconds + 4);
    execl(self.c_str(), self.c_str(), "--blast", sock.c_str(), "--seconds", secs.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  const uint16_t out_id = dynamic_cast<dataplane::EthPort*>(out.get())->port_id();
  auto sent = [out_id] {
    rte_eth_stats st{};
    rte_eth_stats_get(out_id, &st);  // the PMD's own counters, safe to read from here
    return st.opackets;
  };
  for (int i = 0; i < 100 && !in->LinkUp(); ++i) usleep(50'000);
  usleep(1'500'000);  // warm-up
  const Figure f = WindowedRate(seconds, sent, [](uint64_t) { usleep(1000); });
  loop.reset();
  int status = 0;
  waitpid(source, &status, 0);
  return f;
}

// net_null hands out pool mbufs without writing them: every buffer gets a real UDP frame
// (distinct source and destination MACs) so that L2 learning and the flow table see traffic.
void FillWithFrames(dataplane::Mempool& pool) {
  rte_mempool_obj_iter(pool.get(), [](rte_mempool*, void*, void* obj, unsigned) {
    auto* m = static_cast<rte_mbuf*>(obj);
    auto* f = static_cast<uint8_t*>(m->buf_addr) + RTE_PKTMBUF_HEADROOM;
    const uint8_t frame[42] = {0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00,
                               0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1,
                               10, 0, 0, 2, 0x13, 0x88, 0x13, 0x89, 0, 26, 0, 0};
    std::memcpy(f, frame, sizeof(frame));
  }, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_switch: qosvisor forwarding rate on one core"};
  double seconds = 3;
  std::vector<std::string> only;
  app.add_option("--seconds", seconds, "Measuring time per case");
  app.add_option("--case", only,
                 "io, l2, p2p, flows, vhost, l2homa, homa, sched, sched2 or backlog, several "
                 "separated by commas (default: all)")
      ->delimiter(',');
  app.add_option("--rx-pcap", g_rx_pcap, "Input ports replay this pcap file in a loop")
      ->check(CLI::ExistingFile);
  app.add_option("--sched-pcap", g_sched_pcap,
                 "The scheduled case replays these Homa messages instead of recycling on rings")
      ->check(CLI::ExistingFile);
  std::string blast;
  app.add_option("--blast", blast, "Be the vhost-user cases' traffic source on this socket");
  bool print_tsc_hz = false;
  app.add_flag("--print-tsc-hz", print_tsc_hz,
               "Print the TSC rate the cycle figures use, then exit (peers' cycles use it too)");
  CLI11_PARSE(app, argc, argv);
  if (print_tsc_hz) {
    std::printf("%llu\n", static_cast<unsigned long long>(TscHz()));
    return 0;
  }
  if (!blast.empty()) return Blast(blast, seconds);
  dataplane::EalOptions o;
  o.dataplane_lcores = 1;  // idle except in the two-lcore case
  o.memory_bytes = 1024ull << 20;
  o.file_prefix = "bench_switch_" + std::to_string(getpid());
  o.log_level = "error";
  auto eal = dataplane::Eal::Start(o);
  if (!eal.ok()) {
    std::fprintf(stderr, "%s\n", eal.message().c_str());
    return 1;
  }
  // Every case gets a fresh pool, so that no case depends on the order of the mbufs that the
  // cases before it left in the pool.
  int pools = 0;
  auto fresh_pool = [&] {
    const std::string name = "bench_switch_" + std::to_string(pools++);
    auto pool = OrExit(dataplane::Mempool::Create(name, 65535));
    FillWithFrames(*pool);
    return pool;
  };
  auto wanted = [&](const std::string& name) {
    return only.empty() || std::find(only.begin(), only.end(), name) != only.end();
  };
  if (wanted("io")) {
    Print("io_forward", IoForward(*fresh_pool(), seconds), "no switching: the ports' own cost");
  }
  if (wanted("l2")) Print("l2", PlainL2(*fresh_pool(), seconds));
  if (wanted("p2p")) Print("port_to_port", PortToPort(*fresh_pool(), seconds));
  if (wanted("flows")) Print("flows_1000", WithFlows(*fresh_pool(), seconds));
  if (wanted("vhost")) {
    Print("vhost_user_io_forward", VhostUser(*fresh_pool(), seconds, argv[0], true),
          "no switching, the same source: on two cores the source process (one core) is what "
          "bounds this and the next figure when they are close");
    Print("vhost_user", VhostUser(*fresh_pool(), seconds, argv[0]),
          "virtio_user (another process) -> vhost-user port -> port-to-port rule -> null");
  }
  if (wanted("sched2") && !g_sched_pcap.empty()) {
    Print("srpt_uplink_10k_messages_2_lcores", ScheduledFromPcap(*fresh_pool(), seconds, 2),
          "two lcores: the bridge's classifies and hands off through a ring, the uplink's "
          "schedules and sends (cycles are per packet of the first lcore)");
  }
  // The scheduled case's own floor and reference: its traffic costs the pcap replay more than the
  // 32 flows do (10,000 distinct, longer frames), so its cycles are compared with plain L2's on
  // the same frames.
  if (wanted("l2homa") && !g_sched_pcap.empty()) {
    Print("io_forward_homa_10k_messages", IoForward(*fresh_pool(), seconds, g_sched_pcap),
          "no switching, the scheduled case's traffic: the ports' own cost");
    Print("l2_homa_10k_messages", PlainL2(*fresh_pool(), seconds, g_sched_pcap),
          "plain L2 (NORMAL) on the scheduled case's traffic: what its cycles are compared with");
  }
  if (wanted("homa") && !g_sched_pcap.empty()) {
    Print("homa_10k_messages_unscheduled", ScheduledFromPcap(*fresh_pool(), seconds, 1, false),
          "the scheduled case's traffic and rule with no scheduler on the port: what OVS-DPDK "
          "does with it");
  }
  if (wanted("sched")) {
    Print("srpt_uplink_10k_messages", Scheduled(*fresh_pool(), seconds, 10'000),
          g_sched_pcap.empty() ? "ring ports with recycling; packets cross an SRPT scheduler"
                               : "pcap replay in, null out; packets cross an SRPT scheduler");
  }
  if (wanted("backlog")) {
    Print("srpt_uplink_10k_messages_backlog", Scheduled(*fresh_pool(), seconds, 10'000, 20'000),
          "ring ports with recycling; 20,000 packets of 10,000 messages wait in the SRPT "
          "scheduler all along, so every packet is filed and picked by rank");
  }
  return 0;
}
