"""Benchmark: how fast the host sees a change, and what the agent costs at idle.

    python3 -m tests.bench.bench [--toggles 400] [--hostnames 200] [--migrations 50] [--idle 60]
                                 [--addresses 300] [--fleet 10 50] [--fleet-idle 20]

Everything runs on the real xenstored with the agent as guest 7 through the pty bridge, and is
judged by the host model (tests/hostmodel.py): latency is from the file system change to the
moment the host's reader has computed the new view. Idle costs are counted on the xenstored side
(its -T trace) and from /proc for the agent process. For the idle window the agent's
/proc/meminfo is swapped for a fixed stand-in holding the values it last published, so the idle
rows count what the agent does on its own, not this machine's memory churn. Then fleets of N guests
on one xenstored (tests/bench/fleet.py).

Progress goes to stderr, one line per step with the elapsed time. stdout gets the machine's load
(latencies follow it), one table (figure, value, target), then one PASS/MISS line per target and a
summary. Exit status 1 if any target is missed.

A new figure: a step stores its measurement in `results[key]` (a timed step on guest 7 is one line
in BED_STEPS, plus its option), and each line of the table is one declaration in ROWS, e.g.

    *latency_rows("hostname change -> host", "hostname", p50=Target("<=", 3), p99=Target("<=", 10)),
"""
import argparse
import json
import operator
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tests import hostmodel  # noqa: E402
from tests.bench import fleet  # noqa: E402
from tests.lab import daemon, trace  # noqa: E402
from tests.sysfs_tree import SysfsTree  # noqa: E402
from tests.utsns import UNSHARE, Renamer  # noqa: E402

MEMORY_INTERVAL = 60.0   # the agent's default memory_interval (the bench's agent.conf is empty)


# ---------------------------------------------------------------------------------------- table

class Target(object):
    """A limit a figure must meet, e.g. Target("<=", 3), with an optional note for the table."""

    OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}

    def __init__(self, op, limit, note=""):
        if op not in self.OPS:
            raise ValueError("unknown comparison %r" % op)
        self.op, self.limit, self.note = op, limit, note

    def met(self, value):
        return self.OPS[self.op](value, self.limit)

    def __str__(self):
        return "%s %g%s" % (self.op, self.limit, ", " + self.note if self.note else "")


class Row(object):
    """One line of the table.

    key:    the entry of `results` it is computed from; the row is left out when no step
            stored it (e.g. --addresses 0).
    label:  the figure's name; "%(n)d" is the sample count when the result is a list, and a
            result that is a dict fills its own fields.
    value:  function(result) -> a number, or a tuple of numbers shown as "a / b".
    fmt:    printf format for the number, or a tuple of them, one per number.
    target: a Target, checked against the value (which must then be one number), or None.
    """

    def __init__(self, key, label, value, fmt="%.2f", target=None):
        self.key, self.label, self.value, self.fmt, self.target = key, label, value, fmt, target

    def evaluate(self, results):
        """(label, value text, target text, verdict: True, False or None) or None if not run."""
        if self.key not in results:
            return None
        result = results[self.key]
        fields = result if isinstance(result, dict) else {"n": len(result)} if isinstance(result, list) else {}
        value = self.value(result)
        numbers = value if isinstance(value, tuple) else (value,)
        fmts = self.fmt if isinstance(self.fmt, tuple) else (self.fmt,) * len(numbers)
        text = " / ".join(f % v for f, v in zip(fmts, numbers))
        verdict = None
        if self.target is not None:
            if isinstance(value, tuple):
                raise TypeError("%s: a target needs a single figure" % self.label)
            # judged on the figure as printed, so that the table and the verdict agree
            verdict = self.target.met(float(self.fmt % value))
        return self.label % fields, text, str(self.target or ""), verdict


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def latency_rows(what, key, p50=None, p99=None):
    """The usual pair for a latency sample in ms: p50 (with n) and p99."""
    return [Row(key, what + " p50 (ms, n=%(n)d)", lambda v: pct(v, 50), "%.2f", p50),
            Row(key, what + " p99 (ms)", lambda v: pct(v, 99), "%.2f", p99)]


