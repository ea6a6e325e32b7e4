#!/usr/bin/env bash
# Issue 5's proof: build the deb and the rpm from the checkout (only dist/ and /tmp writable), check
# the unit's sandbox (systemd-analyze security/verify) and the packages' files and scripts (lintian,
# dpkg-deb, rpm -qp), install the deb with apt into a fresh Debian 12 root, run it there against a
# real xenstored (keys checked from the host side), under a read-only / with no capabilities and
# W^X memory, and as the packaged unit under the root's own systemd (systemd-nspawn --boot), where a
# broken config must stop the unit without a restart loop. Issue 8's upgrade path: the deb installed
# over today's agent (a stand-in xe-guest-utilities package: none is in Debian's archive) replaces
# it in one apt run, in the chroot and under a running systemd; rpm -U of ours obsoletes a stand-in
# xe-guest-utilities-latest. Then the rpm's payload, installed with rpm, runs with its vendored
# modules on Python 3.6 with only click at the oldest version it declares (EL8's 6.7), through the
# launcher's EL8 path (/usr/libexec/platform-python), and on the root's Python 3.11. Issue 9's guest
# integration: the vCPU hot-add udev rule and the freeze-timeout tmpfiles.d entry of both packages,
# judged by the root's own udev (udevadm test of a CPU "add", in and out of a Xen guest) and
# systemd-tmpfiles against a stand-in /sys, and by the booted systemd. Prints the time of each
# step; exits non-zero with a FAIL: line on the first failure.
#
# Usage (root, Debian 12, from the checkout root): bash .ci/packaging.sh
# Caches in .cache/ (git-ignored): xen/ (xenstored), bookworm/ (bootstrapped root, apt's debs).
# Python 3.6: $PY36 (default ~/.pyenv/versions/3.6.15/bin/python3); click from PyPI, pinned to
# $CLICK_OLDEST (default 6.7: the rpm's `Requires: python3-click >= 6.7`).
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
CACHE=$TOP/.cache
WORK=$(mktemp -d /tmp/xe-guest-agent-ci.XXXXXX)
R=$WORK/root                        # the Debian root under test
XEN=$CACHE/xen
XSLIB=$XEN/root/usr/lib/x86_64-linux-gnu
TARGET_EXPOSURE=2.5
PY36=${PY36:-$HOME/.pyenv/versions/3.6.15/bin/python3}
CLICK_OLDEST=${CLICK_OLDEST:-6.7}
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
# $AGENT_ENV: extra VAR=value words for CMD's (otherwise empty) environment. $ROOT_BIND: host
# directories bind-mounted read-only at the same path inside the root (e.g. a Python prefix).
in_root() {
    local mode=$1 pidfile=$2; shift 2
    AGENT_ENV=${AGENT_ENV:-} ROOT_BIND=${ROOT_BIND:-} unshare --mount --fork --kill-child -- /bin/sh -euc '
        R=$1 XS=$2 MODE=$3 PIDFILE=$4; shift 4
        [ -z "$PIDFILE" ] || echo $$ > "$PIDFILE"
        for d in $ROOT_BIND; do mkdir -p "$R$d"; done
        if [ "$MODE" = ro ]; then           # before the API mounts, which stay writable as under systemd
            mount --bind "$R" "$R"          # (in case the root is not on the / file system)
            mount -o remount,bind,ro "$R"
            mount -o remount,bind,ro /
        fi
        for d in $ROOT_BIND; do mount --bind "$d" "$R$d"; mount -o remount,bind,ro "$R$d"; done
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

# same_show A.json B.json: the two `show --json` outputs agree (but the volatile meminfo_free).
same_show() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for d in (a, b): d.pop("data/meminfo_free", None)
sys.exit(a != b)
EOF
}

# start_agent NAME MODE: XenStore cleared, the installed agent started in the root (in_root MODE)
# with a notify socket; returns once it sent READY=1 and XenStore holds what `show` printed
# ($WORK/show.json). Sets AGENT_JOB, APID (the agent's PID) and AGENT_LOG.
start_agent() {
    local name=$1 mode=$2
    xs_clear
    start_notify_listener "$name"
    AGENT_LOG=$WORK/agent-$name.log
    AGENT_ENV="NOTIFY_SOCKET=@$NOTIFY_NAME WATCHDOG_USEC=2000000" in_root "$mode" "$WORK/agent-$name.pid" \
        xe-guest-agent run --xenstore /run/xenstored/socket --log-level info > "$AGENT_LOG" 2>&1 &
    AGENT_JOB=$!; PIDS+=($AGENT_JOB)
    wait_for 15 grep -q READY=1 "$NOTIFY_LOG" || { cat "$AGENT_LOG"; die "$name: no READY=1 from the agent within 15 s"; }
    wait_for 5 xs read "$HOME_XS/data/updated" || { cat "$AGENT_LOG"; die "$name: data/updated not written"; }
    check_published "$WORK/show.json" || { cat "$AGENT_LOG"; die "$name: XenStore does not hold what show printed"; }
    APID=$(cat "$WORK/agent-$name.pid")
}
# stop_agent: SIGTERM must end it with status 0 after STOPPING=1, and no traceback in its log.
stop_agent() {
    local rc=0
    kill -TERM "$APID"; wait "$AGENT_JOB" || rc=$?
    [ $rc -eq 0 ] || { cat "$AGENT_LOG"; die "agent exited $rc on SIGTERM"; }
    grep -q STOPPING=1 "$NOTIFY_LOG" || die "no STOPPING=1 on SIGTERM"
    if grep -qi traceback "$AGENT_LOG"; then cat "$AGENT_LOG"; die "traceback in the agent's log"; fi
}
# flag_roundtrip: the flag file created on a running guest -> NotUpgradable = 1 at once; removed -> gone.
flag_roundtrip() {
    touch "$R/etc/pv-drivers-not-upgradable"
    wait_for 5 xs_is attr/PVAddons/NotUpgradable 1 || die "NotUpgradable not published after creating the flag file"
    rm "$R/etc/pv-drivers-not-upgradable"
    wait_for 5 xs_absent attr/PVAddons/NotUpgradable || die "NotUpgradable not removed after deleting the flag file"
}

