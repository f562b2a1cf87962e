#!/usr/bin/env bash
# Live migration between two boxes, each qosvisor in a network namespace of its own, joined by
# a veth pair (each end an af_packet uplink of its box). A host in a third namespace hangs off
# box A and echoes through a netecho VM every 5 ms while the VM migrates from A to B:
#   - the migration stream crosses both switches in migration.class: the listener and the
#     sender use a tap port of the switch (mig0), and the class's counters on both uplinks grow;
#   - box B announces the VM's MAC (RARP), so box A sends the host's datagrams over the uplink
#     at once, and the echoes go on; the longest gap between answers is measured and printed;
#   - the VM's class (echo) goes on counting on box B's uplink, with the same MAC and bridge;
#   - the veth between the boxes cut while the VM migrates back leaves it running on box B, and
#     box A (its configured home) lists it as migrated away again, with nothing running.
# Creates the namespaces and links it needs and removes them on exit. Needs root and /dev/kvm.
# Usage: vm_migrate_netns.sh QOSVISOR_BIN QOSCTL_BIN GUEST_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
guests=$(cd "$3" && pwd)
require_kvm_guest "$guests" netecho
if [[ $(id -u) -ne 0 ]]; then echo "SKIP: needs root for network namespaces"; exit 77; fi
command -v ethtool >/dev/null || { echo "SKIP: ethtool is not installed"; exit 77; }

tag="qm$$"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do stop_quietly "$p"; done
  for ns in a b h; do ip netns del "${tag}$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
for ns in a b h; do ip netns add "${tag}$ns"; ip netns exec "${tag}$ns" ip link set lo up; done
# a <-> b: the boxes' uplinks; a <-> h: the host.
ip link add "${tag}ab" netns "${tag}a" type veth peer name "${tag}ba" netns "${tag}b"
ip link add "${tag}ah" netns "${tag}a" type veth peer name "${tag}ha" netns "${tag}h"
for pair in "a ${tag}ab" "b ${tag}ba" "a ${tag}ah" "h ${tag}ha"; do
  set -- $pair
  ip netns exec "${tag}$1" ip link set "$2" up
done
ip netns exec "${tag}h" ip addr add 10.0.0.100/24 dev "${tag}ha"
# veth leaves checksums to be filled in later; a packet socket would forward them unfilled.
ip netns exec "${tag}h" ethtool -K "${tag}ha" tx off >/dev/null
head -c 32 /dev/urandom >"$work/key" && chmod 600 "$work/key"

