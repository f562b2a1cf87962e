#!/usr/bin/env bash
# The fleet registry on a real etcd (one member on loopback, its own data directory): two boxes
# with fleet: sections register and qosctl hosts lists both with budgets and load; a box killed
# with SIGKILL leaves the registry within its lease TTL, one stopped cleanly at once; with etcd
# killed, a box says it is disconnected (status, metrics), keeps answering and keeps switching,
# and registers again once etcd is back on the same data. Needs no KVM and no root.
# Usage: fleet_registry.sh QOSVISOR_BIN QOSCTL_BIN SOURCE_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
src=$3
etcd_bin=/usr/bin/etcd
[[ -x $etcd_bin ]] || { echo "SKIP: $etcd_bin is not installed (Debian package etcd-server)"; exit 77; }
daemon_work_dir
pid_b=""
etcd_pid=""
# DPDK leaves a runtime directory per file prefix, which a killed daemon cannot remove.
dpdk_runtime=${XDG_RUNTIME_DIR:-/var/run}/dpdk
[[ $(id -u) == 0 ]] && dpdk_runtime=/var/run/dpdk
trap 'stop_quietly "$pid"; stop_quietly "$pid_b"; stop_quietly "$etcd_pid"
      rm -rf "$work" "$dpdk_runtime/qvfla$$" "$dpdk_runtime/qvflb$$"' EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
client_port=$(free_port)
peer_port=$(free_port)
metrics_port=$(free_port)
endpoint=http://127.0.0.1:$client_port
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -n 30 "$f"; done; exit 1; }

start_etcd() {
  "$etcd_bin" --name fleet --data-dir "$work/etcd" --listen-client-urls "$endpoint" \
    --advertise-client-urls "$endpoint" --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "fleet=http://127.0.0.1:$peer_port" >>"$work/etcd.log" 2>&1 &
  etcd_pid=$!
  for _ in $(seq 100); do
    curl -sf "$endpoint/health" | grep -q '"true"' && return 0
    sleep 0.1
  done
  fail "etcd did not become healthy"
}

# box NAME HOST CONTROL: the edge default as NAME.yaml, registering as HOST in the fleet.
box() {
  edge_default_box "$src" "$work/$1.yaml" "qvfl$1$$" "$3"
  cat >>"$work/$1.yaml" <<EOF
fleet:
  host: $2
  etcd: [$endpoint]
  lease_ttl: 2s
  publish_interval: 500ms
  budget: {vcpus: 8, memory: 4GiB, uplink: 1Gbps}
  labels: {site: lab, rack: "3"}
EOF
}

a() { "$qosctl" --socket "$work/a.sock" "$@"; }
hosts_json() { a --json hosts; }
# listed HOST: whether box a's qosctl hosts lists HOST.
listed() { hosts_json | python3 -c "import json,sys; sys.exit(0 if any(h['name'] == '$1' for h in json.load(sys.stdin)) else 1)"; }
# seconds_until CMD...: runs CMD every 0.1 s until it succeeds (at most 10 s); prints the seconds.
seconds_until() {
  local start=$SECONDS
  for _ in $(seq 100); do "$@" && { echo $((SECONDS - start)); return 0; }; sleep 0.1; done
  return 1
}
rx_packets() { a --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["switch"]["rx_packets"])'; }
status_fleet() { a --json status | python3 -c "import json,sys; print(json.load(sys.stdin)['fleet']['$1'])"; }
connected() { [[ $(status_fleet connected) == True ]]; }
disconnected() { [[ $(status_fleet connected) == False ]]; }
unlisted() { ! listed "$1"; }

start_etcd
box a edge-a "socket: $work/a.sock, metrics: 127.0.0.1:$metrics_port"
box b edge-b "socket: $work/b.sock"
"$qosvisor" run "$work/a.yaml" --traffic --load 0.3 --duration 120s >"$work/a.log" 2>&1 &
pid=$!
"$qosvisor" run "$work/b.yaml" --duration 120s >"$work/b.log" 2>&1 &
pid_b=$!
wait_for_control "$qosctl" "$work/a.sock" "$work/a.log" 150
wait_for_control "$qosctl" "$work/b.sock" "$work/b.log" 150
wait_for_traffic "$qosctl" "$work/a.sock"

echo "== both boxes register; qosctl hosts lists them with budgets and load"
seconds_until listed edge-a >/dev/null || fail "edge-a did not register"
seconds_until listed edge-b >/dev/null || fail "edge-b did not register"
sleep 1.2  # two publications: edge-a's uplink rate is measured between them
a hosts | tee "$work/hosts"
grep -E -q "^edge-a +yes +0 +0/8 +0\.0MiB/4\.0GiB +[0-9.]+[KMG]bps/1\.0Gbps +- +rack=3,site=lab$" \
  "$work/hosts" || fail "edge-a's row"