# Guest integration (issue 9), judged by the root's own udev and systemd-tmpfiles, each run
# chrooted in a private mount namespace on a tmpfs stand-in for /sys: nothing reaches the host's
# CPUs or its /sys/power. sd-device refuses a /sys that is not sysfs unless
# SYSTEMD_DEVICE_VERIFY_SYSFS=0 (its own test switch).
# udev_cpu XEN ONLINE: an "add" event for a CPU device (cpu1, its online attribute ONLINE) through
# every rule the root has (udevadm test), with /dev/xen/xenbus present (XEN=yes) or not (no);
# prints the online attribute afterwards. udevadm's debug output: $WORK/udev-XEN-ONLINE.log.
udev_cpu() {
    unshare --mount --fork -- /bin/sh -euc '
        R=$1 XEN=$2 ON=$3 LOG=$4 d=$1/sys/devices/system/cpu/cpu1
        mount -t tmpfs -o mode=0755 sys-standin "$R/sys"
        mkdir -p "$d" "$R/sys/bus/cpu/devices"
        ln -s ../../../../bus/cpu "$d/subsystem"
        : > "$d/uevent"; echo "$ON" > "$d/online"
        mount -t tmpfs -o mode=0755 dev-standin "$R/dev"
        if [ "$XEN" = yes ]; then mkdir "$R/dev/xen"; : > "$R/dev/xen/xenbus"; fi
        mount -t tmpfs -o mode=0755 run "$R/run"
        mount -t proc proc "$R/proc"
        chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_DEVICE_VERIFY_SYSFS=0 \
            udevadm test --action=add /devices/system/cpu/cpu1 > "$LOG" 2>&1
        cat "$d/online"' sh "$R" "$1" "$2" "$WORK/udev-$1-$2.log"
}
# tmpfiles_freeze MODE: the root's systemd-tmpfiles --create xe-guest-agent.conf (found where
# systemd looks) against /sys/power/pm_freeze_timeout = 20000 (the kernel's default) on a stand-in
# /sys mounted MODE rw or ro (as in a container); prints its exit status and the value afterwards.
tmpfiles_freeze() {
    unshare --mount --fork -- /bin/sh -euc '
        R=$1 MODE=$2 rc=0
        mount -t tmpfs -o mode=0755 sys-standin "$R/sys"
        mkdir "$R/sys/power"; echo 20000 > "$R/sys/power/pm_freeze_timeout"
        [ "$MODE" = rw ] || mount -o remount,ro "$R/sys"
        mount -t proc proc "$R/proc"
        chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin systemd-tmpfiles --create xe-guest-agent.conf >&2 || rc=$?
        echo "$rc $(cat "$R/sys/power/pm_freeze_timeout")"' sh "$R" "$1"
}

