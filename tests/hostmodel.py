"""What the host sees: two readers of a guest's tree, as dom0 (docs/host-contract.md, section 6).

- LegacyReader: the 2010 xapi of the proposal. Watches data/updated; on each event reads
  attr/PVAddons/* and computes PV_drivers_up_to_date, honouring NotUpgradable.
- CurrentReader: xenopsd today. Watches attr, control, feature, xenserver/attr, ... recursively,
  and on any event re-reads with its depth limits into PV_drivers_version, os_version, networks,
  other and memory; a change of data/* alone is seen at its next look. Memory "free" is also
  refreshed on its own by xcp-rrdd's squeezed plugin, which watches data/meminfo_free.

Each runs a watch thread; `wait_for(predicate, timeout)` waits on its events with a deadline and
returns the moment (time.monotonic) the reader first computed a view that satisfied it.
"""
import queue
import re
import threading
import time

from pyxs import Client

from tests.lab.quickread import QuickReader

PRODUCT_VERSION = (1, 0, 0)   # the host's idea of the current tools version


# OCaml's int_of_string, which xapi parses versions and indexes with: an optional sign, decimal
# digits or a 0x/0o/0b/0u prefix, '_' allowed after the first digit; no spaces (Python's int() takes
# " 1\n" and non-ASCII digits, xapi does not); 63-bit (decimal may not overflow, others wrap).
_OCAML_INT = re.compile(r"([-+]?)(0[xX][0-9a-fA-F][0-9a-fA-F_]*|0[oO][0-7][0-7_]*|0[bB][01][01_]*|0[uU][0-9][0-9_]*"
                        r"|[0-9][0-9_]*)\Z")


def _int(text):
    m = _OCAML_INT.match(text) if isinstance(text, str) else None
    if not m:
        return None
    sign, digits = -1 if m.group(1) == "-" else 1, m.group(2).replace("_", "")
    if digits[1:2].isalpha():
        value = int(digits[2:], {"x": 16, "o": 8, "b": 2, "u": 10}[digits[1].lower()])
        if value >= 1 << 63:
            return None
        return (sign * value + (1 << 62)) % (1 << 63) - (1 << 62)   # signed, then wrapped to 63 bits
    value = sign * int(digits)
    return value if -(1 << 62) <= value < 1 << 62 else None


class Reader:
    WATCHES = ()
    SIDE_WATCHES = ()   # (path, token): watches of another host component that reads less

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
        for rel, token in self.SIDE_WATCHES:
            self.monitor.watch((self.home + "/" + rel).encode(), token)
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
                tokens = {self.monitor.events.get(timeout=0.05)[1]}
            except queue.Empty:
                continue
            try:
                while True:   # coalesce a burst into one re-read, as the host does
                    tokens.add(self.monitor.events.get_nowait()[1])
            except queue.Empty:
                pass
            try:
                self._update(tokens)
            except Exception:
                if self._stop.is_set():
                    return
                raise

    def _update(self, tokens=None):
        began = time.monotonic()   # a view is only as fresh as its first read
        side = self.view is not None and tokens is not None and b"host" not in tokens
        view = self.side_look() if side else self.compute()
        now = time.monotonic()
        with self.cond:
            if not side:   # `since` in wait_for means "a full look since"
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

    def side_look(self):
        """The view after only a SIDE_WATCHES component looked."""
        return self.view

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
    # The RRD's memory_internal_free comes from xcp-rrdd's squeezed plugin, which watches
    # data/meminfo_free and reads just that key; xenopsd itself does not watch data/.
    SIDE_WATCHES = (("data/meminfo_free", b"rrdd"),)

    def tree(self, rel, depth):
        """{relative path: value} of the leaves at most `depth` levels below `rel`, read level by
        level (one round trip to list a level, one to read its leaves)."""
        out, level = {}, [rel]
        for d in range(depth + 1):
            if not level:
                break
            children = self.quick.list_many([self.abs(p) for p in level])
            # At the depth limit a node is read whatever lies below it (attr/vif/0/ipv4/0 is read,
            # its children are not); above it only leaves are.
            leaves = [p for p, c in zip(level, children) if not c or d == depth]
            for p, v in zip(leaves, self.read_many(leaves)):
                if v is not None:
                    out[p] = v
            level = [p + "/" + c for p, cs in zip(level, children) for c in cs] if d < depth else []
        return out

    def side_look(self):
        free, = self.read_many(["data/meminfo_free"])
        return dict(self.view, memory=dict(self.view["memory"], free=free))

    def compute(self):
        attr = self.tree("attr", 4)
        data = {k: v for k, v in self.tree("data", 1).items()}
        control = self.tree("control", 1)
        sriov = self.tree("xenserver/attr/net-sriov-vf", 3)
        hotplug_vif, hotplug_vbd = self.read_many(["feature/hotplug/vif", "feature/hotplug/vbd"])
        return {
            "pv_drivers_version": pv_drivers_version(attr),
            "not_upgradable": attr.get("attr/PVAddons/NotUpgradable") == "1",
            "os_version": os_version(data, attr),
            "networks": networks(attr, "attr/vif/", sriov),
            "memory": {k: data.get("data/meminfo_" + k) for k in ("total", "free")},
            "other": other(control, data),
            "data_updated": data.get("data/updated"),
            "netbios_name": netbios_name(data),
            "can_use_hotplug_vif": tristate(hotplug_vif),
            "can_use_hotplug_vbd": tristate(hotplug_vbd),
        }


