// Quotas and the self-service table: which quotas bind a caller, refusals that name the quota and
// its figures, and which commands a member of control.group may send.
#include "control/quota.h"

#include <catch2/catch.hpp>

#include "control/access.h"

namespace qosvisor::control {
namespace {

using nlohmann::json;

constexpr uint64_t kMiB = 1ull << 20;

Caller Alice() {
  Caller c;
  c.uid = 1001;
  c.gid = 1001;
  c.name = "alice";
  c.group_names = {"alice", "devs"};
  c.privileged = false;
  return c;
}

config::Quota GroupQuota(const std::string& group) {
  config::Quota q;
  q.group = group;
  return q;
}

VmDemand Vm(uint32_t vcpus, uint64_t memory, std::vector<std::string> classes = {}) {
  return VmDemand{vcpus, memory, 0, std::move(classes)};
}

}  // namespace

TEST_CASE("a caller is bound by its user's quota and its groups' quotas", "[control][quota]") {
  config::Quota user;
  user.user = "alice";
  const std::vector<config::Quota> quotas = {GroupQuota("devs"), GroupQuota("ops"), user};
  const auto binding = QuotasFor(quotas, Alice());
  REQUIRE(binding.size() == 2);
  CHECK(QuotaLabel(*binding[0]) == "group devs");
  CHECK(QuotaLabel(*binding[1]) == "user alice");
  Caller bob = Alice();
  bob.name = "bob";
  bob.group_names = {"bob"};
  CHECK(QuotasFor(quotas, bob).empty());
}

TEST_CASE("a quota refusal names the quota, the limit, the use and the request",
          "[control][quota]") {
  config::Quota devs = GroupQuota("devs");
  devs.vcpus = 4;
  devs.memory_bytes = 64 * kMiB;
  devs.vms = 3;
  const std::vector<config::Quota> quotas = {devs};
  const std::vector<QuotaCharge> in_use = {{{"group devs"}, Vm(3, 16 * kMiB)},
                                           {{"user bob"}, Vm(8, 512 * kMiB)}};  // not devs'
  auto vcpus = CheckQuotas(quotas, Alice(), in_use, {Vm(2, 16 * kMiB)});
  REQUIRE_FALSE(vcpus.ok());
  CHECK(vcpus.message() == "quota of group devs: vcpus 4, in use 3, asked 2");
  auto memory = CheckQuotas(quotas, Alice(), in_use, {Vm(1, 32 * kMiB), Vm(0, 32 * kMiB)});
  REQUIRE_FALSE(memory.ok());
  CHECK(memory.message() == "quota of group devs: memory 64MiB, in use 16MiB, asked 64MiB");
  auto count = CheckQuotas(quotas, Alice(), in_use, {Vm(0, kMiB), Vm(0, kMiB), Vm(0, kMiB)});
  REQUIRE_FALSE(count.ok());
  CHECK(count.message() == "quota of group devs: vms 3, in use 1, asked 3");
  auto fits = CheckQuotas(quotas, Alice(), in_use, {Vm(1, 48 * kMiB)});
  REQUIRE(fits.ok());
  CHECK(*fits == std::vector<std::string>{"group devs"});  // what the new VM is charged to
}

TEST_CASE("every binding quota must hold, and absent limits are no limits", "[control][quota]") {
  config::Quota devs = GroupQuota("devs");  // no limits at all
  config::Quota alice;
  alice.user = "alice";
  alice.disk_bytes = 0;  // no disks
  const std::vector<config::Quota> quotas = {devs, alice};
  CHECK(CheckQuotas(quotas, Alice(), {}, {Vm(64, 3ull << 30)}).ok());
  VmDemand with_disk = Vm(1, kMiB);
  with_disk.disk_bytes = 512;
  auto refused = CheckQuotas(quotas, Alice(), {}, {with_disk});
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.message() == "quota of user alice: disk 0B, in use 0B, asked 512B");
}

TEST_CASE("NIC classes outside a quota's list are refused", "[control][quota]") {
  config::Quota devs = GroupQuota("devs");
  devs.classes = std::vector<std::string>{"interactive"};
  CHECK(CheckQuotas({devs}, Alice(), {}, {Vm(1, kMiB, {"interactive"})}).ok());
  CHECK(CheckQuotas({devs}, Alice(), {}, {Vm(1, kMiB)}).ok());  // a NIC without a class
  auto refused = CheckQuotas({devs}, Alice(), {}, {Vm(1, kMiB, {"interactive", "bulk"})});
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.message() ==
        "quota of group devs: NIC class 'bulk' is not allowed (allowed: interactive)");
  devs.classes = std::vector<std::string>{};
  CHECK(CheckQuotas({devs}, Alice(), {}, {Vm(1, kMiB, {"bulk"})}).message() ==
        "quota of group devs: NIC class 'bulk' is not allowed (no class is)");
}

TEST_CASE("a caller no quota names may create nothing", "[control][quota]") {
  auto refused = CheckQuotas({GroupQuota("ops")}, Alice(), {}, {Vm(1, kMiB)});
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.message() ==
        "permission denied: no quota names alice (uid 1001) or one of its groups (alice, devs), "
        "so it may create no VMs; add one under quotas: in the configuration");
}

TEST_CASE("members of control.group may send only the self-service commands", "[control][access]") {
  const Caller alice = Alice();
  for (const char* command : {"status", "ports", "stats", "vms", "bridges", "classes", "jobs",
                              "job", "apps", "quota", "deploy", "undeploy"}) {
    INFO(command);
    CHECK(AdmitCommand(command, json::object(), alice).ok());
  }
  CHECK(AdmitCommand("vm", {{"action", "create"}}, alice).ok());
  CHECK(AdmitCommand("vm", {{"action", "destroy"}}, alice).ok());
  CHECK(AdmitCommand("flows", {{"action", "dump"}}, alice).ok());
  for (const auto& [command, action] :
       std::vector<std::pair<std::string, std::string>>{{"flows", "add"},
                                                        {"flows", "del"},
                                                        {"vm", "snapshot"},
                                                        {"vm", "stop"},
                                                        {"reload", ""},
                                                        {"capture", ""},
                                                        {"fdb", ""},
                                                        {"uplinks", ""},
                                                        {"stop", ""}}) {
    const json args = action.empty() ? json::object() : json{{"action", action}};
    const Status s = AdmitCommand(command, args, alice);
    INFO(command << " " << action);
    REQUIRE_FALSE(s.ok());
    const std::string what = action.empty() ? command : command + " " + action;
    CHECK_THAT(s.message(),
               Catch::StartsWith("permission denied: '" + what +
                                 "' is for root and the user qosvisor runs as; alice (uid 1001) "
                                 "may use status, ports"));
  }
  Caller root;  // privileged by default
  CHECK(AdmitCommand("reload", json::object(), root).ok());
  CHECK(AdmitCommand("vm", {{"action", "fork"}}, root).ok());
}

}  // namespace qosvisor::control
