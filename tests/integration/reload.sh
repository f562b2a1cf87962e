#!/usr/bin/env bash
# Live reload of the edge default while its traffic flows: a dry run says what would change, a
# flow rule added in the file acts once reloaded (qosctl reload), a SIGHUP reloads instead of
# stopping; a class's policy and rate, the uplink's pacing (changed alone, what waits stays in
# place), a class removed with its tenant (its waiting packets counted as reconfigured), a port
# joining and leaving br0 and a member's VLAN settings all change live and show in the counters;
# a change that cannot be applied live is refused naming it with nothing applied, and an invalid
# file is refused with its errors while the running configuration stays.
# Needs no KVM and no root.
# Usage: reload.sh QOSVISOR_BIN QOSCTL_BIN SOURCE_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
src=$3
daemon_work_dir
edge_default_box "$src" "$work/base.yaml" "qvrl$$" "socket: $work/ctl.sock"
cp "$work/base.yaml" "$work/box.yaml"
ctl() { "$qosctl" --socket "$work/ctl.sock" "$@"; }
# edit STEP...: box.yaml made from base.yaml with the named changes.
edit() { python3 "$(dirname "$0")/lib/edit_edge_default.py" "$work/base.yaml" "$work/box.yaml" "$@"; }
fail() { echo "FAIL: $*"; cat "$work/run.log"; exit 1; }
dropped() { ctl --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["switch"]["flow_dropped"])'; }
"$qosvisor" run "$work/box.yaml" --traffic --load 0.3 --duration 60s >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 150
wait_for_traffic "$qosctl" "$work/ctl.sock"

echo "== a dry run of the unchanged file"
ctl reload --dry-run | tee "$work/out"
grep -q "nothing: the file and the running box agree" "$work/out" || fail "dry run of the same file"

echo "== a flow rule added in the file"
edit gen0-drop-rule
ctl reload --dry-run | tee "$work/out"
grep -q "bridge br0: flow rules replaced" "$work/out" || fail "the dry run does not show the rule"
ctl flows dump br0 | grep -q "priority=300" && fail "a dry run applied the rule"
before=$(dropped)
ctl reload
for _ in $(seq 50); do (($(dropped) > before)) && break; sleep 0.1; done
after=$(dropped)
echo "frames dropped by rules: $before before the reload, $after once gen0's next frames came"
((after > before)) || fail "the reloaded rule does not act"

echo "== SIGHUP reloads (the rule goes again), the daemon stays"
cp "$work/base.yaml" "$work/box.yaml"
kill -HUP "$pid"
for _ in $(seq 50); do ctl flows dump br0 | grep -q "priority=300" || break; sleep 0.1; done
ctl flows dump br0 | grep -q "priority=300" && fail "SIGHUP did not reload"
kill -0 "$pid" || fail "SIGHUP stopped the daemon"
grep -q "reload of .*: 1 change(s) applied" "$work/run.log" || fail "the reload is not in the log"