# xapi's os_version map: XenStore key -> map key (Xapi_guest_agent.os_version).
OS_VERSION = (("data/os_name", "name"), ("data/os_uname", "uname"), ("data/os_distro", "distro"),
              ("data/os_majorver", "major"), ("data/os_minorver", "minor"),
              ("attr/os/spmajor", "spmajor"), ("attr/os/spminor", "spminor"))


def os_version(data, attr=None):
    """xapi's VM_guest_metrics.os_version from data/os_* (and Windows' attr/os/sp*)."""
    found = dict(attr or {}, **data)
    return {name: found[key] for key, name in OS_VERSION if key in found}


def other(control, data=None):
    """xapi's `other`: one entry per control/<x> key, plus data-ts when data/ts exists."""
    out = {k.split("/", 1)[1]: v for k, v in control.items() if "/" in k}
    if (data or {}).get("data/ts") is not None:
        out["data-ts"] = data["data/ts"]
    return out


def netbios_name(data):
    """xapi's VM_guest_metrics.netbios_name: host_name from data/host_name_dns, with "." and
    data/domain after it when that key exists (Xapi_guest_agent.get_initial_guest_metrics)."""
    host, domain = data.get("data/host_name_dns"), data.get("data/domain")
    if host is None:
        return {}
    return {"host_name": host if domain is None else "%s.%s" % (host, domain)}


def tristate(value):
    """xapi's get_tristate, for can_use_hotplug_vif/vbd: "1" yes, "0" no, anything else unspecified."""
    return {"1": "yes", "0": "no"}.get(value, "unspecified")


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


SRIOV_PREFIX = "xenserver/attr/net-sriov-vf/"
# Interface names of the layout older agents wrote (attr/eth0/ip, attr/eth0/ipv6/<j>/addr).
LEGACY_NAMES = ("eth", "xenbr", "eno", "ens", "emp", "enx")


def networks(attr, prefix, sriov=None):
    """xapi's VM_guest_metrics.networks: attr/vif/<devid>/ipv4|ipv6/<n> -> "<devid>/ipv4|ipv6/<n>";
    the lowest ipv4 index also becomes <devid>/ip; a non-integer index drops the whole VIF. When
    attr/vif has no entries, the legacy layout attr/eth<N>/... is read instead. SR-IOV VFs
    (xenserver/attr/net-sriov-vf/<id>/...) are computed the same way and added (xapi concatenates
    the two lists; a VF id equal to a VIF devid would give duplicate keys there, the VF's here)."""
    out = _networks(attr, prefix)
    out.update(_networks(sriov or {}, SRIOV_PREFIX))
    return out


def _networks(tree, prefix):
    vifs = {}
    for key, value in tree.items():
        if key.startswith(prefix):
            parts = key[len(prefix):].split("/")
            addrs = vifs.setdefault(parts[0], [])
            if len(parts) == 3 and parts[1] in ("ipv4", "ipv6"):
                addrs.append((parts[1], parts[2], value))
    if not vifs:
        return _legacy_networks(tree, prefix.rstrip("/").rsplit("/", 1)[0] + "/")
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


def _legacy_networks(tree, root):
    """attr/<eth|xenbr|eno|ens|emp|enx><N>/ip -> N/ip and N/ipv4/0; .../ipv6/<j>/addr -> N/ipv6/<j>."""
    out = {}
    for key, value in tree.items():
        parts = key[len(root):].split("/") if key.startswith(root) else []
        name = next((p for p in LEGACY_NAMES if parts and parts[0].startswith(p)), None)
        if name is None:
            continue
        n = parts[0][len(name):]
        if parts[1:] == ["ip"]:
            out[n + "/ip"] = out[n + "/ipv4/0"] = value
        elif len(parts) == 4 and parts[1] == "ipv6" and parts[3] == "addr":
            out["%s/ipv6/%s" % (n, parts[2])] = value
    return out
