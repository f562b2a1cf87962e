// The workload file's parser and checks: unknown keys (with did-you-mean), types, units, ranges
// and references (tenant names, shares adding up to 1), each error at its line and column.
#include "config/workload.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/units.h"

namespace qosvisor::config {
namespace {

Mark MarkOf(const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  if (m.is_null()) return {};
  return Mark{m.line + 1, m.column + 1};
}

class Reader {
 public:
  explicit Reader(Diagnostics& diag) : diag_(diag) {}

  void Error(const YAML::Node& n, const std::string& path, std::string message) {
    diag_.Error(MarkOf(n), path, std::move(message));
  }

  // Reports keys of `map` not in `known`; false if `map` is not a mapping.
  bool Keys(const YAML::Node& map, const std::string& path, const std::vector<std::string>& known) {
    if (!map.IsMap()) {
      Error(map, path, "expected a mapping (key: value lines)");
      return false;
    }
    for (const auto& kv : map) {
      const std::string key = kv.first.Scalar();
      if (std::find(known.begin(), known.end(), key) != known.end()) continue;
      const std::string hint = Suggest(key, known);
      Error(kv.first, path.empty() ? key : path + "." + key,
            fmt::format("unknown key{}",
                        hint.empty() ? fmt::format("; known keys: {}", fmt::join(known, ", "))
                                     : "; " + hint));
    }
    return true;
  }

  std::optional<std::string> Scalar(const YAML::Node& n, const std::string& path,
                                    std::string_view expected) {
    if (n.IsScalar() && !n.Scalar().empty()) return n.Scalar();
    Error(n, path, fmt::format("expected {}", expected));
    return std::nullopt;
  }

  std::optional<int64_t> Int(const YAML::Node& n, const std::string& path, int64_t min,
                             int64_t max) {
    auto s = Scalar(n, path, "an integer");
    if (!s) return std::nullopt;
    int64_t v = 0;
    auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
    if (ec != std::errc() || end != s->data() + s->size()) {
      Error(n, path, fmt::format("'{}' is not an integer", *s));
      return std::nullopt;
    }
    if (v < min || v > max) {
      Error(n, path, fmt::format("{} is out of range; use {}..{}", v, min, max));
      return std::nullopt;
    }
    return v;
  }

  std::optional<double> Number(const YAML::Node& n, const std::string& path, double lo_excl,
                               double hi_incl, std::string_view example) {
    auto s = Scalar(n, path, "a number");
    if (!s) return std::nullopt;
    double v = 0;
    auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
    if (ec != std::errc() || end != s->data() + s->size() || !(v > lo_excl) || v > hi_incl) {
      Error(
          n, path,
          fmt::format("'{}' is not a number in ({}, {}]; e.g. {}", *s, lo_excl, hi_incl, example));
      return std::nullopt;
    }
    return v;
  }

  std::optional<uint64_t> Quantity(const YAML::Node& n, const std::string& path,
                                   Result<uint64_t> (*parse)(std::string_view),
                                   std::string_view what) {
    auto s = Scalar(n, path, what);
    if (!s) return std::nullopt;
    auto r = parse(*s);
    if (!r.ok()) {
      Error(n, path, r.message());
      return std::nullopt;
    }
    if (*r == 0) {
      Error(n, path, "must be > 0");
      return std::nullopt;
    }
    return *r;
  }

  std::optional<MacAddress> Mac(const YAML::Node& n, const std::string& path) {
    auto s = Scalar(n, path, "a MAC address like 02:00:00:00:00:01");
    if (!s) return std::nullopt;
    MacAddress mac;
    unsigned b[6];
    char tail;
    if (std::sscanf(s->c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4],
                    &b[5], &tail) != 6 ||
        s->size() != 17) {
      Error(n, path, fmt::format("'{}' is not a MAC address; write e.g. 02:00:00:00:00:01", *s));
      return std::nullopt;
    }
    for (int i = 0; i < 6; ++i) mac.bytes[i] = static_cast<uint8_t>(b[i]);
    return mac;
  }

