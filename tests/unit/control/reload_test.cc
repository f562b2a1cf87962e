// Reload plans for the sections that cannot change live: fleet: and migration: are named as
// needing a restart, and an unchanged file plans nothing. And what a file becomes in the
// schedulers' specs where the mapping carries a decision: a tcp-gap class's idle time.
#include "control/reload.h"

#include <catch2/catch.hpp>
#include <string>

#include "config/loader.h"
#include "control/switch_builder.h"

namespace qosvisor::control {
namespace {

constexpr const char* kBox = R"(ports: [{name: p0, driver: ring}, {name: p1, driver: ring}]
bridges: [{name: br0, ports: [p0, p1]}]
classes: [{name: mig, queue: 1, policy: fifo}]
)";

constexpr const char* kFleet = R"(fleet:
  host: edge-a
  etcd: [http://127.0.0.1:2379]
  budget: {vcpus: 8, memory: 4GiB, uplink: 1Gbps}
migration: {listen: 127.0.0.1:7400, key_file: k.key, class: mig}
)";

config::Config Load(const std::string& yaml) {
  config::LoadResult r = config::LoadFromString(yaml, "/etc/qv/box.yaml");
  INFO(r.ErrorText());
  REQUIRE(r.ok());
  return *r.config;
}

ReloadPlan Plan(const std::string& running, const std::string& next) {
  auto plan = PlanReload(Load(running), Load(next));
  REQUIRE(plan.ok());
  return *plan;
}

constexpr const char* kTcpGapBox = R"(ports: [{name: p0, driver: ring}, {name: up0, driver: ring}]
bridges: [{name: br0, ports: [p0, up0]}]
classes:
  - {name: rpc, queue: 1, policy: srpt}
  - {name: bulk, queue: 2, policy: las}
messages:
  - {class: rpc, identify: homa}
  - {class: bulk, identify: tcp-gap, idle: 3ms}
uplinks: [{port: up0, rate: 1Gbps}]
)";

const sched::ClassConfig& ClassNamed(const vswitch::SwitchSpec& spec, const std::string& name) {
  for (const sched::ClassConfig& c : spec.uplinks.at(0).scheduler.classes) {
    if (c.name == name) return c;
  }
  FAIL("no class " << name);
  throw;
}

bool Names(const ReloadPlan& plan, const std::string& what) {
  for (const std::string& r : plan.needs_restart) {
    if (r == what) return true;
  }
  return false;
}

}  // namespace

TEST_CASE("reload: a change to fleet: or migration: needs a restart, naming the section",
          "[reload][fleet]") {
  const std::string box = std::string(kBox) + kFleet;
  CHECK(Plan(box, box).empty());

  std::string host = box;
  host.replace(host.find("edge-a"), 6, "edge-b");
  ReloadPlan p = Plan(box, host);
  CHECK(Names(p, "fleet settings changed"));
  CHECK_FALSE(Names(p, "migration settings changed"));

  std::string listen = box;
  listen.replace(listen.find("7400"), 4, "7401");
  p = Plan(box, listen);
  CHECK(Names(p, "migration settings changed"));
  CHECK_FALSE(Names(p, "fleet settings changed"));

  p = Plan(kBox, box);  // a box joining a fleet
  CHECK(Names(p, "fleet settings changed"));
  CHECK(Names(p, "migration settings changed"));
  CHECK(p.changes.size() == 2);
}

TEST_CASE("a tcp-gap class frees a quiet burst's slot after its idle time, others at the uplink's",
          "[reload][switch_builder]") {
  // A burst ends when its flow is quiet for `idle`: the scheduler class gets the same time, and
  // a reload that changes it rebuilds the uplink with the new time.
  auto spec = BuildSwitchSpec(Load(kTcpGapBox));
  REQUIRE(spec.ok());
  CHECK(ClassNamed(*spec, "bulk").message_idle_ns == 3'000'000);
  CHECK(ClassNamed(*spec, "rpc").message_idle_ns == 0);  // ends with its last packet
  CHECK(spec->uplinks.at(0).scheduler.message_idle_timeout_ns == 1'000'000'000);

  std::string longer = kTcpGapBox;
  longer.replace(longer.find("3ms"), 3, "8ms");
  CHECK(Plan(kTcpGapBox, longer).uplinks_rebuilt == std::vector<std::string>{"up0"});
  auto rebuilt = BuildSwitchSpec(Load(longer));
  REQUIRE(rebuilt.ok());
  CHECK(ClassNamed(*rebuilt, "bulk").message_idle_ns == 8'000'000);
}

}  // namespace qosvisor::control
