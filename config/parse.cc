// YAML text → Config structs: types, units, enums, unknown keys and single-value ranges, each
// error with its position. The only place (with format.cc) that includes yaml-cpp.
#include "config/parse.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>

#include "common/units.h"

namespace qosvisor::config {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

Mark MarkOf(const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.is_null()) return {};
  return Mark{m.line + 1, m.column + 1};
}

std::string Join(const std::vector<std::string>& items) {
  return fmt::format("{}", fmt::join(items, ", "));
}

std::string Describe(const YAML::Node& node) {
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  if (node.IsScalar()) return fmt::format("'{}'", node.Scalar());
  return "nothing";
}

std::string Child(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
}
std::string Item(std::string_view path, size_t index) { return fmt::format("{}[{}]", path, index); }

// ---- scalar conversions: each reports its own error and returns nothing on failure ----------


// Why a scalar's text is unusable (a control character, invalid UTF-8), or empty if it is fine.
std::string TextProblem(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 && c != '\t') {
      return fmt::format("contains the control character 0x{:02x} at offset {}; remove it", c, i);
    }
    if (c == 0x7f) return fmt::format("contains the control character 0x7f at offset {}", i);
    int extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xe ? 2 : (c >> 3) == 0x1e ? 3 : -1;
    if (extra < 0 || i + static_cast<size_t>(extra) >= text.size() + (extra == 0 ? 1 : 0)) {
      return fmt::format("is not valid UTF-8 (byte 0x{:02x} at offset {})", c, i);
    }
    for (int k = 1; k <= extra; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) >> 6) != 0x2) {
        return fmt::format("is not valid UTF-8 (byte 0x{:02x} at offset {})", c, i);
      }
    }
    i += static_cast<size_t>(extra) + 1;
  }
  return "";
}

class Converter {
 public:
  Converter(Diagnostics& diag, std::string_view text) : diag_(diag), text_(text) {}

  // True for a value spelled "null" (not for an empty value, which YAML also reads as null).
  bool IsNullWord(const YAML::Node& n) const {
    const int pos = n.Mark().pos;
    if (!n.IsNull() || pos < 0 || static_cast<size_t>(pos) >= text_.size()) return false;
    const std::string_view rest = text_.substr(static_cast<size_t>(pos));
    return rest.starts_with("null") || rest.starts_with("Null") || rest.starts_with("NULL");
  }

  std::optional<std::string> Scalar(const YAML::Node& n, const std::string& path,
                                    std::string_view expected) {
    if (n.IsScalar()) {
      // Values end up in paths, names and messages: control bytes and broken UTF-8 would not
      // survive printing the configuration back, and are never what a user meant.
      if (std::string why = TextProblem(n.Scalar()); !why.empty()) {
        diag_.Error(MarkOf(n), path, why);
        return std::nullopt;
      }
      return n.Scalar();
    }
    // yaml-cpp marks an empty value at the next token; its key is where the user looks.
    const Mark mark = n.IsNull() && value_of_key_ == n ? key_mark_ : MarkOf(n);
    diag_.Error(mark, path, fmt::format("expected {}, got {}", expected, Describe(n)));
    return std::nullopt;
  }

  std::optional<std::string> String(const YAML::Node& n, const std::string& path) {
    auto s = Scalar(n, path, "a string");
    if (s && s->empty()) {
      diag_.Error(MarkOf(n), path, "must not be empty");
      return std::nullopt;
    }
    return s;
  }

  std::optional<int64_t> Int(const YAML::Node& n, const std::string& path, int64_t min,
                             int64_t max) {
    auto s = Scalar(n, path, "an integer");
    if (!s) return std::nullopt;
    std::string digits;
    for (char c : *s)
      if (c != '_') digits += c;  // YAML 1.1 digit grouping: 1_000_000
    int64_t v = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (ec != std::errc() || end != digits.data() + digits.size() || digits.empty()) {
      diag_.Error(MarkOf(n), path, fmt::format("expected an integer, got '{}'", *s));
      return std::nullopt;
    }
    if (v < min || v > max) {
      diag_.Error(MarkOf(n), path,
                  fmt::format("{} is out of range; use a value from {} to {}", v, min, max));
      return std::nullopt;
    }
    return v;
  }

  std::optional<bool> Bool(const YAML::Node& n, const std::string& path) {
    auto s = Scalar(n, path, "true or false");
    if (!s) return std::nullopt;
    if (*s == "true" || *s == "yes" || *s == "on") return true;
    if (*s == "false" || *s == "no" || *s == "off") return false;
    diag_.Error(MarkOf(n), path, fmt::format("expected true or false, got '{}'", *s));
    return std::nullopt;
  }

