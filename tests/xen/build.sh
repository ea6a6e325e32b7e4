#!/bin/bash
# Build everything needed to boot a real Xen 4.17 host (under QEMU) with a Debian bookworm PV dom0
# and a PV domU that runs the packaged xe-guest-agent.  Idempotent: each stage is skipped when its
# output exists and its inputs (hash recorded in a stamp) did not change.  FORCE=1 rebuilds all.
#
# Outputs in $OUT (default $XENBED/out, XENBED defaults to ${TMPDIR:-/tmp}/xen-host-lab):
#   xen            uncompressed Xen ELF (multiboot1) from xen-hypervisor-4.17-amd64
#   vmlinuz initrd.img   dom0 kernel/initrd (Debian linux-image-amd64, from the dom0 image)
#   dom0.img       ext4 root of dom0 (systemd, xen-utils-4.17, python3-pexpect)
#   domu.img       ext4 root of the domU (systemd, python3-click, python3-pyxs, xe-guest-agent deb)
#   payload.img    ext4 with the domU kernel/initrd, domU xl config and the test runner (vdc in dom0)
#   xe-guest-agent.deb   built from $SRC_REPO with `make deb`
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
B=${XENBED:-$TOP/.cache/xenbed}
OUT=${OUT:-$B/out}
SUITE=bookworm
MIRRORS=("deb http://deb.debian.org/debian bookworm main"
         "deb http://deb.debian.org/debian bookworm-updates main"
         "deb http://deb.debian.org/debian-security bookworm-security main")
