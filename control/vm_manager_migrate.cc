// Live migration between boxes, as the VM list sees it: the offer a source makes and the
// destination checks, the hand-over of authority, and the switch ports a migrated VM gets.
//
// The exchange after the channel is authenticated:
//   source: offer            dest: accept | refuse(reason)   (the VM is made, not yet filled)
//   source: pages, blocks, rounds ..., state, complete
//   dest:   ready            (the VM holds the state, paused, on ports with the same QoS)
//   source: commit           (from here the VM is the destination's; the source lets it go)
//   dest:   resumed          (after resuming it and announcing its MACs)
// Until the source sends commit, any failure leaves the VM running on the source, and the
// destination removes all it made; a destination that never sees the commit does the same. A
// source that commits but never hears "resumed" keeps the VM paused and says the outcome is
// unknown: the one case an operator decides.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/mac_address.h"
#include "control/switch_builder.h"
#include "control/vm_manager.h"

namespace qosvisor::control {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using hv::MigrationMessageType;
constexpr uint32_t kOfferVersion = 1;
// Three announcements, as peers may miss the first while their own links settle.
constexpr int kAnnouncements = 3;
constexpr auto kAnnounceGap = std::chrono::milliseconds(50);
constexpr const char* kUnfinishedSuffix = ".migrating";

std::vector<uint8_t> Bytes(const std::string& text) { return {text.begin(), text.end()}; }
std::string Text(const std::vector<uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// A RARP request from `mac` to everyone (what QEMU's self-announce sends): every learning
// bridge on the way moves the MAC to the port it arrived on.
std::vector<uint8_t> RarpAnnouncement(const std::array<uint8_t, 6>& mac) {
  std::vector<uint8_t> f(60, 0);
  std::fill(f.begin(), f.begin() + 6, 0xff);
  std::copy(mac.begin(), mac.end(), f.begin() + 6);
  const uint8_t tail[] = {0x80, 0x35,  // EtherType RARP
                          0x00, 0x01,  // hardware: Ethernet
                          0x08, 0x00,  // protocol: IPv4
                          6,    4,     // address lengths
                          0x00, 0x03};  // reverse request
  std::copy(std::begin(tail), std::end(tail), f.begin() + 12);
  std::copy(mac.begin(), mac.end(), f.begin() + 22);  // sender hardware address
  std::copy(mac.begin(), mac.end(), f.begin() + 32);  // target hardware address
  return f;
}

// Reads and drops what the source still sends, until it closes or a second passes: closing a
// socket with unread data resets the connection, and the source would lose the refusal's reason.
void DrainUntilClosed(int fd) {
  if (fd < 0) return;
  const auto deadline = Clock::now() + std::chrono::seconds(1);
  char sink[65536];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) < 0 && errno != EINTR) return;
    if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
    const ssize_t n = ::recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return;
  }
}

json ProgressJson(const hv::MigrationProgress& p) {
  return {{"phase", p.phase},
          {"round", p.round},
          {"bytes_sent", p.bytes_sent},
          {"pages_left", p.pages_left},
          {"dirty_pages_per_s", p.dirty_pages_per_second},
          {"link_bytes_per_s", p.link_bytes_per_second},
          {"expected_downtime_ms", p.expected_downtime_ms},
          {"throttle_percent", p.throttle_percent}};
}

json ResultJson(const hv::MigrationResult& r) {
  return {{"rounds", r.rounds},
          {"bytes_sent", r.bytes_sent},
          {"pages_sent", r.pages_sent},
          {"zero_pages_sent", r.zero_pages_sent},
          {"disk_blocks_sent", r.disk_blocks_sent},
          {"final_pages", r.final_pages},
          {"pages_held_back", r.pages_held_back},
          {"expected_downtime_ms", r.expected_downtime_ms},
          {"precopy_ms", r.precopy_ms},
          {"max_throttle_percent", r.max_throttle_percent},
          {"converged", r.converged}};
}

