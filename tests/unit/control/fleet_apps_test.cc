// Blueprints across the fleet: placement of tiers on hosts (pure), the records in etcd (junk
// refused by name), and against a real etcd the hosts' assignment servers (with VMs made up)
// driven by a coordinator's deploy, rollback and undeploy, and by a coordinator that vanishes.
#include "control/fleet_apps.h"

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "control/fleet_deploy.h"
#include "tests/unit/control/etcd_process.h"

namespace qosvisor::control {
namespace {

using namespace std::chrono_literals;
using testing::Eventually;

FleetHost Host(const std::string& name, uint32_t vcpus = 8, uint64_t memory = 4ull << 30) {
  FleetHost h;
  h.name = name;
  h.budget_vcpus = vcpus;
  h.budget_memory_bytes = memory;
  h.alive = true;
  return h;
}

// db (1 VM) <- api (`api` VMs) <- web (1 VM), each VM 1 vCPU and 64 MiB unless told.
FleetApp ThreeTiers(const std::string& name, uint32_t api = 2, uint32_t vcpus = 1) {
  FleetApp app;
  app.name = name;
  app.blueprint = "shop";
  app.coordinator = "edge-a";
  app.owner = "root";
  const std::pair<std::string, uint32_t> tiers[] = {{"db", 1}, {"api", api}, {"web", 1}};
  for (uint32_t w = 0; w < 3; ++w) {
    FleetAppTier t{tiers[w].first, w, std::nullopt, 2'000'000'000ull, {}};
    for (uint32_t i = 1; i <= tiers[w].second; ++i) {
      t.vms.push_back(
          {fmt::format("{}-{}-{}", name, t.name, i), "tiny", {}, "", vcpus, 64ull << 20});
    }
    app.tiers.push_back(std::move(t));
  }
  return app;
}

std::vector<std::string> HostsOf(const FleetAppTier& tier) {
  std::vector<std::string> out;
  for (const FleetAppVm& vm : tier.vms) out.push_back(vm.host);
  return out;
}

// A host whose VMs are names in a set; templates named "broken" cannot be made.
struct MadeUpHost {
  std::mutex mu;
  std::set<std::string> vms;
  std::vector<std::string> events;  // "create X", "destroy X"
  std::unique_ptr<AssignServer> server;

  MadeUpHost(const std::string& name, const std::string& endpoint) {
    config::Fleet fleet;
    fleet.host = name;
    fleet.etcd = {endpoint};
    AssignedVmOps ops;
    ops.create = [this](const Assignment& a) -> Status {
      if (a.template_name == "broken") return Status::Error("image broken.elf: no such file");
      std::lock_guard lock(mu);
      vms.insert(a.vm);
      events.push_back("create " + a.vm);
      return Status::Ok();
    };
    ops.up = [](const Assignment&) -> Result<bool> { return true; };
    ops.destroy = [this](const std::string& vm) -> Status {
      std::lock_guard lock(mu);
      vms.erase(vm);
      events.push_back("destroy " + vm);
      return Status::Ok();
    };
    server = std::make_unique<AssignServer>(fleet, std::move(ops));
    server->Start();
  }
  size_t Count() {
    std::lock_guard lock(mu);
    return vms.size();
  }
};

FleetDeployWait QuickWait(const std::vector<std::string>& hosts) {
  FleetDeployWait wait;
  wait.poll = 20ms;
  wait.pickup = 5000ms;
  wait.slack = 5000ms;
  wait.destroy = 5000ms;
  wait.lease_ttl_s = 2;
  wait.hosts = [hosts]() -> Result<std::vector<FleetHost>> {
    std::vector<FleetHost> out;
    for (const std::string& h : hosts) out.push_back(Host(h));
    return out;
  };
  return wait;
}

}  // namespace

TEST_CASE("fleet apps: a tier's VMs are spread over the hosts with the most room", "[fleet-apps]") {
  std::vector<FleetHost> hosts = {Host("edge-c"), Host("edge-a"), Host("edge-b")};
  FleetApp app = ThreeTiers("shop");
  REQUIRE(PlaceFleetApp(hosts, app).ok());
  // Equal hosts: by name first; then the hosts the earlier tiers left most room on.
  CHECK(HostsOf(app.tiers[0]) == std::vector<std::string>{"edge-a"});
  CHECK(HostsOf(app.tiers[1]) == std::vector<std::string>{"edge-b", "edge-c"});
  CHECK(HostsOf(app.tiers[2]) == std::vector<std::string>{"edge-a"});

  // A loaded host comes last, a dead one never.
  hosts = {Host("edge-a"), Host("edge-b"), Host("edge-c")};
  hosts[0].load.vcpus = 6;
  hosts[2].alive = false;
  app = ThreeTiers("shop", 3);
  REQUIRE(PlaceFleetApp(hosts, app).ok());
  CHECK(HostsOf(app.tiers[0]) == std::vector<std::string>{"edge-b"});
  CHECK(HostsOf(app.tiers[1]) == std::vector<std::string>{"edge-b", "edge-a", "edge-b"});
}

TEST_CASE("fleet apps: a fleet that cannot hold the app is refused, naming the VM and the room",
          "[fleet-apps]") {
  std::vector<FleetHost> hosts = {Host("edge-a", 2), Host("edge-b", 1)};
  FleetApp app = ThreeTiers("shop", 2, 1);  // 4 vCPUs on 3 free: web fits nowhere
  Status s = PlaceFleetApp(hosts, app);
  REQUIRE_FALSE(s.ok());
  CHECK(
      s.message() ==
      "the fleet cannot hold app 'shop': vm 'shop-web-1' of tier 'web' (1 vCPUs, 64 MiB) fits on "
      "no host once the VMs before it are placed (edge-a 0/2 vCPUs and 3968/4096 MiB free; edge-b "
      "0/1 vCPUs and 4032/4096 MiB free)");
  for (const FleetAppVm* vm : app.Vms()) CHECK(vm->host.empty());  // nothing placed

  hosts = {Host("edge-a", 8, 100ull << 20)};  // memory for one VM only
  s = PlaceFleetApp(hosts, app);
  REQUIRE_FALSE(s.ok());
  CHECK_THAT(s.message(), Catch::Contains("vm 'shop-api-1' of tier 'api'"));

  hosts[0].alive = false;
  CHECK(PlaceFleetApp(hosts, app).message() ==
        "no live host in the fleet registry (is any daemon with fleet: running?)");
}

TEST_CASE("fleet apps: a VM name some host runs is refused, naming the host", "[fleet-apps]") {
  std::vector<FleetHost> hosts = {Host("edge-a"), Host("edge-b")};
  hosts[1].load.vm_list.push_back(FleetVm{.name = "shop-api-2"});
  CHECK(CheckVmNamesFree(hosts, ThreeTiers("shop")).message() ==
        "a vm named 'shop-api-2' runs on host edge-b already; deploy with another --name");
  CHECK(CheckVmNamesFree(hosts, ThreeTiers("other")).ok());
}

TEST_CASE("fleet apps: plans and assignments read back as written", "[fleet-apps]") {
  FleetApp app = ThreeTiers("shop");
  app.tiers[1].ready = "api: ready";
  app.tiers[1].vms[0].overrides = {{"class", "bulk"}};
  REQUIRE(PlaceFleetApp({Host("edge-a"), Host("edge-b")}, app).ok());
  auto back = ParseFleetApp(FleetAppJson(app).dump());
  REQUIRE(back.ok());
  CHECK(FleetAppJson(*back) == FleetAppJson(app));
  CHECK(back->tiers[1].ready == "api: ready");
  CHECK_FALSE(back->tiers[0].ready.has_value());
  CHECK(back->Waves() == 3);

  Assignment a = AssignmentOf(app, app.tiers[1], app.tiers[1].vms[0]);
  a.state = "failed";
  a.reason = "host edge-b: no such image";
  a.created_ms = 17;
  auto read = ParseAssignment(AssignmentJson(a).dump());
  REQUIRE(read.ok());
  CHECK(AssignmentJson(*read) == AssignmentJson(a));
  CHECK(read->overrides.at("class") == "bulk");
  CHECK(AssignKey("edge-b", "shop", "shop-api-1") == "/qosvisor/assign/edge-b/shop/shop-api-1");
}

TEST_CASE("fleet apps: junk records are refused, naming the field", "[fleet-apps]") {
  const std::string app = FleetAppJson(ThreeTiers("shop")).dump();
  auto app_error = [&](const std::function<void(nlohmann::json&)>& spoil) {
    nlohmann::json j = nlohmann::json::parse(app);
    spoil(j);
    return ParseFleetApp(j.dump()).message();
  };
  CHECK(ParseFleetApp("{not json").message() == "the app record is not a JSON object");
  CHECK(ParseFleetApp("[1]").message() == "the app record is not a JSON object");
  CHECK(app_error([](auto& j) { j.erase("tiers"); }) == "tiers is missing or not an array");
  CHECK(app_error([](auto& j) { j["owner_uid"] = -1; }) ==
        "owner_uid is missing or not a non-negative integer");
  CHECK(app_error([](auto& j) { j["state"] = "dancing"; }) ==
        "state 'dancing' is not one of deploying, running, rolling-back, undeploying");
  CHECK(app_error([](auto& j) { j["tiers"][1]["vms"][0]["vcpus"] = "2"; }) ==
        "tiers[1].vms[0].vcpus is missing or not a non-negative integer");
  CHECK(app_error([](auto& j) {
          j["tiers"][2]["vms"][0]["overrides"] = {{"class", 3}};
        }) == "tiers[2].vms[0].overrides.class is not a string");
  CHECK(app_error([](auto& j) { j["tiers"][0]["ready"] = 5; }) ==
        "tiers[0].ready is missing or not a string");
  CHECK(app_error([](auto& j) { j["tiers"][0]["vms"] = {7}; }) ==
        "tiers[0].vms[0] is not an object");
  CHECK(app_error([](auto& j) { j["tiers"][0]["wave"] = 1ull << 40; }) ==
        "tiers[0].wave is out of range");

  FleetApp placed = ThreeTiers("shop");
  const std::string assignment =
      AssignmentJson(AssignmentOf(placed, placed.tiers[0], placed.tiers[0].vms[0])).dump();
  auto assign_error = [&](const std::function<void(nlohmann::json&)>& spoil) {
    nlohmann::json j = nlohmann::json::parse(assignment);
    spoil(j);
    return ParseAssignment(j.dump()).message();
  };
  CHECK(ParseAssignment("").message() == "the assignment is not a JSON object");
  CHECK(assign_error([](auto& j) { j.erase("vm"); }) == "vm is missing or not a string");
  CHECK(assign_error([](auto& j) { j["state"] = "gone"; }) ==
        "state 'gone' is not one of requested, creating, running, ready, failed, destroying, "
        "destroyed");
  CHECK(assign_error([](auto& j) { j["ready_timeout_ns"] = 1.5; }) ==
        "ready_timeout_ns is missing or not a non-negative integer");
}

TEST_CASE("fleet apps: a three-tier app deploys across three hosts wave by wave and undeploys",
          "[fleet-apps][etcd]") {
  testing::EtcdProcess* etcd = testing::SharedEtcd();
  REQUIRE_ETCD(etcd);
  const std::vector<std::string> names = {"fa-a", "fa-b", "fa-c"};
  MadeUpHost a(names[0], etcd->endpoint()), b(names[1], etcd->endpoint()),
      c(names[2], etcd->endpoint());
  std::vector<FleetHost> hosts;
  for (const std::string& n : names) hosts.push_back(Host(n));
  FleetApp app = ThreeTiers("spread");
  REQUIRE(PlaceFleetApp(hosts, app).ok());
  EtcdClient client(EtcdOptions{{etcd->endpoint()}});
  auto lease = ClaimFleetApp(client, app, 2);
  REQUIRE(lease.ok());
  CHECK(ClaimFleetApp(client, app, 2).message() ==
        "an app named 'spread' exists already in the fleet (blueprint shop, deploying, "
        "coordinated by host edge-a); undeploy it or deploy with another --name");

  auto deployed = RunFleetDeploy(client, app, *lease, QuickWait(names));
  REQUIRE(deployed.ok());
  CHECK((*deployed)["hosts"] == nlohmann::json{{"spread-db-1", "fa-a"},
                                               {"spread-api-1", "fa-b"},
                                               {"spread-api-2", "fa-c"},
                                               {"spread-web-1", "fa-a"}});
  CHECK(a.events == std::vector<std::string>{"create spread-db-1", "create spread-web-1"});
  CHECK(b.Count() == 1);
  CHECK(c.Count() == 1);
  // The app outlives its coordinator: no key of it is held by a lease any more.
  auto plan = client.Range(AppKey("spread"));
  REQUIRE(plan.ok());
  REQUIRE(plan->kvs.size() == 1);
  CHECK(plan->kvs[0].lease == 0);
  CHECK(ReadFleetApp(client, "spread")->state == "running");
  auto listed = FleetAppsJson(client, hosts);
  REQUIRE(listed.ok());
  nlohmann::json mine;
  for (const auto& row : *listed) {
    if (row["name"] == "spread") mine = row;
  }
  REQUIRE(mine.is_object());
  CHECK(mine["tiers"][1]["vms"][1]["host"] == "fa-c");
  CHECK(mine["tiers"][1]["vms"][1]["state"] == "ready");
  // Wave order: the api tier was made only after the db tier was ready.
  CHECK(mine["tiers"][1]["vms"][0]["created_ms"].get<int64_t>() >=
        mine["tiers"][0]["vms"][0]["ready_ms"].get<int64_t>());

  auto undeploy_lease = ClaimFleetUndeploy(client, "spread", "fa-b", 2);
  REQUIRE(undeploy_lease.ok());
  CHECK(ClaimFleetUndeploy(client, "spread", "fa-c", 2).message() ==
        "app 'spread' is undeploying (coordinated by host fa-b); wait for it to finish");
  auto undeployed = RunFleetUndeploy(client, "spread", *undeploy_lease, QuickWait(names));
  REQUIRE(undeployed.ok());
  CHECK((*undeployed)["destroyed"] ==
        nlohmann::json{"spread-web-1", "spread-api-2", "spread-api-1", "spread-db-1"});
  CHECK(a.events.back() == "destroy spread-db-1");
  CHECK(a.Count() + b.Count() + c.Count() == 0);
  CHECK(client.RangePrefix(AssignHostPrefix("fa-a"))->kvs.empty());
  CHECK(ReadFleetApp(client, "spread").message() ==
        "no app named 'spread' in the fleet (see qosctl apps)");
}

TEST_CASE("fleet apps: a failing third tier rolls the deploy back on every host, newest first",
          "[fleet-apps][etcd]") {
  testing::EtcdProcess* etcd = testing::SharedEtcd();
  REQUIRE_ETCD(etcd);
  const std::vector<std::string> names = {"fb-a", "fb-b", "fb-c"};
  MadeUpHost a(names[0], etcd->endpoint()), b(names[1], etcd->endpoint()),
      c(names[2], etcd->endpoint());
  std::vector<FleetHost> hosts;
  for (const std::string& n : names) hosts.push_back(Host(n));
  FleetApp app = ThreeTiers("fails", 1);
  app.tiers[2].vms[0].template_name = "broken";
  REQUIRE(PlaceFleetApp(hosts, app).ok());
  EtcdClient client(EtcdOptions{{etcd->endpoint()}});
  auto lease = ClaimFleetApp(client, app, 2);
  REQUIRE(lease.ok());
  auto deployed = RunFleetDeploy(client, app, *lease, QuickWait(names));
  REQUIRE_FALSE(deployed.ok());
  CHECK(deployed.message() ==
        "deploy of fails: tier 'web' failed: host fb-c: vm 'fails-web-1' could not be created: "
        "image broken.elf: no such file; rolled back: destroyed fails-api-1 (on fb-b), fails-db-1 "
        "(on fb-a)");
  CHECK(a.Count() + b.Count() + c.Count() == 0);
  CHECK(a.events == std::vector<std::string>{"create fails-db-1", "destroy fails-db-1"});
  CHECK(client.RangePrefix(AssignHostPrefix("fb-b"))->kvs.empty());
  CHECK(client.Range(AppKey("fails"))->kvs.empty());
}

TEST_CASE("fleet apps: a host that leaves the registry mid-deploy rolls the deploy back",
          "[fleet-apps][etcd]") {
  testing::EtcdProcess* etcd = testing::SharedEtcd();
  REQUIRE_ETCD(etcd);
  MadeUpHost a("fd-a", etcd->endpoint()), b("fd-b", etcd->endpoint());
  FleetApp app = ThreeTiers("vanish", 1);
  REQUIRE(PlaceFleetApp({Host("fd-a"), Host("fd-b"), Host("fd-c")}, app).ok());
  REQUIRE(app.tiers[2].vms[0].host == "fd-c");  // whose daemon is gone: no server, no record
  EtcdClient client(EtcdOptions{{etcd->endpoint()}});
  auto lease = ClaimFleetApp(client, app, 2);
  REQUIRE(lease.ok());
  auto deployed = RunFleetDeploy(client, app, *lease, QuickWait({"fd-a", "fd-b"}));
  REQUIRE_FALSE(deployed.ok());
  CHECK(deployed.message() ==
        "deploy of vanish: tier 'web' failed: host fd-c left the fleet registry while making "
        "vanish-web-1; rolled back: destroyed vanish-api-1 (on fd-b), vanish-db-1 (on fd-a)");
  CHECK(a.Count() + b.Count() == 0);
  CHECK(client.RangePrefix(AssignHostPrefix("fd-c"))->kvs.empty());
}

TEST_CASE("fleet apps: when the coordinator's lease ends, hosts destroy what they made",
          "[fleet-apps][etcd]") {
  testing::EtcdProcess* etcd = testing::SharedEtcd();
  REQUIRE_ETCD(etcd);
  MadeUpHost host("fc-a", etcd->endpoint());
  EtcdClient client(EtcdOptions{{etcd->endpoint()}});
  FleetApp app = ThreeTiers("orphan");
  REQUIRE(PlaceFleetApp({Host("fc-a")}, app).ok());
  auto lease = ClaimFleetApp(client, app, 2);
  REQUIRE(lease.ok());
  const Assignment a = AssignmentOf(app, app.tiers[0], app.tiers[0].vms[0]);
  REQUIRE(client.Put(AssignKey("fc-a", "orphan", a.vm), AssignmentJson(a).dump(), *lease).ok());
  REQUIRE(Eventually([&] { return host.Count() == 1; }));
  REQUIRE(client.LeaseRevoke(*lease).ok());  // as its expiry would, when the coordinator dies
  // The server forgets a VM just after its destroy returns: wait for both.
  CHECK(Eventually([&] { return host.Count() == 0 && host.server->vms_made() == 0; }));

  // A junk assignment is ignored (and said in the log), never made.
  REQUIRE(client.Put(AssignKey("fc-a", "junk", "junk-1"), "{\"vm\": 3}").ok());
  std::this_thread::sleep_for(300ms);
  CHECK(host.Count() == 0);
  // One naming another host is answered failed, naming it.
  Assignment wrong = a;
  wrong.host = "fc-z";
  REQUIRE(client.Put(AssignKey("fc-a", "orphan", a.vm), AssignmentJson(wrong).dump()).ok());
  CHECK(Eventually([&] {
    auto read = client.Range(AssignKey("fc-a", "orphan", a.vm));
    return read.ok() && !read->kvs.empty() &&
           ParseAssignment(read->kvs[0].value)->state == "failed";
  }));
  CHECK(host.Count() == 0);
  (void)client.DeletePrefix(AssignHostPrefix("fc-a"));
}

}  // namespace qosvisor::control
