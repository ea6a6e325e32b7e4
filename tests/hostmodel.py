"""What the host sees: two readers of a guest's tree, as dom0 (host-contract.md, section 6).

- LegacyReader: the 2010 xapi of the proposal. Watches data/updated; on each event reads
  attr/PVAddons/* and computes PV_drivers_up_to_date, honouring NotUpgradable.
- CurrentReader: xenopsd today. Watches attr, control, feature, xenserver/attr, ... recursively,
  and on any event re-reads with its depth limits into PV_drivers_version, os_version, networks,
  other and memory.

Each runs a watch thread; `wait_for(predicate, timeout)` waits on its events with a deadline and
returns the moment (time.monotonic) the reader first computed a view that satisfied it.
"""
import queue
import threading
import time

from pyxs import Client

from tests.lab.quickread import QuickReader

PRODUCT_VERSION = (1, 0, 0)   # the host's idea of the current tools version


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


class Reader:
    WATCHES = ()

    def __init__(self, socket_path, domid):
        self.home = "/local/domain/%d" % domid
        self.client = Client(unix_socket_path=socket_path)   # pyxs, for the watches
        self.client.connect()
        self.quick = QuickReader(socket_path)                  # and a direct line for the reads
        self.monitor = self.client.monitor()
        self.cond = threading.Condition()
        self.view = None
        self.history = []   # (time, view) every time the view changed
        self.computed = 0.0
        self._stop = threading.Event()
        for rel in self.WATCHES:
            self.monitor.watch((self.home + "/" + rel).encode(), b"host")
        self._update()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def abs(self, rel):
        return self.home + "/" + rel

    def read_many(self, rels):
        return self.quick.read_many([self.abs(r) for r in rels])

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.monitor.events.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                while True:   # coalesce a burst into one re-read, as the host does
                    self.monitor.events.get_nowait()
            except queue.Empty:
                pass
            try:
                self._update()
            except Exception:
                if self._stop.is_set():
                    return
                raise

    def _update(self):
        began = time.monotonic()   # a view is only as fresh as its first read
        view = self.compute()
        now = time.monotonic()
        with self.cond:
            self.computed = began
            if view != self.view:
                self.view = view
                self.history.append((now, view))
            self.cond.notify_all()

    def wait_for(self, predicate, timeout=2.0, since=None, what="the expected view"):
        """Wait up to `timeout` s for a view computed at or after `since` (time.monotonic) that
        satisfies `predicate`; return when the reader first showed that view. AssertionError
        with the last view if it never comes."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                fresh = since is None or self.computed >= since
                if fresh and self.view is not None and predicate(self.view):
                    return max(self.history[-1][0], since or 0)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("host never showed %s within %.1f s; it shows %r"
                                         % (what, timeout, self.view))
                self.cond.wait(left)

    def close(self):
        self._stop.set()
        self.thread.join(2)
        for c in (self.client, self.quick):
            try:
                c.close()
            except Exception:
                pass


class LegacyReader(Reader):
    """xapi of the 2010 proposal: looks only when data/updated is written."""
    WATCHES = ("data/updated",)

    def compute(self):
        names = ("MajorVersion", "MinorVersion", "MicroVersion", "BuildVersion", "Installed", "NotUpgradable")
        updated, *values = self.read_many(["data/updated"] + ["attr/PVAddons/" + k for k in names])
        pv = dict(zip(names, values))
        major, minor, micro = (_int(pv[k]) for k in ("MajorVersion", "MinorVersion", "MicroVersion"))
        valid = updated is not None and major is not None and minor is not None
        not_upgradable = pv["NotUpgradable"] == "1"
        if not valid:
            up_to_date = False
        elif not_upgradable:
            up_to_date = True
        else:
            up_to_date = micro is not None and (major, minor, micro) >= PRODUCT_VERSION
        return {
            "valid": valid,
            "updated": updated,
            "version": (major, minor, micro, _int(pv["BuildVersion"])) if valid else None,
            "not_upgradable": not_upgradable,
            "installed": pv["Installed"] == "1",
            "up_to_date": up_to_date,
        }


class CurrentReader(Reader):
    """xenopsd today: watches these subtrees, re-reads everything with its depth limits."""
    WATCHES = ("attr", "control", "feature", "xenserver/attr", "data/ts", "data/service",
               "data/pvs_target", "device", "memory/target", "vm-data")

    def tree(self, rel, depth):
        """{relative path: value} of the leaves at most `depth` levels below `rel`, read level by
        level (one round trip to list a level, one to read its leaves)."""
        out, level = {}, [rel]
        for d in range(depth + 1):
            if not level:
                break
            children = self.quick.list_many([self.abs(p) for p in level])
            leaves = [p for p, c in zip(level, children) if not c]
            for p, v in zip(leaves, self.read_many(leaves)):
                if v is not None:
                    out[p] = v
            level = [p + "/" + c for p, cs in zip(level, children) for c in cs] if d < depth else []
        return out

    def compute(self):
        attr = self.tree("attr", 4)
        data = {k: v for k, v in self.tree("data", 1).items()}
        control = self.tree("control", 1)
        sriov = self.tree("xenserver/attr/net-sriov-vf", 3)
        return {
            "pv_drivers_version": pv_drivers_version(attr),
            "not_upgradable": attr.get("attr/PVAddons/NotUpgradable") == "1",
            "os_version": {k: data["data/os_" + k] for k in ("name", "uname", "distro", "majorver", "minorver")
                           if "data/os_" + k in data},
            "networks": networks(attr, "attr/vif/", sriov),
            "memory": {k: data.get("data/meminfo_" + k) for k in ("total", "free")},
            "other": {k.split("/", 1)[1]: v for k, v in control.items()},
            "data_updated": data.get("data/updated"),
        }


def pv_drivers_version(attr):
    """xapi's PV_drivers_version: empty (no PV drivers) unless every present number parses."""
    get = lambda k: attr.get("attr/PVAddons/" + k)
    major, minor = _int(get("MajorVersion")), _int(get("MinorVersion"))
    if major is None or minor is None:
        return {}
    out = {"major": major, "minor": minor, "micro": -1}
    for key, name in (("MicroVersion", "micro"), ("BuildVersion", "build")):
        if get(key) is not None:
            if _int(get(key)) is None:
                return {}
            out[name] = _int(get(key))
    return out


def networks(attr, prefix, sriov=None):
    """xapi's VM_guest_metrics.networks from attr/vif/<devid>/ipv4|ipv6/<n>: a non-integer index
    drops the whole VIF; the lowest ipv4 index also becomes <devid>/ip."""
    vifs = {}
    for key, value in attr.items():
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix):].split("/")
        if len(parts) != 3 or parts[1] not in ("ipv4", "ipv6"):
            continue
        vifs.setdefault(parts[0], []).append((parts[1], parts[2], value))
    for key, value in (sriov or {}).items():
        parts = key.split("/")[-3:]
        if len(parts) == 3 and parts[1] in ("ipv4", "ipv6"):
            vifs.setdefault(parts[0], []).append((parts[1], parts[2], value))
    out = {}
    for devid, addrs in vifs.items():
        if any(_int(n) is None for _, n, _ in addrs):
            continue
        for family, n, value in addrs:
            out["%s/%s/%s" % (devid, family, n)] = value
        v4 = sorted((_int(n), value) for family, n, value in addrs if family == "ipv4")
        if v4:
            out["%s/ip" % devid] = v4[0][1]
    return out
