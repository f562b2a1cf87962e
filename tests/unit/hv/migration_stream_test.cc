// The migration wire protocol: the handshake over a socketpair and loopback TCP, every message
// type both ways, and each way a stream can be wrong (key, role, magic, version, silence,
// corruption, forgery, replay, oversize, a vanished peer), the page and block batches, key files.
#include "hv/migration_stream.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hv/state_codec.h"
#include "hv_test_util.h"

namespace qosvisor::hv {
namespace {

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using testing::TempFile;
using Type = MigrationMessageType;

constexpr std::array<uint8_t, 32> kSessionKey = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                                 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                                 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

MigrationKey KeyFilledWith(uint8_t value) {
  MigrationKey key;
  key.bytes.fill(value);
  return key;
}

std::pair<UniqueFd, UniqueFd> SocketPair() {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

struct Handshakes {
  Result<MigrationChannel> first;
  Result<MigrationChannel> second;
};

// Both ends' handshakes at once, the first in a thread of its own, as two hosts would run them.
Handshakes HandshakeBoth(UniqueFd first_fd, const MigrationKey& first_key, MigrationRole first_role,
                         UniqueFd second_fd, const MigrationKey& second_key,
                         MigrationRole second_role) {
  std::optional<Result<MigrationChannel>> first;
  std::thread thread([&] {
    first.emplace(MigrationChannel::Handshake(std::move(first_fd), first_key, first_role, 5s));
  });
  Result<MigrationChannel> second =
      MigrationChannel::Handshake(std::move(second_fd), second_key, second_role, 5s);
  thread.join();
  return {std::move(*first), std::move(second)};
}

std::vector<uint8_t> Pattern(size_t size, uint8_t seed) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 12));
  return bytes;
}

std::vector<uint8_t> ReadAvailable(int fd) {
  std::vector<uint8_t> out;
  uint8_t buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  return out;
}

// The bytes a channel of `role` puts on the wire for its first `count` frames of `type`.
std::vector<uint8_t> FrameBytes(Type type, std::span<const uint8_t> payload, int count = 1,
                                MigrationRole role = MigrationRole::kSource) {
  auto [ours, theirs] = SocketPair();
  MigrationChannel sender = MigrationChannel::ForTesting(std::move(ours), kSessionKey, role);
  for (int i = 0; i < count; ++i) REQUIRE(sender.Send(type, payload).ok());
  return ReadAvailable(theirs.get());
}

// A destination channel whose peer writes raw bytes.
struct RawPeer {
  UniqueFd writer;
  MigrationChannel destination;

  static RawPeer Create() {
    auto [writer, reader] = SocketPair();
    return {std::move(writer), MigrationChannel::ForTesting(std::move(reader), kSessionKey,
                                                            MigrationRole::kDestination)};
  }
  void Write(std::span<const uint8_t> bytes) {
    REQUIRE(::write(writer.get(), bytes.data(), bytes.size()) ==
            static_cast<ssize_t>(bytes.size()));
  }
};

void SetCrc(std::vector<uint8_t>& frame, size_t payload_size) {
  const uint32_t crc = Crc32c(std::span(frame).first(16 + payload_size));
  std::memcpy(frame.data() + 16 + payload_size, &crc, sizeof(crc));
}

TEST_CASE("migration handshake over a socketpair authenticates both ends", "[migration-stream]") {
  auto [a, b] = SocketPair();
  Handshakes h = HandshakeBoth(std::move(a), KeyFilledWith(7), MigrationRole::kSource, std::move(b),
                               KeyFilledWith(7), MigrationRole::kDestination);
  REQUIRE(h.first.ok());
  REQUIRE(h.second.ok());
  CHECK(h.first->role() == MigrationRole::kSource);
  CHECK(h.second->role() == MigrationRole::kDestination);
  // Hello (48 bytes) and proof (32 bytes) each way.
  CHECK(h.first->bytes_sent() == 80);
  CHECK(h.second->bytes_received() == 80);

  const std::vector<uint8_t> offer = {'{', '}'};
  REQUIRE(h.first->Send(Type::kOffer, offer).ok());
  Result<MigrationMessage> got = h.second->Receive(2s);
  REQUIRE(got.ok());
  CHECK(got->type == Type::kOffer);
  CHECK(got->payload == offer);
  CHECK(h.first->bytes_sent() == 80 + 16 + 2 + 20);
  CHECK(h.second->bytes_received() == h.first->bytes_sent());
}