# ---------------------------------------------------------------------------------------------------
step "tools (apt)"
[ "$(id -u)" = 0 ] || die "run as root (apt, chroot, mount namespaces)"
[ -r /etc/debian_version ] || die "needs a Debian host"
NEED=(make build-essential dpkg-dev debhelper dh-python python3 lintian rpm rpmlint cpio mmdebstrap debian-archive-keyring
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

step "rpmlint (informational: Debian's generic profile wants Group, Packager, bz2 man pages)"
rpmlint "$RPM" > "$WORK/rpmlint.txt" 2>&1 || true
grep -E '^xe-guest-agent' "$WORK/rpmlint.txt" || true
# Accepted (packaging/README.md): unversioned Obsoletes without Provides, no signature/Group/Packager,
# SPDX names this profile does not know, gz man page, the /run marker removed in %posttrans.
ACCEPTED='obsolete-not-provided|no-signature|no-packager-tag|no-group-tag|invalid-license|manpage-not-compressed|no-manual-page-for-binary|only-non-binary-in-usr-lib|dangerous-command-in-%posttrans rm'
if grep -E '^xe-guest-agent[^:]*: [EW]: ' "$WORK/rpmlint.txt" | grep -vE "$ACCEPTED"; then die "rpmlint: findings beyond the accepted ones"; fi
RPMLINT_SUMMARY=$(tail -n 1 "$WORK/rpmlint.txt" | sed -e 's/^ *//' -e 's/; has taken.*//')
say "rpmlint: $RPMLINT_SUMMARY (all accepted)"

step "deb: contents and maintainer scripts"
dpkg-deb -c "$DEB" > "$WORK/deb.list"
for f in ./lib/systemd/system/xe-guest-agent.service ./usr/bin/xe-guest-agent ./etc/xe-guest-agent/agent.conf \
         ./usr/share/xe-guest-agent/xe_guest_agent/cli.py ./usr/share/xe-guest-agent/inotify_simple.py \
         ./usr/share/man/man8/xe-guest-agent.8.gz ./lib/udev/rules.d/60-xe-guest-agent.rules \
         ./usr/lib/tmpfiles.d/xe-guest-agent.conf; do
    grep -q " $f\$" "$WORK/deb.list" || die "$f missing from $DEB"
done
mkdir "$WORK/deb"; dpkg-deb -e "$DEB" "$WORK/deb/DEBIAN"; dpkg-deb -x "$DEB" "$WORK/deb"
cmp packaging/xe-guest-agent.service "$WORK/deb/lib/systemd/system/xe-guest-agent.service" || die "packaged unit differs from packaging/"
cmp packaging/xe-guest-agent.rules "$WORK/deb/lib/udev/rules.d/60-xe-guest-agent.rules" || die "packaged udev rule differs from packaging/"
cmp packaging/xe-guest-agent.tmpfiles "$WORK/deb/usr/lib/tmpfiles.d/xe-guest-agent.conf" || die "packaged tmpfiles.d entry differs from packaging/"
grep -q 'systemd-tmpfiles .*--create xe-guest-agent.conf' "$WORK/deb/DEBIAN/postinst" || die "postinst does not apply the tmpfiles.d entry"
grep -qx /etc/xe-guest-agent/agent.conf "$WORK/deb/DEBIAN/conffiles" || die "agent.conf is not a conffile"
grep -q "deb-systemd-helper enable 'xe-guest-agent.service'" "$WORK/deb/DEBIAN/postinst" || die "postinst does not enable the unit"
grep -q "deb-systemd-invoke \$_dh_action 'xe-guest-agent.service'" "$WORK/deb/DEBIAN/postinst" || die "postinst does not start the unit"
grep -q "deb-systemd-invoke stop 'xe-guest-agent.service'" "$WORK/deb/DEBIAN/prerm" || die "prerm does not stop the unit"
grep -q "deb-systemd-helper purge 'xe-guest-agent.service'" "$WORK/deb/DEBIAN/postrm" || die "postrm does not purge the unit state"
grep -q "py3compile -p xe-guest-agent /usr/share/xe-guest-agent" "$WORK/deb/DEBIAN/postinst" || die "postinst does not byte-compile"
dpkg-deb -f "$DEB" Depends | tee "$WORK/deb.depends"
for d in python3-click python3-pyxs; do grep -q "$d" "$WORK/deb.depends" || die "Depends lacks $d"; done
grep -q 'RestartPreventExitStatus=2' "$WORK/deb/lib/systemd/system/xe-guest-agent.service" || die "the unit lacks RestartPreventExitStatus=2"
for f in Conflicts Replaces; do
    say "$f: $(dpkg-deb -f "$DEB" $f)"
    for p in xe-guest-utilities xen-guest-agent; do
        [[ ",$(dpkg-deb -f "$DEB" $f | tr -d ' ')," == *",$p,"* ]] || die "$f lacks $p"
    done
done
for f in Homepage Vcs-Git Vcs-Browser Maintainer; do say "$f: $(dpkg-deb -f "$DEB" $f)"; done
[ -n "$(dpkg-deb -f "$DEB" Homepage)" ] || die "no Homepage"
[[ $(dpkg-deb -f "$DEB" Maintainer) != *example.* ]] || die "placeholder Maintainer address"
say "unit, udev rule, tmpfiles.d entry, conffile, postinst (enable+start, py3compile, tmpfiles), prerm (stop), postrm (purge): present"

step "rpm: file list and scriptlets"
rpm -qlp "$RPM" > "$WORK/rpm.list"
for f in /usr/lib/systemd/system/xe-guest-agent.service /usr/bin/xe-guest-agent /etc/xe-guest-agent/agent.conf \
         /usr/share/xe-guest-agent/pyxs/client.py /usr/share/xe-guest-agent/inotify_simple.py \
         /usr/lib/udev/rules.d/60-xe-guest-agent.rules /usr/lib/tmpfiles.d/xe-guest-agent.conf; do
    grep -qx "$f" "$WORK/rpm.list" || die "$f missing from rpm -qlp"
done
rpm -qlp "$RPM" | grep -E 'service|bin/|preset|rules|tmpfiles'
rpm -qp --scripts "$RPM" | tee "$WORK/rpm.scripts"
for s in postinstall preuninstall postuninstall; do grep -q "^$s scriptlet" "$WORK/rpm.scripts" || die "rpm has no $s scriptlet"; done
grep -q 'preset xe-guest-agent.service' "$WORK/rpm.scripts" || die "%post does not preset the unit"
grep -q 'disable --now xe-guest-agent.service' "$WORK/rpm.scripts" || die "%preun does not stop+disable the unit"
grep -q 'try-restart xe-guest-agent.service' "$WORK/rpm.scripts" || die "%postun does not restart the unit"
grep -q '^posttrans scriptlet' "$WORK/rpm.scripts" || die "rpm has no %posttrans (starts the agent after the obsoleted ones are gone)"
grep -q 'systemd-tmpfiles --create xe-guest-agent.conf' "$WORK/rpm.scripts" || die "%post does not apply the tmpfiles.d entry"
grep -q 'udevadm control --reload' "$WORK/rpm.scripts" || die "%post does not reload udev rules"
rpm -qp --requires "$RPM" > "$WORK/rpm.requires"
grep -qx "python3-click >= $CLICK_OLDEST" "$WORK/rpm.requires" || die "rpm does not require python3-click >= $CLICK_OLDEST"
grep -qx '(platform-python or python3 >= 3.6)' "$WORK/rpm.requires" || die "rpm does not accept EL8's platform-python or python3 >= 3.6"
! grep -E '^python3 >= 3\.([7-9]|1[0-9])' "$WORK/rpm.requires" || die "rpm requires a python3 newer than 3.6"
for t in obsoletes conflicts; do
    for p in xe-guest-utilities xe-guest-utilities-latest xen-guest-agent; do
        rpm -qp --$t "$RPM" > "$WORK/rpm.$t"; grep -qx "$p" "$WORK/rpm.$t" || die "rpm: no $t $p"
    done
done
say "requires: $(grep -v '^rpmlib\|^/bin/sh\|^config(' "$WORK/rpm.requires" | paste -sd ';')"
say "obsoletes + conflicts: $(rpm -qp --obsoletes "$RPM" | paste -sd ' ')"
rpm -qp --qf 'URL: %{URL}\nBugURL: %{BUGURL}\n' "$RPM"
mkdir -p "$WORK/rpmx"; (cd "$WORK/rpmx" && rpm2cpio "$TOP/$RPM" | cpio -idm --quiet ./usr/bin/xe-guest-agent \
    ./usr/lib/udev/rules.d/60-xe-guest-agent.rules ./usr/lib/tmpfiles.d/xe-guest-agent.conf)
cmp packaging/xe-guest-agent.rules "$WORK/rpmx/usr/lib/udev/rules.d/60-xe-guest-agent.rules" || die "the rpm's udev rule differs from packaging/"
# The rpm's entry is the deb's with plain "w": EL8's systemd-tmpfiles 239 rejects the "-" modifier.
grep -qx 'w /sys/power/pm_freeze_timeout - - - - 300000' "$WORK/rpmx/usr/lib/tmpfiles.d/xe-guest-agent.conf" \
    || die "the rpm's tmpfiles.d entry is not the plain-w freeze timeout line"
say "launcher: $(head -n 1 "$WORK/rpmx/usr/bin/xe-guest-agent")"
grep -q '/usr/libexec/platform-python' "$WORK/rpmx/usr/bin/xe-guest-agent" || die "the rpm launcher does not use EL8's platform-python"
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

# apt in the root, downloads cached in .cache/bookworm/archives (bind-mounted) across runs.
root_apt() {
    unshare --mount --fork -- /bin/sh -euc 'mount --bind "$1/archives" "$2/var/cache/apt/archives"; shift 2
        exec chroot "$0" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"' \
        "$R" "$CACHE/bookworm" "$R" "$@"
}

# make_stub_deb OUTFILE: a stand-in for the xe-guest-utilities deb that XenServer's and XCP-ng's
# guest-tools ISOs install (Go agent): the same package name and agent files (/usr/sbin/xe-daemon,
# /usr/sbin/xe-linux-distribution, the unit xe-linux-distribution.service), enabled in postinst and
# started when systemd runs; prerm stops it, postrm drops the enablement. Its daemon only sleeps.
make_stub_deb() {
    local d=$WORK/stub-deb
    rm -rf "$d"; mkdir -p "$d/DEBIAN" "$d/usr/sbin" "$d/lib/systemd/system"
    printf '%s\n' 'Package: xe-guest-utilities' 'Version: 8.4.0-1~ci' 'Architecture: all' \
        'Maintainer: CI stand-in <ci@localhost>' 'Section: admin' 'Priority: optional' \
        'Description: stand-in for the XenServer guest utilities (CI only)' \
        ' Same name and agent files as the xe-guest-utilities deb of the guest-tools ISO.' > "$d/DEBIAN/control"
    printf '%s\n' '#!/bin/sh' 'while :; do sleep 3600; done' > "$d/usr/sbin/xe-daemon"
    printf '%s\n' '#!/bin/sh' 'echo os_distro=debian' > "$d/usr/sbin/xe-linux-distribution"
    printf '%s\n' '[Unit]' 'Description=stand-in xe-linux-distribution (CI)' '[Service]' \
        'ExecStart=/usr/sbin/xe-daemon' '[Install]' 'WantedBy=multi-user.target' \
        > "$d/lib/systemd/system/xe-linux-distribution.service"
    printf '%s\n' '#!/bin/sh' 'set -e' 'mkdir -p /etc/systemd/system/multi-user.target.wants' \
        'ln -sf /lib/systemd/system/xe-linux-distribution.service /etc/systemd/system/multi-user.target.wants/' \
        'if [ -d /run/systemd/system ]; then systemctl daemon-reload; systemctl start xe-linux-distribution.service; fi' \
        > "$d/DEBIAN/postinst"
    printf '%s\n' '#!/bin/sh' 'if [ -d /run/systemd/system ]; then systemctl stop xe-linux-distribution.service || true; fi' \
        > "$d/DEBIAN/prerm"
    printf '%s\n' '#!/bin/sh' 'case "$1" in remove|purge) rm -f /etc/systemd/system/multi-user.target.wants/xe-linux-distribution.service ;; esac' \
        > "$d/DEBIAN/postrm"
    chmod 0755 "$d/DEBIAN/postinst" "$d/DEBIAN/prerm" "$d/DEBIAN/postrm" "$d/usr/sbin/"*
    dpkg-deb --root-owner-group -Zxz --build "$d" "$1" > /dev/null
}
# agent_units: the agents' unit files and enablement links present in the root (one line each;
# /lib is /usr/lib on a merged-/usr root).
agent_units() {
    local u d dirs="/usr/lib/systemd/system /etc/systemd/system /etc/systemd/system/multi-user.target.wants"
    [ -L "$R/lib" ] || dirs="/lib/systemd/system $dirs"
    for u in xe-guest-agent xe-linux-distribution xen-guest-agent; do
        for d in $dirs; do [ ! -e "$R$d/$u.service" ] && [ ! -L "$R$d/$u.service" ] || echo "$d/$u.service"; done
    done
}

step "today's agent installed in the root: xe-guest-utilities (stand-in unless Debian has one)"
root_apt apt-get update -qq > "$WORK/root-apt.log" 2>&1 || { cat "$WORK/root-apt.log"; die "apt-get update in the root failed"; }
root_apt apt-cache policy xe-guest-utilities | tee "$WORK/xgu-policy.txt"
STUB_DEB=$WORK/xe-guest-utilities_8.4.0-1~ci_all.deb
if grep -q 'Candidate: [0-9]' "$WORK/xgu-policy.txt"; then
    say "Debian's archive has xe-guest-utilities: installing it"
    root_apt apt-get install -y -q xe-guest-utilities > "$WORK/root-apt.log" 2>&1 \
        || { tail -n 30 "$WORK/root-apt.log"; die "apt-get install xe-guest-utilities failed"; }
else
    say "no xe-guest-utilities in Debian 12's archive (nor xe-guest-utilities-latest, xen-guest-agent): a stand-in deb"
    make_stub_deb "$STUB_DEB"
    dpkg-deb -c "$STUB_DEB" | awk '{print "  " $NF}' | grep -v '/$'
    cp "$STUB_DEB" "$R/tmp/"
    root_apt apt-get install -y -q "/tmp/$(basename "$STUB_DEB")" > "$WORK/root-apt.log" 2>&1 \
        || { tail -n 30 "$WORK/root-apt.log"; die "installing the stand-in xe-guest-utilities failed"; }
fi
chroot "$R" dpkg-query -W -f '${Package} ${Version} ${Status}\n' xe-guest-utilities
say "agent units before: $(agent_units | paste -sd ' ')"
[[ $(agent_units) == *xe-linux-distribution.service* ]] || die "xe-guest-utilities installed no xe-linux-distribution unit"

step "apt install ./$(basename "$DEB") in the root (Debian archive only), over xe-guest-utilities"
cp "$DEB" "$R/tmp/"
root_apt apt-get install -y -q "/tmp/$(basename "$DEB")" > "$WORK/root-apt.log" 2>&1 \
    || { grep -B3 -A12 -m2 -E '^(Setting up python3 |dpkg: error)' "$WORK/root-apt.log" | head -n 50; tail -n 15 "$WORK/root-apt.log"
         die "apt install of the deb failed in the fresh root"; }
grep -E '^(Setting up|Unpacking|Removing) (xe-guest-agent|xe-guest-utilities|python3-pyxs|python3-click)|REMOVED|^  xe-guest-utilities' "$WORK/root-apt.log" || true
chroot "$R" dpkg-query -W -f '${Package} ${Version} ${Status}\n' xe-guest-agent python3-pyxs python3-click python3
grep -q '^Removing xe-guest-utilities' "$WORK/root-apt.log" || die "apt did not remove xe-guest-utilities in the same run"
case $(chroot "$R" dpkg-query -W -f '${db:Status-Abbrev}' xe-guest-utilities 2>/dev/null) in
    ii*|iU*|iF*|hi*) die "xe-guest-utilities is still installed" ;;
