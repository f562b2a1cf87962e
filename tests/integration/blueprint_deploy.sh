#!/usr/bin/env bash
# Blueprints on one box, from qosctl: a three-tier blueprint of netecho guests deploys tier after
# tier (each waiting for its guests' ready line), shows in `apps` and `vms`, and undeploys; a tier
# whose image does not exist, and one whose ready line never comes (2 s timeout), roll back what
# their deploy made, leaving no VM and no port; a blueprint over an unprivileged user's quota is
# refused before anything starts, one within it deploys as his and he undeploys it. Needs root
# (to make the user) and /dev/kvm.
# Usage: blueprint_deploy.sh QOSVISOR_BIN QOSCTL_BIN GUEST_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
guests=$(cd "$3" && pwd)
[ "$(id -u)" = 0 ] || { echo "SKIP: making a test user and group needs root"; exit 77; }
require_kvm_guest "$guests" netecho

unprivileged_test_box "qvb$$" "$2"
cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: qvb$$}
ports: [{name: up0, driver: ring}]
bridges: [{name: br0, ports: [up0]}]
classes:
  - {name: echo, queue: 1, policy: srpt}
  - {name: bulk, queue: 2, policy: las}
templates:
  - {name: tiny, vcpus: 1, memory: 16MiB, image: $guests/netecho.elf,
     nics: [{bridge: br0, class: echo}], ready: "netecho: ready", ready_timeout: 60s}
  - {name: silent, vcpus: 1, memory: 16MiB, image: $guests/netecho.elf, nics: [{bridge: br0}],
     ready: "a line netecho never prints", ready_timeout: 2s}
  - {name: missing, vcpus: 1, memory: 16MiB, image: $work/no-such-guest.elf, nics: [{bridge: br0}]}
blueprints:
  - name: shop
    tiers:
      - {name: web, template: tiny, depends_on: [api]}
      - {name: api, template: tiny, count: 2, class: bulk, depends_on: [db]}
      - {name: db, template: tiny}
  - name: broken-image
    tiers:
      - {name: db, template: tiny}
      - {name: api, template: missing, depends_on: [db]}
  - name: never-ready
    tiers:
      - {name: db, template: tiny}
      - {name: api, template: silent, depends_on: [db]}
  - name: pair
    tiers:
      - {name: db, template: tiny}
      - {name: web, template: tiny, depends_on: [db]}
quotas:
  - {group: $test_group, vms: 3, vcpus: 3}
