"""Fault injection: the world misbehaves around a running agent (the real xenstored, the agent as
guest 7 through the pty that stands in for /dev/xen/xenbus). Every scenario ends on what the host
sees: dom0's reading of the guest's whole tree, compared with what `xe-guest-agent show` says the
agent should publish, or the host model's readers. Every failure the world causes must be
logged once, and the agent must neither crash nor stop publishing what it still can.

Fast by default; XGA_SOAK=1 runs the long variants (20 restarts, 50 migrations, more flapping).
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
from pyxs._internal import Op

from tests import hostmodel
from tests.conftest import cli
from tests.lab import faults, trace
from tests.test_core import fence, published

SOAK = os.environ.get("XGA_SOAK", "") not in ("", "0")
TOOLSTACK_KEYS = {"control/platform-feature-multiprocessor-suspend"}


def soak(fast, long):
    return long if SOAK else fast


# -- what the agent should publish, and what dom0 sees ---------------------------------------

def expected(workdir, flag):
    """What `xe-guest-agent show` prints for the test agent's files (the agent's contract)."""
    r = cli("show", "--json", "--flag-file", str(flag), "--config", str(workdir / "agent.conf"),
            "--sysfs", str(workdir / "sys"), "--meminfo", str(workdir / "meminfo"), "--os-root", str(workdir))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def host_tree(xenstored, guest):
    """The guest's attr, data, control and xenserver/attr leaves as dom0 reads them (relative
    paths), less the toolstack's own keys and data/updated (returned apart)."""
    conn = faults.Dom0(xenstored.socket)
    try:
        leaves = {}
        for sub in ("attr", "data", "control", "xenserver/attr"):
            leaves.update(conn.tree(guest.home + "/" + sub))
    finally:
        conn.close()
    rel = {k[len(guest.home) + 1:]: v for k, v in leaves.items() if v != ""}
    for k in TOOLSTACK_KEYS:
        rel.pop(k, None)
    return rel, rel.pop("data/updated", None)


def wait_tree(xenstored, guest, want, timeout, since=None, log=None):
    """Poll dom0's view until it is exactly `want` with data/updated present; seconds taken
    from `since` (default: now). AssertionError with the difference if it never is."""
    t0 = time.monotonic() if since is None else since
    deadline = time.monotonic() + timeout
    while True:
        tree, updated = host_tree(xenstored, guest)
        if tree == want and updated is not None:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            missing = {k: v for k, v in want.items() if tree.get(k) != v}
            extra = {k: v for k, v in tree.items() if k not in want}
            raise AssertionError("dom0 never saw the agent's keys within %.1f s: wrong or missing %r, "
                                 "stale %r, data/updated %r%s" % (timeout, missing, extra, updated,
                                                                  "\n" + log.log()[-3000:] if log else ""))
        time.sleep(0.005)


def caught_up(guest):
    """Return once the agent has handled everything that happened before the call: dom0 removes
    a key and the agent puts it back, in a batch planned after it drained what was queued."""
    guest.dom0.delete(guest.path("attr/PVAddons/Installed"))
    guest.wait_key("attr/PVAddons/Installed", lambda v: v == b"1")