TEST_CASE("migration handshake over loopback TCP", "[migration-stream]") {
  Result<UniqueFd> listener = ListenTcp("127.0.0.1:0");
  REQUIRE(listener.ok());
  Result<uint16_t> port = LocalPort(listener->get());
  REQUIRE(port.ok());
  REQUIRE(*port != 0);

  std::optional<Result<MigrationChannel>> source;
  std::thread thread([&] {
    Result<UniqueFd> fd = ConnectTcp("127.0.0.1:" + std::to_string(*port), 5s);
    if (!fd.ok()) {
      source.emplace(fd.status());
      return;
    }
    source.emplace(
        MigrationChannel::Handshake(std::move(*fd), KeyFilledWith(1), MigrationRole::kSource, 5s));
  });
  Result<UniqueFd> accepted = AcceptTcp(listener->get(), 5s);
  std::optional<Result<MigrationChannel>> destination;
  if (accepted.ok()) {
    destination.emplace(MigrationChannel::Handshake(std::move(*accepted), KeyFilledWith(1),
                                                    MigrationRole::kDestination, 5s));
  }
  thread.join();
  REQUIRE(accepted.ok());
  INFO(source->message());
  REQUIRE(source->ok());
  INFO(destination->message());
  REQUIRE(destination->ok());

  const std::vector<uint8_t> round = {3, 0, 0, 0};
  REQUIRE((*source)->Send(Type::kRoundEnd, round).ok());
  Result<MigrationMessage> got = (*destination)->Receive(2s);
  REQUIRE(got.ok());
  CHECK(got->type == Type::kRoundEnd);
  CHECK(got->payload == round);
  REQUIRE((*destination)->Send(Type::kResumed, {}).ok());
  Result<MigrationMessage> resumed = (*source)->Receive(2s);
  REQUIRE(resumed.ok());
  CHECK(resumed->type == Type::kResumed);
  CHECK(resumed->payload.empty());
}

TEST_CASE("migration channel carries every message type both ways, up to 8 MiB",
          "[migration-stream]") {
  auto [a, b] = SocketPair();
  Handshakes h = HandshakeBoth(std::move(a), KeyFilledWith(9), MigrationRole::kSource, std::move(b),
                               KeyFilledWith(9), MigrationRole::kDestination);
  REQUIRE(h.first.ok());
  REQUIRE(h.second.ok());
  MigrationChannel& source = *h.first;
  MigrationChannel& destination = *h.second;

  const std::vector<std::pair<Type, size_t>> from_source = {
      {Type::kOffer, 300},
      {Type::kMemoryPages, 4096 * 3 + 8},
      {Type::kDiskBlocks, 1000},
      {Type::kRoundEnd, 4},
      {Type::kDeviceState, kMaxMigrationMessage},
      {Type::kRefuse, 12},
      {Type::kComplete, 0},
      {Type::kAbort, 0},
      {Type::kCommit, 0},
      {Type::kMemoryPages, 1 << 20}};
  // The 8 MiB frame is more than the socket holds: the sender waits for the reader, in a thread.
  std::vector<Status> sent;
  std::thread sender([&] {
    for (size_t i = 0; i < from_source.size(); ++i) {
      const auto& [type, size] = from_source[i];
      sent.push_back(source.Send(type, Pattern(size, static_cast<uint8_t>(i))));
    }
  });
  for (size_t i = 0; i < from_source.size(); ++i) {
    Result<MigrationMessage> got = destination.Receive(10s);
    INFO("message " << i << ": " << got.message());
    REQUIRE(got.ok());
    CHECK(got->type == from_source[i].first);
    CHECK(got->payload == Pattern(from_source[i].second, static_cast<uint8_t>(i)));
  }
  sender.join();
  for (const Status& s : sent) CHECK(s.ok());

  const std::vector<std::pair<Type, size_t>> from_destination = {
      {Type::kAccept, 50}, {Type::kRefuse, 20}, {Type::kReady, 0}, {Type::kResumed, 0}};
  for (const auto& [type, size] : from_destination) {
    REQUIRE(destination.Send(type, Pattern(size, 1)).ok());
  }
  for (const auto& [type, size] : from_destination) {
    Result<MigrationMessage> got = source.Receive(2s);
    REQUIRE(got.ok());
    CHECK(got->type == type);
    CHECK(got->payload == Pattern(size, 1));
  }
  CHECK(source.bytes_sent() == destination.bytes_received());
  CHECK(destination.bytes_sent() == source.bytes_received());
  CHECK(source.bytes_sent() > kMaxMigrationMessage);
  source.Close();
  source.Close();  // idempotent
  CHECK(source.fd() == -1);
  CHECK_THAT(destination.Receive(2s).message(), Contains("connection closed"));
}

