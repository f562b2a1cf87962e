// Deploy planning: dependency waves in the blueprint's order, VM names, the tier's class and the
// template's ready line, and plans refused before anything starts.
#include "control/blueprint_plan.h"

#include <catch2/catch.hpp>

#include "config/loader.h"

namespace qosvisor::control {
namespace {

config::Config Load(const std::string& yaml) {
  config::LoadResult r = config::LoadFromString(yaml, "box.yaml");
  INFO(r.ErrorText());
  REQUIRE(r.ok());
  return *r.config;
}

constexpr const char* kBox = R"(
ports: [{name: up0, driver: ring}]
bridges: [{name: br0, ports: [up0]}]
classes:
  - {name: rpc, queue: 1, policy: srpt}
  - {name: bulk, queue: 2, policy: las}
templates:
  - {name: tiny, vcpus: 1, memory: 16MiB, image: g.elf, nics: [{bridge: br0, class: rpc}]}
  - {name: db, vcpus: 2, memory: 32MiB, image: g.elf, ready: "db: up", ready_timeout: 3s,
     nics: [{bridge: br0}]}
blueprints:
  - name: shop
    tiers:
      - {name: web, template: tiny, count: 2, class: bulk, depends_on: [api]}
      - {name: cache, template: tiny}
      - {name: api, template: tiny, depends_on: [db, cache]}
      - {name: db, template: db}
      - {name: audit, template: tiny, depends_on: [db]}
  - name: one
    tiers: [{name: a, template: tiny}]
)";

std::vector<std::vector<std::string>> TierNames(const DeployPlan& plan) {
  std::vector<std::vector<std::string>> out;
  for (const auto& wave : plan.waves) {
    out.emplace_back();
    for (const PlannedTier& t : wave) out.back().push_back(t.name);
  }
  return out;
}

}  // namespace

TEST_CASE("tiers start in waves after what they depend on, in blueprint order inside a wave",
          "[control][blueprint]") {
  auto plan = PlanDeploy(Load(kBox), "shop", "shop");
  REQUIRE(plan.ok());
  CHECK(TierNames(*plan) ==
        std::vector<std::vector<std::string>>{{"cache", "db"}, {"api", "audit"}, {"web"}});
  std::vector<std::string> names;
  for (const PlannedVm* vm : plan->Vms()) names.push_back(vm->name);
  CHECK(names == std::vector<std::string>{"shop-cache-1", "shop-db-1", "shop-api-1", "shop-audit-1",
                                          "shop-web-1", "shop-web-2"});
  CHECK(plan->VmCount() == 6);
}

TEST_CASE("a tier's class and its template's ready line reach the plan", "[control][blueprint]") {
  auto plan = PlanDeploy(Load(kBox), "shop", "s1");
  REQUIRE(plan.ok());
  const PlannedTier& db = plan->waves[0][1];
  CHECK(db.ready == "db: up");
  CHECK(db.ready_timeout_ns == 3'000'000'000u);
  const PlannedTier& cache = plan->waves[0][0];
  CHECK_FALSE(cache.ready.has_value());
  CHECK(cache.ready_timeout_ns == config::kDefaultReadyTimeoutNs);
  const PlannedTier& web = plan->waves[2][0];
  REQUIRE(web.vms.size() == 2);
  CHECK(web.vms[1].name == "s1-web-2");
  CHECK(web.vms[1].template_name == "tiny");
  CHECK(web.vms[1].overrides == std::map<std::string, std::string>{{"class", "bulk"}});
  CHECK(cache.vms[0].overrides.empty());
}

TEST_CASE("plans that cannot work are refused, naming what is wrong", "[control][blueprint]") {
  const config::Config box = Load(kBox);
  CHECK(PlanDeploy(box, "nope", "x").message() == "no blueprint named 'nope'; defined: shop, one");
  CHECK(PlanDeploy(box, "one", "a/b").message() ==
        "app name 'a/b': use 1 to 32 letters, digits, '-' or '_' (it starts its VMs' names)");
  CHECK(PlanDeploy(box, "one", "").message().starts_with("app name '':"));
  const std::string long_name(30, 'x');
  CHECK(PlanDeploy(box, "one", long_name).message() ==
        "tier 'a': VM name '" + long_name +
            "-a-1' is not usable (VM names are <app>-<tier>-<i>: 1 to 32 letters, digits, '-' or "
            "'_'); deploy with a shorter --name");
}

TEST_CASE("a cycle that got past validation is still refused", "[control][blueprint]") {
  config::Config box = Load(kBox);
  box.blueprints[1].tiers.push_back({"b", "tiny", 1, {}, {"c"}, {}});
  box.blueprints[1].tiers.push_back({"c", "tiny", 1, {}, {"b"}, {}});
  CHECK(PlanDeploy(box, "one", "one").message() ==
        "blueprint 'one': tiers b, c depend on each other in a cycle");
  box.blueprints[1].tiers.back().depends_on = {"zz"};
  CHECK(PlanDeploy(box, "one", "one").message() ==
        "blueprint 'one': tier 'c' depends on 'zz', which it does not have");
}

}  // namespace qosvisor::control
