// Snapshot, restore and fork: capturing a paused VM's state into sections, writing them with its
// memory, and building new VMs from them. Device state is register and ring-index state only:
// once the VM is paused its devices are quiesced (no request is in flight and the data plane
// does not touch guest memory), so the rings in guest memory plus the indexes are the whole of
// every queue's progress.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/mac_address.h"
#include "hv/boot_abi.h"
#include "hv/vcpu_state.h"
#include "hv/vm.h"

namespace qosvisor::hv {
namespace {

using json = nlohmann::json;

std::vector<uint8_t> JsonBytes(const json& j) {
  std::string text = j.dump(2);
  return {text.begin(), text.end()};
}

json OptionsJson(const VmOptions& o) {
  json j = {{"name", o.name},
            {"vcpus", o.vcpus},
            {"memory_bytes", o.memory_bytes},
            {"image", o.image},
            {"initrd", o.initrd},
            {"boot", o.boot == BootProtocol::kPvh ? "pvh" : "auto"},
            {"cmdline", o.cmdline},
            {"serial_log_max_bytes", o.serial_log_max_bytes},
            {"shutdown_timeout_ms", o.shutdown_timeout.count()},
            {"nics", json::array()}};
  for (const auto& nic : o.nics) j["nics"].push_back({{"mac", FormatMac(nic.mac.data())}});
  if (o.disk) {
    j["disk"] = {{"path", o.disk->path},
                 {"size_bytes", o.disk->size_bytes},
                 {"id", o.disk->id},
                 {"max_size_bytes", o.disk->max_size_bytes}};
  }
  return j;
}

// The parts of the config section Restore needs, checked field by field.
struct SavedConfig {
  VmOptions options;
  std::string attachment;
  std::string base_image_id;  // diff snapshots
};

// Throws json::exception on a missing or mistyped field; the caller turns it into an error.
VmOptions OptionsFromJson(const json& o) {
  VmOptions options;
  options.name = o.at("name").get<std::string>();
  options.vcpus = o.at("vcpus").get<uint32_t>();
  options.memory_bytes = o.at("memory_bytes").get<uint64_t>();
  options.image = o.at("image").get<std::string>();
  options.initrd = o.at("initrd").get<std::string>();
  options.boot = o.at("boot").get<std::string>() == "pvh" ? BootProtocol::kPvh : BootProtocol::kAuto;
  options.cmdline = o.at("cmdline").get<std::string>();
  options.serial_log_max_bytes = o.at("serial_log_max_bytes").get<uint64_t>();
  options.shutdown_timeout = std::chrono::milliseconds(o.at("shutdown_timeout_ms").get<int64_t>());
  for (const json& nic : o.at("nics")) {
    VirtioNetOptions n;
    if (!ParseMac(nic.at("mac").get<std::string>(), n.mac.data())) {
      throw std::invalid_argument(fmt::format("bad MAC '{}'", nic.at("mac").get<std::string>()));
    }
    options.nics.push_back(n);
  }
  if (o.contains("disk")) {
    const json& d = o.at("disk");
    options.disk =
        VflashOptions{d.at("path").get<std::string>(), d.at("size_bytes").get<uint64_t>(),
                      d.at("id").get<std::string>(), d.at("max_size_bytes").get<uint64_t>()};
  }
  return options;
}

Result<SavedConfig> ParseConfig(std::span<const uint8_t> payload) {
  SavedConfig c;
  try {
    json j = json::parse(payload.begin(), payload.end());
    c.options = OptionsFromJson(j.at("options"));
    c.attachment = j.at("attachment").get<std::string>();
    c.base_image_id = j.at("base_image").get<std::string>();
  } catch (const std::exception& e) {
    return Status::Error(e.what());
  }
  if (Status s = ValidateVmOptions(c.options); !s) return s;
  return c;
}

const Section* FindSection(const std::vector<Section>& sections, SectionKind kind, uint32_t index) {
  const Section* found = nullptr;
  for (const Section& s : sections) {
    if (s.kind != kind || s.index != index) continue;
    if (found != nullptr) return nullptr;  // twice is as wrong as missing
    found = &s;
  }
  return found;
}

std::string StatePath(const std::string& dir) { return dir + "/" + kSnapshotStateFile; }
std::string MemoryPath(const std::string& dir) { return dir + "/" + kSnapshotMemoryFile; }

Status PrepareDir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::Error(fmt::format("snapshot directory {}: {}", dir, std::strerror(errno)));
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::Error(fmt::format("snapshot directory {}: not a directory", dir));
  }
  if (::stat(StatePath(dir).c_str(), &st) == 0) {
    return Status::Error(fmt::format("{} already holds a snapshot; choose another directory", dir));
  }
  return Status::Ok();
}

}  // namespace

