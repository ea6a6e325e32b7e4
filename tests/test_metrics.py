"""Guest metrics end to end, judged from the host's side: the agent runs as guest 7 on the real
xenstored (inside a private network namespace when addresses matter, with real `ip addr` changes
and a fake sysfs tree that makes chosen interfaces look like VIFs), and CurrentReader (xenopsd
today) must show exactly the expected os_version, memory, networks and other."""
import json
import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from tests.hostmodel import CurrentReader
from tests.lab import trace
from tests.sysfs_tree import SysfsTree
from tests.test_os_info import CASES
from xe_guest_agent.schema import MAX_VALUE as NODE_VALUE_MAX

UNAME = os.uname().release
DEBIAN = {"name": "Debian GNU/Linux 12 (bookworm)", "distro": "debian", "major": "12", "uname": UNAME}
MEMORY = {"total": "2048000", "free": "1024000"}


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "never saw " + what
        time.sleep(0.01)


def config(workdir, **settings):
    (workdir / "agent.conf").write_text("".join("%s = %s\n" % kv for kv in settings.items()))


def write_atomically(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)   # the agent never reads half a file


def at_next_look(guest, current, predicate, timeout, what):
    """xenopsd does not watch data/: a change there alone is seen at its next look, when anything it
    watches fires (dom0 writing vm-data here). Look until the view satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    while True:
        t0 = time.monotonic()
        guest.dom0.write(guest.path("vm-data/look"), b"%f" % t0)
        try:
            return current.wait_for(predicate, since=t0, timeout=0.05, what=what)
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def count(trace_path, op, path):
    return sum(1 for o, args in trace.requests(trace_path, 7) if o == op and args.split(" ")[0] == path)


# --- OS -----------------------------------------------------------------------------------------

def test_os_release_published_as_the_host_reads_it(guest, current, run_agent):
    t0 = time.monotonic()
    run_agent(guest.device)
    current.wait_for(lambda v: v["os_version"] == DEBIAN, since=t0, timeout=5, what="the Debian os_version")


def test_odd_os_release_files_give_safe_values_never_windows(guest, current, run_agent, workdir):
    agent = run_agent(guest.device)
    current.wait_for(lambda v: v["os_version"] == DEBIAN, timeout=5)
    names = {"data/os_name": "name", "data/os_distro": "distro", "data/os_majorver": "major",
             "data/os_minorver": "minor", "data/os_uname": "uname"}
    for case in sorted(c for c in CASES if c.startswith("odd-")):   # SIGHUP re-reads os-release
        shutil.copy(os.path.join(os.path.dirname(__file__), "data", "os-release", case), workdir / "etc" / "os-release")
        want = {names[k]: v[:NODE_VALUE_MAX] for k, v in dict(CASES[case], **{"data/os_uname": UNAME}).items()}
        agent.proc.send_signal(signal.SIGHUP)
        at_next_look(guest, current, lambda v: v["os_version"] == want and v["pv_drivers_version"], 3,
                     "os_version of " + case)
    shown = [view["os_version"] for _, view in current.history]
    assert all(v.get("distro") != "windows" for v in shown)
    assert all(all(ord(c) < 128 for c in x) and x.isprintable() for v in shown for x in v.values())
    assert any(len(v.get("name", "")) == NODE_VALUE_MAX for v in shown)   # odd-huge-value: cut, accepted
    assert agent.alive() and "Traceback" not in agent.log()


# --- memory -------------------------------------------------------------------------------------

def test_memory_follows_meminfo_above_the_threshold(guest, xenstored, current, run_agent, workdir):
    config(workdir, memory_interval=0.2, memory_threshold=4096)
    meminfo = workdir / "meminfo"
    run_agent(guest.device)
    current.wait_for(lambda v: v["memory"] == MEMORY, timeout=5)
    # Memory alone changes nothing xenopsd watches: free reaches the host through the RRD
    # plugin's own watch (no `since`: a full look need not happen; the new value is the proof).
    write_atomically(meminfo, "MemTotal: 2048000 kB\nMemFree: 512000 kB\nMemAvailable: 900000 kB\n")
    current.wait_for(lambda v: v["memory"]["free"] == "900000", timeout=2, what="the timer's re-read")
    writes = count(xenstored.trace, "WRITE", "data/meminfo_free")
    # 4000 KiB is within the threshold: not written. The memory timer also reads unique-domain-id;
    # two such reads after the change mean the file has been read again at least once since.
    ticks = count(xenstored.trace, "READ", "unique-domain-id")
    write_atomically(meminfo, "MemTotal: 2048000 kB\nMemFree: 512000 kB\nMemAvailable: 904000 kB\n")
    wait_until(lambda: count(xenstored.trace, "READ", "unique-domain-id") >= ticks + 2, 3, "two memory ticks")
    assert count(xenstored.trace, "WRITE", "data/meminfo_free") == writes
    assert current.view["memory"]["free"] == "900000"
    # No MemAvailable (kernels before 3.14): MemFree is what free means.
    write_atomically(meminfo, "MemTotal: 2048000 kB\nMemFree: 700000 kB\n")
    current.wait_for(lambda v: v["memory"] == {"total": "2048000", "free": "700000"}, timeout=2)


# --- control/feature-balloon --------------------------------------------------------------------

def test_feature_balloon_on_xapi_and_gone_when_turned_off(guest, current, run_agent, workdir):
    agent = run_agent(guest.device)
    current.wait_for(lambda v: v["other"].get("feature-balloon") == "1", timeout=5, what="feature-balloon")
    agent.stop()
    # Turned off in the configuration: the next run removes what an earlier one published.
    config(workdir, feature_balloon="no")
    t0 = time.monotonic()
    run_agent(guest.device)
    current.wait_for(lambda v: "feature-balloon" not in v["other"] and v["os_version"], since=t0, timeout=5,
                     what="feature-balloon removed")


def test_libxl_feature_balloon_refused_once_never_retried(libxl_guest, xenstored, run_agent, workdir):
    config(workdir, memory_interval=0.2, memory_threshold=0)
    agent = run_agent(libxl_guest.device)
    host = CurrentReader(xenstored.socket, libxl_guest.domid)
    try:
        host.wait_for(lambda v: v["memory"] == MEMORY, timeout=5)
        for free in range(1000, 1006):   # six more batches, each shown to the host
            write_atomically(workdir / "meminfo", "MemTotal: 2048000 kB\nMemAvailable: %d kB\n" % free)
            host.wait_for(lambda v: v["memory"]["free"] == str(free), timeout=2)
        assert "feature-balloon" not in host.view["other"]
    finally:
        host.close()
    assert count(xenstored.trace, "WRITE", "control/feature-balloon") == 1
    assert sum(1 for _, args in trace.requests(xenstored.trace, 7) if "feature-balloon" in args) <= 4
    lines = [line for line in agent.log().splitlines() if "control/feature-balloon" in line]
    assert len(lines) == 1 and lines[0].startswith("INFO:") and "EACCES" in lines[0], agent.log()


# --- addresses, in a private network namespace ---------------------------------------------------

class Net:
    """A private network namespace with veth/bridge links, and the fake sysfs tree in which the
    agent finds chosen ones as VIFs (devid) or SR-IOV VFs. Only tests run `ip`; the agent never does."""

    def __init__(self, sysfs):
        if not shutil.which("ip"):
            pytest.fail("'ip' (iproute2) not found: the address tests need it, and root", pytrace=False)
        self.name = "xga-" + uuid.uuid4().hex[:12]
        self.tree = SysfsTree(sysfs)
        self.peers = 0
        self._run("ip", "netns", "add", self.name)
        self.prefix = ("ip", "netns", "exec", self.name)

    @staticmethod
    def _run(*args):
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        assert r.returncode == 0, "%s: %s" % (" ".join(args), r.stdout)
        return r.stdout

    def ip(self, *args):
        return self._run("ip", "-n", self.name, *args)

    def index(self, name):
        return json.loads(self.ip("-j", "link", "show", "dev", name))[0]["ifindex"]

    def veth(self, name, mac=None):
        self.peers += 1
        self.ip("link", "add", name, *(("address", mac) if mac else ()), "type", "veth", "peer", "name",
                "xgapeer%d" % self.peers)
        return self.index(name)

    def vif(self, name, devid, mac=None):
        return self.tree.vif(name, devid, mac=mac, index=self.veth(name, mac))

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)


@pytest.fixture
def net(workdir):
    n = Net(workdir / "sys")
    yield n
    n.close()


def shows(current, expected, since, timeout=2.0, what=None):
    """Wait until the host's networks map is exactly `expected`; the moment it was first shown."""
    return current.wait_for(lambda v: v["networks"] == expected, since=since, timeout=timeout,
                            what=what or "networks == %r" % expected)


