// FleetAgent against a real etcd: registering with budget and load, leaving at once on Stop,
// refusing a name another live agent holds, skipping unreadable records, and riding out an etcd
// that is killed and comes back.
#include "control/fleet.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <thread>

#include "tests/unit/control/etcd_process.h"

namespace qosvisor::control {
namespace {

using namespace std::chrono_literals;
using testing::Eventually;

config::Fleet FleetOf(const std::string& host, const std::string& endpoint) {
  config::Fleet f;
  f.host = host;
  f.etcd = {endpoint};
  f.lease_ttl_ns = 2'000'000'000ull;
  f.publish_interval_ns = 200'000'000ull;
  f.budget_vcpus = 8;
  f.budget_memory_bytes = 4ull << 30;
  f.budget_uplink_bps = 1'000'000'000ull;
  f.labels = {{"site", "lab"}, {"rack", "3"}};
  return f;
}

}  // namespace

TEST_CASE("fleet: a host registers with its budget, publishes its load and leaves when stopped",
          "[fleet]") {
  testing::EtcdProcess* etcd = testing::SharedEtcd();
  REQUIRE_ETCD(etcd);
  std::atomic<uint32_t> vms{1};
  FleetAgent agent(FleetOf("edge-a", etcd->endpoint()), "10.99.0.1:7400", [&] {
    return FleetLoad{vms.load(), 2 * vms.load(), 64ull << 20, 5'000'000};
  });
  CHECK_FALSE(agent.connected());
  agent.Start();
  REQUIRE(Eventually([&] { return agent.connected(); }));
  CHECK(agent.registrations() == 1);

  auto hosts = agent.Hosts();
  REQUIRE(hosts.ok());
  auto me = std::find_if(hosts->begin(), hosts->end(),
                         [](const FleetHost& h) { return h.name == "edge-a"; });
  REQUIRE(me != hosts->end());
  CHECK(me->alive);
  CHECK(me->migration_address == "10.99.0.1:7400");
  CHECK(me->budget_vcpus == 8);
  CHECK(me->budget_memory_bytes == 4ull << 30);
  CHECK(me->budget_uplink_bps == 1'000'000'000ull);
  CHECK(me->labels.at("rack") == "3");
  CHECK(me->load.vms == 1);
  CHECK(me->load.uplink_bps == 5'000'000);
  CHECK(me->updated_unix_ms > 0);

  vms = 3;
  CHECK(Eventually([&] {
    auto h = agent.Host("edge-a");
    return h.ok() && h->load.vms == 3 && h->load.vcpus == 6;
  }));
  const nlohmann::json status = agent.StatusJson();
  CHECK(status["host"] == "edge-a");
  CHECK(status["connected"] == true);
  CHECK(status["endpoint"] == etcd->endpoint());
  CHECK(status["lease_id"].get<int64_t>() != 0);
  CHECK(status["last_error"] == "");
  CHECK(status["registered_since_unix_ms"].get<int64_t>() > 0);
  CHECK(status["last_publish_unix_ms"].get<int64_t>() >=
        status["registered_since_unix_ms"].get<int64_t>());
  CHECK(status["load"]["vms"] == 3);

  agent.Stop();
  CHECK_FALSE(agent.connected());
  auto gone = agent.Host("edge-a");
  REQUIRE_FALSE(gone.ok());
  CHECK_THAT(gone.message(), Catch::Contains("no host 'edge-a' in the fleet registry"));
}

TEST_CASE("fleet: a name another live daemon holds is refused until that daemon leaves",
          "[fleet]") {
  testing::EtcdProcess* etcd = testing::SharedEtcd();
  REQUIRE_ETCD(etcd);
  auto load = [] { return FleetLoad{}; };
  FleetAgent first(FleetOf("edge-b", etcd->endpoint()), "", load);
  first.Start();
  REQUIRE(Eventually([&] { return first.connected(); }));
  FleetAgent second(FleetOf("edge-b", etcd->endpoint()), "", load);
  second.Start();
  REQUIRE(Eventually([&] { return second.StatusJson()["last_error"] != ""; }));
  CHECK_FALSE(second.connected());
  CHECK_THAT(second.StatusJson()["last_error"].get<std::string>(),
             Catch::Contains("fleet.host 'edge-b' is held by another live qosvisor (instance " +
                             first.instance() + ")"));
  first.Stop();
  CHECK(Eventually([&] { return second.connected(); }, 3000ms));
  auto h = second.Host("edge-b");
  REQUIRE(h.ok());
  CHECK(h->alive);
}

TEST_CASE("fleet: records that cannot be read are skipped, and named when asked for", "[fleet]") {
  testing::EtcdProcess* etcd = testing::SharedEtcd();
  REQUIRE_ETCD(etcd);
  EtcdClient c(EtcdOptions{{etcd->endpoint()}});
  const std::string prefix(FleetAgent::kHostsPrefix);
  REQUIRE(c.Put(prefix + "junk", "{not json").ok());
  REQUIRE(c.Put(prefix + "liar", R"({"name": "other", "migration_address": "", "budget":
      {"vcpus": 1, "memory_bytes": 1, "uplink_bps": 1}, "load": {"vms": 0, "vcpus": 0,
      "memory_bytes": 0, "uplink_bps": 0}, "updated_unix_ms": 1})")
              .ok());
  FleetAgent agent(FleetOf("edge-c", etcd->endpoint()), "", [] { return FleetLoad{}; });
  agent.Start();
  REQUIRE(Eventually([&] { return agent.connected(); }));
  auto hosts = agent.Hosts();
  REQUIRE(hosts.ok());
  for (const FleetHost& h : *hosts) CHECK((h.name != "junk" && h.name != "liar" && h.alive));
  CHECK(std::any_of(hosts->begin(), hosts->end(),
                    [](const FleetHost& h) { return h.name == "edge-c"; }));
  auto junk = agent.Host("junk");
  REQUIRE_FALSE(junk.ok());
  CHECK_THAT(junk.message(), Catch::Contains("host 'junk'") && Catch::Contains("not a JSON"));
  agent.Stop();
  (void)c.DeleteRange(prefix + "junk");
  (void)c.DeleteRange(prefix + "liar");
}

TEST_CASE("fleet: a record missing a field or of the wrong type is refused, naming the field",
          "[fleet]") {
  FleetHost h;
  h.name = "edge-z";
  h.budget_vcpus = 4;
  h.labels = {{"k", "v"}};
  nlohmann::json good = FleetHostJson(h);
  auto back = ParseFleetHost(good.dump());
  REQUIRE(back.ok());
  CHECK(back->name == "edge-z");
  CHECK(back->budget_vcpus == 4);
  CHECK(back->labels == h.labels);

  auto broken = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = good;
    edit(j);
    return ParseFleetHost(j.dump()).message();
  };
  CHECK_THAT(broken([](auto& j) { j.erase("name"); }), Catch::Contains("name is missing"));
  CHECK_THAT(broken([](auto& j) { j["budget"]["vcpus"] = -1; }),
             Catch::Contains("budget.vcpus is missing or not a non-negative integer"));
  CHECK_THAT(broken([](auto& j) { j["budget"]["vcpus"] = 1ull << 40; }),
             Catch::Contains("budget.vcpus is out of range"));
  CHECK_THAT(broken([](auto& j) { j["load"] = "busy"; }), Catch::Contains("load is missing"));
  CHECK_THAT(broken([](auto& j) { j["labels"]["k"] = 3; }),
             Catch::Contains("labels.k is not a string"));
  CHECK_THAT(ParseFleetHost("[]").message(), Catch::Contains("not a JSON object"));

