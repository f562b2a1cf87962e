// qosvisor: the appliance. `check FILE` validates a configuration and prints it normalized;
// `run FILE` builds the switch, schedulers and VMs it describes and serves the control socket.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <thread>

#include "app/man_page.h"
#include "app/status_format.h"
#include "app/traffic_flags.h"
#include "common/units.h"
#include "config/loader.h"
#include "control/appliance.h"
#include "control/log.h"
#include "dataplane/cpu_isolation.h"
#include "dataplane/port.h"
#include "pktgen/ring_runner.h"

namespace {

using namespace qosvisor;

constexpr int kExitStartFailed = 1;
constexpr int kExitBadConfig = 2;

std::atomic<control::Appliance*> g_running{nullptr};
std::atomic<bool> g_stop_requested{false};

// A signal may arrive while the appliance is still being built: remember it, so Run() returns
// at once instead of losing the request.
void OnSignal(int signal) {
  if (signal == SIGHUP) {  // reload, as systemd's ExecReload asks; never a stop
    if (control::Appliance* a = g_running.load()) a->RequestReload();
    return;
  }
  g_stop_requested.store(true);
  if (control::Appliance* a = g_running.load()) a->Stop();
}

// Installed before anything else runs: the Open vSwitch library installs its own handlers for
// signals still at their default on first use, and would swallow SIGTERM.
void InstallSignalHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
}

std::optional<config::Config> LoadOrReport(const std::string& path) {
  config::LoadResult loaded = config::LoadFromFile(path);
  if (!loaded.ok()) {
    std::fputs(loaded.ErrorText().c_str(), stderr);
    std::fprintf(stderr, "%s: %zu error(s); nothing was started\n", path.c_str(),
                 loaded.errors.size());
    return std::nullopt;
  }
  return std::move(loaded.config);
}

int Check(const std::string& path) {
  auto config = LoadOrReport(path);
  if (!config) return kExitBadConfig;
  std::fputs(config::Format(*config).c_str(), stdout);
  return 0;
}

struct TrafficFlags {
  bool enabled = false;
  double load = 0.9;
  std::vector<std::string> classes;
  std::vector<std::string> senders = {"gen0", "gen1"};
  std::string receiver = "uplink0";
  std::string report_path;
  // Closed loop by default: an open-loop sender overflows any buffer at 90% of a heavy-tailed
  // workload, and the demo would show its losses rather than what the scheduler does.
  std::string transport = "homa";
};

rte_ring* RingOf(control::Appliance& a, const std::string& name, bool inject, std::string& error) {
  auto* port = dynamic_cast<dataplane::EthPort*>(a.FindPort(name));
  if (port == nullptr || port->inject_ring() == nullptr) {
    error += fmt::format("--traffic: '{}' is not a ring port of this configuration\n", name);
    return nullptr;
  }
  return inject ? port->inject_ring() : port->drain_ring();
}

// Builds the workload and its rings; on error returns the reasons (one per line).
std::string PrepareTraffic(control::Appliance& a, const TrafficFlags& flags, uint64_t rate_bps,
                           pktgen::WorkloadSpec& spec, pktgen::RingEndpoints& rings) {
  std::string error;
  if (flags.classes.empty()) {
    spec.classes = app::DemoClasses();
  }
  for (const std::string& text : flags.classes) {
    auto c = app::ParseClassFlag(text);
    if (c.ok()) {
      spec.classes.push_back(std::move(c).value());
    } else {
      error += c.message() + "\n";
    }
  }
  spec.load = flags.load;
  spec.bottleneck_bps = rate_bps;
  if (flags.transport == "homa") {
    spec.transport.kind = pktgen::Transport::kHoma;
  } else if (flags.transport == "window") {
    spec.transport.kind = pktgen::Transport::kWindow;
  } else if (flags.transport != "open") {
    error += fmt::format("--transport '{}': use open, window or homa\n", flags.transport);
  }
  spec.senders = static_cast<uint16_t>(flags.senders.size());
  for (const std::string& s : flags.senders) rings.senders.push_back(RingOf(a, s, true, error));
  rings.receiver = RingOf(a, flags.receiver, false, error);
  // The receiver measures when frames left the switch, not when its thread (sharing the box's
  // cores with the switch) got round to polling them.
  if (auto* port = dynamic_cast<dataplane::EthPort*>(a.FindPort(flags.receiver))) {
    if (Status s = port->StampDepartures(); s.ok()) {
      rings.departures_stamped = true;
    } else {
      error += s.message() + "\n";
    }
  }
  rings.receiver_tx = RingOf(a, flags.receiver, true, error);
  rings.pool = a.pool();
  if (error.empty()) {
    if (Status s = pktgen::ValidateWorkload(spec); !s.ok()) error = s.message() + "\n";
  }
  return error;
}

