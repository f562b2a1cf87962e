/* Example eBPF program: choose the queue/class of UDP packets by destination port (DNS first,
 * a bulk port range last); everything else keeps the flow table's queue. */
#include "ebpf_abi.h"

#define IPPROTO_UDP 17

/* Queue ids are the `queue:` numbers of classes in the YAML config (as in set_queue:N). */
#define QUEUE_LATENCY 0 /* DNS, NTP: tiny and waited on */
#define QUEUE_DEFAULT 1
#define QUEUE_BULK 2 /* ports 9000-9099: backups, replication */

QV_EBPF_PROGRAM(udp_port_class) {
  if (ctx->ip_proto != IPPROTO_UDP) return QV_EBPF_PASS;
  const qv_u16 port = ctx->dst_port; /* host byte order: the context is pre-parsed */
  if (port == 53 || port == 123) return QV_EBPF_RESULT(QUEUE_LATENCY, 0, 0);
  if (port >= 9000 && port < 9100) return QV_EBPF_RESULT(QUEUE_BULK, 0, 0);
  return QV_EBPF_RESULT(QUEUE_DEFAULT, 0, 0);
}
