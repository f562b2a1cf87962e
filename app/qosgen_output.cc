// JSON, CSV, gnuplot scripts and tables from run reports. Everything is drawn from the report
// JSON alone, so `qosgen compare` and a run's own plots read the same data.
#include "app/qosgen_output.h"

#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/units.h"
#include "pktgen/traffic.h"

namespace qosvisor::app {
namespace {

namespace fs = std::filesystem;

Status EnsureDir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::Error(fmt::format("cannot create directory '{}': {}", dir, ec.message()));
  return Status::Ok();
}

Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) return Status::Error(fmt::format("cannot write '{}'", path.string()));
  return Status::Ok();
}

// Class names go into gnuplot strings: keep them printable and free of quotes.
std::string Quote(const std::string& s) {
  std::string out;
  for (char c : s) out += (c == '"' || c == '\\' || c < ' ') ? '_' : c;
  return "\"" + out + "\"";
}

Status RunGnuplot(const fs::path& script) {
  const pid_t pid = fork();
  if (pid < 0) return Status::Error("cannot start gnuplot: fork failed");
  if (pid == 0) {
    execlp("gnuplot", "gnuplot", script.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return Status::Error("gnuplot: waitpid failed");
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    return Status::Error(
        "gnuplot is not installed; install it (Debian: apt-get install gnuplot-nox)");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::Error(fmt::format("gnuplot failed on '{}' (exit status {})", script.string(),
                                     WIFEXITED(status) ? WEXITSTATUS(status) : -1));
  }
  return Status::Ok();
}

// Renders one plot body to <name>.png and <name>.svg.
Status Plot(const fs::path& dir, const std::string& name, const std::string& body) {
  std::string script = fmt::format(
      "set terminal pngcairo size 1100,650 noenhanced font \"sans,11\"\n"
      "set output {}\n"
      "set grid\nset key outside right top\n"
      "{}\n"
      "set terminal svg size 1100,650 dynamic noenhanced font \"sans,11\"\n"
      "set output {}\n"
      "replot\n",
      Quote((dir / (name + ".png")).string()), body, Quote((dir / (name + ".svg")).string()));
  const fs::path path = dir / (name + ".gp");
  if (Status s = WriteText(path, script); !s.ok()) return s;
  return RunGnuplot(path);
}

double Num(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<double>() : std::nan("");
}

std::string Mbps(double bps) { return fmt::format("{:.1f} Mbps", bps / 1e6); }

std::string Cell(double v) { return std::isnan(v) ? "NaN" : fmt::format("{:.4g}", v); }

// Data file of slowdown p50/p99 by size bucket: column 1 bucket index, 2 its name, then per
// entry (p50, p99).
std::string SlowdownTable(const std::vector<const nlohmann::json*>& classes) {
  std::string out = "# bucket name";
  for (size_t i = 0; i < classes.size(); ++i) out += fmt::format(" p50_{} p99_{}", i, i);
  out += "\n";
  for (int b = 0; b < pktgen::kSizeBuckets; ++b) {
    out += fmt::format("{} \"{}\"", b, pktgen::SizeBucketName(b));
    for (const nlohmann::json* c : classes) {
      const nlohmann::json& s = (*c)["slowdown"];
      const char* bucket = pktgen::SizeBucketName(b);
      if (s.is_object() && s.contains(bucket)) {
        out += " " + Cell(Num(s[bucket], "p50")) + " " + Cell(Num(s[bucket], "p99"));
      } else {
        out += " NaN NaN";
      }
    }
    out += "\n";
  }
  return out;
}

// How a line is drawn: its colour, and a dash and point type for its variant. Several runs
// side by side get a colour per run and a dash/point per class, so that 15 lines stay readable.
struct LineStyle {
  size_t color;
  size_t variant;
};

std::string SlowdownPlotBody(const std::string& data, const std::vector<std::string>& labels,
                             const std::string& title, bool with_p50,
                             const std::vector<LineStyle>& styles = {}) {
  std::string body = fmt::format(
      "set title {}\nset xlabel \"message size\"\nset ylabel \"slowdown (completion time / "
      "best time on the unloaded path)\"\nset logscale y\nset yrange [0.9:*]\n"
      "set xrange [-0.5:{}]\nset style data linespoints\nplot ",
      Quote(title), pktgen::kSizeBuckets - 0.5);
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i != 0) body += ", \\\n     ";
    static constexpr int kPoints[] = {7, 5, 9, 11, 13};  // filled circle, square, triangles...
    const LineStyle st = i < styles.size() ? styles[i] : LineStyle{i, 0};
    body += fmt::format("{} using 1:{}:xtic(2) title {} lw 2 pt {} dt {} lc {}", Quote(data),
                        4 + 2 * i, Quote(labels[i] + " p99"), kPoints[st.variant % 5],
                        st.variant % 5 + 1, st.color + 1);
    if (with_p50) {
      body += fmt::format(", \\\n     {} using 1:{} title {} lw 1 dt 2 pt 6 lc {}", Quote(data),
                          3 + 2 * i, Quote(labels[i] + " p50"), st.color + 1);
    }
  }
  return body;
}

}  // namespace

