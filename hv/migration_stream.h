// The live-migration wire protocol: a mutually authenticated, versioned stream of checksummed and
// MAC'd frames between a source and a destination host, and the payloads that carry guest memory
// pages and vflash blocks. A stray or hostile peer can neither inject a VM nor read one.
//
// Wire format (all integers little-endian):
//   hello   magic "QVMIGRT\0", u32 version, u8 role, 3 zero bytes, 32-byte random nonce
//   proof   HMAC-SHA256(key, "qosvisor-migration-proof" || u8 role || own nonce || peer nonce)
//   frame   u16 type, u16 flags (low byte: the sender's role), u32 payload length, u64 sequence,
//           payload, u32 CRC-32C(header + payload),
//           first 16 bytes of HMAC-SHA256(session key, header + payload + crc)
// Session key = HMAC-SHA256(key, "session" || source nonce || destination nonce).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "hv/guest_memory.h"
#include "hv/unique_fd.h"

namespace qosvisor::hv {

inline constexpr uint32_t kMigrationVersion = 1;
inline constexpr uint32_t kMaxMigrationMessage = 8u << 20;  // payload bytes
inline constexpr uint64_t kMigrationPageSize = 4096;
// How long Send waits for a peer that stops reading, unless told otherwise.
inline constexpr std::chrono::milliseconds kMigrationSendTimeout{30000};

// The shared secret both ends read from migration.key_file: the file must hold at least 32 bytes
// (any bytes; e.g. `head -c 32 /dev/urandom`) and must not be accessible to group or other
// (refused with a message naming the file and its mode); key = SHA-256 of the contents.
struct MigrationKey {
  std::array<uint8_t, 32> bytes{};
};
Result<MigrationKey> LoadMigrationKey(const std::string& path);

enum class MigrationRole : uint8_t { kSource = 1, kDestination = 2 };
enum class MigrationMessageType : uint16_t {
  kOffer = 1,        // source → dest: JSON (vm name, options, memory size, disk size,
                     // attachment) — the dest checks budget before pages flow
  kAccept = 2,       // dest → source: JSON
  kRefuse = 3,       // either way: UTF-8 reason; ends the migration
  kMemoryPages = 4,  // source → dest: a PageBatch
  kDiskBlocks = 5,   // source → dest: a BlockBatch (vflash disk)
  kRoundEnd = 6,     // source → dest: u32 round number (progress bookkeeping)
  kDeviceState = 7,  // source → dest: serialized Sections (vCPUs, VM, devices)
  kComplete = 8,     // source → dest: everything sent; dest builds the VM and answers kReady
  kResumed = 9,      // dest → source: after kCommit, the VM runs on the destination
  kAbort = 10,       // source → dest: drop everything received
  // The hand-over, so that the source stays authoritative until the destination is ready:
  kReady = 11,   // dest → source: the VM holds the state, paused, on its switch ports
  kCommit = 12,  // source → dest: the VM is the destination's now; resume it
};
struct MigrationMessage {
  MigrationMessageType type;
  std::vector<uint8_t> payload;
};

// "source", "destination"; "offer", "memory-pages", ... for messages.
const char* MigrationRoleName(MigrationRole role);
const char* MigrationMessageTypeName(MigrationMessageType type);
// True if `role` is the end that sends messages of `type` (kRefuse: both).
bool MigrationRoleSends(MigrationRole role, MigrationMessageType type);

// One end of an authenticated migration connection over a connected stream socket.
// Threads: one thread may Send while another Receives; Shutdown may be called from any thread
// to wake both. Close and destruction must not race a call in progress.
class MigrationChannel {
 public:
  // Mutual authentication: each end sends a hello (magic, version, role, 32-byte random nonce),
  // then proves the key with HMAC-SHA256(key, label || role || own nonce || peer nonce) and checks
  // the peer's proof (constant-time compare). A wrong key, wrong version, wrong magic, same role
  // on both ends, or silence past `timeout` → error naming which, and the socket is closed.
  static Result<MigrationChannel> Handshake(UniqueFd socket, const MigrationKey& key,
                                            MigrationRole role, std::chrono::milliseconds timeout);
  // For tests and the fuzz target only: a channel over `socket` that skips the handshake and
  // uses `session_key` as if the handshake had derived it.
  static MigrationChannel ForTesting(UniqueFd socket, std::array<uint8_t, 32> session_key,
                                     MigrationRole role);

  MigrationChannel(MigrationChannel&& other) noexcept;
  MigrationChannel& operator=(MigrationChannel&& other) noexcept;
  MigrationChannel(const MigrationChannel&) = delete;
  MigrationChannel& operator=(const MigrationChannel&) = delete;
  ~MigrationChannel();

