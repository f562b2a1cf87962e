// The fleet: and migration: sections: every key read into its field, the defaults, the round
// trip through Format(), and each bad value reported with its key path and position.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "bad_config.h"
#include "config/loader.h"

namespace qosvisor::config {
namespace {

constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kSecond = 1'000'000'000ull;

constexpr const char* kClasses = "classes: [{name: migration, queue: 7, policy: fifo}]\n";

constexpr const char* kFull = R"(classes: [{name: migration, queue: 7, policy: fifo}]
fleet:
  host: edge-a
  etcd: [http://127.0.0.1:2379, "http://[::1]:2379/"]
  lease_ttl: 4s
  publish_interval: 500ms
  budget: {vcpus: 8, memory: 4GiB, uplink: 1Gbps}
  labels: {site: lab, rack: "3", on: "yes"}
  anti_affinity:
    - {name: db, vms: [db-1, db-2, db-3]}
    - {name: web, vms: [web-1, web-2]}
  rebalance: {choose: lowest-page-rate}
migration:
  listen: 10.99.0.1:7400
  key_file: keys/migration.key
  downtime: 20ms
  class: migration
  timeout: 2m
  bandwidth: 500Mbps
)";

Config LoadOk(const std::string& yaml) {
  LoadResult r = LoadFromString(yaml, "/etc/qv/box.yaml");
  INFO(r.ErrorText());
  REQUIRE(r.ok());
  return *r.config;
}

using BadCase = BadConfig;

}  // namespace

TEST_CASE("fleet and migration keys are read into their fields", "[config][fleet]") {
  const Config c = LoadOk(kFull);
  REQUIRE(c.fleet);
  const Fleet& f = *c.fleet;
  CHECK(f.host == "edge-a");
  CHECK(f.etcd == std::vector<std::string>{"http://127.0.0.1:2379", "http://[::1]:2379"});
  CHECK(f.lease_ttl_ns == 4 * kSecond);
  CHECK(f.publish_interval_ns == kSecond / 2);
  CHECK(f.budget_vcpus == 8);
  CHECK(f.budget_memory_bytes == 4 * kGiB);
  CHECK(f.budget_uplink_bps == 1'000'000'000ull);
  CHECK(f.labels == std::map<std::string, std::string>{{"site", "lab"}, {"rack", "3"},
                                                         {"on", "yes"}});
  REQUIRE(f.anti_affinity.size() == 2);
  CHECK(f.anti_affinity[0].name == "db");
  CHECK(f.anti_affinity[0].vms == std::vector<std::string>{"db-1", "db-2", "db-3"});
  CHECK(f.anti_affinity[1].vms == std::vector<std::string>{"web-1", "web-2"});
  CHECK(f.rebalance_choose == LeaveRule::kLowestPageRate);
  const Migration& m = c.migration;
  CHECK(m.listen == "10.99.0.1:7400");
  CHECK(m.key_file == "keys/migration.key");
  CHECK(c.Resolve(m.key_file) == "/etc/qv/keys/migration.key");
  CHECK(m.downtime_ns == 20'000'000ull);
  CHECK(m.class_name == "migration");
  CHECK(m.timeout_ns == 120 * kSecond);
  CHECK(m.bandwidth_bps == 500'000'000ull);
}

TEST_CASE("without fleet: and migration: the box needs no etcd and migrates with defaults",
          "[config][fleet]") {
  const Config c = LoadOk("ports: [{name: p, driver: ring}]\n");
  CHECK_FALSE(c.fleet);
  CHECK(c.migration == Migration{});
  CHECK(c.migration.listen.empty());
  CHECK(c.migration.downtime_ns == 50'000'000ull);
  CHECK(c.migration.timeout_ns == 60 * kSecond);
  CHECK(c.migration.bandwidth_bps == 0);
  CHECK(Format(c).find("fleet") == std::string::npos);
  CHECK(Format(c).find("migration") == std::string::npos);

  const Config d = LoadOk(
      "fleet: {host: b1, etcd: [http://localhost:2379], budget: {vcpus: 0, memory: 0, "
      "uplink: 10Mbps}}\nmigration: {bandwidth: 0}\n");
  REQUIRE(d.fleet);
  CHECK(d.fleet->lease_ttl_ns == 10 * kSecond);
  CHECK(d.fleet->publish_interval_ns == 2 * kSecond);
  CHECK(d.fleet->labels.empty());
  CHECK(d.fleet->anti_affinity.empty());
  CHECK(d.fleet->rebalance_choose == LeaveRule::kFewestChangedPages);
  CHECK(Format(d).find("rebalance") == std::string::npos);
  CHECK(d.migration.bandwidth_bps == 0);
}

TEST_CASE("fleet and migration survive Format() and a change to them is seen",
          "[config][fleet][format]") {
  const Config c = LoadOk(kFull);
  const std::string text = Format(c);
  INFO(text);
  const Config again = LoadOk(text);
  CHECK(again == c);
  CHECK(Format(again) == text);
  CHECK(text.find("rack: \"3\"") != std::string::npos);

  Config changed = again;
  changed.fleet->labels["rack"] = "4";
  CHECK_FALSE(changed == c);
  changed = again;
  changed.migration.downtime_ns += 1;
  CHECK_FALSE(changed == c);
  changed = again;
  changed.fleet->anti_affinity[1].vms.push_back("web-3");
  CHECK_FALSE(changed == c);
  changed = again;
  changed.fleet->rebalance_choose = LeaveRule::kSmallestMemory;
  CHECK_FALSE(changed == c);
  changed = again;
  changed.fleet.reset();
  CHECK_FALSE(changed == c);
}

TEST_CASE("each bad fleet or migration value names its key", "[config][fleet][errors]") {
  const std::string budget = "budget: {vcpus: 1, memory: 1GiB, uplink: 1Gbps}";
  auto fleet = [&](const std::string& body) { return "fleet:\n" + body; };
  const std::string host = "  host: a\n  etcd: [http://127.0.0.1:2379]\n";
  const std::vector<BadCase> cases = {
      {fleet("  etcd: [http://127.0.0.1:2379]\n  " + budget + "\n"), "2:3: fleet",
       "missing required key 'host'"},
      {fleet("  host: Edge_A\n  etcd: [http://127.0.0.1:2379]\n  " + budget + "\n"),
       "2:9: fleet.host", "'Edge_A' is not a fleet host name"},
      {fleet("  host: " + std::string(64, 'a') + "\n  etcd: [http://127.0.0.1:2379]\n  " +
             budget + "\n"),
       "2:9: fleet.host", "is not a fleet host name"},
      {fleet("  host: a\n  " + budget + "\n"), "2:3: fleet", "missing required key 'etcd'"},
      {fleet("  host: a\n  etcd: []\n  " + budget + "\n"), "3:9: fleet.etcd",
       "needs at least one endpoint"},
      {fleet("  host: a\n  etcd: [127.0.0.1:2379]\n  " + budget + "\n"), "3:10: fleet.etcd[0]",
       "is not an etcd endpoint; use http://host:port"},
      {fleet("  host: a\n  etcd: [https://e:2379]\n  " + budget + "\n"), "3:10: fleet.etcd[0]",
       "is not an etcd endpoint"},
      {fleet(host + "  lease_ttl: 1s\n  " + budget + "\n"), "4:14: fleet.lease_ttl",
       "'1s' is too small; use at least 2s"},
      {fleet(host + "  lease_ttl: soon\n  " + budget + "\n"), "4:14: fleet.lease_ttl",
       "'soon' is not a duration"},
      {fleet(host + "  lease_ttl: 4s\n  publish_interval: 4s\n  " + budget + "\n"),
       "5:21: fleet.publish_interval", "is not below lease_ttl (4s)"},
      {fleet(host + "  publish_interval: 10ms\n  " + budget + "\n"),
       "4:21: fleet.publish_interval", "too short"},
      {fleet(host), "2:3: fleet", "missing required key 'budget'"},
      {fleet(host + "  budget: {vcpus: 1, memory: 1GiB}\n"), "4:11: fleet.budget",
       "missing required key 'uplink'"},
      {fleet(host + "  budget: {vcpus: -1, memory: 1GiB, uplink: 1Gbps}\n"),
       "4:19: fleet.budget.vcpus", "out of range"},
      {fleet(host + "  budget: {vcpus: 1, memory: lots, uplink: 1Gbps}\n"),
       "4:30: fleet.budget.memory", "'lots' is not a size"},
      {fleet(host + "  budget: {vcpus: 1, memory: 1GiB, uplink: fast}\n"),
       "4:44: fleet.budget.uplink", "'fast' is not a rate"},
      {fleet(host + "  budget: {vcpus: 1, memory: 1GiB, uplink: 1Gbps, disk: 1}\n"),
       "4:51: fleet.budget.disk", "unknown key 'disk'"},
      {fleet(host + "  " + budget + "\n  labels: [a]\n"), "5:11: fleet.labels",
       "expected a mapping"},
      {fleet(host + "  " + budget + "\n  labels: {site: [a]}\n"), "5:18: fleet.labels.site",
       "expected a string"},
      {fleet(host + "  " + budget + "\n  lables: {}\n"), "5:3: fleet.lables",
       "did you mean 'labels'?"},
      {fleet(host + "  " + budget + "\n  anti_affinity: {db: [a, b]}\n"),
       "5:18: fleet.anti_affinity", "expected a list"},
      {fleet(host + "  " + budget + "\n  anti_affinity: [{vms: [a, b]}]\n"),
       "5:19: fleet.anti_affinity[0]", "missing required key 'name'"},
      {fleet(host + "  " + budget + "\n  anti_affinity: [{name: db}]\n"),
       "5:19: fleet.anti_affinity[0]", "missing required key 'vms'"},
      {fleet(host + "  " + budget + "\n  anti_affinity: [{name: db, vms: [a]}]\n"),
       "5:35: fleet.anti_affinity[0].vms", "needs at least two VMs"},
      {fleet(host + "  " + budget + "\n  anti_affinity: [{name: db, vms: [a, b, a]}]\n"),
       "5:42: fleet.anti_affinity[0].vms[2]", "vm 'a' is named twice"},
      {fleet(host + "  " + budget + "\n  anti_affinity: [{name: db, vms: [a, 9b]}]\n"),
       "5:39: fleet.anti_affinity[0].vms[1]", "'9b' is not a valid name"},
      {fleet(host + "  " + budget +
             "\n  anti_affinity: [{name: db, vms: [a, b]}, {name: db, vms: [c, d]}]\n"),
       "5:51: fleet.anti_affinity[1].name", "duplicate anti-affinity group 'db'"},
      {fleet(host + "  " + budget + "\n  anti_affinity: [{name: db, vms: [a, b], hosts: 2}]\n"),
       "5:43: fleet.anti_affinity[0].hosts", "unknown key 'hosts'"},
      {fleet(host + "  " + budget + "\n  rebalance: {choose: cheapest}\n"),
       "5:23: fleet.rebalance.choose", "'cheapest' is not a rule for the VM that leaves; use one "
       "of: fewest-changed-pages, lowest-page-rate, smallest-memory"},
      {fleet(host + "  " + budget + "\n  rebalance: {chose: smallest-memory}\n"),
       "5:15: fleet.rebalance.chose", "did you mean 'choose'?"},
      {"fleet:\nmigration: {}\n", "1:1: fleet", "expected a mapping with host, etcd and budget, got nothing"},
      {"migration: {listen: nowhere}\n", "1:21: migration.listen",
       "'nowhere' is not address:port"},
      {"migration: {listen: 10.99.0.1:7400}\n", "1:21: migration.listen",
       "needs migration.key_file"},
      {"migration: {key_file: \"\"}\n", "1:23: migration.key_file", "must not be empty"},
      {"migration: {downtime: fast}\n", "1:23: migration.downtime", "'fast' is not a duration"},
      {"migration: {downtime: 2m}\n", "1:23: migration.downtime",
       "is not below migration.timeout (1m)"},
      {"migration: {timeout: 0s}\n", "1:22: migration.timeout", "too small"},
      {std::string(kClasses) + "migration: {class: bulk}\n", "2:20: migration.class",
       "unknown class 'bulk'"},
      {"migration: {bandwidth: lots}\n", "1:24: migration.bandwidth", "'lots' is not a rate"},
      {"migration: {key: x}\n", "1:13: migration.key", "unknown key 'key'"},
  };
  for (const BadCase& c : cases) CheckRefused(c);
}

}  // namespace qosvisor::config
