#!/usr/bin/env bash
# Issue 5's proof: build the deb and the rpm from the checkout (only dist/ and /tmp writable), check
# the unit's sandbox (systemd-analyze security/verify) and the packages' files and scripts (lintian,
# dpkg-deb, rpm -qp), install the deb with apt into a fresh Debian 12 root, run it there against a
# real xenstored (keys checked from the host side), under a read-only / with no capabilities and
# W^X memory, and as the packaged unit under the root's own systemd (systemd-nspawn --boot); then
# run the rpm's payload with its vendored modules. Prints the time of each step; exits non-zero
# with a FAIL: line on the first failure.
#
# Usage (root, Debian 12, from the checkout root): bash .ci/packaging.sh
# Caches in .cache/ (git-ignored): xen/ (xenstored), bookworm/ (bootstrapped root, apt's debs).
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
CACHE=$TOP/.cache
WORK=$(mktemp -d /tmp/xe-guest-agent-ci.XXXXXX)
R=$WORK/root                        # the Debian root under test
XEN=$CACHE/xen
XSLIB=$XEN/root/usr/lib/x86_64-linux-gnu
TARGET_EXPOSURE=2.5
PIDS=()                             # background processes we started, killed on exit
TIMES=()
T0=$SECONDS

say() { printf '%s\n' "$*"; }
die() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }
step() {   # step NAME: close the previous step's timer, open a new one
    if [ -n "${STEP:-}" ]; then TIMES+=("$(printf '%5ds  %s' $((SECONDS - STEP_T0)) "$STEP")"); fi
    STEP=$1; STEP_T0=$SECONDS
    [ "$STEP" = done ] || printf '\n=== %s\n' "$STEP"
}
cleanup() {
    local rc=$? failed=${STEP:-?}
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
    step done
    printf '\n--- packaging.sh timings\n'; printf '%s\n' "${TIMES[@]}"
    printf '%5ds  total\n' $((SECONDS - T0))
    [ $rc -eq 0 ] && say "packaging.sh: all checks passed" || say "packaging.sh: FAILED in step: $failed"
}
trap cleanup EXIT

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds; false on timeout.
wait_for() {
    local end=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do [ $SECONDS -lt $end ] || return 1; sleep 0.1; done
}

# XenStore CLI on the host against the test daemon; over the socket the agent is dom0.
xs() { local cmd=$1; shift; LD_LIBRARY_PATH=$XSLIB XENSTORED_PATH=$XS/socket "$XEN/root/usr/bin/xenstore-$cmd" "$@"; }
HOME_XS=/local/domain/0
xs_is() { [ "$(xs read "$HOME_XS/$1" 2>/dev/null)" = "$2" ]; }
xs_absent() { ! xs read "$HOME_XS/$1" >/dev/null 2>&1; }
xs_clear() { local k; for k in attr data control; do xs rm "$HOME_XS/$k" 2>/dev/null || true; done; }