  // Rates, sizes and durations; 'min' rejects zero where zero makes no sense.
  std::optional<uint64_t> Quantity(const YAML::Node& n, const std::string& path,
                                   Result<uint64_t> (*parse)(std::string_view),
                                   std::string_view what, uint64_t min,
                                   std::string (*format)(uint64_t)) {
    auto s = Scalar(n, path, what);
    if (!s) return std::nullopt;
    Result<uint64_t> r = parse(*s);
    if (!r.ok()) {
      diag_.Error(MarkOf(n), path, r.message());
      return std::nullopt;
    }
    if (*r < min) {
      diag_.Error(MarkOf(n), path,
                  fmt::format("'{}' is too small; use at least {}", *s, format(min)));
      return std::nullopt;
    }
    return *r;
  }
  std::optional<uint64_t> Rate(const YAML::Node& n, const std::string& path) {
    return Quantity(n, path, ParseRate, "a rate such as 10Gbps", 1, FormatRate);
  }
  std::optional<uint64_t> Size(const YAML::Node& n, const std::string& path, uint64_t min) {
    return Quantity(n, path, ParseSize, "a size such as 64KiB", min, FormatSize);
  }
  std::optional<uint64_t> Duration(const YAML::Node& n, const std::string& path) {
    return Quantity(n, path, ParseDuration, "a duration such as 100us", 1, FormatDuration);
  }

  template <typename E>
  std::optional<E> Enum(const YAML::Node& n, const std::string& path, std::string_view what,
                        std::initializer_list<E> all) {
    // "driver: null" is how people write the null driver; YAML reads the word as no value.
    auto s = IsNullWord(n) ? std::optional<std::string>("null")
                           : Scalar(n, path, fmt::format("a {}", what));
    if (!s) return std::nullopt;
    std::vector<std::string> names;
    for (E e : all) {
      if (ToString(e) == *s) return e;
      names.emplace_back(ToString(e));
    }
    std::string hint = Suggest(*s, names);
    diag_.Error(MarkOf(n), path,
                fmt::format("'{}' is not a {}; use one of: {}{}", *s, what, Join(names),
                            hint.empty() ? "" : " (" + hint + ")"));
    return std::nullopt;
  }

  // Names of ports, bridges, classes, ...: they appear in flow rules, logs and metric labels.
  std::optional<std::string> Name(const YAML::Node& n, const std::string& path) {
    auto s = String(n, path);
    if (!s) return std::nullopt;
    bool ok = s->size() <= 32 && std::isalpha(static_cast<unsigned char>((*s)[0]));
    for (char c : *s) {
      ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.');
    }
    if (!ok) {
      diag_.Error(MarkOf(n), path,
                  fmt::format("'{}' is not a valid name; use a letter followed by up to 31 "
                              "letters, digits, '_', '-' or '.' (e.g. gen0, uplink-1)",
                              *s));
      return std::nullopt;
    }
    return s;
  }

  std::optional<MacAddress> Mac(const YAML::Node& n, const std::string& path) {
    auto s = Scalar(n, path, "a MAC address");
    if (!s) return std::nullopt;
    MacAddress mac;
    unsigned b[6];
    char tail = 0;
    if (s->size() != 17 || std::sscanf(s->c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2],
                                       &b[3], &b[4], &b[5], &tail) != 6) {
      diag_.Error(MarkOf(n), path,
                  fmt::format("'{}' is not a MAC address; use e.g. 02:00:00:00:00:01", *s));
      return std::nullopt;
    }
    for (int i = 0; i < 6; ++i) mac.bytes[i] = static_cast<uint8_t>(b[i]);
    if (mac.bytes[0] & 1) {
      diag_.Error(MarkOf(n), path,
                  fmt::format("'{}' is a multicast MAC address; a port needs a unicast one (first "
                              "byte even, e.g. 02:00:00:00:00:01)",
                              *s));
      return std::nullopt;
    }
    return mac;
  }

  Diagnostics& diag() { return diag_; }
  void SetKey(const YAML::Node& key, const YAML::Node& value) {
    key_mark_ = MarkOf(key);
    value_of_key_.reset(value);  // operator= would overwrite the previous node in place
  }

 private:
  Diagnostics& diag_;
  std::string_view text_;
  Mark key_mark_;
  YAML::Node value_of_key_;  // the value last looked up, whose key is at key_mark_
};

// ---- one YAML mapping: lookups mark keys as known, Finish() rejects the rest ----------------

class MapReader {
 public:
  MapReader(Converter& conv, const YAML::Node& node, std::string path, Source& source)
      : conv_(conv), node_(node), path_(std::move(path)), source_(source) {
    source_.mark = MarkOf(node);
    source_.path = path_;
    valid_ = node.IsMap();
    if (!valid_) {
      conv_.diag().Error(MarkOf(node), path_,
                         fmt::format("expected a mapping, got {}", Describe(node)));
      return;
    }
    CheckDuplicateKeys();
  }

  bool valid() const { return valid_; }
  const std::string& path() const { return path_; }
  std::string Path(std::string_view key) const { return Child(path_, key); }
  Converter& conv() { return conv_; }
  Mark mark() const { return source_.mark; }
  void Error(Mark mark, std::string_view key, std::string message) {
    conv_.diag().Error(mark, Path(key), std::move(message));
  }

