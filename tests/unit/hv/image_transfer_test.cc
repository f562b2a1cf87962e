// Frozen images moved ahead of their children: the checksum, the transfer and its bad forms,
// and a child migrated onto a pre-copied base arriving whole having sent only its own pages.
#include "hv/image_transfer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <thread>

#include "hv/boot_abi.h"
#include "hv/migration.h"
#include "hv/vm.h"
#include "hv_test_util.h"

namespace qosvisor::hv {
namespace {

using namespace std::chrono_literals;
using testing::GuestOptions;
using testing::WaitUntil;

constexpr uint64_t kPage = 4096;

using Pair = testing::ChannelPair;
Pair Channels() { return testing::ConnectedChannels(); }

// A memfd of `pages` pages, holes but for the pages given, each filled with its number.
UniqueFd Image(uint64_t pages, std::initializer_list<uint64_t> written) {
  UniqueFd fd(::memfd_create("image-test", MFD_CLOEXEC));
  REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(pages * kPage)) == 0);
  std::vector<uint8_t> page(kPage);
  for (uint64_t p : written) {
    std::memset(page.data(), static_cast<int>(p % 250 + 1), kPage);
    REQUIRE(::pwrite(fd.get(), page.data(), kPage, static_cast<off_t>(p * kPage)) ==
            static_cast<ssize_t>(kPage));
  }
  return fd;
}

TEST_CASE("image checksums see what a guest reads: holes and zero pages alike",
          "[image-transfer]") {
  UniqueFd a = Image(64, {1, 7, 63});
  UniqueFd b = Image(64, {1, 7, 63});
  std::vector<uint8_t> zeros(kPage, 0);
  REQUIRE(::pwrite(b.get(), zeros.data(), kPage, 20 * kPage) == static_cast<ssize_t>(kPage));
  auto sa = ImageChecksum(a.get(), 64 * kPage);
  auto sb = ImageChecksum(b.get(), 64 * kPage);
  REQUIRE(sa.ok());
  REQUIRE(sb.ok());
  CHECK(sa->size() == 64);
  CHECK(*sa == *sb);  // a written page of zeros reads as the hole it replaced
  UniqueFd c = Image(64, {1, 7, 62});
  CHECK(*ImageChecksum(c.get(), 64 * kPage) != *sa);  // the same bytes at another page differ
  CHECK(ValidImageId("0123456789abcdef"));
  for (const char* bad : {"", "0123456789abcde", "0123456789abcdeF", "../../etc/passwd00",
                          "0123456789abcdef0"}) {
    CHECK_FALSE(ValidImageId(bad));
  }
}

TEST_CASE("an image arrives whole with only its data pages sent, paced when asked",
          "[image-transfer]") {
  UniqueFd image = Image(256, {0, 5, 100, 255});
  Pair p = Channels();
  UniqueFd copy(::memfd_create("image-copy", MFD_CLOEXEC));
  REQUIRE(::ftruncate(copy.get(), 256 * kPage) == 0);
  Status received = Status::Error("not run");
  std::thread receiver(
      [&] { received = ReceiveImage(p.destination, copy.get(), 256 * kPage, 5000ms); });
  const auto t0 = std::chrono::steady_clock::now();
  // 4 pages of ~16 KiB at 1 Mbit/s take at least ~0.13 s.
  auto sent = SendImage(image.get(), 256 * kPage, p.source, 1'000'000, 5000ms, nullptr);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  receiver.join();
  REQUIRE(sent.ok());
  INFO(received.message());
  REQUIRE(received.ok());
  CHECK(sent->pages_sent == 4);
  CHECK(sent->bytes_sent < 5 * kPage);
  CHECK(seconds > 0.08);
  CHECK(*ImageChecksum(copy.get(), 256 * kPage) == *ImageChecksum(image.get(), 256 * kPage));
}