# in_root MODE PIDFILE CMD...: run CMD chrooted in $R inside a private mount namespace (nothing
# leaks to the host) with /proc, /sys, /dev, a tmpfs /run and the xenstored run directory as
# /run/xenstored. MODE ro: / itself (host and root) is read-only in that namespace, and CMD runs
# with no capabilities, no_new_privs and memory-deny-write-execute (prctl PR_SET_MDWE), as the
# unit runs it. The process keeps the shell's PID (exec all the way), written to PIDFILE if given.
# $AGENT_ENV: extra VAR=value words for CMD's (otherwise empty) environment.
in_root() {
    local mode=$1 pidfile=$2; shift 2
    AGENT_ENV=${AGENT_ENV:-} unshare --mount --fork --kill-child -- /bin/sh -euc '
        R=$1 XS=$2 MODE=$3 PIDFILE=$4; shift 4
        [ -z "$PIDFILE" ] || echo $$ > "$PIDFILE"
        if [ "$MODE" = ro ]; then           # before the API mounts, which stay writable as under systemd
            mount --bind "$R" "$R"          # (in case the root is not on the / file system)
            mount -o remount,bind,ro "$R"
            mount -o remount,bind,ro /
        fi
        mount -t proc proc "$R/proc"
        mount --rbind /sys "$R/sys"
        mount --rbind /dev "$R/dev"
        mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$R/run"
        mkdir -p "$R/run/xenstored"
        mount --bind "$XS" "$R/run/xenstored"
        set -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 $AGENT_ENV WATCHDOG_PID=$$ "$@"
        if [ "$MODE" = ro ]; then
            mount -o remount,bind,ro "$R/sys"
            exec chroot "$R" setpriv --no-new-privs --bounding-set=-all --inh-caps=-all -- \
                python3 -c "import ctypes, errno, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0):   # PR_SET_MDWE, REFUSE_EXEC_GAIN
    e = ctypes.get_errno()   # EINVAL: kernel < 6.3 (the systemd run below still checks W^X)
    print(\"WARNING: no PR_SET_MDWE:\", os.strerror(e), file=sys.stderr)
    if e != errno.EINVAL: sys.exit(1)
os.execvp(sys.argv[1], sys.argv[1:])" "$@"
        fi
        exec chroot "$R" "$@"
    ' sh "$R" "$XS" "$mode" "$pidfile" "$@"
}

# A notify socket standing in for systemd's: logs every datagram, one line per message.
start_notify_listener() {
    NOTIFY_NAME=xe-guest-agent-ci-$$-$1
    NOTIFY_LOG=$WORK/notify-$1.log
    : > "$NOTIFY_LOG"
    python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\0" + sys.argv[1])
print("listening", flush=True)
with open(sys.argv[2], "a") as log:
    while True:
        log.write(s.recv(4096).decode().replace("\n", " | ") + "\n"); log.flush()
' "$NOTIFY_NAME" "$NOTIFY_LOG" > "$WORK/listener-$1.out" &
    PIDS+=($!)
    wait_for 5 grep -q listening "$WORK/listener-$1.out" || die "notify listener did not start"
}

# check_published SHOWJSON: every key `show` printed is in XenStore with that value (the volatile
# meminfo_free and the data/updated stamp only need to exist).
check_published() {
    local key want got bad=0
    while IFS=$'\t' read -r key want; do
        got=$(xs read "$HOME_XS/$key" 2>/dev/null) || { say "  missing: $key"; bad=1; continue; }
        case $key in data/meminfo_free|data/updated) ;; *) [ "$got" = "$want" ] || { say "  $key = '$got', expected '$want'"; bad=1; } ;; esac
    done < <(python3 -c 'import json,sys; [print("%s\t%s" % kv) for kv in json.load(open(sys.argv[1])).items()]' "$1")
    return $bad
}

# ---------------------------------------------------------------------------------------------------
step "tools (apt)"
[ "$(id -u)" = 0 ] || die "run as root (apt, chroot, mount namespaces)"
[ -r /etc/debian_version ] || die "needs a Debian host"
NEED=(make build-essential dpkg-dev debhelper dh-python python3 lintian rpm cpio mmdebstrap debian-archive-keyring
      systemd systemd-container gcc libc6-dev util-linux)
MISSING=()
for p in "${NEED[@]}"; do
    case $(dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null) in ii*) ;; *) MISSING+=("$p") ;; esac