// The class named for each NIC's queue, so that the destination finds its own queue by name.
std::string ClassOfQueue(const config::Config& config, int queue) {
  for (const auto& c : config.classes) {
    if (static_cast<int>(c.queue) == queue) return c.name;
  }
  return "";
}

}  // namespace

struct VmManager::Incoming {
  std::string name;
  std::unique_ptr<hv::Vm> vm;
  VmDemand demand;
  std::string disk_path;  // made here for the VM; removed if the migration fails
  // A VM of this box's configuration coming back: its entry (held busy) and ports.
  Entry* returning = nullptr;
  bool running = true;  // resumed once committed; a VM paused on the source stays paused
  // The pre-migrated image the VM's memory is a copy-on-write view of here, or why there is
  // none (the offer named one, but it is missing, stale or fails its checksum).
  std::shared_ptr<const hv::FrozenImage> base;
  std::string no_base;
};

Result<VmManager::Entry*> VmManager::ClaimReturning(const std::string& name) {
  if (Status s = ValidNewName(name); !s.ok()) return s;
  std::lock_guard lock(mu_);
  Entry* e = FindLocked(name);
  if (e == nullptr) return static_cast<Entry*>(nullptr);
  if (!e->configured || e->migrated_to.empty() || !e->busy.empty()) {
    return Status::Error(fmt::format("a vm named '{}' exists already", name));
  }
  e->busy = kIncomingMigration;
  return e;
}

void VmManager::ReleaseReturning(Entry* e) {
  if (e == nullptr) return;
  std::lock_guard lock(mu_);
  e->busy.clear();
}

Result<hv::VmOptions> VmManager::OptionsOf(const std::string& name) {
  std::lock_guard lock(mu_);
  const Entry* e = FindLocked(name);
  if (e == nullptr) return Status::Error(fmt::format("no vm named '{}'", name));
  if (!e->vm) return Status::Error(fmt::format("vm '{}' is suspended: resume it first", name));
  return e->vm->options();
}

Result<json> VmManager::OfferFor(const Entry& e) {
  const config::Config config = ConfigCopy();
  auto joins = ParseAttachment(e.vm->attachment());
  if (!joins.ok()) return joins.status();
  json nics = json::array();
  for (const vswitch::PortJoin& j : *joins) {
    json nic = AttachmentJson({j})["nics"][0];
    nic.erase("queue");
    nic["class"] = ClassOfQueue(config, j.default_queue);
    nics.push_back(std::move(nic));
  }
  json options = json::parse(hv::VmOptionsJsonText(e.vm->options()));
  json offer = {{"version", kOfferVersion},
                {"vm", e.name},
                {"options", std::move(options)},
                {"nics", std::move(nics)},
                {"parent", e.parent},
                {"running", e.vm->state() == hv::VmState::kRunning}};
  if (auto base = BaseOfferFor(e)) offer["base_image"] = std::move(*base);
  return offer;
}