  // The VMs the planner reads: kept whole, each bad field named with the VM's index.
  h.load.vm_list = {FleetVm{"web", 2, 64ull << 20, 1000, 321, 12.5, {"front"}}};
  good = FleetHostJson(h);
  back = ParseFleetHost(good.dump());
  REQUIRE(back.ok());
  CHECK(back->load.vm_list == h.load.vm_list);
  CHECK_THAT(broken([](auto& j) { j["vms"][0].erase("changed_pages"); }),
             Catch::Contains("vms[0].changed_pages is missing"));
  CHECK_THAT(broken([](auto& j) { j["vms"][0]["pages_per_second"] = -1; }),
             Catch::Contains("vms[0].pages_per_second is missing or not a non-negative number"));
  CHECK_THAT(broken([](auto& j) { j["vms"][0]["groups"] = {1}; }),
             Catch::Contains("vms[0].groups holds a non-string"));
  CHECK_THAT(broken([](auto& j) { j["vms"] = 3; }), Catch::Contains("vms is not a list"));
  CHECK_THAT(broken([](auto& j) { j["vms"][0]["state"] = 1; }),
             Catch::Contains("vms[0].state is not a string"));
  // A record from a daemon that publishes no VMs reads as none.
  CHECK(broken([](auto& j) { j.erase("vms"); }).empty());
}

TEST_CASE("fleet: with etcd killed the agent says so, and registers again when it returns",
          "[fleet]") {
  std::unique_ptr<testing::EtcdProcess> etcd;
  if (testing::EtcdInstalled()) {
    etcd = std::make_unique<testing::EtcdProcess>();
    if (!etcd->Start()) etcd.reset();
  }
  REQUIRE_ETCD(etcd.get());
  FleetAgent agent(FleetOf("edge-d", etcd->endpoint()), "", [] { return FleetLoad{}; });
  agent.Start();
  REQUIRE(Eventually([&] { return agent.connected(); }));

  etcd->Stop();
  REQUIRE(Eventually([&] { return !agent.connected(); }, 3000ms));
  CHECK_THAT(agent.StatusJson()["last_error"].get<std::string>(),
             Catch::Contains(etcd->endpoint()));

  REQUIRE(etcd->Start());
  REQUIRE(Eventually([&] { return agent.connected(); }, 5000ms));
  CHECK(agent.registrations() == 2);
  auto h = agent.Host("edge-d");
  REQUIRE(h.ok());
  CHECK(h->alive);
  CHECK(agent.StatusJson()["lease_id"].get<int64_t>() != 0);
  agent.Stop();
  CHECK_FALSE(agent.Host("edge-d").ok());
}

}  // namespace qosvisor::control