done
if [ ${#MISSING[@]} -gt 0 ]; then
    say "installing: ${MISSING[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${MISSING[@]}" > "$WORK/apt.log" 2>&1 \
        || { tail -n 30 "$WORK/apt.log"; die "apt-get install ${MISSING[*]} failed"; }
else
    say "all present: ${NEED[*]}"
fi
say "$(systemd-analyze --version | head -1); $(rpmbuild --version); lintian $(lintian --version | awk '{print $2}')"

step "test xenstored (Xen 4.17, cached in .cache/xen)"
if [ ! -x "$XEN/root/usr/lib/xen-4.17/bin/xenstored" ] || [ ! -f "$XEN/libxsshim.so" ]; then
    (cd tests/lab && sh fetch-xenstored.sh "$XEN") || die "fetching xenstored failed"
fi
XS=$WORK/xs; mkdir -p "$XS"
XENSTORED_RUNDIR=$XS LD_LIBRARY_PATH=$XSLIB LD_PRELOAD=$XEN/libxsshim.so \
    "$XEN/root/usr/lib/xen-4.17/bin/xenstored" --no-fork > "$WORK/xenstored.log" 2>&1 &
PIDS+=($!)
wait_for 5 xs exists / || die "xenstored did not answer on $XS/socket"
say "xenstored up at $XS/socket"

step "build: make deb && make rpm (from the checkout)"
VERSION=$(sed -n 's/^__version__ *= *["'\'']\([^"'\'']*\)["'\''].*/\1/p' xe_guest_agent/__init__.py)
[ -n "$VERSION" ] || die "no __version__ in xe_guest_agent/__init__.py"
DEB=dist/xe-guest-agent_${VERSION}_all.deb
RPM=dist/xe-guest-agent-${VERSION}-1.noarch.rpm
rm -f "$DEB" "$RPM"; mkdir -p dist
# Proof that the builds write nothing but dist/ and /tmp: they run in a mount namespace where every
# other place (/, the checkout, $HOME) is read-only; a stray write fails the build.
unshare --mount --fork -- /bin/sh -euc '
    mount --bind /tmp /tmp
    mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"
    mount --bind "$1/dist" "$1/dist"; mount -o remount,bind,rw "$1/dist"
    mount -o remount,bind,ro /
    cd "$1" && make deb && make rpm' sh "$TOP" || die "make deb / make rpm failed (with only dist/ and /tmp writable)"
[ -f "$DEB" ] || die "$DEB not built"
[ -f "$RPM" ] || die "$RPM not built"
say "built with the checkout (but dist/) and / read-only"

step "unit: systemd-analyze security --offline=true"
systemd-analyze security --offline=true --no-pager packaging/xe-guest-agent.service | tee "$WORK/security.txt" | grep -v '^✓' || true
EXPOSURE=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$WORK/security.txt")
[ -n "$EXPOSURE" ] || die "no exposure level in systemd-analyze output"
awk -v e="$EXPOSURE" -v t="$TARGET_EXPOSURE" 'BEGIN { exit !(e <= t) }' || die "exposure $EXPOSURE > target $TARGET_EXPOSURE"
say "exposure: $EXPOSURE (target <= $TARGET_EXPOSURE)"

step "lintian"
RC=0; lintian --fail-on error --display-info --pedantic "$DEB" > "$WORK/lintian.all" 2>&1 || RC=$?
grep -v 'running with root privileges' "$WORK/lintian.all" > "$WORK/lintian.txt" || true
cat "$WORK/lintian.txt"
[ $RC -eq 0 ] || die "lintian reports errors (exit $RC)"
LINTIAN_SUMMARY=$(awk -F: '/^[EWIPX]:/ {n[$1]++} END {printf "%d errors, %d warnings, %d info, %d pedantic", n["E"], n["W"], n["I"], n["P"]}' "$WORK/lintian.txt")
say "lintian: $LINTIAN_SUMMARY"

step "deb: contents and maintainer scripts"
dpkg-deb -c "$DEB" > "$WORK/deb.list"
for f in ./lib/systemd/system/xe-guest-agent.service ./usr/bin/xe-guest-agent ./etc/xe-guest-agent/agent.conf \
         ./usr/share/xe-guest-agent/xe_guest_agent/cli.py ./usr/share/xe-guest-agent/inotify_simple.py \
         ./usr/share/man/man8/xe-guest-agent.8.gz; do
    grep -q " $f\$" "$WORK/deb.list" || die "$f missing from $DEB"
done
mkdir "$WORK/deb"; dpkg-deb -e "$DEB" "$WORK/deb/DEBIAN"; dpkg-deb -x "$DEB" "$WORK/deb"
cmp packaging/xe-guest-agent.service "$WORK/deb/lib/systemd/system/xe-guest-agent.service" || die "packaged unit differs from packaging/"
grep -qx /etc/xe-guest-agent/agent.conf "$WORK/deb/DEBIAN/conffiles" || die "agent.conf is not a conffile"
grep -q "deb-systemd-helper enable 'xe-guest-agent.service'" "$WORK/deb/DEBIAN/postinst" || die "postinst does not enable the unit"
grep -q "deb-systemd-invoke \$_dh_action 'xe-guest-agent.service'" "$WORK/deb/DEBIAN/postinst" || die "postinst does not start the unit"
grep -q "deb-systemd-invoke stop 'xe-guest-agent.service'" "$WORK/deb/DEBIAN/prerm" || die "prerm does not stop the unit"
grep -q "deb-systemd-helper purge 'xe-guest-agent.service'" "$WORK/deb/DEBIAN/postrm" || die "postrm does not purge the unit state"
grep -q "py3compile -p xe-guest-agent /usr/share/xe-guest-agent" "$WORK/deb/DEBIAN/postinst" || die "postinst does not byte-compile"
dpkg-deb -f "$DEB" Depends | tee "$WORK/deb.depends"
for d in python3-click python3-pyxs; do grep -q "$d" "$WORK/deb.depends" || die "Depends lacks $d"; done
say "unit, conffile, postinst (enable+start, py3compile), prerm (stop), postrm (purge): present"

step "rpm: file list and scriptlets"
rpm -qlp "$RPM" > "$WORK/rpm.list"
for f in /usr/lib/systemd/system/xe-guest-agent.service /usr/bin/xe-guest-agent /etc/xe-guest-agent/agent.conf \
         /usr/share/xe-guest-agent/pyxs/client.py /usr/share/xe-guest-agent/inotify_simple.py; do
    grep -qx "$f" "$WORK/rpm.list" || die "$f missing from rpm -qlp"
done
rpm -qlp "$RPM" | grep -E 'service|bin/|preset'
rpm -qp --scripts "$RPM" | tee "$WORK/rpm.scripts"
for s in postinstall preuninstall postuninstall; do grep -q "^$s scriptlet" "$WORK/rpm.scripts" || die "rpm has no $s scriptlet"; done
grep -q 'preset xe-guest-agent.service' "$WORK/rpm.scripts" || die "%post does not preset the unit"
grep -q 'disable --now xe-guest-agent.service' "$WORK/rpm.scripts" || die "%preun does not stop+disable the unit"
grep -q 'try-restart xe-guest-agent.service' "$WORK/rpm.scripts" || die "%postun does not restart the unit"
rpm -qp --requires "$RPM" | grep -q '^python3-click' || die "rpm does not require python3-click"
rpm -qp --configfiles "$RPM" | grep -qx /etc/xe-guest-agent/agent.conf || die "agent.conf is not %config in the rpm"

step "fresh Debian 12 root (mmdebstrap, cached in .cache/bookworm)"
mkdir -p "$CACHE/bookworm/archives/partial"
if [ ! -f "$CACHE/bookworm/root.tar" ] || [ ! -s "$CACHE/bookworm/root.tar" ]; then
    rm -rf "$CACHE/bookworm/root.tar"
    rm -rf "$CACHE/bookworm/root.tar.tmp"
    mmdebstrap --variant=apt --format=tar --quiet bookworm "$CACHE/bookworm/root.tar.tmp" http://deb.debian.org/debian \
        || die "mmdebstrap failed"
    mv "$CACHE/bookworm/root.tar.tmp" "$CACHE/bookworm/root.tar"
fi
mkdir "$R"; tar -xf "$CACHE/bookworm/root.tar" -C "$R" || die "cannot unpack $CACHE/bookworm/root.tar"
grep -q '^VERSION_CODENAME=bookworm' "$R/etc/os-release" || die "the root is not bookworm"
say "root: $(. "$R/etc/os-release"; echo "$PRETTY_NAME"), no python: $([ -e "$R/usr/bin/python3" ] && echo no || echo yes)"

step "apt install ./$(basename "$DEB") in the root (Debian archive only)"
cp "$DEB" "$R/tmp/"
# apt in the root, downloads cached in .cache/bookworm/archives (bind-mounted) across runs.
root_apt() {
    unshare --mount --fork -- /bin/sh -euc 'mount --bind "$1/archives" "$2/var/cache/apt/archives"; shift 2
        exec chroot "$0" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"' \
        "$R" "$CACHE/bookworm" "$R" "$@"
}
root_apt apt-get update -qq > "$WORK/root-apt.log" 2>&1 || { cat "$WORK/root-apt.log"; die "apt-get update in the root failed"; }
root_apt apt-get install -y -q "/tmp/$(basename "$DEB")" > "$WORK/root-apt.log" 2>&1 \
    || { tail -n 40 "$WORK/root-apt.log"; die "apt install of the deb failed in the fresh root"; }
grep -E '^(Setting up|Unpacking) (xe-guest-agent|python3-pyxs|python3-click)' "$WORK/root-apt.log" || true
chroot "$R" dpkg-query -W -f '${Package} ${Version} ${Status}\n' xe-guest-agent python3-pyxs python3-click python3
[ -L "$R/etc/systemd/system/multi-user.target.wants/xe-guest-agent.service" ] || die "postinst did not enable the unit"
ls "$R"/usr/share/xe-guest-agent/xe_guest_agent/__pycache__/cli.*.pyc >/dev/null 2>&1 || die "postinst did not byte-compile"
say "installed; enabled: $(readlink "$R/etc/systemd/system/multi-user.target.wants/xe-guest-agent.service")"

step "in the root: --version, show"
AGENT_ENV=""
OUT=$(in_root rw "" xe-guest-agent --version) || die "xe-guest-agent --version failed in the root"
say "$OUT"
[ "$OUT" = "xe-guest-agent $VERSION" ] || die "--version says '$OUT', expected 'xe-guest-agent $VERSION'"
in_root rw "" xe-guest-agent show || die "xe-guest-agent show failed in the root"
in_root rw "" xe-guest-agent show --json > "$WORK/show.json" || die "xe-guest-agent show --json failed"
grep -q '"attr/PVAddons/MajorVersion"' "$WORK/show.json" || die "show --json lacks attr/PVAddons/MajorVersion"
# The shipped example config, uncommented, must parse and equal the defaults.
sed -n 's/^#\([a-z_]* = .*\)$/\1/p' "$R/etc/xe-guest-agent/agent.conf" > "$R/tmp/example.conf"
in_root rw "" xe-guest-agent show --json --config /tmp/example.conf > "$WORK/show-example.json" \
    || die "the uncommented example agent.conf is rejected"
python3 - "$WORK/show.json" "$WORK/show-example.json" <<'EOF' || die "the example agent.conf does not give the defaults"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for d in (a, b): d.pop("data/meminfo_free", None)
sys.exit(a != b)
EOF
say "example agent.conf ($(wc -l < "$R/tmp/example.conf") keys) = defaults"

step "in the root: real publish against xenstored, checked from the host"
start_notify_listener rw
AGENT_ENV="NOTIFY_SOCKET=@$NOTIFY_NAME WATCHDOG_USEC=2000000"
in_root rw "$WORK/agent.pid" xe-guest-agent run --xenstore /run/xenstored/socket --log-level info > "$WORK/agent-rw.log" 2>&1 &
AGENT_JOB=$!; PIDS+=($AGENT_JOB)
wait_for 15 grep -q READY=1 "$NOTIFY_LOG" || { cat "$WORK/agent-rw.log"; die "no READY=1 from the agent within 15 s"; }
wait_for 5 xs read "$HOME_XS/data/updated" || { cat "$WORK/agent-rw.log"; die "data/updated not written"; }
check_published "$WORK/show.json" || { cat "$WORK/agent-rw.log"; die "XenStore does not hold what show printed"; }
xs ls "$HOME_XS" | sed 's/^/  /'
say "all $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/show.json") keys of show are in XenStore"
# Appliance flag: created on a running guest -> NotUpgradable = 1 at once; removed -> gone.
touch "$R/etc/pv-drivers-not-upgradable"
wait_for 5 xs_is attr/PVAddons/NotUpgradable 1 \
    || die "NotUpgradable not published after creating /etc/pv-drivers-not-upgradable"
rm "$R/etc/pv-drivers-not-upgradable"
wait_for 5 xs_absent attr/PVAddons/NotUpgradable \
    || die "NotUpgradable not removed after deleting the flag file"
say "flag file -> attr/PVAddons/NotUpgradable = 1 and back"
AGENT_ENV=""
in_root rw "" xe-guest-agent status --xenstore /run/xenstored/socket || die "xe-guest-agent status failed in the root"
kill -TERM "$(cat "$WORK/agent.pid")"
RC=0; wait "$AGENT_JOB" || RC=$?
[ $RC -eq 0 ] || { cat "$WORK/agent-rw.log"; die "agent exited $RC on SIGTERM"; }
grep -q STOPPING=1 "$NOTIFY_LOG" || die "no STOPPING=1 on SIGTERM"
say "notify messages: $(sort "$NOTIFY_LOG" | uniq -c | tr -s ' \n' ' ')"

step "read-only /: no capabilities, no_new_privs, MDWE; publishes and stays up"
xs_clear
start_notify_listener ro
AGENT_ENV="NOTIFY_SOCKET=@$NOTIFY_NAME WATCHDOG_USEC=2000000"
in_root ro "$WORK/agent-ro.pid" xe-guest-agent run --xenstore /run/xenstored/socket --log-level info > "$WORK/agent-ro.log" 2>&1 &
AGENT_JOB=$!; PIDS+=($AGENT_JOB)
AGENT_ENV=""
wait_for 15 grep -q READY=1 "$NOTIFY_LOG" || { cat "$WORK/agent-ro.log"; die "no READY=1 under a read-only root"; }
check_published "$WORK/show.json" || { cat "$WORK/agent-ro.log"; die "read-only root: XenStore does not hold what show printed"; }
APID=$(cat "$WORK/agent-ro.pid")
grep -E '^(CapEff|CapBnd|NoNewPrivs)' "/proc/$APID/status" | tr -s '\t\n' '  '; echo
grep -q '^CapEff:[[:space:]]*0000000000000000' "/proc/$APID/status" || die "the agent still has capabilities"
awk '$5 == "/" && $6 ~ /(^|,)ro(,|$)/ {found=1} END {exit !found}' "/proc/$APID/mountinfo" || die "/ is not read-only for the agent"
sleep 10
kill -0 "$APID" 2>/dev/null || { cat "$WORK/agent-ro.log"; die "the agent died under a read-only root"; }
xs rm "$HOME_XS/attr/PVAddons/MajorVersion"
wait_for 10 xs read "$HOME_XS/attr/PVAddons/MajorVersion" || die "read-only root: a removed key was not repaired"
PINGS=$(grep -c WATCHDOG=1 "$NOTIFY_LOG" || true)
[ "$PINGS" -ge 5 ] || die "only $PINGS watchdog pings in ~10 s (WATCHDOG_USEC=2s)"
say "up after 10 s, repaired a removed key, $PINGS watchdog pings"
kill -TERM "$APID"
RC=0; wait "$AGENT_JOB" || RC=$?
[ $RC -eq 0 ] || { cat "$WORK/agent-ro.log"; die "agent exited $RC on SIGTERM under a read-only root"; }
if grep -qiE 'traceback|read-only file system|EROFS' "$WORK/agent-ro.log"; then cat "$WORK/agent-ro.log"; die "errors in the agent's log"; fi
say "clean exit; log:"; sed 's/^/  /' "$WORK/agent-ro.log" | tail -n 15

step "systemd-analyze verify (installed unit, systemd + man-db added to the root)"
root_apt apt-get install -y -q --no-install-recommends systemd dbus man-db > "$WORK/root-apt.log" 2>&1 \
    || { tail -n 30 "$WORK/root-apt.log"; die "installing systemd in the root failed"; }
in_root rw "" systemd-analyze verify xe-guest-agent.service > "$WORK/verify.txt" 2>&1 || true
cat "$WORK/verify.txt"
[ ! -s "$WORK/verify.txt" ] || die "systemd-analyze verify is not clean"
say "systemd-analyze verify: clean"

step "the unit under real systemd (the root booted with systemd-nspawn)"
# The root's systemd as PID 1 runs the packaged unit with its whole sandbox (seccomp, namespaces,
# no capabilities, device policy). First as shipped: ConditionVirtualization=xen must skip it in a
# container; then with a drop-in that lifts the condition and points it at the test xenstored.
xs_clear
systemd-nspawn --quiet --register=no --keep-unit --console=read-only -D "$R" --bind="$XS:/run/xenstored" \
    --boot systemd.unit=multi-user.target < /dev/null > "$WORK/nspawn.log" 2>&1 &
NSPAWN=$!; PIDS+=($NSPAWN)
in_ct() { nsenter --target "$CT" --all -- "$@"; }
booted() { CT=$(pgrep -P "$NSPAWN" | head -n 1) && [ -n "$CT" ] &&
           case $(in_ct systemctl is-system-running 2>/dev/null) in running|degraded) true ;; *) false ;; esac; }
