// virtio-net as a `vm` port backend: the netecho guest answers UDP that the test injects with
// ToGuest and collects with FromGuest (what the data-plane lcore does), and the reverse.
#include "hv/virtio_net.h"

#include <rte_mbuf.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>
#include <vector>

#include "common/packet_batch.h"
#include "dataplane/mempool.h"
#include "hv/boot_abi.h"
#include "hv/vm.h"
#include "hv_test_util.h"
#include "tests/unit/test_eal.h"

namespace qosvisor::hv {
namespace {

using namespace std::chrono_literals;
using testing::GuestPath;
using testing::ReadWholeFile;
using testing::TempFile;
using testing::WaitUntil;

const std::array<uint8_t, 6> kGuestMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
const std::array<uint8_t, 6> kHostMac = {0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc};

uint16_t Be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

bool IpChecksumOk(const uint8_t* ip) {
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += Be16(ip + i);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum == 0xffff;
}

// A UDP datagram from the host's address to 10.0.0.255:7.
std::vector<uint8_t> UdpFrame(uint16_t sport, uint16_t dport, uint8_t src_ip, uint8_t dst_ip,
                              const std::array<uint8_t, 6>& dst_mac) {
  std::vector<uint8_t> f(14 + 20 + 8 + 16, 0);
  std::memcpy(f.data(), dst_mac.data(), 6);
  std::memcpy(f.data() + 6, kHostMac.data(), 6);
  f[12] = 0x08;
  uint8_t* ip = f.data() + 14;
  ip[0] = 0x45;
  ip[3] = 44;
  ip[8] = 64;
  ip[9] = 17;
  ip[12] = 10, ip[15] = src_ip;
  ip[16] = 10, ip[19] = dst_ip;
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += Be16(ip + i);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  ip[10] = static_cast<uint8_t>(~sum >> 8), ip[11] = static_cast<uint8_t>(~sum);
  uint8_t* udp = ip + 20;
  udp[0] = static_cast<uint8_t>(sport >> 8), udp[1] = static_cast<uint8_t>(sport);
  udp[2] = static_cast<uint8_t>(dport >> 8), udp[3] = static_cast<uint8_t>(dport);
  udp[5] = 24;
  std::memcpy(udp + 8, "hello, netecho!!", 16);
  return f;
}

rte_mbuf* ToMbuf(rte_mempool* pool, const std::vector<uint8_t>& frame) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool);
  REQUIRE(m != nullptr);
  // SAFETY: rte_pktmbuf_append returns room for frame.size() bytes in m's data area (checked).
  auto* p = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, static_cast<uint16_t>(frame.size())));
  REQUIRE(p != nullptr);
  std::memcpy(p, frame.data(), frame.size());
  return m;
}

std::vector<uint8_t> FromMbuf(rte_mbuf* m) {
  std::vector<uint8_t> out(rte_pktmbuf_pkt_len(m));
  // SAFETY: single-segment mbufs from FromGuest; pkt_len bytes are in the first segment.
  std::memcpy(out.data(), rte_pktmbuf_mtod(m, const uint8_t*), out.size());
  rte_pktmbuf_free(m);
  return out;
}

// Polls FromGuest like the port's lcore until one frame arrives (or the deadline passes).
std::optional<std::vector<uint8_t>> Receive(VirtioNet& nic, rte_mempool* pool) {
  std::optional<std::vector<uint8_t>> got;
  WaitUntil(
      [&] {
        rte_mbuf* m = nullptr;
        if (nic.FromGuest(&m, 1, pool) == 1) got = FromMbuf(m);
        return got.has_value();
      },
      10s);
  return got;
}

VmOptions NetVm(const std::string& name, const std::string& log, const std::string& cmdline) {
  VmOptions o;
  o.name = name;
  o.memory_bytes = 32ull << 20;
  o.image = GuestPath("netecho");
  o.serial_log = log;
  o.cmdline = cmdline;
  o.nics.push_back(VirtioNetOptions{kGuestMac});
  return o;
}

// A started netecho VM whose driver has brought its NIC up.
std::unique_ptr<Vm> StartNetecho(const std::string& name, const std::string& log,
                                 const std::string& cmdline) {
  auto vm = Vm::Create(NetVm(name, log, cmdline));
  REQUIRE(vm.ok());
  VirtioNet* nic = (*vm)->nic(0);
  REQUIRE(nic != nullptr);
  CHECK_FALSE(nic->Ready());  // no driver yet: the port's link is down
  REQUIRE((*vm)->Start().ok());
  REQUIRE(WaitUntil([&] { return nic->Ready(); }, 10s));
  return std::move(vm).value();
}

