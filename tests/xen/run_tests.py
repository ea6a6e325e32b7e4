#!/usr/bin/python3
"""Runs in dom0 of the real Xen host (from the payload disk at /xenbed): boots the guest that runs
the packaged agent under systemd, drives it through everything a host does to a guest, and judges
each step from dom0 only (xenstore-ls/xenstore-watch, and the host model of tests/hostmodel.py
reading through dom0's xenstored socket).

Prints 'CHECK PASS|FAIL name: detail' per check, 'TIMING name value' per figure, and last
'N passed, N failed'. Everything it saw goes to /root/results, written as a tar onto /dev/vdd.

XENBED_MODE (kernel command line xenbed.mode=): test (the scenarios), demo (the host's view, the
flag flipped, the view again), boots (boot the guest N times, xenbed.boots=N, and time each;
xenbed.type=pvh boots it as PVH).
"""
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time

import pexpect

sys.path.insert(0, "/xenbed/py")   # pyxs and the host model, from the project
from pyxs import Client   # noqa: E402
from tests import hostmodel   # noqa: E402
from tests.lab import trace   # noqa: E402
from tests.lab.quickread import QuickReader   # noqa: E402

RES = "/root/results"
os.makedirs(RES, exist_ok=True)
T0 = time.time()
CFG = "/xenbed/domu.cfg"
NAME = "agentvm"
SOCKET = "/run/xenstored/socket"
CMDLINE = open("/proc/cmdline").read().split()
ARGS = dict(a.split("=", 1)[0:2] for a in CMDLINE if a.startswith("xenbed.") and "=" in a)
MODE = ARGS.get("xenbed.mode", "test")
results = []
timings = {}
RESUMES = []   # (label, domid, unpause time, wanted keys): figured from the access log at the end
MIGRATIONS = []   # (label, old domid, new domid, dom0's time of the complete view): checked at the end
ACCEL = ARGS.get("xenbed.accel", "tcg")
C_TRACE = "/var/log/xen/xenstored-trace.log"   # the C xenstored's -T trace (build.sh)
HOST_CPUS = 1   # Xen's CPUs, from host_facts()'s xl info
# What the agent owns, as dom0 reads it: the keys that must all come back after a restore.
VOLATILE = ("data/updated", "data/meminfo_free", "data/meminfo_total")
# Signs on the guest's console that the emulator broke the guest (QEMU TCG), not the agent.
BED_FAULT = re.compile(r"segfault at|Kernel panic|general protection fault|BUG: |Oops|invalid opcode")


def resume_bound(kind):
    """Seconds from the guest running again to the host's complete view. The promise is 1 s, and
    it is checked as 1 s where the guest runs at the machine's speed (ACCEL=kvm). Under QEMU's
    TCG a request on the guest's xenbus device takes about 0.1 s in a PV guest and 0.35 s in a
    PVH one, one at a time, and a resume is the agent's 26 requests among some 50 of the kernel's
    frontends reconnecting (oxenstored's access log): there the bound is what those requests can
    take, 30 s (PV) and 60 s (PVH). A defect like the ones this bed found (keys missing for
    150 s and more, or never back) still fails it."""
    return 1.0 if ACCEL == "kvm" else {"pv": 30.0, "pvh": 60.0}[kind]


def log(msg):
    print("[xenbed %7.1fs] %s" % (time.time() - T0, msg), flush=True)


def sh(cmd, timeout=300):
    try:
        p = subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=timeout)
        return p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        return 124, "timeout: %s" % e


def save(name, text):
    with open(os.path.join(RES, name), "w") as f:
        f.write(text)


def check(name, ok, detail=""):
    results.append({"name": name, "ok": bool(ok), "detail": str(detail)})
    log("CHECK %s %s: %s" % ("PASS" if ok else "FAIL", name, str(detail)[:600]))
    return ok


def timing(name, value):
    timings[name] = value
    log("TIMING %s %s" % (name, json.dumps(value)))


class Store:
    """dom0's reads, in this process over xenstored's socket (tests/lab/quickread.py). Not one
    xenstore-read, xenstore-ls or xl process per look: under TCG a process costs dom0 a tenth of a
    second of its one CPU, which the guest and xenstored then lack (a poll every 0.2 s slowed the
    restores it measured, and the guest's reboot to half speed)."""
    _local = threading.local()   # one connection per thread: the migration is followed in one

    @classmethod
    def q(cls):
        if getattr(cls._local, "q", None) is None:
            cls._local.q = QuickReader(SOCKET, timeout=30)
        return cls._local.q

    @classmethod
    def call(cls, fn, *args):
        try:
            return getattr(cls.q(), fn)(*args)
        except OSError:   # the connection broke (a time-out): once more on a new one
            cls._local.q = None
            return getattr(cls.q(), fn)(*args)


def xsread(path):
    return Store.call("read_many", [path])[0]


def xsls(domid):
    return sh("xenstore-ls -fp /local/domain/%s" % domid, timeout=60)[1]


def tree(root):
    """{path: value} of every node below `root` with a value, read level by level (one round trip
    to list a level, one to read it)."""
    out, level = {}, [root]
    while level:
        children = Store.call("list_many", level)
        for p, v in zip(level, Store.call("read_many", level)):
            if v:
                out[p] = v
        level = [p + "/" + c for p, cs in zip(level, children) for c in cs]
    return out


def guest_keys(domid):
    """{relative path: value} under the guest's home, as dom0 reads it."""
    pre = "/local/domain/%s/" % domid
    return {k[len(pre):]: v for k, v in tree(pre.rstrip("/")).items() if k.startswith(pre)}


def agent_keys(domid):
    """The agent's own keys (data/*, attr/*), less those that move on their own."""
    return {k: v for k, v in guest_keys(domid).items()
            if k.startswith(("data/", "attr/", "feature/hotplug/", "control/feature-balloon")) and v != "" and k not in VOLATILE}