const nlohmann::json& ReportOf(const nlohmann::json& document) {
  if (document.contains("report") && document["report"].is_object()) return document["report"];
  return document;
}

Status WriteJsonFile(const std::string& path, const nlohmann::json& document) {
  const fs::path p(path);
  if (p.has_parent_path()) {
    if (Status s = EnsureDir(p.parent_path().string()); !s.ok()) return s;
  }
  return WriteText(p, document.dump(2) + "\n");
}

Result<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::Error(fmt::format("{}: cannot open", path));
  try {
    nlohmann::json j = nlohmann::json::parse(in);
    if (!ReportOf(j).contains("classes")) {
      return Status::Error(
          fmt::format("{}: not a qosgen run report (no 'classes'); give files "
                      "written by qosgen run --json",
                      path));
    }
    return j;
  } catch (const nlohmann::json::exception& e) {
    return Status::Error(fmt::format("{}: not valid JSON: {}", path, e.what()));
  }
}

Status WriteCsv(const std::string& dir, const nlohmann::json& report) {
  if (Status s = EnsureDir(dir); !s.ok()) return s;
  for (const char* kind : {"latency_ns", "completion_ns"}) {
    std::string out = "class,lower_ns,upper_ns,count\n";
    for (const auto& c : report["classes"]) {
      for (const auto& row : c.value(std::string(kind) + "_buckets", nlohmann::json::array())) {
        out += fmt::format("{},{},{},{}\n", c.value("class", ""), row[0].get<uint64_t>(),
                           row[1].get<uint64_t>(), row[2].get<uint64_t>());
      }
    }
    if (Status s = WriteText(fs::path(dir) / (std::string(kind) + ".csv"), out); !s.ok()) return s;
  }
  const double bin_s = report.value("bin_s", 0.1);
  std::string out = "class,t_s,bps\n";
  for (const auto& c : report["classes"]) {
    size_t i = 0;
    for (const auto& bytes : c.value("rx_bytes_per_bin", nlohmann::json::array())) {
      out += fmt::format("{},{:.3f},{:.0f}\n", c.value("class", ""), static_cast<double>(i) * bin_s,
                         bytes.get<double>() * 8 / bin_s);
      ++i;
    }
  }
  return WriteText(fs::path(dir) / "throughput.csv", out);
}

bool GnuplotAvailable() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  std::string d;
  while (std::getline(dirs, d, ':')) {
    if (!d.empty() && access((fs::path(d) / "gnuplot").c_str(), X_OK) == 0) return true;
  }
  return false;
}