def v4(devid, indexes):
    """The host's map for one VIF's ipv4 addresses {index: address}, with its <devid>/ip rule."""
    out = {"%s/ipv4/%d" % (devid, n): a for n, a in indexes.items()}
    if indexes:
        out["%s/ip" % devid] = indexes[min(indexes)]
    return out


def test_addresses_event_driven_exact_map_and_stable_indexes(guest, current, run_agent, net):
    net.vif("eth0", devid=3)
    net.vif("eth1", devid=5)
    agent = run_agent(guest.device, prefix=net.prefix)
    current.wait_for(lambda v: v["os_version"], timeout=5)
    assert current.view["networks"] == {}
    steps = [
        (("add", "10.0.0.1/32", "dev", "eth0"), {0: "10.0.0.1"}),
        (("add", "10.0.0.2/32", "dev", "eth0"), {0: "10.0.0.1", 1: "10.0.0.2"}),
        (("add", "10.0.0.3/32", "dev", "eth0"), {0: "10.0.0.1", 1: "10.0.0.2", 2: "10.0.0.3"}),
        (("del", "10.0.0.2/32", "dev", "eth0"), {0: "10.0.0.1", 2: "10.0.0.3"}),     # the others keep theirs
        (("add", "10.0.0.9/32", "dev", "eth0"), {0: "10.0.0.1", 1: "10.0.0.9", 2: "10.0.0.3"}),  # fills the gap
        (("del", "10.0.0.1/32", "dev", "eth0"), {1: "10.0.0.9", 2: "10.0.0.3"}),     # <devid>/ip: lowest index
    ]
    for args, indexes in steps:
        t0 = time.monotonic()
        net.ip("addr", *args)
        shows(current, v4(3, indexes), t0)
    t0 = time.monotonic()
    net.ip("-6", "addr", "add", "2001:db8::5/64", "dev", "eth1", "nodad")
    net.ip("addr", "add", "192.168.5.5/24", "dev", "eth1")
    shows(current, dict(v4(3, {1: "10.0.0.9", 2: "10.0.0.3"}), **v4(5, {0: "192.168.5.5"}),
                        **{"5/ipv6/0": "2001:db8::5"}), t0)
    assert agent.alive()


