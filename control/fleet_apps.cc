// Fleet apps in etcd: keys, the plan's and the assignments' JSON (read strictly: other daemons
// wrote it), and the placement of a plan's VMs on hosts.
#include "control/fleet_apps.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <limits>

namespace qosvisor::control {

using nlohmann::json;

namespace {

constexpr const char* kAppStates[] = {"deploying", "running", "rolling-back", "undeploying"};
constexpr const char* kAssignStates[] = {"requested", "creating",   "running",  "ready",
                                         "failed",    "destroying", "destroyed"};

// Reads fields of one JSON object; the first problem is kept, named by its path ("tiers[1].name").
class RecordReader {
 public:
  RecordReader(const json& object, std::string path) : object_(object), path_(std::move(path)) {}

  void Text(const char* key, std::string& out) {
    if (const json* v = Find(key, "a string", &json::is_string)) out = v->get<std::string>();
  }
  template <typename T>
  void Number(const char* key, T& out) {
    const json* v = Find(key, "a non-negative integer", &json::is_number_unsigned);
    if (v == nullptr) return;
    if (v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
      Fail(fmt::format("{}{} is out of range", path_, key));
      return;
    }
    out = static_cast<T>(v->get<uint64_t>());
  }
  // A key that may be null (absent in meaning) or a string.
  void OptionalText(const char* key, std::optional<std::string>& out) {
    auto it = object_.find(key);
    if (it != object_.end() && it->is_null()) return;
    std::string text;
    Text(key, text);
    if (error_.empty()) out = std::move(text);
  }
  void TextMap(const char* key, std::map<std::string, std::string>& out) {
    const json* v = Find(key, "an object", &json::is_object);
    if (v == nullptr) return;
    for (const auto& [k, value] : v->items()) {
      if (!value.is_string()) return Fail(fmt::format("{}{}.{} is not a string", path_, key, k));
      out[k] = value.get<std::string>();
    }
  }
  void OneOf(const char* key, std::string& out, std::initializer_list<const char*> allowed) {
    Text(key, out);
    if (!error_.empty()) return;
    if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return out == a; })) {
      Fail(fmt::format("{}{} '{}' is not one of {}", path_, key, out, fmt::join(allowed, ", ")));
    }
  }
  const json* Array(const char* key) { return Find(key, "an array", &json::is_array); }
  void Fail(std::string why) {
    if (error_.empty()) error_ = std::move(why);
  }
  const std::string& path() const { return path_; }
  Status status() const { return error_.empty() ? Status::Ok() : Status::Error(error_); }

 private:
  const json* Find(const char* key, const char* what, bool (json::*is)() const noexcept) {
    if (!error_.empty()) return nullptr;
    auto it = object_.find(key);
    if (it == object_.end() || !((*it).*is)()) {
      Fail(fmt::format("{}{} is missing or not {}", path_, key, what));
      return nullptr;
    }
    return &*it;
  }

  const json& object_;
  std::string path_;
  std::string error_;
};

json OptionalJson(const std::optional<std::string>& text) { return text ? json(*text) : json(); }

Result<FleetAppVm> ParseAppVm(const json& j, const std::string& path) {
  if (!j.is_object()) return Status::Error(path + " is not an object");
  FleetAppVm vm;
  RecordReader r(j, path + ".");
  r.Text("name", vm.name);
  r.Text("template", vm.template_name);
  r.TextMap("overrides", vm.overrides);
  r.Text("host", vm.host);
  r.Number("vcpus", vm.vcpus);
  r.Number("memory_bytes", vm.memory_bytes);
  if (Status s = r.status(); !s.ok()) return s;
  return vm;
}

Result<FleetAppTier> ParseAppTier(const json& j, const std::string& path) {
  if (!j.is_object()) return Status::Error(path + " is not an object");
  FleetAppTier tier;
  RecordReader r(j, path + ".");
  r.Text("name", tier.name);
  r.Number("wave", tier.wave);
  r.OptionalText("ready", tier.ready);
  r.Number("ready_timeout_ns", tier.ready_timeout_ns);
  const json* vms = r.Array("vms");
  if (Status s = r.status(); !s.ok()) return s;
  for (size_t i = 0; i < vms->size(); ++i) {
    auto vm = ParseAppVm((*vms)[i], fmt::format("{}.vms[{}]", path, i));
    if (!vm.ok()) return vm.status();
    tier.vms.push_back(std::move(vm).value());
  }
  return tier;
}