int RunWithTraffic(control::Appliance& a, const TrafficFlags& flags, uint64_t rate_bps,
                   uint64_t duration_ns) {
  pktgen::WorkloadSpec spec;
  pktgen::RingEndpoints rings;
  if (std::string error = PrepareTraffic(a, flags, rate_bps, spec, rings); !error.empty()) {
    std::fputs(error.c_str(), stderr);
    return kExitBadConfig;
  }
  pktgen::RunOptions options;
  options.duration_ns = duration_ns == 0 ? 3'000'000'000ull : duration_ns;
  options.exact_load = true;  // a 3 s sample of heavy-tailed sizes strays 10% from --load
  options.progress = [](double t, const pktgen::Generator& g, const pktgen::Analyser&) {
    std::printf("  %.1f s: %llu messages, %llu packets sent\n", t,
                static_cast<unsigned long long>(g.messages_generated()),
                static_cast<unsigned long long>(g.packets_sent()));
    std::fflush(stdout);
  };
  Result<pktgen::RunResult> result = Status::Error("not run");
  // A signal that stops the appliance ends the traffic too, early, with what it measured.
  std::atomic<bool> stop_traffic{false};
  options.stop = &stop_traffic;
  a.StartDataplane();
  std::thread traffic([&] {
    result = pktgen::RunOverRings(spec, rings, options);
    a.Stop();
  });
  a.Run(0);
  stop_traffic = true;
  traffic.join();
  if (!result.ok()) {
    std::fprintf(stderr, "%s\n", result.message().c_str());
    return kExitStartFailed;
  }
  std::fputs(app::FormatReport(result->report).c_str(), stdout);
  if (!flags.report_path.empty()) {
    std::ofstream(flags.report_path) << result->report.dump(2) << "\n";
    std::printf("report: %s\n", flags.report_path.c_str());
  }
  return 0;
}

// --duration: "" is no limit (0); bad text is reported here.
std::optional<uint64_t> DurationFlag(const std::string& text) {
  if (text.empty()) return 0;
  auto parsed = ParseDuration(text);
  if (!parsed.ok()) {
    std::fprintf(stderr, "--duration: %s\n", parsed.message().c_str());
    return std::nullopt;
  }
  return *parsed;
}

