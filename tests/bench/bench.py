"""Benchmark: how fast the host sees a change, and what the agent costs at idle.

    python3 -m tests.bench.bench [--toggles 400] [--idle 60] [--addresses 300] [--fleet 10 50]

Everything runs on the real xenstored with the agent as guest 7 through the pty bridge, and is
judged by the host model (tests/hostmodel.py): latency is from the file system change to the
moment the host's reader has computed the new view. Idle costs are counted on the xenstored side
(its -T trace) and from /proc for the agent process. Then fleets of N guests on one xenstored
(tests/bench/fleet.py). Prints one table: figure, value, target.
"""
import argparse
import json
import os
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


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def proc_stats(pid):
    status = dict(line.split(":", 1) for line in open("/proc/%d/status" % pid) if ":" in line)
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "rss_kib": int(status["VmRSS"].split()[0]),
        "wakeups": int(status["voluntary_ctxt_switches"]) + int(status["nonvoluntary_ctxt_switches"]),
        "cpu_s": (int(fields[11]) + int(fields[12])) / tick,
    }


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
        self.t_start = time.monotonic()
        # -S: no site hooks. This machine's interpreter runs a sandbox .pth at start-up that costs
        # ~5 MB of RSS (certifi); a distribution's python3 has none. The packages' directories go
        # on PYTHONPATH instead. The real /proc/meminfo: idle writes are counted as they would be.
        path = [ROOT] + [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
        self.agent = subprocess.Popen(
            list(prefix) + [sys.executable, "-S", "-m", "xe_guest_agent", "run", "--xenstore", self.guest.device,
             "--flag-file", self.flag, "--config", os.path.join(self.dir, "agent.conf"),
             "--sysfs", os.path.join(self.dir, "sys"), "--os-root", self.dir] + list(extra_args),
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(path)), cwd=self.dir)

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


def bench_idle(bed, seconds):
    quiet(bed)
    before_trace = trace.requests(bed.xsd.trace, 7)
    before = proc_stats(bed.agent.pid)
    time.sleep(seconds)   # the thing measured is what happens while nothing does
    after = proc_stats(bed.agent.pid)
    reqs = trace.requests(bed.xsd.trace, 7)[len(before_trace):]
    scale = 3600.0 / seconds
    return {
        "requests_per_hour": len(reqs) * scale,
        "writes_per_hour": len([r for r in reqs if r[0] in trace.MUTATING]) * scale,
        # memory batches follow the real memory churn (2 writes each: the value, data/updated)
        "memory_batches_per_hour": len([r for r in reqs if r[0] == "WRITE" and r[1].startswith("data/meminfo_free")]) * scale,
        "wakeups_per_min": (after["wakeups"] - before["wakeups"]) * 60.0 / seconds,
        "cpu_s_per_hour": (after["cpu_s"] - before["cpu_s"]) * scale,
        "rss_mib": after["rss_kib"] / 1024.0,
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toggles", type=int, default=400)
    ap.add_argument("--migrations", type=int, default=50)
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle to measure")
    ap.add_argument("--addresses", type=int, default=300, metavar="N",
                    help="time N `ip addr add`/`del` -> host (in a network namespace; root); 0: skip")
    ap.add_argument("--fleet", type=int, nargs="*", default=[10, 50], metavar="N",
                    help="fleets of N guests on one xenstored (tests/bench/fleet.py); none: skip")
    ap.add_argument("--fleet-idle", type=float, default=20.0, help="seconds of fleet idle to measure")
    args = ap.parse_args()

    bed = Bed()
    rows = []
    try:
        seen = bed.legacy.wait_for(lambda v: v["valid"], timeout=10)
        rows.append(("start -> first full publish (ms, incl. interpreter start)",
                     "%.0f" % ((seen - bed.t_start) * 1000), "<= 300"))
        lat = bench_flag(bed, args.toggles)
        rows.append(("flag -> host p50 (ms, n=%d)" % len(lat), "%.2f" % pct(lat, 50), "<= 3"))
        rows.append(("flag -> host p99 (ms)", "%.2f" % pct(lat, 99), "<= 10"))
        rows.append(("flag -> host mean / max (ms)", "%.2f / %.2f" % (statistics.mean(lat), max(lat)), ""))
        mig = bench_migration(bed, args.migrations)
        rows.append(("migration -> fully republished p50 / max (ms, n=%d)" % len(mig),
                     "%.1f / %.1f" % (pct(mig, 50), max(mig)), "<= 1000"))
        idle = bench_idle(bed, args.idle)
        rows.append(("idle XenStore requests per hour (%.0f s measured)" % args.idle,
                     "%.0f" % idle["requests_per_hour"], ""))
        rows.append(("idle XenStore writes per hour", "%.0f" % idle["writes_per_hour"], "<= 60"))
        rows.append(("  of which memory batches (meminfo_free moved > threshold) per hour",
                     "%.0f" % idle["memory_batches_per_hour"], ""))
        rows.append(("idle wake-ups per minute", "%.1f" % idle["wakeups_per_min"], "<= 2 + memory timer"))
        rows.append(("idle CPU seconds per hour", "%.3f" % idle["cpu_s_per_hour"], ""))
        rows.append(("RSS (MiB)", "%.1f" % idle["rss_mib"], "<= 20"))
    finally:
        bed.close()
    if args.addresses:
        added, deleted = bench_addresses(args.addresses)
        rows.append(("ip addr add -> host p50 (ms, n=%d)" % len(added), "%.2f" % pct(added, 50), "<= 10"))
        rows.append(("ip addr add -> host p99 (ms)", "%.2f" % pct(added, 99), "<= 50"))
        rows.append(("ip addr del -> host p50 / p99 (ms)", "%.2f / %.2f" % (pct(deleted, 50), pct(deleted, 99)), ""))
    for n in args.fleet:
        f = fleet.run(n, args.fleet_idle)
        rows.append(("fleet of %d: all published after start (s)" % n, "%.2f" % f["start"], ""))
        rows.append(("fleet of %d: idle xenstored CPU (%%) / requests per s" % n,
                     "%.3f / %.2f" % (f["idle_cpu"] * 100, f["idle_req"]), ""))
        rows.append(("fleet of %d: mass migration, all republished (s)" % n, "%.2f" % f["mig"], ""))
        rows.append(("fleet of %d: mass migration, xenstored CPU s / requests" % n,
                     "%.2f / %d" % (f["mig_cpu"], f["mig_req"]), ""))
    width = max(len(r[0]) for r in rows)
    print("%-*s  %14s  %s" % (width, "figure", "value", "target"))
    for name, value, target in rows:
        print("%-*s  %14s  %s" % (width, name, value, target))


if __name__ == "__main__":
    main()
