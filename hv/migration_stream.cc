// The migration stream: handshake, framing, TCP sockets, and the page and block batches it
// carries. Every read and write waits in poll() against a deadline, so a silent or vanished peer
// ends in an error that says which, and every length from the wire is checked before use.
#include "hv/migration_stream.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cassert>
#include <cerrno>
#include <climits>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <string_view>

#include "hv/state_codec.h"

namespace qosvisor::hv {
namespace {

// The wire is little-endian; this VMM runs only on x86-64, so integers are copied as they are.
static_assert(std::endian::native == std::endian::little);

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
using Digest = std::array<uint8_t, 32>;

constexpr std::array<uint8_t, 8> kMagic = {'Q', 'V', 'M', 'I', 'G', 'R', 'T', '\0'};
constexpr size_t kNonceBytes = 32;
constexpr size_t kHelloBytes = 48;  // magic, version, role, 3 reserved, nonce
constexpr size_t kHeaderBytes = 16;
constexpr size_t kCrcBytes = 4;
constexpr size_t kMacBytes = 16;
constexpr size_t kTrailerBytes = kCrcBytes + kMacBytes;
constexpr std::string_view kProofLabel = "qosvisor-migration-proof";
constexpr std::string_view kSessionLabel = "session";
// A key file is a few dozen random bytes; anything this large was named by mistake.
constexpr size_t kMaxKeyFileBytes = 1 << 20;
constexpr size_t kBatchHeaderBytes = 8;

template <typename T>
void StoreLe(uint8_t* p, T value) {
  std::memcpy(p, &value, sizeof(T));
}
template <typename T>
T LoadLe(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}
template <typename T>
void AppendLe(std::vector<uint8_t>& out, T value) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  StoreLe(out.data() + at, value);
}

std::span<const uint8_t> AsBytes(std::string_view s) {
  // SAFETY: char and uint8_t have the same size; the span covers the view's bytes.
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string Hex(std::span<const uint8_t> bytes) {
  std::string out;
  for (uint8_t b : bytes) out += fmt::format("{}{:02x}", out.empty() ? "" : " ", b);
  return out;
}

// HMAC-SHA256 under one key: keyed once, the keyed context duplicated per message (cheaper than
// keying again, and the template stays untouched for the other thread of a channel).
class Hmac {
 public:
  Hmac() = default;
  static Result<Hmac> Create(std::span<const uint8_t> key) {
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (mac == nullptr) return Status::Error("migration: OpenSSL offers no HMAC");
    Hmac h;
    h.keyed_.reset(EVP_MAC_CTX_new(mac));
    EVP_MAC_free(mac);  // the context keeps its own reference
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                                 OSSL_PARAM_construct_end()};
    if (!h.keyed_ || EVP_MAC_init(h.keyed_.get(), key.data(), key.size(), params) != 1) {
      return Status::Error("migration: OpenSSL could not key HMAC-SHA256");
    }
    return h;
  }

  // HMAC of the concatenation of `parts`; false only if OpenSSL fails (out of memory).
  [[nodiscard]] bool Compute(std::initializer_list<std::span<const uint8_t>> parts,
                             Digest* out) const {
    std::unique_ptr<EVP_MAC_CTX, CtxFree> ctx(EVP_MAC_CTX_dup(keyed_.get()));
    if (!ctx) return false;
    for (std::span<const uint8_t> part : parts) {
      if (EVP_MAC_update(ctx.get(), part.data(), part.size()) != 1) return false;
    }
    size_t len = 0;
    return EVP_MAC_final(ctx.get(), out->data(), &len, out->size()) == 1 && len == out->size();
  }

 private:
  struct CtxFree {
    void operator()(EVP_MAC_CTX* ctx) const { EVP_MAC_CTX_free(ctx); }
  };
  std::unique_ptr<EVP_MAC_CTX, CtxFree> keyed_;
};

// What became of a read or write that waited against a deadline.
struct Io {
  enum Kind { kDone, kTimeout, kClosed, kError } kind = kDone;
  int error = 0;    // errno for kError
  size_t done = 0;  // bytes moved before it ended
};

int MillisLeft(Deadline deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<decltype(left)>(left, 0, INT_MAX));
}

Io PollFor(int fd, short events, Deadline deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, MillisLeft(deadline));
    // Readiness includes POLLHUP/POLLERR: the read or write that follows says what happened.
    if (r > 0) return {};
    if (r == 0) return {Io::kTimeout};
    if (errno != EINTR) return {Io::kError, errno};
  }
}

