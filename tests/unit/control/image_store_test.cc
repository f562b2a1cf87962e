// The store of pre-migrated images: an image offered over a channel is kept with its record,
// found again verified, refused when stale or damaged, and removed at once or once unused; the
// descriptions offers carry are checked field by field.
#include "control/image_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "hv/image_transfer.h"

namespace qosvisor::control {
namespace {

using namespace std::chrono_literals;
using hv::MigrationChannel;
using hv::MigrationMessageType;
using hv::MigrationRole;
using hv::UniqueFd;
using json = nlohmann::json;

constexpr uint64_t kSize = 64 * 4096;

struct Dir {
  std::string path = "/tmp/qv-image-store-" + std::to_string(::getpid());
  Dir() { std::filesystem::remove_all(path); }
  ~Dir() { std::filesystem::remove_all(path); }
};

UniqueFd SourceImage() {
  UniqueFd fd(::memfd_create("store-test", MFD_CLOEXEC));
  REQUIRE(::ftruncate(fd.get(), kSize) == 0);
  std::vector<uint8_t> page(4096, 0x5a);
  REQUIRE(::pwrite(fd.get(), page.data(), page.size(), 3 * 4096) == 4096);
  return fd;
}

// Offers `fd` to `store` over a socketpair as a source would; returns the answers' types.
std::vector<MigrationMessageType> Offer(ImageStore& store, const ImageInfo& info, int fd) {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  std::array<uint8_t, 32> key{};
  auto source = MigrationChannel::ForTesting(UniqueFd(fds[0]), key, MigrationRole::kSource);
  auto dest = MigrationChannel::ForTesting(UniqueFd(fds[1]), key, MigrationRole::kDestination);
  std::thread served([&] { (void)store.Receive(info, dest, 2000ms); });
  std::vector<MigrationMessageType> answers;
  auto first = source.Receive(2000ms);
  REQUIRE(first.ok());
  answers.push_back(first->type);
  const std::string text(first->payload.begin(), first->payload.end());
  if (first->type == MigrationMessageType::kAccept && text.find("false") != std::string::npos) {
    REQUIRE(hv::SendImage(fd, kSize, source, 0, 2000ms, nullptr).ok());
    auto done = source.Receive(2000ms);
    REQUIRE(done.ok());
    answers.push_back(done->type);
  }
  served.join();
  return answers;
}

TEST_CASE("an offered image is kept, found verified, and refused when damaged or stale",
          "[image-store]") {
  Dir dir;
  ImageStore store(dir.path);
  UniqueFd image = SourceImage();
  ImageInfo info{"00112233aabbccdd", kSize, *hv::ImageChecksum(image.get(), kSize), "p", "a", 0};

  auto answers = Offer(store, info, image.get());
  REQUIRE(answers.size() == 2);
  CHECK(answers[1] == MigrationMessageType::kReady);
  CHECK(Offer(store, info, image.get()) ==
        std::vector<MigrationMessageType>{MigrationMessageType::kAccept});  // held already
  auto base = store.OpenVerified(info.id, kSize, info.sha256);
  REQUIRE(base.ok());
  CHECK((*base)->size == kSize);
  const json list = store.ListJson();
  REQUIRE(list.size() == 1);
  CHECK(list[0]["in_use"] == true);
  CHECK(list[0]["parent"] == "p");

  CHECK(store.OpenVerified(info.id, kSize * 2, info.sha256).message().find("stale") !=
        std::string::npos);
  CHECK(store.OpenVerified("ffffffffffffffff", kSize, info.sha256).message().find("is not here") !=
        std::string::npos);
  // Damaged on disk while a VM uses it: the next user is refused.
  {
    const std::string path = dir.path + "/" + info.id + ".img";
    const int fd = ::open(path.c_str(), O_WRONLY);
    REQUIRE(::pwrite(fd, "x", 1, 3 * 4096 + 7) == 1);
    ::close(fd);
  }
  CHECK(store.OpenVerified(info.id, kSize, info.sha256).message().find("fails its checksum") !=
        std::string::npos);

  // Removal waits for the VM using it.
  auto removed = store.Remove(info.id);
  REQUIRE(removed.ok());
  CHECK(removed->find("a VM here uses it") != std::string::npos);
  CHECK(store.ListJson()[0]["removal_pending"] == true);
  base->reset();
  store.Sweep();
  CHECK(store.ListJson().empty());
  CHECK_FALSE(store.Remove(info.id).ok());
}

TEST_CASE("an image that arrives other than offered is not kept", "[image-store]") {
  Dir dir;
  ImageStore store(dir.path);
  UniqueFd image = SourceImage();
  ImageInfo info{"00112233aabbccdd", kSize, std::string(64, 'a'), "p", "a", 0};
  auto answers = Offer(store, info, image.get());
  REQUIRE(answers.size() == 2);
  CHECK(answers[1] == MigrationMessageType::kRefuse);
  CHECK(store.ListJson().empty());
  CHECK_FALSE(std::filesystem::exists(dir.path + "/" + info.id + ".img.part"));
}

TEST_CASE("image descriptions are checked field by field", "[image-store]") {
  const json good = {{"id", "00112233aabbccdd"}, {"size", 4096}, {"sha256", std::string(64, '0')}};
  CHECK(ParseImageInfo(good).ok());
  struct Bad {
    json j;
    const char* words;
  };
  const std::vector<Bad> cases = {
      {json{{"size", 4096}, {"sha256", std::string(64, '0')}}, "id"},
      {json{{"id", "../../etc/passwd"}, {"size", 4096}, {"sha256", std::string(64, '0')}},
       "is not 16 hex digits"},
      {json{{"id", "00112233aabbccdd"}, {"size", 100}, {"sha256", std::string(64, '0')}},
       "not a positive multiple of 4 KiB"},
      {json{{"id", "00112233aabbccdd"}, {"size", "big"}, {"sha256", std::string(64, '0')}},
       "image description"},
      {json{{"id", "00112233aabbccdd"}, {"size", 4096}, {"sha256", "xyz"}}, "64 hex digits"},
  };
  for (const Bad& b : cases) {
    auto parsed = ParseImageInfo(b.j);
    INFO(b.j.dump() << " -> " << parsed.message());
    CHECK_FALSE(parsed.ok());
    CHECK(parsed.message().find(b.words) != std::string::npos);
  }
}

}  // namespace
}  // namespace qosvisor::control