  std::optional<uint32_t> Ipv4(const YAML::Node& n, const std::string& path) {
    auto s = Scalar(n, path, "an IPv4 address like 10.1.0.1");
    if (!s) return std::nullopt;
    unsigned a[4];
    char tail;
    if (std::sscanf(s->c_str(), "%u.%u.%u.%u%c", &a[0], &a[1], &a[2], &a[3], &tail) != 4 ||
        a[0] > 255 || a[1] > 255 || a[2] > 255 || a[3] > 255) {
      Error(n, path, fmt::format("'{}' is not an IPv4 address; write e.g. 10.1.0.1", *s));
      return std::nullopt;
    }
    return a[0] << 24 | a[1] << 16 | a[2] << 8 | a[3];
  }

 private:
  Diagnostics& diag_;
};

std::string Child(const std::string& path, const char* key) { return path + "." + key; }

void ParseSizes(Reader& rd, const YAML::Node& n, const std::string& path,
                const std::filesystem::path& base, WorkloadClass& c) {
  const char* kForms =
      "use W1..W5, {fixed: 1KB}, {uniform: [64B, 2KB]} or {cdf: FILE} (lines 'SIZE P(<=SIZE)')";
  if (n.IsScalar()) {
    auto d = BuiltinWorkload(n.Scalar());
    if (!d.ok()) {
      rd.Error(n, path, fmt::format("'{}' is not a built-in workload; {}", n.Scalar(), kForms));
      return;
    }
    c.sizes = std::move(d).value();
    c.size_name = n.Scalar();
    return;
  }
  if (!n.IsMap() || n.size() != 1) {
    rd.Error(n, path, fmt::format("expected one size form; {}", kForms));
    return;
  }
  const std::string kind = n.begin()->first.Scalar();
  const YAML::Node v = n.begin()->second;
  const std::string sub = path + "." + kind;
  if (kind == "fixed") {
    if (auto b = rd.Quantity(v, sub, ParseSize, "a size like 1KB")) {
      c.sizes = SizeDistribution::Fixed(*b);
      c.size_name = "fixed " + FormatSize(*b);
    }
  } else if (kind == "uniform") {
    if (!v.IsSequence() || v.size() != 2) {
      rd.Error(v, sub, "expected [MIN, MAX], e.g. [64B, 2KB]");
      return;
    }
    auto lo = rd.Quantity(v[0], sub + "[0]", ParseSize, "a size like 64B");
    auto hi = rd.Quantity(v[1], sub + "[1]", ParseSize, "a size like 2KB");
    if (!lo || !hi) return;
    auto d = SizeDistribution::Uniform(*lo, *hi);
    if (!d.ok()) {
      rd.Error(v, sub, d.message());
      return;
    }
    c.sizes = std::move(d).value();
    c.size_name = fmt::format("uniform {}-{}", FormatSize(*lo), FormatSize(*hi));
  } else if (kind == "cdf") {
    auto file = rd.Scalar(v, sub, "a file name");
    if (!file) return;
    std::filesystem::path p(*file);
    if (p.is_relative()) p = base / p;
    std::ifstream in(p);
    if (!in) {
      rd.Error(v, sub, fmt::format("cannot read '{}'", p.string()));
      return;
    }
    std::stringstream text;
    text << in.rdbuf();
    auto d = SizeDistribution::ParseCdf(text.str(), p.string());
    if (!d.ok()) {
      rd.Error(v, sub, d.message());
      return;
    }
    c.sizes = std::move(d).value();
    c.size_name = "cdf " + p.filename().string();
  } else {
    const std::string hint = Suggest(kind, {"fixed", "uniform", "cdf"});
    rd.Error(n.begin()->first, path,
             fmt::format("unknown size form '{}'{}; {}", kind,
                         hint.empty() ? "" : " (" + hint + ")", kForms));
  }
}

void ParseArrival(Reader& rd, const YAML::Node& n, const std::string& path, WorkloadClass& c) {
  const char* kForms = "use poisson, constant or {on: 1ms, off: 4ms}";
  if (n.IsScalar()) {
    if (n.Scalar() == "poisson") {
      c.arrival = WorkloadArrival::kPoisson;
    } else if (n.Scalar() == "constant") {
      c.arrival = WorkloadArrival::kConstant;
    } else {
      const std::string hint = Suggest(n.Scalar(), {"poisson", "constant"});
      rd.Error(n, path,
               fmt::format("'{}' is not an arrival process{}; {}", n.Scalar(),
                           hint.empty() ? "" : " (" + hint + ")", kForms));
    }
    return;
  }
  if (!rd.Keys(n, path, {"on", "off"})) return;
  c.arrival = WorkloadArrival::kOnOff;
  for (const char* key : {"on", "off"}) {
    if (!n[key]) {
      rd.Error(n, path, fmt::format("on/off arrivals need '{}'; {}", key, kForms));
      continue;
    }
    auto d = rd.Quantity(n[key], Child(path, key), ParseDuration, "a duration like 1ms");
    if (d) (std::string_view(key) == "on" ? c.on_ns : c.off_ns) = *d;
  }
}

void ParseClass(Reader& rd, const YAML::Node& n, const std::string& path,
                const std::filesystem::path& base, const Workload& w, WorkloadClass& c) {
  if (!rd.Keys(n, path,
               {"name", "tenant", "framing", "dst_port", "sizes", "share", "arrival", "sender",
                "vlan", "dst_mac", "dst_ip"})) {
    return;
  }
  if (n["name"]) {
    if (auto s = rd.Scalar(n["name"], Child(path, "name"), "a name")) c.name = *s;
  } else {
    rd.Error(n, path, "a class needs a name");
  }
  if (const YAML::Node t = n["tenant"]) {
    if (t.IsScalar() && !t.Scalar().empty() &&
        std::isdigit(static_cast<unsigned char>(t.Scalar()[0]))) {
      if (auto v = rd.Int(t, Child(path, "tenant"), 0, 255)) c.tenant = static_cast<uint16_t>(*v);
    } else if (auto s = rd.Scalar(t, Child(path, "tenant"), "a tenant name or number")) {
      auto it = std::find(w.tenants.begin(), w.tenants.end(), *s);
      if (it == w.tenants.end()) {
        const std::string hint = Suggest(*s, w.tenants);
        rd.Error(t, Child(path, "tenant"),
                 fmt::format("unknown tenant '{}'{}; list it under 'tenants:' or use a number", *s,
                             hint.empty() ? "" : " (" + hint + ")"));
      } else {
        c.tenant = static_cast<uint16_t>(it - w.tenants.begin());
      }
    }
  }
  if (const YAML::Node f = n["framing"]) {
    if (auto s = rd.Scalar(f, Child(path, "framing"), "udp, homa or tcp")) {
      if (*s == "udp") {
        c.framing = WorkloadFraming::kUdp;
      } else if (*s == "homa") {
        c.framing = WorkloadFraming::kHoma;
      } else if (*s == "tcp") {
        c.framing = WorkloadFraming::kTcp;
      } else {
        rd.Error(f, Child(path, "framing"), fmt::format("'{}' is not udp, homa or tcp", *s));
      }
    }
  }
  if (n["dst_port"]) {
    if (auto v = rd.Int(n["dst_port"], Child(path, "dst_port"), 1, 65535))
      c.dst_port = static_cast<uint16_t>(*v);
  }
  if (n["sizes"]) {
    ParseSizes(rd, n["sizes"], Child(path, "sizes"), base, c);
  } else {
    rd.Error(n, path,
             "a class needs sizes (W1..W5, {fixed: SIZE}, {uniform: [MIN, MAX]}, {cdf: FILE})");
  }
  if (n["share"]) {
    if (auto v = rd.Number(n["share"], Child(path, "share"), 0, 1, "0.25")) c.share = *v;
  }
  if (n["arrival"]) ParseArrival(rd, n["arrival"], Child(path, "arrival"), c);
  if (n["sender"]) {
    if (auto v = rd.Int(n["sender"], Child(path, "sender"), 0, 15))
      c.sender = static_cast<uint16_t>(*v);
  }
  if (n["vlan"]) {
    if (auto v = rd.Int(n["vlan"], Child(path, "vlan"), 0, 4095)) c.vlan = static_cast<int>(*v);
  }
  if (n["dst_mac"]) c.dst_mac = rd.Mac(n["dst_mac"], Child(path, "dst_mac"));
  if (n["dst_ip"]) c.dst_ip = rd.Ipv4(n["dst_ip"], Child(path, "dst_ip"));
}

void Parse(Reader& rd, const YAML::Node& root, const std::filesystem::path& base, Workload& w) {
  if (!rd.Keys(root, "",
               {"rate", "load", "sender_rate", "mss", "seed", "duration", "dst_mac", "dst_ip",
                "tenants", "classes"})) {
    return;
  }
  if (root["rate"]) {
    if (auto v = rd.Quantity(root["rate"], "rate", ParseRate, "a rate like 1Gbps")) w.rate_bps = *v;
  }
  if (root["load"]) {
    if (auto v = rd.Number(root["load"], "load", 0, 10, "0.9")) w.load = *v;
  }
  if (root["sender_rate"]) {
    if (auto v = rd.Quantity(root["sender_rate"], "sender_rate", ParseRate, "a rate like 10Gbps"))
      w.sender_rate_bps = *v;
  }
  if (root["mss"]) {
    if (auto v = rd.Int(root["mss"], "mss", 64, 1400)) w.mss = static_cast<uint32_t>(*v);
  }
  if (root["seed"]) {
    if (auto v = rd.Int(root["seed"], "seed", 0, INT64_MAX)) w.seed = static_cast<uint64_t>(*v);
  }
  if (root["duration"]) {
    w.duration_ns = rd.Quantity(root["duration"], "duration", ParseDuration, "a duration like 5s");
  }
  if (root["dst_mac"]) w.dst_mac = rd.Mac(root["dst_mac"], "dst_mac");
  if (root["dst_ip"]) w.dst_ip = rd.Ipv4(root["dst_ip"], "dst_ip");
  if (const YAML::Node t = root["tenants"]) {
    if (!t.IsSequence()) {
      rd.Error(t, "tenants", "expected a list of tenant names, e.g. [gold, silver]");
    } else {
      std::set<std::string> seen;
      for (size_t i = 0; i < t.size(); ++i) {
        auto s = rd.Scalar(t[i], fmt::format("tenants[{}]", i), "a tenant name");
        if (!s) continue;
        if (!seen.insert(*s).second) rd.Error(t[i], fmt::format("tenants[{}]", i), "listed twice");
        w.tenants.push_back(*s);
      }
      if (w.tenants.size() > 256) rd.Error(t, "tenants", "at most 256 tenants");
    }
  }
  const YAML::Node classes = root["classes"];
  if (!classes || !classes.IsSequence() || classes.size() == 0) {
    rd.Error(classes ? classes : root, "classes",
             "expected a list of at least one class (- name: ..., sizes: ..., share: ...)");
    return;
  }
  double shares = 0;
  std::set<std::string> names;
  for (size_t i = 0; i < classes.size(); ++i) {
    const std::string path = fmt::format("classes[{}]", i);
    WorkloadClass c;
    ParseClass(rd, classes[i], path, base, w, c);
    if (!c.name.empty() && !names.insert(c.name).second) {
      rd.Error(classes[i]["name"], Child(path, "name"),
               fmt::format("class '{}' is defined twice", c.name));
    }
    shares += c.share;
    w.classes.push_back(std::move(c));
  }
  if (std::abs(shares - 1.0) > 1e-6) {
    rd.Error(classes, "classes",
             fmt::format("the shares add up to {}, not 1; they divide the offered load", shares));
  }
}

}  // namespace

