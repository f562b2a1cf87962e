#!/usr/bin/env bash
# Builds libopenvswitch.a once from Debian's openvswitch-source tarball into OUTDIR.
# Pinned configure flags keep the archive free of optional dependencies (see notes in README).
# Re-running is a no-op unless the tarball or the flags changed.
set -euo pipefail
tarball=$1
outdir=$2
flags="--disable-afxdp --disable-ssl --disable-libcapng"
mkdir -p "$outdir"
exec 9>"$outdir/.lock"
flock 9
stamp="$outdir/.stamp"
want="$(sha256sum "$tarball" | cut -d' ' -f1) $flags"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$outdir/src/lib/.libs/libopenvswitch.a" ]]; then
  exit 0
fi
echo "-- building the Open vSwitch library in $outdir (about a minute)"
rm -rf "$outdir/src"
mkdir -p "$outdir/src"
tar xzf "$tarball" -C "$outdir/src" --strip-components=1
cd "$outdir/src"
log="$outdir/build.log"
jobs=$(nproc)
if ! { ./configure $flags && \
       make -j"$jobs" ofproto/ipfix-entities.def include/odp-netlink.h include/odp-netlink-macros.h \
         lib/vswitch-idl.c lib/vswitch-idl.h lib/ovsdb-server-idl.c lib/ovsdb-server-idl.h && \
       make -j"$jobs" lib/libopenvswitch.la; } >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "error: building the Open vSwitch library failed; full log: $log" >&2
  exit 1
fi
echo "$want" >"$stamp"
