// Leader election and move requests against a real etcd: one of two daemons leads, the other
// takes over at once when it stops and within the lease TTL when it dies; a move asked by the
// leader is carried out by the source host's server, its outcome (done or failed) read back; a
// move nobody serves, and one whose leader vanished, end with errors, never a hang.
#include "control/fleet_leader.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <thread>

#include "control/fleet_moves.h"
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
  return f;
}

// A fresh etcd per test: the leader key of one test must not linger into the next.
std::unique_ptr<testing::EtcdProcess> OwnEtcd() {
  if (!testing::EtcdInstalled()) return nullptr;
  auto e = std::make_unique<testing::EtcdProcess>();
  return e->Start() ? std::move(e) : nullptr;
}

}  // namespace

TEST_CASE("leader: of two daemons one leads, and when it stops the other leads at once",
          "[leader]") {
  auto etcd = OwnEtcd();
  REQUIRE_ETCD(etcd.get());
  LeaderElection a(FleetOf("edge-a", etcd->endpoint()), "a1");
  LeaderElection b(FleetOf("edge-b", etcd->endpoint()), "b1");
  a.Start();
  REQUIRE(Eventually([&] { return a.leading(); }));
  b.Start();
  REQUIRE(Eventually([&] { return b.leader() == "edge-a"; }));
  CHECK_FALSE(b.leading());
  CHECK(b.lease() == 0);
  CHECK(a.lease() != 0);
  CHECK(a.CheckLeading().ok());
  CHECK_THAT(b.CheckLeading().message(),
             Catch::Contains("host edge-a leads the fleet's planning, not this one (edge-b)"));
  auto holder = b.HolderNow();
  REQUIRE(holder.ok());
  CHECK(holder->host == "edge-a");
  CHECK_FALSE(holder->me);
  CHECK(a.HolderNow()->me);
  CHECK(a.StatusJson()["leading"] == true);
  CHECK(b.StatusJson()["leader"] == "edge-a");

  const auto stopped = std::chrono::steady_clock::now();
  a.Stop();
  REQUIRE(Eventually([&] { return b.leading(); }, 3000ms));
  // At b's next look: a tenth of the TTL, not the TTL.
  CHECK(std::chrono::steady_clock::now() - stopped < 1000ms);
  CHECK(b.leader() == "edge-b");
  CHECK(b.CheckLeading().ok());
  b.Stop();
}

TEST_CASE("leader: a leader that dies (its lease no longer renewed) is replaced within the TTL",
          "[leader]") {
  auto etcd = OwnEtcd();
  REQUIRE_ETCD(etcd.get());
  // The dead leader: its key under a lease nobody renews, as a killed daemon leaves it.
  EtcdClient c(EtcdOptions{{etcd->endpoint()}});
  auto lease = c.LeaseGrant(2);
  REQUIRE(lease.ok());
  REQUIRE(c.Put(std::string(LeaderElection::kLeaderKey), R"({"host": "edge-dead"})", *lease).ok());
  const auto died = std::chrono::steady_clock::now();
  LeaderElection b(FleetOf("edge-b", etcd->endpoint()), "b1");
  b.Start();
  REQUIRE(Eventually([&] { return b.leader() == "edge-dead"; }));
  CHECK_THAT(b.CheckLeading().message(), Catch::Contains("host edge-dead leads"));
  REQUIRE(Eventually([&] { return b.leading(); }, 5000ms));
  const auto took = std::chrono::steady_clock::now() - died;
  INFO("took over after " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                          << " ms");
  // etcd expires leases on its own ticks (up to ~0.5 s late); b looks every 200 ms.
  CHECK(took < 2000ms + 700ms);
  b.Stop();
}

TEST_CASE("leader: with etcd gone nobody leads, and a daemon leads again when it returns",
          "[leader]") {
  auto etcd = OwnEtcd();
  REQUIRE_ETCD(etcd.get());
  LeaderElection a(FleetOf("edge-a", etcd->endpoint()), "a1");
  a.Start();
  REQUIRE(Eventually([&] { return a.leading(); }));
  etcd->Stop();
  REQUIRE(Eventually([&] { return !a.leading(); }, 4000ms));
  CHECK_THAT(a.StatusJson()["election_error"].get<std::string>(),
             Catch::Contains(etcd->endpoint()));
  CHECK_THAT(a.CheckLeading().message(), Catch::Contains("cannot tell who leads the fleet"));
  CHECK_FALSE(a.HolderNow().ok());
  REQUIRE(etcd->Start());
  CHECK(Eventually([&] { return a.leading(); }, 6000ms));
  a.Stop();
}