Result<json> VmManager::MigrateOut(const std::string& name, hv::MigrationChannel& channel,
                                   const hv::MigrationTuning& tuning,
                                   const std::string& destination,
                                   const OperationProgress& progress) {
  auto claimed = Claim(name, "migrate");
  if (!claimed.ok()) return claimed.status();
  Entry& e = **claimed;
  BusyGuard guard(*this, &e);
  auto fail = [&](const std::string& why) {
    return Status::Error(fmt::format("vm '{}': migration to {} failed: {}; it runs on here", name,
                                     destination, why));
  };
  if (!e.vm) return Status::Error(fmt::format("vm '{}' is suspended: resume it first", name));
  auto offer = OfferFor(e);
  if (!offer.ok()) return fail(offer.message());
  progress.phase("offering the VM to " + destination);
  if (Status s = channel.Send(MigrationMessageType::kOffer, Bytes(offer->dump())); !s.ok()) {
    return fail(s.message());
  }
  auto answer = channel.Receive(tuning.message_timeout);
  if (!answer.ok()) return fail("no answer to the offer: " + answer.message());
  if (answer->type == MigrationMessageType::kRefuse) {
    return fail("the destination refused it: " + Text(answer->payload));
  }
  if (answer->type != MigrationMessageType::kAccept) {
    return fail(fmt::format("'{}' where an answer to the offer belongs",
                            hv::MigrationMessageTypeName(answer->type)));
  }
  // Where the destination holds the family's image, only the VM's own pages need to go.
  const json accepted = json::parse(Text(answer->payload), nullptr, false);
  const bool base_there = accepted.is_object() && accepted.value("base", "") == "present";
  std::string base_note;
  if (offer->contains("base_image")) {
    base_note = base_there ? "pre-migrated image used: only the VM's own pages were sent"
                           : "full copy: " + (accepted.is_object()
                                                  ? accepted.value("no_base", std::string("?"))
                                                  : std::string("?"));
    progress.phase(base_note);
  }
  const auto started = Clock::now();
  const bool was_running = e.vm->state() == hv::VmState::kRunning;
  // Busy now, the entry's counters are the tracker's no more: they say what went cold or hot
  // until the migration began.
  hv::MigrationTuning learnt = tuning;
  if (e.pages.heat) learnt.heat = *e.pages.heat;
  learnt.base_at_destination = base_there;
  auto sent = hv::SendVm(*e.vm, channel, learnt, [&](const hv::MigrationProgress& p) {
    progress.phase(fmt::format("{} round {}", p.phase, p.round));
    progress.bytes(p.bytes_sent, 0);
    progress.detail(ProgressJson(p));
  });
  if (!sent.ok()) {
    (void)channel.Send(MigrationMessageType::kAbort, {}, std::chrono::milliseconds(500));
    return fail(sent.message());
  }
  const auto paused_at =
      Clock::now() - std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double, std::milli>(sent->paused_ms));
  progress.phase("waiting for the destination to take the VM");
  auto ready = channel.Receive(tuning.message_timeout);
  Status handed = ready.ok() ? Status::Ok() : ready.status();
  if (handed.ok() && ready->type != MigrationMessageType::kReady) {
    handed = Status::Error(ready->type == MigrationMessageType::kRefuse
                               ? "the destination refused it: " + Text(ready->payload)
                               : fmt::format("'{}' where 'ready' belongs",
                                             hv::MigrationMessageTypeName(ready->type)));
  }
  if (handed.ok()) handed = channel.Send(MigrationMessageType::kCommit, {});
  if (!handed.ok()) {
    (void)channel.Send(MigrationMessageType::kAbort, {}, std::chrono::milliseconds(500));
    if (was_running) {
      if (Status s = e.vm->Resume(); !s.ok()) spdlog::error("vm {}: {}", name, s.message());
    }
    return fail(handed.message());
  }
  // Committed. The source lets the VM go once the destination says it runs it; without that
  // word it cannot tell whether the commit arrived, so the VM stays paused here, neither lost
  // (if the destination dropped it) nor running twice (if the destination runs it).
  auto resumed = channel.Receive(tuning.message_timeout);
  if (!resumed.ok() || resumed->type != MigrationMessageType::kResumed) {
    const std::string why =
        resumed.ok() ? hv::MigrationMessageTypeName(resumed->type) : resumed.message();
    spdlog::error("vm {}: committed to {} but no word that it runs there: {}", name, destination,
                  why);
    return Status::Error(fmt::format(
        "vm '{}': the outcome of the migration to {} is unknown: the destination was told to "
        "resume the VM and did not confirm ({}). The VM stays paused here: if it runs on {}, "
        "destroy it here; if not, resume it here",
        name, destination, why, destination));
  }
  json result = ResultJson(*sent);
  result["destination"] = destination;
  if (!base_note.empty()) result["base"] = base_note;
  result["total_ms"] = MsSince(started);
  result["downtime_ms"] = MsSince(paused_at);
  e.vm->HandOverSerialLine();
  // A VM of the configuration keeps its entry and ports, marked as gone there, so that it
  // finds them again if it comes back.
  if (e.configured) {
    Detach(e);
    (void)e.vm->Destroy();
    std::lock_guard lock(mu_);
    e.vm.reset();
    e.migrated_to = destination;
  } else {
    guard.Release();
    Remove(&e);
  }
  spdlog::info("vm {}: migrated to {} ({} rounds, {} bytes)", name, destination, sent->rounds,
               sent->bytes_sent);
  return result;
}