TEST_CASE("migration channel refuses to send what its role does not send, or too much",
          "[migration-stream]") {
  auto [a, b] = SocketPair();
  MigrationChannel source =
      MigrationChannel::ForTesting(std::move(a), kSessionKey, MigrationRole::kSource);
  MigrationChannel destination =
      MigrationChannel::ForTesting(std::move(b), kSessionKey, MigrationRole::kDestination);
  CHECK_THAT(source.Send(Type::kAccept, {}).message(),
             Contains("the source does not send accept messages"));
  CHECK_THAT(destination.Send(Type::kMemoryPages, {}).message(),
             Contains("the destination does not send memory-pages messages"));
  const std::vector<uint8_t> too_big(kMaxMigrationMessage + 1);
  CHECK_THAT(source.Send(Type::kDeviceState, too_big).message(), Contains("exceeds the limit"));
  // None of these reached the wire or spoiled the channel.
  CHECK_FALSE(source.failed());
  REQUIRE(source.Send(Type::kComplete, {}).ok());
  Result<MigrationMessage> got = destination.Receive(1s);
  REQUIRE(got.ok());
  CHECK(got->type == Type::kComplete);
}

TEST_CASE("migration handshake with a wrong key fails with authentication on both ends",
          "[migration-stream]") {
  auto [a, b] = SocketPair();
  Handshakes h = HandshakeBoth(std::move(a), KeyFilledWith(1), MigrationRole::kSource, std::move(b),
                               KeyFilledWith(2), MigrationRole::kDestination);
  REQUIRE_FALSE(h.first.ok());
  REQUIRE_FALSE(h.second.ok());
  CHECK_THAT(h.first.message(), Contains("authentication"));
  CHECK_THAT(h.second.message(), Contains("authentication"));
}

TEST_CASE("migration handshake refuses two ends of the same role", "[migration-stream]") {
  auto [a, b] = SocketPair();
  Handshakes h = HandshakeBoth(std::move(a), KeyFilledWith(1), MigrationRole::kSource, std::move(b),
                               KeyFilledWith(1), MigrationRole::kSource);
  CHECK_THAT(h.first.message(), Contains("both ends are the source"));
  CHECK_THAT(h.second.message(), Contains("both ends are the source"));

  auto [c, d] = SocketPair();
  h = HandshakeBoth(std::move(c), KeyFilledWith(1), MigrationRole::kDestination, std::move(d),
                    KeyFilledWith(1), MigrationRole::kDestination);
  CHECK_THAT(h.first.message(), Contains("both ends are the destination"));
  CHECK_THAT(h.second.message(), Contains("both ends are the destination"));
}

TEST_CASE("migration handshake times out on a silent peer and closes the socket",
          "[migration-stream]") {
  auto [ours, silent] = SocketPair();
  const auto start = std::chrono::steady_clock::now();
  Result<MigrationChannel> channel =
      MigrationChannel::Handshake(std::move(ours), KeyFilledWith(1), MigrationRole::kSource, 150ms);
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK_THAT(channel.message(), Contains("waiting for the peer's hello: timed out after 150 ms"));
  CHECK(took >= 150ms);
  CHECK(took < 3s);
  // Our hello, then end of stream: the handshake closed its socket.
  std::vector<uint8_t> seen = ReadAvailable(silent.get());
  CHECK(seen.size() == 48);
  uint8_t byte;
  CHECK(::recv(silent.get(), &byte, 1, 0) == 0);
}

