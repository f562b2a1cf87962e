#!/usr/bin/env bash
# A real Linux guest under QEMU whose virtio-net NIC is a qosvisor vhost-user port: the guest
# pings a host in a network namespace (behind an af_packet port) and sends it UDP, through a
# bridge and a scheduled uplink. The guest is Debian's kernel with a busybox initramfs, built once
# into CACHE_DIR. QEMU runs under software emulation (TCG), so any box can run this test.
# QEMU is first killed with SIGKILL mid-run and started again: meanwhile the switch must keep
# forwarding between its other ports (a second namespace host pings the first), the guest's port
# must come back with the new QEMU, and at shutdown every mbuf must be back in the pool.
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
  stop_quietly "$qemu"
  stop_quietly "$pid"
  ip netns del "$ns" 2>/dev/null || true
  ip netns del "${tag}bh" 2>/dev/null || true
  ip link del "${tag}v" 2>/dev/null || true
  ip link del "${tag}bv" 2>/dev/null || true
  [[ -n "${QV_KEEP:-}" ]] && cp -r "$work" /tmp/qv_keep
  rm -rf "$work" "/var/run/dpdk/$tag"
}
trap cleanup EXIT

make_ns_host "$tag" 10.78.0.1
make_ns_host "${tag}b" 10.78.0.3

cat >"$work/box.yaml" <<YAML
dataplane: {lcores: 1, memory: 512MiB, hugepages: off, file_prefix: ${tag}}
ports:
  - {name: guest, driver: vhost-user, args: {path: $work/vhost.sock}}
  - {name: host, driver: af_packet, args: {iface: ${tag}v}}
  - {name: other, driver: af_packet, args: {iface: ${tag}bv}}
bridges:
  - {name: br0, ports: [guest, host, other]}
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

start_qemu() {
  qemu-system-x86_64 -M pc -cpu max -m 256 -smp 1 \
    -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
    -chardev socket,id=c0,path="$work/vhost.sock",reconnect=1 \
    -netdev vhost-user,id=n0,chardev=c0 \
    -device virtio-net-pci,netdev=n0,vectors=0,rx_queue_size=1024,tx_queue_size=1024,mac=02:00:00:00:00:99 \
    -kernel "$guest/vmlinuz" -initrd "$guest/initrd.gz" -append "console=ttyS0 quiet panic=-1" \
    -nographic -no-reboot -serial "file:$work/serial$1.log" -monitor none >"$work/qemu$1.log" 2>&1 &
  qemu=$!
}
wait_serial() {  # wait_serial RUN TEXT
  for _ in $(seq 240); do
    grep -q "$2" "$work/serial$1.log" 2>/dev/null && return 0
    kill -0 "$qemu" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

echo "== booting Debian's kernel under QEMU (TCG) with a virtio-net NIC on vhost-user; killed mid-run"
guest_link() {
  "$qosctl" --socket "$work/ctl.sock" --json ports | python3 -c '
import json, sys; print([p["link"] for p in json.load(sys.stdin) if p["name"] == "guest"][0])'
}
start_qemu 1
# The other hosts keep talking through the switch while QEMU dies and comes back.
ip netns exec "${tag}bh" ping -c 150 -i 0.1 -W 1 10.78.0.1 >"$work/ping.log" 2>&1 &
pinger=$!
# Killed once the guest's virtio-net driver has brought the vhost-user device up (it is in use
# from then on: the guest configures eth0, pings and sends right after).
for _ in $(seq 480); do [[ $(guest_link) == up ]] && break; sleep 0.25; done
[[ $(guest_link) == up ]] || { cat "$work/qemu1.log" "$work/serial1.log"; echo "FAIL: the first guest never brought its NIC up"; exit 1; }
kill -9 "$qemu" 2>/dev/null || true
wait "$qemu" 2>/dev/null || true
qemu=""
kill "$receiver" 2>/dev/null || true
wait "$receiver" 2>/dev/null || true

echo "== QEMU started again on the same vhost-user socket"
count_udp "$tag" 10.78.0.1 5001 20 "$work/udp.log"
receiver=$udp_counter_pid
start_qemu 2
wait_serial 2 "GUEST UDP SENT" || true
wait "$receiver" || true
cat "$work/udp.log"
tail -n 5 "$work/serial2.log" || true
grep -q "GUEST PING OK" "$work/serial2.log" || { cat "$work/qemu2.log"; echo "FAIL: the restarted guest's ping did not get through"; exit 1; }
grep -q "host received 20" "$work/udp.log" || { echo "FAIL: not every datagram of the restarted guest arrived"; exit 1; }
wait "$pinger" || true
tail -n 2 "$work/ping.log"
grep -q " 0% packet loss" "$work/ping.log" || { echo "FAIL: the switch lost traffic between its other ports"; exit 1; }
"$qosctl" --socket "$work/ctl.sock" stats
stop_and_check "$qosctl" "$work/ctl.sock" "$pid" "$work/run.log"
pid=""
echo "PASS"