Status WritePlots(const std::string& dir_name, const nlohmann::json& report,
                  const std::string& title) {
  if (Status s = EnsureDir(dir_name); !s.ok()) return s;
  const fs::path dir(dir_name);
  std::vector<const nlohmann::json*> classes;
  std::vector<std::string> labels;
  for (const auto& c : report["classes"]) {
    classes.push_back(&c);
    labels.push_back(fmt::format("{} ({})", c.value("class", ""), c.value("sizes", "")));
  }
  if (classes.empty()) return Status::Error("plots: the report has no classes");

  // Slowdown by message size.
  const fs::path slow = dir / "slowdown.dat";
  if (Status s = WriteText(slow, SlowdownTable(classes)); !s.ok()) return s;
  if (Status s = Plot(
          dir, "slowdown",
          SlowdownPlotBody(slow.string(), labels,
                           title + ": slowdown by message size (solid p99, dashed p50)", true));
      !s.ok()) {
    return s;
  }

  // Latency CDF: one data block per class, (upper edge in µs, cumulative fraction).
  std::string cdf;
  std::string body = fmt::format(
      "set title {}\nset xlabel \"one-way packet latency (us)\"\nset ylabel \"fraction of "
      "packets <= latency\"\nset logscale x\nset yrange [0:1.02]\nset key bottom right inside\n"
      "plot ",
      Quote(title + ": packet latency CDF per class"));
  bool any = false;
  for (size_t i = 0; i < classes.size(); ++i) {
    const auto& rows = classes[i]->value("latency_ns_buckets", nlohmann::json::array());
    uint64_t total = 0;
    for (const auto& r : rows) total += r[2].get<uint64_t>();
    cdf += fmt::format("# {}\n", labels[i]);
    uint64_t seen = 0;
    for (const auto& r : rows) {
      seen += r[2].get<uint64_t>();
      cdf += fmt::format("{:.4f} {:.6f}\n", std::max(1.0, r[1].get<double>()) / 1000.0,
                         static_cast<double>(seen) / static_cast<double>(total));
    }
    if (rows.empty()) cdf += "NaN NaN\n";
    cdf += "\n\n";
    body +=
        fmt::format("{}{} index {} using 1:2 with steps lw 2 title {}", any ? ", \\\n     " : "",
                    Quote((dir / "latency_cdf.dat").string()), i, Quote(labels[i]));
    any = true;
  }
  if (Status s = WriteText(dir / "latency_cdf.dat", cdf); !s.ok()) return s;
  if (Status s = Plot(dir, "latency_cdf", body); !s.ok()) return s;

  // Throughput over time, per class, Mbps per 100 ms bin.
  const double bin_s = report.value("bin_s", 0.1);
  std::string tput;
  body = fmt::format(
      "set title {}\nset xlabel \"time since start (s)\"\nset ylabel \"received Mbps (per {:.0f} "
      "ms)\"\nset yrange [0:*]\nplot ",
      Quote(title + ": throughput over time per class"), bin_s * 1000);
  for (size_t i = 0; i < classes.size(); ++i) {
    tput += fmt::format("# {}\n", labels[i]);
    size_t k = 0;
    for (const auto& bytes : classes[i]->value("rx_bytes_per_bin", nlohmann::json::array())) {
      tput += fmt::format("{:.3f} {:.3f}\n", (static_cast<double>(k) + 0.5) * bin_s,
                          bytes.get<double>() * 8 / bin_s / 1e6);
      ++k;
    }
    if (k == 0) tput += "NaN NaN\n";
    tput += "\n\n";
    body += fmt::format("{}{} index {} using 1:2 with lines lw 2 title {}", i ? ", \\\n     " : "",
                        Quote((dir / "throughput.dat").string()), i, Quote(labels[i]));
  }
  if (Status s = WriteText(dir / "throughput.dat", tput); !s.ok()) return s;
  return Plot(dir, "throughput", body);
}

Status WriteComparePlot(const std::string& dir_name, const std::vector<nlohmann::json>& reports,
                        const std::vector<std::string>& names) {
  if (Status s = EnsureDir(dir_name); !s.ok()) return s;
  const fs::path dir(dir_name);
  std::vector<const nlohmann::json*> classes;
  std::vector<std::string> labels;
  std::vector<LineStyle> styles;
  for (size_t r = 0; r < reports.size(); ++r) {
    size_t k = 0;
    for (const auto& c : ReportOf(reports[r])["classes"]) {
      classes.push_back(&c);
      labels.push_back(fmt::format("{}: {}", names[r], c.value("class", "")));
      styles.push_back(reports.size() == 1 ? LineStyle{k, 0} : LineStyle{r, k});
      ++k;
    }
  }
  if (classes.empty()) return Status::Error("compare: the reports have no classes");
  const fs::path data = dir / "compare.dat";
  if (Status s = WriteText(data, SlowdownTable(classes)); !s.ok()) return s;
  return Plot(dir, "compare",
              SlowdownPlotBody(data.string(), labels,
                               "p99 slowdown by message size (lower is better)", false, styles));
}