wait_for 90 booted || { tail -n 40 "$WORK/nspawn.log"; die "the container did not boot"; }
booted   # sets CT in this shell (wait_for ran it too, but keep it explicit)
say "booted: systemd $(in_ct systemctl --version | awk 'NR==1 {print $2}') as PID 1 of the root, virt=$(in_ct systemd-detect-virt || true)"
in_ct systemctl show xe-guest-agent -p UnitFileState -p ActiveState -p ConditionResult | tr '\n' ' '; echo
[ "$(in_ct systemctl show xe-guest-agent -p UnitFileState --value)" = enabled ] || die "the unit is not enabled"
[ "$(in_ct systemctl show xe-guest-agent -p ConditionResult --value)" = no ] || die "ConditionVirtualization=xen did not skip the unit"
! in_ct systemctl is-failed -q xe-guest-agent || die "the skipped unit counts as failed"
mkdir -p "$R/etc/systemd/system/xe-guest-agent.service.d"
printf '%s\n' '[Unit]' 'ConditionVirtualization=' '[Service]' 'ExecStart=' \
    'ExecStart=/usr/bin/xe-guest-agent run --xenstore /run/xenstored/socket --log-level info' \
    > "$R/etc/systemd/system/xe-guest-agent.service.d/ci.conf"
