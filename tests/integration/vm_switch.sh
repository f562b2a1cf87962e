#!/usr/bin/env bash
# Two VMs on the switch: a netecho server and a netecho client (tiny test guests with virtio-net
# NICs on `vm` ports) exchange UDP through a bridge; the server's NIC is a scheduled uplink and the
# client's NIC class is applied, so the scheduler counts the traffic per class. Also drives the VM
# lifecycle over the control socket. Needs /dev/kvm.
# Usage: vm_switch.sh QOSVISOR_BIN QOSCTL_BIN GUEST_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
guests=$(cd "$3" && pwd)
require_kvm_guest "$guests" netecho

daemon_work_dir
tag="qvvm$$"
cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: ${tag}}
ports:
  - {name: srv0, driver: vm}
  - {name: cli0, driver: vm}
bridges:
  - {name: br0, ports: [srv0, cli0]}
classes:
  - {name: echo, queue: 1, policy: srpt}
  - {name: other, queue: 0, policy: fifo}
uplinks:
  - {port: srv0, rate: 1Gbps}
templates:
  - name: netecho
    vcpus: 1
    memory: 16MiB
    image: $guests/netecho.elf
vms:
  - {name: server, template: netecho, cmdline: "ip=2", nics: [{port: srv0}]}
  - {name: client, template: netecho, cmdline: "ip=3 send=20", nics: [{port: cli0, class: echo}]}
control: {socket: $work/ctl.sock}
YAML
"$qosvisor" check "$work/box.yaml" >/dev/null
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 150

# The client exits by itself after 20 answers.
for _ in $(seq 600); do
  grep -q "netecho: got 20 answers" "$work/client.serial.log" 2>/dev/null && break
  sleep 0.1
done
cat "$work/client.serial.log" || true
grep -q "netecho: got 20 answers" "$work/client.serial.log" || { cat "$work/run.log"; echo "FAIL: the client got no answers"; exit 1; }
stats=$("$qosctl" --socket "$work/ctl.sock" --json stats)
echo "$stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
echo = [c for c in s["uplinks"][0]["classes"] if c["class"] == "echo"][0]
print("class echo on the server uplink:", echo["dequeued_packets"], "packets")
sys.exit(0 if echo["dequeued_packets"] >= 20 else 1)'

echo "== lifecycle over the control socket"
"$qosctl" --socket "$work/ctl.sock" vm server pause
"$qosctl" --socket "$work/ctl.sock" --json vms | grep -q '"state": "paused"'
refused=$("$qosctl" --socket "$work/ctl.sock" vm server pause 2>&1 || true)
echo "$refused"
grep -q "cannot pause" <<<"$refused" || { echo "FAIL: pausing a paused vm was not refused"; exit 1; }
"$qosctl" --socket "$work/ctl.sock" vm server resume
"$qosctl" --socket "$work/ctl.sock" vm server stop
unknown=$("$qosctl" --socket "$work/ctl.sock" vm nosuch start 2>&1 || true)
grep -q "no vm named 'nosuch'" <<<"$unknown" || { echo "FAIL: $unknown"; exit 1; }
"$qosctl" --socket "$work/ctl.sock" vms
"$qosctl" --socket "$work/ctl.sock" stop >/dev/null
wait "$pid"
pid=""
echo "PASS"