// The lower of a host's free vCPU and free memory shares: 0 when either is used up.
double FreeShare(const FleetHost& h, uint32_t vcpus, uint64_t memory) {
  if (h.budget_vcpus == 0 || h.budget_memory_bytes == 0) return 0;
  const double cpu =
      static_cast<double>(h.budget_vcpus - std::min(vcpus, h.budget_vcpus)) / h.budget_vcpus;
  const double mem =
      static_cast<double>(h.budget_memory_bytes - std::min(memory, h.budget_memory_bytes)) /
      static_cast<double>(h.budget_memory_bytes);
  return std::min(cpu, mem);
}

// A live host and what is taken of it: its load and what this plan put there.
struct Room {
  const FleetHost* host;
  uint32_t vcpus;
  uint64_t memory_bytes;

  bool Fits(const FleetAppVm& vm) const {
    return vcpus + uint64_t{vm.vcpus} <= host->budget_vcpus &&
           memory_bytes + vm.memory_bytes <= host->budget_memory_bytes;
  }
  std::string Free() const {
    return fmt::format(
        "{} {}/{} vCPUs and {}/{} MiB free", host->name,
        host->budget_vcpus - std::min(vcpus, host->budget_vcpus), host->budget_vcpus,
        (host->budget_memory_bytes - std::min(memory_bytes, host->budget_memory_bytes)) >> 20,
        host->budget_memory_bytes >> 20);
  }
};

// Places one tier's VMs round-robin over `rooms` (sorted most free first); false with `vm` left
// unplaced when one fits nowhere.
bool PlaceTier(std::vector<Room>& rooms, FleetAppTier& tier, const FleetAppVm** unplaced) {
  std::stable_sort(rooms.begin(), rooms.end(), [](const Room& a, const Room& b) {
    const double fa = FreeShare(*a.host, a.vcpus, a.memory_bytes);
    const double fb = FreeShare(*b.host, b.vcpus, b.memory_bytes);
    return fa != fb ? fa > fb : a.host->name < b.host->name;
  });
  size_t next = 0;
  for (FleetAppVm& vm : tier.vms) {
    bool placed = false;
    for (size_t tried = 0; tried < rooms.size() && !placed; ++tried) {
      Room& room = rooms[(next + tried) % rooms.size()];
      if (!room.Fits(vm)) continue;
      vm.host = room.host->name;
      room.vcpus += vm.vcpus;
      room.memory_bytes += vm.memory_bytes;
      next = (next + tried + 1) % rooms.size();
      placed = true;
    }
    if (!placed) {
      *unplaced = &vm;
      return false;
    }
  }
  return true;
}

}  // namespace

std::vector<const FleetAppVm*> FleetApp::Vms() const {
  std::vector<const FleetAppVm*> out;
  for (const FleetAppTier& t : tiers) {
    for (const FleetAppVm& vm : t.vms) out.push_back(&vm);
  }
  return out;
}

uint32_t FleetApp::Waves() const {
  uint32_t n = 0;
  for (const FleetAppTier& t : tiers) n = std::max(n, t.wave + 1);
  return n;
}

std::string AppKey(const std::string& app) { return fmt::format("{}{}", kAppsPrefix, app); }

std::string AssignHostPrefix(const std::string& host) {
  return fmt::format("{}{}/", kAssignPrefix, host);
}

std::string AssignKey(const std::string& host, const std::string& app, const std::string& vm) {
  return fmt::format("{}{}/{}", AssignHostPrefix(host), app, vm);
}

json FleetAppJson(const FleetApp& app) {
  json tiers = json::array();
  for (const FleetAppTier& t : app.tiers) {
    json vms = json::array();
    for (const FleetAppVm& vm : t.vms) {
      vms.push_back({{"name", vm.name},
                     {"template", vm.template_name},
                     {"overrides", vm.overrides},
                     {"host", vm.host},
                     {"vcpus", vm.vcpus},
                     {"memory_bytes", vm.memory_bytes}});
    }
    tiers.push_back({{"name", t.name},
                     {"wave", t.wave},
                     {"ready", OptionalJson(t.ready)},
                     {"ready_timeout_ns", t.ready_timeout_ns},
                     {"vms", vms}});
  }
  return {{"name", app.name},   {"blueprint", app.blueprint}, {"coordinator", app.coordinator},
          {"owner", app.owner}, {"owner_uid", app.owner_uid}, {"state", app.state},
          {"tiers", tiers}};
}

