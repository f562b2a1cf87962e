#!/usr/bin/env bash
# `cmake --install` into a staging root: the binaries, the edge default as the system
# configuration, the examples, the docs and the systemd unit, laid out under the configured
# prefix; the unit passes `systemd-analyze verify`; the installed qosvisor checks the installed
# configuration and qosctl answers --help with its exit codes. Where systemd is PID 1 the unit is
# also started and reloaded (not on machines without it: said so, not hidden).
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
"$stage$prefix/bin/qosctl" --help | grep -q "Exit codes: 0 done" || { echo "FAIL: qosctl --help"; exit 1; }
if [ "$(ps -p 1 -o comm=)" = systemd ]; then
  echo "systemd runs here: a unit from the staged binaries is started and reloaded"
  systemctl link "$check" && systemctl start qosvisor && systemctl reload qosvisor &&
    systemctl is-active qosvisor && systemctl stop qosvisor
  systemctl disable qosvisor 2>/dev/null || true
else
  echo "NOTE: systemd is not PID 1 here ($(ps -p 1 -o comm=)): the unit was verified, not started"
fi
echo "PASS"
