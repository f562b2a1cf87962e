#!/usr/bin/env bash
# A memif peer killed with SIGKILL mid-run: the switch keeps forwarding between its other ports,
# the port comes back when a new peer attaches, and at shutdown every mbuf is back in the pool.
# Three memif ports on one bridge: a steady qosgen sends from `a` to `b` for the whole test; a
# victim qosgen on `v` gets its traffic reflected (IN_PORT) and is killed, then replaced.
# Usage: memif_peer_killed.sh QOSVISOR_BIN QOSCTL_BIN QOSGEN_BIN
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
qosgen=$3
work=$(mktemp -d)
pid=""
steady=""
victim=""
cleanup() {
  for p in $victim $steady $pid; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [[ -n "${QV_KEEP:-}" ]] && cp -r "$work" /tmp/qv_keep_memif
  rm -rf "$work"
}
trap cleanup EXIT
cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: qvmk$$}
ports:
  - {name: a, driver: memif, args: {socket: $work/a.sock, role: server}}
  - {name: b, driver: memif, args: {socket: $work/b.sock, role: server}}
  - {name: v, driver: memif, args: {socket: $work/v.sock, role: server}}
bridges:
  - {name: br0, ports: [a, b, v]}
flows:
  - {bridge: br0, rule: "priority=100,in_port=a,actions=output:b"}
  - {bridge: br0, rule: "priority=100,in_port=v,actions=IN_PORT"}
control: {socket: $work/ctl.sock}
YAML
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 150
# gen_args NAME TX_SOCKET [RX_SOCKET] DURATION: qosgen's arguments into $args; frames come back
# on RX_SOCKET, else on TX_SOCKET. (qosgen is started directly, so that $! is its own pid.)
gen_args() {
  args=(run --port "memif:socket=$work/$2.sock,role=client")
  (($# == 4)) && args+=(--rx-port "memif:socket=$work/$3.sock,role=client")
  args+=(--class "$1:udp:9:fixed=200B:1:0:0" --rate 10Mbps --load 0.5 --sender-rate 10Mbps
         --duration "${*: -1}" --drain 2s --json "$work/$1.json")
}
sent_received() {
  python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["report"]["classes"][0]
print(c["sent_packets"], c["received_packets"])' "$work/$1.json"
}

gen_args steady a b 12s
"$qosgen" "${args[@]}" >"$work/steady.log" 2>&1 &
steady=$!
sleep 2
gen_args victim v 60s
"$qosgen" "${args[@]}" >"$work/victim.log" 2>&1 &
victim=$!
sleep 4
kill -9 "$victim"
wait "$victim" 2>/dev/null || true
victim=""
link_of_v() {
  "$qosctl" --socket "$work/ctl.sock" --json ports | python3 -c '
import json, sys; print([p["link"] for p in json.load(sys.stdin) if p["name"] == "v"][0])'
}
# The switch notices the peer is gone (its control channel hangs up) and waits for a new one.
for _ in $(seq 50); do [[ $(link_of_v) == down ]] && break; sleep 0.1; done
[[ $(link_of_v) == down ]] || { cat "$work/run.log"; echo "FAIL: v still up after its peer died"; exit 1; }
echo "victim killed; v is down"

# A new peer on the same socket: its traffic comes back again.
gen_args again v 2s
"$qosgen" "${args[@]}" >"$work/again.log" 2>&1 || { cat "$work/again.log"; echo "FAIL: the new peer's run"; exit 1; }
read -r sent received < <(sent_received again)
echo "new peer on v: sent $sent, received $received"
((sent > 100 && received * 100 >= sent * 95)) || { cat "$work/run.log"; echo "FAIL: v did not come back"; exit 1; }

# The steady flow between the other ports went on through the kill.
wait "$steady" || { cat "$work/steady.log"; echo "FAIL: the steady run"; exit 1; }
steady=""
read -r sent received < <(sent_received steady)
echo "steady a -> b: sent $sent, received $received"
((sent > 100 && received * 1000 >= sent * 999)) || { cat "$work/run.log"; echo "FAIL: a -> b lost packets"; exit 1; }

stop_and_check "$qosctl" "$work/ctl.sock" "$pid" "$work/run.log"
pid=""
echo "PASS"