  // Sends one frame; waits up to `timeout` for the peer to take it. A type this end's role does
  // not send is refused without sending anything. A failure leaves the channel failed; a failed
  // channel sends nothing more but a refusal (kRefuse), so that the peer learns why.
  Status Send(MigrationMessageType type, std::span<const uint8_t> payload,
              std::chrono::milliseconds timeout = kMigrationSendTimeout);
  // Waits up to `timeout` for a whole frame; checks length ≤ kMaxMigrationMessage, type known
  // and sent by the peer's role, CRC (error says "checksum"), MAC (error says "authentication"),
  // sequence. Any failure leaves the channel failed (later calls return the same error), except
  // a timeout before the first byte of a frame arrived: then failed() stays false and the caller
  // may wait again.
  Result<MigrationMessage> Receive(std::chrono::milliseconds timeout);

  bool failed() const;
  MigrationRole role() const;
  // Bytes written to / read from the socket, handshake included. Safe from any thread.
  uint64_t bytes_sent() const;
  uint64_t bytes_received() const;
  int fd() const;
  // Shuts the socket down both ways without closing it: a Send or Receive blocked in another
  // thread returns an error. The channel is failed from then on.
  void Shutdown();
  void Close();  // shutdown + close; idempotent

 private:
  struct State;
  explicit MigrationChannel(std::unique_ptr<State> state);

  Status SendFrame(MigrationMessageType type, std::span<const uint8_t> payload,
                   std::chrono::milliseconds timeout);
  // *fatal = false for a timeout before the first byte of a frame.
  Result<MigrationMessage> ReceiveFrame(std::chrono::milliseconds timeout, bool* fatal);
  Status Fail(Status error);
  Status FailureOrOk() const;

  std::unique_ptr<State> state_;
};

// Sockets. "host:port" (IPv4 dotted, [v6]:port, or a name getaddrinfo resolves; name lookup
// itself is not bounded by `timeout`).
Result<UniqueFd> ConnectTcp(const std::string& host_port, std::chrono::milliseconds timeout);
// SO_REUSEADDR, backlog 4; port 0 picks a free port (see LocalPort).
Result<UniqueFd> ListenTcp(const std::string& host_port);
// Waits up to `timeout` for a connection on a ListenTcp socket.
Result<UniqueFd> AcceptTcp(int listen_fd, std::chrono::milliseconds timeout);
Result<uint16_t> LocalPort(int fd);

// Pages of guest memory: page numbers (4 KiB pages) with either their bytes or a "zero" mark.
// Encoded: u32 zero count, u32 data count, the zero page numbers (u64 each), the data page
// numbers (u64 each), then 4096 bytes per data page in that order.
struct PageBatch {
  std::vector<uint64_t> zero_pages;
  std::vector<uint64_t> data_pages;  // page numbers, each with 4096 bytes in data
  std::vector<uint8_t> data;         // data_pages.size() * 4096 bytes
};
std::vector<uint8_t> EncodePageBatch(const PageBatch& batch);
// Checks every page number < page_count, counts against the payload size, no duplicates within
// the batch, and that nothing is left over; the error names what is wrong and the offending page.
Result<PageBatch> DecodePageBatch(std::span<const uint8_t> payload, uint64_t page_count);
// Encodes `pages` (page numbers, each inside `memory`) of `memory` into batches of at most
// `max_pages` whose encoding fits kMaxMigrationMessage; pages that read as all zeros are marked
// without data.
std::vector<PageBatch> BatchPages(const GuestMemory& memory, std::span<const uint64_t> pages,
                                  size_t max_pages);
// Writes a decoded batch into memory. Zero pages are zeroed, but only where they hold something
// else, so that untouched destination memory stays unallocated.
Status ApplyPageBatch(const PageBatch& batch, GuestMemory& memory);

// Blocks of the vflash disk file, same shape: block size given by the caller (the disk's block
// size). Encoded: u32 block size, u32 count, the block numbers (u64 each), then block_size bytes
// per block in that order.
struct BlockBatch {
  uint32_t block_size;
  std::vector<uint64_t> blocks;
  std::vector<uint8_t> data;  // blocks.size() * block_size bytes
};
std::vector<uint8_t> EncodeBlockBatch(const BlockBatch& batch);
// Same checks as DecodePageBatch, and a block size between 1 and kMaxMigrationMessage.
Result<BlockBatch> DecodeBlockBatch(std::span<const uint8_t> payload, uint64_t block_count);

}  // namespace qosvisor::hv