TEST_CASE("moves: the source host carries out the leader's request and reports the outcome",
          "[leader][moves]") {
  auto etcd = OwnEtcd();
  REQUIRE_ETCD(etcd.get());
  std::vector<std::string> asked;
  MoveServer server(FleetOf("edge-a", etcd->endpoint()), 50ms,
                    [&](const std::string& vm, const std::string& to) -> Result<nlohmann::json> {
                      asked.push_back(vm + "->" + to);
                      if (vm == "stuck") return Status::Error("out of memory on " + to);
                      return nlohmann::json{{"rounds", 1}};
                    });
  server.Start();
  EtcdClient c(EtcdOptions{{etcd->endpoint()}});
  auto lease = c.LeaseGrant(5);
  REQUIRE(lease.ok());
  MoveWait wait;
  wait.poll = 50ms;
  MoveRecord request{"p1", "web", "edge-a", "edge-c", "edge-b"};
  auto done = RunMoveThroughEtcd(c, request, *lease, wait);
  REQUIRE(done.ok());
  CHECK(done->state == "done");
  CHECK(done->result["rounds"] == 1);
  CHECK(asked == std::vector<std::string>{"web->edge-c"});
  // The request is gone once read, so the VM can move again.
  CHECK(c.RangePrefix(std::string(kMovesPrefix))->kvs.empty());

  request.vm = "stuck";
  auto failed = RunMoveThroughEtcd(c, request, *lease, wait);
  REQUIRE(failed.ok());
  CHECK(failed->state == "failed");
  CHECK(failed->error == "out of memory on edge-c");

  SECTION("a request nobody serves is given up") {
    request.from = "edge-nobody";
    wait.pickup = 300ms;
    auto nobody = RunMoveThroughEtcd(c, request, *lease, wait);
    REQUIRE_FALSE(nobody.ok());
    CHECK_THAT(nobody.message(), Catch::Contains("host edge-nobody did not take up the move"));
  }
  SECTION("a leader that loses the lead stops waiting, saying why") {
    request.from = "edge-nobody";
    wait.still_valid = [] { return Status::Error("host edge-x leads the fleet's planning"); };
    auto lost = RunMoveThroughEtcd(c, request, *lease, wait);
    REQUIRE_FALSE(lost.ok());
    CHECK_THAT(lost.message(), Catch::Contains("edge-x leads"));
  }
  SECTION("a request whose leader's lease ends vanishes, and the wait says so") {
    request.from = "edge-nobody";
    std::thread revoke([&] {
      std::this_thread::sleep_for(200ms);
      (void)c.LeaseRevoke(*lease);
    });
    auto vanished = RunMoveThroughEtcd(c, request, *lease, wait);
    revoke.join();
    REQUIRE_FALSE(vanished.ok());
    CHECK_THAT(vanished.message(), Catch::Contains("vanished"));
  }
  SECTION("a second request for the same VM is refused") {
    EtcdClient other(EtcdOptions{{etcd->endpoint()}});
    request.from = "edge-nobody";
    REQUIRE(other.Put(MoveKey("edge-nobody", "stuck"), MoveRecordJson(request).dump()).ok());
    auto twice = RunMoveThroughEtcd(c, request, *lease, wait);
    REQUIRE_FALSE(twice.ok());
    CHECK_THAT(twice.message(), Catch::Contains("a move of vm 'stuck' is already requested"));
    (void)other.DeleteRange(MoveKey("edge-nobody", "stuck"));
  }
  server.Stop();
  CHECK(server.moves_done() == 2);
}

TEST_CASE("moves: a leader that vanishes mid-move leaves the source to finish, then serve the next",
          "[leader][moves]") {
  auto etcd = OwnEtcd();
  REQUIRE_ETCD(etcd.get());
  EtcdClient c(EtcdOptions{{etcd->endpoint()}});
  auto lease = c.LeaseGrant(5);
  REQUIRE(lease.ok());
  std::atomic<bool> leader_gone{false};
  MoveServer server(FleetOf("edge-a", etcd->endpoint()), 50ms,
                    [&](const std::string& vm, const std::string&) -> Result<nlohmann::json> {
                      if (vm == "slow") {
                        // The leader dies while the migration runs.
                        (void)c.LeaseRevoke(*lease);
                        leader_gone = true;
                      }
                      return nlohmann::json{{"vm", vm}};
                    });
  server.Start();
  MoveWait wait;
  wait.poll = 50ms;
  auto orphaned =
      RunMoveThroughEtcd(c, MoveRecord{"p1", "slow", "edge-a", "edge-c", "edge-b"}, *lease, wait);
  REQUIRE_FALSE(orphaned.ok());
  CHECK_THAT(orphaned.message(), Catch::Contains("vanished"));
  REQUIRE(Eventually([&] { return server.moves_done() == 1; }));
  CHECK(leader_gone);
  // Nothing is left behind for the next leader, whose request is served as any other.
  CHECK(c.RangePrefix(std::string(kMovesPrefix))->kvs.empty());
  auto next_lease = c.LeaseGrant(5);
  REQUIRE(next_lease.ok());
  auto next = RunMoveThroughEtcd(c, MoveRecord{"p2", "web", "edge-a", "edge-c", "edge-d"},
                                 *next_lease, wait);
  REQUIRE(next.ok());
  CHECK(next->state == "done");
  CHECK(next->result["vm"] == "web");
  server.Stop();
}

TEST_CASE("moves: a record that is not a move is refused, naming the field", "[moves]") {
  CHECK_THAT(ParseMoveRecord("[1]").message(), Catch::Contains("not a JSON object"));
  nlohmann::json j = MoveRecordJson(MoveRecord{"p", "v", "a", "b", "c"});
  REQUIRE(ParseMoveRecord(j.dump()).ok());
  j["state"] = "sleeping";
  CHECK_THAT(ParseMoveRecord(j.dump()).message(), Catch::Contains("state 'sleeping' is unknown"));
  j.erase("to");
  CHECK_THAT(ParseMoveRecord(j.dump()).message(), Catch::Contains("to is missing"));
}

}  // namespace qosvisor::control
