// The etcd v3 JSON gateway's requests and replies, and the walk over the endpoints.
#include "control/etcd_client.h"

#include <fmt/format.h>
#include <httplib.h>

#include <array>
#include <charconv>

namespace qosvisor::control {

using nlohmann::json;

namespace {

constexpr size_t kMaxReplyBytes = 64 << 20;  // the whole registry is far smaller

constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Base64Encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t chunk = static_cast<uint8_t>(in[i]) << 16;
    if (i + 1 < in.size()) chunk |= static_cast<uint8_t>(in[i + 1]) << 8;
    if (i + 2 < in.size()) chunk |= static_cast<uint8_t>(in[i + 2]);
    out += kBase64Alphabet[(chunk >> 18) & 63];
    out += kBase64Alphabet[(chunk >> 12) & 63];
    out += i + 1 < in.size() ? kBase64Alphabet[(chunk >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kBase64Alphabet[chunk & 63] : '=';
  }
  return out;
}

std::optional<std::string> Base64Decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::array<int, 256> value;
  value.fill(-1);
  for (size_t i = 0; i < kBase64Alphabet.size(); ++i) {
    value[static_cast<uint8_t>(kBase64Alphabet[i])] = static_cast<int>(i);
  }
  std::string out;
  for (size_t i = 0; i < in.size(); i += 4) {
    uint32_t chunk = 0;
    int pad = 0;
    for (size_t k = 0; k < 4; ++k) {
      const char c = in[i + k];
      // Padding only at the very end, at most two.
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        ++pad;
        chunk <<= 6;
        continue;
      }
      const int v = value[static_cast<uint8_t>(c)];
      if (v < 0 || pad > 0) return std::nullopt;
      chunk = (chunk << 6) | static_cast<uint32_t>(v);
    }
    out += static_cast<char>((chunk >> 16) & 0xff);
    if (pad < 2) out += static_cast<char>((chunk >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(chunk & 0xff);
  }
  return out;
}

// The gateway's int64 fields: a JSON string of digits (or, from other gateways, a number);
// absent means 0.
Result<int64_t> Int64Field(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end()) return int64_t{0};
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && end == s.data() + s.size() && !s.empty()) return v;
  }
  return Status::Error(fmt::format("field '{}' is not an integer: {}", key, it->dump()));
}

Result<std::string> BytesField(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end()) return std::string();
  if (!it->is_string()) return Status::Error(fmt::format("field '{}' is not a string", key));
  auto decoded = Base64Decode(it->get_ref<const std::string&>());
  if (!decoded) return Status::Error(fmt::format("field '{}' is not base64", key));
  return *decoded;
}

Result<EtcdKeyValue> ParseKeyValue(const json& j) {
  if (!j.is_object()) return Status::Error("a key-value is not an object");
  EtcdKeyValue kv;
  auto key = BytesField(j, "key");
  auto value = BytesField(j, "value");
  auto create = Int64Field(j, "create_revision");
  auto mod = Int64Field(j, "mod_revision");
  auto version = Int64Field(j, "version");
  auto lease = Int64Field(j, "lease");
  for (const Status& s : {key.status(), value.status(), create.status(), mod.status(),
                          version.status(), lease.status()}) {
    if (!s.ok()) return s;
  }
  kv.key = *key;
  kv.value = *value;
  kv.create_revision = *create;
  kv.mod_revision = *mod;
  kv.version = *version;
  kv.lease = *lease;
  return kv;
}

// Every reply of etcd's, and every message of a stream, starts with a header.
Result<int64_t> HeaderRevision(const json& reply) {
  auto it = reply.find("header");
  if (it == reply.end() || !it->is_object()) return Status::Error("the reply has no header");
  return Int64Field(*it, "revision");
}

json RangeRequest(const std::string& key, const std::string& range_end) {
  json body = {{"key", Base64Encode(key)}};
  if (!range_end.empty()) body["range_end"] = Base64Encode(range_end);
  return body;
}

json OpJson(const EtcdOp& op) {
  if (op.kind == EtcdOp::Kind::kDelete) {
    return {{"request_delete_range", {{"key", Base64Encode(op.key)}}}};
  }
  json put = {{"key", Base64Encode(op.key)}, {"value", Base64Encode(op.value)}};
  if (op.lease != 0) put["lease"] = std::to_string(op.lease);
  return {{"request_put", put}};
}

json CompareJson(const EtcdCompare& c) {
  json j = {{"result", "EQUAL"}, {"key", Base64Encode(c.key)}};
  switch (c.target) {
    case EtcdCompare::Target::kCreateRevision:
      j["target"] = "CREATE";
      j["create_revision"] = std::to_string(c.revision);
      break;
    case EtcdCompare::Target::kModRevision:
      j["target"] = "MOD";
      j["mod_revision"] = std::to_string(c.revision);
      break;
    case EtcdCompare::Target::kValue:
      j["target"] = "VALUE";
      j["value"] = Base64Encode(c.value);
      break;
  }
  return j;
}

