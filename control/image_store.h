// Frozen images pre-migrated to this box: a fork parent's memory, copied here ahead of its
// children so that a child migrating here later sends only the pages it wrote itself. Each is
// kept on host flash as <dir>/<id>.img (sparse: holes read as zeros) with <id>.json (size,
// checksum, parent, source host, arrival), until the source asks for it to go (its last child
// there is gone, or on request) or someone removes it here; while a VM here uses an image as its
// base, removing it waits until that VM is gone.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "common/status.h"
#include "hv/migration_stream.h"
#include "hv/vm.h"

namespace qosvisor::control {

struct ImageInfo {
  std::string id;
  uint64_t size = 0;
  std::string sha256;
  std::string parent;  // the fork parent on the source
  std::string source;  // the host it came from
  int64_t received_unix_ms = 0;
};

nlohmann::json ImageInfoJson(const ImageInfo& info);
// An offer's or a record's image description, every field checked (errors name it).
Result<ImageInfo> ParseImageInfo(const nlohmann::json& j);

class ImageStore {
 public:
  explicit ImageStore(std::string dir) : dir_(std::move(dir)) {}

  // Receives the image the source offers (after its offer was read): answers kAccept with
  // {"have": true} when a verified copy is here already, else takes the pages, checks the
  // checksum and answers kReady, or kRefuse naming what failed (nothing is kept then).
  Status Receive(const ImageInfo& offered, hv::MigrationChannel& channel,
                 std::chrono::milliseconds message_timeout);
  // The image as a copy-on-write base for a VM of `size` bytes whose source has `sha256`; an
  // error says why not: missing, another size, or a checksum that does not match.
  Result<std::shared_ptr<const hv::FrozenImage>> OpenVerified(const std::string& id,
                                                              uint64_t size,
                                                              const std::string& sha256);
  // Removes an image now, or once no VM here uses it; says which.
  Result<std::string> Remove(const std::string& id);
  // Removes what was asked to go and is no longer used. Cheap; called after a VM goes.
  void Sweep();
  nlohmann::json ListJson();

 private:
  std::string ImagePath(const std::string& id) const { return dir_ + "/" + id + ".img"; }
  std::string InfoPath(const std::string& id) const { return dir_ + "/" + id + ".json"; }
  Result<ImageInfo> ReadInfo(const std::string& id) const;
  Status Verify(const ImageInfo& info) const;
  bool InUseLocked(const std::string& id);
  void DeleteFiles(const std::string& id) const;

  std::string dir_;
  std::mutex mu_;
  std::map<std::string, std::weak_ptr<const hv::FrozenImage>> open_;  // bases of VMs here
  std::set<std::string> drop_when_unused_;
};

}  // namespace qosvisor::control