  std::optional<YAML::Node> Find(std::string_view key) {
    known_.emplace_back(key);
    if (!valid_) return std::nullopt;
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == key) {
        source_.keys[std::string(key)] = MarkOf(it->second);
        conv_.SetKey(it->first, it->second);
        return it->second;
      }
    }
    return std::nullopt;
  }

  std::optional<YAML::Node> Require(std::string_view key, std::string_view what) {
    auto n = Find(key);
    if (!n && valid_) {
      conv_.diag().Error(source_.mark, path_,
                         fmt::format("missing required key '{}' ({})", key, what));
    }
    return n;
  }

  // Reads 'key' (if present) with 'convert' into 'out', which keeps its default otherwise.
  template <typename T, typename F>
  void Read(std::string_view key, T& out, F convert) {
    if (auto n = Find(key)) {
      if (auto v = convert(*n, Path(key))) out = static_cast<std::decay_t<decltype(*v)>>(*v);
    }
  }
  template <typename T, typename F>
  void ReadRequired(std::string_view key, std::string_view what, T& out, F convert) {
    if (auto n = Require(key, what)) {
      if (auto v = convert(*n, Path(key))) out = *v;
    }
  }

  template <typename T>
  void Int(std::string_view key, T& out, int64_t min, int64_t max) {
    Read(key, out, [&](const YAML::Node& n, const std::string& p) -> std::optional<T> {
      if (auto v = conv_.Int(n, p, min, max)) return static_cast<T>(*v);
      return std::nullopt;
    });
  }
  template <typename T>
  void Int(std::string_view key, std::optional<T>& out, int64_t min, int64_t max) {
    Read(key, out, [&](const YAML::Node& n, const std::string& p) -> std::optional<T> {
      if (auto v = conv_.Int(n, p, min, max)) return static_cast<T>(*v);
      return std::nullopt;
    });
  }
  void Bool(std::string_view key, bool& out) {
    Read(key, out, [&](const YAML::Node& n, const std::string& p) { return conv_.Bool(n, p); });
  }
  template <typename T>
  void String(std::string_view key, T& out) {
    Read(key, out, [&](const YAML::Node& n, const std::string& p) { return conv_.String(n, p); });
  }
  template <typename T>
  void Name(std::string_view key, T& out) {
    Read(key, out, [&](const YAML::Node& n, const std::string& p) { return conv_.Name(n, p); });
  }
  void RequiredName(std::string_view key, std::string& out) {
    ReadRequired(key, "a name", out,
                 [&](const YAML::Node& n, const std::string& p) { return conv_.Name(n, p); });
  }
  template <typename T>
  void Rate(std::string_view key, T& out) {
    Read(key, out, [&](const YAML::Node& n, const std::string& p) { return conv_.Rate(n, p); });
  }
  template <typename T>
  void Size(std::string_view key, T& out, uint64_t min = 1) {
    Read(key, out,
         [&](const YAML::Node& n, const std::string& p) { return conv_.Size(n, p, min); });
  }
  template <typename T>
  void Duration(std::string_view key, T& out) {
    Read(key, out, [&](const YAML::Node& n, const std::string& p) { return conv_.Duration(n, p); });
  }
  template <typename E>
  void Enum(std::string_view key, E& out, std::string_view what, std::initializer_list<E> all) {
    Read(key, out,
         [&](const YAML::Node& n, const std::string& p) { return conv_.Enum(n, p, what, all); });
  }

  // Rejects every key that no lookup asked for, suggesting the closest known one.
  void Finish() {
    if (!valid_) return;
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      if (!it->first.IsScalar()) continue;  // reported by CheckDuplicateKeys
      const std::string& key = it->first.Scalar();
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      std::string hint = Suggest(key, known_);
      conv_.diag().Error(MarkOf(it->first), Child(path_, key),
                         fmt::format("unknown key '{}'; {}", key,
                                     hint.empty() ? "allowed keys: " + Join(known_) : hint));
    }
  }

 private:
  void CheckDuplicateKeys() {
    std::map<std::string, Mark> seen;
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      if (!it->first.IsScalar()) {
        conv_.diag().Error(MarkOf(it->first), path_, "a key must be a plain string");
        continue;
      }
      auto [pos, inserted] = seen.emplace(it->first.Scalar(), MarkOf(it->first));
      if (!inserted) {
        conv_.diag().Error(MarkOf(it->first), Child(path_, it->first.Scalar()),
                           fmt::format("duplicate key '{}' (first given at line {})",
                                       it->first.Scalar(), pos->second.line));
      }
    }
  }

  Converter& conv_;
  YAML::Node node_;
  std::string path_;
  Source& source_;
  std::vector<std::string> known_;
  bool valid_ = false;
};

// Calls 'fn(item, item_path)' for each element of a list; an absent value counts as empty.
template <typename F>
void ForEach(Converter& conv, const YAML::Node& n, const std::string& path, F fn) {
  if (n.IsNull()) return;
  if (!n.IsSequence()) {
    conv.diag().Error(MarkOf(n), path, fmt::format("expected a list, got {}", Describe(n)));
    return;
  }
  for (size_t i = 0; i < n.size(); ++i) fn(n[i], Item(path, i));
}

// Reads a list of mapping items with 'parse(reader, out)' into 'out'.
template <typename T, typename F>
void ReadList(MapReader& parent, std::string_view key, std::vector<T>& out, F parse) {
  auto n = parent.Find(key);
  if (!n) return;
  ForEach(parent.conv(), *n, parent.Path(key), [&](const YAML::Node& item, const std::string& p) {
    T value;
    MapReader reader(parent.conv(), item, p, value.source);
    if (reader.valid()) parse(reader, value);
    reader.Finish();
    if (reader.valid()) out.push_back(std::move(value));
  });
}

