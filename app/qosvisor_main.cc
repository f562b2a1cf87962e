// qosvisor: the appliance. `check FILE` validates a configuration and prints it normalized;
// `run FILE` builds the switch, schedulers and VMs it describes and serves the control socket.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>

#include "common/units.h"
#include "config/loader.h"
#include "control/appliance.h"

namespace {

using namespace qosvisor;

constexpr int kExitStartFailed = 1;
constexpr int kExitBadConfig = 2;

std::atomic<control::Appliance*> g_running{nullptr};

void OnSignal(int) {
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

int Run(const std::string& path, const std::string& duration, const std::string& socket) {
  uint64_t duration_ns = 0;
  if (!duration.empty()) {
    auto parsed = ParseDuration(duration);
    if (!parsed.ok()) {
      std::fprintf(stderr, "--duration: %s\n", parsed.message().c_str());
      return kExitBadConfig;
    }
    duration_ns = *parsed;
  }
  auto config = LoadOrReport(path);
  if (!config) return kExitBadConfig;
  control::ApplianceOptions options;
  options.config_path = path;
  options.socket_override = socket;
  auto appliance = control::Appliance::Build(*config, options);
  if (!appliance.ok()) {
    std::fprintf(stderr, "qosvisor: cannot start: %s\n", appliance.message().c_str());
    return kExitStartFailed;
  }
  for (const std::string& line : (*appliance)->startup_log()) std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  g_running.store(appliance->get());
  (*appliance)->Run(duration_ns);
  g_running.store(nullptr);
  std::printf("%s\n", (*appliance)->PortsJson().dump(2).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  InstallSignalHandlers();
  CLI::App app{"qosvisor: edge appliance with a per-message QoS switch and a KVM VMM"};
  app.set_version_flag("--version", "qosvisor 0.1.0");
  app.require_subcommand(1);

  std::string check_file;
  auto* check = app.add_subcommand("check", "Validate a configuration; print it normalized");
  check->add_option("FILE", check_file, "YAML configuration")->required();

  std::string run_file, duration, socket;
  auto* run = app.add_subcommand("run", "Run the appliance described by a configuration");
  run->add_option("FILE", run_file, "YAML configuration")->required();
  run->add_option("--duration", duration, "Stop after this long (e.g. 30s); default: until signal");
  run->add_option("--socket", socket, "Control socket path (overrides control.socket)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitBadConfig;
  }
  if (*check) return Check(check_file);
  return Run(run_file, duration, socket);
}
