# shellcheck shell=bash
# Builds a tiny Linux guest from Debian's packages into DIR: the distribution kernel (vmlinuz) and
# a busybox initramfs that loads the virtio drivers (PCI and MMIO), configures eth0 with GUEST_IP,
# pings HOST_IP, sends it 20 UDP datagrams to port 5001 and powers off. Cached per address pair.
# Usage (sourced): build_debian_guest DIR GUEST_IP HOST_IP
build_debian_guest() {
  local guest=$1 guest_ip=$2 host_ip=$3
  [[ -f "$guest/vmlinuz" && -f "$guest/initrd.gz" && "$(cat "$guest/ips" 2>/dev/null)" == "$guest_ip $host_ip" ]] && return 0
  mkdir -p "$guest" && cd "$guest" || exit 1
  local pkg
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  [[ -n "$pkg" ]] || { echo "SKIP: cannot find Debian's kernel package (apt-get update?)"; exit 77; }
  rm -rf pkg root && mkdir -p pkg root
  (cd pkg && apt-get download "$pkg" >/dev/null 2>&1) || { echo "SKIP: cannot download $pkg"; exit 77; }
  dpkg-deb -x pkg/*.deb pkg/x
  cp pkg/x/boot/vmlinuz-* vmlinuz
  local mods
  mods=$(echo pkg/x/lib/modules/*/kernel)
  mkdir -p root/bin root/mod root/proc root/sys root/dev
  for m in drivers/virtio/virtio.ko drivers/virtio/virtio_ring.ko \
           drivers/virtio/virtio_pci_legacy_dev.ko drivers/virtio/virtio_pci_modern_dev.ko \
           drivers/virtio/virtio_pci.ko drivers/virtio/virtio_mmio.ko net/core/failover.ko drivers/net/net_failover.ko \
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
  cat >root/init <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_mmio failover net_failover virtio_net; do
  [ -f /mod/\$m.ko ] && insmod /mod/\$m.ko
done
ip link set eth0 address 02:00:00:00:00:99
ip addr add $guest_ip/24 dev eth0
ip link set eth0 up
sleep 1
ping -c 5 -W 3 $host_ip >/dev/null && echo "GUEST PING OK" || echo "GUEST PING FAILED"
udpsend $host_ip 5001 20
echo "GUEST UDP SENT"
poweroff -f
INIT
  chmod +x root/init
  (cd root && find . | cpio -o -H newc 2>/dev/null | gzip -1) >initrd.gz
  echo "$guest_ip $host_ip" >ips
  rm -rf pkg root
  cd - >/dev/null || exit 1
}