// etcd's own words for a refused request: {"error": "...", "message": "...", "code": N}.
std::string ErrorOf(const json& reply) {
  for (const char* key : {"message", "error"}) {
    auto it = reply.find(key);
    if (it != reply.end() && it->is_string()) return it->get<std::string>();
  }
  return "";
}

std::string Shorten(const std::string& text) {
  constexpr size_t kMax = 80;
  std::string out = text.size() > kMax ? text.substr(0, kMax) + "..." : text;
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return out;
}

Result<EtcdRange> ParseRange(const json& reply, const std::string& endpoint) {
  EtcdRange out;
  auto revision = HeaderRevision(reply);
  if (!revision.ok()) return Status::Error(fmt::format("etcd {}: {}", endpoint, revision.message()));
  out.revision = *revision;
  auto it = reply.find("kvs");
  if (it == reply.end()) return out;
  if (!it->is_array()) return Status::Error(fmt::format("etcd {}: 'kvs' is not a list", endpoint));
  for (const json& j : *it) {
    auto kv = ParseKeyValue(j);
    if (!kv.ok()) return Status::Error(fmt::format("etcd {}: {}", endpoint, kv.message()));
    out.kvs.push_back(std::move(kv).value());
  }
  return out;
}

Result<int64_t> DeletedCount(const Result<json>& reply, const std::string& endpoint) {
  if (!reply.ok()) return reply.status();
  auto deleted = Int64Field(*reply, "deleted");
  if (!deleted.ok()) return Status::Error(fmt::format("etcd {}: {}", endpoint, deleted.message()));
  return *deleted;
}

// cpp-httplib's one-word errors, said so that an operator knows where to look.
std::string Describe(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection:
      return "cannot connect (is etcd running there?)";
    case httplib::Error::Read:
      return "no complete answer in time, or the connection was closed";
    case httplib::Error::Write:
      return "the request could not be sent";
    case httplib::Error::ConnectionTimeout:
      return "no connection within the timeout";
    case httplib::Error::Canceled:
      return "the answer was too long";
    default:
      return httplib::to_string(error);
  }
}

// Splits an endpoint's stream into lines, one JSON object each.
class LineSplitter {
 public:
  template <typename F>
  bool Feed(const char* data, size_t size, F on_line) {
    buffer_.append(data, size);
    size_t start = 0;
    for (size_t nl; (nl = buffer_.find('\n', start)) != std::string::npos; start = nl + 1) {
      if (nl > start && !on_line(std::string_view(buffer_).substr(start, nl - start))) {
        return false;
      }
    }
    buffer_.erase(0, start);
    return buffer_.size() <= kMaxLine;  // a stream that never ends a line is not etcd's
  }

 private:
  static constexpr size_t kMaxLine = 16 << 20;
  std::string buffer_;
};

}  // namespace

std::string EtcdPrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

EtcdClient::EtcdClient(EtcdOptions options) : options_(std::move(options)) {}

std::string EtcdClient::endpoint() const {
  if (options_.endpoints.empty()) return "";
  return options_.endpoints[current_.load() % options_.endpoints.size()];
}

