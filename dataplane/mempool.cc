// Mbuf pool creation with a PacketMeta-sized private area.
#include "dataplane/mempool.h"

#include <fmt/format.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "common/packet_meta.h"

namespace qosvisor::dataplane {

static_assert(sizeof(rte_mbuf) == kMbufStructSize, "Meta() assumes a two-cache-line rte_mbuf");

Result<std::unique_ptr<Mempool>> Mempool::Create(const std::string& name, uint32_t mbufs) {
  const uint16_t priv = RTE_ALIGN(sizeof(PacketMeta), RTE_MBUF_PRIV_ALIGN);
  rte_mempool* pool = rte_pktmbuf_pool_create(name.c_str(), mbufs, /*cache_size=*/256, priv,
                                              RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
  if (pool == nullptr) {
    return Status::Error(
        fmt::format("cannot create a pool of {} mbufs: {} (lower dataplane.mbufs "
                    "or raise dataplane.memory)",
                    mbufs, rte_strerror(rte_errno)));
  }
  return std::unique_ptr<Mempool>(new Mempool(pool, mbufs));
}

Mempool::~Mempool() { rte_mempool_free(pool_); }

uint32_t Mempool::available() const { return rte_mempool_avail_count(pool_); }

}  // namespace qosvisor::dataplane
