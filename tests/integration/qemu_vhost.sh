#!/usr/bin/env bash
# A real Linux guest under QEMU whose virtio-net NIC is a qosvisor vhost-user port: the guest
# pings a host in a network namespace (behind an af_packet port) and sends it UDP, through a
# bridge and a scheduled uplink. The guest is Debian's kernel with a busybox initramfs, built once
# into CACHE_DIR. QEMU runs under software emulation (TCG), so any box can run this test.
# Usage: qemu_vhost.sh QOSVISOR_BIN QOSCTL_BIN CACHE_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
cache=$3

if [[ $(id -u) -ne 0 ]]; then echo "SKIP: needs root for network namespaces"; exit 77; fi
for tool in qemu-system-x86_64 busybox ip ethtool cpio dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed (scripts/setup installs it)"; exit 77; }
done

guest="$cache/guest"
# shellcheck source=lib/debian_guest.sh
source "$(dirname "$0")/lib/debian_guest.sh"
# shellcheck source=lib/ns_host.sh
source "$(dirname "$0")/lib/ns_host.sh"
build_debian_guest "$guest" 10.78.0.2 10.78.0.1


tag="qvq$$"
ns="${tag}h"
work=$(mktemp -d)
pid=""
qemu=""
cleanup() {
  [[ -n "$qemu" ]] && kill "$qemu" 2>/dev/null && wait "$qemu" 2>/dev/null
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  ip netns del "$ns" 2>/dev/null || true
  ip link del "${tag}v" 2>/dev/null || true
  [[ -n "${QV_KEEP:-}" ]] && cp -r "$work" /tmp/qv_keep
  rm -rf "$work" "/var/run/dpdk/$tag"
}
trap cleanup EXIT

make_ns_host "$tag" 10.78.0.1

cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 512MiB, hugepages: off, file_prefix: ${tag}}
ports:
  - {name: guest, driver: vhost-user, args: {path: $work/vhost.sock}}
  - {name: host, driver: af_packet, args: {iface: ${tag}v}}
bridges:
  - {name: br0, ports: [guest, host]}
flows:
  - {bridge: br0, rule: "priority=100,udp,tp_dst=5001,actions=set_queue:1,NORMAL"}
classes:
  - {name: udp5001, queue: 1, policy: srpt}
  - {name: other, queue: 0, policy: fifo}
uplinks:
  - {port: host, rate: 1Gbps}
control: {socket: $work/ctl.sock}
YAML
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
wait_for_control "$qosctl" "$work/ctl.sock" "$work/run.log" 100

count_udp "$tag" 10.78.0.1 5001 20 "$work/udp.log"
receiver=$udp_counter_pid

echo "== booting Debian's kernel under QEMU (TCG) with a virtio-net NIC on vhost-user"
qemu-system-x86_64 -M pc -cpu max -m 256 -smp 1 \
  -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
  -chardev socket,id=c0,path="$work/vhost.sock",reconnect=1 \
  -netdev vhost-user,id=n0,chardev=c0 \
  -device virtio-net-pci,netdev=n0,vectors=0,rx_queue_size=1024,tx_queue_size=1024,mac=02:00:00:00:00:99 \
  -kernel "$guest/vmlinuz" -initrd "$guest/initrd.gz" -append "console=ttyS0 quiet panic=-1" \
  -nographic -no-reboot -serial "file:$work/serial.log" -monitor none >"$work/qemu.log" 2>&1 &
qemu=$!
for _ in $(seq 240); do
  grep -q "GUEST UDP SENT" "$work/serial.log" 2>/dev/null && break
  kill -0 "$qemu" 2>/dev/null || break
  sleep 0.5
done
wait "$receiver" || true
cat "$work/udp.log"
tail -n 5 "$work/serial.log" || true
grep -q "GUEST PING OK" "$work/serial.log" || { cat "$work/qemu.log"; echo "FAIL: the guest's ping did not get through"; exit 1; }
grep -q "host received 20" "$work/udp.log" || { echo "FAIL: not every datagram arrived"; exit 1; }
"$qosctl" --socket "$work/ctl.sock" stats
echo "PASS"
