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

/* ---- flow tables -------------------------------------------------------------------------- */

enum qv_ovs_action_type {
  QV_OVS_OUTPUT = 1,  /* arg: port number */
  QV_OVS_NORMAL,      /* L2 learning switch */
  QV_OVS_FLOOD,       /* every port but the input (FLOOD and ALL) */
  QV_OVS_IN_PORT,     /* back out of the input port */
  QV_OVS_SET_QUEUE,   /* arg: queue id (a traffic class) */
  QV_OVS_SET_VLAN,    /* arg: VLAN id; pushes a tag if the packet has none */
  QV_OVS_STRIP_VLAN,
};

#define QV_OVS_MAX_ACTIONS 8

struct qv_ovs_action {
  uint16_t type;
  uint32_t arg;
};

/* A rule's actions, decoded once when the rule is added. No actions means drop. */
struct qv_ovs_actions {
  uint32_t n;
  struct qv_ovs_action a[QV_OVS_MAX_ACTIONS];
  uint32_t cookie; /* the caller's id for the rule */
  int32_t priority;
};

struct qv_ovs_table;

/* Tables are built by one thread, then only read (lookups may run on many threads at once);
 * a changed rule set is a new table. Free a table only when no thread looks it up any more. */
struct qv_ovs_table *qv_ovs_table_new(void);
void qv_ovs_table_free(struct qv_ovs_table *table);
/* Adds a rule (replacing one with the same match and priority). Returns 0, or -1 with a reason
 * in 'error' (syntax, missing prerequisites, unsupported action). */
int qv_ovs_table_add(struct qv_ovs_table *table, const char *rule,
                     const struct qv_ovs_port_name *ports, size_t n_ports, uint32_t cookie,
                     char *error, size_t error_size);
size_t qv_ovs_table_size(const struct qv_ovs_table *table);
/* Nonzero when no rule added so far matches on anything but the input port: then every frame
 * from one port gets the same answer, and a caller may look each port up once. */
int qv_ovs_table_in_port_only(const struct qv_ovs_table *table);
/* The highest-priority rule matching a frame that arrived on 'in_port', or NULL. */
const struct qv_ovs_actions *qv_ovs_table_lookup(const struct qv_ovs_table *table,
                                                 const void *frame, size_t length,
                                                 uint32_t in_port);

#ifdef __cplusplus
}
#endif

#endif
