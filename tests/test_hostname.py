"""data/host_name_dns and data/domain: the host name the host shows (xapi's netbios_name), judged
by the current host model over the real xenstored. The agent runs in a UTS namespace of its own
(tests/utsns.py), which the test renames: the machine's host name is never touched."""
import configparser
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.lab import trace
from tests.utsns import UNSHARE, Renamer
from xe_guest_agent import schema
from xe_guest_agent.collectors import hostname

HOSTS = "127.0.0.1 localhost\n127.0.1.1 %s %s\n::1 localhost ip6-localhost\n"


# -- the collector (pure) -----------------------------------------------------------------------

@pytest.mark.parametrize("name, hosts, expected", [
    ("web1", "", {"data/host_name_dns": "web1"}),
    ("web1.example.com", "", {"data/host_name_dns": "web1", "data/domain": "example.com"}),
    ("web1.example.com.\n", "", {"data/host_name_dns": "web1", "data/domain": "example.com"}),
    ("web1", HOSTS % ("web1.corp.test", "web1"), {"data/host_name_dns": "web1", "data/domain": "corp.test"}),
    ("Web1", HOSTS % ("web1.Corp.test.", "WEB1"), {"data/host_name_dns": "Web1", "data/domain": "Corp.test"}),
    # The FQDN in the name wins; /etc/hosts is not even read then.
    ("db.a.example", HOSTS % ("db.b.example", "db"), {"data/host_name_dns": "db", "data/domain": "a.example"}),
    # Lines that do not name this host, or whose canonical name is not <host>.<domain>: no domain.
    ("web1", HOSTS % ("web10.corp.test", "web10"), {"data/host_name_dns": "web1"}),
    ("web1", "127.0.0.1 localhost web1\n", {"data/host_name_dns": "web1"}),
    ("web1", "10.0.0.1 web1.\n", {"data/host_name_dns": "web1"}),
    ("web1", "# 127.0.1.1 web1.old.test web1\n10.0.0.9 other.test # web1.x.test web1\n", {"data/host_name_dns": "web1"}),
    # The first line that gives one wins, wherever the address family.
    ("web1", "127.0.0.1 localhost web1\n::1 web1.six.test web1\n10.0.0.1 web1.four.test web1\n",
     {"data/host_name_dns": "web1", "data/domain": "six.test"}),
    ("web1", "10.0.0.1 web1.bad/domain web1\n", {"data/host_name_dns": "web1"}),
    # The kernel's "never set", an empty name, a bare dot: nothing to publish.
    ("(none)", "", {}), ("", "", {}), ("\n", "", {}), (".example.com", "", {}),
    ("h\u00e9te", "", {"data/host_name_dns": "hete"}),
])
def test_keys(name, hosts, expected):
    assert hostname.keys(name, lambda: hosts) == expected


def test_hosts_is_read_only_when_the_name_has_no_domain():
    def hosts():
        raise AssertionError("read /etc/hosts for a fully qualified name")
    assert hostname.keys("a.b.c", hosts) == {"data/host_name_dns": "a", "data/domain": "b.c"}


def test_read_hosts_never_raises(tmp_path):
    assert hostname.read_hosts(str(tmp_path / "missing")) == ""
    assert hostname.read_hosts(str(tmp_path)) == ""           # a directory
    os.mkfifo(str(tmp_path / "fifo"))
    assert hostname.read_hosts(str(tmp_path / "fifo")) == ""     # does not block
    (tmp_path / "hosts").write_bytes(b"\xff\xfe\x00\n127.0.1.1 a.b a\n")
    assert hostname.keys("a", lambda: hostname.read_hosts(str(tmp_path / "hosts")))["data/domain"] == "b"


def test_keys_are_declared_once_in_the_schema():
    for key in schema.HOST_NAME_KEYS:
        assert key in schema.OWNED_KEYS and schema.valid_path(key)
        assert any(key == w or key.startswith(w + "/") for w in schema.WATCHED)


# -- the unit ----------------------------------------------------------------------------------