control: {socket: $work/ctl.sock, group: $test_group}
YAML
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 150
fail() { echo "FAIL: $*"; cat "$work/run.log"; exit 1; }
ctl() { "$qosctl" --socket "$work/ctl.sock" "$@"; }
user_ctl() { as_test_user "$qosctl" --socket "$work/ctl.sock" "$@"; }
vm_names() { ctl --json vms | python3 -c 'import json,sys; print(" ".join(sorted(v["name"] for v in json.load(sys.stdin))))'; }
vm_ports() { ctl --json ports | python3 -c 'import json,sys; print(" ".join(sorted(p["name"] for p in json.load(sys.stdin))))'; }
app_count() { ctl --json apps | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
# refused_deploy WANT CTL ARGS...: CTL deploy ARGS must exit 1 saying WANT, leaving no VM, port
# or app behind.
refused_deploy() {
  local want=$1 who=$2 rc=0
  shift 2
  "$who" deploy "$@" >"$work/out" 2>&1 || rc=$?
  ((rc == 1)) || fail "deploy $* exited $rc, not 1: $(cat "$work/out")"
  grep -qF "$want" "$work/out" || fail "deploy $*: '$(cat "$work/out")' does not say '$want'"
  echo "refused: deploy $*: $(cat "$work/out")"
  [ -z "$(vm_names)" ] || fail "VMs stayed behind: $(vm_names)"
  [ "$(vm_ports)" = "up0" ] || fail "ports stayed behind: $(vm_ports)"
  [ "$(app_count)" = 0 ] || fail "the app stayed behind"
}

echo "== a three-tier blueprint deploys in dependency order"
ctl deploy shop | tee "$work/deploy.out"
grep -q "app shop (blueprint shop): 4 VMs running: shop-db-1, shop-api-1, shop-api-2, shop-web-1" \
  "$work/deploy.out" || fail "deploy did not report its VMs"
for vm in shop-db-1 shop-api-1 shop-api-2 shop-web-1; do
  grep -q "netecho: ready" "$work/$vm.serial.log" || fail "$vm never reported ready"
done
# Each tier was created only once the tiers it depends on were up (their guests ready).
order=$(grep -o "vm shop-[a-z]*-[0-9]: created\|app shop: tier [a-z]* up" "$work/run.log" |
  sed 's/vm \(.*\): created/\1/; s/app shop: tier \(.*\) up/\1-up/' | xargs)
echo "order: $order"
[ "$order" = "shop-db-1 db-up shop-api-1 shop-api-2 api-up shop-web-1 web-up" ] ||
  fail "tiers did not wait for the tiers they depend on: $order"
ctl apps | tee "$work/apps"
grep -E -q "^shop +shop +root +running +api +shop-api-1 \(running\), shop-api-2 \(running\)" "$work/apps" ||
  fail "apps does not show the api tier"
ctl vms | grep -E -q "^shop-web-1 +running .* root .* app:shop " || fail "vms does not show the app"
ctl --json vms | python3 -c '
import json, sys
vms = {v["name"]: v for v in json.load(sys.stdin)}
assert vms["shop-api-1"]["app"] == "shop"
assert vms["shop-api-1"]["ports"] == ["shop-api-1.eth0"]' || fail "vms --json"
rc=0; ctl vm shop-db-1 destroy >"$work/out" 2>&1 || rc=$?
((rc == 1)) && grep -q "vm 'shop-db-1' is part of app 'shop': undeploy the app" "$work/out" ||
  fail "one VM of an app was destroyed on its own: $(cat "$work/out")"
rc=0; ctl deploy shop >"$work/out" 2>&1 || rc=$?
((rc == 1)) && grep -q "an app named 'shop' exists already" "$work/out" || fail "a second shop: $(cat "$work/out")"

echo "== undeploy"
ctl undeploy shop | tee "$work/undeploy.out"
grep -q "app shop: 4 VMs destroyed: shop-web-1, shop-api-2, shop-api-1, shop-db-1" "$work/undeploy.out" ||
  fail "undeploy did not destroy in reverse order"
[ -z "$(vm_names)" ] && [ "$(vm_ports)" = "up0" ] && [ "$(app_count)" = 0 ] || fail "undeploy left something"

echo "== failing tiers roll back"
refused_deploy "deploy of broken-image: tier 'api' failed: " ctl broken-image
grep -qF "rolled back: destroyed broken-image-db-1" "$work/out" || fail "the rollback is not named"
refused_deploy "tier 'api' failed: vm 'never-ready-api-1' did not print 'a line netecho never prints' on its serial line within 2.0 s" \
  ctl never-ready
grep -qF "rolled back: destroyed never-ready-api-1, never-ready-db-1" "$work/out" || fail "the rollback is not named"
ctl jobs | grep -q "deploy .*failed" || fail "the failed deploy jobs are not listed"

echo "== bad requests are refused, naming what is wrong"
expect_refusal() {  # expect_refusal CODE WANT ARGS...: qosctl ARGS exits CODE saying WANT
  local code=$1 want=$2 rc=0
  shift 2
  ctl "$@" >"$work/out" 2>&1 || rc=$?
  ((rc == code)) && grep -qF "$want" "$work/out" ||
    fail "qosctl $* exited $rc, not $code, or does not say '$want': $(cat "$work/out")"
}
expect_refusal 1 "no blueprint named 'nosuch'; defined: shop, broken-image, never-ready, pair" deploy nosuch
expect_refusal 1 "app name 'a.b': use 1 to 32 letters, digits, '-' or '_'" deploy pair --name a.b
expect_refusal 1 "deploy with a shorter --name" deploy pair --name "$(printf 'x%.0s' $(seq 30))"
expect_refusal 1 "no app named 'nosuch' (see qosctl apps)" undeploy nosuch
expect_refusal 2 "BLUEPRINT is required" deploy
raw() {  # raw JSON: one request line straight to the socket, the reply's error printed
  python3 -c '
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode() + b"\n")
print(json.loads(s.makefile().readline()).get("error", "ok"))' "$work/ctl.sock" "$1"
}
[ "$(raw '{"command":"deploy","args":{"blueprint":5}}')" = "deploy needs a string argument 'blueprint'" ] ||
  fail "a blueprint that is not a string"