Result<VmManager::Incoming> VmManager::AcceptOffer(const json& offer,
                                                    const IncomingPolicy& policy) {
  Incoming in;
  hv::VmOptions options;
  std::vector<vswitch::PortJoin> joins;
  const config::Config config = ConfigCopy();
  try {
    if (offer.at("version").get<uint32_t>() != kOfferVersion) {
      return Status::Error(fmt::format("offer version {}; this box reads version {}",
                                       offer.at("version").get<uint32_t>(), kOfferVersion));
    }
    in.name = offer.at("vm").get<std::string>();
    in.running = offer.at("running").get<bool>();
    auto parsed = hv::VmOptionsFromJsonText(offer.at("options").dump());
    if (!parsed.ok()) return parsed.status();
    options = std::move(parsed).value();
    // The offer names each NIC's class; this box's attachment gives the class's queue here.
    json attachment = {{"nics", json::array()}};
    for (const json& nic : offer.at("nics")) {
      json with_queue = nic;
      const std::string cls = nic.at("class").get<std::string>();
      int queue = -1;
      if (!cls.empty()) {
        const config::TrafficClass* c = FindClass(config, cls);
        if (c == nullptr) {
          return Status::Error(fmt::format("class '{}' of its NIC does not exist here", cls));
        }
        queue = static_cast<int>(c->queue);
        in.demand.classes.push_back(cls);
      }
      with_queue.erase("class");
      with_queue["queue"] = queue;
      attachment["nics"].push_back(std::move(with_queue));
    }
    auto parsed_joins = ParseAttachment(attachment.dump());
    if (!parsed_joins.ok()) return parsed_joins.status();
    joins = std::move(parsed_joins).value();
  } catch (const json::exception& e) {
    return Status::Error(fmt::format("unreadable offer: {}", e.what()));
  }
  if (offer.contains("base_image")) OpenBase(offer["base_image"], in);
  auto returning = ClaimReturning(in.name);
  if (!returning.ok()) return returning.status();
  in.returning = *returning;
  Status fits = FitIncoming(in, options, joins, config, policy);
  if (!fits.ok()) {
    ReleaseReturning(in.returning);
    return fits;
  }
  return in;
}

// The offered base image, if this box holds a good copy; else why not (the VM then comes whole).
void VmManager::OpenBase(const json& base, Incoming& in) {
  auto info = ParseImageInfo(base);
  auto image = info.ok() ? images_.OpenVerified(info->id, info->size, info->sha256)
                         : Result<std::shared_ptr<const hv::FrozenImage>>(info.status());
  if (image.ok()) {
    in.base = *image;
  } else {
    in.no_base = image.message();
    spdlog::warn("vm {}: migrating in whole: {}", in.name, in.no_base);
  }
}