mkdir -p "$B" "$OUT" "$B/cache"
T0=$(date +%s)
log() { printf '[build %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
stamp_ok() { [ -z "${FORCE:-}" ] && [ -f "$1" ] && [ -f "$1.stamp" ] && [ "$(cat "$1.stamp")" = "$2" ]; }
stamp_set() { echo "$2" > "$1.stamp"; }

# --- 0. host tools -------------------------------------------------------------------------------
need=()
for p in qemu-system-x86 qemu-utils mmdebstrap e2fsprogs debhelper dh-python python3-all \
         pybuild-plugin-pyproject python3-setuptools build-essential git; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- 1. Xen hypervisor ELF -----------------------------------------------------------------------
XENVER=$(apt-cache policy xen-hypervisor-4.17-amd64 | awk '/Candidate:/{print $2}')
if ! stamp_ok "$OUT/xen" "$XENVER"; then
  log "xen-hypervisor-4.17-amd64 $XENVER"
  d=$(mktemp -d); (cd "$d" && apt-get download -qq xen-hypervisor-4.17-amd64 2>/dev/null && dpkg-deb -x ./*.deb x)
  gunzip -c "$d"/x/boot/xen-4.17-amd64.gz > "$OUT/xen"
  cp "$d"/x/boot/xen-4.17-amd64.config "$OUT/xen.config"
  rm -rf "$d"; stamp_set "$OUT/xen" "$XENVER"
fi

# --- 2. the agent's .deb, built by `make deb` from the working tree ------------------------------
# Keyed on the tree's content (HEAD plus uncommitted changes), so an edit rebuilds it.
REV=$(cd "$TOP" && { git rev-parse HEAD; git diff HEAD -- xe_guest_agent packaging Makefile pyproject.toml;
                     git ls-files -o --exclude-standard xe_guest_agent packaging | xargs -r cat; } | sha256sum | cut -c1-16)
if ! stamp_ok "$OUT/xe-guest-agent.deb" "$REV"; then
  log "make deb (tree $REV)"
  (cd "$TOP" && make deb >/dev/null)
  cp "$TOP"/dist/xe-guest-agent_*_all.deb "$OUT/xe-guest-agent.deb"
  stamp_set "$OUT/xe-guest-agent.deb" "$REV"
fi

common_opts=(--variant=apt --mode=root --format=directory
  --aptopt='APT::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias')
BASE_PKGS=systemd,systemd-sysv,udev,dbus,kmod,iproute2,procps,less,python3,linux-image-amd64,initramfs-tools,zstd

# write a file into a rootfs: wr ROOT PATH <<EOF
wr() { mkdir -p "$(dirname "$1$2")"; cat > "$1$2"; }

common_config() {  # ROOT HOSTNAME ROOTDEV
  local r=$1
  echo "$2" > "$r/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$2" > "$r/etc/hosts"
  printf '%s / ext4 rw,errors=remount-ro 0 1\n' "$3" > "$r/etc/fstab"
  wr "$r" /etc/systemd/system/serial-getty@hvc0.service.d/autologin.conf <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I dumb
EOF
  # A shell that is easy to drive from a script: fixed prompt, no echo, no pager, no colours.
  wr "$r" /root/.bashrc <<'EOF'
export PS1='XBPROMPT# ' TERM=dumb PAGER=cat SYSTEMD_PAGER= SYSTEMD_COLORS=0 LC_ALL=C.UTF-8
stty -echo 2>/dev/null
EOF
  echo 'source /root/.bashrc' > "$r/root/.profile"
  # journald to the console too would be noise; keep it persistent for later reading.
  mkdir -p "$r/var/log/journal"
  rm -f "$r/etc/machine-id"; : > "$r/etc/machine-id"
}

mkimg() {  # DIR IMG SIZE_MB
  rm -f "$2.tmp"
  mkfs.ext4 -q -F -L "$(basename "$2" .img)" -d "$1" "$2.tmp" "${3}M"
  mv "$2.tmp" "$2"
}

# Bump a recipe number when its stage changes (images are cached on it; FORCE=1 rebuilds all).
DOMU_RECIPE=4
DOM0_RECIPE=4
# --- 3 and 4: the dom0 root is built beside the domU root (each about 2 min from scratch, mostly
# downloads and dpkg: side by side they take the time of one). Each has its own root and log.
build_dom0() {
KEY_DOM0="dom0-$DOM0_RECIPE"
if ! stamp_ok "$OUT/dom0.img" "$KEY_DOM0"; then
  log "mmdebstrap dom0"
  R=$B/cache/dom0-root; rm -rf "$R"
  mmdebstrap "${common_opts[@]}" --dpkgopt='path-exclude=/usr/share/doc/*' \
    --include="$BASE_PKGS,xen-utils-4.17,xen-utils-common,xenstore-utils,bridge-utils,python3-pexpect,e2fsprogs" \
    "$SUITE" "$R" "${MIRRORS[@]}" > "$B/cache/mmdebstrap-dom0.log" 2>&1
  common_config "$R" xenbed-dom0 /dev/vda
  # oxenstored's access log with reads and transactions too, unrotated: the restore figures name the
  # agent's first request in the new domain (the C xenstored's trace has whole seconds only).
  printf '%s\n' 'access-log-read-ops = true' 'access-log-transactions-ops = true' \
    'access-log-nb-lines = 5000000' >> "$R/etc/xen/oxenstored.conf"
  printf 'xen-evtchn\nxen-gntdev\nxen-gntalloc\nxen-blkback\nxen-netback\nxenfs\nxen-privcmd\nbridge\n' > "$R/etc/modules-load.d/xen.conf"
  wr "$R" /etc/systemd/system/xenbed-autotest.service <<'EOF'
[Unit]
Description=xenbed: run the scripted checks from /dev/vdc, then power off
ConditionKernelCommandLine=xenbed.autotest=1
After=multi-user.target xen.service
Wants=xen.service
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mkdir -p /xenbed && mount -o ro /dev/vdc /xenbed && exec /usr/bin/python3 /xenbed/run_tests.py'
ExecStopPost=/bin/systemctl --no-block poweroff
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=70min
[Install]
WantedBy=multi-user.target
EOF
  ln -sf /etc/systemd/system/xenbed-autotest.service "$R/etc/systemd/system/multi-user.target.wants/xenbed-autotest.service"
  # Which xenstored: xenbed.xenstored=c on the kernel command line picks the C daemon (with its
  # trace), anything else Debian's default, oxenstored (what XenServer and XCP-ng run).
  wr "$R" /usr/local/sbin/xenbed-pick-xenstored <<'EOF2'
#!/bin/sh
case " $(cat /proc/cmdline) " in
  *" xenbed.xenstored=c "*) printf '%s\n' 'XENSTORED=/usr/lib/xen-4.17/bin/xenstored' \
      'XENSTORED_ARGS="-T /var/log/xen/xenstored-trace.log"' >> /etc/default/xen ;;
esac
EOF2
  chmod +x "$R/usr/local/sbin/xenbed-pick-xenstored"
  wr "$R" /etc/systemd/system/xenbed-xenstored.service <<'EOF2'
[Unit]
Description=xenbed: pick the xenstored implementation from the kernel command line
DefaultDependencies=no
Before=xen.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/xenbed-pick-xenstored
[Install]
WantedBy=multi-user.target
EOF2
  ln -sf /etc/systemd/system/xenbed-xenstored.service "$R/etc/systemd/system/multi-user.target.wants/xenbed-xenstored.service"
  cp "$R"/boot/vmlinuz-* "$OUT/vmlinuz"; cp "$R"/boot/initrd.img-* "$OUT/initrd.img"
  dpkg-query --admindir="$R/var/lib/dpkg" -W > "$OUT/dom0-packages.txt"
  mkimg "$R" "$OUT/dom0.img" 2048
  rm -rf "$R"; stamp_set "$OUT/dom0.img" "$KEY_DOM0"
fi
}
build_dom0 & DOM0_PID=$!

# --- 3. domU root ----------------------------------------------------------------------------------
DOMU_BASE=$B/cache/domu-root
KEY_DOMU_BASE="domu-$DOMU_RECIPE"
if ! stamp_ok "$DOMU_BASE.tar" "$KEY_DOMU_BASE"; then
  log "mmdebstrap domU base"
  rm -rf "$DOMU_BASE"
  mmdebstrap "${common_opts[@]}" \
    --include="$BASE_PKGS,python3-click,python3-pyxs,strace" \
    "$SUITE" "$DOMU_BASE" "${MIRRORS[@]}" > "$B/cache/mmdebstrap-domu.log" 2>&1
  common_config "$DOMU_BASE" agentvm /dev/xvda
  # Under load blkfront can come after the initramfs's 30 s wait for the root disk, and the boot
  # drops to a shell. Not rootdelay=: Debian's init sleeps that long unconditionally before it
  # even looks (a 300 s delay made every boot take 340 s). The wait itself is made longer instead.
  sed -i 's/^\(\s*\)slumber=30$/\1slumber=300/' "$DOMU_BASE/usr/share/initramfs-tools/scripts/local"
  grep -q 'slumber=300' "$DOMU_BASE/usr/share/initramfs-tools/scripts/local"
  # Only the root disk's driver and file system in the initramfs, not Debian's every module
  # (MODULES=most, 30 MB): under TCG unpacking and probing those took half a minute of each boot.
  printf 'MODULES=list\n' > "$DOMU_BASE/etc/initramfs-tools/conf.d/xenbed"
  printf '%s\n' xen-blkfront ext4 crc32c_generic >> "$DOMU_BASE/etc/initramfs-tools/modules"
  chroot "$DOMU_BASE" update-initramfs -u -k all > "$B/cache/initramfs-domu.log" 2>&1
  # The emulated guest is about 190 times slower than the machine: give systemd's start jobs
  # time. The console's device took longer than its 90 s (no getty, no shell for the checks),
  # and the agent's start job came within seconds of its time-out. The agent's unit is unchanged.
  wr "$DOMU_BASE" /etc/systemd/system.conf.d/xenbed.conf <<'EOF'
[Manager]
DefaultTimeoutStartSec=15min
DefaultDeviceTimeoutSec=15min
EOF
  wr "$DOMU_BASE" /etc/systemd/system/dev-hvc0.device.d/xenbed.conf <<'EOF'
[Unit]
JobRunningTimeoutSec=infinity
EOF
  # What a test guest never needs and a slow boot pays for (timers of maintenance jobs, a VT getty).
  for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer e2scrub_all.timer \
           e2scrub_reap.service systemd-tmpfiles-clean.timer getty@tty1.service; do
    ln -sf /dev/null "$DOMU_BASE/etc/systemd/system/$u"
  done
  # eth0 (netfront; systemd 252 names it enX0) gets a static address; no DHCP, no RA.
  wr "$DOMU_BASE" /etc/systemd/network/50-vif.network <<'EOF'
[Match]
Driver=vif
[Network]
Address=192.0.2.10/24
LinkLocalAddressing=ipv6
IPv6AcceptRA=no
ConfigureWithoutCarrier=yes
EOF
  ln -sf /lib/systemd/system/systemd-networkd.service "$DOMU_BASE/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
  tar -C "$DOMU_BASE" -cf "$DOMU_BASE.tar.tmp" . && mv "$DOMU_BASE.tar.tmp" "$DOMU_BASE.tar"
  rm -rf "$DOMU_BASE"
  stamp_set "$DOMU_BASE.tar" "$KEY_DOMU_BASE"
fi
# AGENT_CONF: lines appended to the guest's /etc/xe-guest-agent/agent.conf (e.g. log_level = debug).
KEY_DOMU="$KEY_DOMU_BASE $REV $(printf %s "${AGENT_CONF:-}" | sha256sum | cut -c1-8)"
if ! stamp_ok "$OUT/domu.img" "$KEY_DOMU"; then
  log "domU image with the agent deb"
  R=$B/cache/domu-final; rm -rf "$R"; mkdir -p "$R"; tar -C "$R" -xf "$DOMU_BASE.tar"
  cp "$OUT/xe-guest-agent.deb" "$R/tmp/"
  printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
  # apt, as a user installs it (its dependencies are already in the base: nothing is downloaded).
  chroot "$R" env DEBIAN_FRONTEND=noninteractive apt-get install -y /tmp/xe-guest-agent.deb \
    > "$B/cache/apt-agent.log" 2>&1 || { cat "$B/cache/apt-agent.log"; exit 1; }
  [ -z "${AGENT_CONF:-}" ] || printf '%s\n' "$AGENT_CONF" >> "$R/etc/xe-guest-agent/agent.conf"
  rm -f "$R/usr/sbin/policy-rc.d" "$R/tmp/xe-guest-agent.deb"
  test -L "$R/etc/systemd/system/multi-user.target.wants/xe-guest-agent.service"
  mkdir -p "$B/cache/domu-boot"; cp "$R"/boot/vmlinuz-* "$B/cache/domu-boot/vmlinuz"; cp "$R"/boot/initrd.img-* "$B/cache/domu-boot/initrd.img"
  mkimg "$R" "$OUT/domu.img" 2048
  rm -rf "$R"; stamp_set "$OUT/domu.img" "$KEY_DOMU"
fi

wait "$DOM0_PID" || { log "building the dom0 image failed (log: $B/cache/mmdebstrap-dom0.log)"; exit 1; }

# --- 5. payload disk (cheap; always rebuilt) -----------------------------------------------------------
log "payload"
P=$B/cache/payload; rm -rf "$P"; mkdir -p "$P"
cp "$B/cache/domu-boot/vmlinuz" "$B/cache/domu-boot/initrd.img" "$P/"
cp "$HERE/run_tests.py" "$HERE/domu.cfg" "$P/"
# The host model (tests/hostmodel.py) and pyxs, so that dom0 computes the host's view as the tests do.
mkdir -p "$P/py/tests/lab"
cp -r "$TOP/packaging/vendor/pyxs" "$P/py/"
cp "$TOP/tests/__init__.py" "$TOP/tests/hostmodel.py" "$P/py/tests/"
cp "$TOP/tests/lab/__init__.py" "$TOP/tests/lab/quickread.py" "$TOP/tests/lab/trace.py" "$P/py/tests/lab/"
mkimg "$P" "$OUT/payload.img" 256
log "done: $(ls "$OUT" | grep -v stamp | tr '\n' ' ')"