// A list of names; each item's position is kept as "key[i]" in the parent's Source.
std::vector<std::string> ReadNames(MapReader& parent, std::string_view key, Source& source) {
  std::vector<std::string> names;
  auto n = parent.Find(key);
  if (!n) return names;
  ForEach(parent.conv(), *n, parent.Path(key), [&](const YAML::Node& item, const std::string& p) {
    // Kept under the item's index, which is what validation reports by. An item that is not a
    // name (already reported) is kept as an empty name, so later items keep their index.
    source.keys[Item(key, names.size())] = MarkOf(item);
    names.push_back(parent.conv().Name(item, p).value_or(""));
  });
  return names;
}

// ---- sections -------------------------------------------------------------------------------

void ParseDataplane(MapReader& r, Dataplane& d) {
  r.Int("lcores", d.lcores, 1, 128);
  r.Size("memory", d.memory_bytes, 64 * kMiB);
  r.Enum("hugepages", d.hugepages, "hugepages setting",
         {Hugepages::kOn, Hugepages::kOff, Hugepages::kAuto});
  r.Int("mbufs", d.mbufs, 1024, std::numeric_limits<uint32_t>::max());
  r.Int("burst", d.burst, 1, 32);
  r.Bool("forward_unparsable", d.forward_unparsable);
  r.Int("spare_ports", d.spare_ports, 0, 4096);
  r.Bool("isolate", d.isolate);
  r.String("file_prefix", d.file_prefix);
}

void ParseArgs(MapReader& r, Port& port) {
  auto n = r.Find("args");
  if (!n || n->IsNull()) return;
  Source args_source;
  MapReader args(r.conv(), *n, r.Path("args"), args_source);
  if (!args.valid()) return;
  for (auto it = n->begin(); it != n->end(); ++it) {
    if (!it->first.IsScalar()) continue;
    const std::string key = it->first.Scalar();
    port.source.keys["args." + key] = MarkOf(it->second);
    port.source.keys["args." + key + ".key"] = MarkOf(it->first);  // for "no such argument"
    if (auto v = r.conv().Scalar(it->second, args.Path(key), "a scalar value")) {
      port.args[key] = *v;
    }
  }
}

void ParsePort(MapReader& r, Port& p) {
  r.RequiredName("name", p.name);
  r.ReadRequired("driver", "one of ring, null, tap, af_packet, af_xdp, memif, vhost-user, pcap, vm",
                 p.driver, [&](const YAML::Node& n, const std::string& path) {
                   return r.conv().Enum(n, path, "port driver",
                                        {Driver::kRing, Driver::kNull, Driver::kTap,
                                         Driver::kAfPacket, Driver::kAfXdp, Driver::kMemif,
                                         Driver::kVhostUser, Driver::kPcap, Driver::kVm});
                 });
  r.Read("mac", p.mac,
         [&](const YAML::Node& n, const std::string& path) { return r.conv().Mac(n, path); });
  ParseArgs(r, p);
}

void ParseVlan(MapReader& r, Vlan& v) {
  bool mode_ok = false;
  r.ReadRequired("mode", "access or trunk", v.mode, [&](const YAML::Node& n, const std::string& p) {
    auto mode = r.conv().Enum(n, p, "VLAN mode", {VlanMode::kAccess, VlanMode::kTrunk});
    mode_ok = mode.has_value();
    return mode;
  });
  auto tag = r.Find("tag");
  auto tags = r.Find("tags");
  if (!mode_ok) return;
  if (v.mode == VlanMode::kAccess) {
    if (tags) {
      r.Error(MarkOf(*tags), "tags",
              "'tags' belongs to mode trunk; an access port has one 'tag' (e.g. tag: 10)");
    }
    if (!tag) {
      r.conv().diag().Error(r.mark(), r.path(),
                            "missing required key 'tag' (the access VLAN, 1..4094)");
    } else if (auto t = r.conv().Int(*tag, r.Path("tag"), 1, 4094)) {
      v.tag = static_cast<uint16_t>(*t);
    }
    return;
  }
  if (tag) {
    r.Error(MarkOf(*tag), "tag",
            "'tag' belongs to mode access; a trunk port lists 'tags' (e.g. tags: [10, 20])");
  }
  if (!tags) {
    r.conv().diag().Error(r.mark(), r.path(),
                          "missing required key 'tags' (the trunk's VLANs, e.g. [10, 20])");
    return;
  }
  ForEach(r.conv(), *tags, r.Path("tags"), [&](const YAML::Node& n, const std::string& p) {
    if (auto t = r.conv().Int(n, p, 1, 4094)) v.tags.push_back(static_cast<uint16_t>(*t));
  });
  if (tags->IsSequence() && tags->size() == 0) {
    r.Error(MarkOf(*tags), "tags", "a trunk needs at least one VLAN tag (e.g. [10, 20])");
  }
}

