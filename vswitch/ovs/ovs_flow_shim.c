/* Thin C layer over the Open vSwitch library, compiled with OVS's own config.h and linked with
 * libopenvswitch.a into one object that exports only the qv_ovs_* symbols (see OpenVSwitch.cmake). */
#include <config.h>

#include "ovs_flow_shim.h"

#include <stdlib.h>
#include <string.h>

#include "openvswitch/dynamic-string.h"
#include "openvswitch/match.h"
#include "openvswitch/ofp-actions.h"
#include "openvswitch/ofp-errors.h"
#include "openvswitch/ofp-flow.h"
#include "openvswitch/ofp-match.h"
#include "openvswitch/ofp-port.h"
#include "openvswitch/ofp-protocol.h"
#include "openvswitch/vlog.h"
#include "classifier.h"
#include "dp-packet.h"
#include "flow.h"
#include "ovs-rcu.h"
#include "packets.h"

static void copy_out(char *dst, size_t size, const char *src) {
  if (size == 0) return;
  strncpy(dst, src, size - 1);
  dst[size - 1] = '\0';
}

void qv_ovs_init(void) {
  static int done;
  if (done) return;
  done = 1;
  vlog_set_levels(NULL, VLF_SYSLOG, VLL_OFF);
  vlog_set_levels(NULL, VLF_FILE, VLL_OFF);
  vlog_set_levels(NULL, VLF_CONSOLE, VLL_ERR);
  /* One VLAN tag, as ovs-vswitchd's default vlan-limit and as the switch's parser: a frame's
   * second tag ends its parse (the exact-match key stops there too). */
  flow_limit_vlans(1);
}