TEST_CASE("migration handshake refuses a wrong magic or version", "[migration-stream]") {
  SECTION("magic") {
    auto [ours, theirs] = SocketPair();
    const std::string http = "GET / HTTP/1.1\r\n\r\n";
    REQUIRE(::write(theirs.get(), http.data(), http.size()) == static_cast<ssize_t>(http.size()));
    Result<MigrationChannel> channel = MigrationChannel::Handshake(
        std::move(ours), KeyFilledWith(1), MigrationRole::kDestination, 2s);
    CHECK_THAT(channel.message(), Contains("wrong magic"));
    CHECK_THAT(channel.message(), Contains("47 45 54 20"));
  }
  SECTION("version") {
    auto [ours, theirs] = SocketPair();
    std::vector<uint8_t> hello = {'Q', 'V', 'M', 'I', 'G', 'R', 'T', 0, 2, 0, 0, 0, 1, 0, 0, 0};
    hello.resize(48, 0xab);
    REQUIRE(::write(theirs.get(), hello.data(), hello.size()) == 48);
    Result<MigrationChannel> channel = MigrationChannel::Handshake(
        std::move(ours), KeyFilledWith(1), MigrationRole::kDestination, 2s);
    CHECK_THAT(channel.message(), Contains("protocol version 2, this end version 1"));
  }
  SECTION("role") {
    auto [ours, theirs] = SocketPair();
    std::vector<uint8_t> hello = {'Q', 'V', 'M', 'I', 'G', 'R', 'T', 0, 1, 0, 0, 0, 7, 0, 0, 0};
    hello.resize(48, 0xab);
    REQUIRE(::write(theirs.get(), hello.data(), hello.size()) == 48);
    Result<MigrationChannel> channel = MigrationChannel::Handshake(
        std::move(ours), KeyFilledWith(1), MigrationRole::kDestination, 2s);
    CHECK_THAT(channel.message(), Contains("role 7"));
  }
}

TEST_CASE("migration receive: a flipped payload byte is a checksum error", "[migration-stream]") {
  const std::vector<uint8_t> payload = Pattern(100, 3);
  std::vector<uint8_t> frame = FrameBytes(Type::kOffer, payload);
  REQUIRE(frame.size() == 16 + 100 + 4 + 16);
  frame[16 + 40] ^= 0x10;
  RawPeer peer = RawPeer::Create();
  peer.Write(frame);
  Result<MigrationMessage> got = peer.destination.Receive(1s);
  CHECK_THAT(got.message(), Contains("checksum"));
  CHECK(peer.destination.failed());
  // The channel stays failed with the same error, even once a good frame follows.
  peer.Write(FrameBytes(Type::kOffer, payload));
  CHECK(peer.destination.Receive(1s).message() == got.message());
}

TEST_CASE("migration receive: a flipped byte with its CRC recomputed is an authentication error",
          "[migration-stream]") {
  const std::vector<uint8_t> payload = Pattern(100, 3);
  std::vector<uint8_t> frame = FrameBytes(Type::kDeviceState, payload);
  frame[16 + 40] ^= 0x10;
  SetCrc(frame, payload.size());
  RawPeer peer = RawPeer::Create();
  peer.Write(frame);
  CHECK_THAT(peer.destination.Receive(1s).message(), Contains("authentication"));

  // A frame MAC'd under another session's key fails the same way.
  auto [ours, theirs] = SocketPair();
  std::array<uint8_t, 32> other_key = kSessionKey;
  other_key[0] ^= 1;
  MigrationChannel stranger =
      MigrationChannel::ForTesting(std::move(ours), other_key, MigrationRole::kSource);
  REQUIRE(stranger.Send(Type::kOffer, payload).ok());
  RawPeer victim = RawPeer::Create();
  victim.Write(ReadAvailable(theirs.get()));
  CHECK_THAT(victim.destination.Receive(1s).message(), Contains("authentication"));
}

TEST_CASE("migration receive: a replayed frame is a sequence error", "[migration-stream]") {
  const std::vector<uint8_t> payload = {0, 0, 0, 0};
  const std::vector<uint8_t> frame = FrameBytes(Type::kRoundEnd, payload);
  RawPeer peer = RawPeer::Create();
  peer.Write(frame);
  peer.Write(frame);
  REQUIRE(peer.destination.Receive(1s).ok());
  CHECK_THAT(peer.destination.Receive(1s).message(),
             Contains("sequence error: expected frame 1 from the source, got 0"));

  // A dropped frame: the second of two frames arrives first.
  const std::vector<uint8_t> two = FrameBytes(Type::kRoundEnd, payload, 2);
  RawPeer dropped = RawPeer::Create();
  dropped.Write(std::span(two).subspan(two.size() / 2));
  CHECK_THAT(dropped.destination.Receive(1s).message(), Contains("expected frame 0"));
}