ROWS = [
    Row("start", "start -> first full publish (ms, incl. interpreter start)", lambda v: v["ms"], "%.0f",
        Target("<=", 300)),
    *latency_rows("flag -> host", "flag", p50=Target("<=", 3), p99=Target("<=", 10)),
    Row("flag", "flag -> host mean / max (ms)", lambda v: (statistics.mean(v), max(v))),
    *latency_rows("hostname change -> host", "hostname", p50=Target("<=", 3), p99=Target("<=", 10)),
    Row("migration", "migration -> fully republished p50 (ms, n=%(n)d)", lambda v: pct(v, 50), "%.1f",
        Target("<=", 1000)),
    Row("migration", "migration -> fully republished max (ms)", lambda v: max(v), "%.1f"),
    Row("idle", "idle XenStore requests per hour (%(seconds).0f s measured, fixed meminfo)",
        lambda v: v["requests_per_hour"], "%.0f"),
    Row("idle", "idle XenStore writes per hour", lambda v: v["writes_per_hour"], "%.0f", Target("<=", 60)),
    Row("idle", "idle wake-ups per minute (event loop waits that returned)", lambda v: v["wakeups_per_min"],
        "%.1f", Target("<=", 2 * 60.0 / MEMORY_INTERVAL, "2 per memory tick")),
    Row("idle", "idle CPU seconds per hour", lambda v: v["cpu_s_per_hour"], "%.3f"),
    Row("rss", "RSS after the above (MiB)", lambda v: v["mib"], "%.1f", Target("<=", 20)),
    *latency_rows("ip addr add -> host", "addr_add", p50=Target("<=", 10), p99=Target("<=", 50)),
    Row("addr_del", "ip addr del -> host p50 / p99 (ms)", lambda v: (pct(v, 50), pct(v, 99))),
]

FLEET_ROWS = [   # one set per fleet size; the result is fleet.run()'s dict (its "n" is the size)
    Row("fleet", "fleet of %(n)d: all published after start (s)", lambda v: v["start"]),
    Row("fleet", "fleet of %(n)d: idle xenstored CPU (%%) / requests per s",
        lambda v: (v["idle_cpu"] * 100, v["idle_req"]), ("%.3f", "%.2f")),
    Row("fleet", "fleet of %(n)d: mass migration, all republished (s)", lambda v: v["mig"]),
    Row("fleet", "fleet of %(n)d: mass migration, xenstored CPU s / requests",
        lambda v: (v["mig_cpu"], v["mig_req"]), ("%.2f", "%d")),
]


def report(rows, results, seconds, out=sys.stdout):
    """Print the table, one PASS/MISS line per target and a summary that says the benchmark took
    `seconds`; return the exit status: 1 if a target was missed, else 0."""
    lines = [line for line in (row.evaluate(results) for row in rows) if line]
    width = max(len(line[0]) for line in lines)
    out.write("%-*s  %14s  %s\n" % (width, "figure", "value", "target"))
    for label, text, target, _ in lines:
        out.write(("%-*s  %14s  %s" % (width, label, text, target)).rstrip() + "\n")
    out.write("\n")
    judged = [line for line in lines if line[3] is not None]
    for label, text, target, verdict in judged:
        out.write("%s  %s: %s (target %s)\n" % ("PASS" if verdict else "MISS", label, text, target))
    misses = [line[0] for line in judged if not line[3]]
    out.write("%d of %d targets met%s; the benchmark took %.0f s\n"
              % (len(judged) - len(misses), len(judged), ", missed: " + "; ".join(misses) if misses else "",
                 seconds))
    return 1 if misses else 0


# ------------------------------------------------------------------------------------- progress

