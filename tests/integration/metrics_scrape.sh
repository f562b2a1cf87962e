#!/usr/bin/env bash
# Metrics and logs on a running box: the edge default with its built-in traffic, scraped over HTTP
# with curl while packets flow, checked by promtool (Debian's prometheus package) and for the
# families an operator graphs; the log has one levelled line per event, and a bad --log-level is
# refused. Needs no KVM and no root.
# Usage: metrics_scrape.sh QOSVISOR_BIN QOSCTL_BIN SOURCE_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
src=$3
command -v promtool >/dev/null || { echo "FAIL: promtool missing (scripts/setup installs prometheus)"; exit 1; }

daemon_work_dir
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
edge_default_box "$src" "$work/box.yaml" "qvmx$$" "socket: $work/ctl.sock, metrics: \"127.0.0.1:$port\""
"$qosvisor" check "$work/box.yaml" >/dev/null

bad=$("$qosvisor" run "$work/box.yaml" --log-level loud 2>&1) && { echo "FAIL: a bad log level ran"; exit 1; }
grep -q "log level 'loud': use trace, debug, info, warn, error or off" <<<"$bad" || { echo "FAIL: $bad"; exit 1; }

"$qosvisor" run "$work/box.yaml" --traffic --duration 8s >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 150
sleep 2
curl -sf "http://127.0.0.1:$port/metrics" >"$work/scrape.prom" || { cat "$work/run.log"; echo "FAIL: no scrape"; exit 1; }
promtool check metrics <"$work/scrape.prom" || { echo "FAIL: promtool refused the exposition"; exit 1; }
for family in qosvisor_up qosvisor_port_received_packets_total qosvisor_switch_dropped_packets_total \
  qosvisor_class_dequeued_packets_total qosvisor_class_queued_bytes qosvisor_uplink_messages \
  qosvisor_uplink_pacing_rate_bytes_per_second qosvisor_bridge_learned_macs \
  qosvisor_class_wait_seconds_bucket qosvisor_uplink_dropped_packets_total; do
  grep -q "^$family" "$work/scrape.prom" || { echo "FAIL: no $family"; exit 1; }
done
python3 - "$work/scrape.prom" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
sent = sum(float(v) for v in re.findall(r'^qosvisor_class_dequeued_packets_total\{[^}]*\} (\S+)$', text, re.M))
waited = sum(float(v) for v in re.findall(r'^qosvisor_class_wait_seconds_count\{[^}]*\} (\S+)$', text, re.M))
print(f"packets the uplink classes sent, as scraped: {sent:.0f}; in the wait histograms: {waited:.0f}")
if sent <= 0: sys.exit("FAIL: the scrape shows no traffic")
# Both are read from one statistics request, so every packet sent has its wait counted.
if waited != sent: sys.exit("FAIL: the wait histograms do not count every packet sent")
PY
wait "$pid"
pid=""
grep -E -q "^[0-9T:.-]+ info control socket: " "$work/run.log" || { cat "$work/run.log"; echo "FAIL: no levelled log line"; exit 1; }
grep -q "^shutdown: all [0-9]* mbufs back in the pool" "$work/run.log" || { cat "$work/run.log"; echo "FAIL: mbufs"; exit 1; }
echo "PASS"