TEST_CASE("netecho guest answers UDP through the virtio-net backend", "[kvm][net]") {
  QV_REQUIRE_KVM();
  auto& eal = qosvisor::testing::TestEal();
  (void)eal;
  auto pool = dataplane::Mempool::Create("hv_net_echo", 1023);
  REQUIRE(pool.ok());
  TempFile log("netecho.log");
  std::unique_ptr<Vm> vm = StartNetecho("echo", log.path(), "ip=2");
  VirtioNet* nic = vm->nic(0);

  for (int round = 0; round < 3; ++round) {
    rte_mbuf* m =
        ToMbuf((*pool)->get(), UdpFrame(1234, 7, 9, 255, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}));
    REQUIRE(WaitUntil([&] { return nic->ToGuest(&m, 1) == 1; }, 5s));
    rte_pktmbuf_free(m);
    auto reply = Receive(*nic, (*pool)->get());
    REQUIRE(reply.has_value());
    REQUIRE(reply->size() == 58);
    const uint8_t* f = reply->data();
    CHECK(std::memcmp(f, kHostMac.data(), 6) == 0);
    CHECK(std::memcmp(f + 6, kGuestMac.data(), 6) == 0);
    CHECK(f[14 + 15] == 2);  // from the guest's address
    CHECK(f[14 + 19] == 9);  // back to ours
    CHECK(IpChecksumOk(f + 14));
    CHECK(Be16(f + 34) == 7);
    CHECK(Be16(f + 36) == 1234);
    CHECK(std::memcmp(f + 42, "hello, netecho!!", 16) == 0);
  }
  auto c = nic->net_counters();
  CHECK(c.to_guest_packets == 3);
  CHECK(c.from_guest_packets == 3);
  CHECK(c.from_guest_bytes == 3 * 58);
  // The guest keeps 16 receive buffers posted; a burst far larger than that is only partly
  // taken (the guest may repost one still in use, or a few while the burst is copied).
  std::vector<rte_mbuf*> burst;
  for (int i = 0; i < 64; ++i) {
    burst.push_back(ToMbuf((*pool)->get(), UdpFrame(1234, 9, 9, 255, kGuestMac)));  // not port 7
  }
  uint64_t no_buffer_before = nic->net_counters().to_guest_no_buffer;
  uint16_t taken = nic->ToGuest(burst.data(), static_cast<uint16_t>(burst.size()));
  CHECK(taken >= 15);
  CHECK(taken < 64);
  CHECK(nic->net_counters().to_guest_no_buffer - no_buffer_before == 64u - taken);
  for (auto* m : burst) rte_pktmbuf_free(m);

  auto exit = vm->Stop(5000ms);
  REQUIRE(exit.ok());
  CHECK(exit->code == 0);
  CHECK_FALSE(nic->Ready());  // stopped VM: devices reset, link down
  CHECK(ReadWholeFile(log.path()).find("netecho: echoed 3\n") != std::string::npos);
  CHECK((*pool)->available() == (*pool)->capacity());
}

TEST_CASE("netecho guest sleeps until its NIC interrupts (irqfd, EVENT_IDX)", "[kvm][net]") {
  QV_REQUIRE_KVM();
  auto& eal = qosvisor::testing::TestEal();
  (void)eal;
  auto pool = dataplane::Mempool::Create("hv_net_irq", 1023);
  REQUIRE(pool.ok());
  TempFile log("netecho_irq.log");
  std::unique_ptr<Vm> vm = StartNetecho("echo-irq", log.path(), "ip=2 irq=1");
  VirtioNet* nic = vm->nic(0);
  auto progress = [&](int i) {
    uint64_t v = 0;
    REQUIRE(vm->memory().LoadAtomic<uint64_t>(
        QV_BOOT_INFO_GPA + offsetof(qv_boot_info, progress) + 8 * static_cast<uint64_t>(i), &v));
    return v;
  };
  // Idle, the guest only wakes for its 10 ms timer: it is halted, not spinning.
  const bool woke = WaitUntil([&] { return progress(1) >= 3; }, 10s);
  INFO(ReadWholeFile(log.path()));
  INFO("progress " << progress(0) << " " << progress(1) << " " << progress(2));
  REQUIRE(woke);
  CHECK(progress(0) == 0);

  constexpr int kRounds = 5;
  for (int round = 0; round < kRounds; ++round) {
    rte_mbuf* m =
        ToMbuf((*pool)->get(), UdpFrame(1234, 7, 9, 255, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}));
    REQUIRE(WaitUntil([&] { return nic->ToGuest(&m, 1) == 1; }, 5s));
    rte_pktmbuf_free(m);
    auto reply = Receive(*nic, (*pool)->get());
    REQUIRE(reply.has_value());
    CHECK(Be16(reply->data() + 36) == 1234);
  }
  // Every frame was delivered by an interrupt the device raised through its irqfd; the guest
  // asked for each one through used_event, so the device sent no more than that.
  REQUIRE(WaitUntil([&] { return progress(0) >= kRounds; }, 5s));
  const VirtioCounters c = nic->counters();
  CHECK(c.interrupts >= static_cast<uint64_t>(kRounds));
  CHECK(c.interrupts <= progress(0) + 1);
  CHECK(c.suppressed > 0);  // TX completions: the guest reclaims those without interrupts

  auto exit = vm->Stop(5000ms);
  REQUIRE(exit.ok());
  CHECK(exit->code == 0);
  CHECK(ReadWholeFile(log.path()).find("netecho: echoed 5 on ") != std::string::npos);
  CHECK((*pool)->available() == (*pool)->capacity());
}

