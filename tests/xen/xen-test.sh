#!/bin/bash
# The real Xen host suite: build the images once (cached in .cache/xenbed), then boot Xen under
# QEMU once per xenstored (oxenstored, what XenServer and XCP-ng run, then the C daemon) and run
# every scenario of run_tests.py in dom0 against the packaged agent in a real guest.
#   tests/xen/xen-test.sh [oxenstored] [c]     (default: both)    MODE=demo: the demo instead
# Exits non-zero if any check failed on any xenstored, or a prerequisite is missing.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
B=${XENBED:-$(cd "$HERE/../.." && pwd)/.cache/xenbed}
T0=$(date +%s)
say() { printf '[xen-test %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf 'xen-test: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (apt-get for QEMU and mmdebstrap, chroot to build the images)"
command -v apt-get >/dev/null || die "needs a Debian or Ubuntu machine (apt-get) to build the images"
[ "$(uname -m)" = x86_64 ] || die "needs an x86_64 machine (Xen under QEMU's x86_64 emulation)"

say "building the images (cached: about 1 s when nothing changed, 6 min from scratch)"
"$HERE/build.sh" 2>&1 | sed 's/^/  /' || die "building the images failed (see above)"
[ "${PIPESTATUS[0]}" = 0 ] || die "building the images failed (see above)"

MODE=${MODE:-test}
STORES=("$@")
[ ${#STORES[@]} -gt 0 ] || STORES=(oxenstored c)
[ "$MODE" = test ] || STORES=("${STORES[0]}")
# Both xenstoreds at once, each Xen on two emulated CPUs, dom0 pinned to one and the guest kept on
# the other (boot.sh, run_tests.py): an idle emulated CPU costs the machine nothing, and a guest that
# shares its CPU with dom0 loses its emulated TLB at every switch (a PVH boot took 1,148 s so).
# SERIAL=1 runs them one after the other.
rc=0
if [ "${SERIAL:-}" = 1 ] || [ ${#STORES[@]} = 1 ]; then
    for xs in "${STORES[@]}"; do
        say "booting Xen with $xs (mode $MODE)"
        t=$(date +%s)
        SKIP_BUILD=1 XENSTORED=$xs MODE=$MODE "$HERE/boot.sh" 2>&1 | sed "s/^/  [$xs] /"
        r=${PIPESTATUS[0]}
        say "$xs: exit $r after $(( $(date +%s) - t )) s"
        [ "$r" = 0 ] || rc=1
    done
else
    pids=()
    for xs in "${STORES[@]}"; do
        say "booting Xen with $xs (mode $MODE, beside the others)"
        ( t=$(date +%s)
          SKIP_BUILD=1 SMP=${SMP:-2} XENSTORED=$xs MODE=$MODE RUN="${RUN_BASE:-$B/run}/$(date +%Y%m%d-%H%M%S)-$xs" \
              "$HERE/boot.sh" 2>&1 | sed -u "s/^/  [$xs] /"
          r=${PIPESTATUS[0]}
          say "$xs: exit $r after $(( $(date +%s) - t )) s"
          exit "$r" ) &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
fi
say "done in $(( $(date +%s) - T0 )) s: $([ $rc = 0 ] && echo 'every check passed' || echo 'FAILED')"
exit $rc
