#!/usr/bin/env bash
# Blueprints across the fleet: three boxes on loopback sharing one etcd, each with the same
# blueprints and templates of netecho guests. A three-tier blueprint deployed on box-a spreads
# over the three hosts, each wave starting once the one before is ready on whatever host; `apps`
# on every box shows where each VM runs; undeploy from box-c removes everything. A deploy whose
# third tier never prints its ready line (2 s timeout) rolls back on every host, as does one
# whose second tier lands on a host without the blueprint. A fleet too small, a name in use and
# an unknown blueprint are refused before anything starts, as is any deploy while etcd is down.
# Needs /dev/kvm and etcd.
# Usage: fleet_blueprint.sh QOSVISOR_BIN QOSCTL_BIN GUEST_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
guests=$(cd "$3" && pwd)
require_kvm_guest "$guests" netecho
work=$(mktemp -d)
pids=()
tag="qvfb$$"
cleanup() {
  for p in "${pids[@]}"; do stop_quietly "$p"; done
  # DPDK leaves a runtime directory per file prefix, which a killed daemon cannot remove.
  rm -rf "$work" /var/run/dpdk/"${tag}"* "${XDG_RUNTIME_DIR:-/nonexistent}"/dpdk/"${tag}"*
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "--- $f"; tail -n 25 "$f"; done; exit 1; }
start_test_etcd "$work"
pids+=("$etcd_pid")