esac
for f in /usr/sbin/xe-daemon /usr/sbin/xe-linux-distribution; do [ ! -e "$R$f" ] || die "$f is still there"; done
AGENT_UNITS=$(agent_units | paste -sd ' ')
say "agent units after: $AGENT_UNITS"
[ "$AGENT_UNITS" = "/usr/lib/systemd/system/xe-guest-agent.service /etc/systemd/system/multi-user.target.wants/xe-guest-agent.service" ] \
    || die "not exactly one agent unit left: $AGENT_UNITS"
# And it cannot come back beside ours: dpkg refuses it while xe-guest-agent is installed.
if [ -f "$STUB_DEB" ]; then
    if chroot "$R" dpkg -i "/tmp/$(basename "$STUB_DEB")" > "$WORK/stub-again.log" 2>&1; then
        cat "$WORK/stub-again.log"; die "dpkg installed xe-guest-utilities next to xe-guest-agent"
    fi
    grep -m1 -i 'conflict' "$WORK/stub-again.log" | sed 's/^/  /'
    [ "$(agent_units | paste -sd ' ')" = "$AGENT_UNITS" ] || die "the refused dpkg -i changed the units"
fi
say "one apt run: xe-guest-utilities removed (files, unit, enablement), xe-guest-agent the only agent"
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
same_show "$WORK/show.json" "$WORK/show-example.json" || die "the example agent.conf does not give the defaults"
say "example agent.conf ($(wc -l < "$R/tmp/example.conf") keys) = defaults"

