// Spellings of the configuration enums (shared by the parser and Format) and small helpers
// on the structs that lower layers use.
#include "config/config.h"

#include <fmt/format.h>

#include <filesystem>

#include "common/mac_address.h"

namespace qosvisor::config {

std::string MacAddress::ToString() const { return FormatMac(bytes.data()); }

std::string Config::Resolve(const std::string& path) const {
  const std::filesystem::path p(path);
  if (p.is_absolute() || base_dir.empty()) return path;
  return (std::filesystem::path(base_dir) / p).lexically_normal().string();
}

std::string_view ToString(Hugepages v) {
  switch (v) {
    case Hugepages::kOn:
      return "on";
    case Hugepages::kOff:
      return "off";
    case Hugepages::kAuto:
      break;
  }
  return "auto";
}

std::string_view ToString(Driver v) {
  switch (v) {
    case Driver::kRing:
      return "ring";
    case Driver::kNull:
      return "null";
    case Driver::kTap:
      return "tap";
    case Driver::kAfPacket:
      return "af_packet";
    case Driver::kAfXdp:
      return "af_xdp";
    case Driver::kMemif:
      return "memif";
    case Driver::kVhostUser:
      return "vhost-user";
    case Driver::kPcap:
      return "pcap";
    case Driver::kVm:
      break;
  }
  return "vm";
}

std::string_view ToString(VlanMode v) { return v == VlanMode::kAccess ? "access" : "trunk"; }

std::string_view ToString(Policy v) {
  switch (v) {
    case Policy::kFifo:
      return "fifo";
    case Policy::kPriority:
      return "priority";
    case Policy::kSrpt:
      return "srpt";
    case Policy::kLas:
      return "las";
    case Policy::kWfq:
      return "wfq";
    case Policy::kEdf:
      return "edf";
    case Policy::kPace:
      break;
  }
  return "pace";
}

std::string_view ToString(Identify v) {
  switch (v) {
    case Identify::kHoma:
      return "homa";
    case Identify::kTcpGap:
      return "tcp-gap";
    case Identify::kDatagram:
      return "datagram";
    case Identify::kEbpf:
      break;
  }
  return "ebpf";
}

std::string_view ToString(DropPolicy v) { return v == DropPolicy::kWorst ? "worst" : "tail"; }
std::string_view ToString(Share v) { return v == Share::kWfq ? "wfq" : "priority"; }

std::string_view ToString(LeaveRule v) {
  switch (v) {
    case LeaveRule::kFewestChangedPages:
      return "fewest-changed-pages";
    case LeaveRule::kLowestPageRate:
      return "lowest-page-rate";
    case LeaveRule::kSmallestMemory:
      break;
  }
  return "smallest-memory";
}

std::string_view ToString(HugePagePolicy v) {
  switch (v) {
    case HugePagePolicy::kAuto:
      return "auto";
    case HugePagePolicy::kOff:
      return "off";
    case HugePagePolicy::kAll:
      break;
  }
  return "all";
}

}  // namespace qosvisor::config