TEST_CASE("migration receive: an oversized length is refused before any payload arrives",
          "[migration-stream]") {
  for (uint32_t length : {kMaxMigrationMessage + 1, 0xffffffffu}) {
    std::vector<uint8_t> header(16, 0);
    header[0] = static_cast<uint8_t>(Type::kMemoryPages);
    header[2] = static_cast<uint8_t>(MigrationRole::kSource);
    std::memcpy(header.data() + 4, &length, 4);
    RawPeer peer = RawPeer::Create();
    peer.Write(header);
    // No payload follows: an answer before the timeout shows nothing waited for (or allocated)
    // the announced bytes.
    const auto start = std::chrono::steady_clock::now();
    CHECK_THAT(peer.destination.Receive(10s).message(), Contains("more than the limit"));
    CHECK(std::chrono::steady_clock::now() - start < 5s);
  }
}

TEST_CASE("migration receive: a peer closing mid-frame is a connection closed error",
          "[migration-stream]") {
  const std::vector<uint8_t> frame = FrameBytes(Type::kDeviceState, Pattern(1000, 1));
  RawPeer peer = RawPeer::Create();
  peer.Write(std::span(frame).first(500));
  peer.writer.Reset();
  Result<MigrationMessage> got = peer.destination.Receive(2s);
  CHECK_THAT(got.message(), Contains("connection closed"));
  CHECK_THAT(got.message(), Contains("device-state message 0"));

  RawPeer in_header = RawPeer::Create();
  in_header.Write(std::span(frame).first(5));
  in_header.writer.Reset();
  CHECK_THAT(in_header.destination.Receive(2s).message(), Contains("connection closed"));
}

TEST_CASE("migration send: a vanished peer is an error, not SIGPIPE", "[migration-stream]") {
  auto [ours, theirs] = SocketPair();
  MigrationChannel source =
      MigrationChannel::ForTesting(std::move(ours), kSessionKey, MigrationRole::kSource);
  theirs.Reset();
  CHECK_THAT(source.Send(Type::kOffer, Pattern(10, 0)).message(), Contains("connection closed"));
  CHECK(source.failed());
}

TEST_CASE("migration send: a peer that stops reading makes Send time out", "[migration-stream]") {
  auto [ours, theirs] = SocketPair();
  MigrationChannel source =
      MigrationChannel::ForTesting(std::move(ours), kSessionKey, MigrationRole::kSource);
  CHECK_THAT(source.Send(Type::kDeviceState, Pattern(kMaxMigrationMessage, 0), 100ms).message(),
             Contains("timed out after 100 ms"));
}

TEST_CASE("migration receive: unknown types, wrong directions and reflected frames",
          "[migration-stream]") {
  SECTION("unknown type") {
    std::vector<uint8_t> frame = FrameBytes(Type::kAbort, {});
    frame[0] = 77;
    RawPeer peer = RawPeer::Create();
    peer.Write(frame);
    CHECK_THAT(peer.destination.Receive(1s).message(), Contains("unknown message type 77"));
  }
  SECTION("a destination's frame reflected back to a destination") {
    RawPeer peer = RawPeer::Create();
    peer.Write(FrameBytes(Type::kRefuse, Pattern(5, 0), 1, MigrationRole::kDestination));
    CHECK_THAT(peer.destination.Receive(1s).message(), Contains("reflected"));
  }
  SECTION("a type altered in transit") {
    std::vector<uint8_t> frame = FrameBytes(Type::kOffer, {});
    frame[0] = static_cast<uint8_t>(Type::kAccept);
    SetCrc(frame, 0);
    RawPeer peer = RawPeer::Create();
    peer.Write(frame);
    // The MAC covers the type, so the edit is caught as a forgery first.
    CHECK_THAT(peer.destination.Receive(1s).message(), Contains("authentication"));
  }
}