Status VmManager::FitIncoming(Incoming& in, hv::VmOptions options,
                              const std::vector<vswitch::PortJoin>& joins,
                              const config::Config& config, const IncomingPolicy& policy) {
  for (const vswitch::PortJoin& j : joins) {
    if (std::none_of(config.bridges.begin(), config.bridges.end(),
                     [&](const config::Bridge& b) { return b.name == j.bridge; })) {
      return Status::Error(fmt::format("bridge '{}' of its NIC does not exist here", j.bridge));
    }
  }
  if (joins.size() != options.nics.size()) {
    return Status::Error(fmt::format("the offer attaches {} NICs of a VM with {}", joins.size(),
                                     options.nics.size()));
  }
  in.demand.vcpus = options.vcpus;
  in.demand.memory_bytes = options.memory_bytes;
  in.demand.disk_bytes = options.disk ? options.disk->size_bytes : 0;
  if (policy.admit) {
    if (Status s = policy.admit(in.demand); !s.ok()) return s;
  }
  options.serial_log = log_dir_ + "/" + in.name + ".serial.log";
  options.prefault_memory = false;
  if (Status s = PlaceIncomingDisk(in, options); !s.ok()) return s;
  auto vm = hv::Vm::CreateIncoming(options, in.base);
  if (!vm.ok()) {
    RemoveDiskFiles(in.disk_path);
    return vm.status();
  }
  in.vm = std::move(vm).value();
  in.vm->set_attachment(AttachmentJson(joins).dump());
  return Status::Ok();
}

// A VM coming home writes over its configured disk, emptied first: the blocks that hold data
// arrive, the rest must read as zeros. Any other gets a new file next to its serial log.
Status VmManager::PlaceIncomingDisk(Incoming& in, hv::VmOptions& options) {
  if (!options.disk) return Status::Ok();
  if (in.returning != nullptr && in.returning->options.disk) {
    options.disk->path = in.returning->options.disk->path;
    options.serial_log = in.returning->serial_log;
    if (::truncate(options.disk->path.c_str(), 0) != 0 && errno != ENOENT) {
      return Status::Error(fmt::format("emptying its disk {}: {}", options.disk->path,
                                       std::strerror(errno)));
    }
    return Status::Ok();
  }
  in.disk_path = log_dir_ + "/" + in.name + ".vflash";
  if (::access(in.disk_path.c_str(), F_OK) == 0) {
    return Status::Error(fmt::format("its disk would go to {}, which exists already", in.disk_path));
  }
  // A mark that the file is unfinished until the source commits: a box killed meanwhile
  // removes it when it starts again (RemoveUnfinishedIncoming).
  const std::string mark = in.disk_path + kUnfinishedSuffix;
  const int fd = ::open(mark.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return Status::Error(fmt::format("{}: {}", mark, std::strerror(errno)));
  ::close(fd);
  options.disk->path = in.disk_path;
  return Status::Ok();
}

void VmManager::RemoveUnfinishedIncoming() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(log_dir_, ec)) {
    const std::string path = entry.path().string();
    if (!path.ends_with(kUnfinishedSuffix)) continue;
    const std::string disk = path.substr(0, path.size() - std::strlen(kUnfinishedSuffix));
    spdlog::warn("migration: removing {}, left by a migration that never finished", disk);
    RemoveDiskFiles(disk);
  }
}