std::string FormatCompare(const std::vector<nlohmann::json>& reports,
                          const std::vector<std::string>& names) {
  std::string out = fmt::format("{:<16} {:<12} {:>9} {:>8}", "run", "class", "Mbps", "loss%");
  for (int b = 0; b < pktgen::kSizeBuckets; ++b) {
    out += fmt::format(" {:>18}", fmt::format("{} p50/p99", pktgen::SizeBucketName(b)));
  }
  out += "\n";
  for (size_t r = 0; r < reports.size(); ++r) {
    for (const auto& c : ReportOf(reports[r])["classes"]) {
      const double sent = c.value("sent_packets", 0.0);
      const double lost = c.value("lost_packets", 0.0);
      out += fmt::format("{:<16} {:<12} {:>9.1f} {:>8.3f}", names[r], c.value("class", ""),
                         c.value("throughput_bps", 0.0) / 1e6, sent > 0 ? 100 * lost / sent : 0.0);
      for (int b = 0; b < pktgen::kSizeBuckets; ++b) {
        const char* bucket = pktgen::SizeBucketName(b);
        const auto& s = c["slowdown"];
        std::string cell = "-";
        if (s.is_object() && s.contains(bucket)) {
          cell = fmt::format("{:.1f}/{:.1f}", Num(s[bucket], "p50"), Num(s[bucket], "p99"));
          const uint64_t incomplete = s[bucket].value("incomplete", uint64_t{0});
          if (incomplete != 0) cell += fmt::format(" ~{}", incomplete);
        }
        out += fmt::format(" {:>18}", cell);
      }
      out += "\n";
    }
  }
  out +=
      "~N: N messages of that size were sent whole and never completed (packets lost); they are "
      "not in p50/p99\n";
  return out;
}

std::string FormatProgress(double elapsed_s, double total_s, double offered_bps,
                           double received_bps, uint64_t sent, uint64_t received, bool receiving) {
  const std::string head =
      fmt::format("{:6.1f}s / {:.1f}s ({:5.1f}s left)  offered {:>10}", elapsed_s, total_s,
                  std::max(0.0, total_s - elapsed_s), Mbps(offered_bps));
  if (!receiving) return fmt::format("{}  sent {} pkts (sink: nothing received)", head, sent);
  const uint64_t lost = sent > received ? sent - received : 0;
  return fmt::format("{}  received {:>10}  loss so far {:.3f}% ({} of {} pkts, in flight included)",
                     head, Mbps(received_bps),
                     sent ? 100.0 * static_cast<double>(lost) / static_cast<double>(sent) : 0.0,
                     lost, sent);
}

std::string FormatNdrTrial(const pktgen::NdrTrial& t, size_t index) {
  return fmt::format("trial {:>2}: offered {:>12}  sent {:>10}  received {:>10}  loss {:.4f}%  {}",
                     index + 1, Mbps(static_cast<double>(t.rate_bps)), t.sent, t.received,
                     t.loss * 100, t.pass ? "pass" : "FAIL");
}

std::string FormatNdrResult(const pktgen::NdrResult& r, double loss) {
  const char* what = loss > 0 ? "PDR" : "NDR";
  if (!r.found) {
    return fmt::format("{}: not found: even the lowest rate lost more than {:.4f}% ({} trials)",
                       what, loss * 100, r.trials.size());
  }
  return fmt::format("{} (loss <= {:.4f}%): {} ({} bps) after {} trials", what, loss * 100,
                     Mbps(static_cast<double>(r.rate_bps)), r.rate_bps, r.trials.size());
}

}  // namespace qosvisor::app
