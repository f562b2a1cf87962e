# shellcheck shell=bash
# A host in its own network namespace behind a veth pair, for tests that send real traffic
# through the switch (sourced). The namespace is TAG"h", the switch side of the pair TAG"v" (an
# af_packet port's interface), the host side TAG"n". Callers delete the namespace and TAG"v".

# make_ns_host TAG IP: creates the namespace and the pair, gives the host IP/24.
make_ns_host() {
  local tag=$1 ip=$2
  ip netns add "${tag}h"
  ip link add "${tag}v" type veth peer name "${tag}n"
  ip link set "${tag}n" netns "${tag}h"
  ip link set "${tag}v" up
  ip netns exec "${tag}h" ip addr add "$ip/24" dev "${tag}n"
  ip netns exec "${tag}h" ip link set "${tag}n" up
  # veth leaves checksums to be filled in later; a packet socket would forward them unfilled.
  ip netns exec "${tag}h" ethtool -K "${tag}n" tx off >/dev/null
}

# count_udp TAG IP PORT COUNT LOG: in the background, receives COUNT datagrams on IP:PORT inside
# the namespace (2 minutes at most) and writes "host received N" to LOG; sets udp_counter_pid.
count_udp() {
  local tag=$1 ip=$2 port=$3 count=$4 log=$5
  ip netns exec "${tag}h" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(120)
got = 0
try:
    while got < int(sys.argv[3]):
        s.recv(2048); got += 1
finally:
    print(f"host received {got}", flush=True)
' "$ip" "$port" "$count" >"$log" 2>&1 &
  # shellcheck disable=SC2034  # read by the sourcing script
  udp_counter_pid=$!
}