def wait_keys(domid, want, timeout):
    """dom0's time when it read exactly `want` as the agent's keys; None on timeout. Event-driven:
    a watch on the home, and one look per burst of events, timed at the burst."""
    home = "/local/domain/%s/" % domid
    keys, values = list(want), list(want.values())
    c = Client(unix_socket_path=SOCKET)
    c.connect()
    m = c.monitor()
    m.watch(home.rstrip("/").encode(), b"keys")
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            try:
                m.events.get(timeout=min(1.0, max(0.01, deadline - time.time())))
            except queue.Empty:
                pass
            t = time.time()
            while not m.events.empty():   # the rest of the burst: one look for it all
                m.events.get_nowait()
            # The wanted keys in one round trip (a walk of the whole home took long enough under
            # TCG to make the figure late), then, once they are all there, the exact check.
            if Store.call("read_many", [home + k for k in keys]) == values and agent_keys(domid) == want:
                return t
        return None
    finally:
        c.close()


def key_diff(want, got):
    """What dom0 reads that differs from `want`: the keys missing or wrong, and those unexpected."""
    return {"missing or wrong": {k: (v, got.get(k)) for k, v in want.items() if got.get(k) != v},
            "unexpected": {k: v for k, v in got.items() if k not in want}}


def access_log(domid):
    """oxenstored's access log (every request, with the dom0 bed's read and transaction logging)
    of domain `domid`: [(time, operation, path)]. [] for the C xenstored (its trace has whole
    seconds only)."""
    import calendar
    out = []
    for name in sorted(os.listdir("/var/log/xen")):
        if not name.startswith("xenstored-access.log"):
            continue
        with open(os.path.join("/var/log/xen", name), errors="replace") as f:
            for line in f:
                m = re.match(r"^\[(\d{8}T\d\d:\d\d:\d\d)\.(\d{3})Z\]\s+D%s(?:\.\d+)?\s+(\S+(?: \S+)?)\s+(\S*)" % domid, line)
                if m:
                    t = calendar.timegm(time.strptime(m.group(1), "%Y%m%dT%H:%M:%S")) + int(m.group(2)) / 1000
                    out.append((t, m.group(3).strip(), m.group(4)))
    return sorted(out)


def resume_figures(label, dom, t, want):
    """Where the time from the unpause to the complete view went, from oxenstored's access log:
    the guest's kernel back on XenStore, the agent's first request in the new domain (its READ of
    domid) and the commit that completed the view. The first from either xenstored's log
    (kernel_back), the others from oxenstored's only (the C trace has whole seconds). Run at the end:
    oxenstored buffers its log. After a live migration the guest runs before `xl migrate` returns
    (11 s before it, once), so there xs_resume, not the unpause, is when the guest ran again."""
    home = "/local/domain/%s/" % dom
    log_ = access_log(dom)   # the whole life of the new domain (negative: before the unpause)
    # The kernel's xs_resume() registers every watch again, the agent's too: the domain's first
    # request of its own. The agent's first is its READ of domid.
    back = kernel_back(dom)
    xs_resume = round(back - t, 2) if back is not None else None
    agent = next((round(te - t, 2) for te, op, p in log_ if op == "read" and p in ("domid", home + "domid")
                  and xs_resume is not None and te - t >= xs_resume), None)
    # The commit that completed the view: the last of the wanted keys' first watch events.
    fired = {}
    for te, op, p in log_:
        if op == "w event" and p in want:
            fired.setdefault(p, te)
    commit = round(max(fired.values()) - t, 2) if len(fired) == len(want) else None
    timing("%s_unpause_to_kernel_xs_resume_s" % label, xs_resume)
    timing("%s_unpause_to_commit_s" % label, commit)
    if xs_resume is not None and commit is not None:
        timing("%s_kernel_xs_resume_to_commit_s" % label, round(commit - xs_resume, 2))
    timing("%s_unpause_to_agent_first_request_s" % label, agent)
    if agent is not None and commit is not None:
        requests = sum(1 for te, op, p in log_ if agent <= te - t <= commit and not op.startswith("w ")
                       and op not in ("newconn", "endconn"))
        timing("%s_agent_first_request_to_commit_s" % label, round(commit - agent, 2))
        timing("%s_requests_of_the_domain_meanwhile" % label, requests)


def new_domain(known, timeout):
    """The first domain dom0 sees that is not in `known`; None on timeout. Woken by
    @introduceDomain, and a look every second (the home may come before or after it)."""
    c = Client(unix_socket_path=SOCKET)
    c.connect()
    m = c.monitor()
    m.watch(b"@introduceDomain", b"new")
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            doms = [d for d in Store.call("list_many", ["/local/domain"])[0] if d not in known]
            if doms:
                return doms[0]
            try:
                m.events.get(timeout=1.0)
            except queue.Empty:
                pass
        return None
    finally:
        c.close()


def kernel_back(dom):
    """dom0's time of the first request of domain `dom`'s kernel after its resume, from xenstored's
    own log: xs_resume() registers every watch again before anything else the guest sends. The
    earliest sign dom0 has that the guest runs. oxenstored's access log has milliseconds, the C
    xenstored's trace whole seconds (rounded down: the bound then counts up to 1 s more)."""
    if os.path.exists(C_TRACE):
        return next((t for t, op, args in trace.requests_at(C_TRACE, dom) if op == "WATCH"), None)
    return next((t for t, op, p in access_log(dom) if op == "watch"), None)


def migration_checks():
    """The complete view after each live migration, from the guest running (its kernel's xs_resume
    in xenstored's log, which oxenstored buffers until the end of the run)."""
    for label, old, new, done in MIGRATIONS:
        back = kernel_back(new)
        took = round(done - back, 2) if back else None
        timing("%s_migrate_kernel_xs_resume_to_complete_view_s" % label.lower(), took)
        check("%s: every key back after live migration, complete view within %g s of the guest running "
              "(its kernel's xs_resume; domid %s -> %s)" % (label, resume_bound("pvh"), old, new),
              took is not None and took <= resume_bound("pvh"),
              took if took is not None else "no request of domain %s in xenstored's log" % new)


def host_view(domid):
    """What xenopsd makes of the guest's tree now (tests/hostmodel.py, reading as dom0)."""
    r = hostmodel.CurrentReader(SOCKET, int(domid))
    try:
        return r.view
    finally:
        r.close()


