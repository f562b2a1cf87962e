#!/usr/bin/env bash
# The page tracker on a running box: a memtouch VM writing 4 MiB densely at random and one page
# of every 2 MiB of another 8 MiB is harvested every 200 ms; `qosctl vm NAME pages` shows the
# dense regions hot and backed by huge pages, the sparse ones small and the rest cold, as JSON, as
# a table, and with a heat strip on a terminal; the metrics carry its page-change rate and huge
# regions. A reload turns tracking off (the counters stay, no harvest follows) and back on; a
# period too short is refused by name; an unknown VM is an error. Needs /dev/kvm and root (the
# huge-page check reads /proc/kpageflags).
# Usage: vm_pages.sh QOSVISOR_BIN QOSCTL_BIN GUEST_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
guests=$(cd "$3" && pwd)
require_kvm_guest "$guests" memtouch

daemon_work_dir
tag="qvpg$$"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
write_config() {  # write_config GUEST_MEMORY_SECTION
  cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: ${tag}}
templates:
  - {name: toucher, vcpus: 1, memory: 32MiB, image: $guests/memtouch.elf}
vms:
  - {name: t, template: toucher,
     cmdline: "random=1 pages=2560 mib=4 at=8 sparse_mib=8 sparse_at=16"}
control: {socket: $work/ctl.sock, metrics: "127.0.0.1:$port"}
guest_memory: {$1}
YAML
}
write_config "track_period: 200ms"
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 150
ctl() { "$qosctl" --socket "$work/ctl.sock" "$@"; }
fail() { echo "FAIL: $*"; cat "$work/run.log"; exit 1; }
pages_field() {  # pages_field EXPR: a Python expression over the pages JSON `p`
  ctl --json vm t pages | python3 -c "import json,sys; p=json.load(sys.stdin); print($1)"
}

echo "== the tracker learns the guest's memory"
for _ in $(seq 100); do
  [[ $(pages_field 'p.get("harvests", 0)') -ge 12 ]] && break
  sleep 0.1
done
ctl --json vm t pages >"$work/pages.json"
python3 - "$work/pages.json" <<'PY' || fail "pages does not show what memtouch does"
import json, sys
p = json.load(open(sys.argv[1]))
r = p["region_list"]
assert p["tracked"] and p["harvests"] >= 12, p
assert p["changed_pages"] > 0 and p["pages_per_second"] > 1000, p
for i in (4, 5):  # [8 MiB, 12 MiB): written densely at random
    assert r[i]["heat"] != "cold" and r[i]["decision"] == "huge" and r[i]["huge"], (i, r[i])
for i in (8, 9, 10, 11):  # [16 MiB, 24 MiB): one page in 512
    assert r[i]["populated"] <= 2 and r[i]["decision"] == "small" and not r[i]["huge"], (i, r[i])
assert r[14]["heat"] == "cold" and r[14]["counter"] == 0, r[14]
assert p["huge_regions"] >= 2 and p["huge_backed_bytes"] >= 4 << 20, p
print(f'pages: {p["changed_pages"]} changed, {p["pages_per_second"]:.0f}/s, '
      f'{p["huge_regions"]} huge regions, {p["huge_backed_bytes"] >> 20} MiB backed')
PY

echo "== the table, and the heat strip on a terminal only"
ctl vm t pages >"$work/table.txt"
grep -q "^vm t (running): 16 regions of 2 MiB" "$work/table.txt" || fail "no summary line"
grep -Eq "^ +4  0x000800000 +[0-9]+  (hot|warm) .* huge +yes$" "$work/table.txt" \
  || { cat "$work/table.txt"; fail "region 4 is not shown hot or warm, decided and backed huge"; }
[[ $(grep -c "^ *[0-9]\+  0x" "$work/table.txt") -eq 16 ]] || fail "not one line per region"
if grep -q $'\x1b\[' "$work/table.txt"; then fail "colour codes written to a pipe"; fi
script -qc "$qosctl --socket $work/ctl.sock vm t pages" /dev/null >"$work/tty.txt"
grep -q "heat, one cell per 2 MiB" "$work/tty.txt" || fail "no heat strip on a terminal"
grep -q $'\x1b\[48;5;' "$work/tty.txt" || fail "the heat strip has no colours"

echo "== metrics"
curl -sf --max-time 10 "http://127.0.0.1:$port/metrics" >"$work/scrape.prom" || fail "no scrape"
python3 - "$work/scrape.prom" <<'PY' || fail "page metrics missing or wrong"
import re, sys
text = open(sys.argv[1]).read()
def value(name):
    m = re.search(r'^%s\{vm="t"\} (\S+)$' % name, text, re.M)
    assert m, name
    return float(m.group(1))
assert value("qosvisor_vm_page_change_rate") > 1000
assert value("qosvisor_vm_changed_pages") > 0
assert value("qosvisor_vm_hot_regions") >= 1
assert value("qosvisor_vm_huge_regions") >= 2
PY

echo "== bad input"
if ctl vm nosuch pages 2>"$work/err"; then fail "pages of an unknown VM succeeded"; fi
grep -q "no vm named 'nosuch'" "$work/err" || fail "unknown VM: $(cat "$work/err")"
write_config "track_period: 1ms"
if ctl reload >"$work/out" 2>&1; then fail "a 1 ms period was accepted"; fi
grep -q "guest_memory.track_period: 1ms is too short" "$work/out" || fail "$(cat "$work/out")"

echo "== a reload turns tracking off and on"
write_config "track: false, huge_pages: off"
ctl reload | tee "$work/out"
grep -q "guest_memory: page tracking or huge-page policy changed" "$work/out" || fail "not applied"
sleep 0.5
before=$(pages_field 'p["harvests"]')
sleep 1
[[ $(pages_field 'p["harvests"]') -eq $before ]] || fail "harvests went on with track: false"
[[ $(pages_field 'p["tracked"]') == True ]] || fail "the counters were dropped"
write_config "track_period: 200ms"
ctl reload >/dev/null
for _ in $(seq 50); do
  [[ $(pages_field 'p["harvests"]') -gt $before ]] && break
  sleep 0.1
done
[[ $(pages_field 'p["harvests"]') -gt $before ]] || fail "tracking did not resume"

stop_and_check "$qosctl" "$work/ctl.sock" "$pid" "$work/run.log"
pid=""
echo "PASS"
