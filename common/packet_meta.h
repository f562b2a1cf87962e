// Per-packet metadata that classification writes and the scheduler reads. It lives in the mbuf's
// private area (mempools are created with priv_size >= sizeof(PacketMeta)), so no allocation or
// dynfield registration is needed per packet and unit tests can fake mbufs without the EAL.
#pragma once

#include <cstdint>

struct rte_mbuf;

namespace qosvisor {

inline constexpr uint32_t kNoMessageSlot = UINT32_MAX;

struct PacketMeta {
  rte_mbuf* next = nullptr;          // intrusive link in a message's FIFO (owned by sched/)
  uint64_t message_id = 0;           // from message identification (homa, tcp-gap, datagram, ebpf)
  uint64_t arrival_tsc = 0;          // when the packet entered the switch
  uint64_t rank = 0;                 // computed by the rank policy when it becomes a queue head
  uint32_t message_size = 0;         // total bytes of the message when known (0 = unknown)
  uint32_t message_offset = 0;       // bytes of the message before this packet, when known
  uint32_t message_slot = kNoMessageSlot;  // message-table slot, when classification resolved it
  uint32_t wire_len = 0;             // bytes this packet occupies on the uplink
  uint16_t class_id = 0;             // index into the uplink's class table
  uint16_t flags = 0;
  // Which of its uplink's class tables class_id indexes: they change when the uplink is
  // reconfigured live, while packets classified by the old one may still be on their way.
  uint8_t rules_generation = 0;
};

// The sender says the message ends here; or the scheduler moved the mark here, onto the newest
// packet it holds of a message whose last packet it dropped (so that the slot goes back when this
// one leaves, unless more of the message came since).
inline constexpr uint16_t kMetaLastOfMessage = 1u << 0;
// The packet is its message's only one (classification set kMetaLastOfMessage too and knows the
// offset is 0): the scheduler queues it without looking its id up or indexing it, since no
// later packet can be of the same message.
inline constexpr uint16_t kMetaWholeMessage = 1u << 1;

// The private area directly follows struct rte_mbuf, which is two cache lines in every DPDK
// build we support (dataplane/ static_asserts it); this is what rte_mbuf_to_priv() computes.
inline constexpr unsigned kMbufStructSize = 128;

// SAFETY: every mbuf handed to the data path comes from a pool whose priv_size holds a
// PacketMeta; tests that fake mbufs lay out {rte_mbuf, PacketMeta} the same way.
inline PacketMeta* Meta(rte_mbuf* m) {
  return reinterpret_cast<PacketMeta*>(reinterpret_cast<char*>(m) + kMbufStructSize);
}
inline const PacketMeta* Meta(const rte_mbuf* m) {
  return reinterpret_cast<const PacketMeta*>(reinterpret_cast<const char*>(m) + kMbufStructSize);
}

}  // namespace qosvisor
