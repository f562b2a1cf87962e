// EtcdClient against a real etcd (one member on loopback, started by the test): keys, prefixes,
// transactions, leases, watches; and against a fake server answering junk, a closed port and a
// dead first endpoint.
#include "control/etcd_client.h"

#include <httplib.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <mutex>
#include <thread>

#include "tests/unit/control/etcd_process.h"

namespace qosvisor::control {
namespace {

using namespace std::chrono_literals;
using testing::SharedEtcd;

// The binary's etcd as `etcd`; skips the test (visibly) when there is none to run.
#define REQUIRE_SHARED_ETCD()                         \
  testing::EtcdProcess* etcd = SharedEtcd();          \
  REQUIRE_ETCD(etcd)

EtcdClient ClientOf(const std::vector<std::string>& endpoints) {
  return EtcdClient(EtcdOptions{endpoints, std::chrono::milliseconds(1000)});
}

// A prefix of this test's own, so that test cases sharing the etcd do not see each other's keys.
std::string Prefix(const std::string& name) { return "/test/" + name + "/"; }

// An HTTP server on loopback that answers every POST with `body` and `status`.
class JunkServer {
 public:
  JunkServer(std::string body, int status = 200) {
    server_.Post(".*", [body, status](const httplib::Request&, httplib::Response& res) {
      res.status = status;
      res.set_content(body, "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~JunkServer() {
    server_.stop();
    thread_.join();
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace

TEST_CASE("etcd: put, range, prefix and delete", "[etcd]") {
  REQUIRE_SHARED_ETCD();
  EtcdClient c = ClientOf({etcd->endpoint()});
  const std::string p = Prefix("kv");
  REQUIRE(c.Put(p + "a", "one").ok());
  REQUIRE(c.Put(p + "b", std::string("two\0\xff", 5)).ok());  // bytes, not text
  REQUIRE(c.Put(Prefix("kv-other") + "c", "elsewhere").ok());

  auto a = c.Range(p + "a");
  REQUIRE(a.ok());
  REQUIRE(a->kvs.size() == 1);
  CHECK(a->kvs[0].key == p + "a");
  CHECK(a->kvs[0].value == "one");
  CHECK(a->kvs[0].create_revision > 0);
  CHECK(a->kvs[0].mod_revision == a->kvs[0].create_revision);
  CHECK(a->kvs[0].lease == 0);
  CHECK(a->revision >= a->kvs[0].mod_revision);

  auto all = c.RangePrefix(p);
  REQUIRE(all.ok());
  REQUIRE(all->kvs.size() == 2);
  CHECK(all->kvs[1].value == std::string("two\0\xff", 5));

  auto missing = c.Range(p + "nope");
  REQUIRE(missing.ok());
  CHECK(missing->kvs.empty());

  auto deleted = c.DeleteRange(p + "a");
  REQUIRE(deleted.ok());
  CHECK(*deleted == 1);
  auto gone = c.DeletePrefix(p);
  REQUIRE(gone.ok());
  CHECK(*gone == 1);
  CHECK(c.RangePrefix(p)->kvs.empty());
  CHECK(c.RangePrefix(Prefix("kv-other"))->kvs.size() == 1);
  CHECK(c.endpoint() == etcd->endpoint());
}

TEST_CASE("etcd: a transaction runs its success or its failure branch", "[etcd]") {
  REQUIRE_SHARED_ETCD();
  EtcdClient c = ClientOf({etcd->endpoint()});
  const std::string key = Prefix("txn") + "k";
  (void)c.DeleteRange(key);

  auto created = c.Txn({EtcdCompare::CreateRevision(key, 0)}, {EtcdOp::Put(key, "first")});
  REQUIRE(created.ok());
  CHECK(*created);
  auto again = c.Txn({EtcdCompare::CreateRevision(key, 0)}, {EtcdOp::Put(key, "second")},
                     {EtcdOp::Put(key + ".lost", "x")});
  REQUIRE(again.ok());
  CHECK_FALSE(*again);
  CHECK(c.Range(key)->kvs[0].value == "first");
  CHECK(c.Range(key + ".lost")->kvs.size() == 1);

  auto by_value = c.Txn({EtcdCompare::Value(key, "first")}, {EtcdOp::Put(key, "third")});
  REQUIRE(by_value.ok());
  CHECK(*by_value);
  const int64_t mod = c.Range(key)->kvs[0].mod_revision;
  auto stale = c.Txn({EtcdCompare::ModRevision(key, mod - 1)}, {EtcdOp::Delete(key)});
  REQUIRE(stale.ok());
  CHECK_FALSE(*stale);
  auto current = c.Txn({EtcdCompare::ModRevision(key, mod)}, {EtcdOp::Delete(key)});
  REQUIRE(current.ok());
  CHECK(*current);
  CHECK(c.Range(key)->kvs.empty());
  (void)c.DeletePrefix(Prefix("txn"));
}

TEST_CASE("etcd: a lease kept alive holds its key, an expired or revoked one takes it along",
          "[etcd]") {
  REQUIRE_SHARED_ETCD();
  EtcdClient c = ClientOf({etcd->endpoint()});
  const std::string p = Prefix("lease");

  auto lease = c.LeaseGrant(2);
  REQUIRE(lease.ok());
  CHECK(*lease != 0);
  REQUIRE(c.Put(p + "held", "x", *lease).ok());
  CHECK(c.Range(p + "held")->kvs[0].lease == *lease);
  auto ttl = c.LeaseKeepAliveOnce(*lease);
  REQUIRE(ttl.ok());
  CHECK(*ttl == 2);

  // Left alone, it expires (etcd checks every half second) and the key goes with it.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!c.Range(p + "held")->kvs.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  CHECK(c.Range(p + "held")->kvs.empty());
  auto expired = c.LeaseKeepAliveOnce(*lease);
  REQUIRE(expired.ok());
  CHECK(*expired == 0);

  auto second = c.LeaseGrant(30);
  REQUIRE(second.ok());
  REQUIRE(c.Put(p + "revoked", "x", *second).ok());
  REQUIRE(c.LeaseRevoke(*second).ok());
  CHECK(c.Range(p + "revoked")->kvs.empty());
  CHECK(*c.LeaseKeepAliveOnce(*second) == 0);
  auto twice = c.LeaseRevoke(*second);
  REQUIRE_FALSE(twice.ok());
  CHECK_THAT(twice.message(), Catch::Contains("lease not found"));
  CHECK_THAT(twice.message(), Catch::Contains(etcd->endpoint()));
  auto bad_put = c.Put(p + "x", "y", *second);
  REQUIRE_FALSE(bad_put.ok());
  CHECK_THAT(bad_put.message(), Catch::Contains("/v3/kv/put"));
}

TEST_CASE("etcd: a watch sees a put and a delete under its prefix, and stops when asked",
          "[etcd]") {
  REQUIRE_SHARED_ETCD();
  EtcdClient c = ClientOf({etcd->endpoint()});
  const std::string p = Prefix("watch");
  std::mutex mu;
  std::vector<EtcdWatchEvent> events;
  std::atomic<bool> stop{false};
  Status result = Status::Ok();
  // From the current revision on, so nothing from earlier test cases.
  const int64_t from = c.RangePrefix(p)->revision + 1;
  std::thread watcher([&] {
    result = c.Watch(
        p, from,
        [&](const EtcdWatchEvent& e) {
          std::lock_guard lock(mu);
          events.push_back(e);
        },
        stop);
  });
  REQUIRE(c.Put(Prefix("watch-not") + "x", "unseen").ok());
  REQUIRE(c.Put(p + "a", "1").ok());
  REQUIRE(c.DeleteRange(p + "a").ok());
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  for (;;) {
    {
      std::lock_guard lock(mu);
      if (events.size() >= 2 || std::chrono::steady_clock::now() > deadline) break;
    }
    std::this_thread::sleep_for(20ms);
  }
  const auto stopped = std::chrono::steady_clock::now();
  stop = true;
  watcher.join();
  CHECK(std::chrono::steady_clock::now() - stopped < 2s);
  CHECK(result.ok());
  REQUIRE(events.size() == 2);
  CHECK(events[0].type == EtcdWatchEvent::Type::kPut);
  CHECK(events[0].kv.key == p + "a");
  CHECK(events[0].kv.value == "1");
  CHECK(events[1].type == EtcdWatchEvent::Type::kDelete);
  CHECK(events[1].kv.key == p + "a");
  CHECK(events[1].kv.mod_revision > events[0].kv.mod_revision);
}

TEST_CASE("etcd: a server answering junk gives errors, never a crash", "[etcd]") {
  // Nothing etcd would say: every call fails, naming the endpoint.
  const std::vector<std::pair<std::string, int>> answers = {
      {"this is not JSON", 200},
      {"[1, 2, 3]", 200},
      {"", 200},
      {R"({"kvs": []})", 200},
      {R"({"header": {"revision": "twelve"}})", 200},
      {R"({"header": 5, "ID": "1", "TTL": "5"})", 200},
      {R"({"result": {"TTL": "5"}})", 200},
      {R"({"error": {"message": "broken"}})", 200},
      {"<html>bad gateway</html>", 502},
  };
  for (const auto& [body, status] : answers) {
    JunkServer junk(body, status);
    INFO("server answers HTTP " << status << ": " << body);
    EtcdClient c = ClientOf({junk.endpoint()});
    auto range = c.Range("/k");
    CHECK_FALSE(range.ok());
    CHECK_THAT(range.message(), Catch::Contains(junk.endpoint()));
    CHECK_FALSE(c.RangePrefix("/k/").ok());
    CHECK_FALSE(c.Put("/k", "v").ok());
    CHECK_FALSE(c.DeleteRange("/k").ok());
    CHECK_FALSE(c.Txn({EtcdCompare::CreateRevision("/k", 0)}, {EtcdOp::Put("/k", "v")}).ok());
    CHECK_FALSE(c.LeaseGrant(5).ok());
    CHECK_FALSE(c.LeaseKeepAliveOnce(5).ok());
    CHECK_FALSE(c.LeaseRevoke(5).ok());
    std::atomic<bool> stop{false};
    int calls = 0;
    CHECK_FALSE(c.Watch("/k/", 0, [&](const EtcdWatchEvent&) { ++calls; }, stop).ok());
    CHECK(calls == 0);
  }
  // A well-formed header with fields that are not: the call that reads them fails.
  const std::string header = R"("header": {"revision": "3"})";
  const std::vector<std::string> bad_ranges = {
      "{" + header + R"(, "kvs": "none"})",
      "{" + header + R"(, "kvs": [17]})",
      "{" + header + R"(, "kvs": [{"key": "!!not base64!!"}]})",
      "{" + header + R"(, "kvs": [{"key": "YQ==", "mod_revision": [1]}]})",
      "{" + header + R"(, "kvs": [{"key": "YQ==", "lease": "-x"}]})",
  };
  for (const std::string& body : bad_ranges) {
    JunkServer junk(body);
    INFO("server answers: " << body);
    auto range = ClientOf({junk.endpoint()}).Range("/k");
    CHECK_FALSE(range.ok());
    CHECK_THAT(range.message(), Catch::Contains(junk.endpoint()));
  }
  JunkServer odd("{" + header + R"(, "deleted": {"n": 1}, "succeeded": "yes", "ID": "x"})");
  EtcdClient c = ClientOf({odd.endpoint()});
  CHECK_FALSE(c.DeleteRange("/k").ok());
  CHECK_FALSE(c.Txn({}, {}).ok());
  CHECK_FALSE(c.LeaseGrant(5).ok());
  JunkServer odd_ttl(R"({"result": {)" + header + R"(, "TTL": "soon"}})");
  CHECK_FALSE(ClientOf({odd_ttl.endpoint()}).LeaseKeepAliveOnce(5).ok());
  JunkServer endless_line(std::string(1 << 20, 'x'));
  std::atomic<bool> stop{false};
  CHECK_FALSE(ClientOf({endless_line.endpoint()})
                  .Watch("/k/", 0, [](const EtcdWatchEvent&) {}, stop)
                  .ok());
}

TEST_CASE("etcd: an endpoint nobody listens on is named in the error", "[etcd]") {
  const std::string dead = "http://127.0.0.1:" + std::to_string(testing::FreePort());
  EtcdClient c = ClientOf({dead});
  const auto start = std::chrono::steady_clock::now();
  Status s = c.Put("/k", "v");
  REQUIRE_FALSE(s.ok());
  CHECK_THAT(s.message(), Catch::Contains(dead + " /v3/kv/put"));
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  std::atomic<bool> stop{false};
  auto w = c.Watch("/k/", 0, [](const EtcdWatchEvent&) {}, stop);
  REQUIRE_FALSE(w.ok());
  CHECK_THAT(w.message(), Catch::Contains(dead + " /v3/watch"));
  auto none = EtcdClient(EtcdOptions{}).Range("/k");
  REQUIRE_FALSE(none.ok());
  CHECK_THAT(none.message(), Catch::Contains("no endpoints"));
}

TEST_CASE("etcd: when the first endpoint is dead the next one answers, and is kept", "[etcd]") {
  REQUIRE_SHARED_ETCD();
  const std::string dead = "http://127.0.0.1:" + std::to_string(testing::FreePort());
  EtcdClient c = ClientOf({dead, etcd->endpoint()});
  CHECK(c.endpoint() == dead);
  REQUIRE(c.Put(Prefix("failover") + "k", "v").ok());
  CHECK(c.endpoint() == etcd->endpoint());
  auto r = c.Range(Prefix("failover") + "k");
  REQUIRE(r.ok());
  CHECK(r->kvs.size() == 1);
  (void)c.DeletePrefix(Prefix("failover"));

  // Both dead: the error names each.
  const std::string dead2 = "http://127.0.0.1:" + std::to_string(testing::FreePort());
  Status s = ClientOf({dead, dead2}).Put("/k", "v");
  REQUIRE_FALSE(s.ok());
  CHECK_THAT(s.message(), Catch::Contains(dead) && Catch::Contains(dead2));
}

TEST_CASE("etcd: the range end of a prefix", "[etcd]") {
  CHECK(EtcdPrefixEnd("/a/") == "/a0");
  CHECK(EtcdPrefixEnd("ab") == "ac");
  CHECK(EtcdPrefixEnd(std::string("a\xff")) == "b");
  CHECK(EtcdPrefixEnd(std::string("\xff")) == std::string(1, '\0'));
}

}  // namespace qosvisor::control