[ "$(raw '{"command":"deploy","args":{"blueprint":"pair","name":[1]}}')" = "deploy: 'name' must be a string" ] ||
  fail "a name that is not a string"
[ "$(raw '{"command":"undeploy","args":{}}')" = "undeploy needs a string argument 'name' (the app)" ] ||
  fail "undeploy without a name"
[ -z "$(vm_names)" ] && [ "$(app_count)" = 0 ] || fail "a bad request left something"

echo "== quotas: over it nothing starts; within it the app is the user's"
jobs_before=$(ctl --json jobs | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
refused_deploy "deploy of shop (4 VMs) refused, nothing was started: quota of group $test_group: vms 3, in use 0, asked 4" \
  user_ctl shop
jobs_after=$(ctl --json jobs | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$jobs_before" = "$jobs_after" ] || fail "a refused deploy started a job"
user_ctl deploy pair --name mine
ctl apps | grep -E -q "^mine +pair +$test_user +running" || fail "the user's app is not his"
ctl vms | grep -E -q "^mine-db-1 +running .* $test_user " || fail "the user's VMs are not his"
refused_deploy_rc=0; user_ctl vm extra create --template tiny --set vcpus=2 >"$work/out" 2>&1 || refused_deploy_rc=$?
((refused_deploy_rc == 1)) && grep -q "quota of group $test_group: vcpus 3, in use 2, asked 2" "$work/out" ||
  fail "the app's VMs do not count against the quota: $(cat "$work/out")"
user_ctl undeploy mine
[ -z "$(vm_names)" ] && [ "$(app_count)" = 0 ] || fail "the user's undeploy left something"
# While a deploy runs, the VMs it has yet to make are already charged: never-ready's two VMs
# (its second tier waits 2 s for a line that never comes) hold 2 of the 3 vCPUs throughout.
job=$(user_ctl --json deploy never-ready --name slow --no-wait | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"])')
ctl apps | grep -E -q "^slow +never-ready +$test_user +deploying" || fail "apps does not show the deploy under way"
rc=0; user_ctl vm extra create --template tiny --set vcpus=2 >"$work/out" 2>&1 || rc=$?
((rc == 1)) && grep -q "quota of group $test_group: vcpus 3, in use 2, asked 2" "$work/out" ||
  fail "a deploy under way did not hold its quota: $(cat "$work/out")"
for _ in $(seq 100); do
  [ "$(ctl --json job "$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" = failed ] && break
  sleep 0.1
done
ctl job "$job" | grep -q "rolled back: destroyed slow-api-1, slow-db-1" || fail "job $job: $(ctl job "$job")"
[ -z "$(vm_names)" ] && [ "$(app_count)" = 0 ] || fail "the rolled back deploy left something"
user_ctl vm extra create --template tiny --set vcpus=2  # its quota came back with the rollback
user_ctl vm extra destroy
stop_and_check "$qosctl" "$work/ctl.sock" "$pid" "$work/run.log"
pid=""
echo "PASS"
