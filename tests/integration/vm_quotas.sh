#!/usr/bin/env bash
# Quotas, from qosctl run as an unprivileged member of control.group (a user and group made for
# the test and removed afterwards): reading works; creating VMs works within the group's quota
# and each refusal names the quota and its figures (vCPUs, NIC class, number of VMs); another
# user's VM cannot be destroyed; a reload changes the quota for the next request; flows add,
# reload, snapshot and stop are refused naming the rule; the user's own VMs are listed as his and
# destroyed with their ports. Needs root (to make the user) and /dev/kvm.
# Usage: vm_quotas.sh QOSVISOR_BIN QOSCTL_BIN GUEST_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
guests=$(cd "$3" && pwd)
[ "$(id -u)" = 0 ] || { echo "SKIP: making a test user and group needs root"; exit 77; }
require_kvm_guest "$guests" netecho

unprivileged_test_box "qvq$$" "$2"
cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: qvq$$}
ports: [{name: up0, driver: ring}]
bridges: [{name: br0, ports: [up0]}]
classes:
  - {name: echo, queue: 1, policy: srpt}
  - {name: bulk, queue: 2, policy: las}
templates:
  - {name: tiny, vcpus: 1, memory: 16MiB, image: $guests/netecho.elf, cmdline: "ip=9",
     nics: [{bridge: br0, class: echo}]}
vms:
  - {name: boxvm, template: tiny, cmdline: "ip=2"}
quotas:
  - {group: $test_group, vms: 2, vcpus: 2, memory: 64MiB, classes: [echo]}
control: {socket: $work/ctl.sock, group: $test_group}
YAML
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 150
fail() { echo "FAIL: $*"; cat "$work/run.log"; exit 1; }
root_ctl() { "$qosctl" --socket "$work/ctl.sock" "$@"; }
user_ctl() { as_test_user "$qosctl" --socket "$work/ctl.sock" "$@"; }
# refused WANT CMD...: the user's qosctl CMD must exit 1 with WANT in its message.
refused() {
  local want=$1 rc=0
  shift
  user_ctl "$@" >"$work/out" 2>&1 || rc=$?
  ((rc == 1)) || fail "qosctl $* as $test_user exited $rc, not 1: $(cat "$work/out")"
  grep -qF "$want" "$work/out" || fail "qosctl $*: '$(cat "$work/out")' does not say '$want'"
  echo "refused: qosctl $*: $(cat "$work/out")"
}
vm_field() {  # vm_field NAME FIELD
  root_ctl --json vms | python3 -c '
import json, sys
row = [v for v in json.load(sys.stdin) if v["name"] == sys.argv[1]]
print(json.dumps(row[0][sys.argv[2]]) if row else "absent")' "$1" "$2"
}

echo "== $test_user (uid $(id -u "$test_user")) reads"
user_ctl status | grep -q "^uptime " || fail "status as the user"
user_ctl vms | grep -q "^boxvm " || fail "vms as the user"
user_ctl flows dump br0 >/dev/null || fail "flows dump as the user"
user_ctl quota | tee "$work/quota"
grep -q "quota of group $test_group" "$work/quota" || fail "quota does not show the group's"

echo "== creates within the quota; refusals name the quota"
user_ctl vm u1 create --template tiny
[ "$(vm_field u1 owner)" = "\"$test_user\"" ] || fail "u1's owner is $(vm_field u1 owner)"
[ "$(vm_field u1 owner_uid)" = "$(id -u "$test_user")" ] || fail "u1's owner uid"
[ "$(vm_field u1 state)" = '"running"' ] || fail "u1 is not running"
root_ctl vms | grep -E -q "^u1 +running +1 .* $test_user " || fail "qosctl vms does not show the owner"
refused "quota of group $test_group: vcpus 2, in use 1, asked 2" vm u2 create --template tiny --set vcpus=2
refused "quota of group $test_group: memory 64MiB, in use 16MiB, asked 64MiB" \
  vm u2 create --template tiny --set memory=64MiB
refused "quota of group $test_group: NIC class 'bulk' is not allowed (allowed: echo)" \
  vm u2 create --template tiny --set class=bulk
user_ctl vm u2 create --template tiny --set memory=32MiB
refused "quota of group $test_group: vms 2, in use 2, asked 1" vm u3 create --template tiny
[ "$(vm_field u3 state)" = "absent" ] || fail "a refused create left a VM"
# A reload changes quotas for the next request.
sed -i "s/vms: 2, vcpus: 2/vms: 3, vcpus: 3/" "$work/box.yaml"
root_ctl reload >/dev/null || fail "the reload of a quota was refused"
user_ctl vm u3 create --template tiny
user_ctl quota | grep -E -q "^  vms +3 +3$" || fail "quota does not show the reloaded limit: $(user_ctl quota)"
user_ctl vm u3 destroy

echo "== nothing but its own VMs, and no operator commands"
refused "permission denied: vm 'boxvm' belongs to root (uid 0); $test_user (uid $(id -u "$test_user")) may destroy only the VMs it created" \
  vm boxvm destroy
[ "$(vm_field boxvm state)" = '"running"' ] || fail "boxvm was touched"
refused "permission denied: 'flows add' is for root and the user qosvisor runs as" \
  flows add br0 "priority=5,udp,actions=drop"
root_ctl flows dump br0 | grep -q "priority=5" && fail "the refused rule was added"
refused "permission denied: 'reload' is for root" reload
refused "permission denied: 'vm snapshot' is for root" vm u1 snapshot "$work/snap"
refused "permission denied: 'vm stop' is for root" vm boxvm stop
refused "permission denied: 'stop' is for root" stop
refused "permission denied: 'capture' is for root" capture up0 "$work/x.pcap" --count 1
root_ctl status >/dev/null || fail "the daemon stopped"

echo "== its own VMs go, with their ports"
user_ctl vm u1 destroy
user_ctl vm u2 destroy
[ "$(vm_field u1 state)" = "absent" ] && [ "$(vm_field u2 state)" = "absent" ] || fail "own VMs stayed"
root_ctl --json ports | grep -q '"u1.eth0"\|"u2.eth0"' && fail "their ports stayed"
user_ctl vm u3 create --template tiny  # the quota is free again
user_ctl vm u3 destroy
stop_and_check "$qosctl" "$work/ctl.sock" "$pid" "$work/run.log"
pid=""
echo "PASS"
