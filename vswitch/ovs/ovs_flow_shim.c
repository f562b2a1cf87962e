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

int qv_ovs_flow_check(const char *rule, const struct qv_ovs_port_name *ports, size_t n_ports,
                      char *normalized, size_t normalized_size, char *error, size_t error_size) {
  qv_ovs_init();
  copy_out(normalized, normalized_size, "");
  copy_out(error, error_size, "");

  struct ofputil_port_map map;
  ofputil_port_map_init(&map);
  for (size_t i = 0; i < n_ports; i++) {
    ofputil_port_map_put(&map, u16_to_ofp((uint16_t)ports[i].number), ports[i].name);
  }

  struct ofputil_flow_mod fm;
  enum ofputil_protocol usable;
  char *err = parse_ofp_flow_mod_str(&fm, rule, &map, NULL, OFPFC_ADD, &usable);
  if (err) {
    copy_out(error, error_size, err);
    free(err);
    ofputil_port_map_destroy(&map);
    return -1;
  }

  struct match match;
  minimatch_expand(&fm.match, &match);
  struct match normal = match;
  ofputil_normalize_match_quiet(&normal);
  int rc = 0;
  if (!match_equal(&match, &normal)) {
    struct ds dropped = DS_EMPTY_INITIALIZER;
    describe_dropped_fields(&match, &normal, &map, &dropped);
    struct ds msg = DS_EMPTY_INITIALIZER;
    ds_put_format(&msg,
                  "%s: field needs its protocol first (e.g. 'tcp,tp_dst=80', 'udp,tp_dst=53', "
                  "'ip,nw_dst=10.0.0.1', 'dl_type=0x0800,...')",
                  ds_cstr(&dropped));
    copy_out(error, error_size, ds_cstr(&msg));
    ds_destroy(&msg);
    ds_destroy(&dropped);
    rc = -1;
  } else {
    struct ds text = DS_EMPTY_INITIALIZER;
    match_format(&match, &map, &text, fm.priority);
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
  }
  minimatch_destroy(&fm.match);
  free(fm.ofpacts);
  ofputil_port_map_destroy(&map);
  return rc;
}