TEST_CASE("netecho guest as a client gets its answers", "[kvm][net]") {
  QV_REQUIRE_KVM();
  (void)qosvisor::testing::TestEal();
  auto pool = dataplane::Mempool::Create("hv_net_client", 1023);
  REQUIRE(pool.ok());
  TempFile log("netclient.log");
  auto vm = Vm::Create(NetVm("client", log.path(), "ip=3 send=3"));
  REQUIRE(vm.ok());
  VirtioNet* nic = (*vm)->nic(0);
  REQUIRE((*vm)->Start().ok());
  int answered = 0;
  std::optional<VmExit> exit;
  auto deadline = std::chrono::steady_clock::now() + 15s;
  // Play the echo server on the host side.
  while (!exit && std::chrono::steady_clock::now() < deadline) {
    rte_mbuf* m = nullptr;
    if (nic->FromGuest(&m, 1, (*pool)->get()) == 1) {
      auto req = FromMbuf(m);
      REQUIRE(req.size() >= 42);
      CHECK(Be16(req.data() + 36) == 7);
      CHECK(req[14 + 15] == 3);
      std::array<uint8_t, 6> src;
      std::memcpy(src.data(), req.data() + 6, 6);
      CHECK(src == kGuestMac);
      auto answer = UdpFrame(7, 1234, 9, 3, src);
      rte_mbuf* a = ToMbuf((*pool)->get(), answer);
      REQUIRE(WaitUntil([&] { return nic->ToGuest(&a, 1) == 1; }, 5s));
      rte_pktmbuf_free(a);
      ++answered;
    }
    exit = (*vm)->WaitForExit(1ms);
  }
  REQUIRE(exit.has_value());
  CHECK(exit->code == 0);
  CHECK(answered == 3);
  CHECK(ReadWholeFile(log.path()).find("netecho: got 3 answers\n") != std::string::npos);
}

// Without KVM: the test is the guest driver, writing registers and rings directly.
class NetDriver {
 public:
  static constexpr uint64_t kRing[2][3] = {{0x1000, 0x2000, 0x3000}, {0x4000, 0x5000, 0x6000}};
  static constexpr uint16_t kSize = 8;
  NetDriver(VirtioNet& dev, GuestMemory& mem) : dev_(dev), mem_(mem) {}
  void Set(uint64_t off, uint32_t v) {
    // SAFETY: the 4 bytes of v, viewed as bytes (allowed aliasing).
    dev_.Write(off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), 4));
  }
  void Init() {
    Set(0x70, 0);
    Set(0x70, 3);
    Set(0x24, 0);
    Set(0x20, (1u << 5) | (1u << 29));
    Set(0x24, 1);
    Set(0x20, 1);
    Set(0x70, 3 | 8);
    for (uint32_t q = 0; q < 2; ++q) {
      Set(0x30, q);
      Set(0x38, kSize);
      Set(0x80, static_cast<uint32_t>(kRing[q][0]));
      Set(0x90, static_cast<uint32_t>(kRing[q][1]));
      Set(0xa0, static_cast<uint32_t>(kRing[q][2]));
      Set(0x44, 1);
    }
    Set(0x70, 3 | 8 | 4);
  }
  // Chain of one descriptor at `gpa`, `len` bytes, made available on queue q.
  void Offer(uint32_t q, uint16_t desc, uint64_t gpa, uint32_t len, bool writable) {
    uint8_t d[16] = {};
    std::memcpy(d, &gpa, 8);
    std::memcpy(d + 8, &len, 4);
    uint16_t flags = writable ? 2 : 0;
    std::memcpy(d + 12, &flags, 2);
    REQUIRE(mem_.Write(kRing[q][0] + 16ull * desc, d, 16));
    REQUIRE(mem_.Write(kRing[q][1] + 4 + 2ull * (avail_[q] % kSize), &desc, 2));
    ++avail_[q];
    REQUIRE(mem_.Write(kRing[q][1] + 2, &avail_[q], 2));
  }
  uint16_t Used(uint32_t q) {
    uint16_t v = 0;
    REQUIRE(mem_.Read(kRing[q][2] + 2, &v, 2));
    return v;
  }

 private:
  VirtioNet& dev_;
  GuestMemory& mem_;
  uint16_t avail_[2] = {0, 0};
};

