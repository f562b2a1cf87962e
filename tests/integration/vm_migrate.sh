#!/usr/bin/env bash
# Live migration between two qosvisor daemons on one machine (loopback), both in a fleet whose
# registry is a real etcd: a counter VM with a vflash disk moves from box A to box B, found in
# the registry by name, and back by host:port, counting on
# without a lost or repeated step (its serial lines, joined across both logs, go up by exactly
# one step each). Then every failure leaves the VM running on the source and nothing on the
# destination: a destination with the wrong key, a byte of the stream corrupted, the connection
# cut, the destination killed during pre-copy and during stop-and-copy, the link going silent
# (a proxy that follows the frames does each), the commit lost on its way (the source keeps the
# VM paused and says the outcome is unknown), and a destination whose budget has no room (the
# source refuses it from the registry's figures; the destination itself when asked directly).
# A box killed during a migration removes what it left when it starts again. Needs /dev/kvm.
# Usage: vm_migrate.sh QOSVISOR_BIN QOSCTL_BIN GUEST_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
guests=$(cd "$3" && pwd)
proxy=$(cd "$(dirname "$0")" && pwd)/lib/migration_proxy.py
require_kvm_guest "$guests" counter
etcd_bin=/usr/bin/etcd
[[ -x $etcd_bin ]] || { echo "SKIP: $etcd_bin is not installed (Debian package etcd-server)"; exit 77; }

tag="qvmg$$"
daemons_work_dir "$tag"
base=$((20000 + ($$ % 5000) * 4))
port_a=$base port_b=$((base + 1)) port_c=$((base + 2)) port_proxy=$((base + 3))
head -c 32 /dev/urandom >"$work/key" && chmod 600 "$work/key"
head -c 32 /dev/urandom >"$work/other.key" && chmod 600 "$work/other.key"

