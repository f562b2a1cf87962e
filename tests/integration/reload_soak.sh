#!/usr/bin/env bash
# A reload every 100 ms for 30 s while the edge default's traffic flows: each reload replaces
# br0's flow rules (a rule for traffic that never comes, in and out) and changes a class no
# traffic uses (its policy, and the tenant it is in) and the uplink's pacing, so the lcore
# switches to a new flow table and moves everything queued on the uplink into a new scheduler
# tree hundreds of times under load. Not one packet may be dropped anywhere in the switch, none
# lost end to end, and the FIFO class's packets must arrive in order.
# Needs no KVM and no root.
# Usage: reload_soak.sh QOSVISOR_BIN QOSCTL_BIN SOURCE_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
src=$3
seconds=${RELOAD_SOAK_SECONDS:-30}
daemon_work_dir
edge_default_box "$src" "$work/base.yaml" "qvrs$$" "socket: $work/ctl.sock"
# A buffer larger than the packet pool (64 MiB and 65,536 packets against 16,383 mbufs of at most
# 1,518 bytes) cannot overflow: when the box is short of CPU (a debug build, other processes on 2
# cores) the paced uplink loses the link time its core did not run, queues grow, and the pool
# running dry holds the generator back instead. So a drop here is the reload's, never the machine's.
sed -i 's/^    buffer: 2MiB$/    buffer: 64MiB\n    buffer_packets: 65536/' "$work/base.yaml"
grep -q "^    buffer_packets: 65536$" "$work/base.yaml" || { echo "FAIL: the edge default has no 2MiB buffer"; exit 1; }
edit() { python3 "$(dirname "$0")/lib/edit_edge_default.py" "$work/base.yaml" "$@"; }
edit "$work/a.yaml" spare
edit "$work/b.yaml" spare-moved drop-rule
cp "$work/a.yaml" "$work/box.yaml"
ctl() { "$qosctl" --socket "$work/ctl.sock" "$@"; }
"$qosvisor" run "$work/box.yaml" --traffic --load 0.5 --duration $((seconds + 6))s \
  --report "$work/report.json" >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 150
sleep 2
reloads=0
start_ms=$(($(date +%s%N) / 1000000))
while (($(date +%s%N) / 1000000 < start_ms + seconds * 1000)); do
  if ((reloads % 2 == 0)); then cp "$work/b.yaml" "$work/box.yaml"; else cp "$work/a.yaml" "$work/box.yaml"; fi
  t0=$(date +%s%N)
  ctl reload >/dev/null || { cat "$work/run.log"; echo "FAIL: reload $reloads was refused"; exit 1; }
  echo $((($(date +%s%N) - t0) / 1000)) >>"$work/reload_us"
  reloads=$((reloads + 1))
  # One every 100 ms from the start, however long each took.
  wait_ms=$((start_ms + reloads * 100 - $(date +%s%N) / 1000000))
  ((wait_ms > 0)) && sleep "$(printf '0.%03d' "$wait_ms")"
done
ctl --json stats >"$work/stats.json"
wait "$pid"
pid=""
python3 - "$work/stats.json" "$work/report.json" "$reloads" "$work/reload_us" <<'PY'
import json, sys
stats, report, reloads = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
took = sorted(int(line) for line in open(sys.argv[4]))
print(f"reload round trip (qosctl reload, each rebuilding the uplink's scheduler): "
      f"p50 {took[len(took) // 2] / 1000:.1f} ms, p99 {took[len(took) * 99 // 100] / 1000:.1f} ms, "
      f"max {took[-1] / 1000:.1f} ms")
gone = stats["uplinks"][0]["dropped_reconfigured"]
sw = stats["switch"]
drops = {k: sw[k] for k in ("malformed", "truncated", "vlan_dropped", "no_bridge", "flow_dropped",
                            "copy_failed", "tx_dropped", "sched_dropped", "handoff_dropped")}
print(f"{reloads} reloads; switch drops: {drops}")
lost = {c["class"]: c["lost_packets"] for c in report["classes"]}
reordered = {c["class"]: c["reordered"] for c in report["classes"]}
sent = sum(c["sent_packets"] for c in report["classes"])
print(f"packets sent {sent}; lost per class {lost}; reordered per class {reordered}")
bad = []
if reloads < 250: bad.append(f"only {reloads} reloads")
if any(drops.values()): bad.append("the switch dropped packets")
if gone: bad.append(f"{gone} packets dropped as reconfigured")
if any(lost.values()): bad.append("packets were lost")
if reordered.get("besteffort", 0): bad.append("the FIFO class was reordered")
sys.exit("FAIL: " + "; ".join(bad) if bad else 0)
PY
grep -q "^shutdown: all [0-9]* mbufs back in the pool" "$work/run.log" || { echo "FAIL: mbufs"; exit 1; }
echo "PASS"
