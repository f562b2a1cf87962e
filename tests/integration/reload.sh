#!/usr/bin/env bash
# Live reload of the edge default while its traffic flows: a dry run says what would change, a
# flow rule added in the file acts once reloaded (qosctl reload), a SIGHUP reloads instead of
# stopping, a change that cannot be applied live is refused naming it with nothing applied, and
# an invalid file is refused with its errors while the running configuration stays.
# Needs no KVM and no root.
# Usage: reload.sh QOSVISOR_BIN QOSCTL_BIN SOURCE_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
src=$3
work=$(mktemp -d)
pid=""
cleanup() {
  stop_quietly "$pid"
  rm -rf "$work"
}
trap cleanup EXIT
edge_default_box "$src" "$work/base.yaml" "qvrl$$" "socket: $work/ctl.sock"
cp "$work/base.yaml" "$work/box.yaml"
ctl() { "$qosctl" --socket "$work/ctl.sock" "$@"; }
fail() { echo "FAIL: $*"; cat "$work/run.log"; exit 1; }
dropped() { ctl --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["switch"]["flow_dropped"])'; }
with_drop_rule() {
  python3 - "$work/base.yaml" "$work/box.yaml" <<'PY'
import sys
text = open(sys.argv[1]).read()
rule = '  - bridge: br0\n    rule: "priority=300,in_port=gen0,actions=drop"\n'
text = text.replace("flows:\n", "flows:\n" + rule, 1)
open(sys.argv[2], "w").write(text)
PY
}

"$qosvisor" run "$work/box.yaml" --traffic --load 0.3 --duration 60s >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 150
wait_for_traffic "$qosctl" "$work/ctl.sock"

echo "== a dry run of the unchanged file"
ctl reload --dry-run | tee "$work/out"
grep -q "nothing: the file and the running box agree" "$work/out" || fail "dry run of the same file"

echo "== a flow rule added in the file"
with_drop_rule
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

echo "== what cannot change live is refused, naming it; nothing is applied"
sed 's/policy: fifo/policy: las/' "$work/base.yaml" >"$work/box.yaml"
with_drop_rule_and_class() { python3 - "$work/box.yaml" <<'PY'
import sys
text = open(sys.argv[1]).read()
text = text.replace("flows:\n", 'flows:\n  - bridge: br0\n    rule: "priority=300,in_port=gen0,actions=drop"\n', 1)
open(sys.argv[1], "w").write(text)
PY
}
with_drop_rule_and_class
rc=0
ctl reload >"$work/out" 2>&1 || rc=$?
cat "$work/out"
((rc == 1)) || fail "a class policy change was not refused (exit $rc)"
grep -q "classes or message rules changed" "$work/out" || fail "the refusal does not name the change"
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
