#include "control/image_store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "hv/image_transfer.h"

namespace qosvisor::control {
namespace {

using json = nlohmann::json;
using hv::MigrationMessageType;

std::vector<uint8_t> Bytes(const std::string& text) { return {text.begin(), text.end()}; }

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out) return Status::Error(fmt::format("writing {}", tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::Error(fmt::format("{}: {}", path, std::strerror(errno)));
  }
  return Status::Ok();
}

}  // namespace

json ImageInfoJson(const ImageInfo& info) {
  return json{{"id", info.id},         {"size", info.size},     {"sha256", info.sha256},
              {"parent", info.parent}, {"source", info.source}, {"received_unix_ms",
                                                                 info.received_unix_ms}};
}

Result<ImageInfo> ParseImageInfo(const json& j) {
  ImageInfo info;
  try {
    info.id = j.at("id").get<std::string>();
    info.size = j.at("size").get<uint64_t>();
    info.sha256 = j.at("sha256").get<std::string>();
    info.parent = j.value("parent", "");
    info.source = j.value("source", "");
    info.received_unix_ms = j.value("received_unix_ms", int64_t{0});
  } catch (const json::exception& e) {
    return Status::Error(fmt::format("image description: {}", e.what()));
  }
  if (!hv::ValidImageId(info.id)) {
    return Status::Error(fmt::format("image id '{}' is not 16 hex digits", info.id));
  }
  if (info.size == 0 || info.size % 4096 != 0) {
    return Status::Error(fmt::format("image size {} is not a positive multiple of 4 KiB",
                                     info.size));
  }
  if (info.sha256.size() != 64 || info.sha256.find_first_not_of("0123456789abcdef") !=
                                      std::string::npos) {
    return Status::Error("image sha256 is not 64 hex digits");
  }
  return info;
}

Result<ImageInfo> ImageStore::ReadInfo(const std::string& id) const {
  if (!hv::ValidImageId(id)) {
    return Status::Error(fmt::format("'{}' is not an image id (16 hex digits)", id));
  }
  std::ifstream in(InfoPath(id));
  if (!in) return Status::Error(fmt::format("image {} is not here", id));
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded()) return Status::Error(fmt::format("image {}: its record is unreadable", id));
  return ParseImageInfo(j);
}

Status ImageStore::Verify(const ImageInfo& info) const {
  const int fd = ::open(ImagePath(info.id).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Status::Error(fmt::format("image {} is missing: {}", info.id, std::strerror(errno)));
  }
  struct stat st {};
  ::fstat(fd, &st);
  auto sum = static_cast<uint64_t>(st.st_size) == info.size
                 ? hv::ImageChecksum(fd, info.size)
                 : Result<std::string>(Status::Error(fmt::format(
                       "image {} holds {} bytes, not {}", info.id, st.st_size, info.size)));
  ::close(fd);
  if (!sum) return sum.status();
  if (*sum != info.sha256) {
    return Status::Error(fmt::format("image {} fails its checksum (sha256 {}, expected {})",
                                     info.id, sum->substr(0, 12), info.sha256.substr(0, 12)));
  }
  return Status::Ok();
}

