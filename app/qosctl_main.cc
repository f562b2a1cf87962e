// qosctl: the control CLI. Talks JSON lines to a running qosvisor over its Unix socket.
// Every command prints a table (or --json the reply itself). Exit codes: 0 done, 1 the operation
// failed (the reason on stderr), 2 usage error, 3 no daemon answered on the socket.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <vector>

#include "app/images_format.h"
#include "app/man_page.h"
#include "app/pages_format.h"
#include "app/qosctl_top.h"
#include "app/status_format.h"
#include "common/units.h"
#include "control/control_server.h"

namespace {

using nlohmann::json;

constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitUnreachable = 3;

std::string DefaultSocket() {
  const char* env = std::getenv("QOSVISOR_SOCKET");
  return env != nullptr ? env : "/run/qosvisor/qosvisor.sock";
}

bool IsJobAction(const std::string& action) {
  return action == "snapshot" || action == "restore" || action == "fork" || action == "suspend" ||
         action == "migrate" || action == "premigrate";
}

const std::vector<std::string> kVmActions = {"create", "start",   "stop",    "pause",
                                             "resume", "destroy", "resize",  "snapshot",
                                             "restore", "fork",   "suspend", "migrate",
                                             "pages",   "premigrate"};

bool IsVmAction(const std::string& word) {
  return std::find(kVmActions.begin(), kVmActions.end(), word) != kVmActions.end();
}

// `vm ACTION NAME ...` (as in `qosctl vm create web --template small`) is read as
// `vm NAME ACTION ...`; when both words are actions, as written.
std::vector<std::string> VerbFirstVmAsWritten(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto vm = std::find(args.begin(), args.end(), "vm");
  if (vm != args.end() && args.end() - vm >= 3 && IsVmAction(vm[1]) && !IsVmAction(vm[2]) &&
      vm[2].rfind("-", 0) != 0) {
    std::swap(vm[1], vm[2]);
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes them last first
  return args;
}

// One line of progress, redrawn in place on a terminal.
void DrawProgress(const json& job) {
  const double done = job.value("bytes_done", 0.0), total = job.value("bytes_total", 0.0);
  const int width = 30;
  const int filled = total > 0 ? static_cast<int>(width * done / total) : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, total > 0 ? '.' : ' ');
  std::fprintf(stderr, "\r\033[Kjob %llu [%s] %3.0f%% %s, %.0f MiB/s",
               static_cast<unsigned long long>(job.value("id", 0)), bar.c_str(),
               total > 0 ? 100 * done / total : 0.0, job.value("phase", "").c_str(),
               job.value("rate_bytes_per_s", 0.0) / (1 << 20));
  if (job.contains("detail") && job["detail"].contains("dirty_pages_per_s")) {
    const json& d = job["detail"];
    std::fprintf(stderr, ", %.0f pages/s dirtied, expected downtime %.0f ms, throttle %u%%",
                 d.value("dirty_pages_per_s", 0.0), d.value("expected_downtime_ms", 0.0),
                 d.value("throttle_percent", 0u));
  }
  std::fflush(stderr);
}

// Waits for job `id`, with a progress bar on a terminal; returns its final description.
qosvisor::Result<json> WaitForJob(const std::string& socket, uint64_t id) {
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  for (;;) {
    auto job = qosvisor::control::Request(socket, "job", {{"id", id}}, 30000);
    if (!job.ok()) return job.status();
    if ((*job)["state"] != "running") {
      if (tty) std::fprintf(stderr, "\r\033[K");
      return job;
    }
    if (tty) DrawProgress(*job);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

qosvisor::app::ManPage Page() {
  qosvisor::app::ManPage page;
  page.name = "qosctl";
  page.summary = "control a running qosvisor";
  page.synopsis = {"qosctl [--socket PATH] [--json] COMMAND [ARGUMENTS] [OPTIONS]",
                   "qosctl [COMMAND] --help"};
  page.description = {
      "qosctl sends one command to a running qosvisor over its control socket (JSON lines) and "
      "prints the reply as a table, or with --json as the daemon sent it. Long operations "
      "(snapshot, restore, fork, suspend, resume of a suspended VM, deploy, undeploy) run as "
      "jobs in the daemon: qosctl waits for them, with a progress bar on a terminal, unless "
      "--no-wait.",
      "Who may do what: root and the user qosvisor runs as may use every command. Other members "
      "of the configuration's control.group may use the read-only commands (status, ports, "
      "stats, vms, bridges, classes, jobs, job, apps, quota, hosts, place, flows dump) and create and "
      "destroy their own VMs (vm NAME create, vm NAME destroy) and apps (deploy, undeploy) "
      "within the quotas the configuration (quotas:) gives their user and their groups; "
      "everything else is refused, naming the rule or the quota (e.g. \"quota of group devs: "
      "vcpus 4, in use 3, asked 2\").",
  };
  page.command_details = {
      {"vm",
       {"ACTION is create (from --template T, with --set KEY=VALUE overrides of memory, vcpus, "
        "class, disk_size or cmdline; the VM belongs to the caller and is charged to its "
        "quotas), start, stop, pause, resume, destroy, resize SIZE (grow its vflash disk "
        "online), snapshot DIR [--stop], restore DIR [--as NEW], fork N [--prefix P], "
        "suspend DIR [--force], or migrate HOST (live, to a host of the fleet registry, an "
        "entry of hosts: or host:port; root only). Snapshot, restore, fork, suspend, migrate "
        "and the resume of a suspended VM run as jobs; a migration's job shows its phase, "
        "round, bytes sent, dirty rate and expected downtime.",
        "pages shows what the page tracker learnt of the VM's memory: its page-change rate, the "
        "pages changed within the counters' window and, per 2 MiB region, the counter (0 to "
        "2^counter_bits - 1), heat (cold, warm, hot), pages changed at the last harvest, pages "
        "populated, the harvests of the last 8 that changed it, and the huge-page decision and "
        "whether the policy gave it a huge page; on a terminal a heat strip comes first.",
        "premigrate [HOST,...] copies the frozen image the VM's fork family shares to the hosts "
        "(default: every other live host of the fleet registry that takes migrations), paced to "
        "--rate or migration.bandwidth; a child migrating there later sends only its own pages. "
        "--drop asks the hosts to remove it instead. Root only."}},
      {"images",
       {"The frozen images this box holds for fork families on other hosts (id, size, bytes on "
        "disk, parent and source host, whether a VM here uses it) and those it copied to other "
        "hosts (to which). rm ID removes a held image now, or once the VMs here that use it are "
        "gone. Removing is root only."}},
      {"deploy",
       {"Creates every tier's VMs of a blueprint of the configuration, named APP-TIER-I, tier "
        "after tier in dependency order: a tier starts once the tiers it depends on run and, "
        "where their template gives ready: TEXT, once each of their guests printed TEXT on its "
        "serial line (within the template's ready_timeout, default 60s). If a tier fails, the "
        "VMs this deploy made are destroyed in reverse order and the error names the tier and "
        "why. The whole blueprint is checked against the caller's quotas before anything "
        "starts.",
        "On a box with fleet:, the VMs are spread over the fleet: each tier's VMs go round-robin "
        "to the live hosts with room in their budget (vCPUs, memory), most room first; a fleet "
        "that cannot hold the app, an app name or VM name in use on any host, or an etcd that "
        "does not answer refuses the deploy before anything starts. Each host makes what is "
        "assigned to it (its configuration needs the blueprint and the templates too); a wave "
        "starts once every VM of the waves before it is ready, on whatever host; a tier that "
        "fails on any host, or a host that leaves the registry, rolls the deploy back on every "
        "host, newest VM first. Should the deploying box die midway, its etcd lease ends within "
        "fleet.lease_ttl and every host destroys what it made for the app."}},
      {"undeploy",
       {"Destroys an app's VMs, in reverse order of their creation, as a job; with fleet:, on "
        "every host of the fleet, from any box."}},
      {"apps",
       {"One line per tier: the app, its blueprint, owner and state (deploying, running, "
        "undeploying; with fleet: also rolling-back), the tier and its VMs; with fleet:, the apps "
        "of the whole fleet, each VM with the host it runs on and the state that host reports "
        "(requested, creating, running, ready, failed, destroying)."}},
      {"quota",
       {"The quotas that bind you (your user's and your groups'), their limits and what "
        "is charged to each; root and the daemon's user are bound by none."}},
      {"uplinks",
       {"For each uplink (or PORT's): line and pacing rate; packets and bytes queued against the "
        "buffer; messages queued and live in the message table; drops by reason (per class: "
        "tail, worst, message_limit; per uplink: reconfigured, unknown class); each class's "
        "wait in the scheduler at the 50th and 99th percentile since start (the upper bound of "
        "its power-of-two bucket); the --top N messages holding the most queued bytes, with "
        "what they have sent and how long their oldest packet has waited (\"7+\": more packets "
        "than are counted cheaply); and per class a bar chart of how far the ranks of queued "
        "heads lie from the one sent next, in the policy's unit (bytes for srpt and las, time "
        "for fifo, priority, edf and pace, start tags for wfq), from up to 4096 heads read. "
        "The uplink's worker scans its message table for this at one poll, so root and the "
        "daemon's user only."}},
      {"hosts",
       {"The boxes of the fleet registry in etcd (needs a fleet: section): each host's name, "
        "whether a running daemon holds its record (alive), the VMs it runs, its vCPUs, memory "
        "and uplink bandwidth in use against the budget it offers, its migration address and its "
        "labels. A host whose daemon stops leaves the list at once; one whose daemon dies, "
        "within its lease_ttl."}},
      {"place",
       {"Names the host VM (running anywhere in the fleet) should go to: a live host with a "
        "migration listener and room in its budget (vCPUs, memory, uplink) that runs no VM of an "
        "anti-affinity group VM belongs to (fleet.anti_affinity on any box), the one whose VMs "
        "change the fewest pages a second, so that VMs writing much memory spread apart. Any "
        "box of the fleet answers; members of groups that run nowhere are warned about in its "
        "log."}},
      {"rebalance",
       {"Finds the hosts over their budget (vCPUs, memory, uplink) or running two VMs of one "
        "anti-affinity group and plans the migrations that fix them: the VM that leaves is the "
        "one with the fewest changed pages (fleet.rebalance.choose: lowest-page-rate or "
        "smallest-memory instead), its destination as for place. --dry-run prints the plan; "
        "otherwise a job runs the moves one at a time, each carried out by the VM's host (the "
        "leader asks through etcd and waits for the outcome), and stops at the first failure, "
        "saying what ran, what failed and why, and what was not tried. One daemon of the fleet "
        "plans (the leader, shown by status); on another, rebalance fails naming the leader. "
        "Root only."}},
      {"flows",
       {"add and del apply at once and last until the appliance restarts (or a reload "
        "replaces the bridge's rules from the file)."}},
  };
  page.exit_status = {{"0", "done"},
                      {"1", "the operation failed or was refused (the reason on stderr)"},
                      {"2", "usage error (unknown command, missing or bad argument)"},
                      {"3", "no daemon answered on the control socket"}};
  page.files = {{"/run/qosvisor/qosvisor.sock", "the default control socket (control.socket)"},
                {"/etc/qosvisor/qosvisor.yaml", "the configuration the packaged unit runs"}};
  page.environment = {{"QOSVISOR_SOCKET", "the control socket when --socket is not given"}};
  page.examples = {
      {"qosctl status", "uptime, EAL, mempool"},
      {"qosctl --json vms", "the VMs as JSON, with owner and app"},
      {"qosctl vm web create --template small --set memory=128MiB",
       "a VM from a template, charged to your quotas"},
      {"qosctl vm web snapshot /srv/snap/web", "save a running VM (a job)"},
      {"qosctl flows add br0 \"priority=10,udp,tp_dst=53,actions=set_queue:1,NORMAL\"",
       "a flow rule, live"},
      {"qosctl deploy shop --name shop-test", "a blueprint's VMs, tier by tier"},
      {"qosctl apps; qosctl undeploy shop-test", "what is deployed; take it down again"},
      {"qosctl reload --dry-run", "what reloading the file would change"},
      {"qosctl uplinks uplink0 --top 5", "which messages hold uplink0's backlog"},
      {"qosctl hosts", "the fleet: every box's budget and load"},
      {"qosctl rebalance --dry-run", "the migrations that would bring the fleet within budgets"},
  };
  return page;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"control a running qosvisor"};
  app.formatter(qosvisor::app::ManPageFormatter(Page()));
  std::string socket = DefaultSocket();
  bool as_json = false;
  app.add_option("-s,--socket", socket,
                 "Control socket (default: $QOSVISOR_SOCKET or /run/qosvisor/qosvisor.sock)")
      ->type_name("PATH");
  app.add_flag("--json", as_json, "Print the raw JSON reply");
  app.require_subcommand(1);
  auto* status = app.add_subcommand("status", "Uptime, EAL, mempool");
  auto* ports = app.add_subcommand("ports", "Per-port counters and link state");
  auto* stats = app.add_subcommand("stats", "Switch counters and per-class scheduler statistics");
  auto* vms = app.add_subcommand("vms", "The VMs, their states, owners and apps");
  auto* vm = app.add_subcommand(
      "vm",
      "Start, stop, pause, resume or destroy a VM; resize its disk; snapshot, restore, fork or "
      "suspend it (these run as jobs: qosctl waits, with a progress bar on a terminal)");
  std::string vm_name, vm_action, vm_arg, vm_as, vm_prefix, vm_template;
  std::vector<std::string> vm_sets;
  bool vm_stop = false, vm_force = false, vm_drop = false, no_wait = false;
  std::string vm_rate;
  vm->add_option("NAME", vm_name, "VM name (vm ACTION NAME is read the same way)")->required();
  vm->add_option("ACTION", vm_action,
                 "create | start | stop | pause | resume | destroy | resize SIZE | snapshot DIR | "
                 "restore DIR | fork N | suspend DIR | migrate HOST | pages (what its memory "
                 "does: page-change counters per 2 MiB, huge pages) | premigrate [HOST,...] (copy "
                 "the frozen image of its fork family ahead to hosts; default: the fleet's)")
      ->required()
      ->check(CLI::IsMember(kVmActions));
  vm->add_option("--template", vm_template, "create: the template the VM is made from")
      ->type_name("T");
  vm->add_option("--set", vm_sets,
                 "create: KEY=VALUE overriding the template (memory, vcpus, class, disk_size, "
                 "cmdline); repeat")
      ->type_name("KEY=VALUE");
  vm->add_option("ARG", vm_arg,
                 "resize: new size (2GiB); snapshot/restore/suspend: directory; "
                 "fork: number of children; migrate: destination host");
  vm->add_option("--as", vm_as, "restore: the restored VM's name (default NAME)")->type_name("NEW");
  vm->add_option("--prefix", vm_prefix, "fork: children are named PREFIX-1.. (default NAME)")
      ->type_name("P");
  vm->add_flag("--stop", vm_stop, "snapshot: leave the VM stopped afterwards");
  vm->add_flag("--drop", vm_drop,
               "premigrate: ask the hosts to remove the family's image instead of copying it");
  vm->add_option("--rate", vm_rate, "premigrate: pace the copy to RATE (default: migration.bandwidth)")
      ->type_name("RATE");
  vm->add_flag("--force", vm_force,
               "suspend: suspend a parent even though children share its frozen image");
  vm->add_flag("--no-wait", no_wait, "print the job id and return at once");
  auto* jobs =
      app.add_subcommand("jobs", "Snapshot, restore, fork, suspend, deploy and undeploy jobs");
  auto* job = app.add_subcommand("job", "One job's phase, progress and result");
  uint64_t job_id = 0;
  job->add_option("ID", job_id, "job id")->required();
  auto* bridges = app.add_subcommand("bridges", "Bridges, their ports and OpenFlow numbers");
  auto* flows = app.add_subcommand(
      "flows", "A bridge's flow rules: dump, add RULE or del MATCH (ovs-ofctl syntax), live");
  std::string flows_action, flows_bridge, flows_rule;
  bool flows_all = false;
  flows->add_option("ACTION", flows_action, "dump | add | del")
      ->required()
      ->check(CLI::IsMember({"dump", "add", "del"}));
  flows->add_option("BRIDGE", flows_bridge, "bridge name")->required();
  flows->add_option("RULE", flows_rule,
                    "add: a rule, e.g. \"priority=10,udp,tp_dst=53,actions=set_queue:1,NORMAL\"; "
                    "del: the match of the rules to delete (as written, without actions)");
  flows->add_flag("--all", flows_all, "del: every rule of the bridge");
  auto* classes = app.add_subcommand("classes", "Traffic classes and their counters per uplink");
  auto* uplinks = app.add_subcommand(
      "uplinks",
      "Per uplink: queue depth, drops by reason, waits, top messages by backlog, rank histograms");
  std::string uplinks_port;
  uint32_t uplinks_top = 10;
  uplinks->add_option("PORT", uplinks_port, "one uplink's port (default: every uplink)");
  uplinks->add_option("--top", uplinks_top, "list this many messages, 1 to 100 (default 10)")
      ->type_name("N")
      ->check(CLI::Range(1u, 100u));
  uplinks->add_flag("--json", as_json, "Print the raw JSON reply");
  auto* capture = app.add_subcommand(
      "capture", "Write a port's packets (both ways) to a pcap file, until --count or --duration");
  std::string capture_port, capture_file, capture_duration;
  uint64_t capture_count = 0;
  capture->add_option("PORT", capture_port, "port name")->required();
  capture
      ->add_option("FILE", capture_file, "pcap file to write (tshark, tcpdump, wireshark read it)")
      ->required();
  capture->add_option("--count", capture_count, "stop after this many packets")->type_name("N");
  capture->add_option("--duration", capture_duration, "stop after this long, e.g. 5s")
      ->type_name("D");
  auto* fdb = app.add_subcommand("fdb", "The addresses a bridge has learned, by port and VLAN");
  std::string fdb_bridge;
  fdb->add_option("BRIDGE", fdb_bridge, "bridge name")->required();
  auto* reload = app.add_subcommand(
      "reload", "Read the configuration file again and apply what changed, live (as SIGHUP does)");
  bool dry_run = false;
  reload->add_flag("--dry-run", dry_run, "only print what would change");
  auto* deploy = app.add_subcommand(
      "deploy", "Create a blueprint's VMs tier by tier in dependency order, as a job");
  std::string deploy_blueprint, deploy_name;
  deploy->add_option("BLUEPRINT", deploy_blueprint, "a blueprint of the configuration")->required();
  deploy->add_option("--name", deploy_name, "the app's name (default BLUEPRINT)")->type_name("APP");
  deploy->add_flag("--no-wait", no_wait, "print the job id and return at once");
  auto* undeploy = app.add_subcommand("undeploy", "Destroy an app's VMs, as a job");
  std::string undeploy_name;
  undeploy->add_option("APP", undeploy_name, "the app (see qosctl apps)")->required();
  undeploy->add_flag("--no-wait", no_wait, "print the job id and return at once");
  auto* apps = app.add_subcommand("apps", "Deployed blueprints: tiers, VMs, owner and state");
  auto* quota = app.add_subcommand("quota", "Your quotas and what is charged to them");
  auto* hosts = app.add_subcommand(
      "hosts", "The fleet's hosts (from etcd): budgets, load, migration addresses, labels");
  hosts->add_flag("--json", as_json, "Print the raw JSON reply");
  auto* place = app.add_subcommand(
      "place", "The host a VM of the fleet should go to (budgets, anti-affinity, page changes)");
  std::string place_vm;
  place->add_option("VM", place_vm, "a VM running on some host of the fleet")->required();
  place->add_flag("--json", as_json, "Print the raw JSON reply");
  auto* rebalance = app.add_subcommand(
      "rebalance",
      "Plan and run the migrations that bring every fleet host within its budget and "
      "anti-affinity rules, one at a time (on the leader)");
  rebalance->add_flag("--dry-run", dry_run, "only print the plan");
  rebalance->add_flag("--no-wait", no_wait, "print the job id and return at once");
  rebalance->add_flag("--json", as_json, "Print the raw JSON reply");
  auto* images = app.add_subcommand(
      "images", "Frozen images pre-migrated to this box (held) and from it (sent); rm ID removes "
                "one held here");
  std::string images_action = "list", images_id;
  images->add_option("ACTION", images_action, "list | rm")
      ->check(CLI::IsMember({"list", "rm"}));
  images->add_option("ID", images_id, "rm: the image's id (see qosctl images)");
  images->add_flag("--json", as_json, "Print the raw JSON reply");
  auto* top = app.add_subcommand("top", "A live view of ports, classes and VMs; q quits");
  auto* stop = app.add_subcommand("stop", "Stop the appliance");
  try {
    std::vector<std::string> args = VerbFirstVmAsWritten(argc, argv);
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }

  if (*top) return qosvisor::app::RunTop(socket);
  const std::string command = *status     ? "status"
                              : *ports    ? "ports"
                              : *stats    ? "stats"
                              : *vms      ? "vms"
                              : *vm       ? "vm"
                              : *jobs     ? "jobs"
                              : *job      ? "job"
                              : *bridges  ? "bridges"
                              : *flows    ? "flows"
                              : *classes  ? "classes"
                              : *uplinks  ? "uplinks"
                              : *fdb      ? "fdb"
                              : *capture  ? "capture"
                              : *reload   ? "reload"
                              : *deploy   ? "deploy"
                              : *undeploy ? "undeploy"
                              : *apps     ? "apps"
                              : *quota    ? "quota"
                              : *hosts    ? "hosts"
                              : *place    ? "place"
                              : *rebalance ? "rebalance"
                              : *images   ? "images"
                              : *stop     ? "stop"
                                          : "";
  json args = json::object();
  if (*job) args = {{"id", job_id}};
  if (*reload && dry_run) args = {{"dry_run", true}};
  if (*fdb) args = {{"bridge", fdb_bridge}};
  if (*images) {
    if (images_action == "rm" && images_id.empty()) {
      std::fprintf(stderr, "qosctl: images rm needs the image's ID\n");
      return kExitUsage;
    }
    args = {{"action", images_action}, {"id", images_id}};
  }
  if (*uplinks) {
    args = {{"top", uplinks_top}};
    if (!uplinks_port.empty()) args["uplink"] = uplinks_port;
  }
  if (*deploy) {
    args = {{"blueprint", deploy_blueprint}};
    if (!deploy_name.empty()) args["name"] = deploy_name;
  }
  if (*undeploy) args = {{"name", undeploy_name}};
  if (*place) args = {{"vm", place_vm}};
  if (*rebalance) args = {{"dry_run", dry_run}};
  if (*capture) {
    if (capture_count == 0 && capture_duration.empty()) {
      std::fprintf(stderr, "qosctl: capture needs --count N or --duration D\n");
      return kExitUsage;
    }
    args = {{"port", capture_port},
            {"file", std::filesystem::absolute(capture_file).lexically_normal().string()},
            {"count", capture_count}};
    if (!capture_duration.empty()) args["duration"] = capture_duration;
  }
  if (*flows) {
    args = {{"bridge", flows_bridge}, {"action", flows_action}, {"rule", flows_rule}};
    if (flows_all) args["all"] = true;
    if (flows_action == "add" && flows_rule.empty()) {
      std::fprintf(stderr, "qosctl: flows add needs the RULE\n");
      return kExitUsage;
    }
  }
  if (*vm) {
    args = {{"name", vm_name}, {"action", vm_action}};
    const bool needs_arg =
        vm_action == "resize" || (IsJobAction(vm_action) && vm_action != "premigrate");
    if (needs_arg && vm_arg.empty()) {
      std::fprintf(stderr, "qosctl: vm %s needs its argument (see qosctl vm --help)\n",
                   vm_action.c_str());
      return kExitUsage;
    }
    if (vm_action == "resize") args["size"] = vm_arg;
    if (vm_action == "migrate") args["to"] = vm_arg;
    if (vm_action == "premigrate") {
      args["to"] = json::array();
      for (size_t at = 0; at < vm_arg.size();) {
        const size_t comma = std::min(vm_arg.find(',', at), vm_arg.size());
        if (comma > at) args["to"].push_back(vm_arg.substr(at, comma - at));
        at = comma + 1;
      }
      if (vm_drop) args["drop"] = true;
      if (!vm_rate.empty()) {
        auto bps = qosvisor::ParseRate(vm_rate);
        if (!bps.ok()) {
          std::fprintf(stderr, "qosctl: --rate: %s\n", bps.message().c_str());
          return kExitUsage;
        }
        args["rate"] = *bps;
      }
    }
    if (vm_action == "snapshot" || vm_action == "restore" || vm_action == "suspend") {
      // The daemon's working directory is not ours.
      args["dir"] = std::filesystem::absolute(vm_arg).lexically_normal().string();
    }
    if (vm_action == "fork") {
      char* end = nullptr;
      const unsigned long n = std::strtoul(vm_arg.c_str(), &end, 10);
      if (end == vm_arg.c_str() || *end != '\0' || n == 0) {
        std::fprintf(stderr, "qosctl: fork needs a positive number of children, got '%s'\n",
                     vm_arg.c_str());
        return kExitUsage;
      }
      args["count"] = n;
    }
    if (vm_action == "create") {
      if (vm_template.empty()) {
        std::fprintf(stderr, "qosctl: vm create needs --template T\n");
        return kExitUsage;
      }
      args["template"] = vm_template;
      args["set"] = json::object();
      for (const std::string& kv : vm_sets) {
        const size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) {
          std::fprintf(stderr, "qosctl: --set '%s': use KEY=VALUE\n", kv.c_str());
          return kExitUsage;
        }
        args["set"][kv.substr(0, eq)] = kv.substr(eq + 1);
      }
    }
    if (!vm_as.empty()) args["as"] = vm_as;
    if (!vm_prefix.empty()) args["prefix"] = vm_prefix;
    if (vm_stop) args["stop"] = true;
    if (vm_force) args["force"] = true;
  }
  bool unreachable = false;
  auto reply = qosvisor::control::Request(socket, command, args, 30000, &unreachable);
  if (!reply.ok()) {
    std::fprintf(stderr, "qosctl: %s\n", reply.message().c_str());
    return unreachable ? kExitUnreachable : kExitFailed;
  }
  if (reply->is_object() && reply->contains("job") && !no_wait) {
    auto done = WaitForJob(socket, (*reply)["job"].get<uint64_t>());
    if (!done.ok()) {
      std::fprintf(stderr, "qosctl: %s\n", done.message().c_str());
      return kExitUnreachable;
    }
    if ((*done)["state"] == "failed") {
      std::fprintf(stderr, "qosctl: %s\n", (*done)["error"].get<std::string>().c_str());
      return kExitFailed;
    }
    reply = std::move(done);
  }
  if (as_json) {
    std::printf("%s\n", reply->dump(2).c_str());
  } else {
    std::string text;
    if (command == "vm" && vm_action == "pages") {
      text = qosvisor::app::FormatPages(*reply, ::isatty(STDOUT_FILENO) == 1);
    } else if (command == "vm" && vm_action == "premigrate" && reply->contains("result")) {
      text = qosvisor::app::FormatPremigration(*reply);
    } else if (command == "images" && reply->contains("held")) {
      text = qosvisor::app::FormatImages(*reply);
    } else {
      text = qosvisor::app::FormatReply(command, *reply);
    }
    std::fputs(text.c_str(), stdout);
  }
  return kExitOk;
}