TEST_CASE("an image's receiver refuses pages outside it and frames that do not belong",
          "[image-transfer]") {
  UniqueFd image = Image(64, {60});
  {
    Pair p = Channels();
    UniqueFd small(::memfd_create("small", MFD_CLOEXEC));
    Status received = Status::Ok();
    std::thread receiver(
        [&] { received = ReceiveImage(p.destination, small.get(), 32 * kPage, 2000ms); });
    (void)SendImage(image.get(), 64 * kPage, p.source, 0, 2000ms, nullptr);
    receiver.join();
    INFO(received.message());
    CHECK(received.message().find("page 60") != std::string::npos);
  }
  {
    Pair p = Channels();
    UniqueFd copy(::memfd_create("copy", MFD_CLOEXEC));
    Status received = Status::Ok();
    std::thread receiver(
        [&] { received = ReceiveImage(p.destination, copy.get(), 64 * kPage, 2000ms); });
    const std::vector<uint8_t> junk = {1, 2, 3};
    REQUIRE(p.source.Send(MigrationMessageType::kDeviceState, junk).ok());
    receiver.join();
    CHECK(received.message().find("in an image's pages") != std::string::npos);
  }
  {
    Pair p = Channels();
    UniqueFd copy(::memfd_create("copy", MFD_CLOEXEC));
    p.source.Close();
    CHECK_FALSE(ReceiveImage(p.destination, copy.get(), 64 * kPage, 2000ms).ok());
  }
}

uint64_t Touched(Vm& vm) {
  uint64_t v = 0;
  REQUIRE(vm.memory().LoadAtomic<uint64_t>(
      QV_BOOT_INFO_GPA + offsetof(qv_boot_info, progress) + 8, &v));
  return v;
}

TEST_CASE("a fork child migrated onto a pre-copied base sends only its own pages",
          "[kvm][image-transfer]") {
  QV_REQUIRE_KVM();
  auto o = GuestOptions("family", "memtouch", "");
  o.cmdline = "fill_mib=16 fill_at=8 pages=100 mib=1 at=26";
  auto parent = Vm::Create(o);
  REQUIRE(parent.ok());
  REQUIRE((*parent)->Start().ok());
  REQUIRE(WaitUntil([&] { return Touched(**parent) > 0; }, 10s));
  auto children = (*parent)->Fork({{"family-kid", "", {}}});
  REQUIRE(children.ok());
  Vm& kid = *(*children)[0];
  REQUIRE(kid.Resume().ok());
  std::this_thread::sleep_for(300ms);
  auto image = kid.base_image();
  REQUIRE(image);

  // The image as the destination keeps it: a file copy, checked against the source's sum.
  UniqueFd copy(::memfd_create("kept-image", MFD_CLOEXEC));
  REQUIRE(::ftruncate(copy.get(), static_cast<off_t>(image->size)) == 0);
  {
    Pair p = Channels();
    Status received = Status::Error("not run");
    std::thread receiver(
        [&] { received = ReceiveImage(p.destination, copy.get(), image->size, 5000ms); });
    REQUIRE(SendImage(image->fd.get(), image->size, p.source, 0, 5000ms, nullptr).ok());
    receiver.join();
    REQUIRE(received.ok());
  }
  REQUIRE(*ImageChecksum(copy.get(), image->size) ==
          *ImageChecksum(image->fd.get(), image->size));
  auto base = std::make_shared<FrozenImage>();
  base->fd = std::move(copy);
  base->size = image->size;
  base->id = image->id;

  VmOptions into = kid.options();
  into.name = "family-kid-b";
  auto incoming = Vm::CreateIncoming(into, base);
  REQUIRE(incoming.ok());
  Pair p = Channels();
  MigrationTuning tuning;
  tuning.base_at_destination = true;
  Status received = Status::Error("not run");
  std::thread receiver(
      [&] { received = ReceiveVm(**incoming, p.destination, 10000ms, nullptr); });
  auto sent = SendVm(kid, p.source, tuning, nullptr);
  receiver.join();
  REQUIRE(sent.ok());
  INFO(received.message());
  REQUIRE(received.ok());
  INFO("pages sent " << sent->pages_sent);
  CHECK(sent->pages_sent < 1024);  // the 16 MiB fill (4096 pages) stayed behind in the image
  CHECK(std::memcmp(kid.memory().host_base(), (*incoming)->memory().host_base(),
                    kid.memory().size()) == 0);
  REQUIRE((*incoming)->Resume().ok());
  const uint64_t now = Touched(**incoming);
  CHECK(WaitUntil([&] { return Touched(**incoming) > now + 20; }, 10s));

  // A base of another size is refused before anything is made.
  VmOptions other = into;
  other.name = "family-kid-c";
  other.memory_bytes = image->size / 2;
  auto refused = Vm::CreateIncoming(other, base);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.message().find("its base image holds") != std::string::npos);
}

}  // namespace
}  // namespace qosvisor::hv