def test_bridge_master_addresses_reported_under_the_enslaved_vif(guest, current, run_agent, net):
    net.vif("eth0", devid=2)
    net.ip("link", "add", "xenbr0", "type", "bridge")
    net.ip("addr", "add", "192.168.7.1/24", "dev", "xenbr0")
    run_agent(guest.device, prefix=net.prefix)
    t0 = time.monotonic()
    net.ip("addr", "add", "10.7.7.7/32", "dev", "eth0")
    shows(current, v4(2, {0: "10.7.7.7"}), t0)
    t0 = time.monotonic()
    net.ip("link", "set", "eth0", "master", "xenbr0")
    shows(current, v4(2, {0: "10.7.7.7", 1: "192.168.7.1"}), t0, what="the bridge's address under devid 2")
    t0 = time.monotonic()
    net.ip("link", "set", "eth0", "nomaster")
    shows(current, v4(2, {0: "10.7.7.7"}), t0, what="the bridge's address gone once eth0 left it")


def test_vif_removed_and_awkward_names(guest, xenstored, current, run_agent, net):
    net.vif("v.0", devid=0)
    net.vif("eth1", devid=1)
    agent = run_agent(guest.device, prefix=net.prefix)
    t0 = time.monotonic()
    net.ip("addr", "add", "10.0.0.1/24", "dev", "v.0", "label", "v.0:web")   # ':' lives in labels
    net.ip("addr", "add", "10.1.0.1/24", "dev", "eth1")
    shows(current, dict(v4(0, {0: "10.0.0.1"}), **v4(1, {0: "10.1.0.1"})), t0)
    t0 = time.monotonic()
    net.ip("link", "del", "eth1")
    shows(current, v4(0, {0: "10.0.0.1"}), t0, what="VIF 1 gone")
    assert guest.read("attr/vif/1") is None   # the whole branch, not just the leaves
    paths = [args.split(" ")[0] for _, args in trace.writes(xenstored.trace, 7)]
    assert paths and not [p for p in paths if "." in p or ":" in p]
    assert "EINVAL" not in agent.log() and agent.alive()


