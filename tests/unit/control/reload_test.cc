// Reload plans for the sections that cannot change live: fleet: and migration: are named as
// needing a restart, and an unchanged file plans nothing.
#include "control/reload.h"

#include <catch2/catch.hpp>
#include <string>

#include "config/loader.h"

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

}  // namespace qosvisor::control
