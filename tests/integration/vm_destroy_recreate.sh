#!/usr/bin/env bash
# A VM destroyed and created again 200 times while traffic flows to and from its switch port: a
# netecho client VM keeps sending to the server VM, whose NIC the data-plane lcore polls all the
# while. Destroy must wait until the lcore has let go of the NIC and guest memory (under the asan
# preset any use after free fails the run), the server must answer again after the last
# re-creation, and every mbuf must be back in the pool at shutdown. Needs /dev/kvm.
# Usage: vm_destroy_recreate.sh QOSVISOR_BIN QOSCTL_BIN GUEST_DIR [CYCLES]
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
guests=$(cd "$3" && pwd)
cycles=${4:-200}
require_kvm_guest "$guests" netecho

daemon_work_dir
cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: qvdr$$}
ports:
  - {name: srv0, driver: vm}
  - {name: cli0, driver: vm}
bridges:
  - {name: br0, ports: [srv0, cli0]}
templates:
  - {name: netecho, vcpus: 1, memory: 16MiB, image: $guests/netecho.elf}
vms:
  - {name: server, template: netecho, cmdline: "ip=2", nics: [{port: srv0}]}
  - {name: client, template: netecho, cmdline: "ip=3 send=100000000", nics: [{port: cli0}]}
control: {socket: $work/ctl.sock}
YAML
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 300
ctl() { "$qosctl" --socket "$work/ctl.sock" "$@"; }

# The server's answers are what the switch sends to the client's port (nothing else goes there:
# the client's own broadcasts are not flooded back to it).
answers() {
  ctl --json ports | python3 -c '
import json, sys
print([p for p in json.load(sys.stdin) if p["name"] == "cli0"][0]["tx_packets"])'
}
wait_for_answers() {
  local before=$1
  for _ in $(seq 300); do (($(answers) > before)) && return 0; sleep 0.1; done
  cat "$work/run.log"; echo "FAIL: the server gave no answers ($2)"; exit 1
}
wait_for_answers 0 "before the cycles"

echo "== destroying and re-creating the server $cycles times while the client sends"
start=$(date +%s)
for i in $(seq "$cycles"); do
  # Every tenth time, destroy only once the new server answers: its NIC is then in full use.
  ((i % 10)) || wait_for_answers "$(answers)" "in cycle $i"
  ctl vm server destroy >/dev/null || { cat "$work/run.log"; echo "FAIL: destroy $i"; exit 1; }
  ctl vm server start >/dev/null || { cat "$work/run.log"; echo "FAIL: start $i"; exit 1; }
  kill -0 "$pid" 2>/dev/null || { cat "$work/run.log"; echo "FAIL: qosvisor died at cycle $i"; exit 1; }
done
echo "$cycles cycles in $(($(date +%s) - start)) s"
ctl --json vms | grep -q '"state": "running"'
wait_for_answers "$(answers)" "after the last re-creation"

stop_and_check "$qosctl" "$work/ctl.sock" "$pid" "$work/run.log"
pid=""
echo "PASS"