# box NAME [EXTRA_BLUEPRINTS]: writes $work/NAME.yaml, box-NAME in the fleet with 4 vCPUs.
box() {
  mkdir -p "$work/$1"
  cat >"$work/$1.yaml" <<YAML
dataplane: {lcores: 1, memory: 128MiB, hugepages: off, mbufs: 2047, file_prefix: ${tag}$1}
ports: [{name: up0, driver: ring}]
bridges: [{name: br0, ports: [up0]}]
templates:
  - {name: tiny, vcpus: 1, memory: 16MiB, image: $guests/netecho.elf, nics: [{bridge: br0}],
     ready: "netecho: ready", ready_timeout: 60s}
  - {name: silent, vcpus: 1, memory: 16MiB, image: $guests/netecho.elf, nics: [{bridge: br0}],
     ready: "a line netecho never prints", ready_timeout: 2s}
blueprints:
  - name: shop
    tiers:
      - {name: web, template: tiny, depends_on: [api]}
      - {name: api, template: tiny, count: 2, depends_on: [db]}
      - {name: db, template: tiny}
  - name: never-ready
    tiers:
      - {name: db, template: tiny}
      - {name: api, template: tiny, depends_on: [db]}
      - {name: web, template: silent, depends_on: [api]}
  - name: huge
    tiers:
      - {name: db, template: tiny, count: 13}
${2:-}
control: {socket: $work/$1/ctl.sock}
fleet:
  host: box-$1
  etcd: [$endpoint]
  lease_ttl: 2s
  publish_interval: 300ms
  budget: {vcpus: 4, memory: 512MiB, uplink: 1Gbps}
YAML
}
ctl() { local b=$1; shift; "$qosctl" --socket "$work/$b/ctl.sock" "$@"; }
vm_names() { ctl "$1" --json vms | python3 -c 'import json,sys; print(" ".join(sorted(v["name"] for v in json.load(sys.stdin))))'; }
app_count() { ctl "$1" --json apps | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
registered() { [[ $(ctl a --json hosts | python3 -c 'import json,sys; print(sum(h["alive"] for h in json.load(sys.stdin)))') == 3 ]]; }
# nothing_left WHAT: no VM on any box, no app in the fleet, no assignment in etcd.
nothing_left() {
  for b in a b c; do
    [[ -z $(vm_names $b) ]] || fail "$1: box-$b still runs $(vm_names $b)"
    [[ $(app_count $b) == 0 ]] || fail "$1: box-$b still lists an app"
  done
  curl -sf -X POST "$endpoint/v3/kv/range" -d "{\"key\": \"$(printf /qosvisor/assign/ | base64)\", \"range_end\": \"$(printf /qosvisor/assign0 | base64)\"}" |
    grep -q '"kvs"' && fail "$1: assignments are left in etcd"
  return 0
}
# refused WANT BOX ARGS...: qosctl deploy ARGS on BOX exits 1 saying WANT.
refused() {
  local want=$1 b=$2 rc=0
  shift 2
  ctl "$b" deploy "$@" >"$work/out" 2>&1 || rc=$?
  ((rc == 1)) && grep -qF "$want" "$work/out" || fail "deploy $*: exit $rc, '$(cat "$work/out")'"
  echo "refused: deploy $*: $(cat "$work/out")"
}

box a "  - name: lonely
    tiers:
      - {name: db, template: tiny}
      - {name: api, template: tiny, depends_on: [db]}"
box b
box c
for b in a b c; do
  "$qosvisor" run "$work/$b.yaml" >"$work/$b.log" 2>&1 &
  pids+=($!)
  printf -v "pid_$b" '%s' "$!"
done
for b in a b c; do wait_for_control "$qosctl" "$work/$b/ctl.sock" "$work/$b.log" 300; done
for _ in $(seq 100); do registered && break; sleep 0.1; done
registered || fail "the three boxes did not register"

echo "== a three-tier blueprint deploys across the three hosts, wave by wave"
start_s=$SECONDS
ctl a deploy shop | tee "$work/deploy.out"
echo "  took $((SECONDS - start_s)) s"
grep -q "^app shop (blueprint shop): 4 VMs running: shop-db-1 on box-a, shop-api-1 on box-b, shop-api-2 on box-c, shop-web-1 on box-a$" \
  "$work/deploy.out" || fail "deploy did not report its VMs and hosts"
for b in a b c; do
  ctl $b --json apps >"$work/apps-$b.json"
  python3 - "$work/apps-$b.json" "$b" <<'PY' || fail "box-$b's apps"
import json, sys
apps = json.load(open(sys.argv[1]))
assert [a["name"] for a in apps] == ["shop"], apps
shop = apps[0]
assert shop["state"] == "running" and shop["coordinator"] == "box-a", shop
tiers = {t["name"]: t for t in shop["tiers"]}
hosts = {vm["name"]: vm["host"] for t in shop["tiers"] for vm in t["vms"]}
assert len(set(hosts.values())) == 3, hosts                      # every host runs some of it
assert len({vm["host"] for vm in tiers["api"]["vms"]}) == 2, hosts  # a tier's VMs spread
assert all(vm["state"] == "ready" and vm["host_alive"] for t in shop["tiers"] for vm in t["vms"])
# Each wave was created only once every VM of the wave before it was ready.
order = ["db", "api", "web"]
for before, after in zip(order, order[1:]):
    ready = max(vm["ready_ms"] for vm in tiers[before]["vms"])
    created = min(vm["created_ms"] for vm in tiers[after]["vms"])
    assert created >= ready, (before, ready, after, created)
print("  box-%s sees: %s" % (sys.argv[2], ", ".join("%s on %s" % kv for kv in sorted(hosts.items()))))
PY
done
ctl c apps | tee "$work/apps"
grep -E -q "^shop +shop +root +running +api +shop-api-1 \(ready on box-b\), shop-api-2 \(ready on box-c\)$" \
  "$work/apps" || fail "apps on box-c does not show where the api tier runs"
[[ $(vm_names a) == "shop-db-1 shop-web-1" && $(vm_names b) == shop-api-1 && $(vm_names c) == shop-api-2 ]] ||
  fail "the VMs do not run where the plan says"
for vm in shop-db-1 shop-web-1; do grep -q "netecho: ready" "$work/a/$vm.serial.log" || fail "$vm not ready"; done
ctl b vms | grep -E -q "^shop-api-1 +running .* root .* app:shop " || fail "box-b's vms does not show the app"

echo "== bad requests are refused, nothing started"
refused "an app named 'shop' exists already in the fleet (blueprint shop, running, coordinated by host box-a)" b shop
refused "no blueprint named 'nosuch'" a nosuch
refused "the fleet cannot hold app 'huge': vm 'huge-db-" c huge
rc=0; ctl b undeploy nosuch >"$work/out" 2>&1 || rc=$?
((rc == 1)) && grep -qF "no app named 'nosuch' in the fleet (see qosctl apps)" "$work/out" ||
  fail "undeploy of an unknown app: $(cat "$work/out")"
[[ $(vm_names a) == "shop-db-1 shop-web-1" ]] || fail "a refused deploy touched box-a"

echo "== undeploy from another box takes it down everywhere"
ctl c undeploy shop | tee "$work/undeploy.out"
grep -q "^app shop: 4 VMs destroyed: shop-web-1, shop-api-2, shop-api-1, shop-db-1$" "$work/undeploy.out" ||
  fail "undeploy did not destroy newest first"
nothing_left "after undeploy"

echo "== a third tier that never gets ready rolls back on every host"
start_s=$SECONDS
rc=0; ctl b deploy never-ready >"$work/out" 2>&1 || rc=$?
echo "  took $((SECONDS - start_s)) s: $(cat "$work/out")"
((rc == 1)) || fail "the failing deploy exited $rc"
grep -qF "deploy of never-ready: tier 'web' failed: host box-c: vm 'never-ready-web-1' did not print 'a line netecho never prints' on its serial line within 2.0 s; rolled back: destroyed never-ready-web-1 (on box-c), never-ready-api-1 (on box-b), never-ready-db-1 (on box-a)" \
  "$work/out" || fail "the failure and the rollback are not named"
nothing_left "after the rollback"
grep -q "fleet app never-ready: vm never-ready-db-1 destroyed" "$work/a.log" || fail "box-a did not destroy its VM"

echo "== a host without the blueprint fails its tier, and the deploy rolls back"
rc=0; ctl a deploy lonely >"$work/out" 2>&1 || rc=$?
cat "$work/out"
((rc == 1)) && grep -qF "tier 'api' failed: host box-b: vm 'lonely-api-1' could not be created: its configuration has no blueprint 'lonely'" "$work/out" &&
  grep -qF "rolled back: destroyed lonely-db-1 (on box-a)" "$work/out" ||
  fail "the missing blueprint is not named, or nothing was rolled back"
nothing_left "after the second rollback"

echo "== etcd unreachable: deploy and apps say so, nothing starts"
kill -9 "$etcd_pid"
wait "$etcd_pid" 2>/dev/null || true
refused "deploy of shop (4 VMs) refused, nothing was started: cannot read the fleet registry: etcd" a shop
rc=0; ctl b apps >"$work/out" 2>&1 || rc=$?
((rc == 1)) && grep -qF "cannot read the fleet's apps from etcd: etcd" "$work/out" ||
  fail "apps without etcd: exit $rc, $(cat "$work/out")"
[[ -z $(vm_names a) ]] || fail "a deploy without etcd made $(vm_names a)"

for b in a b c; do
  stop_and_check "$qosctl" "$work/$b/ctl.sock" "$(eval echo "\$pid_$b")" "$work/$b.log"
done
echo "PASS"
