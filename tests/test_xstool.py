"""`xe-guest-agent xenstore read|write|rm|ls|exists|watch`, run as guest 7 through the device path
(the pty bridge that stands in for /dev/xen/xenbus) and judged from dom0's side: dom0 reads what
`write` wrote, writes what `read` must print, and its writes must fire `watch` lines."""
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, cli
from tests.lab import trace
from tests.lab.quickread import WRITE, QuickReader
from tests.test_cli import one_line


def xs(guest, *args, stdin=None):
    """The command as the guest, bytes in and out: CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "xe_guest_agent", "xenstore", args[0], "--xenstore", guest.device]
                          + list(args[1:]), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)


def ok(r):
    assert r.returncode == 0 and r.stderr == b"", r
    return r.stdout


def error_line(r, *words, status=1):
    err = r.stderr.decode()
    assert r.returncode == status and err.startswith("xe-guest-agent: ") and err.count("\n") == 1, r
    assert all(w in err for w in words), r
    return err


def dom0_write(guest, rel, value):
    """A dom0 write of any bytes (pyxs refuses control characters and non-ASCII)."""
    quick = QuickReader(guest.xsd.socket)
    try:
        (reply,) = quick.pipeline([(WRITE, (guest.path(rel) if not rel.startswith("/") else rel.encode(), value), 0)])
        assert reply == b"OK\0", reply
    finally:
        quick.close()


ODD = b"two words\nand a line\t\\ \xc3\xa9 \xff end\n"   # spaces, newlines, a backslash, UTF-8, a bad byte


# -- write: dom0 reads what the guest wrote --------------------------------------------------------

def test_write_lands_exactly_as_given_for_dom0(guest):
    ok(xs(guest, "write", "data/plain", "hello world", "/local/domain/7/data/abs", "-1"))
    assert guest.read("data/plain") == b"hello world" and guest.read("data/abs") == b"-1"
    ok(xs(guest, "write", "data/odd", os.fsdecode(ODD)))   # argv bytes, as a shell passes them
    assert guest.read("data/odd") == ODD
    ok(xs(guest, "write", "data/empty", ""))
    assert guest.read("data/empty") == b""


def test_several_writes_are_one_transaction_all_or_none(guest, xenstored):
    ok(xs(guest, "write", "data/a", "1", "data/b", "2"))
    assert (guest.read("data/a"), guest.read("data/b")) == (b"1", b"2")
    ops = [op for op, _ in trace.requests(xenstored.trace, 7)]
    assert ops[-4:] == ["TRANSACTION_START", "WRITE", "WRITE", "TRANSACTION_END"], ops
    r = xs(guest, "write", "data/c", "3", "memory/target", "1")   # memory/ is the toolstack's
    error_line(r, "xenstore write memory/target: EACCES")
    assert guest.read("data/c") is None and guest.read("memory/target") == b"1048576"


def test_a_conflicting_commit_is_tried_again(guest):
    refused = []

    def conflict_once(op, payload):
        if op == 7 and payload.startswith(b"T") and not refused:   # TRANSACTION_END, commit
            refused.append(op)
            return "EAGAIN"
    guest.bridge.refuse = conflict_once
    ok(xs(guest, "write", "data/a", "1", "data/b", "2"))
    assert refused and (guest.read("data/a"), guest.read("data/b")) == (b"1", b"2")


def test_write_refusals_are_one_line_exit_1(guest):
    error_line(xs(guest, "write", "/local/domain/0/x", "1"), "xenstore write /local/domain/0/x: EACCES")
    error_line(xs(guest, "write", "data/big", "x" * 5000), "at most 4096 bytes")
    assert guest.read("data/big") is None


# -- read: prints what dom0 wrote ------------------------------------------------------------------

def test_read_prints_dom0s_value_exactly_one_a_line(guest):
    dom0_write(guest, "vm-data/odd", ODD)
    dom0_write(guest, "vm-data/plain", b"v1")
    assert ok(xs(guest, "read", "vm-data/plain", "vm-data/odd", "/local/domain/7/vm-data/plain")) == \
        b"v1\n" + ODD + b"\n" + b"v1\n"
    assert ok(xs(guest, "read", "-R", "vm-data/odd")) == ODD   # raw: nothing added
    dom0_write(guest, "vm-data/empty", b"")
    assert ok(xs(guest, "read", "vm-data/empty")) == b"\n"


def test_read_of_a_missing_key_is_exit_1_after_the_values_before_it(guest):
    dom0_write(guest, "vm-data/a", b"A")
    r = xs(guest, "read", "vm-data/a", "vm-data/missing", "vm-data/a")
    assert r.stdout == b"A\n"
    error_line(r, "xenstore read vm-data/missing: no such key")
    error_line(xs(guest, "read", "/local/domain/0/name"), "EACCES")


# -- rm, exists, ls --------------------------------------------------------------------------------

def test_rm_removes_the_subtree_for_dom0(guest):
    for key in ("data/t/a", "data/t/b/c", "data/keep"):   # below data/: the guest's own
        dom0_write(guest, key, b"1")
    ok(xs(guest, "rm", "data/t", "data/nothing"))   # xenstored accepts a missing key under a parent
    assert guest.read("data/t") is None and guest.read("data/keep") == b"1"
    error_line(xs(guest, "rm", "data/no/such"), "xenstore rm data/no/such: no such key")
    dom0_write(guest, "vm-data/host", b"1")
    error_line(xs(guest, "rm", "vm-data/host"), "xenstore rm vm-data/host: EACCES")   # the host's
    error_line(xs(guest, "rm", "memory"), "xenstore rm memory: EACCES")
    assert guest.read("memory/target") == b"1048576"


def test_exists_answers_with_its_status_alone(guest):
    dom0_write(guest, "vm-data/here", b"")
    assert xs(guest, "exists", "vm-data/here", "domid").returncode == 0
    r = xs(guest, "exists", "vm-data/here", "vm-data/gone")
    assert r.returncode == 1 and r.stdout == r.stderr == b""


def test_ls_lists_what_dom0_made(guest):
    for key in ("vm-data/b", "vm-data/a/x", "vm-data/a/y/z"):
        dom0_write(guest, key, b"1")
    assert ok(xs(guest, "ls", "vm-data")) == b"b\na\n"              # xenstored's order: creation
    assert ok(xs(guest, "ls", "-r", "vm-data")) == b"b\na\na/x\na/y\na/y/z\n"
    home = [c.decode() for c in guest.dom0.list(guest.home.encode())]
    assert ok(xs(guest, "ls")).decode().splitlines() == home and "vm-data" in home
    error_line(xs(guest, "ls", "vm-data/none"), "xenstore ls vm-data/none: no such key")
    error_line(xs(guest, "ls", "-r", "vm-data/none"), "xenstore ls vm-data/none: no such key")


# -- watch: dom0's writes fire lines ---------------------------------------------------------------

class Watch:
    """`xenstore watch` as a running guest process; next_line() waits with a deadline."""

    def __init__(self, guest, *args):
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen([sys.executable, "-m", "xe_guest_agent", "xenstore", "watch", "--xenstore",
                                      guest.device] + list(args), env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.buf = b""

    def next_line(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, "no line within %.0f s; so far %r" % (timeout, self.buf)
            if select.select([self.proc.stdout], [], [], left)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                assert chunk, "watch ended: %r" % (self.proc.stderr.read(),)
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def wait(self, timeout=10.0):
        return self.proc.wait(timeout)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def watches():
    started = []
    yield lambda *a: started.append(Watch(*a)) or started[-1]
    for w in started:
        w.close()


def test_watch_prints_a_line_per_dom0_change_and_stops_after_n(guest, watches):
    w = watches(guest, "-n", "4", "vm-data", "/local/domain/7/data/flag")
    assert sorted([w.next_line(), w.next_line()]) == ["/local/domain/7/data/flag", "vm-data"]   # set: fired once
    dom0_write(guest, "vm-data/x", b"1")
    assert w.next_line() == "vm-data/x"
    guest.dom0.delete(guest.path("vm-data/x"))
    assert w.next_line() == "vm-data/x"
    assert w.wait() == 0 and w.proc.stdout.read() == b"" and w.proc.stderr.read() == b""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_watch_stops_on_a_signal_with_exit_0(guest, watches, sig):
    w = watches(guest, "vm-data")
    assert w.next_line() == "vm-data"
    dom0_write(guest, "vm-data/y", b"1")
    assert w.next_line() == "vm-data/y"
    t0 = time.monotonic()
    w.proc.send_signal(sig)
    assert w.wait(5) == 0 and time.monotonic() - t0 < 2 and w.proc.stderr.read() == b""


def test_watch_ignores_events_of_watches_not_its_own(guest, watches):
    # The bridge, unlike the kernel, keeps watches an earlier client left: the events they bring
    # on the same device must not become lines.
    w = watches(guest, "-n", "1", "data")
    assert w.next_line() == "data" and w.wait() == 0
    w = watches(guest, "-n", "2", "vm-data")
    assert w.next_line() == "vm-data"
    dom0_write(guest, "data/noise", b"1")
    dom0_write(guest, "vm-data/z", b"1")
    assert w.next_line() == "vm-data/z" and w.wait() == 0


# -- usage and environment -------------------------------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["read"], "Missing argument"),
    (["read", "a.b"], "'a.b': not a XenStore path"),
    (["read", "data//x"], "not a XenStore path"),
    (["rm", "data/"], "not a XenStore path"),
    (["write", "data/x"], "data/x has no VALUE"),
    (["write", "data/x", "1", "data/y"], "data/y has no VALUE"),
    (["write", "--bogus", "data/x", "1"], "no such option: --bogus"),
    (["write", "d\u00e9j\u00e0", "1"], "not a XenStore path"),
    (["watch", "-n", "0", "data"], "-n"),
    (["watch", "-n", "x", "data"], "-n"),
    (["ls", "--frob"], "--frob"),
    (["frob"], "frob"),
])
def test_usage_errors_are_one_line_exit_2(args, words):
    r = cli("xenstore", *args, env={"XENSTORED_PATH": "/nonexistent"})
    assert one_line(r) and words in r.stderr, r


def test_no_xenstore_here_is_exit_2_and_a_dead_one_exit_1(tmp_path):
    r = cli("xenstore", "read", "domid", env={"XENSTORED_PATH": ""})
    assert one_line(r) and "not a Xen guest?" in r.stderr, r
    from tests.test_cli import refusing_socket
    path = refusing_socket(tmp_path / "sock")
    r = cli("xenstore", "read", "--xenstore", path, "domid")
    assert one_line(r, 1) and "cannot reach XenStore at %s" % path in r.stderr, r