class Progress(object):
    """One stderr line per step, with the time since the benchmark started."""

    def __init__(self, out=sys.stderr):
        self.t0, self.out = time.monotonic(), out

    def elapsed(self):
        return time.monotonic() - self.t0

    def say(self, text):
        self.out.write("[%6.1f s] %s\n" % (self.elapsed(), text))
        self.out.flush()

    def step(self, name):
        return _Step(self, name)

    def sleep(self, seconds, what, every=15.0):
        """Sleep `seconds`, saying how far along every `every` seconds."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(every, left))
            left = end - time.monotonic()
            if left > 0.5:
                self.say("  %s: %.0f of %.0f s" % (what, seconds - left, seconds))


class _Step(object):
    def __init__(self, progress, name):
        self.progress, self.name = progress, name

    def __enter__(self):
        self.began = time.monotonic()
        self.progress.say(self.name + " ...")
        return self

    def __exit__(self, kind, value, tb):
        took = time.monotonic() - self.began
        self.progress.say("%s: %s (%.1f s)" % (self.name, "done" if kind is None else "FAILED", took))
        return False


# ------------------------------------------------------------------------------------ measuring

def proc_stats(pid):
    status = dict(line.split(":", 1) for line in open("/proc/%d/status" % pid) if ":" in line)
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        "cpu_s": (int(fields[11]) + int(fields[12])) / tick,
    }


class Wakeups(object):
    """Counts the agent's wake-ups: the waits of its event loop (epoll, poll, select) that
    returned, seen by strace attached to it for a window. Context switches would count the
    machine as well: on a busy machine the kernel also blocks the agent on its own locks."""

    WAITS = ("epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6")
    # a finished call, or the end of one that strace saw begin ("<... poll resumed>")
    _DONE = re.compile(r"^(?:<\.\.\. )?(%s|restart_syscall)\b.*\) += " % "|".join(WAITS), re.M)

    def __init__(self, pid, out):
        path = shutil.which("strace")
        if not path:
            raise SystemExit("bench: the idle window needs strace (apt-get install strace)")
        self.out = out
        self.proc = subprocess.Popen([path, "-qq", "-e", "trace=" + ",".join(self.WAITS), "-e", "signal=none",
                                      "-o", out, "-p", str(pid)])
        deadline = time.monotonic() + 10
        while not self._traced(pid):   # strace attaches on its own time
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("strace did not attach to the agent")
            time.sleep(0.01)

    @staticmethod
    def _traced(pid):
        for line in open("/proc/%d/status" % pid):
            if line.startswith("TracerPid:"):
                return int(line.split()[1]) != 0
        return False

    def stop(self):
        """Detach; returns the wake-ups seen (the wait the agent is in at the end is not one)."""
        self.proc.terminate()
        self.proc.wait(10)
        with open(self.out) as f:
            return len(self._DONE.findall(f.read()))


class Bed:
    """A daemon, guest 7, the host's reader and the agent, in a scratch directory."""

    def __init__(self, extra_args=(), prefix=()):
        self.dir = tempfile.mkdtemp(prefix="xga-bench-")
        daemon.ensure_built()
        self.xsd = daemon.Xenstored(self.dir, trace=True).start()
        self.guest = daemon.Guest(self.xsd, 7)
        self.legacy = hostmodel.LegacyReader(self.xsd.socket, 7)
        self.current = hostmodel.CurrentReader(self.xsd.socket, 7)
        self.flag = os.path.join(self.dir, "etc", "pv-drivers-not-upgradable")
        os.makedirs(os.path.dirname(self.flag))
        os.makedirs(os.path.join(self.dir, "sys"))
        with open(os.path.join(self.dir, "agent.conf"), "w") as f:
            f.write("")
        # The agent reads the real /proc/meminfo through this link, until fix_meminfo() puts a
        # fixed file in its place for the idle window.
        self.meminfo = os.path.join(self.dir, "meminfo")
        os.symlink("/proc/meminfo", self.meminfo)
        self.t_start = time.monotonic()
        # -S: no site hooks. This machine's interpreter runs a sandbox .pth at start-up that costs
        # ~5 MB of RSS (certifi); a distribution's python3 has none. The packages' directories go
        # on PYTHONPATH instead.
        path = [ROOT] + [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
        self.agent = subprocess.Popen(
            list(prefix) + [sys.executable, "-S", "-m", "xe_guest_agent", "run", "--xenstore", self.guest.device,
             "--flag-file", self.flag, "--config", os.path.join(self.dir, "agent.conf"),
             "--sysfs", os.path.join(self.dir, "sys"), "--os-root", self.dir,
             "--meminfo", self.meminfo] + list(extra_args),
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(path)), cwd=self.dir)

    def fix_meminfo(self):
        """Replace the agent's meminfo with a fixed copy of /proc/meminfo whose MemTotal and
        MemAvailable are the values the agent last published, so that its next memory tick finds
        nothing to write whatever this machine's memory does. Returns (total, free) in KiB."""
        for _ in range(3):
            total = self.guest.read("data/meminfo_total").decode()
            free = self.guest.read("data/meminfo_free").decode()
            lines = []
            for line in open("/proc/meminfo"):
                name = line.split(":", 1)[0]
                if name in ("MemTotal", "MemAvailable"):
                    line = "%s:%s%s kB\n" % (name, " " * max(1, 15 - len(name)),
                                             total if name == "MemTotal" else free)
                lines.append(line)
            tmp = self.meminfo + ".new"
            with open(tmp, "w") as f:
                f.writelines(lines)
            os.replace(tmp, self.meminfo)
            # a memory tick between the reads and the swap would have published newer values
            if (self.guest.read("data/meminfo_total").decode(), self.guest.read("data/meminfo_free").decode()) \
                    == (total, free):
                return int(total), int(free)
        raise RuntimeError("the agent's published memory values would not hold still")

    def close(self):
        self.agent.terminate()
        self.agent.wait(5)
        self.legacy.close()
        self.current.close()
        self.guest.close()
        self.xsd.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def bench_flag(bed, toggles):
    lat = []
    for i in range(toggles):
        want = i % 2 == 0
        before = bed.legacy.view["updated"]
        t0 = time.monotonic()
        if want:
            open(bed.flag, "w").close()
        else:
            os.unlink(bed.flag)
        seen = bed.legacy.wait_for(lambda v: v["not_upgradable"] is want and v["updated"] != before,
                                   since=t0, timeout=5)
        lat.append((seen - t0) * 1000)
    return lat