std::string VmOptionsJsonText(const VmOptions& options) { return OptionsJson(options).dump(); }

Result<VmOptions> VmOptionsFromJsonText(std::string_view text) {
  VmOptions options;
  try {
    options = OptionsFromJson(json::parse(text));
  } catch (const std::exception& e) {
    return Status::Error(fmt::format("VM options: {}", e.what()));
  }
  if (Status s = ValidateVmOptions(options); !s) return s;
  return options;
}

Status Vm::PauseForCapture(bool* was_running) {
  VmState s = state();
  if (s != VmState::kRunning && s != VmState::kPaused) {
    return Refuse("capture its state", "running or paused");
  }
  *was_running = s == VmState::kRunning;
  return *was_running ? Pause() : Status::Ok();
}

Result<std::vector<Section>> Vm::CaptureState(bool diff) const {
  std::vector<Section> sections;
  json config = {{"options", OptionsJson(options_)},
                 {"attachment", attachment_},
                 {"generation", generation_},
                 {"base_image", diff && base_image_ ? base_image_->id : ""}};
  sections.push_back({SectionKind::kConfig, 0, JsonBytes(config)});
  auto vm_state = SaveVmKvmState(vm_fd_.get());
  if (!vm_state) return vm_state.status();
  sections.push_back({SectionKind::kVm, 0, std::move(vm_state).value()});
  for (const auto& v : vcpus_) {
    auto st = SaveVcpuState(kvm_, v->fd(), v->index());
    if (!st) return st.status();
    sections.push_back({SectionKind::kVcpu, v->index(), std::move(st).value()});
  }
  sections.push_back({SectionKind::kDevice, 0, serial_->SaveState()});
  for (size_t i = 0; i < virtio_.size(); ++i) {
    sections.push_back(
        {SectionKind::kDevice, static_cast<uint32_t>(i + 1), virtio_[i]->SaveState()});
  }
  return sections;
}

Status Vm::ApplyState(const std::vector<Section>& sections) {
  auto need = [&](SectionKind kind, uint32_t index) -> Result<const Section*> {
    const Section* s = FindSection(sections, kind, index);
    if (s == nullptr) {
      return Status::Error(
          fmt::format("section '{}' is missing or repeated", SectionName(kind, index)));
    }
    return s;
  };
  auto vm_section = need(SectionKind::kVm, 0);
  if (!vm_section) return vm_section.status();
  if (Status s = RestoreVmKvmState(vm_fd_.get(), (*vm_section)->payload); !s) return s;
  for (const auto& v : vcpus_) {
    auto sec = need(SectionKind::kVcpu, v->index());
    if (!sec) return sec.status();
    if (Status s = RestoreVcpuState(v->fd(), v->index(), (*sec)->payload); !s) return s;
  }
  auto serial = need(SectionKind::kDevice, 0);
  if (!serial) return serial.status();
  if (Status s = serial_->LoadState((*serial)->payload); !s) return s;
  for (size_t i = 0; i < virtio_.size(); ++i) {
    auto sec = need(SectionKind::kDevice, static_cast<uint32_t>(i + 1));
    if (!sec) return sec.status();
    const std::string what = fmt::format("device {} ({})", i + 1, virtio_[i]->name());
    if (Status s = virtio_[i]->LoadState((*sec)->payload, what); !s) return s;
  }
  for (const Section& s : sections) {
    bool known = s.kind == SectionKind::kConfig || s.kind == SectionKind::kMemory ||
                 s.kind == SectionKind::kVm ||
                 (s.kind == SectionKind::kVcpu && s.index < vcpus_.size()) ||
                 (s.kind == SectionKind::kDevice && s.index <= virtio_.size());
    if (!known) {
      return Status::Error(
          fmt::format("section '{}' has no counterpart in this VM", SectionName(s.kind, s.index)));
    }
  }
  return Status::Ok();
}

