#!/usr/bin/env bash
# Online resize of a VM's vflash disk through the control socket: the blk test guest writes and
# verifies its disk, then waits for a capacity change; `qosctl vm NAME resize` grows the disk and
# the guest must see the new size and use the new last sectors. Needs /dev/kvm.
# Usage: vm_vflash.sh QOSVISOR_BIN QOSCTL_BIN GUEST_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
guests=$(cd "$3" && pwd)
[[ -r /dev/kvm && -w /dev/kvm ]] || { echo "SKIP: /dev/kvm is not available"; exit 77; }
daemon_work_dir
cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 128MiB, hugepages: off, file_prefix: qvblk$$}
vms:
  - name: store
    vcpus: 1
    memory: 16MiB
    image: $guests/blk.elf
    cmdline: "write=1 verify=1 wait_resize=1"
    disk: {path: $work/store.img, size: 1MiB}
control: {socket: $work/ctl.sock}
YAML
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 300); do grep -q "blk: verify ok" "$work/store.serial.log" 2>/dev/null && break; sleep 0.1; done
grep -q "blk: verify ok" "$work/store.serial.log" || { cat "$work/run.log" "$work/store.serial.log"; echo "FAIL: no verify"; exit 1; }
"$qosctl" --socket "$work/ctl.sock" vm store resize 2MiB
for _ in $(seq 300); do grep -q "new last sectors ok" "$work/store.serial.log" && break; sleep 0.1; done
cat "$work/store.serial.log"
grep -q "capacity changed" "$work/store.serial.log" || { echo "FAIL: the guest did not see the resize"; exit 1; }
grep -q "new last sectors ok" "$work/store.serial.log" || { echo "FAIL: new sectors not usable"; exit 1; }
[[ $(stat -c %s "$work/store.img") -ge 2097152 ]] || { echo "FAIL: the backing file did not grow"; exit 1; }
bad=$("$qosctl" --socket "$work/ctl.sock" vm store resize 10Gbps 2>&1 || true)
grep -q "is not a size" <<<"$bad" || { echo "FAIL: a bad size was not refused: $bad"; exit 1; }
"$qosctl" --socket "$work/ctl.sock" stop >/dev/null
wait "$pid"
pid=""
echo "PASS"
