#!/bin/bash
# Boot Xen 4.17 (Debian) under QEMU, with a PV dom0 that runs /xenbed/run_tests.py from the payload
# disk: it boots a PV domU with the packaged xe-guest-agent and checks what reaches XenStore.
# Prints the checks and timings; exits 0 only if every check passed.
#   ACCEL=tcg (default) | kvm     TIMEOUT=seconds (default 4500)     SKIP_BUILD=1: use out/ as is
# Images are attached with snapshot=on: a run never changes them.  Results: $RUN/results/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
B=${XENBED:-$(cd "$HERE/../.." && pwd)/.cache/xenbed}
OUT=${OUT:-$B/out}
RUN=${RUN:-$B/run/$(date +%Y%m%d-%H%M%S)}
ACCEL=${ACCEL:-tcg}
TIMEOUT=${TIMEOUT:-4500}
[ -n "${SKIP_BUILD:-}" ] || "$HERE/build.sh"
mkdir -p "$RUN"; ln -sfn "$RUN" "$B/run/latest"
rm -f "$RUN/results.img"; truncate -s 64M "$RUN/results.img"

case "$ACCEL" in
  # -smap/-smep: with them, TCG's emulation breaks the 64-bit PV dom0 at its first instruction
  # (#PF[0001] on its own stack, "domain_crash_sync ... create_bounce_frame").
  # -avx,-avx2: QEMU 7.2 TCG AVX emulation corrupted Python once (AttributeError importing enum).
  # -rdtscp: QEMU SVM has no NRIP save, Xen cannot emulate RDTSCP exits of a PVH guest ("SVM Insn len emulation failed").
  # -xsave*: with XSAVE, user processes of the guests (PV and PVH alike) and of dom0 died in most
  # boots on garbage pointers in libc (malloc, __cxa_finalize), while no kernel ever oopsed: their
  # register state did not survive Xen's context switches under QEMU 7.2's XSAVE emulation.
  # Without it Xen and the kernels use FXSAVE (tests/xen/README.md has the runs).
  # QEMU_CPU overrides the whole model; TCG_THREAD=multi|single.
  tcg) ACC=(-accel "tcg,thread=${TCG_THREAD:-multi}"
            -cpu "${QEMU_CPU:-max,-smap,-smep,-avx,-avx2,-rdtscp,-xsave,-xsaveopt,-xsavec,-xsaves}") ;;
  # /dev/kvm here is kvm_pvm (no VMX/SVM): QEMU needs -arch-capabilities, and Xen still dies with
  # "KVM internal error. Suberror: 1" before printing anything.
  kvm) ACC=(-enable-kvm -cpu host,-arch-capabilities) ;;
esac
XEN_ARGS="console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=1 dom0_vcpus_pin bootscrub=0 loglvl=all guest_loglvl=all console_timestamps=boot"
XENSTORED=${XENSTORED:-oxenstored}   # oxenstored | c
MODE=${MODE:-test}                   # test | demo | boots (BOOTS=N boots of the guest, timed)
TYPE=${TYPE:-pv}                     # the guest of boots and demo (and of test, whose migration is PVH): pv | pvh
DOM0_ARGS="root=/dev/vda rw console=hvc0 earlyprintk=xen xenbed.autotest=1 xenbed.xenstored=$XENSTORED xenbed.mode=$MODE xenbed.boots=${BOOTS:-10} xenbed.type=${TYPE:-pv} xenbed.accel=$ACCEL"
QEMU=(qemu-system-x86_64 "${ACC[@]}" -machine pc -m 3G -smp "${SMP:-2}" -display none -monitor none -serial stdio
  -no-reboot -nic none
  -kernel "$OUT/xen" -append "$XEN_ARGS"
  -initrd "$OUT/vmlinuz $DOM0_ARGS,$OUT/initrd.img"
  -drive "file=$OUT/dom0.img,if=virtio,format=raw,snapshot=on"
  -drive "file=$OUT/domu.img,if=virtio,format=raw,snapshot=on"
  -drive "file=$OUT/payload.img,if=virtio,format=raw,readonly=on"
  -drive "file=$RUN/results.img,if=virtio,format=raw")
printf '%q ' "${QEMU[@]}" > "$RUN/qemu-cmd.txt"

rc=0
python3 - "$RUN" "$TIMEOUT" "${QEMU[@]}" <<'EOF' || rc=$?
import json, os, re, subprocess, sys, time
run, timeout, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
t0 = time.time()
marks = {}
pats = {"xen_banner": r"\(XEN\) Xen version", "dom0_linux": r"Linux version", "dom0_systemd": r"systemd\[1\]|Welcome to",
        "dom0_ready": r"XENBED dom0-ready", "domu_created": r"domU agentvm is domid",
        "agent_published": r"CHECK \w+ agent published data/updated", "summary": r"XENBED-SUMMARY"}
p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
print("[boot] qemu pid %d" % p.pid, flush=True)
log = open(os.path.join(run, "serial.log"), "w")
summary = None
os.set_blocking(p.stdout.fileno(), True)
import selectors
sel = selectors.DefaultSelector(); sel.register(p.stdout, selectors.EVENT_READ)
buf = b""
while True:
    if time.time() - t0 > timeout:
        print("[boot] TIMEOUT after %d s: killing qemu %d" % (timeout, p.pid), flush=True)
        p.kill(); break
    if not sel.select(timeout=5):
        if p.poll() is not None: break
        continue
    chunk = os.read(p.stdout.fileno(), 65536)
    if not chunk:
        break
    buf += chunk
    *lines, buf = buf.split(b"\n")
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        el = time.time() - t0
        log.write("%8.2f %s\n" % (el, line)); log.flush()
        for k, pat in pats.items():
            if k not in marks and re.search(pat, line):
                marks[k] = round(el, 1)
        if "[xenbed" in line or line.startswith("(XEN) Xen version") or "Traceback" in line or "Kernel panic" in line:
            print("%7.1f %s" % (el, line), flush=True)
        m = re.search(r"XENBED-SUMMARY (\d+) passed, (\d+) failed", line)
        if m:
            summary = (int(m.group(1)), int(m.group(2)))
p.wait()
marks["qemu_exit"] = round(time.time() - t0, 1)
json.dump({"host_wallclock_s": marks, "summary": summary}, open(os.path.join(run, "boot-marks.json"), "w"), indent=1)
print("[boot] wall-clock marks (s since qemu start): %s" % json.dumps(marks), flush=True)
sys.exit(0 if summary and summary[1] == 0 and summary[0] > 0 else 1)
EOF
mkdir -p "$RUN/results"
tar -xf "$RUN/results.img" -C "$RUN/results" 2>/dev/null || echo "[boot] no results tar on results.img"
if [ -f "$RUN/results/checks.json" ]; then
  python3 -c "
import json,sys
c=json.load(open('$RUN/results/checks.json')); t=json.load(open('$RUN/results/timings.json'))
for r in c: print('%s  %s: %s' % ('PASS' if r['ok'] else 'FAIL', r['name'], r['detail'][:200]))
print('timings (in dom0):', json.dumps(t))
print('%d passed, %d failed' % (sum(r['ok'] for r in c), sum(not r['ok'] for r in c)))"
fi
echo "[boot] results in $RUN (exit $rc)"
exit $rc