Status Vm::WriteGeneration(uint64_t generation) {
  generation_ = generation;
  // Only where our boot-info page still is: a Linux guest may have reused that low page.
  uint64_t magic = 0;
  if (!memory_.LoadAtomic<uint64_t>(QV_BOOT_INFO_GPA, &magic) || magic != QV_BOOT_INFO_MAGIC) {
    return Status::Ok();
  }
  if (!memory_.StoreAtomic<uint64_t>(QV_BOOT_INFO_GPA + offsetof(qv_boot_info, generation),
                                     generation)) {
    return Status::Error(fmt::format("vm '{}': cannot write its generation id", options_.name));
  }
  return Status::Ok();
}

void Vm::StartPaused() {
  {
    std::lock_guard lock(mu_);
    BeginRunLocked(VcpuCommand::kPause, VmState::kPaused);
  }
  for (auto* d : virtio_) d->SetQuiesced(true);
  for (auto& v : vcpus_) v->StartThread();
  // Paused means no vCPU runs guest code: wait until every thread has parked.
  std::unique_lock lock(mu_);
  const auto n = static_cast<uint32_t>(vcpus_.size());
  cv_.wait(lock, [&] { return paused_vcpus_ + exited_vcpus_ >= n; });
}

Status Vm::Snapshot(const std::string& dir, const SnapshotOptions& options) {
  auto refuse = [&](const std::string& why) {
    return Status::Error(fmt::format("vm '{}': snapshot to {}: {}", options_.name, dir, why));
  };
  if (options.diff_against_base && !base_image()) {
    return refuse("a diff needs a VM made by a fork (it has no base image)");
  }
  if (Status s = PrepareDir(dir); !s) return refuse(s.message());
  bool was_running = false;
  if (Status s = PauseForCapture(&was_running); !s) return s;
  Status result = [&]() -> Status {
    auto sections = CaptureState(options.diff_against_base);
    if (!sections) return sections.status();
    std::vector<uint64_t> changed;
    if (options.diff_against_base) {
      auto pages = memory_.PrivatelyWrittenPages();
      if (!pages) return pages.status();
      changed = std::move(pages).value();
    }
    auto index = WriteMemoryImage(memory_, MemoryPath(dir),
                                  options.diff_against_base ? &changed : nullptr, options.progress);
    if (!index) return index.status();
    sections->push_back({SectionKind::kMemory, 0, EncodeMemoryIndex(*index)});
    return WriteStateFile(StatePath(dir), *sections);
  }();
  if (!result) {
    std::remove(MemoryPath(dir).c_str());
    if (was_running) (void)Resume();
    return refuse(result.message());
  }
  if (options.stop) {
    {
      std::lock_guard lock(mu_);
      state_ = VmState::kStopping;
    }
    ForceStopAndJoin("stopped after its snapshot");
    serial_->Flush();
    for (auto* d : virtio_) {
      d->Reset();
      d->SetQuiesced(false);
    }
    std::lock_guard lock(mu_);
    state_ = VmState::kStopped;
  } else if (was_running) {
    return Resume();
  }
  return Status::Ok();
}