TEST_CASE("migration receive: a timeout before a frame begins leaves the channel usable",
          "[migration-stream]") {
  auto [a, b] = SocketPair();
  MigrationChannel source =
      MigrationChannel::ForTesting(std::move(a), kSessionKey, MigrationRole::kSource);
  MigrationChannel destination =
      MigrationChannel::ForTesting(std::move(b), kSessionKey, MigrationRole::kDestination);
  CHECK_THAT(destination.Receive(20ms).message(),
             Contains("no message from the source within 20 ms"));
  CHECK_FALSE(destination.failed());
  REQUIRE(source.Send(Type::kComplete, {}).ok());
  Result<MigrationMessage> got = destination.Receive(1s);
  REQUIRE(got.ok());
  CHECK(got->type == Type::kComplete);

  // A frame cut off by the timeout is different: the stream is out of step from then on.
  RawPeer peer = RawPeer::Create();
  const std::vector<uint8_t> frame = FrameBytes(Type::kOffer, Pattern(50, 0));
  peer.Write(std::span(frame).first(20));
  CHECK_THAT(peer.destination.Receive(50ms).message(), Contains("timed out after 50 ms"));
  CHECK(peer.destination.failed());
}

TEST_CASE("migration channel sends on one thread while it receives on another",
          "[migration-stream]") {
  auto [a, b] = SocketPair();
  MigrationChannel source =
      MigrationChannel::ForTesting(std::move(a), kSessionKey, MigrationRole::kSource);
  MigrationChannel destination =
      MigrationChannel::ForTesting(std::move(b), kSessionKey, MigrationRole::kDestination);
  constexpr int kBatches = 8;
  // The source streams pages while it waits for the destination's word, as a pre-copy does.
  std::vector<Status> sent;
  std::thread pages([&] {
    for (int i = 0; i < kBatches; ++i)
      sent.push_back(source.Send(Type::kMemoryPages, Pattern(1 << 20, 1)));
  });
  Status accepted;
  int received = 0;
  std::thread destination_side([&] {
    accepted = destination.Send(Type::kAccept, {});
    while (received < kBatches && destination.Receive(10s).ok()) ++received;
  });
  Result<MigrationMessage> accept = source.Receive(10s);
  pages.join();
  destination_side.join();
  CHECK(accepted.ok());
  CHECK(received == kBatches);
  REQUIRE(accept.ok());
  CHECK(accept->type == Type::kAccept);
  REQUIRE(sent.size() == kBatches);
  for (const Status& s : sent) CHECK(s.ok());
  CHECK(source.bytes_sent() == destination.bytes_received());
  CHECK(destination.bytes_sent() == source.bytes_received());
}

TEST_CASE("migration channel Shutdown wakes a receiver in another thread", "[migration-stream]") {
  auto [a, b] = SocketPair();
  MigrationChannel destination =
      MigrationChannel::ForTesting(std::move(b), kSessionKey, MigrationRole::kDestination);
  std::optional<std::string> error;
  std::thread receiver([&] { error = destination.Receive(10s).message(); });
  std::this_thread::sleep_for(50ms);
  const auto start = std::chrono::steady_clock::now();
  destination.Shutdown();
  receiver.join();
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK_FALSE(error->empty());
  CHECK(destination.failed());
}

// ---- Page and block batches ----

TEST_CASE("migration page batches round trip through guest memory", "[migration-stream]") {
  constexpr uint64_t kPages = 16;
  Result<GuestMemory> source = GuestMemory::Create("qv-mig-test-src", kPages * 4096, false);
  Result<GuestMemory> target = GuestMemory::Create("qv-mig-test-dst", kPages * 4096, false);
  REQUIRE(source.ok());
  REQUIRE(target.ok());
  const std::vector<uint8_t> three = Pattern(4096, 3), seven = Pattern(4096, 7);
  REQUIRE(source->Write(3 * 4096, three.data(), 4096));
  REQUIRE(source->Write(7 * 4096, seven.data(), 4096));
  // The target holds something in page 0 that the source's zero page must wipe.
  REQUIRE(target->Write(0, seven.data(), 4096));

  const std::vector<uint64_t> pages = {0, 3, 7, 9, 12};
  std::vector<PageBatch> batches = BatchPages(*source, pages, 2);
  REQUIRE(batches.size() == 3);
  CHECK(batches[0].zero_pages == std::vector<uint64_t>{0});
  CHECK(batches[0].data_pages == std::vector<uint64_t>{3});
  CHECK(batches[1].data_pages == std::vector<uint64_t>{7});
  CHECK(batches[1].zero_pages == std::vector<uint64_t>{9});
  CHECK(batches[2].zero_pages == std::vector<uint64_t>{12});
  CHECK(batches[2].data.empty());

  for (const PageBatch& batch : batches) {
    const std::vector<uint8_t> wire = EncodePageBatch(batch);
    CHECK(wire.size() ==
          8 + 8 * (batch.zero_pages.size() + batch.data_pages.size()) + batch.data.size());
    Result<PageBatch> decoded = DecodePageBatch(wire, kPages);
    REQUIRE(decoded.ok());
    CHECK(decoded->zero_pages == batch.zero_pages);
    CHECK(decoded->data_pages == batch.data_pages);
    CHECK(decoded->data == batch.data);
    REQUIRE(ApplyPageBatch(*decoded, *target).ok());
  }
  CHECK(std::memcmp(source->host_base(), target->host_base(), kPages * 4096) == 0);

  // An empty batch is a valid batch.
  Result<PageBatch> empty = DecodePageBatch(EncodePageBatch({}), kPages);
  REQUIRE(empty.ok());
  CHECK(empty->zero_pages.empty());
  CHECK(BatchPages(*source, {}, 8).empty());

  // A batch naming a page past this memory changes nothing.
  PageBatch outside;
  outside.zero_pages = {1, kPages};
  CHECK_THAT(ApplyPageBatch(outside, *target).message(), Contains("page 16 is outside"));
}