echo "== a class's policy and rate, the uplink's pacing change live; the class's counts go on"
stat() { ctl --json stats | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"; }
class_stat() { stat "[c for c in s['uplinks'][0]['classes'] if c['class'] == '$1'][0]['$2']"; }
enqueued_before=$(class_stat besteffort enqueued_packets)
edit pace
ctl reload --dry-run | tee "$work/out"
grep -q "class besteffort: changed" "$work/out" || fail "the dry run does not show the class change"
grep -q "uplink uplink0: rates, pacing" "$work/out" || fail "the dry run does not show the pacing change"
ctl reload
ctl --json classes | python3 -c '
import json, sys
c = [c for c in json.load(sys.stdin) if c["name"] == "besteffort"][0]
assert c["policy"] == "pace" and c["rate_bps"] == 100000, c' || fail "the class did not change"
[[ $(stat "s['uplinks'][0]['pacing_bytes_per_second']") == 112500000 ]] || fail "pacing did not change"
for _ in $(seq 50); do (($(class_stat besteffort queued_packets) > 20)) && break; sleep 0.1; done
queued=$(class_stat besteffort queued_packets)
enqueued_after=$(class_stat besteffort enqueued_packets)
echo "besteffort: $queued packets wait at 100 Kbps; enqueued $enqueued_before before, $enqueued_after after"
((queued > 20)) || fail "the paced class does not hold its packets back"
((enqueued_after > enqueued_before)) || fail "the class's counts did not go on"

echo "== the uplink's pacing alone changes: what waits stays in place"
edit pace slower-uplink
ctl reload
grep -q "uplink uplink0: scheduler rebuilt, .* queued packets kept in place" "$work/run.log" ||
  fail "a pacing change moved the queued packets"
[[ $(stat "s['uplinks'][0]['pacing_bytes_per_second']") == 100000000 ]] || fail "pacing did not change"
kept=$(class_stat besteffort queued_packets)
echo "besteffort: $kept packets still wait"
((kept > 20)) || fail "the paced class's packets did not stay"
[[ $(stat "s['uplinks'][0]['dropped_reconfigured']") == 0 ]] || fail "a pacing change dropped packets"

echo "== a class removed with its tenant: its waiting packets are dropped, counted as reconfigured"
edit no-besteffort
ctl reload --dry-run | tee "$work/out"
grep -q "class besteffort: removed" "$work/out" || fail "the dry run does not show the removal"
ctl reload
gone=$(stat "s['uplinks'][0]['dropped_reconfigured']")
echo "dropped as reconfigured: $gone"
# (At 100 Kbps a few more may leave between the two reads.)
((gone * 10 >= queued * 9)) || fail "the removed class's packets were not counted ($gone, $queued waited)"
ctl --json classes | grep -q besteffort && fail "the class is still listed"

echo "== a port joins br0, then leaves"
edit gen2
ctl reload
ctl ports | grep -q "gen2" || fail "gen2 did not join"
ctl bridges | tee "$work/out"
grep -q "gen2" "$work/out" || fail "br0 does not list gen2"
cp "$work/base.yaml" "$work/box.yaml"
ctl reload
ctl ports | grep -q "gen2" && fail "gen2 did not leave"

echo "== a member's VLAN settings change live"
vlan_before=$(stat "s['switch']['vlan_dropped']")
edit vlan
ctl reload
for _ in $(seq 50); do (($(stat "s['switch']['vlan_dropped']") > vlan_before + 100)) && break; sleep 0.1; done
vlan_after=$(stat "s['switch']['vlan_dropped']")
echo "frames dropped by VLAN: $vlan_before before, $vlan_after after uplink0 became access 10"
((vlan_after > vlan_before + 100)) || fail "the VLAN change does not act"
cp "$work/base.yaml" "$work/box.yaml"
ctl reload

echo "== what cannot change live is refused, naming it; nothing is applied"
edit burst drop-rule
rc=0
ctl reload >"$work/out" 2>&1 || rc=$?
cat "$work/out"
((rc == 1)) || fail "a dataplane change was not refused (exit $rc)"
grep -q "dataplane settings changed" "$work/out" || fail "the refusal does not name the change"
ctl flows dump br0 | grep -q "priority=300" && fail "a refused reload applied part of the file"

echo "== an invalid file is refused with its errors"
printf 'dataplane: {lcores: many}\n' >"$work/box.yaml"
rc=0
ctl reload >"$work/out" 2>&1 || rc=$?
cat "$work/out"
((rc == 1)) || fail "an invalid file was not refused"
grep -q "the running configuration stays" "$work/out" || fail "the refusal does not say the config stays"
grep -q "lcores" "$work/out" || fail "the refusal does not name the bad key"
cp "$work/base.yaml" "$work/box.yaml"
stop_and_check "$qosctl" "$work/ctl.sock" "$pid" "$work/run.log"
pid=""
echo "PASS"
