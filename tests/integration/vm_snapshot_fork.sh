#!/usr/bin/env bash
# Snapshots, restore, forks, suspend and VMs from templates, from qosctl on a running box: a netecho server is
# snapshotted and restored under a new name, then forked twice; every copy joins the bridge on a
# port of its own, tells (from its new generation id) the MAC the switch gave it, and answers the
# client's broadcasts from that port. A child is suspended and resumed; a parent with children is
# not suspended without --force; a corrupted snapshot is refused with nothing created; destroyed
# copies take their ports with them. A VM added to the file starts on a reload, on a port of its
# own, and goes with its port when the next reload finds it removed. Needs /dev/kvm.
# Usage: vm_snapshot_fork.sh QOSVISOR_BIN QOSCTL_BIN GUEST_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
guests=$(cd "$3" && pwd)
require_kvm_guest "$guests" netecho

daemon_work_dir
[ -n "${KEEP_WORK:-}" ] && trap "stop_quietly \"\$pid\"" EXIT
tag="qvsf$$"
cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: ${tag}}
ports:
  - {name: srv0, driver: vm}
  - {name: cli0, driver: vm}
bridges:
  - {name: br0, ports: [srv0, cli0]}
classes:
  - {name: echo, queue: 1, policy: srpt}
templates:
  - {name: netecho, vcpus: 1, memory: 16MiB, image: $guests/netecho.elf}
  - {name: echo-on-br0, vcpus: 1, memory: 16MiB, image: $guests/netecho.elf, cmdline: "ip=9",
     nics: [{bridge: br0, class: echo}]}
vms:
  - {name: server, template: netecho, cmdline: "ip=2", nics: [{port: srv0, class: echo}]}
  - {name: client, template: netecho, cmdline: "ip=3 send=40", autostart: false,
     nics: [{port: cli0}]}