Io ReadFull(int fd, std::span<uint8_t> buf, Deadline deadline) {
  size_t done = 0;
  while (done < buf.size()) {
    const ssize_t n = ::recv(fd, buf.data() + done, buf.size() - done, MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return {Io::kClosed, 0, done};
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return {Io::kClosed, errno, done};
    if (errno != EAGAIN && errno != EWOULDBLOCK) return {Io::kError, errno, done};
    Io waited = PollFor(fd, POLLIN, deadline);
    if (waited.kind != Io::kDone) return {waited.kind, waited.error, done};
  }
  return {Io::kDone, 0, done};
}

// Drops the first `n` bytes of the vectors starting at iov[*first].
void Advance(std::span<iovec> iov, size_t* first, size_t n) {
  while (n > 0 && *first < iov.size()) {
    iovec& v = iov[*first];
    const size_t take = std::min(n, v.iov_len);
    v.iov_base = static_cast<uint8_t*>(v.iov_base) + take;
    v.iov_len -= take;
    n -= take;
    if (v.iov_len == 0) ++*first;
  }
}

// MSG_NOSIGNAL: a peer that vanished is an EPIPE error here, never a SIGPIPE for the process.
Io WriteAll(int fd, std::span<iovec> iov, Deadline deadline) {
  size_t first = 0, done = 0;
  Advance(iov, &first, 0);
  while (first < iov.size()) {
    if (iov[first].iov_len == 0) {
      ++first;
      continue;
    }
    msghdr msg{};
    msg.msg_iov = &iov[first];
    msg.msg_iovlen = std::min<size_t>(iov.size() - first, IOV_MAX);
    const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      done += static_cast<size_t>(n);
      Advance(iov, &first, static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) return {Io::kClosed, errno, done};
    if (errno != EAGAIN && errno != EWOULDBLOCK) return {Io::kError, errno, done};
    Io waited = PollFor(fd, POLLOUT, deadline);
    if (waited.kind != Io::kDone) return {waited.kind, waited.error, done};
  }
  return {Io::kDone, 0, done};
}

Io WriteBytes(int fd, std::span<const uint8_t> bytes, Deadline deadline) {
  // SAFETY: sendmsg only reads through iov_base; the cast drops const for the iovec type alone.
  iovec v{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  return WriteAll(fd, {&v, 1}, deadline);
}

// "<what>: timed out after 500 ms", "<what>: connection closed by the peer", ...
Status IoError(const Io& io, std::string_view what, std::chrono::milliseconds timeout) {
  switch (io.kind) {
    case Io::kTimeout:
      return Status::Error(fmt::format("{}: timed out after {} ms", what, timeout.count()));
    case Io::kClosed:
      return Status::Error(fmt::format("{}: connection closed by the peer{}", what,
                                       io.error == ECONNRESET ? " (reset)" : ""));
    case Io::kError:
      return Status::Error(fmt::format("{}: {}", what, std::strerror(io.error)));
    case Io::kDone:
      break;
  }
  return Status::Ok();
}

Status PrepareSocket(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return Status::Error(fmt::format("migration: socket {} cannot be made non-blocking: {}", fd,
                                     std::strerror(errno)));
  }
  // Small control messages (round end, complete, resumed) sit on the downtime path; Nagle would
  // hold them back. Fails harmlessly on a Unix socket.
  const int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return Status::Ok();
}

bool KnownType(uint16_t type) {
  return type >= static_cast<uint16_t>(MigrationMessageType::kOffer) &&
         type <= static_cast<uint16_t>(MigrationMessageType::kCommit);
}

MigrationRole PeerOf(MigrationRole role) {
  return role == MigrationRole::kSource ? MigrationRole::kDestination : MigrationRole::kSource;
}

}  // namespace

const char* MigrationRoleName(MigrationRole role) {
  switch (role) {
    case MigrationRole::kSource:
      return "source";
    case MigrationRole::kDestination:
      return "destination";
  }
  return "unknown role";
}

const char* MigrationMessageTypeName(MigrationMessageType type) {
  switch (type) {
    case MigrationMessageType::kOffer:
      return "offer";
    case MigrationMessageType::kAccept:
      return "accept";
    case MigrationMessageType::kRefuse:
      return "refuse";
    case MigrationMessageType::kMemoryPages:
      return "memory-pages";
    case MigrationMessageType::kDiskBlocks:
      return "disk-blocks";
    case MigrationMessageType::kRoundEnd:
      return "round-end";
    case MigrationMessageType::kDeviceState:
      return "device-state";
    case MigrationMessageType::kComplete:
      return "complete";
    case MigrationMessageType::kResumed:
      return "resumed";
    case MigrationMessageType::kAbort:
      return "abort";
    case MigrationMessageType::kReady:
      return "ready";
    case MigrationMessageType::kCommit:
      return "commit";
  }
  return "unknown";
}

bool MigrationRoleSends(MigrationRole role, MigrationMessageType type) {
  switch (type) {
    case MigrationMessageType::kRefuse:
      return true;
    case MigrationMessageType::kAccept:
    case MigrationMessageType::kResumed:
    case MigrationMessageType::kReady:
      return role == MigrationRole::kDestination;
    case MigrationMessageType::kOffer:
    case MigrationMessageType::kMemoryPages:
    case MigrationMessageType::kDiskBlocks:
    case MigrationMessageType::kRoundEnd:
    case MigrationMessageType::kDeviceState:
    case MigrationMessageType::kComplete:
    case MigrationMessageType::kAbort:
    case MigrationMessageType::kCommit:
      return role == MigrationRole::kSource;
  }
  return false;
}

// ---- Key ----

