#!/usr/bin/env bash
# A VM talks to qosgen: qosgen (its own DPDK process) attaches to a qosvisor memif port and sends
# UDP probes to a netecho VM behind a vm port; the VM echoes them and qosgen's analyser counts
# what came back. Needs /dev/kvm. The software KVM on test boxes runs the guest's driver slowly,
# so the rate is low.
# Usage: vm_qosgen.sh QOSVISOR_BIN QOSCTL_BIN QOSGEN_BIN GUEST_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
qosgen=$3
guests=$(cd "$4" && pwd)
[[ -r /dev/kvm && -w /dev/kvm ]] || { echo "SKIP: /dev/kvm is not available"; exit 77; }
work=$(mktemp -d)
pid=""
cleanup() {
  stop_quietly "$pid"
  [[ -n "${QV_KEEP:-}" ]] && cp -r "$work" /tmp/qv_keep_vmq
  rm -rf "$work"
}
trap cleanup EXIT
cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: qvqg$$}
ports:
  - {name: gen, driver: memif, args: {socket: $work/memif.sock, role: server}}
  - {name: vmnic, driver: vm}
bridges:
  - {name: br0, ports: [gen, vmnic]}
vms:
  - name: echo
    vcpus: 1
    memory: 16MiB
    image: $guests/netecho.elf
    cmdline: "ip=2"
    nics: [{port: vmnic, mac: "02:00:00:00:00:22"}]
control: {socket: $work/ctl.sock}
YAML
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 300); do grep -q "netecho: ready" "$work/echo.serial.log" 2>/dev/null && break; sleep 0.1; done
grep -q "netecho: ready" "$work/echo.serial.log" || { cat "$work/run.log"; echo "FAIL: the VM did not come up"; exit 1; }
"$qosgen" run --port "memif:socket=$work/memif.sock,role=client" \
  --class echo:udp:7:fixed=200B:1:0:0 --rate 1Mbps --load 0.05 --sender-rate 1Mbps \
  --duration 3s --drain 3s --dst-mac 02:00:00:00:00:22 --dst-ip 10.0.0.2 \
  --json "$work/report.json" >"$work/qosgen.log" 2>&1 || { cat "$work/qosgen.log"; echo "FAIL: qosgen"; exit 1; }
tail -n 3 "$work/qosgen.log"
python3 - "$work/report.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["report"]["classes"][0]
print(f"qosgen sent {c['sent_packets']}, received {c['received_packets']} echoes")
sys.exit(0 if c["sent_packets"] >= 5 and c["received_packets"] >= 0.9 * c["sent_packets"] else 1)
PY
"$qosctl" --socket "$work/ctl.sock" stop >/dev/null
wait "$pid"
pid=""
echo "PASS"
