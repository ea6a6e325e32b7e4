"""Fleet benchmark: N guests, each its own agent process on its own pty-bridged ring, on ONE
xenstored: what the fleet costs dom0's xenstored at idle and during a mass migration.

    python3 -m tests.bench.fleet [--guests 10 50] [--idle 20]

For each N: start N guests and agents, wait until every guest's keys are published, measure
xenstored's CPU and the guests' requests (its -T trace) over an idle window, then migrate all N
at once (tree wiped and rebuilt, new unique-domain-id) and measure the time until every guest is
fully republished, and xenstored's CPU and the requests it took.

Every agent reads the same fixed copy of /proc/meminfo, taken when the fleet starts, so that the
figures are the fleet's own and not this machine's memory churn.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tests.lab import daemon, trace  # noqa: E402
from tests.lab.quickread import QuickReader  # noqa: E402

KEYS = ("attr/PVAddons/MajorVersion", "attr/PVAddons/Installed", "data/os_uname", "data/updated")


class RequestCount(object):
    """How many requests the guests `domids` have sent, from xenstored's -T trace. Each call reads
    only what was appended since the last one, in one pass for the whole fleet (trace.requests()
    reads the whole file once per guest: minutes for a fleet of 50 on a busy machine), so that a
    count is of the trace as it stood when it was taken."""

    def __init__(self, path, domids):
        self.path, self.domids = path, set(str(d) for d in domids)
        self.offset, self.conns, self.pending, self.total = 0, set(), False, 0

    def __call__(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        data = data[:data.rfind(b"\n") + 1]   # whole lines only: the rest is read next time
        self.offset += len(data)
        for line in data.decode(errors="replace").splitlines():
            m = trace._LINE.match(line)
            if m:
                direction, conn, op, args = m.groups()
                if direction == "IN" and op == "INTRODUCE" and args.split(" ")[0] in self.domids:
                    self.pending = True
                elif direction == "IN" and conn in self.conns:
                    self.total += 1
                continue
            m = trace._CREATE.match(line)
            if m and self.pending:
                self.conns.add(m.group(1))
                self.pending = False
        return self.total


def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Fleet:
    def __init__(self, n):
        self.dir = tempfile.mkdtemp(prefix="xga-fleet-")
        daemon.ensure_built()
        self.xsd = daemon.Xenstored(self.dir, trace=True).start()
        self.guests = [daemon.Guest(self.xsd, domid) for domid in range(1, n + 1)]
        self.quick = QuickReader(self.xsd.socket)
        self.requests = RequestCount(self.xsd.trace, range(1, n + 1))
        os.makedirs(os.path.join(self.dir, "etc"))
        conf = os.path.join(self.dir, "agent.conf")
        open(conf, "w").close()
        meminfo = os.path.join(self.dir, "meminfo")
        shutil.copyfile("/proc/meminfo", meminfo)
        path = [ROOT] + [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        self.agents = [subprocess.Popen(
            [sys.executable, "-S", "-m", "xe_guest_agent", "run", "--xenstore", g.device, "--config", conf,
             "--flag-file", os.path.join(self.dir, "etc", "flag"), "--sysfs", os.path.join(self.dir, "sys"),
             "--os-root", self.dir, "--meminfo", meminfo], env=env, cwd=self.dir) for g in self.guests]

    def complete(self, guest, uuid=None):
        values = self.quick.read_many([guest.home + "/" + k for k in KEYS + ("unique-domain-id",)])
        return all(values[:-1]) and (uuid is None or values[-1] == uuid)

    def wait_all(self, timeout, uuids=None, t0=None):
        """Seconds from t0 (default now) until every guest is complete (one dom0 reader polls
        every 5 ms)."""
        t0 = time.monotonic() if t0 is None else t0
        pending = list(self.guests)
        while pending:
            if time.monotonic() - t0 > timeout:
                raise SystemExit("%d guests not published within %.0f s" % (len(pending), timeout))
            pending = [g for g in pending if not self.complete(g, uuids and uuids[g.domid])]
            if pending:
                time.sleep(0.005)
        return time.monotonic() - t0

    def close(self):
        for a in self.agents:
            a.terminate()
        for a in self.agents:
            a.wait(5)
        self.quick.close()
        for g in self.guests:
            g.close()
        self.xsd.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def run(n, idle, say=lambda text: None):
    """One fleet of `n`; `say(text)` is told what is going on."""
    say("fleet of %d: starting xenstored, %d guests and %d agents" % (n, n, n))
    fleet = Fleet(n)
    try:
        start = fleet.wait_all(60)
        say("fleet of %d: all published after %.2f s; idle window of %.0f s" % (n, start, idle))
        time.sleep(2)   # let the start-up echoes settle before the idle window
        pid = fleet.xsd.proc.pid
        cpu0, req0, t0 = cpu_seconds(pid), fleet.requests(), time.monotonic()
        time.sleep(idle)   # the window measured is one where nothing happens
        elapsed = time.monotonic() - t0
        idle_cpu, idle_req = (cpu_seconds(pid) - cpu0) / elapsed, (fleet.requests() - req0) / elapsed
        say("fleet of %d: mass migration" % n)
        cpu0, req0, t0 = cpu_seconds(pid), fleet.requests(), time.monotonic()
        for g in fleet.guests:
            g.migrate()
        uuids = {g.domid: g.uuid for g in fleet.guests}
        mig = fleet.wait_all(60, uuids, t0)   # from the first migration on
        time.sleep(1)
        mig_cpu, mig_req = cpu_seconds(pid) - cpu0, fleet.requests() - req0
        return {"n": n, "start": start, "idle_cpu": idle_cpu, "idle_req": idle_req, "mig": mig,
                "mig_cpu": mig_cpu, "mig_req": mig_req}
    finally:
        fleet.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guests", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--idle", type=float, default=20.0)
    args = ap.parse_args()
    rows = [run(n, args.idle, say=lambda text: sys.stderr.write(text + "\n")) for n in args.guests]
    print("%6s %14s %18s %16s %18s %18s %16s" % ("guests", "all up (s)", "xsd CPU idle (%)", "idle req/s",
                                                  "mass mig. (s)", "mig. xsd CPU (s)", "mig. requests"))
    for r in rows:
        print("%6d %14.2f %18.3f %16.2f %18.2f %18.3f %16d" % (
            r["n"], r["start"], r["idle_cpu"] * 100, r["idle_req"], r["mig"], r["mig_cpu"], r["mig_req"]))


if __name__ == "__main__":
    main()
