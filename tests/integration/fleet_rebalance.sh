#!/usr/bin/env bash
# Placement and rebalancing across four boxes on loopback sharing one etcd: box-a runs three VMs
# against a budget of one vCPU (a counter and two memtouch guests writing memory fast), box-b
# runs a third memtouch, box-c and box-d run nothing. box-d leads the fleet's planning (it
# starts first). `rebalance` on another box fails naming the leader; `rebalance --dry-run` on
# the leader plans two moves without moving anything, the first being box-a's VM with the
# fewest changed pages by the registry's records; `rebalance` then moves them, each carried out
# by box-a for the leader, and no two memtouch guests share a host afterwards. `place` names a
# host with room, and refuses an unknown VM. Killing the leader with SIGKILL hands the planning
# to another box within the lease TTL. A plan whose first move fails (box-c holds another
# migration key at first) stops there, saying what failed and why and what was not tried; with
# etcd killed, place and rebalance say so. `premigrate` without hosts copies a fork family's image
# to the three other hosts of the registry. Needs /dev/kvm and etcd.
# Usage: fleet_rebalance.sh QOSVISOR_BIN QOSCTL_BIN GUEST_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
guests=$(cd "$3" && pwd)
require_kvm_guest "$guests" counter
require_kvm_guest "$guests" memtouch

tag="qvrb$$"
daemons_work_dir "$tag"
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
head -c 32 /dev/urandom >"$work/key" && chmod 600 "$work/key"
head -c 32 /dev/urandom >"$work/other.key" && chmod 600 "$work/other.key"

start_test_etcd "$work"
pids+=("$etcd_pid")

