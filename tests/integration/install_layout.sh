#!/usr/bin/env bash
# `cmake --install` into a staging root: the binaries, the edge default as the system
# configuration, the examples, the docs and the systemd unit, laid out under the configured
# prefix; the unit passes `systemd-analyze verify`; the installed qosvisor checks the installed
# configuration, and both installed programs answer --help with a manual page (its sections, every
# command, the exit codes) and COMMAND --help with the page of that command. Where systemd is
# PID 1 the unit is also started and reloaded (not on machines without it: said so, not hidden).
# Usage: install_layout.sh BUILD_DIR
set -euo pipefail
build=$1
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build/CMakeCache.txt")
[ -n "$prefix" ] || { echo "FAIL: no CMAKE_INSTALL_PREFIX in $build/CMakeCache.txt"; exit 1; }
etc=$([ "$prefix" = /usr ] && echo /etc || echo "$prefix/etc")
DESTDIR=$stage cmake --install "$build" >/dev/null
for f in "$prefix/bin/qosvisor" "$prefix/bin/qosctl" "$prefix/bin/qosgen" "$prefix/bin/qosvisor-sim" \
         "$etc/qosvisor/qosvisor.yaml" "$prefix/share/qosvisor/examples/edge-default.yaml" \
         "$prefix/share/doc/qosvisor/README.md" "$prefix/lib/systemd/system/qosvisor.service"; do
  [ -e "$stage$f" ] || { find "$stage" | head -40; echo "FAIL: $f was not installed"; exit 1; }
  echo "installed: $f"
done
unit=$stage$prefix/lib/systemd/system/qosvisor.service
grep -q "^Type=notify" "$unit" && grep -q "^ExecReload=/bin/kill -HUP \$MAINPID" "$unit" &&
  grep -q "^ExecStart=$prefix/bin/qosvisor run $etc/qosvisor/qosvisor.yaml" "$unit" ||
  { cat "$unit"; echo "FAIL: the unit does not start, notify and reload as documented"; exit 1; }
# Verified with its binaries where they were staged.
check=$(mktemp -d)/qosvisor.service
sed "s|$prefix/bin/|$stage$prefix/bin/|g" "$unit" >"$check"
systemd-analyze verify "$check" || { echo "FAIL: systemd-analyze verify"; exit 1; }
"$stage$prefix/bin/qosvisor" check "$stage$etc/qosvisor/qosvisor.yaml" >/dev/null ||
  { echo "FAIL: the installed configuration does not check"; exit 1; }
check_page() {  # check_page TEXT WHAT SECTION...: fails unless TEXT has each section heading
  local text=$1 what=$2
  shift 2
  for section in "$@"; do
    grep -q "^$section\$" <<<"$text" || { echo "$text"; echo "FAIL: $what has no $section section"; exit 1; }
  done
}
page=$("$stage$prefix/bin/qosctl" --help)
check_page "$page" "qosctl --help" NAME SYNOPSIS DESCRIPTION OPTIONS COMMANDS "EXIT STATUS" FILES \
  ENVIRONMENT EXAMPLES
for code in "0   done" "1   the operation failed" "2   usage error" "3   no daemon answered"; do
  grep -q "^ *$code" <<<"$page" || { echo "FAIL: qosctl --help does not document exit status '$code'"; exit 1; }
done
for command in status ports stats vms vm jobs job bridges flows classes uplinks capture fdb reload \
               deploy undeploy apps quota hosts top stop; do
  grep -q "^       $command\b" <<<"$page" || { echo "FAIL: qosctl --help does not list '$command'"; exit 1; }
  check_page "$("$stage$prefix/bin/qosctl" "$command" --help)" "qosctl $command --help" NAME SYNOPSIS \
    "EXIT STATUS"
done
grep -q -- "--template T" <<<"$page" || { echo "FAIL: qosctl --help misses vm's options"; exit 1; }
page=$("$stage$prefix/bin/qosvisor" --help)
check_page "$page" "qosvisor --help" NAME SYNOPSIS DESCRIPTION COMMANDS "EXIT STATUS" FILES EXAMPLES
grep -q -- "--log-level L" <<<"$page" || { echo "FAIL: qosvisor --help misses run's options"; exit 1; }
check_page "$("$stage$prefix/bin/qosvisor" run --help)" "qosvisor run --help" NAME SYNOPSIS \
  "ARGUMENTS AND OPTIONS"
echo "qosctl and qosvisor --help: manual pages with every command"
# start_unit_under_systemd: the installed unit, renamed and pointed at a copy of the staged
# binary and an edge default of its own under /run (PrivateTmp hides the staging directory from
# the service), started (Type=notify: systemctl returns once the daemon said READY), asked over
# its control socket, reloaded (the reload in its journal, the daemon still active) and stopped.
start_unit_under_systemd() {
  local name="qosvisor-test-$$" root="/run/qosvisor-test-$$"
  unit_file="/run/systemd/system/$name.service"
  unit_root=$root
  mkdir -p "$root/bin"
  cp "$stage$prefix/bin/qosvisor" "$stage$prefix/bin/qosctl" "$root/bin/"
  sed -e '/^control:/,$d' -e "s|^dataplane:|dataplane:\n  file_prefix: $name|" \
    "$stage$prefix/share/qosvisor/examples/edge-default.yaml" >"$root/qosvisor.yaml"
  printf 'control:\n  socket: %s/ctl.sock\n' "$root" >>"$root/qosvisor.yaml"
  sed -e "s|$prefix/bin/|$root/bin/|g" -e "s|$etc/qosvisor/qosvisor.yaml|$root/qosvisor.yaml|g" \
    -e "s|^RuntimeDirectory=qosvisor|RuntimeDirectory=$name|" \
    -e "s|^StateDirectory=qosvisor|StateDirectory=$name|" "$unit" >"$unit_file"
  systemctl daemon-reload
  systemctl start "$name" || { journalctl -u "$name" --no-pager | tail -20; echo "FAIL: start"; exit 1; }
  "$root/bin/qosctl" --socket "$root/ctl.sock" status >/dev/null || { echo "FAIL: no answer"; exit 1; }
  systemctl reload "$name"
  for _ in $(seq 50); do journalctl -u "$name" --no-pager | grep -q "reload of" && break; sleep 0.1; done
  journalctl -u "$name" --no-pager | grep -q "reload of" || { echo "FAIL: the reload is not in the journal"; exit 1; }
  systemctl is-active "$name" >/dev/null || { echo "FAIL: the reload stopped the service"; exit 1; }
  systemctl stop "$name"
  echo "systemd: $name started (ready), answered, reloaded and stopped"
}
unit_file=""
unit_root=""
remove_test_unit() {
  if [ -n "$unit_file" ]; then
    systemctl stop "$(basename "$unit_file" .service)" 2>/dev/null || true
    rm -f "$unit_file"
    systemctl daemon-reload || true
  fi
  [ -z "$unit_root" ] || rm -rf "$unit_root"
  rm -rf "$stage"
}
trap remove_test_unit EXIT
if [ "$(ps -p 1 -o comm=)" = systemd ] && [ "$(id -u)" = 0 ]; then
  start_unit_under_systemd
else
  echo "NOTE: systemd is not PID 1 here (PID 1 is $(ps -p 1 -o comm=)), or this is not root: the unit was verified, not started"
fi
echo "PASS"
