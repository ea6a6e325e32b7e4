"""Dom0-side tools for the fault-injection suite: a transactional writer that fights the agent
for its keys, a whole-tree reader, and what xenstored answered the guest (from its `-T` trace).

Independent of the agent's code on purpose: raw requests on a Unix socket of their own.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time

from tests.lab.quickread import (DIRECTORY, GET_PERMS, READ, TRANSACTION_END, TRANSACTION_START,  # noqa: F401
                                  WRITE, QuickReader, XsError)


class Dom0(QuickReader):
    """A minimal synchronous dom0 connection: one request at a time, errors as exceptions."""

    def request(self, op, *args, tx=0):
        (reply,) = self.pipeline([(op, args, tx)])
        if isinstance(reply, XsError):
            raise reply
        return reply

    def read(self, path, tx=0):
        try:
            return self.request(READ, path.encode(), tx=tx)
        except XsError as e:
            if e.name == "ENOENT":
                return None
            raise

    def tree(self, path):
        """{path: value} of every node at or below `path` that has no children."""
        try:
            children = [c for c in self.request(DIRECTORY, path.encode()).split(b"\0") if c]
        except XsError as e:
            if e.name == "ENOENT":
                return {}
            raise
        if not children:
            value = self.read(path)
            return {} if value is None else {path: value.decode(errors="replace")}
        out = {}
        for c in children:
            out.update(self.tree(path + "/" + c.decode()))
        return out

    def nodes(self, path):
        """Every node at or below `path` (directories too)."""
        out = [path]
        for c in self.request(DIRECTORY, path.encode()).split(b"\0"):
            if c:
                out += self.nodes(path + "/" + c.decode())
        return out

    def owner(self, path):
        """The domid that owns `path` (the first entry of its permissions)."""
        return int(self.request(GET_PERMS, path.encode()).split(b"\0")[0][1:])

    def close(self):
        self.sock.close()


class Hammer:
    """Dom0 transactions that read attr/PVAddons/NotUpgradable and data/updated and write
    data/updated = "hammer-<n>", back to back with short random pauses, until stop(). They run in
    a process of their own, so that the test's threads (the pty bridge, the host model) do not
    slow them down through the GIL.

    Every agent batch writes data/updated too, so each one that overlaps a hammer commit gets
    EAGAIN. Each committed hammer transaction is also a consistent snapshot of the two keys: in
    `snapshots`, NotUpgradable can only differ from the snapshot before if the agent's commit
    came in between, and that commit wrote data/updated as well, so the later snapshot must show
    the agent's data/updated (a number), never the hammer's own older value."""

    def __init__(self, socket_path, home, pause=0.0):
        self.args = [sys.executable, "-m", "tests.lab.faults", "hammer", socket_path, home, str(pause)]
        self.proc = None
        self.snapshots = []    # (NotUpgradable or None, data/updated or None), per commit
        self.conflicts = 0     # our own commits that got EAGAIN

    def start(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root,
                                     env=dict(os.environ, PYTHONPATH=root))
        line = self.proc.stdout.readline()   # "started" once connected
        if line != b"started\n":
            raise RuntimeError("hammer did not start: %r %r" % (line, self.proc.stderr.read()))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=10)
        if self.proc.returncode:
            raise RuntimeError("hammer failed: %s" % err.decode(errors="replace")[-2000:])
        result = json.loads(out)
        self.snapshots = [tuple(s) for s in result["snapshots"]]
        self.conflicts = result["conflicts"]

    def torn(self):
        """Snapshots where NotUpgradable changed but data/updated was not the agent's."""
        out = []
        for before, after in zip(self.snapshots, self.snapshots[1:]):
            if before[0] != after[0] and not (after[1] or "").isdigit():
                out.append((before, after))
        return out


def _hammer(socket_path, home, pause):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    conn = Dom0(socket_path)
    nu, upd = (home + "/attr/PVAddons/NotUpgradable").encode(), (home + "/data/updated").encode()
    snapshots, conflicts, n = [], 0, 0
    print("started", flush=True)
    while not stop:
        # As the agent does: the transaction's id, then the rest in one round trip.
        tx = int(conn.request(TRANSACTION_START, b"").rstrip(b"\0"))
        n += 1
        *seen, _, end = conn.pipeline([(READ, (nu,), tx), (READ, (upd,), tx),
                                       (WRITE, (upd, b"hammer-%d" % n), tx), (TRANSACTION_END, (b"T",), tx)])
        seen = [None if isinstance(v, XsError) and v.name == "ENOENT" else v for v in seen]
        for v in seen + [end]:
            if isinstance(v, XsError) and v.name != "EAGAIN":
                raise v
        if isinstance(end, XsError):
            conflicts += 1
        else:
            snapshots.append([None if v is None else v.decode() for v in seen])
        if pause:
            time.sleep(random.uniform(0, pause))
    json.dump({"snapshots": snapshots, "conflicts": conflicts}, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "hammer":
        _hammer(sys.argv[2], sys.argv[3], float(sys.argv[4]))
