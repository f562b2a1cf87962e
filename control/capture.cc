// The capture job: a tap on the switch, a ring drained into a pcap file.
#include "control/capture.h"

#include <fmt/format.h>
#include <pcap/pcap.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "common/packet_meta.h"
#include "common/tsc.h"
#include "dataplane/mempool.h"

namespace qosvisor::control {
namespace {

using nlohmann::json;

struct PcapCloser {
  void operator()(pcap_t* p) const { pcap_close(p); }
};
struct DumperCloser {
  void operator()(pcap_dumper_t* d) const { pcap_dump_close(d); }
};
struct RingFree {
  void operator()(rte_ring* r) const { rte_ring_free(r); }
};

constexpr uint32_t kSnapLen = 65535;
constexpr unsigned kRingSize = 4096;

// Maps the switch's TSC stamps onto wall-clock time for the pcap records.
struct Clock {
  uint64_t tsc0 = ReadTsc();
  std::chrono::system_clock::time_point wall0 = std::chrono::system_clock::now();
  uint64_t hz = TscHz();
  timeval At(uint64_t tsc) const {
    const auto since = std::chrono::nanoseconds(TscToNs(tsc >= tsc0 ? tsc - tsc0 : 0, hz));
    const auto t =
        std::chrono::duration_cast<std::chrono::microseconds>((wall0 + since).time_since_epoch());
    return timeval{static_cast<time_t>(t.count() / 1'000'000),
                   static_cast<suseconds_t>(t.count() % 1'000'000)};
  }
};

void Write(pcap_dumper_t* out, const Clock& clock, rte_mbuf* m) {
  uint8_t frame[kSnapLen];
  const uint32_t len = rte_pktmbuf_pkt_len(m);
  const uint32_t caplen = std::min(len, kSnapLen);
  const void* data = rte_pktmbuf_read(m, 0, caplen, frame);
  pcap_pkthdr h{};
  h.ts = clock.At(Meta(m)->arrival_tsc);
  h.caplen = caplen;
  h.len = len;
  // SAFETY: pcap_dump's first argument is the dumper passed as the u_char* its API declares.
  pcap_dump(reinterpret_cast<u_char*>(out), &h, static_cast<const u_char*>(data));
}

}  // namespace

Status ValidateCapture(const CaptureRequest& r) {
  if (r.port.empty()) return Status::Error("capture needs the port");
  if (r.file.empty()) return Status::Error("capture needs the file to write");
  if (r.count == 0 && r.duration_ns == 0) {
    return Status::Error("capture needs --count N or --duration D (or both), so that it ends");
  }
  return Status::Ok();
}

Result<json> RunCapture(vswitch::Switch& sw, std::mutex& switch_mu, const CaptureRequest& r,
                        JobProgress& progress) {
  if (Status s = ValidateCapture(r); !s.ok()) return s;
  std::unique_ptr<pcap_t, PcapCloser> dead(pcap_open_dead(DLT_EN10MB, kSnapLen));
  if (!dead) return Status::Error("capture: libpcap could not start a file");
  std::unique_ptr<pcap_dumper_t, DumperCloser> out(pcap_dump_open(dead.get(), r.file.c_str()));
  if (!out) return Status::Error(fmt::format("capture to {}: {}", r.file, pcap_geterr(dead.get())));
  static std::atomic<uint32_t> serial{0};
  const uint32_t id = serial++;
  auto pool = dataplane::Mempool::Create(fmt::format("qv_cap{}", id), 2 * kRingSize - 1);
  if (!pool.ok()) return Status::Error(fmt::format("capture: {}", pool.message()));
  std::unique_ptr<rte_ring, RingFree> ring(rte_ring_create(
      fmt::format("qv_capr{}", id).c_str(), kRingSize, SOCKET_ID_ANY, RING_F_SC_DEQ));
  if (!ring) return Status::Error("capture: no memory for its ring");
  vswitch::CaptureTap tap;
  tap.ring = ring.get();
  tap.pool = (*pool)->get();
  {
    std::lock_guard lock(switch_mu);
    if (Status s = sw.StartCapture(r.port, &tap); !s.ok()) return s;
  }
  spdlog::info("port {}: capture to {} started", r.port, r.file);
  progress.Phase(fmt::format("capturing {}", r.port));
  const Clock clock;
  const auto deadline = r.duration_ns == 0 ? std::chrono::steady_clock::time_point::max()
                                           : std::chrono::steady_clock::now() +
                                                 std::chrono::nanoseconds(r.duration_ns);
  uint64_t written = 0;
  auto drain = [&](bool keep) {
    void* burst[64];
    unsigned n;
    while ((n = rte_ring_dequeue_burst(ring.get(), burst, 64, nullptr)) != 0) {
      for (unsigned i = 0; i < n; ++i) {
        auto* m = static_cast<rte_mbuf*>(burst[i]);
        if (keep && (r.count == 0 || written < r.count)) {
          Write(out.get(), clock, m);
          ++written;
        }
        rte_pktmbuf_free(m);
      }
      if (!keep) continue;
      progress.Bytes(written, r.count);
    }
  };
  while ((r.count == 0 || written < r.count) && std::chrono::steady_clock::now() < deadline) {
    drain(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  {
    std::lock_guard lock(switch_mu);
    sw.StopCapture(r.port);
  }
  drain(true);  // what was copied before the tap came off, within the count
  pcap_dump_flush(out.get());
  const uint64_t dropped = tap.dropped.load();
  spdlog::info("port {}: capture to {} ended, {} packets written, {} not copied", r.port, r.file,
               written, dropped);
  return json{{"port", r.port}, {"file", r.file}, {"packets", written}, {"not_copied", dropped}};
}

}  // namespace qosvisor::control