/* Words of 'full' that normalisation removed: the fields that lack their prerequisites. */
static void describe_dropped_fields(const struct match *given, const struct match *normal,
                                    const struct ofputil_port_map *map, struct ds *out) {
  char *a = match_to_string(given, map, OFP_DEFAULT_PRIORITY);
  char *b = match_to_string(normal, map, OFP_DEFAULT_PRIORITY);
  char *save = NULL;
  for (char *tok = strtok_r(a, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    size_t len = strlen(tok);
    const char *hit = strstr(b, tok);
    int present = hit && (hit == b || hit[-1] == ',') && (hit[len] == ',' || hit[len] == '\0');
    if (!present) ds_put_format(out, "%s%s", out->length ? ", " : "", tok);
  }
  free(a);
  free(b);
}

/* ---- flow tables ------------------------------------------------------------------------- */


struct qv_rule {
  struct cls_rule cr;
  struct qv_ovs_actions actions;
};

struct qv_ovs_table {
  struct classifier cls;
  struct qv_rule **rules;
  size_t n_rules;
  int matches_beyond_in_port; /* some rule added so far looks at more than in_port */
};

static int decode_actions(const struct ofpact *ofpacts, size_t len, struct qv_ovs_actions *out,
                          struct ds *err) {
  const struct ofpact *a;
  out->n = 0;
  OFPACT_FOR_EACH (a, ofpacts, len) {
    struct qv_ovs_action act = {0, 0};
    switch (a->type) {
      case OFPACT_OUTPUT: {
        ofp_port_t port = ofpact_get_OUTPUT(a)->port;
        if (ofp_to_u16(port) == ofp_to_u16(OFPP_NORMAL)) {
          act.type = QV_OVS_NORMAL;
        } else if (ofp_to_u16(port) == ofp_to_u16(OFPP_FLOOD) ||
                   ofp_to_u16(port) == ofp_to_u16(OFPP_ALL)) {
          act.type = QV_OVS_FLOOD;
        } else if (ofp_to_u16(port) == ofp_to_u16(OFPP_IN_PORT)) {
          act.type = QV_OVS_IN_PORT;
        } else if (ofp_to_u16(port) < ofp_to_u16(OFPP_MAX)) {
          act.type = QV_OVS_OUTPUT;
          act.arg = ofp_to_u16(port);
        } else {
          char name[OFP_MAX_PORT_NAME_LEN];
          ofputil_port_to_string(port, NULL, name, sizeof name);
          ds_put_format(err, "output to %s is not supported (use a port, NORMAL, FLOOD, ALL or "
                        "IN_PORT)", name);
          return -1;
        }
        break;
      }
      case OFPACT_SET_QUEUE:
        act.type = QV_OVS_SET_QUEUE;
        act.arg = ofpact_get_SET_QUEUE(a)->queue_id;
        break;
      case OFPACT_SET_VLAN_VID:
        act.type = QV_OVS_SET_VLAN;
        act.arg = ofpact_get_SET_VLAN_VID(a)->vlan_vid;
        break;
      case OFPACT_STRIP_VLAN:
        act.type = QV_OVS_STRIP_VLAN;
        break;
      default:
        ds_put_format(err,
                      "action '%s' is not supported (use output, NORMAL, FLOOD, ALL, IN_PORT, "
                      "drop, set_queue, mod_vlan_vid, strip_vlan)",
                      ofpact_name(a->type));
        return -1;
    }
    if (out->n == QV_OVS_MAX_ACTIONS) {
      ds_put_format(err, "more than %d actions in one rule", QV_OVS_MAX_ACTIONS);
      return -1;
    }
    out->a[out->n++] = act;
  }
  return 0;
}

/* Parse + prerequisite check + action decoding, shared by check and add. */
static int parse_rule(const char *rule, const struct qv_ovs_port_name *ports, size_t n_ports,
                      struct match *match, int *priority, struct qv_ovs_actions *actions,
                      struct ds *err) {
  qv_ovs_init();
  struct ofputil_port_map map;
  ofputil_port_map_init(&map);
  for (size_t i = 0; i < n_ports; i++) {
    ofputil_port_map_put(&map, u16_to_ofp((uint16_t)ports[i].number), ports[i].name);
  }
  struct ofputil_flow_mod fm;
  enum ofputil_protocol usable;
  char *perr = parse_ofp_flow_mod_str(&fm, rule, &map, NULL, OFPFC_ADD, &usable);
  if (perr) {
    ds_put_cstr(err, perr);
    free(perr);
    ofputil_port_map_destroy(&map);
    return -1;
  }
  minimatch_expand(&fm.match, match);
  *priority = fm.priority;
  struct match normal = *match;
  ofputil_normalize_match_quiet(&normal);
  int rc = 0;
  if (!match_equal(match, &normal)) {
    struct ds dropped = DS_EMPTY_INITIALIZER;
    describe_dropped_fields(match, &normal, &map, &dropped);
    ds_put_format(err,
                  "%s: field needs its protocol first (e.g. 'tcp,tp_dst=80', 'udp,tp_dst=53', "
                  "'ip,nw_dst=10.0.0.1')",
                  ds_cstr(&dropped));
    ds_destroy(&dropped);
    rc = -1;
  } else {
    rc = decode_actions(fm.ofpacts, fm.ofpacts_len, actions, err);
  }
  minimatch_destroy(&fm.match);
  free(fm.ofpacts);
  ofputil_port_map_destroy(&map);
  return rc;
}

struct qv_ovs_table *qv_ovs_table_new(void) {
  qv_ovs_init();
  struct qv_ovs_table *t = xzalloc(sizeof *t);
  classifier_init(&t->cls, flow_segment_u64s);
  return t;
}

static void free_rule(struct qv_rule *rule) {
  cls_rule_destroy(&rule->cr);
  free(rule);
}

void qv_ovs_table_free(struct qv_ovs_table *t) {
  if (!t) return;
  for (size_t i = 0; i < t->n_rules; i++) {
    classifier_remove_assert(&t->cls, &t->rules[i]->cr);
    ovsrcu_postpone(free_rule, t->rules[i]);
  }
  classifier_destroy(&t->cls);
  free(t->rules);
  free(t);
  /* Nothing reads this table any more (the caller guarantees it), so run the postponed frees
   * now rather than at some later quiescent point that may never come on this thread. */
  ovsrcu_quiesce();
}

int qv_ovs_table_add(struct qv_ovs_table *t, const char *rule,
                     const struct qv_ovs_port_name *ports, size_t n_ports, uint32_t cookie,
                     char *error, size_t error_size) {
  copy_out(error, error_size, "");
  struct match match;
  int priority = 0;
  struct qv_ovs_actions actions;
  memset(&actions, 0, sizeof actions);
  struct ds err = DS_EMPTY_INITIALIZER;
  if (parse_rule(rule, ports, n_ports, &match, &priority, &actions, &err)) {
    copy_out(error, error_size, ds_cstr(&err));
    ds_destroy(&err);
    return -1;
  }
  ds_destroy(&err);
  struct flow_wildcards beyond_in_port = match.wc;
  beyond_in_port.masks.in_port.ofp_port = 0;
  if (!flow_wildcards_is_catchall(&beyond_in_port)) t->matches_beyond_in_port = 1;
  struct qv_rule *r = xzalloc(sizeof *r);
  cls_rule_init(&r->cr, &match, priority);
  actions.cookie = cookie;
  actions.priority = priority;
  r->actions = actions;
  const struct cls_rule *old = classifier_replace(&t->cls, &r->cr, OVS_VERSION_MIN, NULL, 0);
  if (old) {
    for (size_t i = 0; i < t->n_rules; i++) {
      if (&t->rules[i]->cr == old) {
        ovsrcu_postpone(free_rule, t->rules[i]);
        t->rules[i] = r;
        return 0;
      }
    }
  }
  t->rules = xrealloc(t->rules, (t->n_rules + 1) * sizeof *t->rules);
  t->rules[t->n_rules++] = r;
  return 0;
}

size_t qv_ovs_table_size(const struct qv_ovs_table *t) { return t->n_rules; }

int qv_ovs_table_in_port_only(const struct qv_ovs_table *t) { return !t->matches_beyond_in_port; }

const struct qv_ovs_actions *qv_ovs_table_lookup(const struct qv_ovs_table *t, const void *frame,
                                                 size_t length, uint32_t in_port) {
  /* classifier_lookup writes to the flow while it works: one per thread. */
  static _Thread_local struct flow flow;
  struct dp_packet packet;
  dp_packet_use_const(&packet, frame, length);
  pkt_metadata_init(&packet.md, u32_to_odp(in_port));
  flow_extract(&packet, &flow);
  flow.in_port.ofp_port = u16_to_ofp((uint16_t)in_port);
  const struct cls_rule *cr = classifier_lookup(&t->cls, OVS_VERSION_MAX, &flow, NULL);
  return cr ? &CONTAINER_OF(cr, struct qv_rule, cr)->actions : NULL;
}

int qv_ovs_flow_check(const char *rule, const struct qv_ovs_port_name *ports, size_t n_ports,
                      char *normalized, size_t normalized_size, char *error, size_t error_size) {
  copy_out(normalized, normalized_size, "");
  copy_out(error, error_size, "");
  struct match match;
  int priority = 0;
  struct qv_ovs_actions actions;
  struct ds err = DS_EMPTY_INITIALIZER;
  if (parse_rule(rule, ports, n_ports, &match, &priority, &actions, &err)) {
    copy_out(error, error_size, ds_cstr(&err));
    ds_destroy(&err);
    return -1;
  }
  ds_destroy(&err);
  /* Re-parse for the canonical text: actions are printed by OVS itself. */
  struct ofputil_port_map map;
  ofputil_port_map_init(&map);
  for (size_t i = 0; i < n_ports; i++) {
    ofputil_port_map_put(&map, u16_to_ofp((uint16_t)ports[i].number), ports[i].name);
  }
  struct ofputil_flow_mod fm;
  enum ofputil_protocol usable;
  char *perr = parse_ofp_flow_mod_str(&fm, rule, &map, NULL, OFPFC_ADD, &usable);
  if (perr) { /* cannot happen: parse_rule accepted the same text */
    copy_out(error, error_size, perr);
    free(perr);
    ofputil_port_map_destroy(&map);
    return -1;
  }
  struct ds text = DS_EMPTY_INITIALIZER;
  match_format(&match, &map, &text, priority);
  if (text.length) ds_put_char(&text, ',');
  ds_put_cstr(&text, "actions=");
  struct ofpact_format_params fp = {.port_map = &map, .table_map = NULL, .s = &text};
  if (fm.ofpacts_len) {
    ofpacts_format(fm.ofpacts, fm.ofpacts_len, &fp);
  } else {
    ds_put_cstr(&text, "drop");
  }
  copy_out(normalized, normalized_size, ds_cstr(&text));
  ds_destroy(&text);
  minimatch_destroy(&fm.match);
  free(fm.ofpacts);
  ofputil_port_map_destroy(&map);
  return 0;
}