TEST_CASE("a snapshot taken while the NIC receives restores a guest that sees every frame given",
          "[kvm][net][snapshot]") {
  QV_REQUIRE_KVM();
  (void)qosvisor::testing::TestEal();
  auto pool = dataplane::Mempool::Create("hv_net_snap", 1023);
  REQUIRE(pool.ok());
  TempFile log("netsnap.log"), log2("netsnap2.log");
  const std::string dir = "/tmp/qv-hv-test-" + std::to_string(::getpid()) + "-netsnap";
  std::filesystem::remove_all(dir);
  std::unique_ptr<Vm> vm = StartNetecho("netsnap", log.path(), "ip=2");
  std::set<uint16_t> given, answered;
  auto collect = [&](VirtioNet& nic) {
    rte_mbuf* m = nullptr;
    while (nic.FromGuest(&m, 1, (*pool)->get()) == 1) {
      auto f = FromMbuf(m);
      if (f.size() >= 38) CHECK(answered.insert(Be16(f.data() + 36)).second);  // no duplicate
    }
  };
  // Frames go in as fast as the guest posts buffers; the pause lands with some of them taken by
  // the device but not yet read by the guest, and some answers not yet collected.
  const std::array<uint8_t, 6> bcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  for (uint16_t sport = 1000; given.size() < 60; ++sport) {
    rte_mbuf* m = ToMbuf((*pool)->get(), UdpFrame(sport, 7, 9, 255, bcast));
    if (vm->nic(0)->ToGuest(&m, 1) == 1) given.insert(sport);
    rte_pktmbuf_free(m);
    if (sport % 8 == 0) collect(*vm->nic(0));
  }
  REQUIRE(vm->Pause().ok());
  // Paused: the device touches no guest memory, so nothing more goes in or comes out.
  rte_mbuf* late = ToMbuf((*pool)->get(), UdpFrame(999, 7, 9, 255, bcast));
  CHECK(vm->nic(0)->ToGuest(&late, 1) == 0);
  rte_pktmbuf_free(late);
  collect(*vm->nic(0));
  INFO("answered before the snapshot: " << answered.size() << " of " << given.size());
  REQUIRE(vm->Snapshot(dir).ok());
  REQUIRE(vm->Destroy().ok());

  auto restored = Vm::Restore(dir, {"netsnap2", log2.path(), {}});
  REQUIRE(restored.ok());
  REQUIRE((*restored)->Resume().ok());
  VirtioNet& nic = *(*restored)->nic(0);
  WaitUntil(
      [&] {
        collect(nic);
        return answered.size() == given.size();
      },
      20s);
  CHECK(answered == given);  // every frame given before the snapshot was seen and answered
  REQUIRE((*restored)->Stop(5000ms).ok());
  restored->reset();
  std::filesystem::remove_all(dir);
  CHECK((*pool)->available() == (*pool)->capacity());
}

