// Fuzz target: the bytes a migration destination receives after its handshake, under a fixed
// session key (seeds made by migration_stream_seeds.py carry valid frames), and the same bytes
// as page and block batch payloads. Every message accepted must be within the limits, every
// failure must stick, and every batch decoded must re-encode to exactly the input.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "hv/migration_stream.h"

namespace {

using namespace std::chrono_literals;
using qosvisor::hv::MigrationChannel;
using qosvisor::hv::MigrationRole;
using qosvisor::hv::UniqueFd;

// What migration_stream_seeds.py signs with: bytes 0, 1, ..., 31.
std::array<uint8_t, 32> SessionKey() {
  std::array<uint8_t, 32> key{};
  std::iota(key.begin(), key.end(), 0);
  return key;
}

// Beyond what a socketpair holds without a reader; longer inputs are cut here.
constexpr size_t kMaxStreamBytes = 64 * 1024;

void CheckBatches(std::span<const uint8_t> input) {
  for (uint64_t pages : {uint64_t{16}, uint64_t{1} << 20}) {
    auto batch = qosvisor::hv::DecodePageBatch(input, pages);
    if (!batch.ok()) continue;
    for (const auto* list : {&batch->zero_pages, &batch->data_pages}) {
      for (uint64_t page : *list) {
        if (page >= pages) __builtin_trap();
      }
    }
    const std::vector<uint8_t> again = qosvisor::hv::EncodePageBatch(*batch);
    if (!std::equal(again.begin(), again.end(), input.begin(), input.end())) __builtin_trap();
  }
  auto blocks = qosvisor::hv::DecodeBlockBatch(input, 64);
  if (blocks.ok()) {
    for (uint64_t block : blocks->blocks) {
      if (block >= 64) __builtin_trap();
    }
    const std::vector<uint8_t> again = qosvisor::hv::EncodeBlockBatch(*blocks);
    if (!std::equal(again.begin(), again.end(), input.begin(), input.end())) __builtin_trap();
  }
}

void ReceiveStream(std::span<const uint8_t> input) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) != 0) return;
  UniqueFd writer(fds[0]);
  const ssize_t written =
      input.empty() ? 0
                    : ::write(writer.get(), input.data(), std::min(input.size(), kMaxStreamBytes));
  if (written < 0) return;
  writer.Reset();  // the source is gone: the stream ends where the input ends

  MigrationChannel destination =
      MigrationChannel::ForTesting(UniqueFd(fds[1]), SessionKey(), MigrationRole::kDestination);
  for (;;) {
    auto message = destination.Receive(0ms);
    if (!message.ok()) {
      if (!destination.failed()) __builtin_trap();
      // A failed channel keeps saying the same thing.
      if (destination.Receive(0ms).message() != message.message()) __builtin_trap();
      break;
    }
    if (message->payload.size() > qosvisor::hv::kMaxMigrationMessage) __builtin_trap();
    CheckBatches(message->payload);
  }
  if (destination.bytes_received() > static_cast<uint64_t>(written)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // (an empty input may come with a null pointer)
  const std::span<const uint8_t> input(size == 0 ? nullptr : data, size);
  ReceiveStream(input);
  CheckBatches(input);
  return 0;
}