step "in the root: real publish against xenstored, checked from the host"
start_agent rw rw
xs ls "$HOME_XS" | sed 's/^/  /'
say "all $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/show.json") keys of show are in XenStore"
flag_roundtrip
say "flag file -> attr/PVAddons/NotUpgradable = 1 and back"
in_root rw "" xe-guest-agent status --xenstore /run/xenstored/socket || die "xe-guest-agent status failed in the root"
stop_agent
say "notify messages: $(sort "$NOTIFY_LOG" | uniq -c | tr -s ' \n' ' ')"

step "read-only /: no capabilities, no_new_privs, MDWE; publishes and stays up"
start_agent ro ro
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
stop_agent
if grep -qiE 'read-only file system|EROFS' "$WORK/agent-ro.log"; then cat "$WORK/agent-ro.log"; die "errors in the agent's log"; fi
say "clean exit; log:"; sed 's/^/  /' "$WORK/agent-ro.log" | tail -n 15

step "systemd-analyze verify (installed unit, systemd + udev + man-db added to the root)"
root_apt apt-get install -y -q --no-install-recommends systemd dbus udev man-db > "$WORK/root-apt.log" 2>&1 \
    || { tail -n 30 "$WORK/root-apt.log"; die "installing systemd in the root failed"; }
in_root rw "" systemd-analyze verify xe-guest-agent.service > "$WORK/verify.txt" 2>&1 || true
cat "$WORK/verify.txt"
[ ! -s "$WORK/verify.txt" ] || die "systemd-analyze verify is not clean"
say "systemd-analyze verify: clean"

step "guest integration: vCPU rule and freeze timeout, by the root's udev and systemd-tmpfiles (stand-in /sys)"
# The installed rule parses (udev 252 has no "udevadm verify"; a bad line logs file:line) and, for
# a CPU's "add" event, writes online=1 only in a Xen guest and only for an offline CPU.
for c in "yes 0 1" "no 0 0" "yes 1 1"; do
    read -r XB ON WANT <<< "$c"
    LOG=$WORK/udev-$XB-$ON.log
    GOT=$(udev_cpu "$XB" "$ON") || { tail -n 20 "$LOG"; die "udevadm test failed in the root"; }
    grep -q '^Reading rules file: /usr/lib/udev/rules.d/60-xe-guest-agent.rules$' "$LOG" || die "udev does not read the rule"
    if grep '60-xe-guest-agent.rules' "$LOG" | grep -vE -e '^Reading rules file' -e "rules:[0-9]+ ATTR '/sys/devices/system/cpu/cpu1/online' writing '1'$"; then
        die "udev logged the lines above for the rule"
    fi
    WROTE=no; grep -qE "60-xe-guest-agent.rules:[0-9]+ ATTR .* writing '1'" "$LOG" && WROTE=yes
    say "  /dev/xen/xenbus: $XB, online $ON -> online $GOT (the rule wrote: $WROTE)"
    [ "$GOT" = "$WANT" ] || die "xenbus $XB, online $ON: online is $GOT afterwards, expected $WANT"