void ParseBridgePort(Converter& conv, const YAML::Node& n, const std::string& path,
                     std::vector<BridgePort>& out) {
  BridgePort member;
  member.source.mark = MarkOf(n);
  member.source.path = path;
  if (n.IsScalar()) {
    if (auto name = conv.Name(n, path)) {
      member.port = *name;
      out.push_back(std::move(member));
    }
    return;
  }
  if (!n.IsMap()) {
    conv.diag().Error(MarkOf(n), path,
                      fmt::format("expected a port name or a mapping {{port: NAME, vlan: ...}}, "
                                  "got {}",
                                  Describe(n)));
    return;
  }
  MapReader r(conv, n, path, member.source);
  r.RequiredName("port", member.port);
  if (auto v = r.Find("vlan")) {
    Vlan vlan;
    Source vlan_source;
    MapReader vr(conv, *v, r.Path("vlan"), vlan_source);
    if (vr.valid()) ParseVlan(vr, vlan);
    vr.Finish();
    member.vlan = vlan;
  }
  r.Finish();
  if (!member.port.empty()) out.push_back(std::move(member));
}

void ParseBridge(MapReader& r, Bridge& b) {
  r.RequiredName("name", b.name);
  if (auto ports = r.Find("ports")) {
    ForEach(r.conv(), *ports, r.Path("ports"), [&](const YAML::Node& n, const std::string& p) {
      ParseBridgePort(r.conv(), n, p, b.ports);
    });
  }
  r.Duration("mac_aging", b.mac_aging_ns);
  r.Int("mac_table_size", b.mac_table_size, 16, 16'777'216);
}

void ParseFlow(MapReader& r, Flow& f) {
  r.ReadRequired("bridge", "the bridge the rule is installed on", f.bridge,
                 [&](const YAML::Node& n, const std::string& p) { return r.conv().Name(n, p); });
  r.Int("table", f.table, 0, 254);
  r.ReadRequired("rule", "an ovs-ofctl flow such as \"udp,tp_dst=5000,actions=set_queue:1,NORMAL\"",
                 f.rule,
                 [&](const YAML::Node& n, const std::string& p) { return r.conv().String(n, p); });
}

void ParseClass(MapReader& r, TrafficClass& c) {
  r.RequiredName("name", c.name);
  r.ReadRequired("queue", "the id used by set_queue:N, 0..65535", c.queue,
                 [&](const YAML::Node& n, const std::string& p) -> std::optional<uint32_t> {
                   if (auto v = r.conv().Int(n, p, 0, 65535)) return static_cast<uint32_t>(*v);
                   return std::nullopt;
                 });
  r.ReadRequired("policy", "one of fifo, priority, srpt, las, wfq, edf, pace", c.policy,
                 [&](const YAML::Node& n, const std::string& p) {
                   return r.conv().Enum(n, p, "policy",
                                        {Policy::kFifo, Policy::kPriority, Policy::kSrpt,
                                         Policy::kLas, Policy::kWfq, Policy::kEdf, Policy::kPace});
                 });
  r.Name("tenant", c.tenant);
  r.Int("weight", c.weight, 1, 1'000'000);
  r.Int("priority", c.priority, 0, 7);
  r.Duration("deadline", c.deadline_ns);
  r.Rate("rate", c.rate_bps);
  r.Duration("aging", c.aging_ns);
}

void ParseMessage(MapReader& r, MessageRule& m) {
  r.ReadRequired("class", "the class whose packets this groups", m.class_name,
                 [&](const YAML::Node& n, const std::string& p) { return r.conv().Name(n, p); });
  r.ReadRequired("identify", "one of homa, tcp-gap, datagram, ebpf", m.identify,
                 [&](const YAML::Node& n, const std::string& p) {
                   return r.conv().Enum(
                       n, p, "message identification",
                       {Identify::kHoma, Identify::kTcpGap, Identify::kDatagram, Identify::kEbpf});
                 });
  r.Duration("idle", m.idle_ns);
  r.String("program", m.program);
  r.String("section", m.section);
}

void ParseTenant(MapReader& r, Tenant& t) {
  r.RequiredName("name", t.name);
  r.Int("weight", t.weight, 1, 1'000'000);
  r.Int("priority", t.priority, 0, 7);
  r.Enum("share", t.share, "share", {Share::kWfq, Share::kPriority});
  t.classes = ReadNames(r, "classes", t.source);
}

void ParseUplink(MapReader& r, Uplink& u) {
  r.ReadRequired("port", "the port this uplink sends on", u.port,
                 [&](const YAML::Node& n, const std::string& p) { return r.conv().Name(n, p); });
  r.ReadRequired("rate", "the line rate, e.g. 1Gbps", u.rate_bps,
                 [&](const YAML::Node& n, const std::string& p) { return r.conv().Rate(n, p); });
  r.Rate("pacing", u.pacing_bps);
  r.Size("pacing_burst", u.pacing_burst_bytes);
  r.Size("buffer", u.buffer_bytes);
  r.Int("buffer_packets", u.buffer_packets, 1, std::numeric_limits<uint32_t>::max());
  r.Size("message_limit", u.message_limit_bytes);
  r.Enum("drop", u.drop, "drop policy", {DropPolicy::kWorst, DropPolicy::kTail});
  r.Int("max_messages", u.max_messages, 1, std::numeric_limits<uint32_t>::max());
  if (auto s = r.Find("scheduler")) {
    MapReader sr(r.conv(), *s, r.Path("scheduler"), u.scheduler.source);
    if (sr.valid()) {
      sr.Enum("share", u.scheduler.share, "share", {Share::kWfq, Share::kPriority});
      ReadList(sr, "tenants", u.scheduler.tenants, ParseTenant);
    }
    sr.Finish();
  }
}

