/* C interface to the Open vSwitch library's flow parser (and, later, classifier).
 * OVS headers do not compile as C++, so this header exposes no OVS types. */
#ifndef QOSVISOR_VSWITCH_OVS_FLOW_SHIM_H
#define QOSVISOR_VSWITCH_OVS_FLOW_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Quiets OVS logging (no syslog, console errors only). Idempotent. */
void qv_ovs_init(void);

/* Port names usable in rules ("output:vm1", "in_port=uplink0"), numbered by the caller. */
struct qv_ovs_port_name {
  const char *name;
  uint32_t number;
};

/* Parses one rule in ovs-ofctl syntax ("priority=100,udp,tp_dst=5000,actions=set_queue:1,NORMAL").
 * Also rejects match fields whose prerequisites are missing ("tp_dst=80" without "tcp"), which
 * the OVS parser itself accepts silently. On success returns 0 and writes the canonical form of
 * the rule to 'normalized'; on failure returns -1 and writes a readable reason to 'error'.
 * Both outputs are NUL-terminated and truncated to their size. */
int qv_ovs_flow_check(const char *rule, const struct qv_ovs_port_name *ports, size_t n_ports,
                      char *normalized, size_t normalized_size, char *error, size_t error_size);

#ifdef __cplusplus
}
#endif

#endif