Status VmManager::CompleteIncoming(Incoming& in, hv::MigrationChannel& channel,
                                   const IncomingPolicy& policy) {
  json accepted = json::object();
  if (in.base) accepted["base"] = "present";
  if (!in.no_base.empty()) accepted["no_base"] = in.no_base;
  if (Status s = channel.Send(MigrationMessageType::kAccept, Bytes(accepted.dump())); !s.ok()) {
    return s;
  }
  if (Status s = hv::ReceiveVm(*in.vm, channel, policy.message_timeout, nullptr); !s.ok()) {
    return s;
  }
  const std::vector<std::array<uint8_t, 6>> macs = [&] {
    std::vector<std::array<uint8_t, 6>> out;
    for (const auto& nic : in.vm->options().nics) out.push_back(nic.mac);
    return out;
  }();
  auto taken = TakeIncoming(in);
  if (!taken.ok()) return taken.status();
  Entry* e = *taken;
  Status done = channel.Send(MigrationMessageType::kReady, {});
  if (done.ok()) {
    auto commit = channel.Receive(policy.message_timeout);
    if (!commit.ok()) {
      done = Status::Error("no commit from the source: " + commit.message());
    } else if (commit->type != MigrationMessageType::kCommit) {
      done = Status::Error(fmt::format("'{}' where the source's commit belongs",
                                       hv::MigrationMessageTypeName(commit->type)));
    }
  }
  if (done.ok() && in.running) done = e->vm->Resume();
  if (!done.ok()) {
    DropIncoming(e);
    return done;
  }
  {
    std::lock_guard lock(mu_);
    e->busy.clear();
    e->migrated_to.clear();
  }
  if (!in.disk_path.empty()) (void)::unlink((in.disk_path + kUnfinishedSuffix).c_str());
  (void)channel.Send(MigrationMessageType::kResumed, {});
  for (int round = 0; round < kAnnouncements; ++round) {
    for (size_t i = 0; i < e->ports.size() && i < macs.size(); ++i) {
      if (Status s = e->ports[i]->Announce(RarpAnnouncement(macs[i])); !s.ok()) {
        spdlog::warn("vm {}: {}", in.name, s.message());
      }
    }
    std::this_thread::sleep_for(kAnnounceGap * (round + 1));
  }
  return Status::Ok();
}

Result<VmManager::Entry*> VmManager::TakeIncoming(Incoming& in) {
  if (in.returning == nullptr) {
    return Adopt(std::move(in.vm), "", BoxOwner(), in.demand, kIncomingMigration);
  }
  Entry* e = in.returning;
  {
    std::lock_guard lock(mu_);
    e->vm = std::move(in.vm);
  }
  Attach(*e);
  return e;
}

void VmManager::DropIncoming(Entry* e) {
  if (!e->configured || e->migrated_to.empty()) {
    Remove(e);
    return;
  }
  Detach(*e);
  (void)e->vm->Destroy();
  std::lock_guard lock(mu_);
  e->vm.reset();
  e->busy.clear();
}

Result<std::string> VmManager::ServeIncoming(hv::MigrationChannel& channel,
                                             const IncomingPolicy& policy) {
  auto refuse = [&](const std::string& why) {
    (void)channel.Send(MigrationMessageType::kRefuse, Bytes(why), std::chrono::milliseconds(500));
    DrainUntilClosed(channel.fd());
    return Status::Error(why);
  };
  auto message = channel.Receive(policy.message_timeout);
  if (!message.ok()) return Status::Error("waiting for an offer: " + message.message());
  if (message->type != MigrationMessageType::kOffer) {
    return refuse(fmt::format("'{}' where an offer belongs",
                              hv::MigrationMessageTypeName(message->type)));
  }
  json offer;
  try {
    offer = json::parse(Text(message->payload));
  } catch (const json::exception& e) {
    return refuse(fmt::format("unreadable offer: {}", e.what()));
  }
  if (offer.is_object() && offer.value("kind", "vm") != "vm") {
    return ServeImage(offer, channel, policy);
  }
  auto in = AcceptOffer(offer, policy);
  if (!in.ok()) return refuse(in.message());
  const std::string name = in->name;
  const std::string disk_path = in->disk_path;
  Status done = CompleteIncoming(*in, channel, policy);
  if (!done.ok()) {
    if (in->vm) {  // not taken into the list yet (once taken, DropIncoming cleaned up)
      (void)in->vm->Destroy();
      ReleaseReturning(in->returning);
    }
    RemoveDiskFiles(disk_path);
    return refuse(fmt::format("vm '{}': {}", name, done.message()));
  }
  spdlog::info("vm {}: migrated in", name);
  return name;
}

void VmManager::RemoveDiskFiles(const std::string& path) {
  if (path.empty()) return;
  (void)::unlink(path.c_str());
  (void)::unlink(hv::VirtioBlk::MetadataPath(path).c_str());
  (void)::unlink((path + kUnfinishedSuffix).c_str());
}

}  // namespace qosvisor::control