class Watch:
    """xenstore-watch PATH in the background; every event stamped with dom0's clock. wait() sleeps
    until an event comes (a condition its reader thread notifies): a 10 ms poll cost dom0 a hundred
    wake-ups a second, each a switch of the emulated CPU that the guest then waits for."""

    def __init__(self, path):
        self.events = []
        self.cv = threading.Condition()
        self.p = subprocess.Popen(["stdbuf", "-oL", "xenstore-watch", path], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        with self.cv:   # the first event: registered
            self.cv.wait_for(lambda: self.events, timeout=10)

    def _read(self):
        for line in self.p.stdout:
            with self.cv:
                self.events.append((time.time(), line.strip()))
                self.cv.notify_all()

    def wait(self, cond, since, timeout, path=None):
        """dom0's time of the first event after `since` (on a path `path` accepts) after which
        cond() holds; None on timeout."""
        deadline = time.time() + timeout
        i = 0
        while True:
            with self.cv:
                self.cv.wait_for(lambda: i < len(self.events), timeout=max(0, deadline - time.time()))
                batch = self.events[i:]
            i += len(batch)
            for t, p in batch:
                p = p.split()[0] if p else p
                if t >= since and (path is None or path(p)) and cond():
                    return t
            if time.time() >= deadline:
                return None

    def close(self):
        self.p.kill()
        self.p.wait()


class Console:
    """The guest's hvc0 through `xl console`: an autologin root shell, prompt XBPROMPT#, no echo."""

    def __init__(self, dom):
        self.n = 0
        self.p = pexpect.spawn("xl", ["console", str(dom)], encoding="utf-8", codec_errors="replace", timeout=60)
        self.p.logfile_read = open(os.path.join(RES, "domu-console.log"), "a")

    def wait_shell(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.p.send("\r")
            i = self.p.expect(["XBPROMPT# ", "login: ", pexpect.TIMEOUT, pexpect.EOF], timeout=5)
            if i == 0:
                return self.run("stty -echo; echo ok", timeout=30)[1].strip().endswith("ok")
            if i == 3:
                return False
        return False

    def send(self, cmd):
        self.p.send(cmd + "\r")

    def run(self, cmd, timeout=120):
        self.n += 1
        tok = "XBEND%d" % self.n
        # The marker is split in the command so that an echoed command never matches it.
        self.p.send("%s; echo \"XBE\"\"ND%d rc=$?\"\r" % (cmd, self.n))
        try:
            self.p.expect(r"%s rc=(\d+)" % tok, timeout=timeout)
        except pexpect.TIMEOUT:
            return 124, self.p.before.replace("\r", "").replace("XBPROMPT# ", "")
        out = self.p.before.replace("\r", "").replace("XBPROMPT# ", "")
        return int(self.p.match.group(1)), out

    def close(self):
        try:
            self.p.sendcontrol("]")
            self.p.close(force=True)
        except Exception:
            pass


def domid_of(name=NAME):
    doms = Store.call("list_many", ["/local/domain"])[0]
    names = Store.call("read_many", ["/local/domain/%s/name" % d for d in doms])
    return next((d for d, n in zip(doms, names) if n == name), None)


def stream_console():
    """Copy the guest's console (xenconsoled's log) to our output as it grows, so that the serial
    log of the whole run shows what the guest printed, live, next to the checks."""
    path, pos = "/var/log/xen/console/guest-%s.log" % NAME, 0
    while True:
        try:
            size = os.path.getsize(path)
            if size < pos:
                pos = 0
            if size > pos:
                with open(path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read(size - pos)
                pos += len(chunk)
                for line in chunk.decode("utf-8", "replace").splitlines():
                    print("[guest] " + line.rstrip("\r"), flush=True)
        except OSError:
            pass
        time.sleep(0.5)


def console_log():
    try:
        with open("/var/log/xen/console/guest-%s.log" % NAME, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def bed_fault(dom, console_mark):
    """What shows that QEMU's emulation, not the agent, broke the guest: a crash on its console, or
    the domain gone (a triple fault makes Xen reboot a PVH guest into a new domain)."""
    m = BED_FAULT.search(console_log()[console_mark:])
    if m:
        return "%r on the console" % m.group(0)
    if domid_of() != dom:
        triple = "d%sv0 Triple fault" % dom in sh("xl dmesg")[1]
        return "domain %s %s" % (dom, "triple-faulted (Xen rebooted it)" if triple else "gone")
    return None


def boot(cfg, label, timeout=600, tries=3):
    """Create the guest paused, unpause it, and wait for the agent's first data/updated.
    Returns (domid, seconds) or (domid, None). A boot that the emulator broke (the guest's console
    shows a crash of the kernel or of systemd) is retried: that is the bed, not the agent."""
    for attempt in range(1, tries + 1):
        sh("xl destroy %s 2>/dev/null" % NAME)
        console_mark = len(console_log())
        rc, out = sh("xl create -p %s" % cfg)
        if rc != 0:
            check("%s: xl create -p" % label, False, out.strip()[-300:])
            return None, None
        dom = domid_of()
        home = "/local/domain/%s" % dom
        w = Watch(home + "/data/updated")
        t = time.time()
        sh("xl unpause %s" % NAME)
        log("%s: domid %s created and unpaused (attempt %d)" % (label, dom, attempt))
        te, end, fault = None, t + timeout, None
        while te is None and time.time() < end:
            te = w.wait(lambda: xsread(home + "/data/updated") is not None, t, 5)
            if te is not None:
                break
            fault = bed_fault(dom, console_mark)
            if fault and fault.startswith("domain"):
                break   # the domain itself is gone: nothing will publish there
            if fault and end > time.time() + 120:
                # A process of the guest's boot crashed: the boot may still come up (a generator
                # that died costs little), so wait a while longer, but not the whole timeout.
                end = time.time() + 120
        w.close()
        if te is not None:
            log("%s: domid %s, first publish %.1f s after unpause (attempt %d)" % (label, dom, te - t, attempt))
            return dom, round(te - t, 2)
        save("console-%s-%d.txt" % (label.replace(" ", "-"), attempt), console_log()[console_mark:])
        if fault:
            log("%s: the emulator broke this boot (%s)%s" % (label, fault, ": booting again" if attempt < tries else ""))
            timings.setdefault("bed_faults", []).append("%s: %s" % (label, fault))
            if attempt < tries:
                continue
        save("xs-%s-unpublished.txt" % label.replace(" ", "-"), xsls(dom))
        con = Console(dom)
        if con.wait_shell(120):
            # Where the agent is: its unit, its journal, its descriptors, its kernel stack, and what
            # it does for a few seconds (strace is in the guest image for this).
            diag = con.run(
                "systemctl status xe-guest-agent --no-pager -l; journalctl -b -u xe-guest-agent --no-pager "
                "-o short-precise | tail -80; ls -l /dev/xen; P=$(systemctl show -p MainPID --value xe-guest-agent); "
                "echo pid $P; ls -l /proc/$P/fd; for t in /proc/$P/task/*; do echo $t $(cat $t/wchan); cat $t/stack; done; "
                "timeout 8 strace -f -tt -p $P 2>&1 | tail -40; dmesg | tail -30", timeout=180)[1]
            save("domu-%s-unpublished.txt" % label.replace(" ", "-"), diag)
            for line in diag.splitlines()[-200:]:
                log("unpublished: " + line)
        con.close()
        return dom, None
    return None, None


# -- scenarios ----------------------------------------------------------------------------------

def host_facts():
    for i in range(120):
        if xsread("/local/domain/0/name") is not None and sh("pgrep -x xenconsoled")[0] == 0:
            break
        if i == 10:
            log("xen services not up yet, starting xen.service")
            sh("systemctl start xen")
        time.sleep(1)
    # The guest's console in a file, to tell a broken boot from a broken agent.
    sh("pkill -x xenconsoled; sleep 0.5; mkdir -p /var/log/xen/console; "
       "/usr/lib/xen-4.17/bin/xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console")
    threading.Thread(target=stream_console, daemon=True).start()
    global HOST_CPUS
    rc, info = sh("xl info")
    save("xl-info.txt", info)
    HOST_CPUS = int(re.search(r"nr_cpus\s*:\s*(\d+)", info).group(1))
    check("xl info", rc == 0 and "xen_version" in info,
          " ".join(l.strip() for l in info.splitlines() if re.match(r"(xen_version|xen_caps|total_memory|nr_cpus)\b", l)))
    daemon = sh("ps -eo args | grep -E '[x]enstored' | head -1")[1].strip()
    want = "bin/xenstored" if ARGS.get("xenbed.xenstored") == "c" else "oxenstored"
    check("xenstored is %s" % want, want in daemon, daemon)
    timings["xenstored"] = daemon
    sh("ip link add xenbr0 type bridge 2>/dev/null; ip link set xenbr0 up")   # no uplink: nothing leaves dom0
    return want


GUEST = {
    "hyp_type": "cat /sys/hypervisor/type",
    "detect_virt": "systemd-detect-virt",
    "uname": "uname -r",
    "meminfo": "head -3 /proc/meminfo",
    "ifaces": "for i in /sys/class/net/*; do echo \"$(basename $i) $(cat $i/device/nodename 2>/dev/null)\"; done",
    "unit_show": "systemctl show xe-guest-agent -p ActiveState -p SubState -p MainPID -p NRestarts -p Result",
    "fds": "P=$(systemctl show -p MainPID --value xe-guest-agent); ls -l /proc/$P/fd; grep -E 'CapEff|NoNewPrivs|Seccomp' /proc/$P/status",
    "unit_diff": "echo \"dropins=[$(systemctl show -p DropInPaths --value xe-guest-agent)] $(systemctl show -p FragmentPath xe-guest-agent)\"",
    "agent_status": "xe-guest-agent status",
    "version": "xe-guest-agent --version; dpkg-query -W xe-guest-agent python3-pyxs python3-click",
    "freeze": "cat /sys/power/pm_freeze_timeout",
    "startup": "journalctl -b -u xe-guest-agent -o short-monotonic --no-pager | head -40",
}


def guest_checks(dom, con):
    g = {k: con.run(c, timeout=120)[1].strip() for k, c in GUEST.items()}
    save("domu-facts.json", json.dumps(g, indent=1))
    check("unit active (running), never restarted", "ActiveState=active" in g["unit_show"]
          and "NRestarts=0" in g["unit_show"], g["unit_show"].replace("\n", " "))
    check("the agent holds /dev/xen/xenbus under the shipped unit's sandbox",
          "/dev/xen/xenbus" in g["fds"] and re.search(r"CapEff:\s+0+\b", g["fds"]) and "Seccomp:\t2" in g["fds"],
          g["fds"][-300:])
    check("the unit runs as shipped (no drop-in)", "dropins=[]" in g["unit_diff"]
          and re.search(r"FragmentPath=(/usr)?/lib/systemd/system/xe-guest-agent.service", g["unit_diff"]), g["unit_diff"])
    check("the package's tmpfiles.d entry set pm_freeze_timeout = 300000", g["freeze"] == "300000", g["freeze"])
    log("guest: %s; %s" % (g["version"].replace("\n", "; "), g["uname"]))
    for line in g["startup"].splitlines():
        log("agent journal: " + line)
    return g


def keys_at_boot(dom, g):
    keys = guest_keys(dom)
    save("xs-boot.json", json.dumps(keys, indent=1, sort_keys=True))
    exp = {"attr/PVAddons/MajorVersion": "1", "attr/PVAddons/MinorVersion": "0",
           "attr/PVAddons/MicroVersion": "0", "attr/PVAddons/BuildVersion": "0",
           "attr/PVAddons/Installed": "1", "data/os_distro": "debian", "data/os_majorver": "12",
           "data/os_name": "Debian GNU/Linux 12 (bookworm)", "attr/vif/0/ipv4/0": "192.0.2.10",
           "data/os_uname": g["uname"].splitlines()[-1], "data/host_name_dns": "agentvm",
           "feature/hotplug/vif": "1", "feature/hotplug/vbd": "1"}
    bad = {k: (keys.get(k), v) for k, v in exp.items() if keys.get(k) != v}
    check("keys at boot", not bad, bad or "%d keys" % len(exp))
    mt = re.search(r"MemTotal:\s+(\d+)", g["meminfo"])
    check("data/meminfo_total is the guest's MemTotal", mt and keys.get("data/meminfo_total") == mt.group(1),
          "%s vs %s" % (keys.get("data/meminfo_total"), mt and mt.group(1)))
    check("no NotUpgradable without the flag file", "attr/PVAddons/NotUpgradable" not in keys)
    view = host_view(dom)
    save("host-view-boot.json", json.dumps(view, indent=1, sort_keys=True, default=str))
    check("the host model sees the PV drivers, the OS and the VIF",
          view.get("pv_drivers_version") and view.get("os_version") and view.get("networks"), view)


def flag(dom, con, label="flag", rounds=3):
    """Created, removed, atomically replaced (rename over it): each seen in dom0."""
    home = "/local/domain/%s" % dom
    nu = home + "/attr/PVAddons/NotUpgradable"
    w = Watch(home + "/attr/PVAddons")
    on, off, repl = [], [], []
    try:
        for _ in range(rounds):
            t = time.time()
            con.send("touch /etc/pv-drivers-not-upgradable")
            te = w.wait(lambda: xsread(nu) == "1", t, 30, path=lambda p: p == nu)
            on.append(round(te - t, 3) if te else None)
            con.run("true")
            t = time.time()
            con.send("echo new > /etc/pv-drivers-not-upgradable.tmp && mv /etc/pv-drivers-not-upgradable.tmp /etc/pv-drivers-not-upgradable")
            te = w.wait(lambda: True, t, 2, path=lambda p: p == nu)   # nothing should happen
            repl.append(te is None and xsread(nu) == "1")
            con.run("true")
            t = time.time()
            con.send("rm -f /etc/pv-drivers-not-upgradable")
            te = w.wait(lambda: xsread(nu) is None, t, 30, path=lambda p: nu.startswith(p))
            off.append(round(te - t, 3) if te else None)
            con.run("true")
    finally:
        w.close()
    timing("%s_create_to_dom0_s" % label, on)
    timing("%s_remove_to_dom0_s" % label, off)
    check("%s: created -> NotUpgradable = 1 in dom0" % label, all(x is not None for x in on), on)
    check("%s: atomically replaced -> still 1, no flap" % label, all(repl), repl)
    check("%s: removed -> NotUpgradable gone" % label, all(x is not None for x in off), off)


def addresses(dom, con, ifname):
    home = "/local/domain/%s" % dom
    w = Watch(home + "/attr/vif")
    k4 = home + "/attr/vif/0/ipv4/1"
    got = {}
    try:
        for name, cmd, cond, path in (
                ("ipv4_add", "ip addr add 192.0.2.11/24 dev %s" % ifname, lambda: xsread(k4) == "192.0.2.11", lambda p: p == k4),
                ("ipv4_del", "ip addr del 192.0.2.11/24 dev %s" % ifname, lambda: xsread(k4) is None, lambda p: k4.startswith(p)),
                ("ipv6_add", "ip -6 addr add 2001:db8::10/64 dev %s nodad" % ifname,
                 lambda: "2001:db8::10" in tree(home + "/attr/vif/0").values(), lambda p: "/ipv6" in p),
                ("ipv6_del", "ip -6 addr del 2001:db8::10/64 dev %s" % ifname,
                 lambda: "2001:db8::10" not in tree(home + "/attr/vif/0").values(), lambda p: "/ipv6" in p or p.endswith("/0"))):
            t = time.time()
            con.send(cmd)
            te = w.wait(cond, t, 30, path=path)
            got[name] = round(te - t, 3) if te else None
            con.run("true")
    finally:
        w.close()
    timing("address_to_dom0_s", got)
    check("ip addr add/del (IPv4, IPv6) on the real VIF -> attr/vif/0 in dom0", all(v is not None for v in got.values()), got)


def vif_hotplug(dom, con):
    home = "/local/domain/%s" % dom
    t = time.time()
    rc, out = sh("xl network-attach %s mac=00:16:3e:5a:00:02 bridge=xenbr0" % NAME)
    if not check("xl network-attach", rc == 0, out.strip()[-200:]):
        return
    devid = None
    deadline = time.time() + 60
    while time.time() < deadline and devid is None:
        devid = next((k.split("/")[2] for k in guest_keys(dom) if re.match(r"attr/vif/[1-9]\d*/ipv4/0$", k)), None)
        time.sleep(0.3)
    timing("vif_attach_to_address_in_dom0_s", round(time.time() - t, 2) if devid else None)
    check("hot-plugged VIF -> its address under attr/vif/<devid>", devid is not None,
          "devid %s: %s" % (devid, {k: v for k, v in guest_keys(dom).items() if k.startswith("attr/vif/")}))
    if devid is None:
        return
    t = time.time()
    rc, out = sh("xl network-detach %s %s" % (NAME, devid))
    gone = None
    deadline = time.time() + 60
    while time.time() < deadline:
        if not any(k.startswith("attr/vif/%s/" % devid) for k in guest_keys(dom)):
            gone = round(time.time() - t, 2)
            break
        time.sleep(0.3)
    timing("vif_detach_to_keys_gone_s", gone)
    check("xl network-detach -> attr/vif/%s removed" % devid, rc == 0 and gone is not None, out.strip()[-200:])


def vcpu_hotadd(dom, con):
    """xl vcpu-set 1 -> 2: the kernel adds cpu1 offline; the package's udev rule onlines it.
    Judged from dom0: Xen shows vCPU 1 up (xl vcpu-list's third state letter is 'p' while the
    guest keeps it down)."""
    def state():
        for line in sh("xl vcpu-list %s" % NAME)[1].splitlines()[1:]:
            f = line.split()
            if len(f) >= 5 and f[2] == "1":
                return f[4]
        return None
    before = state()
    t = time.time()
    rc, out = sh("xl vcpu-set --ignore-host %s 2" % NAME)   # a host of one CPU (SMP=1) would refuse
    up = None
    while rc == 0 and time.time() < t + 30:
        st = state()
        if st and "p" not in st:
            up = round(time.time() - t, 2)
            break
        time.sleep(0.2)
    timing("vcpu_set_to_online_s", up)
    online = con.run("cat /sys/devices/system/cpu/online /sys/devices/system/cpu/cpu1/online")[1].split()
    check("xl vcpu-set 2 -> vCPU 1 online within 10 s (the udev rule)", up is not None and up <= 10
          and online[-1:] == ["1"], "before %s, after %s s; guest online %s; %s" % (before, up, online, out.strip()))


def hostname_change(dom, con):
    """hostnamectl set-hostname in the guest -> data/host_name_dns and data/domain in dom0, under
    the shipped unit (which must not give the agent a UTS namespace of its own)."""
    home = "/local/domain/%s" % dom
    hn, dn = home + "/data/host_name_dns", home + "/data/domain"
    w = Watch(home + "/data")
    got = {}
    try:
        for name, cmd, cond in (
                ("fqdn", "hostnamectl set-hostname web1.example.com",
                 lambda: xsread(hn) == "web1" and xsread(dn) == "example.com"),
                ("short", "hostnamectl set-hostname agentvm",
                 lambda: xsread(hn) == "agentvm" and xsread(dn) is None)):
            t = time.time()
            con.send(cmd)
            te = w.wait(cond, t, 30)
            got[name] = round(te - t, 3) if te else None
            con.run("true")
    finally:
        w.close()
    timing("hostname_to_dom0_s", got)
    check("hostnamectl set-hostname -> data/host_name_dns, data/domain in dom0",
          all(v is not None for v in got.values()), got)


class Sniffer:
    """Every frame on every interface of dom0 (AF_PACKET, unbound), to see the guest announce itself
    after a move: on its new vif too, which the hotplug script may add to the bridge only after the
    guest's first frames (a sniffer bound to xenbr0 once saw none)."""
    ETH_P_ALL = 3

    def __init__(self):
        import socket
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(self.ETH_P_ALL))
        self.s.settimeout(0.5)
        self.frames, self._stop = [], False
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        while not self._stop:
            try:
                self.frames.append((time.time(), self.s.recv(2048)))
            except OSError:
                pass

    def close(self):
        self._stop = True
        self.t.join(2)
        self.s.close()

    def summary(self, mac, since):
        """Every frame from `mac` after `since`: (seconds after since, ethertype, length)."""
        src = bytes.fromhex(mac.replace(":", ""))
        return [(round(t - since, 2), f[12:14].hex(), len(f)) for t, f in self.frames if t >= since and f[6:12] == src]

    def announcements(self, mac, ipv4, since):
        """(first gratuitous ARP time, first unsolicited NA time) from `mac` after `since`."""
        import socket
        src = bytes.fromhex(mac.replace(":", ""))
        arp = na = None
        for t, f in self.frames:
            if t < since or f[6:12] != src:
                continue
            kind = f[12:14]
            if kind == b"\x08\x06" and arp is None:
                spa, tpa = f[14 + 14:14 + 18], f[14 + 24:14 + 28]
                if spa == tpa == socket.inet_aton(ipv4):
                    arp = t
            elif kind == b"\x86\xdd" and na is None and f[14 + 6] == 58 and f[14 + 40] == 136:
                na = t
        return arp, na


def save_restore(dom, label):
    """xl save + xl restore: a new domain with a fresh home and no unique-domain-id (xl)."""
    want = agent_keys(dom)
    t = time.time()
    rc, out = sh("xl save %s /root/agentvm.chk" % NAME, timeout=600)
    timing("%s_xl_save_s" % label, round(time.time() - t, 1))
    if not check("%s: xl save" % label, rc == 0, out.strip()[-300:]):
        return dom
    rc, out = sh("xl restore -p /root/agentvm.chk", timeout=600)
    os.unlink("/root/agentvm.chk")
    if not check("%s: xl restore -p" % label, rc == 0, out.strip()[-300:]):
        return domid_of() or dom
    new = domid_of()
    save("xs-%s-paused.txt" % label, xsls(new))
    t = time.time()
    sh("xl unpause %s" % NAME)
    done = wait_keys(new, want, 150)
    took = round(max(done, t) - t, 2) if done else None
    save("xs-%s.txt" % label, xsls(new))
    timing("%s_unpause_to_complete_view_s" % label, took)
    RESUMES.append((label, new, t, want))
    check("%s: every key back, complete view within %g s of the unpause (domid %s -> %s)"
          % (label, resume_bound("pv"), dom, new), took is not None and took <= resume_bound("pv"),
          took if took is not None else key_diff(want, agent_keys(new)))
    resume_timeline(new, t, label)
    return new


def resume_timeline(dom, t_unpause, label):
    """Where the time after `xl unpause` went, in the guest's own words: the kernel's resume (user
    space thawed) and the agent's log, both on the guest's wall clock, which Xen keeps with dom0's."""
    con = Console(dom)
    if con.wait_shell(120):
        out = con.run("journalctl -k -o short-unix --no-pager | grep -E 'Freezing|Restarting tasks|suspend|resum' | tail -6; "
                      "journalctl -u xe-guest-agent -o short-unix --no-pager | tail -8", timeout=120)[1]
        save("timeline-%s.txt" % label, out)
        for line in out.splitlines():
            m = re.match(r"^(\d+\.\d+) (.*)", line.strip())
            if m:
                log("%s timeline: %+.3f s after unpause: %s" % (label, float(m.group(1)) - t_unpause, m.group(2)[:160]))
    con.close()


def memset_start(dom):
    before = xsread("/local/domain/%s/data/meminfo_total" % dom)
    sh("xl mem-set %s 384m" % NAME)
    return before, time.time()


def memset_check(dom, before, t):
    """meminfo_total follows the balloon at the agent's next memory look (60 s timer)."""
    path = "/local/domain/%s/data/meminfo_total" % dom
    deadline = t + 100
    after = xsread(path)
    while after in (None, before) and time.time() < deadline:
        time.sleep(1)
        after = xsread(path)
    took = round(time.time() - t, 1) if after not in (None, before) else None
    timing("memset_to_meminfo_total_s", took)
    check("xl mem-set 384m -> data/meminfo_total moves", took is not None, "%s -> %s" % (before, after))
    sh("xl mem-set %s 512m" % NAME)


def vif0_name(g):
    for line in g["ifaces"].splitlines():
        p = line.split()
        if len(p) >= 2 and p[1] == "device/vif/0":
            return p[0]
    return "enX0"


def journal_clean(con, label):
    rc, out = con.run("journalctl -u xe-guest-agent --no-pager -p warning -o short-precise | grep -v '^-- ' ", timeout=120)
    save("journal-warnings-%s.txt" % label, out)
    lines = [l for l in out.splitlines() if l.strip() and "No entries" not in l]
    check("%s: nothing at warning or above in the unit's journal" % label, not lines, "\n".join(lines[-10:]))
    save("journal-%s.txt" % label, con.run("journalctl -u xe-guest-agent --no-pager -o short-precise | tail -300", timeout=120)[1])


def guest_cfg(kind=None):
    """The guest's xl config: domu.cfg (PV), or the same guest as PVH. On a host of two CPUs or more
    the guest keeps off CPU 0, where dom0 is pinned (boot.sh): under TCG every switch between
    them on one CPU costs the guest its emulated TLB, and a PVH guest its nested paging walks."""
    kind = kind or ARGS.get("xenbed.type", "pv")
    text = open(CFG).read()
    if kind == "pvh":
        text = text.replace('type = "pv"', 'type = "pvh"')
    if HOST_CPUS >= 2:
        text += 'cpus = "%s"\n' % ("1" if HOST_CPUS == 2 else "1-%d" % (HOST_CPUS - 1))
    cfg = "/root/domu-%s.cfg" % kind
    open(cfg, "w").write(text)
    return cfg


def migration():
    """A PVH guest (Debian's Xen has no shadow paging, so a PV guest's log-dirty mode for a live
    migration is impossible) migrated live to localhost: every key back within resume_bound("pvh")
    of the new domain running, the flag still followed, and the guest announced itself to dom0
    (gratuitous ARP, unsolicited NA) with no sysctl of ours."""
    # TCG emulates a PVH guest's nested paging too: its boot took 15 min here (initramfs udev 144 s).
    dom, took = boot(guest_cfg("pvh"), "PVH boot", timeout=1500)
    timing("pvh_boot_to_first_publish_s", took)
    if not check("PVH: the agent published after boot", took is not None, took):
        return
    con = Console(dom)
    if not check("PVH: guest shell on hvc0", con.wait_shell(300)):
        return
    sysctls = con.run("sysctl -n net.ipv4.conf.all.arp_notify net.ipv6.conf.all.ndisc_notify")[1].split()
    # The view to get back is the settled guest's: its first publish comes before the end of its
    # boot, and once its address came 22 s later, during the migration, and counted as an extra key.
    con.run("systemctl is-system-running --wait", timeout=600)
    con.close()
    vif = "/local/domain/%s/attr/vif/0/ipv4/0" % dom
    w = Watch(vif)
    w.wait(lambda: xsread(vif) == "192.0.2.10", 0, 120)
    w.close()
    want = agent_keys(dom)
    check("PVH: the settled guest's view has its address", want.get("attr/vif/0/ipv4/0") == "192.0.2.10", want)
    sniff = Sniffer()
    # The guest runs in its new domain before `xl migrate` returns, so dom0 follows the new domain
    # from its creation by migrate-receive, in a thread of its own, to the complete view.
    arrived = {}

    def follow():
        new = new_domain({"0", dom}, 900)
        arrived["dom"] = new
        arrived["done"] = new and wait_keys(new, want, 900)
    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    t = t_migrate = time.time()
    rc, out = sh("xl migrate -s '' -p %s 'xl migrate-receive'" % NAME, timeout=900)
    timing("pvh_xl_migrate_s", round(time.time() - t, 1))
    if not check("PVH: xl migrate (localhost, live)", rc == 0, out.strip()[-400:]):
        sniff.close()
        return
    t = time.time()
    sh("xl unpause %s" % NAME)
    follower.join(150)
    new = domid_of()
    save("xs-pvh-migrated.txt", xsls(new))
    done = arrived.get("done") if arrived.get("dom") == new else None
    timing("pvh_migrate_start_to_complete_view_s", round(done - t_migrate, 2) if done else None)
    RESUMES.append(("pvh_migrate", new, t, want))
    if done is None:
        check("PVH: every key back after live migration (domid %s -> %s)" % (dom, new), False,
              key_diff(want, agent_keys(new)))
    else:   # how soon after the guest ran is known from xenstored's log, read at the end
        MIGRATIONS.append(("PVH", dom, new, done))
    deadline = time.time() + 20
    arp = na = None
    while time.time() < deadline and (arp is None or na is None):
        time.sleep(0.5)
        arp, na = sniff.announcements("00:16:3e:5a:00:01", "192.0.2.10", t_migrate)
    sniff.close()
    frames = sniff.summary("00:16:3e:5a:00:01", t_migrate)
    save("migration-frames.json", json.dumps({"unpause_after_migrate_start": round(t - t_migrate, 2),
                                              "frames": frames, "all": len(sniff.frames)}))
    log("frames from the guest seen by dom0 since the migration began (unpause at +%.1f s): %s of %d: %s"
        % (t - t_migrate, len(frames), len(sniff.frames), frames[:20]))
    # From the migration's start, not the unpause: the guest runs (and announces) before xl returns.
    arp_s, na_s = (round(x - t_migrate, 2) if x else None for x in (arp, na))
    timing("pvh_migrate_start_to_arp_s", arp_s)
    timing("pvh_migrate_start_to_na_s", na_s)
    check("PVH: after migration the guest announced itself to dom0 (gratuitous ARP and unsolicited "
          "NA; the guest's arp_notify, ndisc_notify = %s)" % ", ".join(sysctls), arp is not None and na is not None,
          "arp %s s, na %s s after the migration began" % (arp_s, na_s))
    resume_timeline(new, t, "migration")
    con = Console(new)
    if check("PVH: guest shell after the migration", con.wait_shell(180)):
        flag(new, con, "PVH flag after migration", rounds=1)
        journal_clean(con, "PVH")
    con.close()
    sh("xl destroy %s" % NAME)


def test():
    host_facts()
    dom, took = boot(guest_cfg(), "boot")
    timing("boot_to_first_publish_s", took)
    if not check("the agent published data/updated after the guest's boot", took is not None, took):
        return
    con = Console(dom)
    if not check("guest shell on hvc0", con.wait_shell(300)):
        return
    time.sleep(1)
    g = guest_checks(dom, con)
    keys_at_boot(dom, g)
    before, t_mem = memset_start(dom)   # checked later: the memory look is on a 60 s timer
    flag(dom, con)
    addresses(dom, con, vif0_name(g))
    hostname_change(dom, con)
    vcpu_hotadd(dom, con)
    vif_hotplug(dom, con)
    memset_check(dom, before, t_mem)
    con.close()
    dom = save_restore(dom, "restore1")
    dom = save_restore(dom, "restore2")
    con = Console(dom)
    if not check("guest shell after the restores", con.wait_shell(180)):
        return
    flag(dom, con, "flag after restores", rounds=1)
    journal_clean(con, "PV")
    con.run("systemctl reboot --no-block")
    con.close()
    # xl reboot: the same guest boots again as a new domain.
    deadline = time.time() + 120
    while time.time() < deadline and domid_of() == dom:
        time.sleep(0.5)
    t = time.time()
    new = None
    while time.time() < t + 600:
        new = domid_of()
        if new and new != dom and xsread("/local/domain/%s/data/updated" % new) is not None:
            break
        time.sleep(0.5)
    took = round(time.time() - t, 1) if new and new != dom and xsread("/local/domain/%s/data/updated" % new) else None
    timing("reboot_to_first_publish_s", took)
    check("guest reboot -> the agent publishes again (domid %s -> %s)" % (dom, new), took is not None, took)
    if took is not None:
        con = Console(new)
        if con.wait_shell(180):
            journal_clean(con, "PV, both boots")
        con.close()
    sh("xl destroy %s" % NAME)
    migration()


def demo():
    """What a user sees: the host's view of a guest running the agent, the flag flipped, again."""
    host_facts()
    dom, took = boot(guest_cfg(), "boot")
    if not check("the agent published after boot", took is not None, took):
        return

    def show(title):
        view = host_view(dom)
        log("== %s (dom0's view of domain %s, as xenopsd computes it)" % (title, dom))
        for k in sorted(view):
            log("   %-22s %s" % (k, view[k]))
        log("   %-22s %s" % ("NotUpgradable", xsread("/local/domain/%s/attr/PVAddons/NotUpgradable" % dom)))
    time.sleep(1)
    show("guest booted, first publish %.1f s after unpause" % took)
    con = Console(dom)
    if con.wait_shell(300):
        flag(dom, con, "demo flag", rounds=1)
        t = time.time()
        con.send("touch /etc/pv-drivers-not-upgradable")
        w = Watch("/local/domain/%s/attr/PVAddons" % dom)
        w.wait(lambda: xsread("/local/domain/%s/attr/PVAddons/NotUpgradable" % dom) == "1", t, 30)
        w.close()
        show("after `touch /etc/pv-drivers-not-upgradable` in the guest")
    con.close()
    sh("xl shutdown -w %s" % NAME, timeout=300)


def boots():
    """Boot the guest N times in a row: how many publish, and how fast (defect 4)."""
    host_facts()
    n = int(ARGS.get("xenbed.boots", "10"))
    cfg = guest_cfg()
    got, broken = [], 0
    for i in range(n):
        faults = len(timings.get("bed_faults", []))
        dom, took = boot(cfg, "boot %d" % (i + 1), tries=1)
        got.append(took)
        broken += took is None and len(timings.get("bed_faults", [])) > faults
        sh("xl destroy %s" % NAME)
    timing("boots_to_first_publish_s", got)
    ok = [x for x in got if x is not None]
    # A boot the emulator broke (a crash on the guest's console, a triple fault) says nothing of the
    # agent; every other boot must publish.
    check("%d of %d boots published (%d broken by the emulator)" % (len(ok), n, broken), len(ok) + broken == n and ok,
          "min %s, max %s" % (min(ok) if ok else None, max(ok) if ok else None))


try:
    log("XENBED dom0-ready (mode %s, dom0 uptime %s s)" % (MODE, open("/proc/uptime").read().split()[0]))
    {"test": test, "demo": demo, "boots": boots}[MODE]()
except Exception as e:
    import traceback
    traceback.print_exc()
    check("run_tests.py completed", False, repr(e))
finally:
    for resume in RESUMES:
        try:
            resume_figures(*resume)
        except Exception as e:   # a figure, not a check: the run's results still go out
            log("resume figures of %s: %r" % (resume[0], e))
    try:
        migration_checks()
    except Exception as e:
        check("the migration's figures from xenstored's log", False, repr(e))
    save("checks.json", json.dumps(results, indent=1))
    save("timings.json", json.dumps(timings, indent=1))
    sh("xl dmesg > %s/xl-dmesg.txt 2>&1; journalctl -b --no-pager > %s/dom0-journal.txt 2>&1" % (RES, RES))
    # The guest's own journal, every boot of it, read from its disk once no domain uses it (with
    # AGENT_CONF='log_level = debug' in build.sh, this is the agent's whole wire log).
    sh("xl destroy %s 2>/dev/null; sleep 2; mkdir -p /mnt/guest && mount -o ro,noload /dev/vdb /mnt/guest && "
       "journalctl -D /mnt/guest/var/log/journal --no-pager -o short-precise > %s/guest-journal.txt 2>&1; "
       "journalctl -D /mnt/guest/var/log/journal --no-pager -o short-precise -u xe-guest-agent > %s/guest-agent-journal.txt 2>&1; "
       "umount /mnt/guest" % (NAME, RES, RES), timeout=300)
    sh("cp -r /var/log/xen %s/var-log-xen" % RES)
    npass = sum(r["ok"] for r in results)
    nfail = len(results) - npass
    rc, _ = sh("tar -cf /dev/vdd -C %s . && sync" % RES)
    log("results written to /dev/vdd (rc=%d)" % rc)
    print("XENBED-SUMMARY %d passed, %d failed" % (npass, nfail), flush=True)
    sh("sync")
    time.sleep(1)
    os.system("systemctl poweroff --force --force")