void ParseNic(MapReader& r, Nic& nic) {
  r.Name("bridge", nic.bridge);
  r.Name("port", nic.port);
  r.Name("class", nic.class_name);
  r.Read("mac", nic.mac,
         [&](const YAML::Node& n, const std::string& p) { return r.conv().Mac(n, p); });
}

void ParseDisk(MapReader& r, Disk& d) {
  r.ReadRequired("path", "the disk image file", d.path,
                 [&](const YAML::Node& n, const std::string& p) { return r.conv().String(n, p); });
  r.ReadRequired("size", "e.g. 1GiB", d.size_bytes, [&](const YAML::Node& n, const std::string& p) {
    return r.conv().Size(n, p, 512);
  });
  r.Size("max_size", d.max_size_bytes, 512);
}

void ParseVmSettings(MapReader& r, VmSettings& s) {
  r.Int("vcpus", s.vcpus, 1, 64);
  r.Size("memory", s.memory_bytes);
  r.String("image", s.image);
  r.String("initrd", s.initrd);
  r.Read("cmdline", s.cmdline, [&](const YAML::Node& n, const std::string& p) {
    return r.conv().Scalar(n, p, "a string");  // an empty command line is legitimate
  });
  r.Size("serial_log_max", s.serial_log_max_bytes);
  if (r.Find("nics")) {
    s.nics.emplace();
    ReadList(r, "nics", *s.nics, ParseNic);
  }
  if (auto d = r.Find("disk")) {
    Disk disk;
    MapReader dr(r.conv(), *d, r.Path("disk"), disk.source);
    if (dr.valid()) ParseDisk(dr, disk);
    dr.Finish();
    if (dr.valid()) s.disk = std::move(disk);
  }
}

void ParseTemplate(MapReader& r, VmTemplate& t) {
  r.RequiredName("name", t.name);
  ParseVmSettings(r, t.settings);
  r.String("ready", t.ready);
  r.Duration("ready_timeout", t.ready_timeout_ns);
}

void ParseVm(MapReader& r, ParsedVm& vm) {
  r.RequiredName("name", vm.name);
  r.Name("template", vm.template_name);
  ParseVmSettings(r, vm.settings);
  r.Bool("autostart", vm.autostart);
}

void ParseTier(MapReader& r, Tier& t) {
  r.RequiredName("name", t.name);
  r.ReadRequired("template", "the template each VM of the tier is made from", t.template_name,
                 [&](const YAML::Node& n, const std::string& p) { return r.conv().Name(n, p); });
  r.Int("count", t.count, 1, 1000);
  r.Name("class", t.class_name);
  t.depends_on = ReadNames(r, "depends_on", t.source);
}

void ParseBlueprint(MapReader& r, Blueprint& b) {
  r.RequiredName("name", b.name);
  ReadList(r, "tiers", b.tiers, ParseTier);
}

void ParseHost(MapReader& r, Host& h) {
  r.RequiredName("name", h.name);
  r.ReadRequired("address", "an IP address or hostname", h.address,
                 [&](const YAML::Node& n, const std::string& p) -> std::optional<std::string> {
                   auto s = r.conv().String(n, p);
                   if (s && !IsHostAddress(*s)) {
                     r.conv().diag().Error(MarkOf(n), p,
                                           fmt::format("'{}' is not an IP address or hostname; "
                                                       "use e.g. 192.0.2.10 or box-b.example",
                                                       *s));
                     return std::nullopt;
                   }
                   return s;
                 });
  r.Int("port", h.port, 1, 65535);
}

