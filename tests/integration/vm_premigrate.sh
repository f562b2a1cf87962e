#!/usr/bin/env bash
# Pre-migration between two daemons on loopback: a memtouch parent fills 40 MiB and is forked
# into three children; `vm parent premigrate B` copies the frozen image the family shares to box
# B ahead of time (a second call sends nothing: B holds a verified copy). A child migrating to B
# then sends only its own pages and B maps the image as its base; with B's copy corrupted, the
# next child falls back to a full copy and says so; once B's copy is removed, the last child
# comes whole saying the image is missing. An image removed on request while a VM uses it goes
# when that VM goes; an image whose family has left box A is dropped from B by A. Needs /dev/kvm.
# Usage: vm_premigrate.sh QOSVISOR_BIN QOSCTL_BIN GUEST_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
guests=$(cd "$3" && pwd)
require_kvm_guest "$guests" memtouch

tag="qvpm$$"
daemons_work_dir "$tag"
base=$((24000 + ($$ % 5000) * 2))
port_a=$base port_b=$((base + 1))
head -c 32 /dev/urandom >"$work/key" && chmod 600 "$work/key"

box() {  # box NAME PORT: writes $work/NAME.yaml
  mkdir -p "$work/$1"
  cat >"$work/$1.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: ${tag}$1}
templates:
  - {name: toucher, vcpus: 1, memory: 64MiB, image: $guests/memtouch.elf}
vms:
  - {name: parent, template: toucher, autostart: $3,
     cmdline: "fill_mib=40 fill_at=8 pages=50 mib=1 at=52"}
migration: {listen: "127.0.0.1:$2", key_file: $work/key, timeout: 60s}
control: {socket: $work/$1/ctl.sock}
YAML
}
start() {
  "$qosvisor" run "$work/$1.yaml" >"$work/$1.log" 2>&1 &
  pids+=($!)
  wait_for_control "$qosctl" "$work/$1/ctl.sock" "$work/$1.log" 150
}
ctl() { local b=$1; shift; "$qosctl" --socket "$work/$b/ctl.sock" "$@"; }
fail() { echo "FAIL: $*"; tail -n 30 "$work"/*.log; exit 1; }
vm_state() {
  ctl "$1" --json vms | python3 -c '
import json, sys
row = [v for v in json.load(sys.stdin) if v["name"] == sys.argv[1]]
print(row[0]["state"] if row else "absent")' "$2"
}
held() {  # held BOX: the ids of the images BOX holds
  ctl "$1" --json images | python3 -c 'import json,sys; print(" ".join(i["id"] for i in json.load(sys.stdin)["held"]))'
}
migrate() {  # migrate CHILD: to B, the one-line result into $work/CHILD.out
  ctl a vm "$1" migrate "127.0.0.1:$port_b" | tee "$work/$1.out"
  [ "$(vm_state b "$1")" = running ] || fail "$1 is not running on box B"
  [ "$(vm_state a "$1")" = absent ] || fail "$1 is still on box A"
}
sent_bytes() { grep -o '[0-9]* bytes sent' "$work/$1.out" | awk '{print $1}'; }

box a "$port_a" true
box b "$port_b" false
start a
start b
for _ in $(seq 100); do grep -q "memtouch: start" "$work/a/parent.serial.log" 2>/dev/null && break; sleep 0.1; done
grep -q "memtouch: start" "$work/a/parent.serial.log" || fail "the parent did not fill its memory"

echo "== fork, and copy the family's image to B ahead of time"
ctl a vm parent fork 3 --prefix kid
ctl a vm parent premigrate "127.0.0.1:$port_b" | tee "$work/pre.out"
grep -q "copied to 127.0.0.1:$port_b: [0-9.]* MiB sent" "$work/pre.out" || fail "no copy reported"
image=$(held b)
[[ $image =~ ^[0-9a-f]{16}$ ]] || fail "box B holds no image after premigrate: '$image'"
ctl b images
ctl a vm kid-1 premigrate "127.0.0.1:$port_b" | tee "$work/pre2.out"
grep -q "holds a verified copy already" "$work/pre2.out" || fail "the image was sent twice"
if ctl a vm nosuch premigrate "127.0.0.1:$port_b" 2>"$work/err"; then fail "premigrate of no VM"; fi
grep -q "no vm named 'nosuch'" "$work/err" || fail "$(cat "$work/err")"

echo "== a child migrates sending only its own pages"
migrate kid-1
grep -q "pre-migrated image used" "$work/kid-1.out" || fail "kid-1 did not use the image on B"
used=$(sent_bytes kid-1)
((used < 8 * 1024 * 1024)) || fail "kid-1 sent $used bytes with its base on B"

echo "== a corrupted copy: full copy, and it says so"
printf 'X' | dd of="$work/b/images/$image.img" bs=1 seek=$((10 * 1024 * 1024)) conv=notrunc status=none
migrate kid-2
grep -q "full copy: image $image fails its checksum" "$work/kid-2.out" || fail "no fallback reported"
full=$(sent_bytes kid-2)
((full > 40 * 1024 * 1024)) || fail "kid-2's full copy sent only $full bytes"
echo "  pre-migrated: $used bytes; full copy: $full bytes"

echo "== removed on request while in use: it goes when its VM goes"
ctl b images rm "$image" | tee "$work/rm.out"
grep -q "a VM here uses it" "$work/rm.out" || fail "an image in use was removed at once"
ctl b vm kid-1 destroy
[ -z "$(held b)" ] || fail "the image stayed after its last VM on B went"
if ctl b images rm 0123456789abcdef 2>"$work/err"; then fail "removing no image succeeded"; fi
grep -q "is not here" "$work/err" || fail "$(cat "$work/err")"

echo "== the image missing: the last child comes whole"
migrate kid-3
grep -q "full copy: image $image is not here" "$work/kid-3.out" || fail "no 'missing' fallback"

echo "== a family that has left box A: B is asked to drop its image"
ctl a vm parent premigrate "127.0.0.1:$port_b" >/dev/null
[ "$(held b)" = "$image" ] || fail "the image was not copied again"
ctl a vm parent destroy
for _ in $(seq 50); do [ -z "$(held b)" ] && break; sleep 0.1; done
[ -z "$(held b)" ] || fail "box B kept the image of a family gone from box A"

for b in a b; do
  "$qosctl" --socket "$work/$b/ctl.sock" stop >/dev/null
done
for p in "${pids[@]}"; do wait "$p" || fail "a daemon exited with an error"; done
pids=()
if grep -q "ERROR: AddressSanitizer\|runtime error:\|WARNING: ThreadSanitizer" "$work"/*.log; then
  fail "sanitizer report"
fi
echo "PASS"