TEST_CASE("migration page batches: every bad form is refused by name", "[migration-stream]") {
  PageBatch batch;
  batch.zero_pages = {1, 5};
  batch.data_pages = {2};
  batch.data = Pattern(4096, 0);
  const std::vector<uint8_t> good = EncodePageBatch(batch);
  REQUIRE(DecodePageBatch(good, 6).ok());

  CHECK_THAT(DecodePageBatch(good, 5).message(), Contains("page 5 is out of range"));
  PageBatch data_outside = batch;
  data_outside.data_pages = {1000};
  CHECK_THAT(DecodePageBatch(EncodePageBatch(data_outside), 6).message(),
             Contains("page 1000 is out of range"));
  PageBatch duplicate = batch;
  duplicate.data_pages = {5};
  CHECK_THAT(DecodePageBatch(EncodePageBatch(duplicate), 6).message(),
             Contains("page 5 appears twice"));
  PageBatch duplicate_zero = batch;
  duplicate_zero.zero_pages = {4, 4};
  CHECK_THAT(DecodePageBatch(EncodePageBatch(duplicate_zero), 6).message(),
             Contains("page 4 appears twice"));
  CHECK_THAT(DecodePageBatch(std::span(good).first(good.size() - 1), 6).message(),
             Contains("truncated"));
  CHECK_THAT(DecodePageBatch(std::span(good).first(5), 6).message(), Contains("truncated"));
  std::vector<uint8_t> trailing = good;
  trailing.push_back(0);
  CHECK_THAT(DecodePageBatch(trailing, 6).message(), Contains("1 trailing bytes"));
  // Counts that promise more than any payload could hold: refused from the size alone.
  std::vector<uint8_t> huge = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  CHECK_THAT(DecodePageBatch(huge, 6).message(), Contains("truncated"));
}

TEST_CASE("migration block batches round trip, and every bad form is refused by name",
          "[migration-stream]") {
  BlockBatch batch{512, {5, 1}, Pattern(1024, 9)};
  const std::vector<uint8_t> good = EncodeBlockBatch(batch);
  CHECK(good.size() == 8 + 16 + 1024);
  Result<BlockBatch> decoded = DecodeBlockBatch(good, 6);
  REQUIRE(decoded.ok());
  CHECK(decoded->block_size == 512);
  CHECK(decoded->blocks == batch.blocks);
  CHECK(decoded->data == batch.data);

  CHECK_THAT(DecodeBlockBatch(good, 5).message(), Contains("block 5 is out of range"));
  BlockBatch duplicate{512, {1, 1}, Pattern(1024, 9)};
  CHECK_THAT(DecodeBlockBatch(EncodeBlockBatch(duplicate), 6).message(),
             Contains("block 1 appears twice"));
  CHECK_THAT(DecodeBlockBatch(std::span(good).first(good.size() - 1), 6).message(),
             Contains("truncated"));
  std::vector<uint8_t> trailing = good;
  trailing.push_back(0);
  CHECK_THAT(DecodeBlockBatch(trailing, 6).message(), Contains("1 trailing bytes"));
  BlockBatch zero_size{0, {}, {}};
  CHECK_THAT(DecodeBlockBatch(EncodeBlockBatch(zero_size), 6).message(), Contains("block size 0"));
  CHECK_THAT(DecodeBlockBatch(std::span(good).first(3), 6).message(), Contains("truncated"));
}