Result<json> EtcdClient::CallOne(const std::string& endpoint, const std::string& path,
                                 const std::string& body, bool& try_next) {
  try_next = true;
  httplib::Client client(endpoint);
  const auto half = options_.timeout / 2;
  client.set_connection_timeout(half);
  client.set_read_timeout(half);
  client.set_write_timeout(half);
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body;
  req.set_header("Content-Type", "application/json");
  std::string text;
  req.content_receiver = [&text](const char* data, size_t size, uint64_t, uint64_t) {
    text.append(data, size);
    return text.size() <= kMaxReplyBytes;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  const bool answered = client.send(req, res, error);
  json reply = json::parse(text, nullptr, /*allow_exceptions=*/false);
  // The gateway sends an error's gRPC trailers after the last chunk, which cpp-httplib 0.11
  // cannot read: the reply is whole nonetheless when its status came and its body parses.
  const bool whole = answered || (error == httplib::Error::Read && res.status > 0 &&
                                  reply.is_object());
  if (!whole) return Status::Error(Describe(error));
  if (res.status != 200) {
    const std::string why = reply.is_object() ? ErrorOf(reply) : "";
    // A request etcd refused (unknown lease, bad argument) fails the same on every member;
    // an unavailable member (no leader, overloaded) is worth passing over.
    try_next = res.status >= 500 || why.empty();
    return Status::Error(fmt::format("HTTP {}: {}", res.status, why.empty() ? Shorten(text) : why));
  }
  if (!reply.is_object()) {
    return Status::Error(fmt::format("not a JSON object: '{}'", Shorten(text)));
  }
  // A stream's message (keepalive) comes as {"result": ...} or {"error": ...}.
  if (auto e = reply.find("error"); e != reply.end()) {
    const std::string why = e->is_object() ? ErrorOf(*e) : e->is_string() ? e->get<std::string>()
                                                                          : "";
    try_next = false;
    return Status::Error(why.empty() ? Shorten(e->dump()) : why);
  }
  auto result = reply.find("result");
  auto revision = HeaderRevision(result != reply.end() && result->is_object() ? *result : reply);
  if (!revision.ok()) {
    return Status::Error(fmt::format("not an etcd reply: {}: '{}'", revision.message(),
                                     Shorten(text)));
  }
  try_next = false;
  return reply;
}

Result<json> EtcdClient::Call(const std::string& path, const json& body) {
  const size_t n = options_.endpoints.size();
  if (n == 0) return Status::Error(fmt::format("etcd {}: no endpoints configured", path));
  const std::string text = body.dump();
  const size_t first = current_.load();
  std::string errors;
  for (size_t i = 0; i < n; ++i) {
    const size_t index = (first + i) % n;
    const std::string& endpoint = options_.endpoints[index];
    bool try_next = true;
    auto reply = CallOne(endpoint, path, text, try_next);
    if (reply.ok()) {
      current_.store(index);
      return reply;
    }
    errors += fmt::format("{}{} {}: {}", errors.empty() ? "" : "; ", endpoint, path,
                          reply.message());
    if (!try_next) break;
  }
  return Status::Error(fmt::format("etcd: {}", errors));
}

Status EtcdClient::Put(const std::string& key, const std::string& value, int64_t lease) {
  json body = {{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  return Call("/v3/kv/put", body).status();
}

Result<EtcdRange> EtcdClient::Range(const std::string& key) {
  auto reply = Call("/v3/kv/range", RangeRequest(key, ""));
  if (!reply.ok()) return reply.status();
  return ParseRange(*reply, endpoint());
}

Result<EtcdRange> EtcdClient::RangePrefix(const std::string& prefix) {
  auto reply = Call("/v3/kv/range", RangeRequest(prefix, EtcdPrefixEnd(prefix)));
  if (!reply.ok()) return reply.status();
  return ParseRange(*reply, endpoint());
}

Result<int64_t> EtcdClient::DeleteRange(const std::string& key) {
  return DeletedCount(Call("/v3/kv/deleterange", RangeRequest(key, "")), endpoint());
}

Result<int64_t> EtcdClient::DeletePrefix(const std::string& prefix) {
  return DeletedCount(Call("/v3/kv/deleterange", RangeRequest(prefix, EtcdPrefixEnd(prefix))),
                      endpoint());
}

Result<bool> EtcdClient::Txn(const std::vector<EtcdCompare>& compare,
                             const std::vector<EtcdOp>& success,
                             const std::vector<EtcdOp>& failure) {
  json body = {{"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
  for (const EtcdCompare& c : compare) body["compare"].push_back(CompareJson(c));
  for (const EtcdOp& op : success) body["success"].push_back(OpJson(op));
  for (const EtcdOp& op : failure) body["failure"].push_back(OpJson(op));
  auto reply = Call("/v3/kv/txn", body);
  if (!reply.ok()) return reply.status();
  auto it = reply->find("succeeded");
  if (it == reply->end()) return false;  // false is left out
  if (!it->is_boolean()) {
    return Status::Error(fmt::format("etcd {} /v3/kv/txn: 'succeeded' is not true or false",
                                     endpoint()));
  }
  return it->get<bool>();
}

Result<int64_t> EtcdClient::LeaseGrant(int64_t ttl_seconds) {
  auto reply = Call("/v3/lease/grant", {{"TTL", std::to_string(ttl_seconds)}});
  if (!reply.ok()) return reply.status();
  if (std::string why = ErrorOf(*reply); !why.empty()) {
    return Status::Error(fmt::format("etcd {} /v3/lease/grant: {}", endpoint(), why));
  }
  auto id = Int64Field(*reply, "ID");
  if (!id.ok() || *id == 0) {
    return Status::Error(fmt::format("etcd {} /v3/lease/grant: no lease id in the reply ({})",
                                     endpoint(), id.ok() ? "missing" : id.message()));
  }
  return *id;
}

Result<int64_t> EtcdClient::LeaseKeepAliveOnce(int64_t id) {
  // A stream in gRPC; through the gateway one request gives one {"result": {...}} line.
  auto reply = Call("/v3/lease/keepalive", {{"ID", std::to_string(id)}});
  if (!reply.ok()) return reply.status();
  auto result = reply->find("result");
  if (result == reply->end() || !result->is_object()) {
    return Status::Error(fmt::format("etcd {} /v3/lease/keepalive: no result in the reply",
                                     endpoint()));
  }
  auto ttl = Int64Field(*result, "TTL");
  if (!ttl.ok()) {
    return Status::Error(fmt::format("etcd {} /v3/lease/keepalive: {}", endpoint(), ttl.message()));
  }
  return std::max<int64_t>(*ttl, 0);
}

Status EtcdClient::LeaseRevoke(int64_t id) {
  return Call("/v3/lease/revoke", {{"ID", std::to_string(id)}}).status();
}

Status EtcdClient::Watch(const std::string& prefix, int64_t start_revision,
                         const std::function<void(const EtcdWatchEvent&)>& on_event,
                         const std::atomic<bool>& stop) {
  const size_t n = options_.endpoints.size();
  if (n == 0) return Status::Error("etcd /v3/watch: no endpoints configured");
  int64_t next_revision = start_revision;
  size_t failures = 0;  // streams in a row that failed without delivering anything
  std::string errors;
  while (!stop.load()) {
    const size_t index = current_.load() % n;
    bool delivered = false;
    Status s = WatchOnce(options_.endpoints[index], prefix, next_revision, on_event, stop,
                         delivered);
    if (s.ok() || delivered) {
      failures = 0;
      errors.clear();
      continue;  // ended or fell silent: open it again after what was seen
    }
    errors += fmt::format("{}{}", errors.empty() ? "" : "; ", s.message());
    if (++failures >= n) return Status::Error(fmt::format("etcd: {}", errors));
    size_t expected = index;  // unless another call moved on meanwhile
    current_.compare_exchange_strong(expected, (index + 1) % n);
  }
  return Status::Ok();
}

Status EtcdClient::WatchOnce(const std::string& endpoint, const std::string& prefix,
                             int64_t& next_revision,
                             const std::function<void(const EtcdWatchEvent&)>& on_event,
                             const std::atomic<bool>& stop, bool& delivered) {
  json create = RangeRequest(prefix, EtcdPrefixEnd(prefix));
  if (next_revision > 0) create["start_revision"] = std::to_string(next_revision);
  httplib::Client client(endpoint);
  client.set_connection_timeout(options_.timeout / 2);
  // A quiet stream times out here; the caller opens it again, and sees `stop` in between.
  client.set_read_timeout(options_.timeout / 2);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v3/watch";
  req.body = json{{"create_request", create}}.dump();
  req.set_header("Content-Type", "application/json");
  std::string problem;
  bool created = false;
  LineSplitter lines;
  auto on_line = [&](std::string_view line) {
    json msg = json::parse(line, nullptr, /*allow_exceptions=*/false);
    const json* result = msg.is_object() ? &msg["result"] : nullptr;
    if (result == nullptr || !result->is_object()) {
      const std::string why = msg.is_object() ? ErrorOf(msg.value("error", json::object())) : "";
      problem = why.empty() ? fmt::format("not a watch response: '{}'", Shorten(std::string(line)))
                            : why;
      return false;
    }
    if (result->value("canceled", false)) {
      problem = fmt::format("watch canceled: {}", result->value("cancel_reason", "no reason given"));
      return false;
    }
    created = created || result->value("created", false);
    auto revision = HeaderRevision(*result);
    if (!revision.ok()) {
      problem = revision.message();
      return false;
    }
    // Nothing before the watch's creation revision is owed; after it, resume past the last.
    if (next_revision == 0 && *revision > 0) next_revision = *revision + 1;
    auto events = result->find("events");
    if (events == result->end()) return !stop.load();
    if (!events->is_array()) {
      problem = "'events' is not a list";
      return false;
    }
    for (const json& e : *events) {
      auto kv = ParseKeyValue(e.is_object() ? e.value("kv", json::object()) : json());
      if (!kv.ok()) {
        problem = kv.message();
        return false;
      }
      EtcdWatchEvent event;
      event.type = e.value("type", "PUT") == "DELETE" ? EtcdWatchEvent::Type::kDelete
                                                       : EtcdWatchEvent::Type::kPut;
      event.kv = std::move(kv).value();
      next_revision = std::max(next_revision, event.kv.mod_revision + 1);
      delivered = true;
      on_event(event);
    }
    return !stop.load();
  };
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    return lines.Feed(data, size, on_line) && !stop.load();
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  const bool ok = client.send(req, res, error);
  if (!problem.empty()) return Status::Error(fmt::format("{} /v3/watch: {}", endpoint, problem));
  if (stop.load()) return Status::Ok();
  // A stream that was open and then timed out or ended is the normal quiet case.
  if (created) return Status::Ok();
  return Status::Error(fmt::format("{} /v3/watch: {}", endpoint,
                                   ok ? fmt::format("HTTP {}, and no watch was created", res.status)
                                      : Describe(error)));
}

}  // namespace qosvisor::control