in_ct systemctl daemon-reload
in_ct systemctl start xe-guest-agent || { in_ct journalctl -b -u xe-guest-agent --no-pager | tail -n 30; die "systemctl start failed"; }
in_ct systemctl status --no-pager -l xe-guest-agent | head -n 12 || true
check_published "$WORK/show.json" || die "under systemd: XenStore does not hold what show printed"
MAINPID=$(in_ct systemctl show xe-guest-agent -p MainPID --value)
in_ct grep -E '^(CapEff|NoNewPrivs|Seccomp):' "/proc/$MAINPID/status" | tr -s '\t\n' '  '; echo
in_ct grep -q '^Seccomp:[[:space:]]*2' "/proc/$MAINPID/status" || die "no seccomp filter on the agent"
in_ct systemd-analyze security --no-pager xe-guest-agent.service | tail -n 1
in_ct systemctl reload xe-guest-agent || die "systemctl reload failed"
wait_for 10 sh -c "nsenter --target $CT --all -- journalctl -b -u xe-guest-agent --no-pager | grep -q 'configuration reloaded'" \
    || die "systemctl reload: the agent did not reload its configuration"
sleep 3
[ "$(in_ct systemctl show xe-guest-agent -p ActiveState --value)" = active ] || die "the agent did not stay up under systemd"
in_ct systemctl stop xe-guest-agent
[ "$(in_ct systemctl show xe-guest-agent -p Result --value)" = success ] || die "stop did not end in Result=success"
[ "$(in_ct systemctl show xe-guest-agent -p NRestarts --value)" = 0 ] || die "the agent was restarted"
in_ct journalctl -b -u xe-guest-agent --no-pager -o short | sed 's/^/  /' | tail -n 12
kill -TERM "$NSPAWN"; wait_for 30 sh -c "! kill -0 $NSPAWN" || kill -KILL "$NSPAWN"; wait "$NSPAWN" 2>/dev/null || true
rm -r "$R/etc/systemd/system/xe-guest-agent.service.d"