done
[ "$(grep -cE "60-xe-guest-agent.rules:[0-9]+ ATTR" "$WORK/udev-yes-1.log" "$WORK/udev-no-0.log" | awk -F: '{s += $2} END {print s}')" = 0 ] \
    || die "the rule wrote to an online CPU or outside Xen"
# The freeze timeout: written by systemd-tmpfiles --create, and not an error on a read-only /sys.
OUT=$(tmpfiles_freeze rw) && [ "$OUT" = "0 300000" ] || die "systemd-tmpfiles: '$OUT' (status, value), expected '0 300000'"
say "  systemd-tmpfiles --create xe-guest-agent.conf: pm_freeze_timeout 20000 -> ${OUT#* }"
OUT=$(tmpfiles_freeze ro 2>&1 | tail -n 1) && [ "$OUT" = "0 20000" ] || die "systemd-tmpfiles on a read-only /sys: '$OUT', expected '0 20000'"
say "  on a read-only /sys: exit status 0, value left alone"

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
# The boot's systemd-tmpfiles read the freeze timeout, and the container's read-only /sys did not
# fail it ("w-").
in_ct systemd-tmpfiles --cat-config 2>/dev/null | grep -qx 'w- /sys/power/pm_freeze_timeout - - - - 300000' \
    || die "systemd-tmpfiles --cat-config does not show the freeze timeout"
[ "$(in_ct systemctl show systemd-tmpfiles-setup.service -p Result --value)" = success ] \
    || { in_ct journalctl -b -u systemd-tmpfiles-setup --no-pager | tail -n 10; die "systemd-tmpfiles-setup.service failed in the container"; }
say "systemd-tmpfiles-setup.service: $(in_ct systemctl show systemd-tmpfiles-setup.service -p ActiveState --value), Result=success, freeze timeout in its config; failed units: $(in_ct systemctl list-units --failed --plain --no-legend | wc -l)"
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

step "under systemd: a broken config stops the unit, once, with its one-line reason (no restart loop)"
printf 'minor_version = two\n' > "$R/etc/xe-guest-agent/bad.conf"
printf '%s\n' '[Unit]' 'ConditionVirtualization=' '[Service]' 'ExecStart=' \
    'ExecStart=/usr/bin/xe-guest-agent run --xenstore /run/xenstored/socket --config /etc/xe-guest-agent/bad.conf' \
    > "$R/etc/systemd/system/xe-guest-agent.service.d/ci.conf"
in_ct systemctl daemon-reload
! in_ct systemctl start xe-guest-agent 2>/dev/null || die "systemctl start succeeded with a broken config"
INV=$(in_ct systemctl show xe-guest-agent -p InvocationID --value)
sleep 8   # RestartSec=5s: a restart would have happened by now
in_ct systemctl show xe-guest-agent -p ActiveState -p Result -p ExecMainStatus -p NRestarts | tr '\n' ' '; echo
[ "$(in_ct systemctl show xe-guest-agent -p ActiveState --value)" = failed ] || die "the unit is not failed after a config error"
[ "$(in_ct systemctl show xe-guest-agent -p ExecMainStatus --value)" = 2 ] || die "the agent did not exit 2 on a config error"
[ "$(in_ct systemctl show xe-guest-agent -p NRestarts --value)" = 0 ] || die "systemd restarted the agent after a config error (RestartPreventExitStatus=2)"
[ "$(in_ct systemctl show xe-guest-agent -p InvocationID --value)" = "$INV" ] || die "a new invocation ran after the config error"
in_ct journalctl -b --no-pager -o cat _SYSTEMD_UNIT=xe-guest-agent.service _SYSTEMD_INVOCATION_ID="$INV" > "$WORK/bad-conf.journal"
sed 's/^/  agent: /' "$WORK/bad-conf.journal"
[ "$(wc -l < "$WORK/bad-conf.journal")" = 1 ] || die "the agent logged $(wc -l < "$WORK/bad-conf.journal") lines for a config error, expected one"
grep -q "bad.conf:1: minor_version" "$WORK/bad-conf.journal" || die "the journal line does not name the file, line and key"
in_ct journalctl -b --no-pager -o cat -u xe-guest-agent | tail -n 3 | sed 's/^/  systemd: /'
in_ct systemctl reset-failed xe-guest-agent
rm "$R/etc/xe-guest-agent/bad.conf"
say "failed once (exit 2), NRestarts=0 after 8 s, one journal line"

step "under systemd: apt install over a running xe-guest-utilities replaces it in one step"
# Back to today's agent, running: ours purged, the stand-in installed and started by its postinst.
# The drop-in (condition lifted, test xenstored) stays, so ours really starts under systemd.
printf '%s\n' '[Unit]' 'ConditionVirtualization=' '[Service]' 'ExecStart=' \
    'ExecStart=/usr/bin/xe-guest-agent run --xenstore /run/xenstored/socket' \
    > "$R/etc/systemd/system/xe-guest-agent.service.d/ci.conf"
