#!/usr/bin/env bash
# qosctl against a running box (the edge default with its built-in traffic at 30% load, which a
# debug build's generator keeps up with while captures and top run beside it): tables by default and
# JSON with --json, bridges, classes, uplinks (queue, drops, waits, top messages, ranks), flow rules
# dumped, added (and seen to act on the traffic) and deleted live, and the documented exit codes:
# 0 done, 1 the operation failed, 2 usage error, 3 no daemon. Needs no KVM and no root.
# Usage: qosctl_commands.sh QOSVISOR_BIN QOSCTL_BIN SOURCE_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
src=$3
daemon_work_dir
edge_default_box "$src" "$work/box.yaml" "qvct$$" "socket: $work/ctl.sock"
ctl() { "$qosctl" --socket "$work/ctl.sock" "$@"; }
expect_rc() {  # expect_rc CODE CMD...: runs qosctl, fails the test unless it exits CODE
  local want=$1 rc=0
  shift
  ctl "$@" >"$work/out" 2>&1 || rc=$?
  ((rc == want)) || { cat "$work/out"; echo "FAIL: qosctl $* exited $rc, not $want"; exit 1; }
}

expect_rc 3 status  # nothing runs yet
"$qosvisor" run "$work/box.yaml" --traffic --load 0.3 --duration 40s >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 150
wait_for_traffic "$qosctl" "$work/ctl.sock"

echo "== tables and --json"
ctl status | grep -q "^uptime " || { echo "FAIL: status is not a table"; exit 1; }
ctl --json status | python3 -c 'import json,sys; json.load(sys.stdin)["uptime_s"]'
ctl bridges | tee "$work/bridges"
grep -q "bridge br0: 3 flow rules" "$work/bridges" || { echo "FAIL: bridges"; exit 1; }
grep -q "   3 uplink0" "$work/bridges" || { echo "FAIL: bridge ports"; exit 1; }
ctl classes | tee "$work/classes"
grep -q "^rpc .* srpt " "$work/classes" || { echo "FAIL: classes"; exit 1; }
ctl flows dump br0 | grep -q "nw_proto=146" || { echo "FAIL: flows dump"; exit 1; }
ctl fdb br0 | tee "$work/fdb"
grep -E -q "^ +[0-9]+ (gen0|gen1|uplink0) +0 ([0-9a-f]{2}:){5}[0-9a-f]{2}" "$work/fdb" ||
  { echo "FAIL: the bridge learned no address"; exit 1; }

echo "== uplinks: queue, drops by reason, waits, the messages holding the backlog, ranks"
ctl uplinks | tee "$work/uplinks"
grep -q "^uplink uplink0: line 1.00Gbit/s, paced 980.0Mbit/s" "$work/uplinks" || { echo "FAIL: uplinks summary"; exit 1; }
grep -E -q "^  rpc +srpt +[0-9]+ " "$work/uplinks" || { echo "FAIL: uplinks class table"; exit 1; }
grep -q "^  top messages by backlog:" "$work/uplinks" || { echo "FAIL: uplinks top messages"; exit 1; }
ctl uplinks uplink0 --top 3 | tee "$work/uplinks3"
rows=$(sed -n '/^  top messages by backlog:/,/^  ranks of/p' "$work/uplinks3" | grep -E -c "^  (0x|\(default)" || true)
((rows <= 3)) || { echo "FAIL: --top 3 listed $rows messages"; exit 1; }
for json_flag in before after; do
  if [ $json_flag = before ]; then ctl --json uplinks uplink0 --top 3; else ctl uplinks uplink0 --top 3 --json; fi |
    python3 -c '
import json, sys
(u,) = json.load(sys.stdin)
assert u["port"] == "uplink0" and u["rate_bytes_per_second"] == 125000000, u["port"]
assert len(u["top_messages"]) <= 3 and u["ranks_sampled"] <= 4096
assert [c["class"] for c in u["classes"]] == ["rpc", "bulk", "besteffort"]
assert set(u["dropped"]) == {"reconfigured", "unknown_class"}
rpc = u["classes"][0]
assert set(rpc["dropped"]) == {"tail", "worst", "message_limit"}
assert rpc["wait_p50_seconds"] is not None and rpc["wait_p50_seconds"] <= rpc["wait_p99_seconds"]
assert rpc["wait_p50_open"] is False and isinstance(rpc["wait_p99_open"], bool)
assert rpc["ranks"]["unit"] == "bytes" and u["classes"][2]["ranks"]["unit"] == "seconds"
for c in u["classes"]:
    assert sum(b["count"] for b in c["ranks"]["distance_buckets"]) == c["ranks"]["sampled"]
    assert c["ranks"]["sampled"] <= c["queued_messages"]
sizes = [m["queued_bytes"] for m in u["top_messages"]]
assert sizes == sorted(sizes, reverse=True), sizes
print("uplinks --json: %d messages queued, %d heads read, rpc waits p50 %.1f us, p99 %.1f us"
      % (u["queued_messages"], u["ranks_sampled"], rpc["wait_p50_seconds"] * 1e6,
         rpc["wait_p99_seconds"] * 1e6))'
