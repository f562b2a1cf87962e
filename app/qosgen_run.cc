// Building qosgen's plan from flags and workload files, opening its ports, and NDR trials.
#include "app/qosgen_run.h"

#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <thread>

#include "app/traffic_flags.h"
#include "common/mac_address.h"
#include "common/units.h"

namespace qosvisor::app {
namespace {

pktgen::Framing FramingOf(config::WorkloadFraming f) {
  switch (f) {
    case config::WorkloadFraming::kUdp:
      return pktgen::Framing::kUdp;
    case config::WorkloadFraming::kHoma:
      return pktgen::Framing::kHoma;
    case config::WorkloadFraming::kTcp:
      return pktgen::Framing::kTcp;
  }
  return pktgen::Framing::kUdp;
}

pktgen::Arrival ArrivalOf(config::WorkloadArrival a) {
  switch (a) {
    case config::WorkloadArrival::kPoisson:
      return pktgen::Arrival::kPoisson;
    case config::WorkloadArrival::kConstant:
      return pktgen::Arrival::kConstant;
    case config::WorkloadArrival::kOnOff:
      return pktgen::Arrival::kOnOff;
  }
  return pktgen::Arrival::kPoisson;
}

bool ParseIp(const std::string& s, uint32_t& out) {
  unsigned a[4];
  char tail;
  if (std::sscanf(s.c_str(), "%u.%u.%u.%u%c", &a[0], &a[1], &a[2], &a[3], &tail) != 4 ||
      a[0] > 255 || a[1] > 255 || a[2] > 255 || a[3] > 255) {
    return false;
  }
  out = a[0] << 24 | a[1] << 16 | a[2] << 8 | a[3];
  return true;
}

template <typename T>
bool ParseNumber(const std::string& s, T& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && !s.empty();
}

}  // namespace

pktgen::WorkloadSpec SpecFromWorkload(const config::Workload& w) {
  pktgen::WorkloadSpec spec;
  spec.bottleneck_bps = w.rate_bps;
  spec.load = w.load;
  spec.sender_bps = w.sender_rate_bps;
  spec.mss = w.mss;
  spec.seed = w.seed;
  if (w.dst_mac) std::copy(w.dst_mac->bytes.begin(), w.dst_mac->bytes.end(), spec.receiver_mac);
  if (w.dst_ip) spec.receiver_ip = *w.dst_ip;
  uint16_t senders = 1;
  for (const config::WorkloadClass& c : w.classes) {
    pktgen::ClassWorkload p;
    p.name = c.name;
    p.size_name = c.size_name;
    p.sizes = c.sizes;
    p.share = c.share;
    p.framing = FramingOf(c.framing);
    p.dst_port = c.dst_port;
    p.tenant = c.tenant;
    p.sender = c.sender;
    p.arrival = ArrivalOf(c.arrival);
    p.on_ns = c.on_ns;
    p.off_ns = c.off_ns;
    p.vlan = c.vlan;
    if (c.dst_mac) p.dst_mac = c.dst_mac->bytes;
    if (c.dst_ip) p.dst_ip = *c.dst_ip;
    senders = std::max<uint16_t>(senders, static_cast<uint16_t>(c.sender + 1));
    spec.classes.push_back(std::move(p));
  }
  spec.senders = senders;
  return spec;
}

Result<double> ParseFraction(const std::string& text, const std::string& flag) {
  std::string number = text;
  double scale = 1;
  if (!number.empty() && number.back() == '%') {
    number.pop_back();
    scale = 0.01;
  }
  double v = 0;
  if (!ParseNumber(number, v) || v < 0) {
    return Status::Error(fmt::format(
        "{} '{}': not a fraction; write a percentage like 0.1% or a fraction like 0.001", flag,
        text));
  }
  return v * scale;
}

Result<GenPlan> BuildPlan(const GenFlags& f) {
  std::vector<std::string> errors;
  auto err = [&](std::string e) { errors.push_back(std::move(e)); };
  GenPlan plan;
  pktgen::WorkloadSpec& spec = plan.spec;

  if (f.port.empty()) {
    err("--port is required (e.g. --port memif:socket=/run/qosvisor/gen0.sock or --port ring)");
  } else if (auto p = pktgen::ParseGenPortSpec(f.port, "--port"); p.ok()) {
    plan.port = *p;
  } else {
    err(p.message());
  }
  if (!f.rx_port.empty()) {
    if (auto p = pktgen::ParseGenPortSpec(f.rx_port, "--rx-port"); p.ok()) {
      plan.rx_port = *p;
    } else {
      err(p.message());
    }
  }
  // A second memif interface on the same socket is refused half-way through the handshake, and
  // DPDK's memif driver does not survive that on either side: refuse it here.
  if (plan.rx_port && plan.rx_port->driver == "memif" && plan.port.driver == "memif" &&
      plan.rx_port->args["socket"] == plan.port.args["socket"]) {
    err(
        fmt::format("--rx-port: memif socket '{}' is --port's already; leave --rx-port out "
                    "(frames then come back on --port)",
                    plan.port.args["socket"]));
  }

  std::optional<uint64_t> file_duration;
  if (!f.workload.empty() && !f.classes.empty()) {
    err("give either --workload FILE or --class flags, not both");
  } else if (!f.workload.empty()) {
    config::WorkloadLoadResult loaded = config::LoadWorkloadFromFile(f.workload);
    if (!loaded.ok()) {
      err(loaded.ErrorText());
    } else {
      spec = SpecFromWorkload(*loaded.workload);
      file_duration = loaded.workload->duration_ns;
    }
  } else if (f.classes.empty()) {
    err("no workload: give --workload FILE or at least one --class "
        "NAME:FRAMING:DST_PORT:SIZES:SHARE:TENANT:SENDER (e.g. --class rpc:udp:5000:W1:1:0:0)");
  } else {
    uint16_t senders = 1;
    for (const std::string& text : f.classes) {
      auto c = ParseClassFlag(text);
      if (!c.ok()) {
        err(c.message());
        continue;
      }
      senders = std::max<uint16_t>(senders, static_cast<uint16_t>(c->sender + 1));
      spec.classes.push_back(std::move(c).value());
    }
    spec.senders = senders;
  }

  auto quantity = [&](const std::string& text, const char* flag,
                      Result<uint64_t> (*parse)(std::string_view), const char* example,
                      uint64_t& out) {
    if (text.empty()) return;
    auto v = parse(text);
    if (!v.ok()) {
      err(fmt::format("{} '{}': {}", flag, text, v.message()));
    } else if (*v == 0) {
      err(fmt::format("{} '{}': must be > 0, e.g. {}", flag, text, example));
    } else {
      out = *v;
    }
  };
  quantity(f.rate, "--rate", ParseRate, "1Gbps", spec.bottleneck_bps);
  quantity(f.sender_rate, "--sender-rate", ParseRate, "10Gbps", spec.sender_bps);
  if (!f.load.empty()) {
    double v = 0;
    if (!ParseNumber(f.load, v) || !(v > 0) || v > 10) {
      err(fmt::format("--load '{}': not a number in (0, 10]; e.g. --load 0.9 (90% of --rate)",
                      f.load));
    } else {
      spec.load = v;
    }
  }
  if (!f.mss.empty()) {
    uint32_t v = 0;
    if (!ParseNumber(f.mss, v) || v < 64 || v > 1400) {
      err(fmt::format("--mss '{}': not a number of bytes in 64..1400", f.mss));
    } else {
      spec.mss = v;
    }
  }
  if (!f.seed.empty() && !ParseNumber(f.seed, spec.seed)) {
    err(fmt::format("--seed '{}': not a non-negative integer", f.seed));
  }
  plan.options.duration_ns = file_duration.value_or(5'000'000'000);
  quantity(f.duration, "--duration", ParseDuration, "10s", plan.options.duration_ns);
  if (!f.drain.empty()) {
    auto v = ParseDuration(f.drain);
    if (!v.ok()) {
      err(fmt::format("--drain '{}': {}", f.drain, v.message()));
    } else {
      plan.options.drain_ns = *v;
    }
  }
  if (!f.arrival.empty()) {
    pktgen::Arrival a = pktgen::Arrival::kPoisson;
    uint64_t on = 0, off = 0;
    bool ok = true;
    if (f.arrival == "poisson") {
      a = pktgen::Arrival::kPoisson;
    } else if (f.arrival == "constant") {
      a = pktgen::Arrival::kConstant;
    } else if (f.arrival.rfind("onoff=", 0) == 0 && f.arrival.find('/') != std::string::npos) {
      const std::string rest = f.arrival.substr(6);
      auto on_r = ParseDuration(rest.substr(0, rest.find('/')));
      auto off_r = ParseDuration(rest.substr(rest.find('/') + 1));
      ok = on_r.ok() && off_r.ok() && *on_r > 0 && *off_r > 0;
      if (ok) {
        a = pktgen::Arrival::kOnOff;
        on = *on_r;
        off = *off_r;
      }
    } else {
      ok = false;
    }
    if (!ok) {
      err(fmt::format("--arrival '{}': use poisson, constant or onoff=ON/OFF (e.g. onoff=1ms/4ms)",
                      f.arrival));
    }
    for (pktgen::ClassWorkload& c : spec.classes) {
      c.arrival = a;
      c.on_ns = on;
      c.off_ns = off;
    }
  }
  if (!f.vlan.empty()) {
    int v = 0;
    if (!ParseNumber(f.vlan, v) || v < 0 || v > 4095) {
      err(fmt::format("--vlan '{}': not a VLAN id in 0..4095", f.vlan));
    }
    for (pktgen::ClassWorkload& c : spec.classes) c.vlan = v;
  }
  if (!f.dst_mac.empty() && !ParseMac(f.dst_mac, spec.receiver_mac)) {
    err(fmt::format("--dst-mac '{}': not a MAC address; write e.g. 02:51:56:00:00:fe", f.dst_mac));
  }
  if (!f.dst_ip.empty() && !ParseIp(f.dst_ip, spec.receiver_ip)) {
    err(fmt::format("--dst-ip '{}': not an IPv4 address; write e.g. 10.1.0.1", f.dst_ip));
  }
  quantity(f.link_wait, "--link-wait", ParseDuration, "10s", plan.link_wait_ns);
  quantity(f.link_rate, "--link-rate", ParseRate, "1Gbps", plan.options.link_bps);
  quantity(f.link_buffer, "--link-buffer", ParseSize, "1MiB", plan.options.link_buffer_bytes);
  if (!f.link_buffer.empty() && f.link_rate.empty()) {
    err("--link-buffer needs --link-rate (the emulated link's drain rate)");
  }
  if (plan.options.link_bps != 0 && plan.options.link_buffer_bytes < 1600) {
    err(fmt::format("--link-buffer '{}': must hold at least one full frame (1600B)",
                    f.link_buffer));
  }
  pktgen::TransportSpec& t = spec.transport;
  if (f.transport == "window") {
    t.kind = pktgen::Transport::kWindow;
  } else if (f.transport == "homa") {
    t.kind = pktgen::Transport::kHoma;
  } else if (!f.transport.empty() && f.transport != "open") {
    err(fmt::format("--transport '{}': use open, window or homa", f.transport));
  }
  uint64_t window = t.window_bytes, rtt = t.rtt_bytes;
  quantity(f.window, "--window", ParseSize, "64KiB", window);
  quantity(f.rtt_bytes, "--rtt-bytes", ParseSize, "24KiB", rtt);
  quantity(f.rto, "--rto", ParseDuration, "50ms", t.rto_ns);
  if (window > (1u << 30) || rtt > (1u << 30)) err("--window and --rtt-bytes must be at most 1GiB");
  t.window_bytes = static_cast<uint32_t>(std::min<uint64_t>(window, 1u << 30));
  t.rtt_bytes = static_cast<uint32_t>(std::min<uint64_t>(rtt, 1u << 30));
  if (!f.overcommit.empty() &&
      (!ParseNumber(f.overcommit, t.overcommit) || t.overcommit == 0 || t.overcommit > 64)) {
    err(fmt::format("--overcommit '{}': a number of messages in 1..64", f.overcommit));
  }
  const bool closed = t.kind != pktgen::Transport::kOpen;
  if (!closed &&
      !(f.window.empty() && f.rtt_bytes.empty() && f.overcommit.empty() && f.rto.empty())) {
    err("--window, --rtt-bytes, --overcommit and --rto need --transport window or homa");
  }
  if (!f.poll.empty() && f.poll != "busy") {
    auto v = f.poll.rfind("sleep=", 0) == 0 ? ParseDuration(f.poll.substr(6))
                                            : Result<uint64_t>(Status::Error("unknown mode"));
    if (!v.ok() || *v == 0 || *v > 1'000'000'000) {
      err(fmt::format("--poll '{}': use busy or sleep=DURATION (e.g. sleep=10us, at most 1s)",
                      f.poll));
    } else {
      plan.options.poll_sleep_ns = *v;
    }
  }
  plan.options.realtime = f.realtime;
  plan.options.exact_load = f.exact_load;
  if (f.realtime && f.poll.rfind("sleep=", 0) != 0) {
    err("--realtime needs --poll sleep=DURATION: a real-time thread that never sleeps is "
        "throttled by the kernel");
  }
  if (!spec.classes.empty()) {
    if (Status s = pktgen::ValidateWorkload(spec); !s.ok()) err(s.message());
  }
  if (!errors.empty()) {
    std::string text;
    for (const std::string& e : errors) text += (text.empty() ? "" : "\n") + e;
    return Status::Error(text);
  }
  plan.description = {
      {"port", f.port},
      {"rx_port", f.rx_port},
      {"workload", f.workload},
      {"classes", f.classes},
      {"rate_bps", spec.bottleneck_bps},
      {"load", spec.load},
      {"sender_bps", spec.sender_bps},
      {"duration_s", static_cast<double>(plan.options.duration_ns) / 1e9},
      {"link_bps", plan.options.link_bps},
      {"transport", pktgen::TransportName(spec.transport.kind)},
      {"link_buffer_bytes", plan.options.link_bps ? plan.options.link_buffer_bytes : 0}};
  return plan;
}

Result<OpenPorts> OpenPlanPorts(const GenPlan& plan, dataplane::Mempool& pool) {
  OpenPorts open;
  auto tx = pktgen::OpenGenPort(plan.port, "gen_tx", pool);
  if (!tx.ok()) return tx.status();
  open.tx = std::move(tx).value();
  if (plan.rx_port) {
    auto rx = pktgen::OpenGenPort(*plan.rx_port, "gen_rx", pool);
    if (!rx.ok()) return rx.status();
    open.rx = std::move(rx).value();
  }
  for (uint16_t s = 0; s < plan.spec.senders; ++s) open.endpoints.senders.push_back(open.tx.get());
  const pktgen::GenPortSpec& receiving = plan.rx_port ? *plan.rx_port : plan.port;
  // pcap on a live interface copies the kernel's receive time into every frame.
  if (receiving.driver == "pcap" && receiving.args.contains("rx_iface")) {
    open.endpoints.receiver_stamps = pktgen::PortEndpoints::Stamps::kRealtimeMicros;
    auto stamps = pktgen::EnqueueStamps::Enable();
    if (!stamps.ok()) {
      return Status::Error(fmt::format("pcap receiver on {}: {}", receiving.args.at("rx_iface"),
                                       stamps.message()));
    }
    open.enqueue_stamps = std::move(stamps).value();
  }
  if (open.rx) {
    open.endpoints.receiver = open.rx.get();
  } else if (plan.port.driver != "null" &&
             !(plan.port.driver == "pcap" && !plan.port.args.contains("rx_pcap") &&
               !plan.port.args.contains("rx_iface"))) {
    // A null port's receive side makes up frames and a pcap port without rx_pcap has none: with
    // no --rx-port both are pure sinks.
    open.endpoints.receiver = open.tx.get();
  }
  open.endpoints.pool = pool.get();
  // Through a learning switch the receiver must be known before the first message arrives. Only
  // when qosgen itself is the receiver, i.e. the destination MAC is its own default: with
  // --dst-mac the frames go to another host (an echo server, a VM), which must not be claimed.
  const pktgen::WorkloadSpec defaults;
  const bool own_mac =
      std::equal(std::begin(defaults.receiver_mac), std::end(defaults.receiver_mac),
                 std::begin(plan.spec.receiver_mac));
  open.endpoints.announce = own_mac && plan.port.driver != "ring" && plan.port.driver != "null";
  return open;
}

Status WaitForLinks(const OpenPorts& ports, uint64_t timeout_ns) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
  for (const dataplane::Port* port : {ports.tx.get(), ports.rx.get()}) {
    if (port == nullptr) continue;
    while (!port->LinkUp()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        return Status::Error(fmt::format(
            "port '{}' ({}): link still down after {:.1f}s; is the other side (the appliance's "
            "port, the socket's server) up? (--link-wait to wait longer)",
            port->name(), dataplane::DriverName(port->driver()),
            static_cast<double>(timeout_ns) / 1e9));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  return Status::Ok();
}

Result<pktgen::NdrTrial> RunNdrTrial(const GenPlan& plan, const pktgen::PortEndpoints& ports,
                                     uint64_t rate_bps, uint64_t trial_ns) {
  pktgen::WorkloadSpec spec = plan.spec;
  spec.bottleneck_bps = rate_bps;
  spec.load = 1.0;
  for (pktgen::ClassWorkload& c : spec.classes) c.arrival = pktgen::Arrival::kConstant;
  pktgen::RunOptions options = plan.options;
  options.duration_ns = trial_ns;
  options.progress = nullptr;
  auto run = pktgen::RunOverPorts(spec, ports, options);
  if (!run.ok()) return run.status();
  pktgen::NdrTrial t;
  t.rate_bps = rate_bps;
  t.sent = run->report["sent_packets"].get<uint64_t>();
  t.received = run->report["received_packets"].get<uint64_t>();
  return t;
}

}  // namespace qosvisor::app