Result<FleetApp> ParseFleetApp(const std::string& text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::Error("the app record is not a JSON object");
  FleetApp app;
  RecordReader r(j, "");
  r.Text("name", app.name);
  r.Text("blueprint", app.blueprint);
  r.Text("coordinator", app.coordinator);
  r.Text("owner", app.owner);
  r.Number("owner_uid", app.owner_uid);
  r.OneOf("state", app.state, {kAppStates[0], kAppStates[1], kAppStates[2], kAppStates[3]});
  const json* tiers = r.Array("tiers");
  if (Status s = r.status(); !s.ok()) return s;
  for (size_t i = 0; i < tiers->size(); ++i) {
    auto tier = ParseAppTier((*tiers)[i], fmt::format("tiers[{}]", i));
    if (!tier.ok()) return tier.status();
    app.tiers.push_back(std::move(tier).value());
  }
  return app;
}

json AssignmentJson(const Assignment& a) {
  return {{"app", a.app},
          {"blueprint", a.blueprint},
          {"tier", a.tier},
          {"vm", a.vm},
          {"host", a.host},
          {"template", a.template_name},
          {"overrides", a.overrides},
          {"owner", a.owner},
          {"owner_uid", a.owner_uid},
          {"ready", OptionalJson(a.ready)},
          {"ready_timeout_ns", a.ready_timeout_ns},
          {"state", a.state},
          {"reason", a.reason},
          {"created_ms", a.created_ms},
          {"ready_ms", a.ready_ms}};
}

Result<Assignment> ParseAssignment(const std::string& text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Status::Error("the assignment is not a JSON object");
  Assignment a;
  RecordReader r(j, "");
  for (auto [key, out] : {std::pair{"app", &a.app},
                          {"blueprint", &a.blueprint},
                          {"tier", &a.tier},
                          {"vm", &a.vm},
                          {"host", &a.host},
                          {"template", &a.template_name},
                          {"owner", &a.owner},
                          {"reason", &a.reason}}) {
    r.Text(key, *out);
  }
  r.TextMap("overrides", a.overrides);
  r.Number("owner_uid", a.owner_uid);
  r.OptionalText("ready", a.ready);
  r.Number("ready_timeout_ns", a.ready_timeout_ns);
  r.OneOf("state", a.state,
          {kAssignStates[0], kAssignStates[1], kAssignStates[2], kAssignStates[3], kAssignStates[4],
           kAssignStates[5], kAssignStates[6]});
  r.Number("created_ms", a.created_ms);
  r.Number("ready_ms", a.ready_ms);
  if (Status s = r.status(); !s.ok()) return s;
  return a;
}

Assignment AssignmentOf(const FleetApp& app, const FleetAppTier& tier, const FleetAppVm& vm) {
  Assignment a;
  a.app = app.name;
  a.blueprint = app.blueprint;
  a.tier = tier.name;
  a.vm = vm.name;
  a.host = vm.host;
  a.template_name = vm.template_name;
  a.overrides = vm.overrides;
  a.owner = app.owner;
  a.owner_uid = app.owner_uid;
  a.ready = tier.ready;
  a.ready_timeout_ns = tier.ready_timeout_ns;
  return a;
}

Status CheckVmNamesFree(const std::vector<FleetHost>& hosts, const FleetApp& app) {
  for (const FleetAppVm* vm : app.Vms()) {
    for (const FleetHost& h : hosts) {
      for (const FleetVm& running : h.load.vm_list) {
        if (running.name == vm->name) {
          return Status::Error(
              fmt::format("a vm named '{}' runs on host {} already; deploy with another --name",
                          vm->name, h.name));
        }
      }
    }
  }
  return Status::Ok();
}

Status PlaceFleetApp(const std::vector<FleetHost>& hosts, FleetApp& app) {
  std::vector<Room> rooms;
  for (const FleetHost& h : hosts) {
    if (h.alive) rooms.push_back(Room{&h, h.load.vcpus, h.load.memory_bytes});
  }
  if (rooms.empty()) {
    return Status::Error("no live host in the fleet registry (is any daemon with fleet: running?)");
  }
  FleetApp placed = app;
  for (FleetAppTier& tier : placed.tiers) {
    const FleetAppVm* unplaced = nullptr;
    if (PlaceTier(rooms, tier, &unplaced)) continue;
    std::vector<std::string> free;
    for (const Room& r : rooms) free.push_back(r.Free());
    std::sort(free.begin(), free.end());
    return Status::Error(fmt::format(
        "the fleet cannot hold app '{}': vm '{}' of tier '{}' ({} vCPUs, {} MiB) fits on no host "
        "once the VMs before it are placed ({})",
        app.name, unplaced->name, tier.name, unplaced->vcpus, unplaced->memory_bytes >> 20,
        fmt::join(free, "; ")));
  }
  app = std::move(placed);
  return Status::Ok();
}

}  // namespace qosvisor::control