// What dataplane.isolate does for the appliance's workers, for any busy-polling process (another
// switch measured on the same box, under the same conditions).
int Isolate(const std::string& cpu_list, const std::string& duration) {
  auto cpus = dataplane::ParseCpuList(cpu_list);
  if (!cpus.ok()) {
    std::fprintf(stderr, "--cpus: %s\n", cpus.message().c_str());
    return kExitBadConfig;
  }
  const std::optional<uint64_t> duration_ns = DurationFlag(duration);
  if (!duration_ns) return kExitBadConfig;
  auto isolation = dataplane::CpuIsolation::Start(*cpus);
  if (!isolation.ok()) {
    std::fprintf(stderr, "%s\n", isolation.message().c_str());
    return kExitStartFailed;
  }
  std::printf("isolated %s; until stopped\n", (*isolation)->Describe().c_str());
  std::fflush(stdout);
  const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(*duration_ns);
  while (!g_stop_requested.load() &&
         (*duration_ns == 0 || std::chrono::steady_clock::now() < until)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  isolation->reset();
  std::printf("restored\n");
  return 0;
}

int Run(const std::string& path, const std::string& duration, const std::string& socket,
        const TrafficFlags& traffic) {
  const std::optional<uint64_t> duration_ns = DurationFlag(duration);
  if (!duration_ns) return kExitBadConfig;
  auto config = LoadOrReport(path);
  if (!config) return kExitBadConfig;
  control::ApplianceOptions options;
  options.config_path = path;
  options.socket_override = socket;
  auto appliance = control::Appliance::Build(*config, options);
  if (!appliance.ok()) {
    spdlog::error("cannot start: {}", appliance.message());
    return kExitStartFailed;
  }
  for (const std::string& line : (*appliance)->startup_log()) spdlog::info("{}", line);
  g_running.store(appliance->get());
  if (g_stop_requested.load()) (*appliance)->Stop();
  int rc = 0;
  if (traffic.enabled) {
    const uint64_t rate = config->uplinks.empty() ? 1'000'000'000 : config->uplinks[0].rate_bps;
    rc = RunWithTraffic(**appliance, traffic, rate, *duration_ns);
  } else {
    (*appliance)->Run(*duration_ns);
  }
  g_running.store(nullptr);
  (*appliance)->StopDataplane();
  auto stats = (*appliance)->StatsJson();
  if (stats.ok()) {
    std::fputs(app::FormatStats(*stats).c_str(), stdout);
  } else {
    std::fprintf(stderr, "qosvisor: no statistics: %s\n", stats.message().c_str());
  }
  std::fputs(app::FormatPorts((*appliance)->PortsJson()).c_str(), stdout);
  const uint32_t missing = (*appliance)->TearDown();
  const uint32_t capacity = (*appliance)->pool_capacity();
  if (missing == 0) {
    std::printf("shutdown: all %u mbufs back in the pool\n", capacity);
  } else {
    std::printf("shutdown: %u of %u mbufs did not come back to the pool\n", missing, capacity);
  }
  return rc;
}

app::ManPage Page() {
  app::ManPage page;
  page.name = "qosvisor";
  page.summary = "edge appliance: a per-message QoS switch and a KVM VMM in one process";
  page.synopsis = {"qosvisor check FILE", "qosvisor run FILE [--socket PATH] [--log-level L]",
                   "qosvisor run FILE --traffic [--duration D] [--load F] [--class SPEC]...",
                   "qosvisor isolate --cpus LIST [--duration D]",
                   "qosvisor [COMMAND] --help | --version"};
  page.description = {
      "qosvisor builds the box one YAML file describes: a DPDK virtual switch whose uplinks "
      "send packets in the order of a per-message rank (SRPT, LAS, WFQ, EDF, pacing, ...), "
      "and KVM virtual machines whose virtio-net NICs are switch ports. It serves a control "
      "socket that qosctl(1) talks to, Prometheus metrics where control.metrics says, and "
      "logs one line per event.",
      "A configuration with any error starts nothing: every error is printed as "
      "file:line:column: key.path: message. SIGHUP reloads the file and applies what changed "
      "live (or, for a change that needs a restart, names it and applies nothing); SIGINT and "
      "SIGTERM stop the box, which then prints its counters and whether every packet buffer "
      "came back to its pool.",
  };
  page.command_details = {
      {"check",
       {"Loads and validates FILE and prints it normalized (every value explicit, "
        "units canonical); the output loads back to the same configuration."}},
      {"run",
       {"Runs until SIGINT, SIGTERM, qosctl stop or --duration. Under systemd "
        "(Type=notify) it reports ready once the switch forwards. With --traffic the "
        "built-in generator offers messages into the ring ports and the receiver measures "
        "them; a table per class is printed at the end."}},
      {"isolate",
       {"Keeps the CPUs in LIST for whatever is pinned there (another DPDK process's "
        "poll-mode threads, say): every other task that may run elsewhere, the unbound "
        "workqueues and the interrupts move off, as dataplane.isolate does for qosvisor's own "
        "workers. Per-CPU kernel threads stay. On SIGINT, SIGTERM or --duration it puts back "
        "each mask nobody has changed since. Needs root. A process started meanwhile inherits "
        "its parent's narrowed mask and keeps it. The moved masks are written to "
        "/run/qosvisor/isolated-cpus-LIST while moved; after a crash (kill -9) the next "
        "isolation of the same CPUs puts them back first."}},
  };
  page.exit_status = {
      {"0", "done (check: the configuration is valid)"},
      {"1",
       "the box could not start (a port, memory, an eBPF program, the control socket) or "
       "the traffic run failed; the reason is logged"},
      {"2", "the configuration has errors, or a usage error"}};
  page.files = {{"/etc/qosvisor/qosvisor.yaml", "the configuration the packaged unit runs"},
                {"/run/qosvisor/qosvisor.sock", "the default control socket (control.socket)"},
                {"<socket dir>/<vm>.serial.log",
                 "each VM's serial output, rotated at "
                 "serial_log_max"}};
  page.examples = {
      {"qosvisor check /etc/qosvisor/qosvisor.yaml", "validate and print normalized"},
      {"qosvisor run /etc/qosvisor/qosvisor.yaml", "run the box until stopped"},
      {"qosvisor run examples/edge-default.yaml --traffic --duration 3s",
       "the demo: generated traffic through the scheduler"},
  };
  return page;
}

}  // namespace

