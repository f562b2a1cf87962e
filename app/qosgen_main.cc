// qosgen: the message-workload generator and analyser as its own DPDK process. `run` measures a
// workload through a port, `ndr` searches the no-drop rate, `compare` puts saved runs side by side.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "app/qosgen_output.h"
#include "app/qosgen_run.h"
#include "app/traffic_flags.h"
#include "common/units.h"
#include "dataplane/eal.h"
#include "dataplane/mempool.h"

namespace {

using namespace qosvisor;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

void InstallSignalHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

void AddGenFlags(CLI::App* cmd, app::GenFlags& f) {
  cmd->add_option("--port", f.port,
                  "Where frames go: memif:socket=PATH[,role=client], vhost-user:path=SOCK "
                  "(attached as virtio_user), af_packet:iface=IF, tap:iface=IF, "
                  "pcap:rx_pcap=F,tx_pcap=F, null (sink), ring (in-process loopback)");
  cmd->add_option("--rx-port", f.rx_port, "Where frames come back (default: --port)");
  cmd->add_option("--class", f.classes,
                  "A traffic class NAME:FRAMING:DST_PORT:SIZES:SHARE:TENANT:SENDER, e.g. "
                  "rpc:homa:5000:W1:0.2:0:0 (FRAMING udp|homa|tcp; SIZES W1..W5, fixed=1KB, "
                  "uniform=64-2KB)");
  cmd->add_option("--workload", f.workload, "Workload YAML file (instead of --class)");
  cmd->add_option("--rate", f.rate, "Bottleneck rate: load is a fraction of it (default 1Gbps)");
  cmd->add_option("--load", f.load, "Offered load as a fraction of --rate (default 0.9)");
  cmd->add_option("--sender-rate", f.sender_rate, "Each sender link's rate (default 10Gbps)");
  cmd->add_option("--mss", f.mss, "Message payload bytes per packet, 64..1400 (default 1400)");
  cmd->add_option("--seed", f.seed, "Random seed (default 1)");
  cmd->add_option("--duration", f.duration, "How long messages arrive (default 5s)");
  cmd->add_option("--drain", f.drain,
                  "After the last arrival: at most this to send what is left, then as long again "
                  "for what is on its way (default 500ms)");
  cmd->add_option("--arrival", f.arrival,
                  "Arrival process for every class: poisson, constant, onoff=ON/OFF");
  cmd->add_option("--vlan", f.vlan, "802.1Q VLAN id on every frame");
  cmd->add_option("--dst-mac", f.dst_mac, "Receiver MAC (default 02:51:56:00:00:fe)");
  cmd->add_option("--dst-ip", f.dst_ip, "Receiver IPv4 address (default 10.1.0.1)");
  cmd->add_option("--link-rate", f.link_rate,
                  "Emulate a bottleneck link at the receiver: drain rate (e.g. 1Gbps)");
  cmd->add_option("--link-wait", f.link_wait,
                  "Wait this long for the ports' links to come up (default 10s)");
  cmd->add_option("--link-buffer", f.link_buffer,
                  "Emulated link's FIFO size, tail drop when full (default 1MiB)");
  cmd->add_option("--transport", f.transport,
                  "How senders send a message: open (every byte at once, default), window "
                  "(at most --window unacknowledged bytes), homa (--rtt-bytes unscheduled, the "
                  "rest on SRPT grants from the receiver)");
  cmd->add_option("--window", f.window, "window: unacknowledged bytes per message (64KiB)");
  cmd->add_option("--rtt-bytes", f.rtt_bytes, "homa: unscheduled bytes and grant lead (24KiB)");
  cmd->add_option("--overcommit", f.overcommit, "homa: messages granted at once (7)");
  cmd->add_option("--rto", f.rto, "window/homa: resend after this long without progress (50ms)");
  cmd->add_flag("--exact-load", f.exact_load,
                "Scale each class's arrival rate so that the run offers exactly --load (a "
                "heavy-tailed workload's Poisson arrivals stray by 10% or more over seconds)");
  cmd->add_option("--poll", f.poll,
                  "How the loop waits between polls: busy (default) or sleep=DURATION; sleeping "
                  "keeps receive stamps punctual where qosgen shares cores with the switch");
  cmd->add_flag("--realtime", f.realtime,
                "Run the loop at SCHED_FIFO priority (root; needs --poll sleep=...)");
}

struct Dataplane {
  std::unique_ptr<dataplane::Eal> eal;
  std::unique_ptr<dataplane::Mempool> pool;
};

Result<Dataplane> StartDataplane(const std::string& log_level) {
  dataplane::EalOptions o;
  o.dataplane_lcores = 0;
  o.memory_bytes = 512ull << 20;
  o.hugepages = dataplane::Hugepages::kOff;
  o.file_prefix = fmt::format("qosgen_{}", getpid());
  o.log_level = log_level;
  auto eal = dataplane::Eal::Start(o);
  if (!eal.ok()) return eal.status();
  auto pool = dataplane::Mempool::Create("qosgen_pool", 16383);
  if (!pool.ok()) return pool.status();
  return Dataplane{std::move(eal).value(), std::move(pool).value()};
}

// The EAL, the pool and the plan's ports with their links up: what `run` and `ndr` both need.
struct Opened {
  Dataplane dp;
  std::optional<app::OpenPorts> ports;
};

Result<Opened> OpenForPlan(const app::GenPlan& plan, const std::string& log_level) {
  auto dp = StartDataplane(log_level);
  if (!dp.ok()) return dp.status();
  Opened opened{std::move(dp).value(), std::nullopt};
  auto ports = app::OpenPlanPorts(plan, *opened.dp.pool);
  if (!ports.ok()) return ports.status();
  opened.ports = std::move(ports).value();
  if (Status s = app::WaitForLinks(*opened.ports, plan.link_wait_ns); !s.ok()) return s;
  return opened;
}

// The progress line: redrawn in place on a terminal, one plain line per second otherwise.
struct Progress {
  bool tty = isatty(STDOUT_FILENO) != 0;
  bool receiving = true;
  double total_s = 0;
  double last_s = 0;
  uint64_t last_offered = 0, last_received = 0;

