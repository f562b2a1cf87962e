#!/usr/bin/env bash
# Real traffic across the switch: two network namespaces, each with a veth pair whose host end is
# an af_packet, af_xdp (or tap) port of qosvisor; ping and UDP from one namespace to the other, through a
# bridge and a scheduled uplink. Creates everything it needs and removes it on exit.
# Usage: netns_switch.sh QOSVISOR_BIN QOSCTL_BIN [af_packet|af_xdp|tap]
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
driver=${3:-af_packet}

if [[ $(id -u) -ne 0 ]]; then echo "SKIP: needs root for network namespaces"; exit 77; fi
command -v ip >/dev/null || { echo "SKIP: iproute2 (ip) is not installed"; exit 77; }

tag="qv$$"
ns_a="${tag}a"
ns_b="${tag}b"
work=$(mktemp -d)
pid=""
cleanup() {
  stop_quietly "$pid"
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
  ip link del "${tag}ha" 2>/dev/null || true
  ip link del "${tag}hb" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns_a"
ip netns add "$ns_b"
if [[ $driver == af_packet || $driver == af_xdp ]]; then
  for side in a b; do
    ip link add "${tag}h$side" type veth peer name "${tag}n$side"
    ip link set "${tag}n$side" netns "${tag}$side"
    ip link set "${tag}h$side" up
  done
  port_a="{name: pa, driver: $driver, args: {iface: ${tag}ha}}"
  port_b="{name: pb, driver: $driver, args: {iface: ${tag}hb}}"
else
  port_a="{name: pa, driver: tap, args: {iface: ${tag}ta}}"
  port_b="{name: pb, driver: tap, args: {iface: ${tag}tb}}"
fi

cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: ${tag}}
ports:
  - $port_a
  - $port_b
bridges:
  - {name: br0, ports: [pa, pb]}
flows:
  - {bridge: br0, rule: "priority=100,udp,tp_dst=5001,actions=set_queue:1,NORMAL"}
classes:
  - {name: probe, queue: 1, policy: srpt}
  - {name: other, queue: 0, policy: fifo}
messages:
  - {class: probe, identify: datagram}
uplinks:
  - {port: pb, rate: 100Mbps}
control: {socket: $work/ctl.sock}
YAML

"$qosvisor" check "$work/box.yaml" >/dev/null
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 100

if [[ $driver == tap ]]; then
  # The tap PMD creates the interfaces when the ports start: move them into the namespaces now.
  for side in a b; do
    ip link set "${tag}t$side" netns "${tag}$side"
    ip netns exec "${tag}$side" ip link set "${tag}t$side" name "${tag}n$side"
  done
fi
ip netns exec "$ns_a" ip addr add 10.77.0.1/24 dev "${tag}na"
ip netns exec "$ns_b" ip addr add 10.77.0.2/24 dev "${tag}nb"
ip netns exec "$ns_a" ip link set "${tag}na" up
ip netns exec "$ns_b" ip link set "${tag}nb" up
# veth leaves checksums to be filled in later (offload); a packet socket forwards them unfilled,
# and the receiving kernel would drop them. Hosts behind a real switch port compute checksums.
if [[ $driver != tap ]]; then
  command -v ethtool >/dev/null || { echo "SKIP: ethtool is not installed"; exit 77; }
  ip netns exec "$ns_a" ethtool -K "${tag}na" tx off >/dev/null
  ip netns exec "$ns_b" ethtool -K "${tag}nb" tx off >/dev/null
fi
ip netns exec "$ns_a" ip link set lo up
ip netns exec "$ns_b" ip link set lo up

echo "== ping 10.77.0.1 -> 10.77.0.2 through the switch ($driver ports)"
ip netns exec "$ns_a" ping -c 5 -i 0.2 -W 2 10.77.0.2

echo "== UDP to port 5001 (class probe on the scheduled uplink)"
ip netns exec "$ns_b" python3 - <<'PY' &
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.77.0.2", 5001))
s.settimeout(10)
got = 0
try:
    while got < 20:
        s.recv(2048)
        got += 1
finally:
    print(f"received {got}", flush=True)
PY
receiver=$!
sleep 0.5
ip netns exec "$ns_a" python3 - <<'PY'
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(20):
    s.sendto(b"x" * 200, ("10.77.0.2", 5001))
    time.sleep(0.01)
PY
wait $receiver || { "$qosctl" --socket "$work/ctl.sock" stats; exit 1; }

stats=$("$qosctl" --socket "$work/ctl.sock" --json stats)
echo "$stats"
probe_out=$(python3 -c 'import json,sys; s=json.load(sys.stdin); print([c for c in s["uplinks"][0]["classes"] if c["class"]=="probe"][0]["dequeued_packets"])' <<<"$stats")
[[ $probe_out -ge 20 ]] || { echo "FAIL: class probe sent $probe_out packets, expected >= 20"; exit 1; }
"$qosctl" --socket "$work/ctl.sock" stop >/dev/null
wait "$pid" || { echo "FAIL: qosvisor exited with $? on stop:"; tail -n 40 "$work/run.log"; exit 1; }
pid=""
echo "PASS"