def wait_log(agent, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while text not in agent.log():
        assert time.monotonic() < deadline, "%r never logged:\n%s" % (text, agent.log()[-3000:])
        time.sleep(0.01)


def clean(log):
    assert "Traceback" not in log, log
    return log


# -- xenstored killed and restarted ------------------------------------------------------------

def test_xenstored_restarted_again_and_again(guest, xenstored, run_agent, flag, workdir):
    """N restarts under a running agent: while it idles, just after the flag changed (a batch on
    its way, or nearly), and with a batch certainly lost (xenstored hung first, then killed: the
    agent gives up on the answer and reconnects). Each time the whole tree is back, exactly,
    within 5 s: nothing stale, nothing missing."""
    rounds = soak(6, 20)
    agent = run_agent(guest.device)
    wait_tree(xenstored, guest, expected(workdir, flag), timeout=5)
    took, lost = [], 0
    for i in range(rounds):
        kind = ("idle", "changed", "in-flight")[i % 3]
        if kind != "idle":
            if kind == "in-flight":
                xenstored.proc.send_signal(signal.SIGSTOP)
                sent = guest.bridge.bytes_in
            flag.unlink() if flag.exists() else flag.write_text("")
            if kind == "in-flight":
                lost += 1
                # The agent may be inside a look (the echoes of its last writes) when xenstored
                # stops: it then waits out its 2 s request time-out before it sends again.
                deadline = time.monotonic() + 2.0 + 2.0
                while guest.bridge.bytes_in == sent:
                    assert time.monotonic() < deadline, "the agent sent nothing"
                    time.sleep(0.005)
        want = expected(workdir, flag)
        t0 = time.monotonic()
        guest.restart_xenstored()
        took.append(wait_tree(xenstored, guest, want, timeout=5, since=t0, log=agent))
    assert len(took) == rounds and max(took) < 5, took
    assert agent.alive()
    log = clean(agent.log())
    # One warning per outage the agent noticed (at least each lost batch), one "back" each.
    assert lost <= log.count("lost XenStore") == log.count("XenStore is back") <= rounds, log


# -- transaction conflicts ---------------------------------------------------------------------

def test_conflicting_dom0_writer_never_sees_a_torn_batch(guest, xenstored, legacy, run_agent, flag):
    """A dom0 writer commits transactions on data/updated back to back while the agent publishes
    flag changes: the agent's conflicting commits get EAGAIN and are redone; no snapshot of dom0's
    ever shows NotUpgradable changed without the agent's data/updated of the same commit; the
    final values are right."""
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    hammer = faults.Hammer(xenstored.socket, guest.home)
    hammer.start()
    conflicts, want, toggles = 0, soak(5, 50), 0
    try:
        # Flag changes until enough of the agent's commits have conflicted (most do not: its
        # transactions are short); each must reach XenStore whatever the hammer does.
        while conflicts < want and toggles < 2000:
            on = toggles % 2 == 0
            flag.write_text("") if on else flag.unlink()
            guest.wait_key("attr/PVAddons/NotUpgradable", lambda v: (v == b"1") == on, timeout=5)
            toggles += 1
            if toggles % 20 == 0:
                conflicts = trace.errors(xenstored.trace, guest.domid).get("EAGAIN", 0)
    finally:
        hammer.stop()
    assert conflicts >= want, "only %d of the agent's commits conflicted in %d changes" % (conflicts, toggles)
    assert hammer.snapshots and hammer.torn() == []
    flag.write_text("")
    view = fence(guest, legacy)
    assert view["not_upgradable"] and published(view)
    assert agent.alive()
    log = clean(agent.log())
    assert log.count("publishing failed") <= 1, log


# -- migrations --------------------------------------------------------------------------------

def restored_unannounced(guest, xenstored, run_agent, flag, workdir):
    """An agent published on an xl guest, then the guest restored as a new domain whose kernel
    has not registered its watches again yet: (agent, the tree the host should see)."""
    agent = run_agent(guest.device)
    want = expected(workdir, flag)
    want.pop("control/feature-balloon")   # control/ is read-only for the guest under xl
    wait_tree(xenstored, guest, want, timeout=5)
    quiet(guest)   # its looks at the echoes of its own writes are over: no event is left to look at
    guest.migrate(guest.domid + 1, replay=False)
    return agent, want


def quiet(guest, period=0.2, timeout=5.0):
    """Return once the agent has sent nothing for `period` seconds."""
    deadline = time.monotonic() + timeout
    last, since = guest.bridge.bytes_in, time.monotonic()
    while time.monotonic() - since < period:
        assert time.monotonic() < deadline, "the agent never went quiet"
        time.sleep(0.01)
        if guest.bridge.bytes_in != last:
            last, since = guest.bridge.bytes_in, time.monotonic()


def test_restore_that_brings_no_event_is_seen_by_the_clock_step(libxl_guest, xenstored, run_agent, flag, workdir):
    """A resume may bring no XenStore event at all, and nothing local may change; but the kernel
    steps the clock on every resume (timekeeping_resume), which a CANCEL_ON_SET timerfd sees.
    Here the clock is set to its own value (a step of microseconds), as a resume does."""
    guest = libxl_guest
    agent, want = restored_unannounced(guest, xenstored, run_agent, flag, workdir)
    t0 = time.monotonic()
    time.clock_settime(time.CLOCK_REALTIME, time.time())
    wait_tree(xenstored, guest, want, timeout=1.0, since=t0, log=agent)
    log = clean(agent.log())
    assert "WARNING" not in log and agent.alive(), log


def test_restore_seen_before_any_of_its_events_by_a_local_change(libxl_guest, xenstored, run_agent, flag, workdir):
    """The agent's first news of a restore is a local change (here the flag), not a watch event:
    before writing it, the agent reads the identity, sees the new domid and republishes the lot.
    Seen on a real Xen host: after xl restore, the home held only what changed afterwards."""
    guest = libxl_guest
    agent, want = restored_unannounced(guest, xenstored, run_agent, flag, workdir)
    flag.write_text("")
    want["attr/PVAddons/NotUpgradable"] = "1"
    wait_tree(xenstored, guest, want, timeout=1.0, log=agent)
    guest.bridge.replay_watches()   # the kernel's events, late: nothing more to do
    caught_up(guest)
    wait_tree(xenstored, guest, want, timeout=1.0, log=agent)
    log = clean(agent.log())
    assert "WARNING" not in log and agent.alive(), log


def test_xl_restore_to_a_new_domid_without_unique_domain_id(libxl_guest, xenstored, run_agent, flag, workdir):
    """xl save + xl restore, xl migrate: the xl toolstack writes no unique-domain-id, so the new
    domain is told apart by its domid and by the kernel registering every watch again. Seen on a
    real Xen host: keys missing for minutes after a restore. Each time everything is back within 1 s."""
    guest = libxl_guest
    assert guest.read("unique-domain-id") is None
    flag.write_text("")
    agent = run_agent(guest.device)
    want = expected(workdir, flag)
    want.pop("control/feature-balloon")   # control/ is read-only for the guest under xl
    wait_tree(xenstored, guest, want, timeout=5)
    took = []
    for i in range(soak(4, 20)):
        t0 = time.monotonic()
        guest.migrate(guest.domid + 1)
        took.append(wait_tree(xenstored, guest, want, timeout=1.0, since=t0, log=agent))
        if i == 1:   # a flag change after a restore still reaches the host
            flag.unlink()
            del want["attr/PVAddons/NotUpgradable"]
            wait_tree(xenstored, guest, want, timeout=1.0, log=agent)
    assert max(took) < 1.0, took
    log = clean(agent.log())
    assert "WARNING" not in log and agent.alive(), log


def test_a_restore_costs_the_device_few_requests_before_the_commit(libxl_guest, xenstored, run_agent, flag, workdir):
    """On the real device every request is a round trip through the ring and dom0's xenstored,
    one at a time: on a real Xen host (TCG) a restore took 8 to 11 s to its complete view while
    the agent sent 64 requests before its commit (each owned key read twice in the wiped home).
    A new domain's look lists the keys' folders instead: the identity, a listing per folder,
    then the transaction with its writes."""
    guest = libxl_guest
    flag.write_text("")
    agent = run_agent(guest.device)
    want = expected(workdir, flag)
    want.pop("control/feature-balloon")   # control/ is read-only for the guest under xl
    wait_tree(xenstored, guest, want, timeout=5)
    for _ in range(3):
        caught_up(guest)
        n0 = len(guest.bridge.ops)
        guest.migrate(guest.domid + 1)
        wait_tree(xenstored, guest, want, timeout=1.0, log=agent)
        ops = guest.bridge.ops[n0:]
        upto = ops[:ops.index(Op.TRANSACTION_END) + 1]
        writes = upto.count(Op.WRITE)
        assert writes >= len(want), upto
        # 2 identity reads, 7 listings (4 folders, 3 owned or watched subtrees), START and END,
        # and perhaps the last reads of the change before (caught_up's echoes). It was 49.
        assert len(upto) - writes <= 14, [Op._fields[o] for o in upto]
    log = clean(agent.log())
    assert "WARNING" not in log and agent.alive(), log


def test_migrations_some_to_a_new_domid(guest, xenstored, run_agent, flag, workdir):
    """The tree wiped with a new unique-domain-id, every other time as a new domain (new domid,
    the old one released and removed): each time everything is back within 1 s."""
    flag.write_text("")
    agent = run_agent(guest.device)
    want = expected(workdir, flag)
    wait_tree(xenstored, guest, want, timeout=5)
    took, domids = [], []
    dom0 = faults.Dom0(xenstored.socket)
    for i in range(soak(10, 50)):
        old_home = guest.home
        new = guest.domid + 1 if i % 2 else None
        t0 = time.monotonic()
        guest.migrate(new)
        took.append(wait_tree(xenstored, guest, want, timeout=1.0, since=t0, log=agent))
        domids.append(guest.domid)
        if new:
            assert guest.read("domid") == str(new).encode()
            assert dom0.read(old_home) is None, "the old home came back"
    dom0.close()
    assert max(took) < 1.0, took
    assert len(set(domids)) > 1
    # The host model agrees on the last domain.
    legacy = hostmodel.LegacyReader(xenstored.socket, guest.domid)
    current = hostmodel.CurrentReader(xenstored.socket, guest.domid)
    try:
        legacy.wait_for(lambda v: published(v) and v["not_upgradable"], timeout=1)
        current.wait_for(lambda v: v["pv_drivers_version"] and v["not_upgradable"], timeout=1)
    finally:
        legacy.close()
        current.close()
    log = clean(agent.log())
    assert "WARNING" not in log and agent.alive(), log


# -- refusals: rights, quotas, sizes ---------------------------------------------------------------

def one_batch(agent, *changes):
    """Make `changes` (callables) while the agent is stopped, then SIGHUP and let it go: it sees
    them all at once, so they land in one batch."""
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        for change in changes:
            change()
        agent.proc.send_signal(signal.SIGHUP)
    finally:
        agent.proc.send_signal(signal.SIGCONT)


def refusals(log, key):
    return [line for line in log.splitlines() if "refused" in line and key in line]


def test_node_quota_exhausted_the_rest_still_published(guest, xenstored, run_agent, flag, workdir):
    """xenstored restarted with a per-domain node quota the agent's tree fills exactly: a batch
    that adds a node (NotUpgradable) and changes an existing one (MajorVersion) gets ENOSPC at the
    commit. The existing one is published all the same, the new node is logged once, and it is
    published once the quota has room and the flag changes."""
    agent = run_agent(guest.device)
    wait_tree(xenstored, guest, expected(workdir, flag), timeout=5)
    conn = faults.Dom0(xenstored.socket)
    owned = sum(1 for n in conn.nodes(guest.home) if conn.owner(n) == guest.domid)
    conn.close()
    # xenstored 4.17 refuses a commit that would bring the domain's count to the quota itself:
    # room for exactly what the agent has published now, not one node more.
    xenstored.args = ["--entry-nb", str(owned + 1)]
    time.sleep(0.1)   # the agent's look at its own echoes: a request lost to a restart is the test above's
    guest.restart_xenstored()
    wait_tree(xenstored, guest, expected(workdir, flag), timeout=5)   # it fits, exactly
    conf = workdir / "agent.conf"
    one_batch(agent, lambda: conf.write_text("major_version = 9\n"), lambda: flag.write_text(""))
    want = expected(workdir, flag)
    del want["attr/PVAddons/NotUpgradable"]
    wait_tree(xenstored, guest, want, timeout=5, log=agent)
    for _ in range(3):   # more changes, more batches: no more words about it
        flag.unlink()
        flag.write_text("")
    wait_tree(xenstored, guest, want, timeout=5)
    log = clean(agent.log())
    assert len(refusals(log, "attr/PVAddons/NotUpgradable")) == 1 and "ENOSPC" in log, log
    assert "publishing failed" not in log, log
    # Room again (dom0 removes a node the guest owns): the next change gets it published.
    guest.dom0.delete(guest.path("error"))
    flag.unlink()
    caught_up(guest)   # the agent has seen the flag go
    flag.write_text("")
    wait_tree(xenstored, guest, expected(workdir, flag), timeout=5)
    assert agent.alive()


def test_a_refusal_names_its_request_then_the_agent_goes_on(guest, xenstored, run_agent, flag, workdir):
    """Seen on a real host: `publishing failed (EINVAL)` once per boot, naming nothing. Every
    refusal now names the operation and the path; the agent retries and publishes."""
    refused = []

    def once(op, payload):
        if op == Op.DIRECTORY and payload.startswith(b"attr/vif\0") and not refused:
            refused.append(payload)
            return "EINVAL"
    guest.bridge.refuse = once
    agent = run_agent(guest.device)
    wait_tree(xenstored, guest, expected(workdir, flag), timeout=5)
    log = clean(agent.log())
    assert "publishing failed: xenstore answered EINVAL to DIRECTORY attr/vif; retrying" in log, log


def test_requests_on_the_device_never_share_the_kernels_message_buffer(guest, xenstored, run_agent, flag, workdir):
    """Seen on a real guest: Linux's xenbus device sends a request's body from the file's one
    message buffer when its thread gets to it, so a request written before the last one was
    answered may overwrite it. The agent's pipelined writes went out as `READ "\\0omid"` (EINVAL)
    and as writes to "T", the commit's body (EACCES), and the host saw one key in twenty. The
    bridge sends bodies as that kernel does; the agent must wait for each reply."""
    flag.write_text("")
    agent = run_agent(guest.device, log_level="debug")
    wait_tree(xenstored, guest, expected(workdir, flag), timeout=5, log=agent)
    flag.unlink()
    wait_tree(xenstored, guest, expected(workdir, flag), timeout=5, log=agent)
    log = clean(agent.log())
    assert "WARNING" not in log, log[-3000:]
    assert set(re.findall(r"< ERROR rq=\d+ tx=\d+ (\w+)", log)) <= {"ENOENT"}, log[-3000:]


@pytest.fixture
def notify(tmp_path):
    """A datagram socket standing in for systemd's notify socket: (socket, its path)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(10)
    yield sock, str(tmp_path / "notify")
    sock.close()


def test_ready_for_systemd_while_every_publish_is_refused(guest, xenstored, run_agent, flag, workdir, notify):
    """READY used to wait for a first publish: while every publish was refused (as the pipelined
    requests of a real guest were), systemd killed the agent at its start time-out, again and
    again (the real PVH guest's start job failed after 5 min). READY, saying it retries, must come
    anyway; once xenstored takes the writes, the host sees every key."""
    sock, path = notify
    guest.bridge.refuse = lambda op, payload: "EINVAL" if op == Op.TRANSACTION_START else None
    agent = run_agent(guest.device, env={"NOTIFY_SOCKET": path})
    message = sock.recv(4096).decode()
    assert message.startswith("READY=1\n") and "publishing failed (EINVAL); retrying" in message, message
    assert guest.read("data/updated") is None
    guest.bridge.refuse = None
    wait_tree(xenstored, guest, expected(workdir, flag), timeout=10, log=agent)
    assert agent.alive()


def test_ready_for_systemd_once_the_host_sees_the_keys(guest, xenstored, run_agent, flag, workdir, notify):
    sock, path = notify
    run_agent(guest.device, env={"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=published to XenStore"
    tree, updated = host_tree(xenstored, guest)
    assert tree == expected(workdir, flag) and updated is not None


def test_e2big_on_one_key_the_rest_published_no_retry(guest, xenstored, run_agent, flag, workdir):
    """oxenstored (and the kernel, for a message over its buffer) answer E2BIG: injected at the
    device for data/os_name. Logged once, everything else published, and the same value is not
    sent again (a new value is tried, quietly)."""
    guest.bridge.refuse = lambda op, payload: (
        "E2BIG" if op == Op.WRITE and payload.startswith(b"data/os_name\0") else None)
    agent = run_agent(guest.device)
    want = expected(workdir, flag)
    name = want.pop("data/os_name")
    wait_tree(xenstored, guest, want, timeout=5)
    for _ in range(2):
        agent.proc.send_signal(signal.SIGHUP)   # re-reads os-release: the same value
        flag.write_text("")
        flag.unlink()
    caught_up(guest)
    wait_tree(xenstored, guest, want, timeout=5)
    assert [p for op, p in guest.bridge.refused] == [b"data/os_name\0" + name.encode()], agent.log()   # sent once
    (workdir / "etc" / "os-release").write_text('PRETTY_NAME="Something else"\nID=debian\nVERSION_ID="12"\n')
    agent.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while len(guest.bridge.refused) < 2:
        assert time.monotonic() < deadline, "the new value was never tried"
        time.sleep(0.01)
    want = expected(workdir, flag)
    del want["data/os_name"]
    wait_tree(xenstored, guest, want, timeout=5)
    log = clean(agent.log())
    assert len(refusals(log, "data/os_name")) == 1 and "E2BIG" in log, log
    assert agent.alive()


def test_subtree_made_read_only_mid_run(guest, xenstored, current, run_agent, flag, workdir):
    """dom0 makes attr/PVAddons read-only while the agent runs; one batch then changes a key there
    (MajorVersion), adds one (NotUpgradable) and changes one elsewhere (data/os_majorver): the
    last is published with data/updated, each refused key is logged once, and when dom0 gives the
    rights back both are published without anything else changing."""
    agent = run_agent(guest.device)
    wait_tree(xenstored, guest, expected(workdir, flag), timeout=5)
    pvaddons = [p for p in faults.Dom0(xenstored.socket).nodes(guest.home + "/attr/PVAddons")]
    for p in pvaddons:
        guest.dom0.set_perms(p.encode(), [b"n0", b"r7"])
    before = guest.read("data/updated")
    os_release = workdir / "etc" / "os-release"
    one_batch(agent, lambda: (workdir / "agent.conf").write_text("major_version = 9\n"),
              lambda: flag.write_text(""),
              lambda: os_release.write_text(os_release.read_text().replace('"12"', '"13"')))
    # data/* alone fires none of current xenopsd's watches: dom0's own reading judges this one.
    guest.wait_key("data/os_majorver", lambda v: v == b"13")
    assert guest.read("data/updated") != before
    assert guest.read("attr/PVAddons/MajorVersion") == b"1" and guest.read("attr/PVAddons/NotUpgradable") is None
    for _ in range(3):
        flag.unlink()
        flag.write_text("")
        agent.proc.send_signal(signal.SIGHUP)
    t0 = time.monotonic()
    for p in pvaddons:
        guest.dom0.set_perms(p.encode(), [b"n7"])
    current.wait_for(lambda v: v["pv_drivers_version"].get("major") == 9 and v["not_upgradable"], since=t0,
                     timeout=2, what="the refused keys once the rights are back")
    wait_tree(xenstored, guest, expected(workdir, flag), timeout=2)
    log = clean(agent.log())
    assert len(refusals(log, "attr/PVAddons/MajorVersion")) == 1, log
    assert len(refusals(log, "attr/PVAddons/NotUpgradable")) == 1, log
    assert log.count("EACCES") == 2 and agent.alive(), log


# -- the flag file, flapped --------------------------------------------------------------------

def settled(guest, legacy, present, agent):
    """The host shows NotUpgradable == `present` within 2 s, and still does once the agent has
    caught up with everything (a fence: dom0 removes a key, the agent repairs it)."""
    legacy.wait_for(lambda v: v["not_upgradable"] is present, timeout=2,
                    what="NotUpgradable %s" % present)
    view = fence(guest, legacy)
    assert view["not_upgradable"] is present and published(view), agent.log()[-2000:]


def flap(flag, count, rng):
    """`count` random changes of the flag: create, delete, rename in (an atomic replace when it
    exists), rename out. Raw system calls, as fast as they go."""
    tmp, away = str(flag.parent / ".flag.tmp"), str(flag.parent.parent / "away")
    path = str(flag)
    for _ in range(count):
        op = rng.randrange(4)
        try:
            if op == 0:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            elif op == 1:
                os.unlink(path)
            elif op == 2:
                os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o644))
                os.rename(tmp, path)
            else:
                os.rename(path, away)
        except FileNotFoundError:
            pass


def test_flag_flapped_ten_thousand_times(guest, legacy, run_agent, flag):
    """10,000 changes by create, delete, rename and atomic replace, in rounds that end present or
    absent: after each round the host's value is the file's."""
    rng = random.Random(4)
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    rounds = soak(4, 20)
    for r in range(rounds):
        flap(flag, 10000 // rounds if not SOAK else 10000, rng)
        settled(guest, legacy, flag.exists(), agent)
    assert agent.alive() and "WARNING" not in clean(agent.log())


def test_inotify_queue_overflow_means_a_fresh_look(guest, legacy, run_agent, flag):
    """The agent stopped while the flag's directory fills its inotify queue past the kernel's
    limit with events about another file; then the flag changes, and that event is dropped. The
    overflow is all the agent gets to know: it must look at the file again."""
    limit = int(open("/proc/sys/fs/inotify/max_queued_events").read())
    if limit > 100000:
        pytest.skip("inotify queue limit %d: too many events to overflow it quickly" % limit)
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    noise = str(flag.parent / "noise")
    for present in (True, False, True):
        agent.proc.send_signal(signal.SIGSTOP)
        try:
            for _ in range(limit // 2 + 10):   # two events each: the queue overflows
                os.close(os.open(noise, os.O_CREAT | os.O_WRONLY, 0o644))
                os.unlink(noise)
            flag.write_text("") if present else flag.unlink()   # this event is lost
        finally:
            agent.proc.send_signal(signal.SIGCONT)
        settled(guest, legacy, present, agent)
    assert agent.alive()


# -- hostile inputs ----------------------------------------------------------------------------

GARBAGE_CONFIGS = {
    "binary": bytes(range(256)) * 64,
    "not-utf8": b"# caf\xe9\nmajor_version = 2\n",
    "nul": b"major_version = 1\x00\n",
    "huge-line": b"a" * (3 << 20),
    "huge-comments-then-a-setting": b"# padding\n" * 300000 + b"major_version = 9\n",
    "utf16": "major_version = 2\n".encode("utf-16"),
}


@pytest.mark.parametrize("case", sorted(GARBAGE_CONFIGS))
def test_garbage_config_is_one_line_and_exit_2(case, tmp_path):
    conf = tmp_path / "agent.conf"
    conf.write_bytes(GARBAGE_CONFIGS[case])
    for args in (["run", "--xenstore", str(tmp_path / "nothing")], ["show"]):
        t0 = time.monotonic()
        r = cli(*args, "--config", str(conf), timeout=10)
        assert r.returncode == 2, (args, r)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("xe-guest-agent: ") and len(r.stderr) < 400, r.stderr
        assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_config_that_is_not_a_file_is_one_line_and_exit_2(kind, tmp_path):
    conf = tmp_path / "agent.conf"
    conf.mkdir() if kind == "directory" else os.mkfifo(conf)
    r = cli("show", "--config", str(conf), timeout=10)   # a FIFO must not block the start
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and str(conf) in r.stderr, r


WEIRD = "Ünïcödé 日本語 \U0001F600 \u202eevil\u202c \x1b[31mred\x1b[0m\ttab\r\n"
HOSTILE_OS_RELEASE = {
    # Non-ASCII, bidi overrides, escapes and control characters, invalid UTF-8 and NULs, 300 KB.
    "weird": b"\xff\xfe garbage line\n" + ('PRETTY_NAME="%s"\n' % (WEIRD * 3000).replace("\n", " ")).encode()
             + b'ID="deb\x00ian\xc3"\n' + 'VERSION_ID="١٢.٣"\n'.encode() + b'NAME="' + b"x" * 100000 + b'"\n',
    # Plain ASCII far over the bound: cut to what the default daemon's 2048-byte node takes.
    "long": b'PRETTY_NAME="' + b"A" * 5000 + b'"\nID=debian\nVERSION_ID="12.4"\n',
}


@pytest.mark.parametrize("case", sorted(HOSTILE_OS_RELEASE))
def test_hostile_os_release_gives_bounded_safe_values(case, guest, xenstored, current, run_agent, flag, workdir):
    """Every data/os_* value the host reads is printable ASCII within the 2024-byte bound, and the
    real xenstored takes them all: nothing refused, nothing missing that `show` promises."""
    (workdir / "etc" / "os-release").write_bytes(HOSTILE_OS_RELEASE[case])
    agent = run_agent(guest.device)
    want = expected(workdir, flag)
    wait_tree(xenstored, guest, want, timeout=5, log=agent)
    os_keys = {k: v for k, v in host_tree(xenstored, guest)[0].items() if k.startswith("data/os_")}
    assert os_keys.get("data/os_name"), os_keys
    for key, value in os_keys.items():
        assert 0 < len(value.encode()) <= 2024 and all(ord(c) < 128 for c in value) and value.isprintable(), (key, value[:80])
    if case == "long":   # cut, not dropped: as long as the daemon's node limit allows
        assert os_keys["data/os_name"] == "A" * len(os_keys["data/os_name"]) and len(os_keys["data/os_name"]) > 1900
    current.wait_for(lambda v: v["os_version"].get("name") == os_keys["data/os_name"], timeout=2)
    assert "WARNING" not in clean(agent.log())


def test_sighup_bad_config_keeps_running_then_good_config_applies(guest, legacy, run_agent, workdir):
    """SIGHUP with a broken config (not UTF-8, a bad value, an unknown key, far too big): one line
    each, the agent keeps running and publishing its old settings; SIGHUP with a good one: the
    host sees the new version."""
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    conf = workdir / "agent.conf"
    bad = [b"\xff\xfe\x00", b"major_version = two\n", b"no_such_key = 1\n", b"x" * (3 << 20)]
    for i, text in enumerate(bad):
        conf.write_bytes(text)
        agent.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while agent.log().count("reload refused") < i + 1:
            assert time.monotonic() < deadline and agent.alive(), agent.log()
            time.sleep(0.01)
    view = fence(guest, legacy)
    assert view["version"] == (1, 0, 0, 0)        # the old settings, still published
    conf.write_text("major_version = 3\nminor_version = 4\nbuild_version = 77\n")
    t0 = time.monotonic()
    agent.proc.send_signal(signal.SIGHUP)
    legacy.wait_for(lambda v: v["version"] == (3, 4, 0, 77), since=t0, timeout=2, what="the reloaded version")
    log = clean(agent.log())
    assert log.count("reload refused") == len(bad) and log.count("configuration reloaded") == 1, log
    assert all(len(line) < 400 for line in log.splitlines()), log   # one bounded line each
    assert agent.alive()


def test_odd_interface_names_and_thousands_of_addresses(guest, xenstored, current, run_agent, workdir):
    """The agent in a network namespace of its own whose VIF is called eth0.100 (a '.' is illegal in
    a XenStore path) and gets 3,000 IPv4 and 300 IPv6 addresses at once, labelled eth0.100:<n>
    (a ':' too): the host sees at most 16 per family, integer indexes, the first address kept
    at index 0; when they go, nothing of them is left."""
    from tests.sysfs_tree import SysfsTree
    for tool in ("unshare", "nsenter", "ip"):
        assert shutil.which(tool), "%s not found (util-linux, iproute2)" % tool
    sysfs = SysfsTree(workdir / "sys")
    sysfs.vif("eth0.100", devid=0, index=2)
    # A veth (no dummy driver everywhere); its real index goes into the fake sysfs tree.
    setup = ("ip link add eth0.100 type veth peer name p0 && ip link set eth0.100 addrgenmode none && "
             "ip link set p0 up && ip link set eth0.100 up && "
             "ip addr add 10.0.0.1/24 dev eth0.100 label eth0.100:main && "
             "ip -o link show dev eth0.100 | cut -d: -f1 > %s && exec \"$@\""
             % os.path.join(sysfs.dir("eth0.100"), "ifindex"))
    agent = run_agent(guest.device, prefix=["unshare", "--net", "sh", "-c", setup, "sh"])
    first = {"0/ipv4/0": "10.0.0.1", "0/ip": "10.0.0.1"}
    current.wait_for(lambda v: v["networks"] == first, timeout=5, what="the VIF's one address")

    def batch(command):
        lines = ["addr %s 10.%d.%d.%d/32 dev eth0.100 label eth0.100:%d" % (command, 1 + i // 65536, i // 256 % 256,
                                                                          i % 256, i % 1000) for i in range(3000)]
        lines += ["addr %s 2001:db8::%x/128 dev eth0.100 nodad" % (command, i + 1) for i in range(300)]
        lines = [line.replace(" nodad", "") if command == "del" else line for line in lines]
        r = subprocess.run(["nsenter", "-t", str(agent.proc.pid), "-n", "ip", "-batch", "-"],
                           input="\n".join(lines) + "\n", universal_newlines=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        assert r.returncode == 0, r.stdout[-2000:]

    def capped(v):
        nets = v["networks"]
        v4 = sorted(int(k.split("/")[2]) for k in nets if "/ipv4/" in k)
        v6 = sorted(int(k.split("/")[2]) for k in nets if "/ipv6/" in k)
        return v4 == list(range(16)) and v6 == list(range(16)) and nets["0/ip"] == "10.0.0.1"

    t0 = time.monotonic()
    batch("add")
    current.wait_for(capped, since=t0, timeout=5, what="16 addresses per family, 10.0.0.1 first")
    vif_keys = {k: v for k, v in host_tree(xenstored, guest)[0].items() if k.startswith("attr/vif/")}
    assert len(vif_keys) == 32 and all(k.split("/")[2] == "0" for k in vif_keys), vif_keys
    t0 = time.monotonic()
    batch("del")
    current.wait_for(lambda v: v["networks"] == first, since=t0, timeout=5, what="only the first address left")
    tree = host_tree(xenstored, guest)[0]
    assert {k: v for k, v in tree.items() if k.startswith("attr/vif")} == {"attr/vif/0/ipv4/0": "10.0.0.1"}
    conn = faults.Dom0(xenstored.socket)
    assert conn.tree(guest.home + "/attr/vif/0/ipv6") == {}, "an emptied branch was left behind"
    conn.close()
    assert agent.alive() and "WARNING" not in clean(agent.log())


# -- SIGTERM, whatever the agent is doing ------------------------------------------------------

# Exit status 0 within 1 s: idle is test_core's; here reconnecting, a request hanging, the first
# request hanging, xenstored gone mid-batch, and busy with a flood of changes and conflicts.

def stop_within_a_second(agent):
    rc, took = agent.stop(timeout=5)
    assert rc == 0 and took < 1.0, (rc, took, agent.log()[-2000:])
    clean(agent.log())


def test_sigterm_while_reconnecting(xenstored, run_agent):
    agent = run_agent(xenstored.socket)
    r = hostmodel.LegacyReader(xenstored.socket, 0)
    try:
        r.wait_for(published, timeout=5)
    finally:
        r.close()
    xenstored.kill()
    wait_log(agent, "lost XenStore")
    time.sleep(0.3)   # in its back-off, between attempts
    stop_within_a_second(agent)


def test_sigterm_while_a_request_hangs_on_a_stopped_xenstored(guest, xenstored, legacy, run_agent, flag):
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    xenstored.proc.send_signal(signal.SIGSTOP)
    try:
        sent = guest.bridge.bytes_in
        flag.write_text("")    # a batch goes out and gets no answer
        deadline = time.monotonic() + 2
        while guest.bridge.bytes_in == sent:
            assert time.monotonic() < deadline, "the agent sent nothing"
            time.sleep(0.005)
        time.sleep(0.2)
        stop_within_a_second(agent)
    finally:
        xenstored.proc.send_signal(signal.SIGCONT)


def test_first_request_of_a_connection_is_a_bounded_read(guest, xenstored, run_agent, legacy):
    """Linux registers a watch synchronously: the agent's write() of a WATCH blocks, in D state,
    until xenstored answers. So every connection starts with a read (asynchronous, bounded by the
    agent's time-out): a xenstored not answering yet costs retries, never a hung agent. The pty
    cannot block a write, so this is pinned on the wire: with xenstored stopped, the agent sends
    reads only, again and again, and publishes once xenstored goes on."""
    xenstored.proc.send_signal(signal.SIGSTOP)
    try:
        agent = run_agent(guest.device)
        deadline = time.monotonic() + 10
        while guest.bridge.ops.count(Op.READ) < 2:   # two connections (each sends one read, unanswered)
            assert time.monotonic() < deadline and agent.alive(), agent.log()
            time.sleep(0.05)
        assert Op.WATCH not in guest.bridge.ops, guest.bridge.ops
    finally:
        xenstored.proc.send_signal(signal.SIGCONT)
    legacy.wait_for(published, timeout=10, what="the keys once xenstored answers")
    assert agent.alive()


def test_sigterm_at_start_with_xenstored_hung(guest, xenstored, run_agent):
    xenstored.proc.send_signal(signal.SIGSTOP)
    try:
        agent = run_agent(guest.device)
        deadline = time.monotonic() + 10
        while guest.bridge.bytes_in == 0:   # its first request is out: it is inside the loop
            assert time.monotonic() < deadline and agent.alive(), agent.log()
            time.sleep(0.005)
        time.sleep(0.1)
        stop_within_a_second(agent)
    finally:
        xenstored.proc.send_signal(signal.SIGCONT)


def test_sigterm_while_xenstored_is_down_mid_batch(guest, xenstored, legacy, run_agent, flag):
    """xenstored dies with a batch in flight through the device: the agent waits for an answer
    that will never come (then reconnects, and waits again)."""
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    legacy.close()
    guest.dom0.close()
    xenstored.kill()
    guest.bridge.reset()
    flag.write_text("")
    time.sleep(0.3)
    stop_within_a_second(agent)


def test_sigterm_during_a_flood_and_conflicts(guest, xenstored, legacy, run_agent, flag):
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    hammer = faults.Hammer(xenstored.socket, guest.home)
    hammer.start()
    try:
        flap(flag, 3000, random.Random(1))
        stop_within_a_second(agent)
    finally:
        hammer.stop()