  void operator()(double t, const pktgen::Generator& g, const pktgen::Analyser& a) {
    const double dt = std::max(1e-6, t - last_s);
    const std::string line =
        app::FormatProgress(t, total_s, static_cast<double>(g.bytes_sent() - last_offered) * 8 / dt,
                            static_cast<double>(a.received_bytes() - last_received) * 8 / dt,
                            g.packets_sent(), a.received_packets(), receiving);
    last_s = t;
    last_offered = g.bytes_sent();
    last_received = a.received_bytes();
    if (tty) {
      std::fprintf(stdout, "\r%s\033[K", line.c_str());
    } else {
      std::fprintf(stdout, "%s\n", line.c_str());
    }
    std::fflush(stdout);
  }
  void End() {
    if (tty && last_s > 0) std::fputs("\n", stdout);
  }
};

int Run(const app::GenFlags& flags, const std::string& json, const std::string& csv,
        const std::string& plot, const std::string& title, const std::string& log_level) {
  auto plan = app::BuildPlan(flags);
  if (!plan.ok()) {
    std::fprintf(stderr, "%s\n", plan.message().c_str());
    return kExitUsage;
  }
  if (!plot.empty() && !app::GnuplotAvailable()) {
    std::fprintf(stderr,
                 "--plot needs gnuplot; install it (Debian: apt-get install gnuplot-nox)\n");
    return kExitUsage;
  }
  auto opened = OpenForPlan(*plan, log_level);
  if (!opened.ok()) {
    std::fprintf(stderr, "qosgen: %s\n", opened.message().c_str());
    return kExitFailed;
  }
  auto& ports = opened->ports;
  Progress progress;
  progress.total_s = static_cast<double>(plan->options.duration_ns) / 1e9;
  progress.receiving = ports->endpoints.receiver != nullptr;
  pktgen::RunOptions options = plan->options;
  options.stop = &g_stop;
  options.progress_ns = progress.tty ? 500'000'000 : 1'000'000'000;
  options.progress = [&](double t, const pktgen::Generator& g, const pktgen::Analyser& a) {
    progress(t, g, a);
  };
  auto result = pktgen::RunOverPorts(plan->spec, ports->endpoints, options);
  progress.End();
  if (!result.ok()) {
    std::fprintf(stderr, "qosgen: %s\n", result.message().c_str());
    return kExitFailed;
  }
  nlohmann::json& report = result->report;
  report["receiving"] = progress.receiving;
  if (progress.receiving) {
    std::fputs(app::FormatReport(report).c_str(), stdout);
  } else {
    // A sink measures the generator alone: what it offered and how fast it sent.
    const double seconds = static_cast<double>(plan->options.duration_ns) / 1e9;
    std::fprintf(stdout, "sink: offered %.1f Mbps, sent %.1f Mbps, %llu packets (%.3f Mpps)\n",
                 report["offered_bps"].get<double>() / 1e6, report["sent_bps"].get<double>() / 1e6,
                 static_cast<unsigned long long>(report["sent_packets"].get<uint64_t>()),
                 static_cast<double>(report["sent_packets"].get<uint64_t>()) / seconds / 1e6);
  }
  if (report.contains("link")) {
    const auto& l = report["link"];
    std::fprintf(stdout,
                 "emulated link: %.0f Mbps, %llu B buffer: %llu frames tail-dropped, "
                 "queue peaked at %llu B\n",
                 l["rate_bps"].get<double>() / 1e6,
                 static_cast<unsigned long long>(l["buffer_bytes"].get<uint64_t>()),
                 static_cast<unsigned long long>(l["dropped_frames"].get<uint64_t>()),
                 static_cast<unsigned long long>(l["max_queued_bytes"].get<uint64_t>()));
  }
  if (report.contains("receiver") && progress.receiving) {
    const auto& r = report["receiver"];
    std::fprintf(stdout,
                 "receiver: polls every %.1f us (p50), longest gap %.0f us, %llu gaps over 1 ms, "
                 "largest clump %llu B, %ld involuntary context switches\n",
                 r["poll_gap_us"]["p50"].get<double>(), r["poll_gap_us"]["max"].get<double>(),
                 static_cast<unsigned long long>(r["polls_over_1ms"].get<uint64_t>()),
                 static_cast<unsigned long long>(r["max_clump_bytes"].get<uint64_t>()),
                 r["involuntary_switches"].get<long>());
  }
  if (report.value("foreign_frames", 0ull) != 0) {
    std::fprintf(stdout, "%llu received frames were not qosgen's and were ignored\n",
                 static_cast<unsigned long long>(report["foreign_frames"].get<uint64_t>()));
  }
  const nlohmann::json document = {{"tool", "qosgen"},
                                   {"command", "run"},
                                   {"title", title},
                                   {"run", plan->description},
                                   {"report", report}};
  int rc = 0;
  auto check = [&](const Status& s, const std::string& what) {
    if (s.ok()) {
      std::fprintf(stdout, "wrote %s\n", what.c_str());
    } else {
      std::fprintf(stderr, "qosgen: %s\n", s.message().c_str());
      rc = kExitFailed;
    }
  };
  if (!json.empty()) check(app::WriteJsonFile(json, document), json);
  if (!csv.empty())
    check(app::WriteCsv(csv, report), csv + "/{latency_ns,completion_ns,throughput}.csv");
  if (!plot.empty()) {
    check(app::WritePlots(plot, report, title),
          plot + "/{slowdown,latency_cdf,throughput}.{png,svg}");
  }
  return rc;
}

int Ndr(const app::GenFlags& flags, const std::string& trial, const std::string& precision,
        const std::string& loss, const std::string& min_rate, const std::string& max_rate,
        const std::string& json, const std::string& log_level) {
  auto plan = app::BuildPlan(flags);
  std::vector<std::string> errors;
  if (!plan.ok()) errors.push_back(plan.message());
  pktgen::NdrOptions o;
  uint64_t trial_ns = 1'000'000'000;
  if (auto v = ParseDuration(trial); !v.ok() || *v == 0) {
    errors.push_back(fmt::format("--trial '{}': not a duration > 0; e.g. --trial 1s", trial));
  } else {
    trial_ns = *v;
  }
  if (auto v = app::ParseFraction(precision, "--precision"); v.ok()) {
    o.precision = *v;
  } else {
    errors.push_back(v.message());
  }
  if (auto v = app::ParseFraction(loss, "--loss"); v.ok()) {
    o.loss = *v;
  } else {
    errors.push_back(v.message());
  }
  if (plan.ok()) o.max_bps = plan->spec.sender_bps;
  for (auto [text, out, flag] : {std::tuple{&min_rate, &o.min_bps, "--min-rate"},
                                 std::tuple{&max_rate, &o.max_bps, "--max-rate"}}) {
    if (text->empty()) continue;
    auto v = ParseRate(*text);
    if (!v.ok()) {
      errors.push_back(fmt::format("{} '{}': {}", flag, *text, v.message()));
    } else {
      *out = *v;
    }
  }
  if (errors.empty()) {
    if (Status s = pktgen::ValidateNdr(o); !s.ok()) errors.push_back(s.message());
  }
  if (!errors.empty()) {
    for (const std::string& e : errors) std::fprintf(stderr, "%s\n", e.c_str());
    return kExitUsage;
  }
  auto opened = OpenForPlan(*plan, log_level);
  if (!opened.ok()) {
    std::fprintf(stderr, "qosgen: %s\n", opened.message().c_str());
    return kExitFailed;
  }
  auto& ports = opened->ports;
  if (ports->endpoints.receiver == nullptr) {
    std::fprintf(stderr, "qosgen ndr: a null port receives nothing; give --rx-port\n");
    return kExitUsage;
  }
  size_t index = 0;
  auto result = pktgen::SearchNdr(
      o,
      [&](uint64_t rate) -> Result<pktgen::NdrTrial> {
        if (g_stop.load()) return Status::Error("interrupted");
        return app::RunNdrTrial(*plan, ports->endpoints, rate, trial_ns);
      },
      [&](const pktgen::NdrTrial& t) {
        std::fprintf(stdout, "%s\n", app::FormatNdrTrial(t, index++).c_str());
        std::fflush(stdout);
      });
  if (!result.ok()) {
    std::fprintf(stderr, "qosgen: %s\n", result.message().c_str());
    return kExitFailed;
  }
  std::fprintf(stdout, "%s\n", app::FormatNdrResult(*result, o.loss).c_str());
  if (!json.empty()) {
    nlohmann::json trials = nlohmann::json::array();
    for (const pktgen::NdrTrial& t : result->trials) {
      trials.push_back({{"rate_bps", t.rate_bps},
                        {"sent", t.sent},
                        {"received", t.received},
                        {"loss", t.loss},
                        {"pass", t.pass}});
    }
    const nlohmann::json doc = {
        {"tool", "qosgen"},         {"command", "ndr"},
        {"run", plan->description}, {"loss_threshold", o.loss},
        {"precision", o.precision}, {"trial_s", static_cast<double>(trial_ns) / 1e9},
        {"found", result->found},   {o.loss > 0 ? "pdr_bps" : "ndr_bps", result->rate_bps},
        {"trials", trials}};
    if (Status s = app::WriteJsonFile(json, doc); !s.ok()) {
      std::fprintf(stderr, "qosgen: %s\n", s.message().c_str());
      return kExitFailed;
    }
  }
  return 0;
}

int Compare(const std::vector<std::string>& files, const std::vector<std::string>& names_flag,
            const std::string& plot) {
  std::vector<nlohmann::json> reports;
  std::vector<std::string> names;
  bool bad = false;
  if (!names_flag.empty() && names_flag.size() != files.size()) {
    std::fprintf(stderr, "--name given %zu times for %zu files; give one per file or none\n",
                 names_flag.size(), files.size());
    return kExitUsage;
  }
  for (size_t i = 0; i < files.size(); ++i) {
    auto doc = app::ReadJsonFile(files[i]);
    if (!doc.ok()) {
      std::fprintf(stderr, "%s\n", doc.message().c_str());
      bad = true;
      continue;
    }
    std::string name = names_flag.empty() ? doc->value("title", "") : names_flag[i];
    if (name.empty()) name = std::filesystem::path(files[i]).stem().string();
    names.push_back(name);
    reports.push_back(std::move(doc).value());
  }
  if (bad) return kExitUsage;
  std::fputs(app::FormatCompare(reports, names).c_str(), stdout);
  if (!plot.empty()) {
    if (Status s = app::WriteComparePlot(plot, reports, names); !s.ok()) {
      std::fprintf(stderr, "qosgen: %s\n", s.message().c_str());
      return kExitFailed;
    }
    std::fprintf(stdout, "wrote %s/compare.{png,svg}\n", plot.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  InstallSignalHandlers();
  CLI::App app{"qosgen: message-workload traffic generator and analyser (DPDK)"};
  app.require_subcommand(1);
  std::string log_level = "error";
  app.add_option("--log-level", log_level, "DPDK log level: error, warning, info, debug");

  app::GenFlags run_flags;
  std::string json, csv, plot, title = "qosgen";
  CLI::App* run = app.add_subcommand("run", "Offer a workload through a port and measure it");
  AddGenFlags(run, run_flags);
  run->add_option("--json", json, "Write the run's report as one JSON document to this file");
  run->add_option("--csv", csv, "Write histogram and throughput CSVs into this directory");
  run->add_option("--plot", plot, "Write PNG and SVG plots (gnuplot) into this directory");
  run->add_option("--title", title, "Name of the run in plots and comparisons");

  app::GenFlags ndr_flags;
  std::string trial = "1s", precision = "1%", loss = "0", min_rate, max_rate, ndr_json;
  CLI::App* ndr = app.add_subcommand(
      "ndr",
      "RFC 2544-style binary search for the highest rate with loss <= --loss (NDR; PDR if > 0); "
      "trials offer the workload's classes at constant rate");
  AddGenFlags(ndr, ndr_flags);
  ndr->add_option("--trial", trial, "Length of each trial (default 1s)");
  ndr->add_option("--precision", precision, "Stop when the interval is this narrow (default 1%)");
  ndr->add_option("--loss", loss, "Allowed loss: a percentage (0.1%) or a fraction (default 0)");
  ndr->add_option("--min-rate", min_rate, "Lowest rate to try (default 1Mbps)");
  ndr->add_option("--max-rate", max_rate, "Highest rate to try (default --sender-rate)");
  ndr->add_option("--json", ndr_json, "Write the trials and the result as JSON to this file");

  std::vector<std::string> files, names;
  std::string compare_plot;
  CLI::App* compare =
      app.add_subcommand("compare", "Put runs saved with `run --json` side by side");
  compare->add_option("files", files, "RUN.json files")->required();
  compare->add_option("--name", names, "Name of each run, in order (default: its title)");
  compare->add_option("--plot", compare_plot, "Write compare.png and compare.svg into this dir");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  if (run->parsed()) return Run(run_flags, json, csv, plot, title, log_level);
  if (ndr->parsed()) {
    return Ndr(ndr_flags, trial, precision, loss, min_rate, max_rate, ndr_json, log_level);
  }
  return Compare(files, names, compare_plot);
}
