// The top view: samples `ports`, `stats` and `vms` once a second, prints per-second rates, and
// reads the keyboard in non-canonical mode so that a single `q` quits.
#include "app/qosctl_top.h"

#include <fmt/format.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "control/control_server.h"

namespace qosvisor::app {
namespace {

using nlohmann::json;

// The terminal in non-canonical, no-echo mode while top runs; restored on the way out.
class RawTerminal {
 public:
  RawTerminal() {
    if (::tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }

 private:
  termios saved_{};
  bool active_ = false;
};

// True when `q` was typed within `ms` milliseconds.
bool QuitWithin(int ms) {
  pollfd p{STDIN_FILENO, POLLIN, 0};
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < end) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char c = 0;
    if (::read(STDIN_FILENO, &c, 1) != 1) return true;  // input closed: nobody watches
    if (c == 'q' || c == 'Q') return true;
  }
  return false;
}

double Rate(const json& now, const json& before, const char* key, double seconds) {
  if (before.is_null() || seconds <= 0) return 0;
  return (now.value(key, 0.0) - before.value(key, 0.0)) / seconds;
}

std::string Screen(const json& ports, const json& stats, const json& vms,
                   std::map<std::string, json>& last, double seconds) {
  std::string out = "\033[H\033[2J";  // home, clear
  out += fmt::format("qosvisor top — every 1 s, q quits\n\n{:<16} {:>12} {:>12} {:>10} {:>10}\n",
                     "port", "rx pkt/s", "tx pkt/s", "rx Mb/s", "tx Mb/s");
  for (const json& p : ports) {
    const std::string key = "port/" + p.value("name", "");
    const json& b = last[key];
    out += fmt::format("{:<16} {:>12.0f} {:>12.0f} {:>10.1f} {:>10.1f}\n", p.value("name", ""),
                       Rate(p, b, "rx_packets", seconds), Rate(p, b, "tx_packets", seconds),
                       Rate(p, b, "rx_bytes", seconds) * 8 / 1e6,
                       Rate(p, b, "tx_bytes", seconds) * 8 / 1e6);
    last[key] = p;
  }
  for (const json& u : stats.value("uplinks", json::array())) {
    out += fmt::format(
        "\nuplink {}: {} messages, {} packets queued\n{:<14} {:>12} {:>10} {:>10} {:>10}\n",
        u.value("port", ""), u.value("live_messages", 0ull), u.value("queued_packets", 0ull),
        "class", "out pkt/s", "Mb/s", "drop/s", "queued");
    for (const json& c : u["classes"]) {
      const std::string key = "class/" + u.value("port", "") + "/" + c.value("class", "");
      const json& b = last[key];
      out += fmt::format("{:<14} {:>12.0f} {:>10.1f} {:>10.0f} {:>10}\n", c.value("class", ""),
                         Rate(c, b, "dequeued_packets", seconds),
                         Rate(c, b, "dequeued_bytes", seconds) * 8 / 1e6,
                         Rate(c, b, "dropped_packets", seconds), c.value("queued_packets", 0ull));
      last[key] = c;
    }
  }
  if (!vms.empty()) {
    out += fmt::format("\n{:<14} {:<10} {:>10}\n", "vm", "state", "exits/s");
    for (const json& v : vms) {
      const std::string key = "vm/" + v.value("name", "");
      out += fmt::format("{:<14} {:<10} {:>10.0f}\n", v.value("name", ""), v.value("state", ""),
                         Rate(v, last[key], "exits", seconds));
      last[key] = v;
    }
  }
  return out;
}

}  // namespace

int RunTop(const std::string& socket) {
  RawTerminal terminal;
  std::map<std::string, json> last;
  std::chrono::steady_clock::time_point previous{};
  for (;;) {
    bool unreachable = false;
    auto ports = control::Request(socket, "ports", json::object(), 5000, &unreachable);
    auto stats = control::Request(socket, "stats", json::object(), 5000, &unreachable);
    auto vms = control::Request(socket, "vms", json::object(), 5000, &unreachable);
    if (!ports.ok() || !vms.ok()) {
      std::fprintf(stderr, "\nqosctl top: %s\n", (!ports.ok() ? ports : vms).message().c_str());
      return unreachable ? 3 : 1;
    }
    // Rates over the time between this sample and the one before (none on the first screen).
    const auto now = std::chrono::steady_clock::now();
    const double seconds = previous == std::chrono::steady_clock::time_point{}
                               ? 0.0
                               : std::chrono::duration<double>(now - previous).count();
    previous = now;
    std::fputs(Screen(*ports, stats.ok() ? *stats : json::object(), *vms, last, seconds).c_str(),
               stdout);
    std::fflush(stdout);
    if (QuitWithin(1000)) return 0;
  }
}

}  // namespace qosvisor::app