Result<MigrationKey> LoadMigrationKey(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) {
    return Status::Error(fmt::format("migration key file {}: {}", path, std::strerror(errno)));
  }
  // fstat on the open file: the mode checked is the mode of the bytes read.
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Status::Error(fmt::format("migration key file {}: {}", path, std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return Status::Error(fmt::format("migration key file {}: not a regular file", path));
  }
  const unsigned mode = st.st_mode & 07777;
  if ((mode & 077) != 0) {
    return Status::Error(fmt::format(
        "migration key file {}: mode {:04o} lets group or other users access the key; make it "
        "private to its owner (chmod 600 {})",
        path, mode, path));
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxKeyFileBytes) {
    return Status::Error(
        fmt::format("migration key file {}: {} bytes is too large for a key "
                    "file (at most {})",
                    path, st.st_size, kMaxKeyFileBytes));
  }
  std::vector<uint8_t> contents(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < contents.size()) {
    const ssize_t n = ::read(fd.get(), contents.data() + got, contents.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return Status::Error(fmt::format("migration key file {}: {}", path, std::strerror(errno)));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  contents.resize(got);
  if (got < 32) {
    OPENSSL_cleanse(contents.data(), contents.size());
    return Status::Error(fmt::format(
        "migration key file {}: holds {} bytes, a key needs at least 32 (e.g. head -c 32 "
        "/dev/urandom > {})",
        path, got, path));
  }
  MigrationKey key;
  unsigned int len = 0;
  const bool hashed = EVP_Digest(contents.data(), contents.size(), key.bytes.data(), &len,
                                 EVP_sha256(), nullptr) == 1;
  OPENSSL_cleanse(contents.data(), contents.size());
  if (!hashed || len != key.bytes.size()) {
    return Status::Error(fmt::format("migration key file {}: OpenSSL could not hash it", path));
  }
  return key;
}

// ---- Channel ----

struct MigrationChannel::State {
  UniqueFd fd;
  MigrationRole role = MigrationRole::kSource;
  Hmac frame_mac;
  uint64_t send_sequence = 0;     // the sending thread's
  uint64_t receive_sequence = 0;  // the receiving thread's
  std::atomic<uint64_t> bytes_sent{0};
  std::atomic<uint64_t> bytes_received{0};
  std::atomic<bool> failed{false};
  std::mutex failure_mutex;
  Status failure;  // the first failure; guarded by failure_mutex
};

MigrationChannel::MigrationChannel(std::unique_ptr<State> state) : state_(std::move(state)) {}
MigrationChannel::MigrationChannel(MigrationChannel&& other) noexcept = default;
MigrationChannel& MigrationChannel::operator=(MigrationChannel&& other) noexcept = default;
MigrationChannel::~MigrationChannel() = default;

namespace {

struct Hello {
  MigrationRole role;
  std::array<uint8_t, kNonceBytes> nonce;
};

std::array<uint8_t, kHelloBytes> EncodeHello(const Hello& hello) {
  std::array<uint8_t, kHelloBytes> out{};
  std::copy(kMagic.begin(), kMagic.end(), out.begin());
  StoreLe<uint32_t>(out.data() + 8, kMigrationVersion);
  out[12] = static_cast<uint8_t>(hello.role);
  std::copy(hello.nonce.begin(), hello.nonce.end(), out.begin() + 16);
  return out;
}

// Checks the peer's hello (whose magic was checked as it arrived) against this end's role.
Result<Hello> DecodeHello(const std::array<uint8_t, kHelloBytes>& in, MigrationRole own_role) {
  const auto version = LoadLe<uint32_t>(in.data() + 8);
  if (version != kMigrationVersion) {
    return Status::Error(
        fmt::format("migration handshake: the peer speaks protocol version {}, this end version {}",
                    version, kMigrationVersion));
  }
  const uint8_t role = in[12];
  if (role != static_cast<uint8_t>(MigrationRole::kSource) &&
      role != static_cast<uint8_t>(MigrationRole::kDestination)) {
    return Status::Error(
        fmt::format("migration handshake: the peer's hello names role {}, neither source (1) nor "
                    "destination (2)",
                    role));
  }
  if (in[13] != 0 || in[14] != 0 || in[15] != 0) {
    return Status::Error("migration handshake: the peer's hello has non-zero reserved bytes");
  }
  Hello hello{static_cast<MigrationRole>(role), {}};
  if (hello.role == own_role) {
    return Status::Error(fmt::format(
        "migration handshake: both ends are the {}; one must be the source, the other the "
        "destination",
        MigrationRoleName(own_role)));
  }
  std::copy(in.begin() + 16, in.end(), hello.nonce.begin());
  return hello;
}

// Reads the peer's hello, the magic first on its own: something that is not a migration peer
// (an HTTP client, a port scanner) is named as such at once rather than after the timeout.
Result<Hello> ReadHello(int fd, MigrationRole own_role, Deadline deadline,
                        std::chrono::milliseconds timeout, std::atomic<uint64_t>& received) {
  std::array<uint8_t, kHelloBytes> in{};
  Io io = ReadFull(fd, std::span(in).first(kMagic.size()), deadline);
  received += io.done;
  if (io.kind != Io::kDone) {
    return IoError(io, "migration handshake: waiting for the peer's hello", timeout);
  }
  if (!std::equal(kMagic.begin(), kMagic.end(), in.begin())) {
    return Status::Error(fmt::format(
        "migration handshake: wrong magic from the peer ({}; expected 51 56 4d 49 47 52 54 00, "
        "\"QVMIGRT\\0\"): it is not a qosvisor migration endpoint",
        Hex(std::span(in).first(kMagic.size()))));
  }
  io = ReadFull(fd, std::span(in).subspan(kMagic.size()), deadline);
  received += io.done;
  if (io.kind != Io::kDone) {
    return IoError(io, "migration handshake: reading the peer's hello", timeout);
  }
  return DecodeHello(in, own_role);
}

// The proof that `role`, whose nonce is `own`, holds the key (`peer`: the other end's nonce).
Result<Digest> Proof(const Hmac& key_mac, MigrationRole role, std::span<const uint8_t> own,
                     std::span<const uint8_t> peer) {
  const uint8_t role_byte = static_cast<uint8_t>(role);
  Digest proof{};
  if (!key_mac.Compute({AsBytes(kProofLabel), {&role_byte, 1}, own, peer}, &proof)) {
    return Status::Error("migration handshake: OpenSSL failed to compute HMAC-SHA256");
  }
  return proof;
}

}  // namespace

Result<MigrationChannel> MigrationChannel::Handshake(UniqueFd socket, const MigrationKey& key,
                                                     MigrationRole role,
                                                     std::chrono::milliseconds timeout) {
  const Deadline deadline = Clock::now() + timeout;
  if (!socket.valid()) return Status::Error("migration handshake: no socket");
  if (Status s = PrepareSocket(socket.get()); !s) return s;
  auto state = std::make_unique<State>();
  state->fd = std::move(socket);
  state->role = role;
  const int fd = state->fd.get();

  Hello own{role, {}};
  if (RAND_bytes(own.nonce.data(), static_cast<int>(own.nonce.size())) != 1) {
    return Status::Error("migration handshake: OpenSSL's random generator failed");
  }
  // Both ends send first, then read: neither waits on the other, and each can name what is
  // wrong with the other's hello.
  const auto hello_bytes = EncodeHello(own);
  Io io = WriteBytes(fd, hello_bytes, deadline);
  state->bytes_sent += io.done;
  if (io.kind != Io::kDone) return IoError(io, "migration handshake: sending our hello", timeout);
  Result<Hello> peer = ReadHello(fd, role, deadline, timeout, state->bytes_received);
  if (!peer.ok()) return peer.status();

  Result<Hmac> key_mac = Hmac::Create(key.bytes);
  if (!key_mac.ok()) return key_mac.status();
  Result<Digest> own_proof = Proof(*key_mac, role, own.nonce, peer->nonce);
  Result<Digest> expected = Proof(*key_mac, peer->role, peer->nonce, own.nonce);
  if (!own_proof.ok()) return own_proof.status();
  if (!expected.ok()) return expected.status();
  io = WriteBytes(fd, *own_proof, deadline);
  state->bytes_sent += io.done;
  if (io.kind != Io::kDone) return IoError(io, "migration handshake: sending our proof", timeout);
  Digest peer_proof{};
  io = ReadFull(fd, peer_proof, deadline);
  state->bytes_received += io.done;
  if (io.kind != Io::kDone) {
    return IoError(io, "migration handshake: waiting for the peer's proof of the key", timeout);
  }
  if (CRYPTO_memcmp(peer_proof.data(), expected->data(), peer_proof.size()) != 0) {
    return Status::Error(fmt::format(
        "migration handshake: authentication failed: the {}'s proof does not match this end's "
        "key (the two ends' migration key files differ)",
        MigrationRoleName(peer->role)));
  }

  const auto& source_nonce = role == MigrationRole::kSource ? own.nonce : peer->nonce;
  const auto& dest_nonce = role == MigrationRole::kSource ? peer->nonce : own.nonce;
  Digest session{};
  if (!key_mac->Compute({AsBytes(kSessionLabel), source_nonce, dest_nonce}, &session)) {
    return Status::Error("migration handshake: OpenSSL failed to compute HMAC-SHA256");
  }
  Result<Hmac> frame_mac = Hmac::Create(session);
  OPENSSL_cleanse(session.data(), session.size());
  if (!frame_mac.ok()) return frame_mac.status();
  state->frame_mac = std::move(*frame_mac);
  return MigrationChannel(std::move(state));
}

MigrationChannel MigrationChannel::ForTesting(UniqueFd socket, std::array<uint8_t, 32> session_key,
                                              MigrationRole role) {
  auto state = std::make_unique<State>();
  if (socket.valid()) (void)PrepareSocket(socket.get());
  state->fd = std::move(socket);
  state->role = role;
  Result<Hmac> frame_mac = Hmac::Create(session_key);
  if (frame_mac.ok()) {
    state->frame_mac = std::move(*frame_mac);
  } else {
    state->failure = frame_mac.status();
    state->failed = true;
  }
  return MigrationChannel(std::move(state));
}

Status MigrationChannel::Fail(Status error) {
  std::lock_guard lock(state_->failure_mutex);
  if (state_->failure.ok()) state_->failure = error;
  state_->failed = true;
  return error;
}

Status MigrationChannel::FailureOrOk() const {
  if (!state_) return Status::Error("migration: the channel was moved away");
  if (!state_->failed) return Status::Ok();
  std::lock_guard lock(state_->failure_mutex);
  return state_->failure;
}

Status MigrationChannel::Send(MigrationMessageType type, std::span<const uint8_t> payload,
                              std::chrono::milliseconds timeout) {
  // A refusal still goes out after this end found the peer's stream bad: the peer should learn
  // why. If the outgoing direction is what failed, the write fails again by itself.
  if (type != MigrationMessageType::kRefuse) {
    if (Status failure = FailureOrOk(); !failure) return failure;
  }
  if (!KnownType(static_cast<uint16_t>(type))) {
    return Status::Error(
        fmt::format("migration: cannot send unknown message type {}", static_cast<int>(type)));
  }
  if (!MigrationRoleSends(state_->role, type)) {
    return Status::Error(fmt::format("migration: the {} does not send {} messages",
                                     MigrationRoleName(state_->role),
                                     MigrationMessageTypeName(type)));
  }
  if (payload.size() > kMaxMigrationMessage) {
    return Status::Error(fmt::format("migration: a {} message of {} bytes exceeds the limit of {}",
                                     MigrationMessageTypeName(type), payload.size(),
                                     kMaxMigrationMessage));
  }
  Status sent = SendFrame(type, payload, timeout);
  return sent.ok() ? sent : Fail(sent);
}

Status MigrationChannel::SendFrame(MigrationMessageType type, std::span<const uint8_t> payload,
                                   std::chrono::milliseconds timeout) {
  const Deadline deadline = Clock::now() + timeout;
  const uint64_t sequence = state_->send_sequence;
  std::array<uint8_t, kHeaderBytes> header{};
  StoreLe<uint16_t>(header.data(), static_cast<uint16_t>(type));
  StoreLe<uint16_t>(header.data() + 2, static_cast<uint8_t>(state_->role));  // flags: sender
  StoreLe<uint32_t>(header.data() + 4, static_cast<uint32_t>(payload.size()));
  StoreLe<uint64_t>(header.data() + 8, sequence);

  std::array<uint8_t, kTrailerBytes> trailer{};
  StoreLe<uint32_t>(trailer.data(), Crc32c(payload, Crc32c(header)));
  Digest mac{};
  if (!state_->frame_mac.Compute({header, payload, std::span(trailer).first(kCrcBytes)}, &mac)) {
    return Status::Error("migration: OpenSSL failed to compute HMAC-SHA256");
  }
  std::copy_n(mac.begin(), kMacBytes, trailer.begin() + kCrcBytes);

  // SAFETY: sendmsg only reads through iov_base; the casts drop const for the iovec type alone.
  std::array<iovec, 3> iov = {iovec{header.data(), header.size()},
                              iovec{const_cast<uint8_t*>(payload.data()), payload.size()},
                              iovec{trailer.data(), trailer.size()}};
  const Io io = WriteAll(state_->fd.get(), iov, deadline);
  state_->bytes_sent += io.done;
  if (io.kind != Io::kDone) {
    return IoError(io,
                   fmt::format("migration: sending {} message {} ({} bytes) to the {}",
                               MigrationMessageTypeName(type), sequence, payload.size(),
                               MigrationRoleName(PeerOf(state_->role))),
                   timeout);
  }
  ++state_->send_sequence;
  return Status::Ok();
}

Result<MigrationMessage> MigrationChannel::Receive(std::chrono::milliseconds timeout) {
  if (Status failure = FailureOrOk(); !failure) return failure;
  bool fatal = true;
  Result<MigrationMessage> message = ReceiveFrame(timeout, &fatal);
  if (!message.ok() && fatal) return Fail(message.status());
  return message;
}

Result<MigrationMessage> MigrationChannel::ReceiveFrame(std::chrono::milliseconds timeout,
                                                        bool* fatal) {
  const Deadline deadline = Clock::now() + timeout;
  const int fd = state_->fd.get();
  const MigrationRole peer = PeerOf(state_->role);
  std::array<uint8_t, kHeaderBytes> header{};
  Io io = ReadFull(fd, header, deadline);
  state_->bytes_received += io.done;
  if (io.kind == Io::kTimeout && io.done == 0) {
    *fatal = false;
    return Status::Error(fmt::format("migration: no message from the {} within {} ms",
                                     MigrationRoleName(peer), timeout.count()));
  }
  if (io.kind != Io::kDone) {
    return IoError(
        io, fmt::format("migration: receiving a frame header from the {}", MigrationRoleName(peer)),
        timeout);
  }
  const auto raw_type = LoadLe<uint16_t>(header.data());
  const auto flags = LoadLe<uint16_t>(header.data() + 2);
  const auto length = LoadLe<uint32_t>(header.data() + 4);
  const auto sequence = LoadLe<uint64_t>(header.data() + 8);
  // Checked before anything is allocated for the payload.
  if (length > kMaxMigrationMessage) {
    return Status::Error(fmt::format(
        "migration: frame from the {} announces a payload of {} bytes, more than the limit of {} "
        "(a corrupted or hostile stream)",
        MigrationRoleName(peer), length, kMaxMigrationMessage));
  }
  if (!KnownType(raw_type)) {
    return Status::Error(fmt::format("migration: frame from the {} has unknown message type {}",
                                     MigrationRoleName(peer), raw_type));
  }
  const auto type = static_cast<MigrationMessageType>(raw_type);
  const char* type_name = MigrationMessageTypeName(type);

  MigrationMessage message{type, std::vector<uint8_t>(length)};
  std::array<uint8_t, kTrailerBytes> trailer{};
  std::array<iovec, 2> iov = {iovec{message.payload.data(), message.payload.size()},
                              iovec{trailer.data(), trailer.size()}};
  for (iovec& part : iov) {
    io = ReadFull(fd, {static_cast<uint8_t*>(part.iov_base), part.iov_len}, deadline);
    state_->bytes_received += io.done;
    if (io.kind != Io::kDone) {
      return IoError(io,
                     fmt::format("migration: receiving {} message {} ({} bytes) from the {}",
                                 type_name, sequence, length, MigrationRoleName(peer)),
                     timeout);
    }
  }

  const uint32_t crc = Crc32c(message.payload, Crc32c(header));
  if (crc != LoadLe<uint32_t>(trailer.data())) {
    return Status::Error(fmt::format(
        "migration: checksum mismatch in {} message {} from the {} (the stream was corrupted "
        "in transit)",
        type_name, sequence, MigrationRoleName(peer)));
  }
  Digest mac{};
  if (!state_->frame_mac.Compute({header, message.payload, std::span(trailer).first(kCrcBytes)},
                                 &mac)) {
    return Status::Error("migration: OpenSSL failed to compute HMAC-SHA256");
  }
  if (CRYPTO_memcmp(mac.data(), trailer.data() + kCrcBytes, kMacBytes) != 0) {
    return Status::Error(fmt::format(
        "migration: authentication failed for {} message {}: its MAC does not match this "
        "session's key (the frame was forged or altered)",
        type_name, sequence));
  }
  if (flags != static_cast<uint8_t>(peer)) {
    return Status::Error(fmt::format(
        "migration: {} message {} is marked as sent by the {} (flags {:#x}), not by the {}: a "
        "frame reflected back to its sender",
        type_name, sequence, MigrationRoleName(state_->role), flags, MigrationRoleName(peer)));
  }
  if (sequence != state_->receive_sequence) {
    return Status::Error(fmt::format(
        "migration: sequence error: expected frame {} from the {}, got {} (a replayed, dropped "
        "or reordered frame)",
        state_->receive_sequence, MigrationRoleName(peer), sequence));
  }
  if (!MigrationRoleSends(peer, type)) {
    return Status::Error(fmt::format("migration: the {} sent a {} message, which only the {} sends",
                                     MigrationRoleName(peer), type_name,
                                     MigrationRoleName(state_->role)));
  }
  ++state_->receive_sequence;
  return message;
}

bool MigrationChannel::failed() const { return !state_ || state_->failed; }
MigrationRole MigrationChannel::role() const { return state_->role; }
uint64_t MigrationChannel::bytes_sent() const { return state_ ? state_->bytes_sent.load() : 0; }
uint64_t MigrationChannel::bytes_received() const {
  return state_ ? state_->bytes_received.load() : 0;
}
int MigrationChannel::fd() const { return state_ ? state_->fd.get() : -1; }

void MigrationChannel::Shutdown() {
  if (!state_ || !state_->fd.valid()) return;
  ::shutdown(state_->fd.get(), SHUT_RDWR);
  (void)Fail(Status::Error("migration: the channel was shut down by this end"));
}

void MigrationChannel::Close() {
  if (!state_ || !state_->fd.valid()) return;
  Shutdown();
  state_->fd.Reset();
}

// ---- Sockets ----

namespace {

struct HostPort {
  std::string host;
  std::string port;
};

// "host:port" or "[v6]:port"; the port a number 0..65535.
Result<HostPort> SplitHostPort(const std::string& host_port) {
  HostPort hp;
  size_t colon;
  if (!host_port.empty() && host_port.front() == '[') {
    const size_t close = host_port.find(']');
    if (close == std::string::npos || close + 1 >= host_port.size() ||
        host_port[close + 1] != ':') {
      return Status::Error(
          fmt::format("migration address '{}': write an IPv6 address as [addr]:port", host_port));
    }
    hp.host = host_port.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = host_port.rfind(':');
    if (colon == std::string::npos) {
      return Status::Error(
          fmt::format("migration address '{}': no port; use host:port", host_port));
    }
    hp.host = host_port.substr(0, colon);
    if (hp.host.find(':') != std::string::npos) {
      return Status::Error(
          fmt::format("migration address '{}': write an IPv6 address as [addr]:port", host_port));
    }
  }
  hp.port = host_port.substr(colon + 1);
  const bool digits =
      !hp.port.empty() && hp.port.size() <= 5 &&
      std::all_of(hp.port.begin(), hp.port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (hp.host.empty() || !digits || std::stoul(hp.port) > 65535) {
    return Status::Error(fmt::format(
        "migration address '{}': expected host:port with a port from 0 to 65535", host_port));
  }
  return hp;
}

struct AddrInfoFree {
  void operator()(addrinfo* ai) const { ::freeaddrinfo(ai); }
};
using AddrInfoList = std::unique_ptr<addrinfo, AddrInfoFree>;

Result<AddrInfoList> Resolve(const std::string& host_port, bool passive) {
  Result<HostPort> hp = SplitHostPort(host_port);
  if (!hp.ok()) return hp.status();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* list = nullptr;
  const int rc = ::getaddrinfo(hp->host.c_str(), hp->port.c_str(), &hints, &list);
  if (rc != 0) {
    return Status::Error(fmt::format("migration address '{}': cannot resolve '{}': {}", host_port,
                                     hp->host, ::gai_strerror(rc)));
  }
  return AddrInfoList(list);
}

void SetNoDelay(int fd) {
  const int one = 1;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Connects one resolved address; "" on success, else why not.
std::string ConnectOne(const addrinfo& ai, Deadline deadline, std::chrono::milliseconds timeout,
                       UniqueFd* out) {
  UniqueFd fd(
      ::socket(ai.ai_family, ai.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai.ai_protocol));
  if (!fd.valid()) return std::strerror(errno);
  if (::connect(fd.get(), ai.ai_addr, ai.ai_addrlen) != 0) {
    if (errno != EINPROGRESS && errno != EINTR) return std::strerror(errno);
    const Io waited = PollFor(fd.get(), POLLOUT, deadline);
    if (waited.kind == Io::kTimeout) return fmt::format("timed out after {} ms", timeout.count());
    if (waited.kind == Io::kError) return std::strerror(waited.error);
    int error = 0;
    socklen_t len = sizeof(error);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
    if (error != 0) return std::strerror(error);
  }
  SetNoDelay(fd.get());
  *out = std::move(fd);
  return "";
}

}  // namespace

Result<UniqueFd> ConnectTcp(const std::string& host_port, std::chrono::milliseconds timeout) {
  const Deadline deadline = Clock::now() + timeout;
  Result<AddrInfoList> list = Resolve(host_port, false);
  if (!list.ok()) return list.status();
  std::string why = "no address";
  for (const addrinfo* ai = list->get(); ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd;
    why = ConnectOne(*ai, deadline, timeout, &fd);
    if (why.empty()) return fd;
  }
  return Status::Error(fmt::format("migration: connecting to {}: {}", host_port, why));
}

Result<UniqueFd> ListenTcp(const std::string& host_port) {
  Result<AddrInfoList> list = Resolve(host_port, true);
  if (!list.ok()) return list.status();
  std::string why = "no address";
  for (const addrinfo* ai = list->get(); ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    const int one = 1;
    // Free bind: the address may belong to the switch's own tap port, whose interface gets it
    // only once the switch runs, after the listener is up.
    const bool v6 = ai->ai_family == AF_INET6;
    if (!fd.valid() || ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        ::setsockopt(fd.get(), v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_FREEBIND : IP_FREEBIND,
                     &one, sizeof(one)) != 0 ||
        ::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd.get(), 4) != 0) {
      why = std::strerror(errno);
      continue;
    }
    return fd;
  }
  return Status::Error(fmt::format("migration: cannot listen on {}: {}", host_port, why));
}

Result<UniqueFd> AcceptTcp(int listen_fd, std::chrono::milliseconds timeout) {
  const Deadline deadline = Clock::now() + timeout;
  for (;;) {
    UniqueFd fd(::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (fd.valid()) {
      SetNoDelay(fd.get());
      return fd;
    }
    // A connection that was reset while queued is not an error of the listener.
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
      return Status::Error(
          fmt::format("migration: accepting on socket {}: {}", listen_fd, std::strerror(errno)));
    }
    const Io waited = PollFor(listen_fd, POLLIN, deadline);
    if (waited.kind != Io::kDone) {
      return IoError(waited,
                     fmt::format("migration: waiting for a connection on socket {}", listen_fd),
                     timeout);
    }
  }
}

Result<uint16_t> LocalPort(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  // SAFETY: sockaddr_storage is large and aligned enough for every socket address type.
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return Status::Error(fmt::format("migration: socket {}: {}", fd, std::strerror(errno)));
  }
  // SAFETY: ss_family says which address type getsockname stored.
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return Status::Error(fmt::format("migration: socket {} is not an IP socket", fd));
}

// ---- Page and block batches ----

namespace {

bool IsZero(const uint8_t* p, size_t n) {
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

// Host address of guest page `page`, or nullptr outside memory (no overflow for any page).
uint8_t* PagePtr(const GuestMemory& memory, uint64_t page) {
  if (page >= memory.size() / kMigrationPageSize) return nullptr;
  return memory.HostPtr(page * kMigrationPageSize, kMigrationPageSize);
}

// Reads `count` u64 numbers at `at`, each < `limit`, naming `what` ("page", "block") otherwise.
Status ReadNumbers(std::span<const uint8_t> payload, size_t at, uint32_t count, uint64_t limit,
                   std::string_view batch, std::string_view what, std::vector<uint64_t>* out) {
  out->resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    const auto n = LoadLe<uint64_t>(payload.data() + at + 8ull * i);
    if (n >= limit) {
      return Status::Error(
          fmt::format("{}: {} {} is out of range (there are {} {}s)", batch, what, n, limit, what));
    }
    (*out)[i] = n;
  }
  return Status::Ok();
}

Status CheckNoDuplicates(std::vector<uint64_t> numbers, std::string_view batch,
                         std::string_view what) {
  std::sort(numbers.begin(), numbers.end());
  const auto twice = std::adjacent_find(numbers.begin(), numbers.end());
  if (twice == numbers.end()) return Status::Ok();
  return Status::Error(fmt::format("{}: {} {} appears twice", batch, what, *twice));
}

// The exact size check of a batch: `need` bytes for what its counts announce.
Status CheckSize(std::span<const uint8_t> payload, uint64_t need, std::string_view batch,
                 std::string_view counted) {
  if (payload.size() < need) {
    return Status::Error(fmt::format("{}: truncated: {} need {} bytes, the payload has {}", batch,
                                     counted, need, payload.size()));
  }
  if (payload.size() > need) {
    return Status::Error(
        fmt::format("{}: {} trailing bytes after {}", batch, payload.size() - need, counted));
  }
  return Status::Ok();
}

}  // namespace

std::vector<uint8_t> EncodePageBatch(const PageBatch& batch) {
  assert(batch.data.size() == batch.data_pages.size() * kMigrationPageSize);
  std::vector<uint8_t> out;
  out.reserve(kBatchHeaderBytes + 8 * (batch.zero_pages.size() + batch.data_pages.size()) +
              batch.data.size());
  AppendLe<uint32_t>(out, static_cast<uint32_t>(batch.zero_pages.size()));
  AppendLe<uint32_t>(out, static_cast<uint32_t>(batch.data_pages.size()));
  for (uint64_t page : batch.zero_pages) AppendLe<uint64_t>(out, page);
  for (uint64_t page : batch.data_pages) AppendLe<uint64_t>(out, page);
  out.insert(out.end(), batch.data.begin(), batch.data.end());
  return out;
}

Result<PageBatch> DecodePageBatch(std::span<const uint8_t> payload, uint64_t page_count) {
  constexpr std::string_view kWhat = "migration page batch";
  if (payload.size() < kBatchHeaderBytes) {
    return Status::Error(fmt::format("{}: truncated: {} bytes, less than its {}-byte header", kWhat,
                                     payload.size(), kBatchHeaderBytes));
  }
  const auto zeros = LoadLe<uint32_t>(payload.data());
  const auto datas = LoadLe<uint32_t>(payload.data() + 4);
  // Counts below 2^32 each: no overflow in 64 bits.
  const uint64_t need =
      kBatchHeaderBytes + 8ull * (uint64_t{zeros} + datas) + uint64_t{datas} * kMigrationPageSize;
  const std::string counted = fmt::format("{} zero and {} data pages", zeros, datas);
  if (Status s = CheckSize(payload, need, kWhat, counted); !s) return s;

  PageBatch batch;
  size_t at = kBatchHeaderBytes;
  if (Status s = ReadNumbers(payload, at, zeros, page_count, kWhat, "page", &batch.zero_pages);
      !s) {
    return s;
  }
  at += 8ull * zeros;
  if (Status s = ReadNumbers(payload, at, datas, page_count, kWhat, "page", &batch.data_pages);
      !s) {
    return s;
  }
  at += 8ull * datas;
  std::vector<uint64_t> all = batch.zero_pages;
  all.insert(all.end(), batch.data_pages.begin(), batch.data_pages.end());
  if (Status s = CheckNoDuplicates(std::move(all), kWhat, "page"); !s) return s;
  batch.data.assign(payload.begin() + static_cast<ptrdiff_t>(at), payload.end());
  return batch;
}

std::vector<PageBatch> BatchPages(const GuestMemory& memory, std::span<const uint64_t> pages,
                                  size_t max_pages) {
  max_pages = std::max<size_t>(max_pages, 1);
  std::vector<PageBatch> batches;
  PageBatch current;
  uint64_t encoded = kBatchHeaderBytes;
  size_t count = 0;
  std::array<uint8_t, kMigrationPageSize> copy{};
  for (uint64_t page : pages) {
    const uint8_t* src = PagePtr(memory, page);
    assert(src != nullptr && "BatchPages: a page outside guest memory");
    if (src == nullptr) continue;
    // The guest and the devices may write the page while it is read (pre-copy runs beside
    // them): one copy, then the zero test and the batch both see the same bytes. A write that
    // lands meanwhile is in the next harvest, and the page goes again.
    std::memcpy(copy.data(), src, kMigrationPageSize);
    src = copy.data();
    const bool zero = IsZero(src, kMigrationPageSize);
    const uint64_t cost = zero ? 8 : 8 + kMigrationPageSize;
    if (count == max_pages || encoded + cost > kMaxMigrationMessage) {
      batches.push_back(std::move(current));
      current = PageBatch();
      encoded = kBatchHeaderBytes;
      count = 0;
    }
    if (zero) {
      current.zero_pages.push_back(page);
    } else {
      current.data_pages.push_back(page);
      current.data.insert(current.data.end(), src, src + kMigrationPageSize);
    }
    encoded += cost;
    ++count;
  }
  if (count > 0) batches.push_back(std::move(current));
  return batches;
}

Status ApplyPageBatch(const PageBatch& batch, GuestMemory& memory) {
  if (batch.data.size() != batch.data_pages.size() * kMigrationPageSize) {
    return Status::Error(fmt::format("migration page batch: {} data pages but {} bytes of data",
                                     batch.data_pages.size(), batch.data.size()));
  }
  // Everything is checked before the first byte is written: a bad batch changes nothing.
  for (const auto* list : {&batch.zero_pages, &batch.data_pages}) {
    for (uint64_t page : *list) {
      if (PagePtr(memory, page) == nullptr) {
        return Status::Error(
            fmt::format("migration page batch: page {} is outside guest memory ({} pages)", page,
                        memory.size() / kMigrationPageSize));
      }
    }
  }
  for (uint64_t page : batch.zero_pages) {
    uint8_t* dst = PagePtr(memory, page);
    // Reading a page never touched maps the shared zero page; writing would allocate one.
    if (!IsZero(dst, kMigrationPageSize)) std::memset(dst, 0, kMigrationPageSize);
  }
  for (size_t i = 0; i < batch.data_pages.size(); ++i) {
    std::memcpy(PagePtr(memory, batch.data_pages[i]), batch.data.data() + i * kMigrationPageSize,
                kMigrationPageSize);
  }
  return Status::Ok();
}

std::vector<uint8_t> EncodeBlockBatch(const BlockBatch& batch) {
  assert(batch.data.size() == batch.blocks.size() * batch.block_size);
  std::vector<uint8_t> out;
  out.reserve(kBatchHeaderBytes + 8 * batch.blocks.size() + batch.data.size());
  AppendLe<uint32_t>(out, batch.block_size);
  AppendLe<uint32_t>(out, static_cast<uint32_t>(batch.blocks.size()));
  for (uint64_t block : batch.blocks) AppendLe<uint64_t>(out, block);
  out.insert(out.end(), batch.data.begin(), batch.data.end());
  return out;
}

Result<BlockBatch> DecodeBlockBatch(std::span<const uint8_t> payload, uint64_t block_count) {
  constexpr std::string_view kWhat = "migration block batch";
  if (payload.size() < kBatchHeaderBytes) {
    return Status::Error(fmt::format("{}: truncated: {} bytes, less than its {}-byte header", kWhat,
                                     payload.size(), kBatchHeaderBytes));
  }
  BlockBatch batch;
  batch.block_size = LoadLe<uint32_t>(payload.data());
  const auto count = LoadLe<uint32_t>(payload.data() + 4);
  if (batch.block_size == 0 || batch.block_size > kMaxMigrationMessage) {
    return Status::Error(fmt::format("{}: block size {} is not between 1 and {}", kWhat,
                                     batch.block_size, kMaxMigrationMessage));
  }
  // count < 2^32 and block size ≤ 2^23: no overflow in 64 bits.
  const uint64_t need = kBatchHeaderBytes + 8ull * count + uint64_t{count} * batch.block_size;
  const std::string counted = fmt::format("{} blocks of {} bytes", count, batch.block_size);
  if (Status s = CheckSize(payload, need, kWhat, counted); !s) return s;
  if (Status s = ReadNumbers(payload, kBatchHeaderBytes, count, block_count, kWhat, "block",
                             &batch.blocks);
      !s) {
    return s;
  }
  if (Status s = CheckNoDuplicates(batch.blocks, kWhat, "block"); !s) return s;
  batch.data.assign(payload.begin() + static_cast<ptrdiff_t>(kBatchHeaderBytes + 8ull * count),
                    payload.end());
  return batch;
}

}  // namespace qosvisor::hv
