// Pre-migration, as the VM list sees it: a fork family's frozen image copied ahead to other
// hosts (source side), kept there in the ImageStore (destination side), used as the base of a
// child that migrates later, and dropped when the family has no member left here.
//
// The exchange after the channel is authenticated:
//   source: offer {"kind": "image", id, size, sha256, parent, source}
//   dest:   accept {"have": true}                      (a verified copy is there: done)
//         | accept {"have": false}, then source: pages ..., complete; dest: ready | refuse
//   source: offer {"kind": "drop-image", id}   dest: accept {"result": "..."}
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "control/vm_manager.h"
#include "hv/image_transfer.h"

namespace qosvisor::control {
namespace {

using json = nlohmann::json;
using hv::MigrationMessageType;

std::vector<uint8_t> Bytes(const std::string& text) { return {text.begin(), text.end()}; }
std::string Text(const std::vector<uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }

// The answer to an offer: kAccept's JSON, or an error with the refusal's reason.
Result<json> AnswerTo(hv::MigrationChannel& channel, std::chrono::milliseconds timeout) {
  auto answer = channel.Receive(timeout);
  if (!answer.ok()) return Status::Error("no answer: " + answer.message());
  if (answer->type == MigrationMessageType::kRefuse) {
    return Status::Error("refused: " + Text(answer->payload));
  }
  if (answer->type != MigrationMessageType::kAccept) {
    return Status::Error(fmt::format("'{}' where an answer belongs",
                                     hv::MigrationMessageTypeName(answer->type)));
  }
  json j = json::parse(Text(answer->payload), nullptr, false);
  return j.is_object() ? j : json::object();
}

}  // namespace

Result<VmManager::FamilyImage> VmManager::FamilyImageOf(const std::string& name) {
  std::shared_ptr<const hv::FrozenImage> image;
  {
    std::lock_guard lock(mu_);
    Entry* e = FindLocked(name);
    if (e == nullptr) return Status::Error(fmt::format("no vm named '{}'", name));
    if (e->vm) image = e->vm->base_image();
    if (!image) image = e->suspended_base;
  }
  if (!image) {
    return Status::Error(fmt::format("vm '{}' shares no frozen image: fork it first (pre-migration "
                                     "copies the image a parent and its children share)",
                                     name));
  }
  std::string sum;
  {
    std::lock_guard lock(mu_);
    if (auto it = premigrated_.find(image->id); it != premigrated_.end()) sum = it->second.sha256;
  }
  if (sum.empty()) {
    // Hashing the image takes a while; never under the lock.
    auto computed = hv::ImageChecksum(image->fd.get(), image->size);
    if (!computed.ok()) return computed.status();
    sum = *computed;
  }
  return FamilyImage{image, sum};
}

Result<json> VmManager::Premigrate(const std::string& name, hv::MigrationChannel& channel,
                                   const std::string& host, const std::string& this_host,
                                   uint64_t bandwidth_bps,
                                   std::chrono::milliseconds message_timeout,
                                   const OperationProgress& progress) {
  auto family = FamilyImageOf(name);
  if (!family.ok()) return family.status();
  const hv::FrozenImage& image = *family->image;
  ImageInfo info{image.id, image.size, family->sha256, name, this_host, 0};
  json offer = ImageInfoJson(info);
  offer["kind"] = "image";
  progress.phase(fmt::format("offering image {} to {}", image.id, host));
  if (Status s = channel.Send(MigrationMessageType::kOffer, Bytes(offer.dump())); !s.ok()) {
    return s;
  }
  auto answer = AnswerTo(channel, message_timeout);
  if (!answer.ok()) return Status::Error(fmt::format("{}: {}", host, answer.message()));
  json result = {{"image", image.id}, {"host", host}, {"size", image.size}, {"vm", name}};
  if (answer->value("have", false)) {
    result["sent_bytes"] = 0;
    result["note"] = "the host holds a verified copy already";
  } else {
    progress.phase(fmt::format("copying image {} to {}", image.id, host));
    auto sent = hv::SendImage(image.fd.get(), image.size, channel, bandwidth_bps,
                              message_timeout, [&](uint64_t bytes) { progress.bytes(bytes, 0); });
    if (!sent.ok()) return Status::Error(fmt::format("{}: {}", host, sent.message()));
    auto done = channel.Receive(message_timeout);
    if (!done.ok()) return Status::Error(fmt::format("{}: no answer: {}", host, done.message()));
    if (done->type != MigrationMessageType::kReady) {
      return Status::Error(fmt::format("{} did not keep the image: {}", host, Text(done->payload)));
    }
    result["sent_bytes"] = sent->bytes_sent;
    result["pages"] = sent->pages_sent;
  }
  std::lock_guard lock(mu_);
  Premigrated& p = premigrated_[image.id];
  p.sha256 = family->sha256;
  p.parent = name;
  p.hosts.insert(host);
  return result;
}

Result<json> VmManager::DropPremigrated(const std::string& id, hv::MigrationChannel& channel,
                                        const std::string& host,
                                        std::chrono::milliseconds message_timeout) {
  const json offer = {{"kind", "drop-image"}, {"id", id}};
  if (Status s = channel.Send(MigrationMessageType::kOffer, Bytes(offer.dump())); !s.ok()) {
    return s;
  }
  auto answer = AnswerTo(channel, message_timeout);
  if (!answer.ok()) return Status::Error(fmt::format("{}: {}", host, answer.message()));
  {
    std::lock_guard lock(mu_);
    if (auto it = premigrated_.find(id); it != premigrated_.end()) {
      it->second.hosts.erase(host);
      if (it->second.hosts.empty()) premigrated_.erase(it);
    }
  }
  return json{{"image", id}, {"host", host}, {"result", answer->value("result", "")}};
}

std::vector<std::pair<std::string, std::vector<std::string>>>
VmManager::UnusedPremigrations() {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  for (auto& [id, p] : premigrated_) {
    if (p.dropping || ImageUsedLocked(id)) continue;
    p.dropping = true;  // asked once; DropPremigrated forgets it host by host
    out.emplace_back(id, std::vector<std::string>(p.hosts.begin(), p.hosts.end()));
  }
  return out;
}

bool VmManager::ImageUsedLocked(const std::string& id) {
  for (const Entry& e : vms_) {
    const auto base = e.vm ? e.vm->base_image() : e.suspended_base;
    if (base && base->id == id) return true;
  }
  return false;
}

std::optional<json> VmManager::BaseOfferFor(const Entry& e) {
  const auto base = e.vm->base_image();
  if (!base) return std::nullopt;
  std::lock_guard lock(mu_);
  auto it = premigrated_.find(base->id);
  if (it == premigrated_.end()) return std::nullopt;  // sent nowhere: nothing to look for
  return json{{"id", base->id}, {"size", base->size}, {"sha256", it->second.sha256}};
}

Result<std::string> VmManager::ServeImage(const json& offer, hv::MigrationChannel& channel,
                                          const IncomingPolicy& policy) {
  const std::string kind = offer.value("kind", "");
  if (kind == "drop-image") {
    const std::string id = offer.value("id", "");
    auto removed = images_.Remove(id);
    const std::string text = removed.ok() ? *removed : removed.message();
    (void)channel.Send(MigrationMessageType::kAccept, Bytes(json{{"result", text}}.dump()));
    return "image " + id;
  }
  auto info = ParseImageInfo(offer);
  if (!info.ok()) {
    (void)channel.Send(MigrationMessageType::kRefuse, Bytes(info.message()));
    return info.status();
  }
  if (Status s = images_.Receive(*info, channel, policy.message_timeout); !s.ok()) return s;
  return "image " + info->id;
}

json VmManager::ImagesJson() {
  json sent = json::array();
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, p] : premigrated_) {
      sent.push_back({{"id", id},
                      {"parent", p.parent},
                      {"hosts", std::vector<std::string>(p.hosts.begin(), p.hosts.end())},
                      {"in_use", ImageUsedLocked(id)}});
    }
  }
  return json{{"held", images_.ListJson()}, {"sent", std::move(sent)}};
}

Result<std::string> VmManager::ImageIdOf(const std::string& name) {
  std::lock_guard lock(mu_);
  Entry* e = FindLocked(name);
  if (e == nullptr) return Status::Error(fmt::format("no vm named '{}'", name));
  auto image = e->vm ? e->vm->base_image() : e->suspended_base;
  if (!image) return Status::Error(fmt::format("vm '{}' shares no frozen image", name));
  return image->id;
}

Result<std::string> VmManager::RemoveImage(const std::string& id) { return images_.Remove(id); }

}  // namespace qosvisor::control
