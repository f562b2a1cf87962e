#!/usr/bin/env bash
# A real Linux guest under QEMU whose virtio-net NIC is a qosvisor vhost-user port: the guest
# pings a host in a network namespace (behind an af_packet port) and sends it UDP, through a
# bridge and a scheduled uplink. The guest is Debian's kernel with a busybox initramfs, built once
# into CACHE_DIR. QEMU runs under software emulation (TCG), so any box can run this test.
# Usage: qemu_vhost.sh QOSVISOR_BIN QOSCTL_BIN CACHE_DIR
set -euo pipefail
qosvisor=$1
qosctl=$2
cache=$3

if [[ $(id -u) -ne 0 ]]; then echo "SKIP: needs root for network namespaces"; exit 77; fi
for tool in qemu-system-x86_64 busybox ip ethtool cpio dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed (scripts/setup installs it)"; exit 77; }
done

guest="$cache/guest"
build_guest() {
  mkdir -p "$guest" && cd "$guest"
  local pkg
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  [[ -n "$pkg" ]] || { echo "SKIP: cannot find Debian's kernel package (apt-get update?)"; exit 77; }
  rm -rf pkg root && mkdir -p pkg root
  (cd pkg && apt-get download "$pkg" >/dev/null 2>&1) || { echo "SKIP: cannot download $pkg"; exit 77; }
  dpkg-deb -x pkg/*.deb pkg/x
  cp pkg/x/boot/vmlinuz-* vmlinuz
  local mods=pkg/x/lib/modules/*/kernel
  mkdir -p root/bin root/mod root/proc root/sys root/dev
  for m in drivers/virtio/virtio.ko drivers/virtio/virtio_ring.ko \
           drivers/virtio/virtio_pci_legacy_dev.ko drivers/virtio/virtio_pci_modern_dev.ko \
           drivers/virtio/virtio_pci.ko net/core/failover.ko drivers/net/net_failover.ko \
           drivers/net/virtio_net.ko; do
    local src
    src=$(echo $mods/$m)
    if [[ -f $src.xz ]]; then
      xz -dc "$src.xz" >"root/mod/$(basename "$m")"
    elif [[ -f $src ]]; then
      cp "$src" root/mod/
    fi  # else built into this kernel
  done
  cp "$(command -v busybox)" root/bin/busybox
  # busybox's nc speaks only TCP: a 20-line static UDP sender.
  cat >udpsend.c <<'C'
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char** argv) {
  if (argc != 4) return 2;
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &to.sin_addr);
  for (int i = 0; i < atoi(argv[3]); i++) {
    char msg[64];
    int n = snprintf(msg, sizeof msg, "datagram %d", i);
    if (sendto(s, msg, n, 0, (struct sockaddr*)&to, sizeof to) != n) return 1;
    usleep(10000);
  }
  return 0;
}
C
  cc -static -O2 -o root/bin/udpsend udpsend.c
  rm udpsend.c
  cat >root/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
  [ -f /mod/$m.ko ] && insmod /mod/$m.ko
done
ip link set eth0 address 02:00:00:00:00:99
ip addr add 10.78.0.2/24 dev eth0
ip link set eth0 up
sleep 1
ping -c 5 -W 3 10.78.0.1 >/dev/null && echo "GUEST PING OK" || echo "GUEST PING FAILED"
udpsend 10.78.0.1 5001 20
echo "GUEST UDP SENT"
poweroff -f
INIT
  chmod +x root/init
  (cd root && find . | cpio -o -H newc 2>/dev/null | gzip -1) >initrd.gz
  rm -rf pkg root
  cd - >/dev/null
}
[[ -f "$guest/vmlinuz" && -f "$guest/initrd.gz" ]] || build_guest

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

ip netns add "$ns"
ip link add "${tag}v" type veth peer name "${tag}n"
ip link set "${tag}n" netns "$ns"
ip link set "${tag}v" up
ip netns exec "$ns" ip addr add 10.78.0.1/24 dev "${tag}n"
ip netns exec "$ns" ip link set "${tag}n" up
ip netns exec "$ns" ethtool -K "${tag}n" tx off >/dev/null

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
for _ in $(seq 100); do "$qosctl" --socket "$work/ctl.sock" status >/dev/null 2>&1 && break; sleep 0.1; done
"$qosctl" --socket "$work/ctl.sock" status >/dev/null || { cat "$work/run.log"; echo "FAIL: qosvisor did not start"; exit 1; }

ip netns exec "$ns" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.78.0.1", 5001)); s.settimeout(120)
got = 0
try:
    while got < 20:
        s.recv(2048); got += 1
finally:
    print(f"host received {got}", flush=True)
' >"$work/udp.log" 2>&1 &
receiver=$!

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