in_ct systemctl daemon-reload
in_ct dpkg --purge xe-guest-agent > /dev/null
xs_clear
if [ -f "$STUB_DEB" ]; then
    cp "$STUB_DEB" "$DEB" "$R/var/tmp/"   # the container's /tmp is its own tmpfs
    in_ct dpkg -i "/var/tmp/$(basename "$STUB_DEB")" > /dev/null || die "dpkg -i of the stand-in failed under systemd"
    in_ct systemctl is-active -q xe-linux-distribution || die "the stand-in's unit is not running"
    OLDPID=$(in_ct systemctl show -p MainPID --value xe-linux-distribution)
    say "before: xe-linux-distribution $(in_ct systemctl is-active xe-linux-distribution), pid $OLDPID (in the container)"
    JOURNAL_FROM=$(in_ct journalctl -b --no-pager -o cat -n 1 --show-cursor | sed -n 's/^-- cursor: //p')
    in_ct env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "/var/tmp/$(basename "$DEB")" > "$WORK/ct-apt.log" 2>&1 \
        || { tail -n 30 "$WORK/ct-apt.log"; die "apt install over the running stand-in failed"; }
    grep -E '^(Removing|Setting up) (xe-guest-utilities|xe-guest-agent)' "$WORK/ct-apt.log" | sed 's/^/  /'
    ! in_ct systemctl is-active -q xe-linux-distribution || die "xe-linux-distribution still runs"
    in_ct sh -c "[ ! -e /proc/$OLDPID ] && ! grep -qs 'xe-daemo[n]' /proc/[0-9]*/cmdline" || die "the old agent's process is still alive"
    in_ct systemctl is-active -q xe-guest-agent || die "xe-guest-agent is not running after the replacement"
    check_published "$WORK/show.json" || die "after the replacement: XenStore does not hold what show printed"
    in_ct journalctl -b --no-pager -o short-monotonic --after-cursor="$JOURNAL_FROM" _PID=1 \
        | grep -E 'xe-linux-distribution|Xen guest agent' | sed 's/^/  /' | tee "$WORK/ct-order.txt"
    STOPPED=$(grep -n 'Stopped xe-linux-distribution.service' "$WORK/ct-order.txt" | head -n 1 | cut -d: -f1 || true)
    STARTING=$(grep -n 'Starting xe-guest-agent.service' "$WORK/ct-order.txt" | head -n 1 | cut -d: -f1 || true)
    [ -n "$STOPPED" ] && [ -n "$STARTING" ] && [ "$STOPPED" -lt "$STARTING" ] \
        || die "the old agent was not stopped before ours started"
    say "after: xe-guest-utilities $(in_ct dpkg-query -W -f '${db:Status-Abbrev}' xe-guest-utilities 2>/dev/null || echo gone)," \
        "xe-guest-agent $(in_ct systemctl is-active xe-guest-agent); old stopped (journal line $STOPPED) before ours started ($STARTING)"
    in_ct systemctl stop xe-guest-agent
fi
kill -TERM "$NSPAWN"; wait_for 30 sh -c "! kill -0 $NSPAWN" || kill -KILL "$NSPAWN"; wait "$NSPAWN" 2>/dev/null || true
rm -r "$R/etc/systemd/system/xe-guest-agent.service.d"

step "rpm -U in the root: declared dependencies, obsoletes today's agent (stand-in xe-guest-utilities-latest)"
root_apt dpkg --purge xe-guest-agent > /dev/null
for f in /usr/share/xe-guest-agent /etc/xe-guest-agent /etc/systemd/system/multi-user.target.wants/xe-guest-agent.service \
         /var/lib/systemd/deb-systemd-helper-enabled/xe-guest-agent.service.dsh-also \
         /lib/udev/rules.d/60-xe-guest-agent.rules /usr/lib/tmpfiles.d/xe-guest-agent.conf; do
    [ ! -e "$R$f" ] && [ ! -L "$R$f" ] || die "dpkg --purge left $f behind"
done
say "dpkg --purge: no files, byte-code or enablement left"
root_apt dpkg --purge python3-pyxs > /dev/null
# make_stub_rpm NAME VERSION PROVIDES FILE...: a file-only noarch rpm; prints its path.
make_stub_rpm() {
    local name=$1 version=$2 provides=$3 top=$WORK/stub-rpm f; shift 3
    mkdir -p "$top"
    {
        printf '%s\n' "Name: $name" "Version: $version" 'Release: 1' 'Summary: CI stand-in' 'License: none' 'BuildArch: noarch'
        [ -z "$provides" ] || printf 'Provides: %s\n' "$provides"
        printf '%s\n' '%description' 'CI stand-in.' '%install'
        for f in "$@"; do printf 'mkdir -p %%{buildroot}%s && echo stub > %%{buildroot}%s\n' "$(dirname "$f")" "$f"; done
        printf '%s\n' '%files' "$@"
    } > "$top/$name.spec"
    HOME=$top rpmbuild -bb --define "_topdir $top" "$top/$name.spec" > "$top/$name.log" 2>&1 || { tail -n 20 "$top/$name.log" >&2; return 1; }
    echo "$top/RPMS/noarch/$name-$version-1.noarch.rpm"
}
# What EL8 gives the rpm (the rpm database of this root is otherwise empty): platform-python,
# python3-click at the oldest version the rpm accepts, /bin/sh for the scriptlets. And the agent
# EPEL ships today, with its files.
EL8_BASE=$(make_stub_rpm ci-el8-base 8.10 "platform-python = 3.6.8, python3-click = $CLICK_OLDEST, /bin/sh") || die "stub rpm build failed"
XGUL=$(make_stub_rpm xe-guest-utilities-latest 8.3.1 "" /usr/sbin/xe-daemon /usr/lib/systemd/system/xe-linux-distribution.service) \
    || die "stub rpm build failed"