void ParseQuota(MapReader& r, Quota& q) {
  r.String("user", q.user);
  r.String("group", q.group);
  r.Int("vms", q.vms, 0, 100'000);
  r.Int("vcpus", q.vcpus, 0, 1'000'000);
  r.Size("memory", q.memory_bytes, 0);
  r.Size("disk", q.disk_bytes, 0);
  if (r.Find("classes")) q.classes = ReadNames(r, "classes", q.source);
}

void ParseControl(MapReader& r, Control& c) {
  r.String("socket", c.socket);
  r.String("group", c.group);
  r.Read("metrics", c.metrics,
         [&](const YAML::Node& n, const std::string& p) -> std::optional<std::string> {
           auto s = r.conv().String(n, p);
           if (s && !IsHostPort(*s)) {
             r.conv().diag().Error(
                 MarkOf(n), p,
                 fmt::format("'{}' is not host:port; use e.g. 127.0.0.1:9100 or [::1]:9100", *s));
             return std::nullopt;
           }
           return s;
         });
}

// ---- fleet and migration ---------------------------------------------------------------------

constexpr uint64_t kSecondNs = 1'000'000'000ull;

// A host's name in the fleet registry: it is part of an etcd key and of DNS-like names.
bool IsFleetHostName(const std::string& s) {
  if (s.empty() || s.size() > 63 || s.front() == '-' || s.back() == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

std::optional<std::string> FleetHostName(Converter& conv, const YAML::Node& n,
                                         const std::string& path) {
  auto s = conv.String(n, path);
  if (s && !IsFleetHostName(*s)) {
    conv.diag().Error(MarkOf(n), path,
                      fmt::format("'{}' is not a fleet host name; use up to 63 lowercase letters, "
                                  "digits and inner '-' (e.g. edge-a)",
                                  *s));
    return std::nullopt;
  }
  return s;
}

// "http://host:port": the etcd v3 JSON gateway, plain HTTP (etcd on loopback or a trusted net).
std::optional<std::string> EtcdEndpoint(Converter& conv, const YAML::Node& n,
                                        const std::string& path) {
  auto s = conv.String(n, path);
  if (!s) return std::nullopt;
  constexpr std::string_view kScheme = "http://";
  std::string_view rest = *s;
  if (rest.starts_with(kScheme)) rest.remove_prefix(kScheme.size());
  if (rest.ends_with("/")) rest.remove_suffix(1);
  if (!s->starts_with(kScheme) || !IsHostPort(rest)) {
    conv.diag().Error(MarkOf(n), path,
                      fmt::format("'{}' is not an etcd endpoint; use http://host:port, e.g. "
                                  "http://127.0.0.1:2379",
                                  *s));
    return std::nullopt;
  }
  return fmt::format("{}{}", kScheme, rest);
}

void ParseBudget(MapReader& r, Fleet& f) {
  r.ReadRequired("vcpus", "the vCPUs this box offers", f.budget_vcpus,
                 [&](const YAML::Node& n, const std::string& p) -> std::optional<uint32_t> {
                   if (auto v = r.conv().Int(n, p, 0, 1'000'000)) return static_cast<uint32_t>(*v);
                   return std::nullopt;
                 });
  r.ReadRequired("memory", "the guest memory this box offers, e.g. 4GiB", f.budget_memory_bytes,
                 [&](const YAML::Node& n, const std::string& p) { return r.conv().Size(n, p, 0); });
  r.ReadRequired("uplink", "the uplink bandwidth this box offers, e.g. 1Gbps", f.budget_uplink_bps,
                 [&](const YAML::Node& n, const std::string& p) { return r.conv().Rate(n, p); });
}

void ParseLabels(MapReader& r, Fleet& f) {
  auto n = r.Find("labels");
  if (!n || n->IsNull()) return;
  Source labels_source;
  MapReader labels(r.conv(), *n, r.Path("labels"), labels_source);
  if (!labels.valid()) return;
  for (auto it = n->begin(); it != n->end(); ++it) {
    if (!it->first.IsScalar()) continue;  // reported by the reader
    const std::string key = it->first.Scalar();
    if (key.empty() || TextProblem(key) != "") {
      labels.Error(MarkOf(it->first), key, "a label's name must be printable text");
      continue;
    }
    if (auto v = r.conv().Scalar(it->second, labels.Path(key), "a string")) f.labels[key] = *v;
  }
}

void ParseAntiAffinityGroup(MapReader& r, AntiAffinityGroup& g) {
  r.RequiredName("name", g.name);
  if (!r.Require("vms", "the VMs that must not share a host, e.g. [db-1, db-2]")) return;
  g.vms = ReadNames(r, "vms", g.source);
}

void ParseRebalance(MapReader& r, Fleet& f) {
  r.Enum("choose", f.rebalance_choose, "rule for the VM that leaves",
         {LeaveRule::kFewestChangedPages, LeaveRule::kLowestPageRate,
          LeaveRule::kSmallestMemory});
}

void ParseFleet(MapReader& r, Fleet& f) {
  r.ReadRequired("host", "this host's name in the registry, e.g. edge-a", f.host,
                 [&](const YAML::Node& n, const std::string& p) {
                   return FleetHostName(r.conv(), n, p);
                 });
  if (auto etcd = r.Require("etcd", "the etcd endpoints, e.g. [http://127.0.0.1:2379]")) {
    ForEach(r.conv(), *etcd, r.Path("etcd"), [&](const YAML::Node& n, const std::string& p) {
      if (auto e = EtcdEndpoint(r.conv(), n, p)) f.etcd.push_back(*e);
    });
    if (etcd->IsNull() || (etcd->IsSequence() && etcd->size() == 0)) {
      r.Error(MarkOf(*etcd), "etcd", "needs at least one endpoint, e.g. [http://127.0.0.1:2379]");
    }
  }
  // etcd grants leases in whole seconds, and a lease of one second leaves no room for a
  // keepalive that is a little late.
  r.Read("lease_ttl", f.lease_ttl_ns, [&](const YAML::Node& n, const std::string& p) {
    return r.conv().Quantity(n, p, ParseDuration, "a duration such as 10s", 2 * kSecondNs,
                             FormatDuration);
  });
  r.Duration("publish_interval", f.publish_interval_ns);
  if (auto b = r.Require("budget", "what this box offers: {vcpus: 8, memory: 4GiB, uplink: 1Gbps}")) {
    Source budget_source;
    MapReader br(r.conv(), *b, r.Path("budget"), budget_source);
    if (br.valid()) ParseBudget(br, f);
    br.Finish();
  }
  ParseLabels(r, f);
  ReadList(r, "anti_affinity", f.anti_affinity, ParseAntiAffinityGroup);
  if (auto n = r.Find("rebalance"); n && !n->IsNull()) {
    Source rebalance_source;
    MapReader rr(r.conv(), *n, r.Path("rebalance"), rebalance_source);
    if (rr.valid()) ParseRebalance(rr, f);
    rr.Finish();
  }
}

void ParseMigration(MapReader& r, Migration& m) {
  r.Read("listen", m.listen, [&](const YAML::Node& n, const std::string& p) {
    auto s = r.conv().String(n, p);
    if (s && !IsHostPort(*s)) {
      r.conv().diag().Error(
          MarkOf(n), p,
          fmt::format("'{}' is not address:port; use e.g. 10.99.0.1:7400 or [::1]:7400", *s));
      return std::optional<std::string>();
    }
    return s;
  });
  r.String("key_file", m.key_file);
  r.Duration("downtime", m.downtime_ns);
  r.Name("class", m.class_name);
  r.Duration("timeout", m.timeout_ns);
  // 0 (no limit) is written bare, as a rate of nothing per second would read oddly.
  r.Read("bandwidth", m.bandwidth_bps,
         [&](const YAML::Node& n, const std::string& p) -> std::optional<uint64_t> {
           if (n.IsScalar() && n.Scalar() == "0") return 0;
           return r.conv().Quantity(n, p, ParseRate, "a rate such as 1Gbps, or 0 for no limit", 0,
                                    FormatRate);
         });
}

void ParseGuestMemory(MapReader& r, GuestMemory& g) {
  r.Bool("track", g.track);
  r.Duration("track_period", g.track_period_ns);
  r.Int("counter_bits", g.counter_bits, 2, 16);
  r.Enum("huge_pages", g.huge_pages, "huge-page policy",
         {HugePagePolicy::kAuto, HugePagePolicy::kOff, HugePagePolicy::kAll});
}

// A section that is one mapping (dataplane, control).
template <typename T, typename F>
void ReadSection(MapReader& top, std::string_view key, T& out, F parse) {
  auto n = top.Find(key);
  if (!n || n->IsNull()) return;
  MapReader r(top.conv(), *n, top.Path(key), out.source);
  if (r.valid()) parse(r, out);
  r.Finish();
}

void ParseTop(MapReader& top, Parsed& parsed) {
  Config& c = parsed.config;
  ReadSection(top, "dataplane", c.dataplane, ParseDataplane);
  ReadList(top, "ports", c.ports, ParsePort);
  ReadList(top, "bridges", c.bridges, ParseBridge);
  ReadList(top, "flows", c.flows, ParseFlow);
  ReadList(top, "classes", c.classes, ParseClass);
  ReadList(top, "messages", c.messages, ParseMessage);
  ReadList(top, "uplinks", c.uplinks, ParseUplink);
  ReadList(top, "templates", c.templates, ParseTemplate);
  ReadList(top, "vms", parsed.vms, ParseVm);
  ReadList(top, "blueprints", c.blueprints, ParseBlueprint);
  ReadList(top, "hosts", c.hosts, ParseHost);
  ReadList(top, "quotas", c.quotas, ParseQuota);
  ReadSection(top, "control", c.control, ParseControl);
  if (auto n = top.Find("fleet")) {
    // Present but empty is refused (host, etcd and budget are required), not taken as absent;
    // the error points at the key, as for any other value left empty.
    if (n->IsNull()) {
      (void)top.conv().Scalar(*n, top.Path("fleet"), "a mapping with host, etcd and budget");
    } else {
      c.fleet.emplace();
      MapReader r(top.conv(), *n, top.Path("fleet"), c.fleet->source);
      if (r.valid()) ParseFleet(r, *c.fleet);
      r.Finish();
    }
  }
  ReadSection(top, "migration", c.migration, ParseMigration);
  ReadSection(top, "guest_memory", c.guest_memory, ParseGuestMemory);
}

}  // namespace

std::optional<Parsed> Parse(std::string_view yaml_text, Diagnostics& diag) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::ParserException& e) {
    diag.Error(Mark{e.mark.line + 1, e.mark.column + 1}, "",
               fmt::format("YAML syntax error: {}", e.msg));
    return std::nullopt;
  } catch (const YAML::Exception& e) {
    diag.Error(Mark{1, 1}, "", fmt::format("cannot read YAML: {}", e.what()));
    return std::nullopt;
  }
  if (root.IsNull()) {
    // Nothing but comments and blanks is more likely a truncated or wrong file than a wish for
    // a box without ports; the error has no line to point at.
    diag.Error(Mark{}, "", "empty configuration");
    return std::nullopt;
  }
  Parsed parsed;
  Converter conv(diag, yaml_text);
  Source top_source;
  MapReader top(conv, root, "", top_source);
  try {
    if (top.valid()) ParseTop(top, parsed);
    top.Finish();
  } catch (const YAML::Exception& e) {
    // Not expected for a document that loaded; kept so that no exception leaves the library.
    diag.Error(Mark{e.mark.line + 1, e.mark.column + 1}, "", fmt::format("YAML: {}", e.msg));
  }
  return parsed;
}

}  // namespace qosvisor::config
