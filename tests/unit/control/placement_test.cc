// The placement planner on made-up fleets: each budget exceeded, anti-affinity (configured and
// published), the VM that leaves by each rule, high-rate VMs spread apart, hosts that cannot
// take VMs, and the errors when nothing fits or the VM is unknown.
#include "control/placement.h"

#include <catch2/catch.hpp>

namespace qosvisor::control {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

FleetVm Vm(const std::string& name, uint64_t changed_pages, double rate = 0, uint32_t vcpus = 1,
           uint64_t memory = 64 * kMiB, uint64_t uplink = 0) {
  return FleetVm{name, vcpus, memory, uplink, changed_pages, rate, {}};
}

// A live host taking migrations, its load the sum of its VMs.
FleetHost Host(const std::string& name, uint32_t vcpus, std::vector<FleetVm> vms,
               uint64_t memory = 1024 * kMiB, uint64_t uplink = 1'000'000'000) {
  FleetHost h;
  h.name = name;
  h.alive = true;
  h.migration_address = name + ":7400";
  h.budget_vcpus = vcpus;
  h.budget_memory_bytes = memory;
  h.budget_uplink_bps = uplink;
  for (const FleetVm& vm : vms) {
    ++h.load.vms;
    h.load.vcpus += vm.vcpus;
    h.load.memory_bytes += vm.memory_bytes;
    h.load.uplink_bps += vm.uplink_bps;
  }
  h.load.vm_list = std::move(vms);
  return h;
}

std::vector<std::string> Moves(const RebalancePlan& plan) {
  std::vector<std::string> out;
  for (const PlannedMove& m : plan.moves) out.push_back(m.vm + ":" + m.from + "->" + m.to);
  return out;
}

using Strings = std::vector<std::string>;

}  // namespace

TEST_CASE("placement: a fleet within its budgets and rules has nothing to do", "[placement]") {
  auto plan = PlanRebalance({Host("a", 2, {Vm("x", 5), Vm("y", 9)}), Host("b", 2, {})}, {});
  REQUIRE(plan.ok());
  CHECK(plan->moves.empty());
  CHECK(plan->warnings.empty());
  CHECK(PlanJson(*plan)["moves"].empty());
}

TEST_CASE("placement: over its vCPU budget, the VM with the fewest changed pages leaves",
          "[placement]") {
  auto plan = PlanRebalance(
      {Host("a", 2, {Vm("busy", 5000), Vm("quiet", 20), Vm("mid", 300)}), Host("b", 4, {})}, {});
  REQUIRE(plan.ok());
  CHECK(Moves(*plan) == Strings{"quiet:a->b"});
  CHECK(plan->moves[0].changed_pages == 20);
  CHECK_THAT(plan->moves[0].reason, Catch::Contains("a is over its vCPU budget (3 of 2)") &&
                                        Catch::Contains("the fewest changed pages (20)"));

  // Over by two: the two cheapest leave, cheapest first.
  plan = PlanRebalance(
      {Host("a", 1, {Vm("busy", 5000), Vm("quiet", 20), Vm("mid", 300)}), Host("b", 4, {})}, {});
  REQUIRE(plan.ok());
  CHECK(Moves(*plan) == Strings{"quiet:a->b", "mid:a->b"});
}

TEST_CASE("placement: over its memory budget, only a host with memory free takes the VM",
          "[placement]") {
  auto plan = PlanRebalance(
      {Host("a", 8, {Vm("big", 10, 0, 1, 512 * kMiB), Vm("small", 30)}, 512 * kMiB),
       Host("b", 8, {Vm("other", 0, 0, 1, 480 * kMiB)}, 512 * kMiB), Host("c", 8, {}, 1024 * kMiB)},
      {});
  REQUIRE(plan.ok());
  CHECK(Moves(*plan) == Strings{"big:a->c"});
  CHECK_THAT(plan->moves[0].reason, Catch::Contains("over its memory budget (576MiB of 512MiB)"));
}