root_rpm() { rpm --root "$R" --dbpath /var/lib/rpm "$@" 2> >(grep -v -e 'use Alien instead' -e 'you know what you are doing' >&2); }
root_rpm --initdb
root_rpm -i "$XGUL" || die "rpm -i of the stand-in xe-guest-utilities-latest failed"
# Without what it declares, rpm refuses it: its Requires are real.
if root_rpm -U --test "$TOP/$RPM" > "$WORK/rpm-nodeps.log" 2>&1; then die "rpm accepted the package with no python and no click"; fi
sed 's/^/  /' "$WORK/rpm-nodeps.log"
root_rpm -i "$EL8_BASE" || die "rpm -i of the EL8 stand-in failed"
root_rpm -Uvh "$TOP/$RPM" 2>&1 | tee "$WORK/rpm-U.log" || die "rpm -U of the package failed"
root_rpm -qa --qf '  %{NAME}-%{VERSION}-%{RELEASE}\n' | sort
! root_rpm -q xe-guest-utilities-latest > /dev/null || die "rpm -U did not obsolete xe-guest-utilities-latest"
for f in /usr/sbin/xe-daemon /usr/lib/systemd/system/xe-linux-distribution.service; do [ ! -e "$R$f" ] || die "$f is still there"; done
if root_rpm -i "$XGUL" > "$WORK/xgul-again.log" 2>&1; then die "rpm installed xe-guest-utilities-latest next to xe-guest-agent"; fi
sed 's/^/  /' "$WORK/xgul-again.log"
[ -L "$R/etc/systemd/system/multi-user.target.wants/xe-guest-agent.service" ] || die "%post (preset) did not enable the unit"
root_rpm -V xe-guest-agent || die "rpm -V: installed files differ from the package"
say "rpm -U: xe-guest-utilities-latest obsoleted in the same transaction, refused afterwards; enabled by the preset"
# The rpm's plain-w freeze timeout line, found and applied by the root's systemd-tmpfiles (252).
OUT=$(tmpfiles_freeze rw) && [ "$OUT" = "0 300000" ] || die "rpm: systemd-tmpfiles: '$OUT' (status, value), expected '0 300000'"
GOT=$(udev_cpu yes 0) && [ "$GOT" = 1 ] || die "rpm: the udev rule did not online the CPU"
say "rpm's tmpfiles.d entry: pm_freeze_timeout 20000 -> ${OUT#* }; its udev rule (/usr/lib/udev/rules.d): online 0 -> $GOT"

step "rpm payload on Python 3.6 with only click $CLICK_OLDEST (EL8's platform-python path)"
[ -x "$PY36" ] || die "no Python 3.6 at $PY36 (set PY36)"
PY36_PREFIX=$("$PY36" -c 'import sys; print(sys.base_prefix)')
# A venv with nothing but click (no pip, no setuptools, not the interpreter's own site-packages),
# standing in for EL8's /usr/libexec/platform-python + python3-click; the launcher must pick it.
rm -rf "$R/opt/py36"
"$PY36" -m venv --copies --without-pip "$R/opt/py36" || die "cannot make a Python 3.6 venv"
PY36_SITE=$R/opt/py36/lib/python3.6/site-packages
"$PY36" -m pip install -q --disable-pip-version-check --no-deps --target "$PY36_SITE" "click==$CLICK_OLDEST" \
    || die "pip install click==$CLICK_OLDEST failed"
# A wrapper, not a symlink: Python 3.6 finds its venv from the executable's own path.
mkdir -p "$R/usr/libexec"; printf '%s\n' '#!/bin/sh' 'exec /opt/py36/bin/python3 "$@"' > "$R/usr/libexec/platform-python"
chmod 0755 "$R/usr/libexec/platform-python"
ROOT_BIND=$PY36_PREFIX
OUT=$(in_root rw "" /usr/libexec/platform-python -c 'import sys, os, click; sp = [p for p in sys.path if p.endswith("site-packages")]
print(sys.version.split()[0], "click", click.__version__, "site-packages:", sp, sorted(os.listdir(sp[0])))') \
    || die "the 3.6 venv does not run in the root"
say "$OUT"
case $OUT in "3.6."*"click $CLICK_OLDEST "*"['click', 'click-$CLICK_OLDEST.dist-info']") ;; *) die "the 3.6 venv is not Python 3.6 with only click $CLICK_OLDEST" ;; esac
OUT=$(in_root rw "" xe-guest-agent --version) || die "rpm payload on 3.6: --version failed"
[ "$OUT" = "xe-guest-agent $VERSION" ] || die "rpm payload on 3.6: --version says '$OUT'"
say "$OUT"
in_root rw "" xe-guest-agent show || die "rpm payload on 3.6: show failed"
in_root rw "" xe-guest-agent show --json > "$WORK/show36.json" || die "rpm payload on 3.6: show --json failed"
same_show "$WORK/show.json" "$WORK/show36.json" || die "show on 3.6 differs from show on the deb (3.11)"
start_agent py36 rw
EXE=$(readlink "/proc/$APID/exe"); say "agent pid $APID runs ${EXE#"$R"}"
[ "${EXE#"$R"}" = /opt/py36/bin/python3 ] || die "the launcher did not pick /usr/libexec/platform-python (runs $EXE)"
flag_roundtrip
xs rm "$HOME_XS/attr/PVAddons/MajorVersion"
wait_for 10 xs read "$HOME_XS/attr/PVAddons/MajorVersion" || die "rpm payload on 3.6: a removed key was not repaired"
in_root rw "" xe-guest-agent status --xenstore /run/xenstored/socket > /dev/null || die "rpm payload on 3.6: status failed"
stop_agent
say "Python 3.6 + click $CLICK_OLDEST: --version, show (= the deb's), publish, flag file, repair, status, clean SIGTERM"
ROOT_BIND=""
rm "$R/usr/libexec/platform-python"

step "rpm payload on the root's python3 (3.11, Debian's click 8.1: the EL9/SUSE path), no python3-pyxs"
OUT=$(in_root rw "" python3 -c 'import sys; sys.path[0] = "/usr/share/xe-guest-agent"
import pyxs, inotify_simple; print(pyxs.__file__, inotify_simple.__file__)') || die "vendored modules do not import"
say "$OUT"
OUT=$(in_root rw "" xe-guest-agent --version) && [ "$OUT" = "xe-guest-agent $VERSION" ] || die "rpm payload: --version failed"
start_agent rpm311 rw
EXE=$(readlink "/proc/$APID/exe"); say "agent runs ${EXE#"$R"}"
stop_agent
say "rpm payload publishes with its vendored pyxs"

step "summary"
say "deb: $DEB $(stat -c %s "$DEB") bytes; rpm: $RPM $(stat -c %s "$RPM") bytes"
say "exposure: $EXPOSURE; lintian: $LINTIAN_SUMMARY; rpmlint: $RPMLINT_SUMMARY"