// ---- Key files ----

void WriteKeyFile(const std::string& path, const std::vector<uint8_t>& contents, mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  REQUIRE(fd.valid());
  REQUIRE(::write(fd.get(), contents.data(), contents.size()) ==
          static_cast<ssize_t>(contents.size()));
  REQUIRE(::fchmod(fd.get(), mode) == 0);
}

TEST_CASE("migration key files: short, readable by others, missing and good",
          "[migration-stream]") {
  TempFile file("migration-key");
  std::vector<uint8_t> contents(32);
  std::iota(contents.begin(), contents.end(), 0);

  SECTION("good: the key is the SHA-256 of the file") {
    WriteKeyFile(file.path(), contents, 0600);
    Result<MigrationKey> key = LoadMigrationKey(file.path());
    REQUIRE(key.ok());
    // sha256(bytes 0..31)
    const std::array<uint8_t, 32> expected = {0x63, 0x0d, 0xcd, 0x29, 0x66, 0xc4, 0x33, 0x66,
                                              0x91, 0x12, 0x54, 0x48, 0xbb, 0xb2, 0x5b, 0x4f,
                                              0xf4, 0x12, 0xa4, 0x9c, 0x73, 0x2d, 0xb2, 0xc8,
                                              0xab, 0xc1, 0xb8, 0x58, 0x1b, 0xd7, 0x10, 0xdd};
    CHECK(key->bytes == expected);
    WriteKeyFile(file.path(), contents, 0400);
    CHECK(LoadMigrationKey(file.path()).ok());
  }
  SECTION("short") {
    contents.resize(31);
    WriteKeyFile(file.path(), contents, 0600);
    Result<MigrationKey> key = LoadMigrationKey(file.path());
    CHECK_THAT(key.message(), Contains(file.path()));
    CHECK_THAT(key.message(), Contains("holds 31 bytes, a key needs at least 32"));
  }
  SECTION("readable by group or other") {
    for (mode_t mode : {0644, 0640, 0604}) {
      WriteKeyFile(file.path(), contents, mode);
      Result<MigrationKey> key = LoadMigrationKey(file.path());
      CHECK_THAT(key.message(), Contains(file.path()));
      CHECK_THAT(key.message(), Contains(fmt::format("mode {:04o}", mode)));
    }
  }
  SECTION("missing") {
    Result<MigrationKey> key = LoadMigrationKey(file.path());
    CHECK_THAT(key.message(), Contains(file.path()));
    CHECK_THAT(key.message(), Contains("No such file"));
  }
}

// ---- Addresses ----

TEST_CASE("migration TCP addresses: bad forms, refused connections, accept timeouts",
          "[migration-stream]") {
  CHECK_THAT(ConnectTcp("localhost", 1s).message(), Contains("no port"));
  CHECK_THAT(ConnectTcp("::1:80", 1s).message(), Contains("[addr]:port"));
  CHECK_THAT(ConnectTcp("[::1:80", 1s).message(), Contains("[addr]:port"));
  CHECK_THAT(ConnectTcp("127.0.0.1:70000", 1s).message(), Contains("0 to 65535"));
  CHECK_THAT(ListenTcp(":80").message(), Contains("0 to 65535"));

  // A port nobody listens on: bind one, learn its number, close it.
  Result<UniqueFd> closed = ListenTcp("127.0.0.1:0");
  REQUIRE(closed.ok());
  const uint16_t port = *LocalPort(closed->get());
  closed->Reset();
  CHECK_THAT(ConnectTcp(fmt::format("127.0.0.1:{}", port), 1s).message(),
             Contains("Connection refused"));

  Result<UniqueFd> listener = ListenTcp("localhost:0");
  REQUIRE(listener.ok());
  CHECK_THAT(AcceptTcp(listener->get(), 30ms).message(), Contains("timed out after 30 ms"));
  CHECK_THAT(LocalPort(-1).message(), Contains("socket -1"));
}

}  // namespace
}  // namespace qosvisor::hv
