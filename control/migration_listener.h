// The migration listener: where VMs migrating to this box arrive. One thread accepts on
// migration.listen, authenticates each connection (a stray or hostile one is closed after the
// handshake fails, and counted) and hands it to VmManager::ServeIncoming. One migration comes in
// at a time; others wait in the listen backlog.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/status.h"
#include "control/vm_manager.h"
#include "hv/migration_stream.h"

namespace qosvisor::control {

class MigrationListener {
 public:
  // Binds `address` (host:port) at once, so that a port in use fails the daemon's start.
  static Result<std::unique_ptr<MigrationListener>> Start(const std::string& address,
                                                          const hv::MigrationKey& key,
                                                          VmManager* vms, IncomingPolicy policy);
  ~MigrationListener();  // stops accepting; a migration under way is cut off and cleaned up
  MigrationListener(const MigrationListener&) = delete;
  MigrationListener& operator=(const MigrationListener&) = delete;

  nlohmann::json StatusJson() const;
  uint16_t port() const { return port_; }

 private:
  MigrationListener(hv::MigrationKey key, VmManager* vms, IncomingPolicy policy)
      : key_(key), vms_(vms), policy_(std::move(policy)) {}
  void Run();
  void Serve(hv::UniqueFd connection);

  hv::MigrationKey key_;
  VmManager* vms_;
  IncomingPolicy policy_;
  hv::UniqueFd listen_fd_;
  std::string address_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  hv::MigrationChannel* serving_ = nullptr;  // guarded by mu_: cut off by the destructor
  uint64_t migrated_in_ = 0;                 // guarded by mu_
  uint64_t refused_ = 0;                     // guarded by mu_: authentication or the offer
  std::string last_error_;                   // guarded by mu_
};

}  // namespace qosvisor::control