# box NAME VCPUS VMS [KEY]: writes $work/NAME.yaml, box-NAME in the fleet with a budget of VCPUS.
box() {
  mkdir -p "$work/$1"
  cat >"$work/$1.yaml" <<YAML
dataplane: {lcores: 1, memory: 128MiB, hugepages: off, mbufs: 2047, file_prefix: ${tag}$1}
ports:
  - {name: p0, driver: ring}
bridges:
  - {name: br0, ports: [p0]}
templates:
  - {name: counter, vcpus: 1, memory: 16MiB, image: $guests/counter.elf}
  - {name: writer, vcpus: 1, memory: 32MiB, image: $guests/memtouch.elf,
     cmdline: "pages=3000 mib=16"}
vms: [$3]
migration: {listen: "127.0.0.1:$(free_port)", key_file: ${4:-$work/key}, timeout: 20s}
control: {socket: $work/$1/ctl.sock}
fleet:
  host: box-$1
  etcd: [$endpoint]
  lease_ttl: 2s
  publish_interval: 500ms
  budget: {vcpus: $2, memory: 256MiB, uplink: 1Gbps}
  anti_affinity: [{name: pair, vms: [quiet, ghost]}]
YAML
}
start() {  # start NAME: runs box NAME, sets pid_NAME
  "$qosvisor" run "$work/$1.yaml" >"$work/$1.log" 2>&1 &
  pids+=($!)
  printf -v "pid_$1" '%s' "$!"
  wait_for_control "$qosctl" "$work/$1/ctl.sock" "$work/$1.log" 150
}
ctl() { local b=$1; shift; "$qosctl" --socket "$work/$b/ctl.sock" "$@"; }
leading() { ctl "$1" --json status | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["fleet"]["leading"] else 1)'; }
# where VM: the host whose registry record lists VM.
where() {
  ctl "$1" --json hosts | python3 -c '
import json, sys
print(" ".join(h["name"] for h in json.load(sys.stdin) if any(v["name"] == sys.argv[1] for v in h["vms"])))' "$2"
}
# until_true SECONDS CMD...: runs CMD every 0.1 s until it succeeds.
until_true() {
  local n=$(($1 * 10)); shift
  for _ in $(seq "$n"); do "$@" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
listed_on() { [[ $(where d "$1") == "$2" ]]; }  # listed_on VM HOST: box-d sees VM on HOST alone
listed_with_vms() {  # listed_with_vms BOX N: BOX's view of the registry shows N VMs in all
  [[ $(ctl "$1" --json hosts | python3 -c 'import json,sys; print(sum(len(h["vms"]) for h in json.load(sys.stdin)))') == "$2" ]]
}

box d 4 ""
box a 1 "{name: quiet, template: counter}, {name: w1, template: writer}, {name: w2, template: writer}"
box b 4 "{name: w3, template: writer}"
box c 4 "" "$work/other.key"
start d
until_true 5 leading d || fail "box-d does not lead"
start a
start b
start c
until_true 10 listed_with_vms d 4 || fail "the registry does not show the four VMs"
sleep 2.5  # the page trackers' figures reach the records

echo "== status says who leads; rebalance on another box names the leader"
ctl a status | tee "$work/status"
grep -q "^leader     box-d$" "$work/status" || fail "box-a's status does not name box-d"
ctl d status | grep -q "^leader     this box plans for the fleet$" || fail "box-d's status"
rc=0
ctl a rebalance >"$work/out" 2>&1 || rc=$?
cat "$work/out"
((rc == 1)) || fail "rebalance on box-a exited $rc"
grep -q "host box-d leads the fleet's planning, not this one (box-a); run it there" "$work/out" ||
  fail "rebalance on box-a does not name the leader"

echo "== rebalance --dry-run plans, moving nothing"
ctl d --json hosts >"$work/hosts.json"
cheapest=$(python3 -c '
import json, sys
a = [h for h in json.load(open(sys.argv[1])) if h["name"] == "box-a"][0]
print(min(a["vms"], key=lambda v: (v["changed_pages"], v["memory_bytes"], v["name"]))["name"])' \
  "$work/hosts.json")
python3 -c '
import json, sys
for h in json.load(open(sys.argv[1])):
    for v in h["vms"]:
        print("  %s: %s changed_pages=%d pages/s=%.0f" % (h["name"], v["name"], v["changed_pages"], v["pages_per_second"]))' \
  "$work/hosts.json"
echo "  the VM on box-a with the fewest changed pages: $cheapest"
ctl d rebalance --dry-run | tee "$work/plan"
grep -q "^plan box-d-[0-9]* by box-d: 2 moves (dry run: nothing moved)$" "$work/plan" ||
  fail "the dry run does not plan two moves"
grep -E -q "^  1\. $cheapest +box-a -> box-[bcd] " "$work/plan" ||
  fail "the first move is not $cheapest, the VM with the fewest changed pages"
grep -q "box-a is over its vCPU budget (3 of 1)" "$work/plan" || fail "the plan gives no reason"
grep -q "anti-affinity group 'pair': vm 'ghost' runs on no host of the fleet" "$work/plan" ||
  fail "no warning about the group member that runs nowhere"
[[ $(where d "$cheapest") == box-a ]] || fail "the dry run moved $cheapest"

echo "== a move that fails stops the plan, saying what ran, what failed and why, what was not tried"
rc=0
ctl d rebalance >"$work/out" 2>&1 || rc=$?
cat "$work/out"
((rc == 1)) || fail "a failing plan exited $rc"
grep -q "stopped at move 1 of 2: vm $cheapest (box-a -> box-c) failed: .*authentication failed" \
  "$work/out" || fail "the error does not name the failed move and why"
grep -q "Done: none. Not tried: vm .* (box-a -> box-d)." "$work/out" || fail "what was not tried"
[[ $(where d "$cheapest") == box-a ]] || fail "$cheapest left box-a"
stop_and_check "$qosctl" "$work/c/ctl.sock" "$pid_c" "$work/c.log"
box c 4 ""
start c
until_true 10 listed_with_vms d 4 || fail "box-c did not come back"

echo "== rebalance moves them, one at a time, each through box-a"
start_s=$SECONDS
ctl d rebalance | tee "$work/done"
echo "  took $((SECONDS - start_s)) s"
grep -q "^plan box-d-[0-9]* by box-d: 2 moves, done$" "$work/done" || fail "rebalance did not finish"
grep -E -q "^  1\. $cheapest +box-a -> box-[bcd] .*, done$" "$work/done" || fail "first move"
plan=$(sed -n 's/^plan \(box-d-[0-9]*\) by .*/\1/p' "$work/done")
grep -c "fleet: moving vm '.*' to box-. for host box-d's plan $plan$" "$work/a.log" | grep -q "^2$" ||
  fail "box-a did not carry out both moves of plan $plan"
# Each moved VM listed by its destination alone, once both boxes have published.
while read -r vm to; do
  until_true 5 listed_on "$vm" "$to" || fail "$vm is not listed on $to alone"
done < <(sed -n 's/^ *[0-9]*\. \([^ ]*\) *box-a -> \(box-.\) .*/\1 \2/p' "$work/done")
for vm in quiet w1 w2 w3; do echo "  $vm runs on $(where d $vm)"; done
writers_hosts=$(for vm in w1 w2 w3; do where d $vm; done | sort -u | wc -l)
((writers_hosts == 3)) || fail "the memtouch guests are not spread over three hosts"
ctl d rebalance --dry-run | grep -q "^nothing to do" || fail "the fleet is not balanced now"

echo "== place names a host with room; an unknown VM is refused"
ctl b place w3 | tee "$work/place"
target=$(awk '/^w3: box-b -> /{print $4}' "$work/place")
[[ -n $target && $target != box-a ]] || fail "place did not name a host with room for w3"
rc=0
ctl b place nope >"$work/out" 2>&1 || rc=$?
((rc == 1)) && grep -q "vm 'nope' runs on no host of the fleet" "$work/out" ||
  fail "place of an unknown VM: exit $rc, $(cat "$work/out")"

echo "== premigrate without hosts copies a fork family's image to every other host of the fleet"
home=$(where d w1)
ctl "${home#box-}" vm w1 fork 1 --prefix w1-kid >/dev/null
ctl "${home#box-}" vm w1 premigrate | tee "$work/pre"
[[ $(grep -c "copied to box-" "$work/pre") -eq 3 ]] || fail "the image did not go to the 3 other hosts"
grep -q "copied to $home" "$work/pre" && fail "the image was copied to its own host"
for b in a b c d; do
  [[ box-$b == "$home" ]] && continue
  [[ $(ctl "$b" --json images | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["held"]))') == 1 ]] ||
    fail "box-$b holds no image"
done

echo "== the leader killed: another box plans within the lease TTL (2 s)"
killed=$(date +%s.%N)
kill -9 "$pid_d"
wait "$pid_d" 2>/dev/null || true
new_leader=""
for _ in $(seq 100); do
  for b in a b c; do leading "$b" 2>/dev/null && new_leader=$b && break 2; done
  sleep 0.1
done
[[ -n $new_leader ]] || fail "no box leads 10 s after the leader was killed"
# From the new leader's own log: asking each box in turn is slow on a busy machine.
took=$(grep -h "fleet: host box-$new_leader leads the fleet's planning (key" "$work/$new_leader.log" |
  python3 -c '
import datetime, sys
stamp = sys.stdin.read().split()[0]
led = datetime.datetime.fromisoformat(stamp).timestamp()  # the log writes local time
print(f"{led - float(sys.argv[1]):.1f}")' "$killed")
echo "  box-$new_leader leads ${took} s after box-d was killed"
python3 -c "import sys; sys.exit(0 if $took <= 2.8 else 1)" || fail "took longer than the TTL"
ctl "$new_leader" rebalance --dry-run | grep -q "^nothing to do" ||
  fail "the new leader does not plan"

echo "== etcd killed: place and rebalance say why they cannot answer"
kill -9 "$etcd_pid"
wait "$etcd_pid" 2>/dev/null || true
rc=0
ctl b place w3 >"$work/out" 2>&1 || rc=$?
cat "$work/out"
((rc == 1)) && grep -q "cannot read the fleet registry: etcd: $endpoint" "$work/out" ||
  fail "place without etcd: exit $rc"
rc=0
ctl "$new_leader" rebalance >"$work/out" 2>&1 || rc=$?
cat "$work/out"
((rc == 1)) && grep -q "^qosctl: rebalance: cannot tell who leads the fleet: etcd: $endpoint" "$work/out" ||
  fail "rebalance without etcd: exit $rc"

for b in a b c; do
  stop_and_check "$qosctl" "$work/$b/ctl.sock" "$(eval echo "\$pid_$b")" "$work/$b.log"
done
echo "PASS"