TEST_CASE("virtio-net survives hostile rings and counts what it drops", "[virtio][net][hostile]") {
  (void)qosvisor::testing::TestEal();
  auto pool = dataplane::Mempool::Create("hv_net_hostile", 1023);
  REQUIRE(pool.ok());
  auto mem = GuestMemory::Create("net-hostile", 1 << 20, false);
  REQUIRE(mem.ok());
  VirtioNet nic(*mem, VirtioNetOptions{kGuestMac});
  rte_mbuf* out[4];
  auto frame = UdpFrame(1, 2, 3, 4, kGuestMac);
  rte_mbuf* m = ToMbuf((*pool)->get(), frame);
  CHECK(nic.ToGuest(&m, 1) == 0);  // no driver: nothing taken
  CHECK_FALSE(nic.Ready());

  NetDriver d(nic, *mem);
  d.Init();
  REQUIRE(nic.Ready());
  // A runt transmit is dropped and its buffer returned; a good one passes.
  d.Offer(1, 0, 0x10000, 12 + 5, false);
  REQUIRE(mem->Write(0x20000 + 12, frame.data(), frame.size()));
  d.Offer(1, 1, 0x20000, static_cast<uint32_t>(12 + frame.size()), false);
  REQUIRE(nic.FromGuest(out, 4, (*pool)->get()) == 1);
  CHECK(FromMbuf(out[0]) == frame);
  CHECK(d.Used(1) == 2);
  CHECK(nic.net_counters().from_guest_bad == 1);

  // A receive buffer too small for the frame: the frame is taken and dropped, buffer returned.
  d.Offer(0, 0, 0x30000, 20, true);
  CHECK(nic.ToGuest(&m, 1) == 1);
  CHECK(nic.net_counters().to_guest_too_big == 1);
  CHECK(d.Used(0) == 1);
  // A big enough one gets header + frame; EVENT_IDX with used_event 0 suppresses the 2nd irq.
  d.Offer(0, 1, 0x30000, 2048, true);
  CHECK(nic.ToGuest(&m, 1) == 1);
  uint8_t got[100] = {};
  REQUIRE(mem->Read(0x30000, got, 12 + frame.size()));
  CHECK(got[10] == 1);  // num_buffers
  CHECK(std::memcmp(got + 12, frame.data(), frame.size()) == 0);
  auto c = nic.counters();
  CHECK(c.interrupts + c.suppressed >= 3);
  CHECK(c.suppressed >= 1);

  // A transmit descriptor pointing outside guest memory breaks the device, not the host.
  d.Offer(1, 2, (1 << 20) - 4, 64, false);
  CHECK(nic.FromGuest(out, 4, (*pool)->get()) == 0);
  CHECK(nic.is_broken());
  CHECK_FALSE(nic.Ready());
  CHECK(nic.broken_reason().find("outside guest memory") != std::string::npos);
  CHECK(nic.ToGuest(&m, 1) == 0);
  rte_pktmbuf_free(m);
  CHECK((*pool)->available() == (*pool)->capacity());
  // The driver resets and the device works again.
  d.Init();
  CHECK(nic.Ready());
}

TEST_CASE("a vm switch port carries traffic to and from the netecho guest", "[kvm][net]") {
  QV_REQUIRE_KVM();
  (void)qosvisor::testing::TestEal();
  auto pool = dataplane::Mempool::Create("hv_net_port", 1023);
  REQUIRE(pool.ok());
  TempFile log("netport.log");
  auto vm = Vm::Create(NetVm("port", log.path(), "ip=2"));
  REQUIRE(vm.ok());
  dataplane::VmPort port("vm0.eth0", (*pool)->get());
  port.Attach((*vm)->nic(0));
  CHECK_FALSE(port.LinkUp());  // VM not started
  REQUIRE((*vm)->Start().ok());
  REQUIRE(WaitUntil([&] { return port.LinkUp(); }, 10s));

  // What the port's lcore does each iteration: send what the switch queued, poll for arrivals.
  PacketBatch out;
  for (int i = 0; i < 4; ++i) {
    out.Push(
        ToMbuf((*pool)->get(), UdpFrame(1234, 7, 9, 255, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff})));
  }
  REQUIRE(WaitUntil(
      [&] {
        port.Send(out);
        return out.count == 0;
      },
      5s));
  PacketBatch in;
  REQUIRE(WaitUntil(
      [&] {
        port.Recv(in);
        return in.count >= 4;
      },
      10s));
  CHECK(in.count == 4);
  for (uint16_t i = 0; i < in.count; ++i) {
    auto f = FromMbuf(in.pkts[i]);
    CHECK(Be16(f.data() + 34) == 7);
    CHECK(std::memcmp(f.data(), kHostMac.data(), 6) == 0);
  }
  auto c = port.Counters();
  CHECK(c.tx_packets == 4);
  CHECK(c.rx_packets == 4);
  CHECK(c.rx_bytes == 4 * 58);

  REQUIRE((*vm)->Stop(5000ms).ok());
  CHECK_FALSE(port.LinkUp());  // stopped VM: link down
  port.Detach();
  CHECK((*pool)->available() == (*pool)->capacity());
}

}  // namespace
}  // namespace qosvisor::hv