def test_cap_per_family_no_crash_and_freed_slots_refilled(guest, current, run_agent, net, workdir):
    config(workdir, max_addresses=2)
    net.vif("eth0", devid=0)
    agent = run_agent(guest.device, prefix=net.prefix)
    t0 = time.monotonic()
    net.ip("addr", "add", "10.0.0.1/32", "dev", "eth0")
    net.ip("addr", "add", "10.0.0.2/32", "dev", "eth0")
    shows(current, v4(0, {0: "10.0.0.1", 1: "10.0.0.2"}), t0)
    t0 = time.monotonic()
    for i in range(3, 40):
        net.ip("addr", "add", "10.0.0.%d/32" % i, "dev", "eth0")
    for i in range(1, 5):
        net.ip("-6", "addr", "add", "2001:db8::%d/64" % i, "dev", "eth0", "nodad")
    expected = dict(v4(0, {0: "10.0.0.1", 1: "10.0.0.2"}), **{"0/ipv6/0": "2001:db8::1", "0/ipv6/1": "2001:db8::2"})
    shows(current, expected, t0)
    t0 = time.monotonic()
    net.ip("addr", "del", "10.0.0.1/32", "dev", "eth0")   # a waiting one (the lowest) takes the slot
    shows(current, dict(expected, **v4(0, {0: "10.0.0.3", 1: "10.0.0.2"})), t0)
    assert agent.alive() and "Traceback" not in agent.log()


def test_sriov_vf_reported_under_its_vf_id(guest, current, run_agent, net):
    mac = "02:16:3e:5a:00:01"
    net.tree.vf("ens5", mac, index=net.veth("ens5", mac))
    run_agent(guest.device, prefix=net.prefix)
    current.wait_for(lambda v: v["os_version"], timeout=5)
    net.ip("addr", "add", "10.5.0.1/24", "dev", "ens5")
    # dom0 tells the guest which MAC the VF with id 4 has, readable by the guest only.
    t0 = time.monotonic()
    key = "xenserver/device/net-sriov-vf/4/mac"
    guest.dom0.write(guest.path(key), mac.encode())
    for rel in ("xenserver/device", "xenserver/device/net-sriov-vf", "xenserver/device/net-sriov-vf/4", key):
        guest.dom0.set_perms(guest.path(rel), [b"n0", b"r7"])
    shows(current, v4(4, {0: "10.5.0.1"}), t0, what="the VF's address under id 4")
    assert guest.read("xenserver/attr/net-sriov-vf/4/ipv4/0") == b"10.5.0.1"
    assert guest.read("attr/vif") in (None, b"")
    t0 = time.monotonic()
    guest.dom0.delete(guest.path("xenserver/device/net-sriov-vf/4"))
    shows(current, {}, t0, what="no VF once dom0 removed it")


# --- migration ----------------------------------------------------------------------------------

def test_migration_brings_back_addresses_os_and_memory_within_a_second(guest, current, run_agent, net):
    net.vif("eth0", devid=0)
    net.ip("addr", "add", "10.0.0.7/24", "dev", "eth0")
    net.ip("-6", "addr", "add", "2001:db8::7/64", "dev", "eth0", "nodad")
    run_agent(guest.device, prefix=net.prefix)

    def complete(v):
        return (v["networks"] == dict(v4(0, {0: "10.0.0.7"}), **{"0/ipv6/0": "2001:db8::7"})
                and v["os_version"] == DEBIAN and v["memory"] == MEMORY
                and v["other"].get("feature-balloon") == "1" and v["pv_drivers_version"])
    current.wait_for(complete, timeout=5)
    for _ in range(3):
        t0 = time.monotonic()
        guest.migrate()
        t1 = time.monotonic()   # a view computed from here on saw the new, empty tree first
        seen = current.wait_for(complete, since=t1, timeout=1, what="everything back after migration")
        assert seen - t0 < 1.0