Status ImageStore::Receive(const ImageInfo& offered, hv::MigrationChannel& channel,
                           std::chrono::milliseconds message_timeout) {
  auto refuse = [&](const std::string& why) {
    (void)channel.Send(MigrationMessageType::kRefuse, Bytes(why), std::chrono::milliseconds(500));
    return Status::Error(why);
  };
  if (auto have = ReadInfo(offered.id); have.ok() && have->sha256 == offered.sha256 &&
                                        have->size == offered.size && Verify(*have).ok()) {
    return channel.Send(MigrationMessageType::kAccept, Bytes(R"({"have":true})"));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  const std::string part = ImagePath(offered.id) + ".part";
  const int fd = ::open(part.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(offered.size)) != 0) {
    const std::string why = fmt::format("image {}: {}: {}", offered.id, part, std::strerror(errno));
    if (fd >= 0) ::close(fd);
    ::unlink(part.c_str());
    return refuse(why);
  }
  Status got = channel.Send(MigrationMessageType::kAccept, Bytes(R"({"have":false})"));
  if (got) got = hv::ReceiveImage(channel, fd, offered.size, message_timeout);
  auto sum = got ? hv::ImageChecksum(fd, offered.size) : Result<std::string>(got);
  if (sum.ok() && ::fsync(fd) != 0) sum = Status::Error(std::strerror(errno));
  ::close(fd);
  if (sum.ok() && *sum != offered.sha256) {
    sum = Status::Error(fmt::format("image {} arrived with sha256 {}, the source's is {}",
                                    offered.id, sum->substr(0, 12), offered.sha256.substr(0, 12)));
  }
  ImageInfo info = offered;
  info.received_unix_ms = NowUnixMs();
  Status kept = sum.ok() ? WriteFileAtomically(InfoPath(info.id), ImageInfoJson(info).dump())
                         : sum.status();
  if (kept && ::rename(part.c_str(), ImagePath(info.id).c_str()) != 0) {
    kept = Status::Error(fmt::format("{}: {}", ImagePath(info.id), std::strerror(errno)));
  }
  if (!kept) {
    ::unlink(part.c_str());
    ::unlink(InfoPath(info.id).c_str());
    return refuse(kept.message());
  }
  {
    std::lock_guard lock(mu_);
    drop_when_unused_.erase(info.id);
  }
  spdlog::info("image {} (parent {} on {}): pre-migrated here, {} bytes", info.id, info.parent,
               info.source, info.size);
  return channel.Send(MigrationMessageType::kReady, {});
}

Result<std::shared_ptr<const hv::FrozenImage>> ImageStore::OpenVerified(
    const std::string& id, uint64_t size, const std::string& sha256) {
  auto info = ReadInfo(id);
  if (!info.ok()) return info.status();
  if (info->size != size || info->sha256 != sha256) {
    return Status::Error(fmt::format("image {} here is stale: another size or checksum than the "
                                     "source's",
                                     id));
  }
  // Checked at every use, even while another VM here maps it: the file is what a new child
  // will read, and a copy damaged since the last check must not become its memory.
  if (Status s = Verify(*info); !s) return s;
  std::lock_guard lock(mu_);
  if (auto open = open_[id].lock()) return open;
  auto image = std::make_shared<hv::FrozenImage>();
  image->fd = hv::UniqueFd(::open(ImagePath(id).c_str(), O_RDONLY | O_CLOEXEC));
  if (!image->fd.valid()) {
    return Status::Error(fmt::format("image {}: {}", id, std::strerror(errno)));
  }
  image->size = size;
  image->id = id;
  open_[id] = image;
  return std::shared_ptr<const hv::FrozenImage>(image);
}

bool ImageStore::InUseLocked(const std::string& id) {
  auto it = open_.find(id);
  if (it == open_.end()) return false;
  if (it->second.expired()) {
    open_.erase(it);
    return false;
  }
  return true;
}

void ImageStore::DeleteFiles(const std::string& id) const {
  ::unlink(ImagePath(id).c_str());
  ::unlink(InfoPath(id).c_str());
}

Result<std::string> ImageStore::Remove(const std::string& id) {
  if (auto info = ReadInfo(id); !info.ok()) return info.status();
  std::lock_guard lock(mu_);
  if (InUseLocked(id)) {
    drop_when_unused_.insert(id);
    return fmt::format("image {}: a VM here uses it; it goes when that VM is gone", id);
  }
  DeleteFiles(id);
  spdlog::info("image {}: removed", id);
  return fmt::format("image {}: removed", id);
}

void ImageStore::Sweep() {
  std::lock_guard lock(mu_);
  for (auto it = drop_when_unused_.begin(); it != drop_when_unused_.end();) {
    if (InUseLocked(*it)) {
      ++it;
      continue;
    }
    DeleteFiles(*it);
    spdlog::info("image {}: removed, its last VM here is gone", *it);
    it = drop_when_unused_.erase(it);
  }
}

json ImageStore::ListJson() {
  Sweep();
  json out = json::array();
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(".json")) continue;
    auto info = ReadInfo(name.substr(0, name.size() - 5));
    if (!info.ok()) continue;
    json row = ImageInfoJson(*info);
    struct stat st {};
    if (::stat(ImagePath(info->id).c_str(), &st) == 0) {
      row["bytes_on_disk"] = static_cast<uint64_t>(st.st_blocks) * 512;
    }
    std::lock_guard lock(mu_);
    row["in_use"] = InUseLocked(info->id);
    row["removal_pending"] = drop_when_unused_.count(info->id) != 0;
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace qosvisor::control