def test_the_unit_leaves_the_agent_in_the_guests_uts_namespace():
    """ProtectHostname=yes runs the service in a UTS namespace of its own, a copy taken at start:
    the agent would still be woken by every sethostname() (the kernel's notice is shared by all
    namespaces) but read its frozen copy, so the host would show the boot-time name for ever.
    A test process cannot stand in for systemd here, so the unit itself is checked; the agent's
    side (it follows the name of the namespace it is in) is tested below."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(ROOT, "packaging", "xe-guest-agent.service"))
    value = unit["Service"].get("ProtectHostname", "no").strip().lower()
    # "private" (systemd 257) is a namespace of its own too.
    assert value in ("no", "false", "0", "off"), "ProtectHostname=%s hides the guest's host name" % value


# -- the host's view ---------------------------------------------------------------------------

def published(view):
    return bool(view["pv_drivers_version"])


def start(guest, current, run_agent, *args):
    agent = run_agent(guest.device, *args, prefix=UNSHARE)
    current.wait_for(published, timeout=5, what="the first publish")
    return agent, Renamer(agent.proc.pid)


def shows(current, host_name, since, timeout=2.0):
    want = {"host_name": host_name} if host_name is not None else {}
    return current.wait_for(lambda v: v["netbios_name"] == want, since=since, timeout=timeout,
                            what="netbios_name %r" % want)


def test_host_name_changes_reach_the_host_at_once(guest, xenstored, current, run_agent):
    machine = socket.gethostname()
    agent, uts = start(guest, current, run_agent)
    try:
        for name, host_name_dns, domain in (("xga-alpha", "xga-alpha", None), ("xga-beta", "xga-beta", None),
                                            ("web1.example.org", "web1", "example.org"),
                                            ("xga-gamma", "xga-gamma", None)):
            t0 = uts.sethostname(name)
            seen = shows(current, name, since=t0)
            assert seen - t0 < 1.0
            assert guest.read("data/host_name_dns") == host_name_dns.encode()
            assert guest.read("data/domain") == (domain.encode() if domain else None)
        # A batch of data/ keys alone: Installed is rewritten so that xenopsd (which does not
        # watch data/) looks, and data/updated comes last, all in one transaction.
        requests = trace.requests(xenstored.trace, guest.domid)
        start_at = max(i for i, r in enumerate(requests) if r[0] == "TRANSACTION_START")
        assert [a.split(" ")[0] for op, a in requests[start_at:] if op in trace.MUTATING] == \
            ["data/domain", "data/host_name_dns", "attr/PVAddons/Installed", "data/updated"]
    finally:
        uts.close()
    assert socket.gethostname() == machine
    assert agent.alive()


def test_an_unset_host_name_removes_both_keys(guest, current, run_agent):
    agent, uts = start(guest, current, run_agent)
    try:
        shows(current, "db.example.net", since=uts.sethostname("db.example.net"))
        shows(current, None, since=uts.sethostname(""))
        assert guest.read("data/host_name_dns") is None and guest.read("data/domain") is None
        shows(current, "back", since=uts.sethostname("back"))
        shows(current, None, since=uts.sethostname("(none)"))
        assert guest.read("data/host_name_dns") is None
    finally:
        uts.close()


def test_the_domain_follows_etc_hosts(guest, current, run_agent, workdir):
    hosts = workdir / "etc" / "hosts"
    agent, uts = start(guest, current, run_agent)
    try:
        shows(current, "app3", since=uts.sethostname("app3"))
        t0 = time.monotonic()
        tmp = workdir / "etc" / "hosts.tmp"
        tmp.write_text(HOSTS % ("app3.corp.test", "app3"))
        os.rename(str(tmp), str(hosts))                      # replaced atomically
        shows(current, "app3.corp.test", since=t0)
        t0 = time.monotonic()
        with open(str(hosts), "w") as f:                     # rewritten in place
            f.write(HOSTS % ("app3.lab.test", "app3"))
        shows(current, "app3.lab.test", since=t0)
        t0 = time.monotonic()
        hosts.unlink()
        shows(current, "app3", since=t0)
        assert guest.read("data/domain") is None
        # A symlink into another directory (as /etc/resolv.conf into /run): its target is watched.
        run = workdir / "run"
        run.mkdir()
        (run / "hosts").write_text(HOSTS % ("app3.run.test", "app3"))
        t0 = time.monotonic()
        os.symlink(str(run / "hosts"), str(hosts))
        shows(current, "app3.run.test", since=t0)
        t0 = time.monotonic()
        with open(str(run / "hosts"), "w") as f:
            f.write(HOSTS % ("app3.moved.test", "app3"))
        shows(current, "app3.moved.test", since=t0)
        # A name of its own with a domain wins over the file.
        shows(current, "app3.own.test", since=uts.sethostname("app3.own.test"))
    finally:
        uts.close()
    assert agent.alive()


def test_a_rename_in_another_namespace_writes_nothing(guest, xenstored, current, run_agent):
    """The kernel wakes every poller for a sethostname() in any UTS namespace; the agent reads its
    own namespace's name, finds it unchanged and writes nothing."""
    agent, uts = start(guest, current, run_agent)
    other = subprocess.Popen(list(UNSHARE) + [sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    stranger = None
    try:
        shows(current, "mine", since=uts.sethostname("mine"))
        before = len(trace.writes(xenstored.trace, guest.domid))
        stranger = Renamer(other.pid)
        for i in range(20):
            stranger.sethostname("stranger-%d" % i)
        # A change of our own after them: once the host shows it, the strangers were handled.
        shows(current, "mine-again", since=uts.sethostname("mine-again"))
        names = [a.split(" ")[0] for _, a in trace.writes(xenstored.trace, guest.domid)[before:]]
        assert names == ["data/host_name_dns", "attr/PVAddons/Installed", "data/updated"], names
    finally:
        if stranger:
            stranger.close()
        other.stdin.close()
        other.wait(5)
        uts.close()


def test_a_removed_key_comes_back(guest, current, run_agent):
    agent, uts = start(guest, current, run_agent)
    try:
        shows(current, "keep.example.com", since=uts.sethostname("keep.example.com"))
        for key in schema.HOST_NAME_KEYS:
            guest.dom0.delete(guest.path(key))
            guest.wait_key(key, lambda v: v is not None, timeout=2)
        assert guest.read("data/host_name_dns") == b"keep" and guest.read("data/domain") == b"example.com"
    finally:
        uts.close()


def test_show_and_status_print_the_keys(xenstored, run_agent, workdir, flag):
    """`show` prints what the agent would publish, `status` reads it back (over the socket, as dom0)."""
    python = ("import ctypes, os, sys; n = b'shown.example.net'; ctypes.CDLL(None).sethostname(n, len(n)); "
              "os.execv(sys.executable, [sys.executable, '-m', 'xe_guest_agent'] + sys.argv[1:])")
    r = subprocess.run(list(UNSHARE) + [sys.executable, "-c", python, "show", "--json", "--config",
                                        str(workdir / "agent.conf"), "--os-root", str(workdir),
                                        "--sysfs", str(workdir / "sys"), "--meminfo", str(workdir / "meminfo")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=30)
    assert r.returncode == 0, r.stderr
    keys = json.loads(r.stdout)
    assert keys["data/host_name_dns"] == "shown" and keys["data/domain"] == "example.net"

    from tests.hostmodel import CurrentReader
    agent = run_agent(xenstored.socket, prefix=UNSHARE)
    reader = CurrentReader(xenstored.socket, 0)
    uts = Renamer(agent.proc.pid)
    try:
        shows(reader, "status.example.org", since=uts.sethostname("status.example.org"), timeout=5)
    finally:
        uts.close()
        reader.close()
    out = subprocess.run([sys.executable, "-m", "xe_guest_agent", "status", "--xenstore", xenstored.socket],
                         stdout=subprocess.PIPE, universal_newlines=True, env=dict(os.environ, PYTHONPATH=ROOT),
                         timeout=30).stdout
    assert "data/host_name_dns = status\n" in out and "data/domain = example.org\n" in out, out
