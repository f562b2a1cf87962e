// The packet-buffer pool: every mbuf carries a PacketMeta in its private area, so classification
// and scheduling keep their per-packet state without allocation.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

struct rte_mempool;

namespace qosvisor::dataplane {

class Mempool {
 public:
  static Result<std::unique_ptr<Mempool>> Create(const std::string& name, uint32_t mbufs);
  ~Mempool();
  Mempool(const Mempool&) = delete;
  Mempool& operator=(const Mempool&) = delete;

  rte_mempool* get() const { return pool_; }
  uint32_t capacity() const { return capacity_; }
  // Mbufs currently in the pool (not in flight); equals capacity() once every mbuf came home.
  uint32_t available() const;

 private:
  Mempool(rte_mempool* pool, uint32_t capacity) : pool_(pool), capacity_(capacity) {}
  rte_mempool* pool_;
  uint32_t capacity_;
};

}  // namespace qosvisor::dataplane