Result<VmOptions> Vm::SnapshotOptionsOf(const std::string& dir) {
  auto sections = ReadStateFile(StatePath(dir));
  if (!sections) return Status::Error(fmt::format("snapshot {}: {}", dir, sections.message()));
  const Section* config_section = FindSection(*sections, SectionKind::kConfig, 0);
  if (config_section == nullptr) {
    return Status::Error(
        fmt::format("snapshot {}: the config section is missing or repeated", dir));
  }
  auto config = ParseConfig(config_section->payload);
  if (!config) return Status::Error(fmt::format("snapshot {}: config: {}", dir, config.message()));
  return config->options;
}

Result<std::unique_ptr<Vm>> Vm::Restore(const std::string& dir, const CloneIdentity& identity,
                                        std::shared_ptr<const FrozenImage> base) {
  auto refuse = [&](const std::string& why) {
    return Status::Error(fmt::format("restore from {}: {}", dir, why));
  };
  auto sections = ReadStateFile(StatePath(dir));
  if (!sections) return refuse(sections.message());
  const Section* config_section = FindSection(*sections, SectionKind::kConfig, 0);
  const Section* memory_section = FindSection(*sections, SectionKind::kMemory, 0);
  if (config_section == nullptr || memory_section == nullptr) {
    return refuse("the config or memory index section is missing or repeated");
  }
  auto config = ParseConfig(config_section->payload);
  if (!config) return refuse("section 'config': " + config.message());
  auto index = DecodeMemoryIndex(memory_section->payload);
  if (!index) return refuse(index.message());
  if (index->memory_bytes != config->options.memory_bytes) {
    return refuse(fmt::format("memory index covers {} bytes, the VM has {}", index->memory_bytes,
                              config->options.memory_bytes));
  }
  const bool diff = !config->base_image_id.empty();
  if (diff && (!base || base->id != config->base_image_id || base->size != index->memory_bytes)) {
    return refuse(fmt::format("this is a diff over frozen image {}, which {}",
                              config->base_image_id,
                              base ? "does not match the image given" : "was not given"));
  }
  if (Status s = VerifyMemoryImage(MemoryPath(dir), *index); !s) return refuse(s.message());

  VmOptions options = config->options;
  if (!identity.name.empty()) options.name = identity.name;
  options.serial_log = identity.serial_log;
  if (!identity.macs.empty()) {
    if (identity.macs.size() != options.nics.size()) {
      return refuse(fmt::format("{} MACs given for a VM with {} NICs", identity.macs.size(),
                                options.nics.size()));
    }
    for (size_t i = 0; i < options.nics.size(); ++i) options.nics[i].mac = identity.macs[i];
  }
  auto vm = CreateVm(options, Origin::kCopyOnWrite);
  if (!vm) return vm.status();
  Vm& v = **vm;
  Status mapped = [&]() -> Status {
    if (diff) {
      UniqueFd fd(::fcntl(base->fd.get(), F_DUPFD_CLOEXEC, 0));
      if (Status s = v.MapMemoryPrivate(std::move(fd)); !s) return s;
      v.base_image_ = base;
      return ApplyMemoryImage(MemoryPath(dir), *index, v.memory_);
    }
    UniqueFd fd(::open(MemoryPath(dir).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
      return Status::Error(fmt::format("open {}: {}", MemoryPath(dir), std::strerror(errno)));
    }
    return v.MapMemoryPrivate(std::move(fd));
  }();
  if (!mapped) return refuse(mapped.message());
  if (Status s = v.ApplyState(*sections); !s) return refuse(s.message());
  v.attachment_ = config->attachment;
  if (Status s = v.WriteGeneration(RandomNonZero64()); !s) return s;
  v.StartPaused();
  return vm;
}

Result<std::vector<std::unique_ptr<Vm>>> Vm::Fork(const std::vector<CloneIdentity>& children) {
  if (children.empty()) return Status::Error(fmt::format("vm '{}': fork of no children", name()));
  bool was_running = false;
  if (Status s = PauseForCapture(&was_running); !s) return s;
  std::vector<std::unique_ptr<Vm>> made;
  Status result = [&]() -> Status {
    auto sections = CaptureState(false);
    if (!sections) return sections.status();
    auto image = FreezeMemory();
    if (!image) return image.status();
    for (const CloneIdentity& id : children) {
      VmOptions o = options_;
      o.name = id.name;
      o.serial_log = id.serial_log;
      o.prefault_memory = false;
      if (!id.macs.empty()) {
        if (id.macs.size() != o.nics.size()) {
          return Status::Error(fmt::format("child '{}': {} MACs for {} NICs", id.name,
                                           id.macs.size(), o.nics.size()));
        }
        for (size_t i = 0; i < o.nics.size(); ++i) o.nics[i].mac = id.macs[i];
      }
      auto child = CreateVm(o, Origin::kCopyOnWrite);
      if (!child) return child.status();
      Vm& c = **child;
      UniqueFd fd(::fcntl((*image)->fd.get(), F_DUPFD_CLOEXEC, 0));
      if (Status s = c.MapMemoryPrivate(std::move(fd)); !s) return s;
      c.base_image_ = *image;
      if (Status s = c.ApplyState(*sections); !s) return s;
      c.attachment_ = attachment_;
      if (Status s = c.WriteGeneration(RandomNonZero64()); !s) return s;
      c.StartPaused();
      made.push_back(std::move(child).value());
    }
    return Status::Ok();
  }();
  if (was_running) (void)Resume();
  if (!result) {
    return Status::Error(fmt::format("vm '{}': fork: {}", name(), result.message()));
  }
  return made;
}

Result<std::unique_ptr<Vm>> Vm::CreateIncoming(const VmOptions& options,
                                               std::shared_ptr<const FrozenImage> base) {
  if (!base) return CreateVm(options, Origin::kIncoming);
  if (base->size != options.memory_bytes) {
    return Status::Error(fmt::format("vm '{}': its base image holds {} bytes, the VM {}",
                                     options.name, base->size, options.memory_bytes));
  }
  auto vm = CreateVm(options, Origin::kCopyOnWrite);
  if (!vm) return vm.status();
  UniqueFd fd(::fcntl(base->fd.get(), F_DUPFD_CLOEXEC, 0));
  if (Status s = (*vm)->MapMemoryPrivate(std::move(fd)); !s) return s;
  (*vm)->base_image_ = std::move(base);
  return vm;
}

Result<std::vector<Section>> Vm::CaptureMigrationState() const {
  if (state() != VmState::kPaused) {
    return Status::Error(fmt::format("vm '{}': its state is captured only while paused", name()));
  }
  return CaptureState(/*diff=*/false);
}

Status Vm::ApplyIncomingState(const std::vector<Section>& sections) {
  const Section* config_section = FindSection(sections, SectionKind::kConfig, 0);
  if (config_section == nullptr) {
    return Status::Error("section 'config' is missing or repeated");
  }
  auto config = ParseConfig(config_section->payload);
  if (!config) return Status::Error("section 'config': " + config.message());
  const VmOptions& sent = config->options;
  if (sent.vcpus != options_.vcpus || sent.memory_bytes != options_.memory_bytes ||
      sent.nics.size() != options_.nics.size() || sent.disk.has_value() != options_.disk.has_value()) {
    return Status::Error(fmt::format(
        "section 'config' describes {} vCPUs, {} bytes, {} NICs, {} disk; the VM made from the "
        "offer has {}, {}, {}, {}",
        sent.vcpus, sent.memory_bytes, sent.nics.size(), sent.disk ? "a" : "no", options_.vcpus,
        options_.memory_bytes, options_.nics.size(), options_.disk ? "a" : "no"));
  }
  if (Status s = ApplyState(sections); !s) return s;
  try {
    json j = json::parse(config_section->payload.begin(), config_section->payload.end());
    generation_ = j.value("generation", uint64_t{0});
  } catch (const json::exception& e) {
    return Status::Error(std::string("section 'config': ") + e.what());
  }
  StartPaused();
  return Status::Ok();
}

}  // namespace qosvisor::hv
