# shellcheck shell=bash
# Helpers for tests that run the appliance (sourced).

# wait_for_control QOSCTL SOCKET LOG TRIES: waits (TRIES × 100 ms at most) until the control socket
# answers, which it does once the data plane runs; otherwise prints LOG and fails the test.
wait_for_control() {
  local qosctl=$1 sock=$2 log=$3 tries=$4
  for _ in $(seq "$tries"); do "$qosctl" --socket "$sock" status >/dev/null 2>&1 && return 0; sleep 0.1; done
  "$qosctl" --socket "$sock" status >/dev/null || { cat "$log"; echo "FAIL: qosvisor did not start"; exit 1; }
}

# stop_and_check QOSCTL SOCKET PID LOG: stops qosvisor over its control socket, waits for it, and
# fails the test unless it exited 0, returned every mbuf to its pool and printed no sanitizer
# report. The caller clears its own copy of PID afterwards.
stop_and_check() {
  local qosctl=$1 sock=$2 qpid=$3 log=$4 rc=0
  "$qosctl" --socket "$sock" stop >/dev/null
  wait "$qpid" || rc=$?
  tail -n 1 "$log"
  ((rc == 0)) || { cat "$log"; echo "FAIL: qosvisor exited with $rc"; exit 1; }
  grep -q "^shutdown: all [0-9]* mbufs back in the pool" "$log" \
    || { cat "$log"; echo "FAIL: mbufs were not all returned"; exit 1; }
  if grep -q "ERROR: AddressSanitizer\|runtime error:\|WARNING: ThreadSanitizer" "$log"; then
    cat "$log"; echo "FAIL: sanitizer report"; exit 1
  fi
}

# require_kvm_guest GUEST_DIR NAME: skips the test (exit 77) without a usable /dev/kvm, and fails
# it when the test guest NAME.elf was not built.
require_kvm_guest() {
  [[ -r /dev/kvm && -w /dev/kvm ]] || { echo "SKIP: /dev/kvm is not available"; exit 77; }
  [[ -f "$1/$2.elf" ]] || { echo "FAIL: $1/$2.elf was not built"; exit 1; }
}

# stop_quietly PID: kills PID if it still runs and reaps it, whatever its exit status. For cleanup
# traps under set -e: a `kill && wait` whose wait returns the killed process's status (143) would
# end the trap there, before the namespaces, links and files after it are removed.
stop_quietly() {
  [[ -n "${1:-}" ]] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# daemon_work_dir: a temporary work directory, and a trap that stops the qosvisor the test starts
# ($pid) and removes the directory on exit. Sets work and pid.
daemon_work_dir() {
  work=$(mktemp -d)
  pid=""
  trap 'stop_quietly "$pid"; rm -rf "$work"' EXIT
}

# daemons_work_dir TAG: for a test that runs several daemons: a temporary work directory, the
# processes to stop (the caller adds to pids), and a trap that stops them and removes the
# directory and the DPDK runtime directories of the file prefixes starting with TAG (a killed
# daemon cannot remove its own). Sets work and pids.
daemons_work_dir() {
  work=$(mktemp -d)
  pids=()
  daemons_tag=$1
  trap 'for p in "${pids[@]}"; do stop_quietly "$p"; done
        rm -rf "$work" /var/run/dpdk/"$daemons_tag"* "${XDG_RUNTIME_DIR:-/nonexistent}"/dpdk/"$daemons_tag"*' EXIT
}

# edge_default_box SOURCE_DIR OUT_YAML PREFIX CONTROL: the edge default example with an EAL file
# prefix of the test's own and its control section replaced by "control: {CONTROL}".
edge_default_box() {
  awk -v prefix="$3" '
    /^control:/ { skip = 1; next }
    skip && /^[ #]/ { next }
    { skip = 0 }
    /^dataplane:/ { print; print "  file_prefix: " prefix; next }
    /^  file_prefix:/ { next }
    { print }' "$1/examples/edge-default.yaml" >"$2"
  echo "control: {$4}" >>"$2"
}

# wait_for_traffic QOSCTL SOCKET: returns once the switch has received 1,000 frames (the
# generator's calibration is over and its traffic flows), or after 15 s.
wait_for_traffic() {
  local n
  for _ in $(seq 150); do
    n=$("$1" --socket "$2" --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["switch"]["rx_packets"])')
    ((n > 1000)) && return 0
    sleep 0.1
  done
}

# make_unprivileged_user TAG: (root) creates the group TAG"g" and the user TAG"u" in it, without a
# home or a login shell, for tests that talk to qosvisor as a member of control.group; sets
# test_user and test_group. The caller's cleanup calls remove_unprivileged_user.
make_unprivileged_user() {
  test_group="${1}g"
  test_user="${1}u"
  groupadd "$test_group"
  useradd --no-create-home --no-user-group --gid "$test_group" --shell /usr/sbin/nologin "$test_user"
}

remove_unprivileged_user() {
  if [[ -n "${test_user:-}" ]]; then userdel "$test_user" 2>/dev/null || true; fi
  if [[ -n "${test_group:-}" ]]; then groupdel "$test_group" 2>/dev/null || true; fi
}

# as_test_user CMD...: runs CMD as test_user with its groups (and no others of the caller's).
as_test_user() {
  setpriv --reuid="$test_user" --regid="$test_group" --init-groups "$@"
}

# unprivileged_test_box TAG QOSCTL_BIN: (root) a work directory the test user can pass through,
# that user and its group (make_unprivileged_user TAG), a copy of qosctl it may run (the build
# tree need not be readable by others), and a trap that stops $pid and removes all of it on exit.
# Sets work, qosctl and pid.
unprivileged_test_box() {
  daemon_work_dir
  trap 'stop_quietly "$pid"; remove_unprivileged_user; rm -rf "$work"' EXIT
  make_unprivileged_user "$1"
  chmod 0711 "$work"
  install -m 0755 "$2" "$work/qosctl"
  qosctl=$work/qosctl
}

# start_test_etcd DIR: one etcd member on free loopback ports, its data in DIR/etcd and its log in
# DIR/etcd.log, waited for until healthy; sets endpoint and etcd_pid (the caller stops it). Skips
# the test (exit 77) when etcd is not installed.
start_test_etcd() {
  local bin=/usr/bin/etcd client peer
  [[ -x $bin ]] || { echo "SKIP: $bin is not installed (Debian package etcd-server)"; exit 77; }
  read -r client peer < <(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')
  endpoint=http://127.0.0.1:$client
  "$bin" --name fleet --data-dir "$1/etcd" --listen-client-urls "$endpoint" \
    --advertise-client-urls "$endpoint" --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "fleet=http://127.0.0.1:$peer" >"$1/etcd.log" 2>&1 &
  etcd_pid=$!
  for _ in $(seq 100); do curl -sf "$endpoint/health" | grep -q '"true"' && return 0; sleep 0.1; done
  echo "FAIL: etcd did not become healthy"; cat "$1/etcd.log"; exit 1
}