TEST_CASE("placement: over its uplink budget, a VM that sends leaves", "[placement]") {
  auto plan = PlanRebalance(
      {Host("a", 8,
            {Vm("silent", 1), Vm("talker", 50, 0, 1, 64 * kMiB, 600'000'000),
             Vm("chatty", 900, 0, 1, 64 * kMiB, 500'000'000)},
            1024 * kMiB, 1'000'000'000),
       Host("b", 8, {}, 1024 * kMiB, 100'000'000), Host("c", 8, {}, 1024 * kMiB, 1'000'000'000)},
      {});
  REQUIRE(plan.ok());
  // silent has the fewest changed pages but sends nothing; b has too little uplink for talker.
  CHECK(Moves(*plan) == Strings{"talker:a->c"});
  CHECK_THAT(plan->moves[0].reason, Catch::Contains("over its uplink budget"));
}

TEST_CASE("placement: members of an anti-affinity group are moved apart", "[placement]") {
  PlacementRules rules;
  rules.anti_affinity = {config::AntiAffinityGroup{"db", {"db-1", "db-2", "db-3"}, {}}};
  auto plan = PlanRebalance({Host("a", 8, {Vm("db-1", 400), Vm("db-2", 7), Vm("web", 1)}),
                             Host("b", 8, {Vm("db-3", 0)}), Host("c", 8, {Vm("x", 0, 5000)})},
                            rules);
  REQUIRE(plan.ok());
  // db-2 is the cheaper member to move; b runs db-3, so c it is, busy as it is.
  CHECK(Moves(*plan) == Strings{"db-2:a->c"});
  CHECK_THAT(plan->moves[0].reason,
             Catch::Contains("runs 2 VMs of anti-affinity group 'db' (db-1, db-2)"));

  SECTION("a group the hosts publish counts as one configured here") {
    FleetHost a = Host("a", 8, {Vm("r1", 3), Vm("r2", 1)});
    for (FleetVm& vm : a.load.vm_list) vm.groups = {"replicas"};
    auto published = PlanRebalance({a, Host("b", 8, {})}, {});
    REQUIRE(published.ok());
    CHECK(Moves(*published) == Strings{"r2:a->b"});
  }
  SECTION("members running nowhere are warned about, not fatal") {
    rules.anti_affinity.push_back(config::AntiAffinityGroup{"web", {"web", "web-9"}, {}});
    auto warned = PlanRebalance({Host("a", 8, {Vm("web", 1)}), Host("b", 8, {})}, rules);
    REQUIRE(warned.ok());
    CHECK(warned->moves.empty());
    CHECK(warned->warnings ==
          Strings{"anti-affinity group 'db': vm 'db-1' runs on no host of the fleet",
                  "anti-affinity group 'db': vm 'db-2' runs on no host of the fleet",
                  "anti-affinity group 'db': vm 'db-3' runs on no host of the fleet",
                  "anti-affinity group 'web': vm 'web-9' runs on no host of the fleet"});
  }
}

TEST_CASE("placement: VMs that change many pages a second go to different hosts", "[placement]") {
  // a must shed both writers; b already runs one, c and d run quiet VMs.
  auto plan = PlanRebalance(
      {Host("a", 0, {Vm("w1", 900, 4000), Vm("w2", 800, 3000)}), Host("b", 8, {Vm("w0", 0, 5000)}),
       Host("c", 8, {Vm("q1", 0, 10)}), Host("d", 8, {Vm("q2", 0, 20)})},
      {});
  REQUIRE(plan.ok());
  CHECK(Moves(*plan) == Strings{"w2:a->c", "w1:a->d"});
  CHECK_THAT(plan->moves[0].reason,
             Catch::Contains("c has room and the lowest page-change rate of the 3 hosts with "
                             "room (10 pages/s)"));
}

TEST_CASE("placement: the configured rule chooses which VM leaves", "[placement]") {
  const std::vector<FleetHost> fleet = {
      Host("a", 2,
           {Vm("few-pages", 10, 900, 1, 256 * kMiB), Vm("slow", 500, 1, 1, 128 * kMiB),
            Vm("tiny", 800, 400, 1, 16 * kMiB)}),
      Host("b", 4, {})};
  PlacementRules rules;
  CHECK(Moves(*PlanRebalance(fleet, rules)) == Strings{"few-pages:a->b"});
  rules.choose = config::LeaveRule::kLowestPageRate;
  CHECK(Moves(*PlanRebalance(fleet, rules)) == Strings{"slow:a->b"});
  rules.choose = config::LeaveRule::kSmallestMemory;
  auto plan = PlanRebalance(fleet, rules);
  CHECK(Moves(*plan) == Strings{"tiny:a->b"});
  CHECK_THAT(plan->moves[0].reason, Catch::Contains("the least memory (16MiB)"));
}

TEST_CASE("placement: only running or paused VMs are moved, though every VM holds budget",
          "[placement]") {
  FleetVm stopped = Vm("stopped", 0);
  stopped.state = "stopped";
  FleetVm paused = Vm("paused", 50);
  paused.state = "paused";
  auto plan =
      PlanRebalance({Host("a", 2, {stopped, paused, Vm("busy", 900)}), Host("b", 4, {})}, {});
  REQUIRE(plan.ok());
  CHECK(Moves(*plan) == Strings{"paused:a->b"});

  PlacementRules rules;
  rules.anti_affinity = {config::AntiAffinityGroup{"db", {"stopped", "db-2"}, {}}};
  auto grouped = PlanRebalance({Host("a", 4, {stopped, Vm("db-2", 900)}), Host("b", 4, {})}, rules);
  REQUIRE(grouped.ok());
  CHECK(Moves(*grouped) == Strings{"db-2:a->b"});

  auto stuck = PlanRebalance({Host("a", 0, {stopped}), Host("b", 4, {})}, {});
  REQUIRE_FALSE(stuck.ok());
  CHECK_THAT(stuck.message(),
             Catch::Contains("host a is over its vCPU budget (1 of 0), but none of its VMs whose "
                             "leaving would help can migrate"));
}

TEST_CASE("placement: when the cheapest VM fits nowhere the next one goes", "[placement]") {
  auto plan = PlanRebalance(
      {Host("a", 1, {Vm("wide", 1, 0, 4), Vm("narrow", 99, 0, 1)}), Host("b", 2, {})}, {});
  // Moving narrow leaves a with 4 of 1 vCPUs, and wide fits nowhere: the plan fails, saying so.
  REQUIRE_FALSE(plan.ok());
  CHECK_THAT(plan.message(),
             Catch::Contains("host a is over its vCPU budget (4 of 1)") &&
                 Catch::Contains("wide (4 vCPUs, 64MiB): b has 1 of 2 vCPUs free") &&
                 Catch::Contains("(after 1 planned move)"));
  auto fits = PlanRebalance(
      {Host("a", 4, {Vm("wide", 1, 0, 4), Vm("narrow", 99, 0, 1)}), Host("b", 2, {})}, {});
  REQUIRE(fits.ok());
  CHECK(Moves(*fits) == Strings{"narrow:a->b"});
  CHECK_THAT(fits->moves[0].reason, Catch::Contains("of the VMs that fit elsewhere"));
}

TEST_CASE("placement: nothing fits, or nowhere takes VMs: an error naming host and reasons",
          "[placement]") {
  auto full =
      PlanRebalance({Host("a", 1, {Vm("x", 1), Vm("y", 2)}), Host("b", 1, {Vm("z", 0)})}, {});
  REQUIRE_FALSE(full.ok());
  CHECK_THAT(full.message(),
             Catch::Contains("host a is over its vCPU budget (2 of 1) and none of its VMs fits "
                             "elsewhere: x (1 vCPU, 64MiB): b has 0 of 1 vCPUs free"));

  FleetHost dead = Host("b", 8, {});
  dead.alive = false;
  FleetHost closed = Host("c", 8, {});
  closed.migration_address.clear();
  auto nowhere = PlanRebalance({Host("a", 1, {Vm("x", 1), Vm("y", 2)}), dead, closed}, {});
  REQUIRE_FALSE(nowhere.ok());
  CHECK_THAT(nowhere.message(),
             Catch::Contains("b is not alive") && Catch::Contains("c takes no migrations"));

  auto alone = PlanRebalance({Host("a", 1, {Vm("x", 1), Vm("y", 2)})}, {});
  REQUIRE_FALSE(alone.ok());
  CHECK_THAT(alone.message(), Catch::Contains("there is no other host"));
}

TEST_CASE("placement: place names the host with room that changes the fewest pages",
          "[placement]") {
  PlacementRules rules;
  rules.anti_affinity = {config::AntiAffinityGroup{"db", {"db-1", "db-2"}, {}}};
  const std::vector<FleetHost> fleet = {
      Host("a", 4, {Vm("db-1", 5, 100)}), Host("b", 4, {Vm("db-2", 0, 1)}),
      Host("c", 4, {Vm("w", 0, 3000)}), Host("d", 1, {Vm("q", 0, 0)})};
  auto p = PlaceVm(fleet, rules, "db-1");
  REQUIRE(p.ok());
  CHECK(p->from == "a");
  CHECK(p->to == "c");  // b runs db-2, d is full
  CHECK(PlacementJson(*p)["to"] == "c");

  auto unknown = PlaceVm(fleet, rules, "nope");
  REQUIRE_FALSE(unknown.ok());
  CHECK_THAT(unknown.message(),
             Catch::Contains("vm 'nope' runs on no host of the fleet (hosts: a, b, c, d)"));

  auto stuck = PlaceVm({Host("a", 4, {Vm("x", 0)}), Host("b", 0, {})}, {}, "x");
  REQUIRE_FALSE(stuck.ok());
  CHECK_THAT(stuck.message(), Catch::Contains("no host can take vm 'x'") &&
                                  Catch::Contains("b has 0 of 0 vCPUs free"));
}

}  // namespace qosvisor::control
