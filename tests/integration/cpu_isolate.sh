#!/usr/bin/env bash
# dataplane.isolate and `qosvisor isolate`: while the box runs, a process that could run anywhere
# is kept off the worker's CPU, and gets its own mask back when the box stops; a mask changed
# meanwhile is left alone; what an isolation killed with SIGKILL left moved, the next one of the
# same CPUs puts back; every CPU, a CPU list that does not parse, and workers on every CPU are
# refused by name. Needs root (other processes' masks) and 2 CPUs.
# Usage: cpu_isolate.sh QOSVISOR_BIN QOSCTL_BIN SOURCE_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
src=$3
((EUID == 0)) || { echo "SKIP: moving other processes' CPU masks needs root"; exit 77; }
(($(nproc) >= 2)) || { echo "SKIP: needs 2 CPUs (one kept for the worker)"; exit 77; }

daemon_work_dir
sleep 300 &
sleeper=$!
# A failure after a kill -9 below must not leave the box's masks narrowed for the tests after it.
recover() { [[ ! -e /run/qosvisor/isolated-cpus-1 ]] || "$qosvisor" isolate --cpus 1 --duration 0.1s >/dev/null 2>&1 || true; }
trap 'stop_quietly "$pid"; recover; stop_quietly "$sleeper"; rm -rf "$work"' EXIT
all=$(taskset -pc "$sleeper" | sed 's/.*: //')
cpus_of() { taskset -pc "$1" | sed 's/.*: //'; }

# The appliance: its worker runs on CPU 1 (lcore 1), the control thread on CPU 0.
edge_default_box "$src" "$work/box.yaml" "qviso$$" "socket: $work/ctl.sock"
sed -i 's/^dataplane:$/dataplane:\n  isolate: true/' "$work/box.yaml"
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 150
grep -q "isolated cpu 1: [0-9]* tasks moved off" "$work/run.log" || { cat "$work/run.log"; echo "FAIL: no isolation line"; exit 1; }
[[ $(cpus_of "$sleeper") == 0 ]] || { echo "FAIL: the sleeper runs on $(cpus_of "$sleeper") while cpu 1 is isolated"; exit 1; }
stop_and_check "$qosctl" "$work/ctl.sock" "$pid" "$work/run.log"
pid=""
[[ $(cpus_of "$sleeper") == "$all" ]] || { echo "FAIL: the sleeper's mask is $(cpus_of "$sleeper"), not $all, after the box stopped"; exit 1; }

# The command, for another process's poll-mode threads; a mask set meanwhile stays.
"$qosvisor" isolate --cpus 1 >"$work/isolate.log" 2>&1 &
pid=$!
for _ in $(seq 50); do grep -q "^isolated cpu 1" "$work/isolate.log" && break; sleep 0.1; done
[[ $(cpus_of "$sleeper") == 0 ]] || { cat "$work/isolate.log"; echo "FAIL: isolate did not move the sleeper"; exit 1; }
sleep 60 &
late=$!
taskset -pc 1 "$sleeper" >/dev/null  # someone pins it to cpu 1 on purpose
kill "$pid"; wait "$pid"; pid=""
grep -q "^restored" "$work/isolate.log" || { cat "$work/isolate.log"; echo "FAIL: no restore"; exit 1; }
[[ $(cpus_of "$sleeper") == 1 ]] || { echo "FAIL: isolate overrode a mask set meanwhile ($(cpus_of "$sleeper"))"; exit 1; }
stop_quietly "$late"
taskset -pc "$all" "$sleeper" >/dev/null

# Killed without a chance to put anything back: the next isolation of cpu 1 does it first.
"$qosvisor" isolate --cpus 1 >"$work/isolate.log" 2>&1 &
pid=$!
for _ in $(seq 50); do grep -q "^isolated cpu 1" "$work/isolate.log" && break; sleep 0.1; done
kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=""
[[ $(cpus_of "$sleeper") == 0 ]] || { echo "FAIL: the sleeper was not moved before the kill"; exit 1; }
"$qosvisor" isolate --cpus 1 --duration 0.2s >"$work/isolate.log" 2>&1
grep -q "put back [0-9]* masks an earlier isolation left moved" "$work/isolate.log" || { cat "$work/isolate.log"; echo "FAIL: no recovery"; exit 1; }
[[ $(cpus_of "$sleeper") == "$all" ]] || { echo "FAIL: the sleeper's mask is $(cpus_of "$sleeper") after the recovery"; exit 1; }
[[ ! -e /run/qosvisor/isolated-cpus-1 ]] || { echo "FAIL: the record outlived the isolation"; exit 1; }

# Refusals, each naming what is wrong; a user who may not move others' masks is told so.
rc=0; out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$qosvisor" isolate --cpus 1 --duration 0.1s 2>&1) || rc=$?
((rc == 1)) && grep -q "needs root" <<<"$out" || { echo "FAIL ($rc) as nobody: $out"; exit 1; }
[[ $(cpus_of "$sleeper") == "$all" ]] || { echo "FAIL: a refused isolation left the sleeper on $(cpus_of "$sleeper")"; exit 1; }
out=$("$qosvisor" isolate --cpus "0-$(($(nproc) - 1))" --duration 1s 2>&1) && { echo "FAIL: every CPU was isolated"; exit 1; }
grep -q "every CPU of the box" <<<"$out" || { echo "FAIL: $out"; exit 1; }
rc=0; out=$("$qosvisor" isolate --cpus 1-x 2>&1) || rc=$?
((rc == 2)) && grep -q "^--cpus: CPU list '1-x'" <<<"$out" || { echo "FAIL ($rc): $out"; exit 1; }
if (($(nproc) == 2)); then
  sed -i 's/^  lcores: 1$/  lcores: 2/' "$work/box.yaml"
  out=$("$qosvisor" run "$work/box.yaml" --duration 1s 2>&1) && { echo "FAIL: workers on every CPU were isolated"; exit 1; }
  grep -q "dataplane.isolate: CPUs 0-1 are every CPU of the box" <<<"$out" || { echo "FAIL: $out"; exit 1; }
fi
echo "PASS"
