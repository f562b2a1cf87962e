#include "control/migration_listener.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace qosvisor::control {
namespace {

constexpr auto kAcceptPoll = std::chrono::milliseconds(200);
// A peer that cannot prove the key within this long is not a migrating box.
constexpr auto kHandshakeTimeout = std::chrono::milliseconds(5000);

}  // namespace

Result<std::unique_ptr<MigrationListener>> MigrationListener::Start(const std::string& address,
                                                                   const hv::MigrationKey& key,
                                                                   VmManager* vms,
                                                                   IncomingPolicy policy) {
  auto fd = hv::ListenTcp(address);
  if (!fd.ok()) return Status::Error(fmt::format("migration.listen {}: {}", address, fd.message()));
  auto port = hv::LocalPort(fd->get());
  if (!port.ok()) return port.status();
  std::unique_ptr<MigrationListener> l(new MigrationListener(key, vms, std::move(policy)));
  l->listen_fd_ = std::move(fd).value();
  l->address_ = address;
  l->port_ = *port;
  l->thread_ = std::thread([raw = l.get()] { raw->Run(); });
  return l;
}

MigrationListener::~MigrationListener() {
  stop_.store(true);
  {
    std::lock_guard lock(mu_);
    if (serving_ != nullptr) serving_->Shutdown();
  }
  if (thread_.joinable()) thread_.join();
}

void MigrationListener::Run() {
  while (!stop_.load()) {
    auto connection = hv::AcceptTcp(listen_fd_.get(), kAcceptPoll);
    if (!connection.ok()) continue;  // the poll's timeout, or a connection gone before accept
    Serve(std::move(connection).value());
  }
}

void MigrationListener::Serve(hv::UniqueFd connection) {
  auto channel = hv::MigrationChannel::Handshake(std::move(connection), key_,
                                                 hv::MigrationRole::kDestination,
                                                 kHandshakeTimeout);
  if (!channel.ok()) {
    spdlog::warn("migration: a connection was refused: {}", channel.message());
    std::lock_guard lock(mu_);
    ++refused_;
    last_error_ = channel.message();
    return;
  }
  {
    std::lock_guard lock(mu_);
    if (stop_.load()) return;
    serving_ = &*channel;
  }
  auto served = vms_->ServeIncoming(*channel, policy_);
  std::lock_guard lock(mu_);
  serving_ = nullptr;
  if (served.ok()) {
    ++migrated_in_;
  } else {
    ++refused_;
    last_error_ = served.message();
    spdlog::warn("migration: incoming VM not taken: {}", served.message());
  }
}

nlohmann::json MigrationListener::StatusJson() const {
  std::lock_guard lock(mu_);
  return {{"listen", address_},
          {"port", port_},
          {"migrated_in", migrated_in_},
          {"refused", refused_},
          {"busy", serving_ != nullptr},
          {"last_error", last_error_}};
}

}  // namespace qosvisor::control
