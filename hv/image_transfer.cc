#include "hv/image_transfer.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>

#include "hv/data_extents.h"
#include "hv/page_bitmap.h"

namespace qosvisor::hv {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kPage = kMigrationPageSize;
constexpr size_t kPagesPerFrame = 256;

bool IsZeroPage(const uint8_t* p) {
  return p[0] == 0 && std::memcmp(p, p + 1, kPage - 1) == 0;
}

// Calls `fn(page, bytes)` for every page of [0, size) of `fd` that holds something other than
// zeros, in ascending order.
Status ForEachDataPage(int fd, uint64_t size,
                       const std::function<Status(uint64_t, const uint8_t*)>& fn) {
  std::vector<uint64_t> data((size / kPage + 63) / 64, 0);
  MarkDataUnits(fd, size, kPage, data);
  std::vector<uint8_t> page(kPage);
  for (uint64_t p : SetBits(data)) {
    if (p >= size / kPage) break;
    const ssize_t got = ::pread(fd, page.data(), kPage, static_cast<off_t>(p * kPage));
    if (got != static_cast<ssize_t>(kPage)) {
      return Status::Error(fmt::format("reading image page {}: {}", p,
                                       got < 0 ? std::strerror(errno) : "short read"));
    }
    if (IsZeroPage(page.data())) continue;
    if (Status s = fn(p, page.data()); !s) return s;
  }
  return Status::Ok();
}

}  // namespace

bool ValidImageId(const std::string& id) {
  return id.size() == 16 && id.find_first_not_of("0123456789abcdef") == std::string::npos;
}

Result<std::string> ImageChecksum(int fd, uint64_t size) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return Status::Error("image checksum: SHA-256 is not available");
  }
  Status s = ForEachDataPage(fd, size, [&](uint64_t page, const uint8_t* bytes) {
    uint8_t number[8];
    for (int i = 0; i < 8; ++i) number[i] = static_cast<uint8_t>(page >> (8 * i));
    EVP_DigestUpdate(ctx.get(), number, sizeof number);
    EVP_DigestUpdate(ctx.get(), bytes, kPage);
    return Status::Ok();
  });
  if (!s) return s;
  unsigned char digest[32];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &length);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

Result<ImageSendResult> SendImage(int fd, uint64_t size, MigrationChannel& channel,
                                  uint64_t bandwidth_bps,
                                  std::chrono::milliseconds message_timeout,
                                  const std::function<void(uint64_t)>& progress) {
  const uint64_t start_bytes = channel.bytes_sent();
  const auto started = Clock::now();
  ImageSendResult result;
  PageBatch batch;
  auto flush = [&]() -> Status {
    if (batch.data_pages.empty()) return Status::Ok();
    result.pages_sent += batch.data_pages.size();
    if (Status s = channel.Send(MigrationMessageType::kMemoryPages, EncodePageBatch(batch),
                                message_timeout);
        !s) {
      return s;
    }
    batch = PageBatch{};
    const uint64_t sent = channel.bytes_sent() - start_bytes;
    if (progress) progress(sent);
    if (bandwidth_bps > 0) {
      // Background copying: never more than the cap, so the children's traffic keeps its share.
      const auto due = std::chrono::duration<double>(static_cast<double>(sent) * 8.0 /
                                                     static_cast<double>(bandwidth_bps));
      std::this_thread::sleep_until(started +
                                    std::chrono::duration_cast<Clock::duration>(due));
    }
    return Status::Ok();
  };
  Status s = ForEachDataPage(fd, size, [&](uint64_t page, const uint8_t* bytes) -> Status {
    batch.data_pages.push_back(page);
    batch.data.insert(batch.data.end(), bytes, bytes + kPage);
    return batch.data_pages.size() == kPagesPerFrame ? flush() : Status::Ok();
  });
  if (!s) return s;
  if (Status f = flush(); !f) return f;
  if (Status c = channel.Send(MigrationMessageType::kComplete, {}, message_timeout); !c) return c;
  result.bytes_sent = channel.bytes_sent() - start_bytes;
  return result;
}

Status ReceiveImage(MigrationChannel& channel, int out_fd, uint64_t size,
                    std::chrono::milliseconds message_timeout) {
  const uint64_t pages = size / kPage;
  for (;;) {
    auto m = channel.Receive(message_timeout);
    if (!m) return m.status();
    if (m->type == MigrationMessageType::kComplete) return Status::Ok();
    if (m->type != MigrationMessageType::kMemoryPages) {
      return Status::Error(fmt::format("'{}' in an image's pages",
                                       MigrationMessageTypeName(m->type)));
    }
    auto batch = DecodePageBatch(m->payload, pages);
    if (!batch) return batch.status();
    for (size_t i = 0; i < batch->data_pages.size(); ++i) {
      const uint64_t page = batch->data_pages[i];
      const ssize_t put = ::pwrite(out_fd, batch->data.data() + i * kPage, kPage,
                                   static_cast<off_t>(page * kPage));
      if (put != static_cast<ssize_t>(kPage)) {
        return Status::Error(fmt::format("writing image page {}: {}", page,
                                         put < 0 ? std::strerror(errno) : "short write"));
      }
    }
  }
}

}  // namespace qosvisor::hv