grep -E -q "^edge-b +yes +0 +0/8 " "$work/hosts" || fail "edge-b's row"
hosts_json | python3 -c '
import json, sys
hosts = {h["name"]: h for h in json.load(sys.stdin)}
a = hosts["edge-a"]
assert a["alive"] and a["budget"] == {"vcpus": 8, "memory_bytes": 4 << 30, "uplink_bps": 10**9}, a
assert a["labels"] == {"site": "lab", "rack": "3"}, a
assert a["load"]["uplink_bps"] > 0, a  # its generator sends through uplink0
assert hosts["edge-b"]["load"]["uplink_bps"] == 0, hosts["edge-b"]' || fail "hosts --json"
a status | tee "$work/status"
grep -q "^fleet      edge-a, connected to $endpoint (lease [0-9]*, registered 1 time)" "$work/status" ||
  fail "status has no fleet line"
curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics"
grep -q '^qosvisor_fleet_connected{host="edge-a"} 1$' "$work/metrics" || fail "fleet gauge"
grep -q '^qosvisor_fleet_registrations_total{host="edge-a"} 1$' "$work/metrics" || fail "registrations"

echo "== a box killed with SIGKILL leaves within its lease TTL (2 s)"
kill -9 "$pid_b"
wait "$pid_b" 2>/dev/null || true
pid_b=""
gone=$(seconds_until unlisted edge-b) || fail "edge-b is still listed 10 s after its kill"
echo "edge-b left the registry ${gone} s after SIGKILL"
((gone <= 4)) || fail "edge-b stayed ${gone} s, longer than its lease"

echo "== a box stopped cleanly leaves at once"
"$qosvisor" run "$work/b.yaml" --duration 120s >"$work/b2.log" 2>&1 &
pid_b=$!
wait_for_control "$qosctl" "$work/b.sock" "$work/b2.log" 150
seconds_until listed edge-b >/dev/null || fail "edge-b did not register again"
stop_and_check "$qosctl" "$work/b.sock" "$pid_b" "$work/b2.log"
pid_b=""
listed edge-b && fail "edge-b is listed after a clean stop"
grep -q "fleet: host edge-b left the registry (lease [0-9]* revoked)" "$work/b2.log" ||
  fail "edge-b's log does not say it left"

echo "== etcd killed: edge-a says so, keeps answering and switching"
kill -9 "$etcd_pid"
wait "$etcd_pid" 2>/dev/null || true
etcd_pid=""
seconds_until disconnected >/dev/null ||
  fail "status still says connected"
a status | tee "$work/status"
grep -q "^fleet      edge-a, disconnected: etcd: $endpoint" "$work/status" ||
  fail "status does not say why"
# Read whole before grep: `curl | grep -q` under pipefail fails whenever grep has its line and
# exits while curl still writes the rest of the exposition (SIGPIPE).
exposition=$(curl -sf "http://127.0.0.1:$metrics_port/metrics") || fail "no metrics scrape"
grep -q '^qosvisor_fleet_connected{host="edge-a"} 0$' <<<"$exposition" ||
  fail "the metrics gauge is not 0: $(grep '^qosvisor_fleet_connected' <<<"$exposition")"
rc=0
a hosts >"$work/out" 2>&1 || rc=$?
cat "$work/out"
if ((rc != 1)) || ! grep -q "$endpoint" "$work/out"; then fail "qosctl hosts without etcd: exit $rc"; fi
before=$(rx_packets)
sleep 1
after=$(rx_packets)
echo "switch received $before frames, then $after a second later"
((after > before)) || fail "the data plane stopped with etcd"

echo "== etcd back on the same data: edge-a registers again"
start_etcd
back=$(seconds_until connected) ||
  fail "edge-a did not connect again within 10 s"
echo "edge-a registered again ${back} s after etcd returned"
[[ $(status_fleet registrations) == 2 ]] || fail "not registered a second time"
a hosts | tee "$work/hosts"
grep -E -q "^edge-a +yes " "$work/hosts" || fail "edge-a is not listed again"

stop_and_check "$qosctl" "$work/a.sock" "$pid" "$work/a.log"
pid=""
curl -sf -X POST "$endpoint/v3/kv/range" -d '{"key": "L3Fvc3Zpc29yL2hvc3RzLw==", "range_end": "L3Fvc3Zpc29yL2hvc3RzMA=="}' |
  grep -q '"kvs"' && fail "hosts are left in etcd after both boxes stopped"
echo "PASS"