#if defined(__SANITIZE_ADDRESS__)
// Under the asan preset: DPDK 22.11's af_xdp PMD leaves libxdp's per-umem bookkeeping behind when
// a port closes (a fixed 80 bytes per port, not ours to free); everything else must be clean.
extern "C" const char* __lsan_default_suppressions() { return "leak:xsk_umem__create\n"; }
#endif

int main(int argc, char** argv) {
  InstallSignalHandlers();
  CLI::App app{"edge appliance with a per-message QoS switch and a KVM VMM"};
  app.formatter(app::ManPageFormatter(Page()));
  app.set_version_flag("--version", "qosvisor 0.1.0");
  app.require_subcommand(1);

  std::string check_file;
  auto* check = app.add_subcommand("check", "Validate a configuration; print it normalized");
  check->add_option("FILE", check_file, "YAML configuration")->required();

  std::string run_file, duration, socket, log_level = "info";
  auto* run = app.add_subcommand("run", "Run the appliance described by a configuration");
  run->add_option("FILE", run_file, "YAML configuration")->required();
  run->add_option("--duration", duration, "Stop after this long (e.g. 30s); default: until signal")
      ->type_name("D");
  run->add_option("--socket", socket, "Control socket path (overrides control.socket)")
      ->type_name("PATH");
  run->add_option("--log-level", log_level,
                  "trace, debug, info (default), warn, error or off; lines go to stderr, or to "
                  "the journal when systemd runs qosvisor")
      ->type_name("L");
  TrafficFlags traffic;
  run->add_flag("--traffic", traffic.enabled,
                "Drive the ring ports with the built-in generator for --duration (default 3s) "
                "and print what the receiver measured");
  run->add_option("--load", traffic.load,
                  "Offered load as a fraction of the first uplink's rate, 0.01 to 10")
      ->check(CLI::Range(0.01, 10.0).description(""))
      ->type_name("F");
  run->add_option("--class", traffic.classes,
                  "NAME:FRAMING:DST_PORT:SIZES:SHARE:TENANT:SENDER (repeat; default: the demo "
                  "workload)")
      ->type_name("SPEC");
  run->add_option("--senders", traffic.senders, "Ring ports the generator sends into")
      ->delimiter(',')
      ->type_name("PORT,...");
  run->add_option("--receiver", traffic.receiver, "Ring port the receiver reads")
      ->type_name("PORT");
  run->add_option("--report", traffic.report_path, "Write the traffic report as JSON here")
      ->type_name("FILE");
  run->add_option("--transport", traffic.transport,
                  "How the generator's senders send: homa (default: unscheduled bytes, the rest "
                  "on SRPT grants), window, or open (every byte at once, no feedback)")
      ->type_name("T");

  std::string isolate_cpus, isolate_duration;
  auto* isolate = app.add_subcommand(
      "isolate",
      "Keep other tasks, unbound workqueues and interrupts off CPUs until stopped, as "
      "dataplane.isolate does for the workers; put back what was moved on exit");
  isolate->add_option("--cpus", isolate_cpus, "CPUs to keep clear, e.g. 1 or 2-3")
      ->required()
      ->type_name("LIST");
  isolate->add_option("--duration", isolate_duration, "Stop after this long; default: until signal")
      ->type_name("D");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitBadConfig;
  }
  if (*check) return Check(check_file);
  if (*isolate) return Isolate(isolate_cpus, isolate_duration);
  auto level = control::ParseLogLevel(log_level);
  if (!level.ok()) {
    std::fprintf(stderr, "--log-level: %s\n", level.message().c_str());
    return kExitBadConfig;
  }
  control::InitLogging(*level, control::StderrIsJournal());
  return Run(run_file, duration, socket, traffic);
}