std::string WorkloadLoadResult::ErrorText() const {
  std::string out;
  for (const Diagnostic& d : errors) {
    if (!out.empty()) out += '\n';
    out += d.ToString();
  }
  return out;
}

WorkloadLoadResult LoadWorkloadFromString(std::string_view text, std::string_view file_name) {
  WorkloadLoadResult result;
  Diagnostics diag{std::string(file_name)};
  Reader rd(diag);
  Workload w;
  try {
    const YAML::Node root = YAML::Load(std::string(text));
    std::filesystem::path base = std::filesystem::path(file_name).parent_path();
    if (base.empty()) base = ".";
    Parse(rd, root, base, w);
  } catch (const YAML::Exception& e) {
    diag.Error(Mark{e.mark.line + 1, e.mark.column + 1}, "", e.msg);
  }
  result.errors = diag.Take();
  std::stable_sort(result.errors.begin(), result.errors.end(),
                   [](const Diagnostic& a, const Diagnostic& b) {
                     return std::pair(a.line, a.column) < std::pair(b.line, b.column);
                   });
  if (result.errors.empty()) result.workload = std::move(w);
  return result;
}

WorkloadLoadResult LoadWorkloadFromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    WorkloadLoadResult result;
    result.errors.push_back(Diagnostic{path, 0, 0, "", "cannot open the workload file"});
    return result;
  }
  std::stringstream text;
  text << in.rdbuf();
  return LoadWorkloadFromString(text.str(), path);
}

}  // namespace qosvisor::config
