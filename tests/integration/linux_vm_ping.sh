#!/usr/bin/env bash
# Debian's Linux kernel with a busybox initramfs as a qosvisor VM (bzImage boot, virtio-mmio NIC on
# a `vm` switch port) pings a host in a network namespace behind an af_packet port and sends it
# UDP, through a bridge and a scheduled uplink. Needs hardware virtualization: under the
# software KVM of test boxes a stock kernel does not boot in useful time, so it skips there.
# Usage: linux_vm_ping.sh QOSVISOR_BIN QOSCTL_BIN CACHE_DIR
set -euo pipefail
# shellcheck source=lib/qosvisor.sh
source "$(dirname "$0")/lib/qosvisor.sh"
qosvisor=$1
qosctl=$2
cache=$3
grep -qE '\b(vmx|svm)\b' /proc/cpuinfo || { echo "SKIP: no hardware virtualization (vmx/svm) on this CPU"; exit 77; }
[[ -r /dev/kvm && -w /dev/kvm ]] || { echo "SKIP: /dev/kvm is not available"; exit 77; }
[[ $(id -u) -eq 0 ]] || { echo "SKIP: needs root for network namespaces"; exit 77; }
for tool in busybox ip ethtool cpio dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed (scripts/setup installs it)"; exit 77; }
done
# shellcheck source=lib/debian_guest.sh
source "$(dirname "$0")/lib/debian_guest.sh"
# shellcheck source=lib/ns_host.sh
source "$(dirname "$0")/lib/ns_host.sh"
guest="$cache/guest-vm"
build_debian_guest "$guest" 10.79.0.2 10.79.0.1

tag="qvl$$"
ns="${tag}h"
work=$(mktemp -d)
pid=""
cleanup() {
  stop_quietly "$pid"
  ip netns del "$ns" 2>/dev/null || true
  ip link del "${tag}v" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
make_ns_host "$tag" 10.79.0.1

cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 256MiB, hugepages: off, file_prefix: ${tag}}
ports:
  - {name: vmnic, driver: vm}
  - {name: host, driver: af_packet, args: {iface: ${tag}v}}
bridges:
  - {name: br0, ports: [vmnic, host]}
classes:
  - {name: guest, queue: 1, policy: srpt}
  - {name: other, queue: 0, policy: fifo}
uplinks:
  - {port: host, rate: 1Gbps}
vms:
  - name: linux
    vcpus: 1
    memory: 256MiB
    image: $guest/vmlinuz
    initrd: $guest/initrd.gz
    cmdline: "console=ttyS0 quiet panic=-1"
    nics: [{port: vmnic, class: guest, mac: "02:00:00:00:00:99"}]
control: {socket: $work/ctl.sock}
YAML
count_udp "$tag" 10.79.0.1 5001 20 "$work/udp.log"
receiver=$udp_counter_pid
"$qosvisor" run "$work/box.yaml" >"$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 1200); do
  grep -q "GUEST UDP SENT" "$work/linux.serial.log" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
wait "$receiver" || true
tail -n 5 "$work/linux.serial.log" || true
grep -q "GUEST PING OK" "$work/linux.serial.log" || { cat "$work/run.log"; echo "FAIL: the guest's ping did not get through"; exit 1; }
grep -q "host received 20" "$work/udp.log" || { cat "$work/udp.log"; echo "FAIL: not every datagram arrived"; exit 1; }
"$qosctl" --socket "$work/ctl.sock" stats
echo "PASS"