done
raw() {  # one request line straight to the socket; prints the reply's error
  python3 -c '
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode() + b"\n")
print(json.loads(s.makefile().readline()).get("error", "ok"))' "$work/ctl.sock" "$1"
}
[ "$(raw '{"command":"uplinks","args":{"top":1000}}')" = "uplinks: 'top' must be a whole number from 1 to 100, not 1000" ] ||
  { echo "FAIL: the daemon took top 1000"; exit 1; }

echo "== capture, read back by tshark"
command -v tshark >/dev/null || { echo "FAIL: tshark missing (scripts/setup installs it)"; exit 1; }
ctl capture gen0 "$work/gen0.pcap" --count 50
frames=$(tshark -r "$work/gen0.pcap" 2>/dev/null | wc -l)
echo "tshark read $frames frames from the gen0 capture"
((frames == 50)) || { echo "FAIL: tshark read $frames frames, not 50"; exit 1; }
tshark -r "$work/gen0.pcap" -T fields -e ip.proto 2>/dev/null | grep -q . || { echo "FAIL: no IP in the capture"; exit 1; }
ctl capture uplink0 "$work/uplink.pcap" --duration 1s
frames=$(tshark -r "$work/uplink.pcap" 2>/dev/null | wc -l)
echo "tshark read $frames frames from a second of the scheduled uplink"
((frames > 0)) || { echo "FAIL: the uplink capture is empty"; exit 1; }

echo "== a rule added live acts at once, and goes again"
dropped() { ctl --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["switch"]["flow_dropped"])'; }
before=$(dropped)
ctl flows add br0 "priority=300,in_port=gen0,actions=drop"
for _ in $(seq 50); do (($(dropped) > before)) && break; sleep 0.1; done
after=$(dropped)
echo "frames dropped by rules: $before before the rule, $after once gen0's next frames came"
((after > before)) || { echo "FAIL: the added rule did not act"; exit 1; }
ctl flows dump br0 | grep -q "priority=300,in_port=gen0,actions=drop" || { echo "FAIL: the rule is not listed"; exit 1; }
ctl flows del br0 "priority=300,in_port=gen0"
ctl flows dump br0 | grep -q "priority=300" && { echo "FAIL: the rule stayed"; exit 1; }

echo "== top under tmux: rates on screen, q quits"
command -v tmux >/dev/null || { echo "FAIL: tmux missing (scripts/setup installs it)"; exit 1; }
session="qvtop$$"
tmux new-session -d -s "$session" -x 120 -y 40 "$qosctl --socket $work/ctl.sock top; echo TOP-EXITED \$?; sleep 5"
sleep 3
tmux capture-pane -p -t "$session" >"$work/top.txt"
cat "$work/top.txt"
grep -q "qosvisor top" "$work/top.txt" || { tmux kill-session -t "$session"; echo "FAIL: no top screen"; exit 1; }
grep -E -q "^gen0 +[0-9]+ +[0-9]+" "$work/top.txt" || { tmux kill-session -t "$session"; echo "FAIL: no port rates"; exit 1; }
grep -E -q "^rpc +[1-9][0-9]* " "$work/top.txt" || { tmux kill-session -t "$session"; echo "FAIL: no class rates"; exit 1; }
tmux send-keys -t "$session" q
sleep 1.5
tmux capture-pane -p -t "$session" | grep -q "TOP-EXITED 0" || { tmux kill-session -t "$session"; echo "FAIL: q did not quit top"; exit 1; }
tmux kill-session -t "$session" 2>/dev/null || true

echo "== exit codes"
expect_rc 1 fdb nosuch
expect_rc 1 capture nosuch "$work/x.pcap" --count 1
expect_rc 2 capture gen0 "$work/x.pcap"
expect_rc 1 flows dump nosuch
grep -q "no bridge named 'nosuch'" "$work/out" || { cat "$work/out"; exit 1; }
expect_rc 1 flows add br0 "priority=5,udp"
grep -q "has no actions=" "$work/out" || { cat "$work/out"; exit 1; }
expect_rc 1 flows del br0 "priority=999,tcp"
expect_rc 1 vm nosuch start
expect_rc 2 uplinks --top 0
grep -q -- "--top: Value 0 not in range 1 to 100" "$work/out" || { cat "$work/out"; exit 1; }
expect_rc 2 uplinks --top many
grep -q -- "--top" "$work/out" || { cat "$work/out"; exit 1; }
expect_rc 1 uplinks nosuch
grep -q "no uplink on port 'nosuch' (uplinks: uplink0)" "$work/out" || { cat "$work/out"; exit 1; }
expect_rc 2 flows frobnicate br0
expect_rc 2 vm
expect_rc 0 --help
stop_and_check "$qosctl" "$work/ctl.sock" "$pid" "$work/run.log"
pid=""
echo "PASS"
