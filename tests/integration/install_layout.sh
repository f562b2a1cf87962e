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
for command in status ports stats vms vm jobs job bridges flows classes capture fdb reload deploy \
               undeploy apps quota top stop; do
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
if [ "$(ps -p 1 -o comm=)" = systemd ]; then
  echo "systemd runs here: a unit from the staged binaries is started and reloaded"
  systemctl link "$check" && systemctl start qosvisor && systemctl reload qosvisor &&
    systemctl is-active qosvisor && systemctl stop qosvisor
  systemctl disable qosvisor 2>/dev/null || true
else
  echo "NOTE: systemd is not PID 1 here ($(ps -p 1 -o comm=)): the unit was verified, not started"
fi
echo "PASS"