def bench_hostname(bed, count):
    """sethostname() in the agent's UTS namespace -> the current host model showing the name as
    netbios_name (it reads data/ when the Installed rewrite fires its watch). Timed from just
    before the call (tests/utsns.py); the machine's own host name is not touched."""
    uts = Renamer(bed.agent.pid)
    try:
        lat = []
        for i in range(count):
            name = "bench-%d" % i
            t0 = uts.sethostname(name)
            seen = bed.current.wait_for(lambda v: v["netbios_name"].get("host_name") == name, since=t0,
                                        timeout=5, what="host name %s" % name)
            lat.append((seen - t0) * 1000)
        return lat
    finally:
        uts.close()


def bench_migration(bed, count):
    out = []
    for _ in range(count):
        t0 = time.monotonic()
        bed.guest.migrate()
        seen = bed.current.wait_for(lambda v: v["pv_drivers_version"] and v["os_version"] and v["data_updated"],
                                    since=t0, timeout=5)
        out.append((seen - t0) * 1000)
    return out


def quiet(bed, still=1.0, limit=30.0):
    """Wait (up to `limit` s) until xenstored has seen nothing from the guest for `still` s."""
    deadline = time.monotonic() + limit
    count, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(trace.requests(bed.xsd.trace, 7))
        if n != count:
            count, since = n, time.monotonic()
        elif time.monotonic() - since >= still:
            return
        time.sleep(0.1)


def bench_idle(bed, seconds, progress):
    quiet(bed)
    total, free = bed.fix_meminfo()
    progress.say("  meminfo stand-in in place: MemTotal %d kB, MemAvailable %d kB (as last published)"
                 % (total, free))
    wakeups = Wakeups(bed.agent.pid, os.path.join(bed.dir, "idle.strace"))
    try:
        before_trace = trace.requests(bed.xsd.trace, 7)
        before = proc_stats(bed.agent.pid)
        progress.sleep(seconds, "idle")   # the thing measured is what happens while nothing does
        after = proc_stats(bed.agent.pid)
        reqs = trace.requests(bed.xsd.trace, 7)[len(before_trace):]
    finally:
        woke = wakeups.stop()
    scale = 3600.0 / seconds
    return {
        "seconds": seconds,
        "requests_per_hour": len(reqs) * scale,
        "writes_per_hour": len([r for r in reqs if r[0] in trace.MUTATING]) * scale,
        "wakeups_per_min": woke * 60.0 / seconds,
        "cpu_s_per_hour": (after["cpu_s"] - before["cpu_s"]) * scale,
    }


def bench_addresses(count):
    """`ip addr add` -> the host model showing the address, and `ip addr del` -> gone: the agent runs
    in a private network namespace in which veth eth0 looks like VIF 0 (a fake sysfs tree).
    Commands go to one running `ip -batch`, so the clock starts when the command is handed over,
    not when a new `ip` process would have been exec'd. Returns (add_ms, del_ms)."""
    ns = "xga-bench-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    batch = bed = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"], check=True)
        out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "dev", "eth0"], check=True,
                             stdout=subprocess.PIPE, universal_newlines=True).stdout
        index = json.loads(out)[0]["ifindex"]
        bed = Bed(prefix=("ip", "netns", "exec", ns))
        SysfsTree(os.path.join(bed.dir, "sys")).vif("eth0", devid=0, index=index)
        bed.current.wait_for(lambda v: v["pv_drivers_version"], timeout=10)
        batch = subprocess.Popen(["ip", "-n", ns, "-force", "-batch", "-"], stdin=subprocess.PIPE,
                                 universal_newlines=True)
        added, deleted = [], []
        for i in range(count):
            address = "10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)
            for op, into, want in (("add", added, address), ("del", deleted, None)):
                t0 = time.monotonic()
                batch.stdin.write("address %s %s/32 dev eth0\n" % (op, address))
                batch.stdin.flush()
                seen = bed.current.wait_for(lambda v: v["networks"].get("0/ipv4/0") == want, since=t0, timeout=5,
                                            what="0/ipv4/0 == %s" % want)
                into.append((seen - t0) * 1000)
        return added, deleted
    finally:
        if batch:
            batch.stdin.close()
            batch.wait(5)
        if bed:
            bed.close()
        subprocess.run(["ip", "netns", "del", ns])