step "rpm payload in the root (vendored pyxs + inotify_simple, no python3-pyxs)"
root_apt dpkg --purge xe-guest-agent > /dev/null
for f in /usr/share/xe-guest-agent /etc/xe-guest-agent /etc/systemd/system/multi-user.target.wants/xe-guest-agent.service \
         /var/lib/systemd/deb-systemd-helper-enabled/xe-guest-agent.service.dsh-also; do
    [ ! -e "$R$f" ] && [ ! -L "$R$f" ] || die "dpkg --purge left $f behind"
done
say "dpkg --purge: no files, byte-code or enablement left"
root_apt dpkg --purge python3-pyxs > /dev/null
(cd "$R" && rpm2cpio "$TOP/$RPM" | cpio -idm --quiet) || die "cannot unpack the rpm"
OUT=$(in_root rw "" python3 -c 'import sys; sys.path[0] = "/usr/share/xe-guest-agent"
import pyxs, inotify_simple; print(pyxs.__file__, inotify_simple.__file__)') || die "vendored modules do not import"
say "$OUT"
OUT=$(in_root rw "" xe-guest-agent --version) && [ "$OUT" = "xe-guest-agent $VERSION" ] || die "rpm payload: --version failed"
xs_clear
in_root rw "$WORK/agent-rpm.pid" xe-guest-agent run --xenstore /run/xenstored/socket > "$WORK/agent-rpm.log" 2>&1 &
AGENT_JOB=$!; PIDS+=($AGENT_JOB)
wait_for 15 xs read "$HOME_XS/data/updated" || { cat "$WORK/agent-rpm.log"; die "rpm payload: nothing published"; }
check_published "$WORK/show.json" || { cat "$WORK/agent-rpm.log"; die "rpm payload: XenStore does not hold what show printed"; }
kill -TERM "$(cat "$WORK/agent-rpm.pid")"; RC=0; wait "$AGENT_JOB" || RC=$?
[ $RC -eq 0 ] || { cat "$WORK/agent-rpm.log"; die "rpm payload: agent exited $RC"; }
say "rpm payload publishes with its vendored pyxs"

step "summary"
say "deb: $DEB $(stat -c %s "$DEB") bytes; rpm: $RPM $(stat -c %s "$RPM") bytes"
say "exposure: $EXPOSURE; lintian: $LINTIAN_SUMMARY"
