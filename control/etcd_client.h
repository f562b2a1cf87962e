// A client of etcd's v3 JSON gateway (POST /v3/kv/..., /v3/lease/..., /v3/watch) over
// cpp-httplib: what the fleet registry keeps in etcd, read and written without a gRPC stack.
//
// On the wire keys and values are base64 and 64-bit integers JSON strings; fields at their zero
// value are left out (a failed transaction has no "succeeded", a gone lease no "TTL"). Every call
// tries the endpoints in turn, starting with the one that answered last, each within the
// timeout; an error names the endpoints tried and what failed at each. Anything the server sends
// that is not what etcd sends is an error, never a crash. Thread-safe: each call makes its own
// connection.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace qosvisor::control {

struct EtcdKeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;  // 0: held by no lease
};

struct EtcdRange {
  std::vector<EtcdKeyValue> kvs;
  int64_t revision = 0;  // the store's revision when it was read
};

// One comparison of a transaction; each compares for equality.
struct EtcdCompare {
  enum class Target { kCreateRevision, kModRevision, kValue };
  std::string key;
  Target target = Target::kCreateRevision;
  int64_t revision = 0;  // kCreateRevision (0: the key does not exist), kModRevision
  std::string value;     // kValue

  static EtcdCompare CreateRevision(std::string key, int64_t revision) {
    return {std::move(key), Target::kCreateRevision, revision, {}};
  }
  static EtcdCompare ModRevision(std::string key, int64_t revision) {
    return {std::move(key), Target::kModRevision, revision, {}};
  }
  static EtcdCompare Value(std::string key, std::string value) {
    return {std::move(key), Target::kValue, 0, std::move(value)};
  }
};

// One operation of a transaction's branch.
struct EtcdOp {
  enum class Kind { kPut, kDelete };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;
  int64_t lease = 0;

  static EtcdOp Put(std::string key, std::string value, int64_t lease = 0) {
    return {Kind::kPut, std::move(key), std::move(value), lease};
  }
  static EtcdOp Delete(std::string key) { return {Kind::kDelete, std::move(key), {}, 0}; }
};

struct EtcdWatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  EtcdKeyValue kv;  // of a delete: the key and its mod_revision only
};

struct EtcdOptions {
  std::vector<std::string> endpoints;  // "http://host:port"
  // Per endpoint and call: connecting, then sending and each wait for the answer, half each.
  std::chrono::milliseconds timeout{2000};
};

class EtcdClient {
 public:
  explicit EtcdClient(EtcdOptions options);

  Status Put(const std::string& key, const std::string& value, int64_t lease = 0);
  Result<EtcdRange> Range(const std::string& key);
  Result<EtcdRange> RangePrefix(const std::string& prefix);
  // How many keys went.
  Result<int64_t> DeleteRange(const std::string& key);
  Result<int64_t> DeletePrefix(const std::string& prefix);
  // Runs `success` when every comparison holds, else `failure`; returns which (true: success).
  Result<bool> Txn(const std::vector<EtcdCompare>& compare, const std::vector<EtcdOp>& success,
                   const std::vector<EtcdOp>& failure = {});

  // A lease of `ttl_seconds`; its id.
  Result<int64_t> LeaseGrant(int64_t ttl_seconds);
  // Renews the lease once; the TTL it has again, 0 when it is gone (expired or revoked).
  Result<int64_t> LeaseKeepAliveOnce(int64_t id);
  // The lease ends now and the keys it holds go with it.
  Status LeaseRevoke(int64_t id);

  // Passes every change to keys under `prefix` from `start_revision` on (0: from now) to
  // `on_event`, on a connection of its own, until `stop` is set (noticed within the timeout) or
  // no endpoint answers. Streams that end or fall silent are opened again after the last
  // revision seen, so no change is missed or passed twice.
  Status Watch(const std::string& prefix, int64_t start_revision,
               const std::function<void(const EtcdWatchEvent&)>& on_event,
               const std::atomic<bool>& stop);

  // The endpoint that answered last (or the first, before any call).
  std::string endpoint() const;
  const std::vector<std::string>& endpoints() const { return options_.endpoints; }

 private:
  // POSTs `body` to `path` on each endpoint in turn; the reply's JSON object.
  Result<nlohmann::json> Call(const std::string& path, const nlohmann::json& body);
  Result<nlohmann::json> CallOne(const std::string& endpoint, const std::string& path,
                                 const std::string& body, bool& try_next);
  // One watch stream on `endpoint`; `next_revision` advances past what was delivered.
  Status WatchOnce(const std::string& endpoint, const std::string& prefix,
                   int64_t& next_revision,
                   const std::function<void(const EtcdWatchEvent&)>& on_event,
                   const std::atomic<bool>& stop, bool& delivered);

  EtcdOptions options_;
  std::atomic<size_t> current_{0};
};

// The key just past every key that starts with `prefix` (etcd's range_end for a prefix).
std::string EtcdPrefixEnd(const std::string& prefix);

}  // namespace qosvisor::control