# box NAME PORT KEY EXTRA: writes $work/NAME.yaml
box() {
  mkdir -p "$work/$1/disks"
  cat >"$work/$1.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: ${tag}$1}
ports:
  - {name: p0, driver: ring}
bridges:
  - {name: br0, ports: [p0]}
classes:
  - {name: echo, queue: 1, policy: srpt}
templates:
  - {name: counter, vcpus: 1, memory: 16MiB, image: $guests/counter.elf,
     nics: [{bridge: br0, class: echo}]}
  - {name: big, vcpus: 1, memory: 48MiB, image: $guests/counter.elf, nics: [{bridge: br0}]}
hosts:
  - {name: box-a, address: 127.0.0.1, port: $port_a}
migration: {listen: "127.0.0.1:$2", key_file: $3, timeout: 4s}
control: {socket: $work/$1/ctl.sock}
$4
YAML
}
start() {  # start NAME: runs box NAME, sets pid_NAME
  "$qosvisor" run "$work/$1.yaml" >"$work/$1.log" 2>&1 &
  pids+=($!)
  printf -v "pid_$1" '%s' "$!"
  wait_for_control "$qosctl" "$work/$1/ctl.sock" "$work/$1.log" 150
}
ctl() { local b=$1; shift; "$qosctl" --socket "$work/$b/ctl.sock" "$@"; }
fail() { echo "FAIL: $*"; tail -n 30 "$work"/*.log; exit 1; }
vm_state() {  # vm_state BOX VM: its state, or "absent"
  ctl "$1" --json vms | python3 -c '
import json, sys
row = [v for v in json.load(sys.stdin) if v["name"] == sys.argv[1]]
print(row[0]["state"] if row else "absent")' "$2"
}
# The count lines of the logs joined in order: a line the pause cut in two ends in the next log.
counts() { cat "$@" 2>/dev/null | grep -o 'count [0-9][0-9]*' | awk '{print $2}'; }
wait_for_counts() {  # wait_for_counts FILE N: until FILE holds N count lines
  for _ in $(seq 600); do
    [ "$(counts "$1" | wc -l)" -ge "$2" ] && return 0
    sleep 0.1
  done
  fail "$1 did not reach $2 count lines"
}
# The counter prints every 2^28 steps: joined, the lines must go up by exactly that each.
check_continuity() {
  counts "$@" | python3 -c '
import sys
v = [int(x) for x in sys.stdin.read().split()]
bad = [(a, b) for a, b in zip(v, v[1:]) if b - a != 1 << 28]
sys.exit(f"steps lost or repeated between {bad[:3]}" if bad else 0)' ||
    fail "the counter did not go on step by step across the migration"
}
still_runs_on_a() {  # still_runs_on_a WHY
  [ "$(vm_state a web)" = running ] || fail "$1: web is not running on box A"
  local n
  n=$(counts "$work/a/web.serial.log" | wc -l)
  wait_for_counts "$work/a/web.serial.log" $((n + 1))
}
b_is_clean() {
  [ "$(vm_state b web)" = absent ] && ! ctl b --json ports | grep -q '"web\.' &&
    [ ! -e "$work/b/web.vflash" ]
}
nothing_on_b() {  # nothing_on_b WHY: within the destination's own timeout (4 s)
  for _ in $(seq 80); do b_is_clean && return 0; sleep 0.1; done
  fail "$1: box B kept web, a port of it or its disk"
}
migrate_fails() {  # migrate_fails WHY DEST EXPECTED: the job fails, saying EXPECTED
  local out
  if out=$(ctl a vm web migrate "$2" 2>&1); then fail "$1: the migration succeeded"; fi
  echo "  $1: $out"
  grep -q -- "$3" <<<"$out" || fail "$1: the error does not say '$3'"
}

etcd_client=$((base + 10)) etcd_peer=$((base + 11))
endpoint=http://127.0.0.1:$etcd_client
"$etcd_bin" --name fleet --data-dir "$work/etcd" --listen-client-urls "$endpoint" \
  --advertise-client-urls "$endpoint" --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "fleet=http://127.0.0.1:$etcd_peer" >"$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "$endpoint/health" | grep -q '"true"' && break; sleep 0.1; done

box a "$port_a" "$work/key" "vms:
  - {name: web, template: counter, disk: {path: a/disks/web.vflash, size: 4MiB}}
fleet: {host: box-a, etcd: [\"$endpoint\"], lease_ttl: 3s, publish_interval: 1s,
  budget: {vcpus: 8, memory: 1GiB, uplink: 1Gbps}}"
box b "$port_b" "$work/key" "fleet: {host: box-b, etcd: [\"$endpoint\"], lease_ttl: 3s,
  publish_interval: 1s, budget: {vcpus: 4, memory: 40MiB, uplink: 1Gbps}}"
box c "$port_c" "$work/other.key" ""
start a
start b
wait_for_counts "$work/a/web.serial.log" 2
for _ in $(seq 100); do ctl a hosts 2>/dev/null | grep -q "^box-b" && break; sleep 0.1; done
ctl a hosts | grep -q "^box-b" || fail "box A does not see box-b in the registry"

echo "== A to B, found in the fleet registry"
result=$(ctl a vm web migrate box-b) || fail "migration to box-b failed"
echo "  $result"
grep -q "^vm web: migrated to box-b in .* downtime [0-9.]* ms" <<<"$result" ||
  fail "qosctl did not print what the migration did"
[ "$(vm_state a web)" = migrated ] || fail "box A does not list web as migrated"
[ "$(vm_state b web)" = running ] || fail "web does not run on box B"
[ -s "$work/b/web.vflash" ] || fail "web's disk did not move to box B"
wait_for_counts "$work/b/web.serial.log" 2
check_continuity "$work/a/web.serial.log" "$work/b/web.serial.log"
grep -q "counter: start" "$work/b/web.serial.log" && fail "web booted again on box B"

echo "== B to A by host:port, paused: it stays paused"
mv "$work/a/web.serial.log" "$work/a/web.serial.log.first"
ctl b vm web pause >/dev/null || fail "pausing web on box B failed"
ctl b vm web migrate "127.0.0.1:$port_a" >/dev/null || fail "migration back to box A failed"
[ "$(vm_state a web)" = paused ] || fail "web is not paused on box A, as it was on box B"
ctl a vm web resume >/dev/null || fail "resuming web on box A failed"
[ "$(vm_state a web)" = running ] || fail "web does not run on box A again"
[ ! -e "$work/b/web.vflash" ] || true
wait_for_counts "$work/a/web.serial.log" 2
check_continuity "$work/a/web.serial.log.first" "$work/b/web.serial.log" "$work/a/web.serial.log"
rm -f "$work/b/web.vflash" "$work/b/web.vflash.meta" "$work/b/web.serial.log"

echo "== failures leave the VM on the source and nothing on the destination"
start c
migrate_fails "wrong key" "127.0.0.1:$port_c" "authentication"
kill "$pid_c"
still_runs_on_a "wrong key"

run_proxy() {  # run_proxy TYPE ACTION: a proxy to box B on port_proxy
  python3 "$proxy" "$port_proxy" "127.0.0.1:$port_b" "$1" "$2" >"$work/proxy.log" 2>&1 &
  proxy_pid=$!
  pids+=("$proxy_pid")
  for _ in $(seq 50); do grep -q listening "$work/proxy.log" && return 0; sleep 0.1; done
  fail "the proxy did not start"
}
restart_b_if_dead() {
  if ! kill -0 "$pid_b" 2>/dev/null; then
    wait "$pid_b" 2>/dev/null || true
    rm -f "$work/b/ctl.sock"
    start b
  fi
}
check_failure() {  # check_failure WHY TYPE ACTION EXPECTED
  run_proxy "$2" "$3"
  migrate_fails "$1" "127.0.0.1:$port_proxy" "$4"
  grep -q "proxy: " "$work/proxy.log" || fail "$1: the proxy never acted"
  stop_quietly "$proxy_pid"
  restart_b_if_dead  # a killed box removes what it left when it starts again
  nothing_on_b "$1"
  still_runs_on_a "$1"
}
check_failure "a byte of the pages corrupted" 4 corrupt "refused it: .*checksum mismatch"
check_failure "connection cut in pre-copy" 4 cut "failed"
check_failure "destination killed in pre-copy" 4 "kill:$pid_b" "failed"
check_failure "destination killed in stop-and-copy" 7 "kill:$pid_b" "failed"
check_failure "link dead in pre-copy (only silence)" 4 stall "no message from the destination within"

echo "== the commit lost on its way: the VM waits, paused, on the source; nothing on the destination"
run_proxy 12 cut
migrate_fails "commit lost" "127.0.0.1:$port_proxy" "the outcome of the migration .* is unknown"
stop_quietly "$proxy_pid"
nothing_on_b "commit lost"
[ "$(vm_state a web)" = paused ] || fail "commit lost: web is not paused on box A"
ctl a vm web resume >/dev/null || fail "commit lost: resuming web on box A failed"
still_runs_on_a "commit lost"

echo "== a destination without the budget is refused by the source, and refuses itself"
# The source reads box-b's record, published every second: wait until it no longer shows the VM
# the failures above left there for a moment.
b_load_vcpus() {
  ctl a --json hosts | python3 -c '
import json, sys
print([h["load"]["vcpus"] for h in json.load(sys.stdin) if h["name"] == "box-b"][0])'
}
for _ in $(seq 50); do [ "$(b_load_vcpus)" = 0 ] && break; sleep 0.1; done
[ "$(b_load_vcpus)" = 0 ] || fail "box-b's record still shows a VM"
ctl a vm big create --template big >/dev/null || fail "creating big failed"
if out=$(ctl a vm big migrate box-b 2>&1); then fail "big migrated into too small a budget"; fi
echo "  $out"
grep -q "host 'box-b' has 4 vCPUs and .* free in its budget" <<<"$out" ||
  fail "the source's refusal does not give box-b's budget"
if out=$(ctl a vm big migrate "127.0.0.1:$port_b" 2>&1); then fail "big migrated into too small a budget"; fi
echo "  $out"
grep -q "out of memory" <<<"$out" || fail "the destination's refusal does not say 'out of memory'"
[ "$(vm_state a big)" = running ] || fail "big does not run on box A after the refusal"
[ "$(vm_state b big)" = absent ] || fail "box B kept big"

for b in a b; do ctl "$b" stop >/dev/null || true; done
wait "$pid_a" "$pid_b" 2>/dev/null || true
! grep -l "Sanitizer\|runtime error" "$work"/*.log || fail "a sanitizer reported (see the logs above)"
echo "PASS"
