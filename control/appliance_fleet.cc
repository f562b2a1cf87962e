// The appliance in its fleet: the agent that keeps this box in the etcd registry with its budget,
// load and VMs, the `hosts` command, and the fleet part of `status` (with who leads).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <time.h>

#include "common/units.h"
#include "control/appliance.h"
#include "control/fleet.h"
#include "control/fleet_leader.h"

namespace qosvisor::control {

using nlohmann::json;

namespace {

uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Bits per second over the time between two readings of a byte counter; the first reading
// (and a counter that went back, as a port recreated by a reload's does) gives 0.
class RateMeter {
 public:
  uint64_t Update(uint64_t bytes) {
    const uint64_t now = MonotonicNs();
    uint64_t bps = 0;
    if (last_ns_ != 0 && now > last_ns_ && bytes >= last_bytes_) {
      bps = static_cast<uint64_t>(static_cast<double>(bytes - last_bytes_) * 8e9 /
                                  static_cast<double>(now - last_ns_));
    }
    last_ns_ = now;
    last_bytes_ = bytes;
    return bps;
  }

 private:
  uint64_t last_ns_ = 0;
  uint64_t last_bytes_ = 0;
};

}  // namespace

Status Appliance::StartFleet(const config::Config& config) {
  if (!config.fleet) return Status::Ok();
  // Called on the agent's thread only, so the meter needs no lock of its own.
  auto meter = std::make_shared<RateMeter>();
  auto vm_meters = std::make_shared<std::map<std::string, RateMeter>>();
  fleet_ = std::make_unique<FleetAgent>(
      *config.fleet, config.migration.listen,
      [this, meter, vm_meters, groups = config.fleet->anti_affinity] {
        FleetLoad load = CurrentLoad();  // the VMs' part, as migrations admit against it
        load.uplink_bps = meter->Update(UplinkSentBytes());
        std::map<std::string, RateMeter> seen;  // meters of VMs gone since go with them
        load.vm_list = FleetVms(groups, [&](const std::string& vm, uint64_t bytes) {
          seen[vm] = (*vm_meters)[vm];
          return seen[vm].Update(bytes);
        });
        *vm_meters = std::move(seen);
        return load;
      });
  fleet_->Start();
  StartFleetPlanning(config);
  startup_log_.push_back(fmt::format("fleet: host {} registers in etcd {} (lease {})",
                                     config.fleet->host, fmt::join(config.fleet->etcd, ", "),
                                     FormatDuration(config.fleet->lease_ttl_ns)));
  return Status::Ok();
}

// What the uplinks' ports have sent, from their counters: reading them costs the data plane
// nothing, where a statistics snapshot would wait for every worker.
uint64_t Appliance::UplinkSentBytes() {
  std::lock_guard lock(switch_control_mu_);  // a reload may replace ports meanwhile
  uint64_t bytes = 0;
  for (const std::string& name : uplink_ports_) {
    if (const dataplane::Port* port = FindPort(name)) bytes += port->Counters().tx_bytes;
  }
  return bytes;
}

Result<json> Appliance::HostsJson() {
  if (!fleet_) return Status::Error("no fleet: section in the configuration");
  auto hosts = fleet_->Hosts();
  if (!hosts.ok()) return hosts.status();
  json out = json::array();
  for (const FleetHost& h : *hosts) out.push_back(FleetHostJson(h));
  return out;
}

json Appliance::FleetStatusJson() const {
  if (!fleet_) return nullptr;
  json status = fleet_->StatusJson();
  if (leader_) status.update(leader_->StatusJson());
  return status;
}

}  // namespace qosvisor::control