# The timed steps on guest 7's bed, in order, before its idle window: (results key, the option that
# gives the count (0: skip), the step's name for the progress line, function(bed, count) -> the
# latencies in ms). A new one is a line here, its option in main() and its rows in ROWS.
BED_STEPS = [
    ("flag", "toggles", "flag file: %d toggles -> host", bench_flag),
    ("hostname", "hostnames", "host name: %d sethostname() -> host", bench_hostname),
    ("migration", "migrations", "migration: %d -> fully republished", bench_migration),
]


def measure(args, progress):
    """Run the steps the options ask for; returns (results, rows)."""
    results, rows = {}, list(ROWS)
    with progress.step("start xenstored, guest 7 and the agent"):
        bed = Bed(prefix=UNSHARE)   # a UTS namespace of its own, for bench_hostname
        try:
            seen = bed.legacy.wait_for(lambda v: v["valid"], timeout=10)
        except BaseException:
            bed.close()
            raise
        results["start"] = {"ms": (seen - bed.t_start) * 1000}
    try:
        for key, option, name, run in BED_STEPS:
            count = getattr(args, option)
            if count:
                with progress.step(name % count):
                    results[key] = run(bed, count)
        if args.idle:
            with progress.step("idle window: %.0f s, with a fixed meminfo stand-in" % args.idle):
                results["idle"] = bench_idle(bed, args.idle, progress)
        results["rss"] = {"mib": proc_stats(bed.agent.pid)["rss_kib"] / 1024.0}
    finally:
        bed.close()
    if args.addresses:
        with progress.step("addresses: %d ip addr add/del -> host, in a network namespace" % args.addresses):
            results["addr_add"], results["addr_del"] = bench_addresses(args.addresses)
    for n in args.fleet:
        key = "fleet %d" % n
        with progress.step("fleet of %d guests on one xenstored (%.0f s idle window)" % (n, args.fleet_idle)):
            results[key] = fleet.run(n, args.fleet_idle, say=lambda text: progress.say("  " + text))
        rows += [Row(key, row.label, row.value, row.fmt, row.target) for row in FLEET_ROWS]
    return results, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toggles", type=int, default=400, metavar="N",
                    help="flag file changes timed to the host (default 400); 0: skip")
    ap.add_argument("--hostnames", type=int, default=200, metavar="N",
                    help="host name changes (sethostname in the agent's own UTS namespace) timed to the "
                         "host (default 200); 0: skip")
    ap.add_argument("--migrations", type=int, default=50, metavar="N",
                    help="migrations timed until fully republished (default 50); 0: skip")
    ap.add_argument("--idle", type=float, default=60.0, metavar="S",
                    help="seconds of idle to measure, with a fixed meminfo stand-in (default 60). A "
                         "multiple of the agent's 60 s memory tick gives exact rates: a shorter window "
                         "may see no tick, a longer one one tick more or less; 0: skip")
    ap.add_argument("--addresses", type=int, default=300, metavar="N",
                    help="time N `ip addr add`/`del` -> host (in a network namespace; root; default 300); 0: skip")
    ap.add_argument("--fleet", type=int, nargs="*", default=[10, 50], metavar="N",
                    help="fleets of N guests on one xenstored (tests/bench/fleet.py; default 10 50); none: skip")
    ap.add_argument("--fleet-idle", type=float, default=20.0, metavar="S",
                    help="seconds of fleet idle to measure (default 20)")
    args = ap.parse_args()

    progress = Progress()
    progress.say("benchmark: the agent as guest 7 on the real xenstored (tests/lab); %s" % load())
    results, rows = measure(args, progress)
    progress.say("all steps done")
    # latencies follow the machine's load (another VM, a test run), so the table says what it was
    sys.stdout.write("machine: %s at the end\n\n" % load())
    return report(rows, results, progress.elapsed())


def load():
    return "%d CPUs, load average %.2f / %.2f / %.2f" % ((os.cpu_count(),) + os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