control: {socket: $work/ctl.sock}
YAML
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 150
ctl() { "$qosctl" --socket "$work/ctl.sock" "$@"; }
fail() { echo "FAIL: $*"; cat "$work/run.log"; exit 1; }
vm_field() {  # vm_field NAME FIELD: a field of `qosctl vms --json` for one VM
  ctl --json vms | python3 -c '
import json, sys
row = [v for v in json.load(sys.stdin) if v["name"] == sys.argv[1]]
print(json.dumps(row[0][sys.argv[2]]) if row else "absent")' "$1" "$2"
}
wait_for_line() {  # wait_for_line FILE TEXT
  for _ in $(seq 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
wait_for_line "$work/server.serial.log" "netecho: ready" || fail "server did not start"

echo "== snapshot, restore under a new name"
ctl vm server snapshot "$work/snap"
[ -f "$work/snap/state.qvsnap" ] || fail "no state file"
[ "$(vm_field server state)" = '"running"' ] || fail "server not running after its snapshot"
ctl vm server restore "$work/snap" --as copy
[ "$(vm_field copy state)" = '"running"' ] || fail "the copy is not running"
[ "$(vm_field copy ports)" = '["copy.eth0"]' ] || fail "the copy has no port of its own"
copy_mac=$(vm_field copy macs | python3 -c 'import json,sys; print(json.load(sys.stdin)[0])')
[ "$copy_mac" != "$(vm_field server macs | python3 -c 'import json,sys; print(json.load(sys.stdin)[0])')" ] ||
  fail "the copy kept the server's MAC"
wait_for_line "$work/copy.serial.log" "new generation, mac $copy_mac" ||
  fail "the copy's guest did not take its new MAC $copy_mac"

echo "== fork"
ctl vm server fork 2 --prefix kid
for kid in kid-1 kid-2; do
  [ "$(vm_field "$kid" state)" = '"running"' ] || fail "$kid is not running"
  [ "$(vm_field "$kid" parent)" = '"server"' ] || fail "$kid does not name its parent"
  mac=$(vm_field "$kid" macs | python3 -c 'import json,sys; print(json.load(sys.stdin)[0])')
  wait_for_line "$work/$kid.serial.log" "new generation, mac $mac" ||
    fail "$kid's guest did not take its MAC $mac"
done

echo "== a VM created from a template, with overrides"
ctl vm create web --template echo-on-br0 --set memory=32MiB --set cmdline="ip=8"
[ "$(vm_field web state)" = '"running"' ] || fail "the created VM is not running"
[ "$(vm_field web memory_bytes)" = "33554432" ] || fail "--set memory was not applied"
[ "$(vm_field web ports)" = '["web.eth0"]' ] || fail "the created VM has no port of its own"
wait_for_line "$work/web.serial.log" "netecho: ready ip 10.0.0.8" || fail "--set cmdline was not applied"
for bad in "nosuch --template nope:no template named 'nope'" \
           "web --template echo-on-br0:a vm named 'web' exists already" \
           "x/y --template echo-on-br0:use 1 to 32 letters" \
           "w2 --template echo-on-br0 --set colour=red:unknown key; use memory"; do
  args=${bad%%:*}
  want=${bad#*:}
  # shellcheck disable=SC2086
  refused=$(ctl vm ${args%% *} create ${args#* } 2>&1) && fail "vm create $args was accepted"
  grep -q "$want" <<<"$refused" || fail "vm create $args: '$refused' does not say '$want'"
done

echo "== every copy answers the client's broadcasts from its own port"
ctl vm client start
wait_for_line "$work/client.serial.log" "netecho: got" || fail "the client got no answers"
ctl --json ports | python3 -c '
import json, sys
ports = {p["name"]: p for p in json.load(sys.stdin)}
for name in ("srv0", "copy.eth0", "kid-1.eth0", "kid-2.eth0", "web.eth0"):
    got = ports.get(name, {}).get("rx_packets", 0)
    print(f"{name}: {got} frames from its guest")
    if got == 0:
        sys.exit(f"FAIL: no answers came from {name}")'

echo "== suspend and resume a child; a parent with children needs --force"
ctl vm kid-1 suspend "$work/kid1"
[ "$(vm_field kid-1 state)" = '"suspended"' ] || fail "kid-1 is not suspended"
ctl --json ports | grep -q '"kid-1.eth0"' && fail "a suspended VM kept its port"
diff_kib=$(du -k "$work/kid1/memory.img" | cut -f1)
echo "kid-1's diff: ${diff_kib} KiB on disk for a 16 MiB VM"
[ "$diff_kib" -lt 4096 ] || fail "the suspend saved more than the pages the child changed"
ctl vm kid-1 resume
[ "$(vm_field kid-1 state)" = '"running"' ] || fail "kid-1 did not resume"
refused=$(ctl vm server suspend "$work/parent" 2>&1) && fail "a parent with children was suspended"
grep -q "has children (kid-1, kid-2)" <<<"$refused" || fail "refusal does not name the children: $refused"

echo "== a corrupted snapshot is refused, nothing is created"
cp -r "$work/snap" "$work/bad"
printf '\x42' | dd of="$work/bad/state.qvsnap" bs=1 seek=100 conv=notrunc status=none
refused=$(ctl vm server restore "$work/bad" --as broken 2>&1) && fail "a corrupted snapshot was restored"
echo "$refused"
grep -q "checksum mismatch" <<<"$refused" || fail "the refusal does not say what is wrong"
[ "$(vm_field broken state)" = "absent" ] || fail "a refused restore left a VM behind"
ctl --json jobs | grep -q '"state": "failed"' || fail "the failed job is not listed"

echo "== destroyed copies take their ports"
for vm in copy kid-1 kid-2 web; do ctl vm "$vm" destroy; done
ctl --json ports | grep -q '"copy.eth0"\|"kid-1.eth0"\|"kid-2.eth0"\|"web.eth0"' && fail "ports stayed behind"
[ "$(vm_field web state)" = "absent" ] || fail "a destroyed created VM stayed in the list"
ctl vms

echo "== a VM added to the file is started by a reload on a new port, and removed by the next"
cp "$work/box.yaml" "$work/box.orig"
sed -i 's|^control:|  - {name: extra, template: echo-on-br0, cmdline: "ip=11"}\ncontrol:|' "$work/box.yaml"
ctl reload --dry-run | grep -q "vm extra: added" || fail "the dry run does not show the new VM"
ctl reload >/dev/null || fail "the reload adding a VM was refused"
wait_for_line "$work/extra.serial.log" "netecho: ready" || fail "the VM added by reload did not start"
[ "$(vm_field extra state)" = '"running"' ] || fail "extra is not running"
ctl --json ports | grep -q '"extra.eth0"' || fail "extra's port did not join"
cp "$work/box.orig" "$work/box.yaml"
ctl reload >/dev/null || fail "the reload removing a VM was refused"
[ "$(vm_field extra state)" = "absent" ] || fail "the VM removed from the file is still there"
ctl --json ports | grep -q '"extra.eth0"' && fail "extra's port stayed behind"
echo "extra: started by one reload on port extra.eth0, gone with its port after the next"
ctl stop >/dev/null
wait "$pid"
pid=""
grep -q "mbufs" "$work/run.log" || true
echo "PASS"