box() {  # box NAME MIGRATION_IP EXTRA_PORTS EXTRA_MEMBERS EXTRA_UPLINKS VMS
  mkdir -p "$work/$1"
  cat >"$work/$1.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: ${tag}$1}
ports:
  - {name: up0, driver: af_packet, args: {iface: ${tag}$( [ "$1" = a ] && echo ab || echo ba )}}
  - {name: mig0, driver: tap, args: {iface: ${tag}m$1}}
$3
bridges:
  - {name: br0, ports: [up0, mig0$4]}
classes:
  - {name: echo, queue: 1, policy: srpt}
  - {name: migration, queue: 2, policy: fifo}
  - {name: other, queue: 0, policy: fifo}
uplinks:
  - {port: up0, rate: 1Gbps}
$5
templates:
  - {name: echo, vcpus: 1, memory: 16MiB, image: $guests/netecho.elf, nics: [{bridge: br0, class: echo}]}
$6
hosts:
  - {name: box-a, address: 10.99.0.1, port: 7400}
  - {name: box-b, address: 10.99.0.2, port: 7400}
migration: {listen: "0.0.0.0:7400", key_file: $work/key, class: migration, timeout: 5s}
control: {socket: $work/$1/ctl.sock}
YAML
}
box a 10.99.0.1 "  - {name: h0, driver: af_packet, args: {iface: ${tag}ah}}" ", h0" \
  "  - {port: h0, rate: 1Gbps}" \
  "vms:
  - {name: web, template: echo, cmdline: \"ip=2\"}"
box b 10.99.0.2 "" "" "" ""
sed -i '/^$/d' "$work/a.yaml" "$work/b.yaml"
# Box B's pre-copy is capped (4 Mbit/s), so that the link can be cut while it sends.
sed -i 's/timeout: 5s}/timeout: 5s, bandwidth: 4Mbps}/' "$work/b.yaml"

start() {  # start NAME IP
  ip netns exec "${tag}$1" "$qosvisor" run "$work/$1.yaml" >"$work/$1.log" 2>&1 &
  pids+=($!)
  wait_for_control "$qosctl" "$work/$1/ctl.sock" "$work/$1.log" 150
  # The tap PMD makes mig0's interface when the port starts: the box's own address goes there.
  ip netns exec "${tag}$1" ip addr add "$2/24" dev "${tag}m$1"
  ip netns exec "${tag}$1" ip link set "${tag}m$1" up
}
ctl() { local b=$1; shift; "$qosctl" --socket "$work/$b/ctl.sock" "$@"; }
fail() { echo "FAIL: $*"; tail -n 30 "$work"/*.log; exit 1; }
class_sent() {  # class_sent BOX UPLINK_PORT CLASS: packets the class sent on that uplink
  ctl "$1" --json stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
u = [u for u in s["uplinks"] if u["port"] == sys.argv[1]][0]
print([c for c in u["classes"] if c["class"] == sys.argv[2]][0]["dequeued_packets"])' "$2" "$3"
}

start a 10.99.0.1
start b 10.99.0.2
for _ in $(seq 300); do grep -q "netecho: ready" "$work/a/web.serial.log" 2>/dev/null && break; sleep 0.1; done
grep -q "netecho: ready" "$work/a/web.serial.log" || fail "netecho did not start on box A"
mac=$(ctl a --json vms | python3 -c '
import json, sys
print([v for v in json.load(sys.stdin) if v["name"] == "web"][0]["macs"][0])')
ip netns exec "${tag}h" ip neigh add 10.0.0.2 lladdr "$mac" dev "${tag}ha"
ip netns exec "${tag}a" ping -c 2 -W 2 10.99.0.2 >/dev/null || fail "the boxes' tap ports do not reach each other"

echo "== echoes from the host every 5 ms while web migrates from A to B"
ip netns exec "${tag}h" python3 - "$work/echo.json" <<'PY' &
import json, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.0.0.100", 0))
s.setblocking(False)
sent, answers = {}, []
end = time.monotonic() + 12
seq = 0
while time.monotonic() < end:
    sent[seq] = time.monotonic()
    s.sendto(struct.pack("!Q", seq) + b"e" * 56, ("10.0.0.2", 7))
    seq += 1
    deadline = time.monotonic() + 0.005
    while time.monotonic() < deadline:
        try:
            data = s.recv(2048)
            n = struct.unpack("!Q", data[:8])[0]
            answers.append((time.monotonic(), time.monotonic() - sent[n]))
        except BlockingIOError:
            time.sleep(0.0005)
times = [t for t, _ in answers]
# From each answer to the next, and from the last one to the end: silence at the end counts.
gaps = [b - a for a, b in zip(times, times[1:])] + ([end - times[-1]] if times else [])
rtts = sorted(r for _, r in answers)
json.dump({"sent": seq, "answered": len(answers),
           "max_gap_ms": 1000 * max(gaps) if gaps else None,
           "p50_rtt_ms": 1000 * rtts[len(rtts) // 2] if rtts else None,
           "p99_rtt_ms": 1000 * rtts[int(len(rtts) * 0.99)] if rtts else None},
          open(sys.argv[1], "w"))
PY
echo_pid=$!
pids+=("$echo_pid")
sleep 3
mig_before=$(class_sent a up0 migration)
result=$(ctl a --json vm web migrate box-b) || fail "the migration failed"
echo "$result" | python3 -c '
import json, sys
r = json.load(sys.stdin)["result"]
print("  rounds %d, %d bytes, downtime %.1f ms" % (r["rounds"], r["bytes_sent"], r["downtime_ms"]))'
echo_b_before=$(class_sent b up0 echo)
wait "$echo_pid" || fail "the echo client failed"
python3 - "$work/echo.json" <<'PY' || fail "the echoes did not go on through the migration"
import json, sys
e = json.load(open(sys.argv[1]))
print("  host echoes: %d sent, %d answered, longest gap between answers %.1f ms, rtt p50 %.2f ms, "
      "p99 %.2f ms" % (e["sent"], e["answered"], e["max_gap_ms"], e["p50_rtt_ms"], e["p99_rtt_ms"]))
sys.exit(0 if e["answered"] >= e["sent"] * 0.9 and e["max_gap_ms"] < 2000 else 1)
PY

echo "== web runs on B with its class; the stream went in the migration class"
[ "$(ctl b --json vms | python3 -c '
import json, sys
print([v["state"] + " " + v["macs"][0] for v in json.load(sys.stdin) if v["name"] == "web"][0])')" = "running $mac" ] ||
  fail "web does not run on box B with MAC $mac"
mig_a=$(class_sent a up0 migration)
mig_b=$(class_sent b up0 migration)
echo "  migration class: box A's uplink sent $((mig_a - mig_before)), box B's $mig_b (acknowledgements)"
[ $((mig_a - mig_before)) -gt 100 ] || fail "the migration stream did not cross box A's uplink in its class"
[ "$mig_b" -gt 0 ] || fail "box B's answers did not cross its uplink in the migration class"
echo_b=$(class_sent b up0 echo)
echo "  echo class on box B's uplink: $echo_b packets ($echo_b_before right after the migration)"
[ "$echo_b" -gt 100 ] || fail "web's echo class did not count on box B's uplink"
echo "== the link between the boxes cut while web migrates back: it stays on B, nothing on A"
ctl b vm web migrate box-a >"$work/cut.out" 2>&1 &
back=$!
sleep 0.15  # the pre-copy is capped at 4 Mbit/s: some 400 ms for this guest
ip -n "${tag}a" link set "${tag}ab" down
if wait "$back"; then fail "the migration went through a cut link: $(cat "$work/cut.out")"; fi
echo "  $(cat "$work/cut.out")"
[ "$(ctl b --json vms | python3 -c '
import json, sys
print([v["state"] for v in json.load(sys.stdin) if v["name"] == "web"][0])')" = running ] ||
  fail "web does not run on box B after the cut"
for _ in $(seq 80); do  # box A gives up within its own timeout (5 s)
  state=$(ctl a --json vms | python3 -c '
import json, sys
print([v["state"] for v in json.load(sys.stdin) if v["name"] == "web"][0])')
  [ "$state" = migrated ] && break
  sleep 0.1
done
[ "$state" = migrated ] || fail "box A kept web ($state) after the cut"
ip -n "${tag}a" link set "${tag}ab" up

for b in a b; do ctl "$b" stop >/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
! grep -l "Sanitizer\|runtime error" "$work"/*.log || fail "a sanitizer reported (see the logs above)"
echo "PASS"
