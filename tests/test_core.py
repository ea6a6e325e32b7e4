"""The core agent, end to end: the real xenstored, the agent as guest 7 through a pty standing in
for /dev/xen/xenbus, and the host's readers judging what the host sees."""
import os
import signal
import time

from tests.lab import trace

VERSION = (1, 0, 0, 0)


def published(view):
    return view["valid"] and view["version"] == VERSION


def test_start_publishes_versions_as_the_host_reads_them(guest, legacy, current, run_agent):
    t0 = time.monotonic()
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5, what="the version keys")
    assert legacy.view["up_to_date"] and not legacy.view["not_upgradable"]
    current.wait_for(lambda v: v["pv_drivers_version"], since=t0, timeout=2)
    assert current.view["pv_drivers_version"] == {"major": 1, "minor": 0, "micro": 0, "build": 0}
    assert guest.read("attr/PVAddons/Installed") == b"1"
    assert guest.read("attr/PVAddons/NotUpgradable") is None
    assert agent.alive()


def test_start_batch_order_data_then_attr_then_updated(guest, xenstored, legacy, run_agent):
    run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    paths = [args.split(" ")[0] for op, args in trace.writes(xenstored.trace, guest.domid)]
    assert paths[-1] == "data/updated"
    assert set(paths) >= {"attr/PVAddons/MajorVersion", "attr/PVAddons/MinorVersion", "attr/PVAddons/MicroVersion",
                          "attr/PVAddons/BuildVersion", "attr/PVAddons/Installed"}
    ops = [op for op, _ in trace.requests(xenstored.trace, guest.domid)]
    first_write = ops.index("WRITE")
    assert "TRANSACTION_START" in ops[:first_write], "the start batch must be one transaction"


def test_flag_created_and_deleted(guest, legacy, run_agent, flag):
    run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    for _ in range(3):
        before = legacy.view["updated"]
        t0 = time.monotonic()
        flag.write_text("")
        legacy.wait_for(lambda v: v["not_upgradable"] and v["up_to_date"], since=t0, what="NotUpgradable")
        assert legacy.view["updated"] != before
        before = legacy.view["updated"]
        t0 = time.monotonic()
        flag.unlink()
        legacy.wait_for(lambda v: not v["not_upgradable"], since=t0, what="NotUpgradable gone")
        assert legacy.view["updated"] != before
    assert guest.read("attr/PVAddons/NotUpgradable") is None


def test_flag_renamed_in_and_out_and_atomically_replaced(guest, legacy, run_agent, flag):
    run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    tmp = flag.parent / "tmp.XXXX"
    tmp.write_text("")
    t0 = time.monotonic()
    os.rename(tmp, flag)                       # renamed in
    legacy.wait_for(lambda v: v["not_upgradable"], since=t0)
    tmp.write_text("new")
    t0 = time.monotonic()
    os.rename(tmp, flag)                       # atomic replace: still present
    away = flag.parent.parent / "elsewhere"
    os.rename(flag, away)                      # renamed out (to another directory)
    legacy.wait_for(lambda v: not v["not_upgradable"], since=t0)
    t0 = time.monotonic()
    tmp.write_text("again")
    os.rename(tmp, flag)
    legacy.wait_for(lambda v: v["not_upgradable"], since=t0)


def test_flag_symlinks_follow_their_target(guest, legacy, run_agent, flag, workdir):
    target_dir = workdir / "appliance"
    target_dir.mkdir()
    target = target_dir / "locked"
    run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    t0 = time.monotonic()
    os.symlink(target, flag)                   # dangling: absent
    target.write_text("")                      # the target appears in another directory
    legacy.wait_for(lambda v: v["not_upgradable"], since=t0, what="a symlink to an existing target")
    t0 = time.monotonic()
    target.unlink()                            # dangling again
    legacy.wait_for(lambda v: not v["not_upgradable"], since=t0, what="a dangling symlink counted absent")
    other = workdir / "etc" / "other"
    other.write_text("")
    t0 = time.monotonic()
    tmp = flag.parent / "link.tmp"
    os.symlink(other, tmp)
    os.rename(tmp, flag)                       # re-pointed atomically
    legacy.wait_for(lambda v: v["not_upgradable"], since=t0, what="a re-pointed symlink")


def test_flag_present_at_start_and_stale_key_removed(guest, legacy, run_agent, flag):
    flag.write_text("")
    agent = run_agent(guest.device)
    legacy.wait_for(lambda v: published(v) and v["not_upgradable"], timeout=5)
    agent.stop()
    # A previous run left NotUpgradable behind; the file is gone now.
    flag.unlink()
    t0 = time.monotonic()
    run_agent(guest.device)
    legacy.wait_for(lambda v: published(v) and not v["not_upgradable"], since=t0, timeout=5)


def fence(guest, legacy):
    """The host's view once the agent has caught up with everything done before this call.

    dom0 removes Installed and waits for the agent's repair, twice. The first repair may be
    planned before the agent has read file events queued ahead of the removal (one loop turn can
    see the XenStore event before the inotify one); the turn after it reads them, so the second
    repair comes after every one of them, and the tree is final. The host's view of that tree is
    the one to judge."""
    for _ in range(2):
        guest.dom0.delete(guest.path("attr/PVAddons/Installed"))
        guest.wait_key("attr/PVAddons/Installed", lambda v: v == b"1")
    updated = guest.read("data/updated").decode()
    legacy.wait_for(lambda v: v["updated"] == updated, timeout=5, what="the repaired tree")
    return legacy.view


def test_flapping_ends_right(guest, legacy, run_agent, flag):
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    for final in (True, False, True):
        for i in range(500):
            flag.unlink() if i % 2 else flag.write_text("")   # an even count: ends absent
        if final:
            flag.write_text("")
        assert fence(guest, legacy)["not_upgradable"] is final, agent.log()[-3000:]
        assert (guest.read("attr/PVAddons/NotUpgradable") == b"1") is final


def test_nothing_written_when_nothing_changed(guest, xenstored, legacy, run_agent, flag, workdir):
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    # Things that wake the agent without changing what it publishes.
    (flag.parent / "unrelated").write_text("")
    (flag.parent / "unrelated").unlink()
    agent.proc.send_signal(signal.SIGHUP)     # reload: same config
    # Our own echo and the reload are handled once the agent answers a change we do make:
    t0 = time.monotonic()
    flag.write_text("")
    legacy.wait_for(lambda v: v["not_upgradable"], since=t0)
    before = len(trace.writes(xenstored.trace, guest.domid))
    agent.stop()
    # A second agent finds everything already right: it writes nothing, not even data/updated.
    second = run_agent(guest.device)
    deadline = time.monotonic() + 5
    while "ready" not in second.log() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "ready" in second.log(), second.log()
    assert second.alive()
    assert len(trace.writes(xenstored.trace, guest.domid)) == before
    # ...and after the first agent's batches, only the flag change was written.
    assert [a.split(" ")[0] for _, a in trace.writes(xenstored.trace, guest.domid)[-2:]] == \
        ["attr/PVAddons/NotUpgradable", "data/updated"]


def test_keys_removed_or_changed_by_someone_else_come_back(guest, legacy, current, run_agent):
    run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    t0 = time.monotonic()
    guest.dom0.delete(guest.path("attr/PVAddons/MajorVersion"))
    current.wait_for(lambda v: v["pv_drivers_version"].get("major") == 1, since=t0, timeout=1,
                     what="MajorVersion restored")
    t0 = time.monotonic()
    guest.dom0.write(guest.path("attr/PVAddons/MinorVersion"), b"x")
    current.wait_for(lambda v: v["pv_drivers_version"].get("minor") == 0, since=t0, timeout=1,
                     what="MinorVersion repaired")
    # data/updated changed by the toolstack (soft reset writes 1): not fought.
    guest.dom0.write(guest.path("data/updated"), b"1")
    t0 = time.monotonic()
    guest.dom0.delete(guest.path("attr/PVAddons/Installed"))
    current.wait_for(lambda v: guest.read("attr/PVAddons/Installed") == b"1", since=t0, timeout=1)
    assert guest.read("data/updated") != b"1"   # the repair bumped it, once


def test_migration_republishes_within_a_second(guest, legacy, current, run_agent, flag):
    flag.write_text("")
    run_agent(guest.device)
    legacy.wait_for(lambda v: published(v) and v["not_upgradable"], timeout=5)
    for _ in range(5):
        t0 = time.monotonic()
        guest.migrate()
        seen = legacy.wait_for(lambda v: published(v) and v["not_upgradable"], since=t0, timeout=1,
                               what="everything back after migration")
        current.wait_for(lambda v: v["pv_drivers_version"] and v["not_upgradable"], since=t0, timeout=1)
        assert seen - t0 < 1.0


def test_xenstored_killed_and_restarted(guest, xenstored, run_agent, flag):
    from tests.hostmodel import LegacyReader
    flag.write_text("")
    agent = run_agent(guest.device)
    r = LegacyReader(xenstored.socket, guest.domid)
    r.wait_for(lambda v: published(v) and v["not_upgradable"], timeout=5)
    r.close()
    for _ in range(2):
        t0 = time.monotonic()
        guest.restart_xenstored()
        r = LegacyReader(xenstored.socket, guest.domid)
        try:
            seen = r.wait_for(lambda v: published(v) and v["not_upgradable"], timeout=5,
                              what="everything back after a xenstored restart")
        finally:
            r.close()
        assert seen - t0 < 5
    assert agent.alive()
    assert agent.log().count("lost XenStore") <= 1, agent.log()


def test_unix_socket_lands_under_dom0_and_survives_restart(xenstored, run_agent):
    from tests.hostmodel import LegacyReader
    agent = run_agent(xenstored.socket)
    r = LegacyReader(xenstored.socket, 0)
    r.wait_for(published, timeout=5)
    r.close()
    xenstored.kill()
    xenstored.start()
    r = LegacyReader(xenstored.socket, 0)
    try:
        r.wait_for(published, timeout=5, what="dom0 keys back after restart")
    finally:
        r.close()
    assert agent.alive()


def test_xenstore_absent_at_start_then_appears(xenstored, run_agent, rundir):
    from tests.hostmodel import LegacyReader
    xenstored.kill()
    agent = run_agent(xenstored.socket)
    time.sleep(0.3)   # let it fail a few times: it must keep retrying, quietly
    assert agent.alive()
    xenstored.start()
    r = LegacyReader(xenstored.socket, 0)
    try:
        r.wait_for(published, timeout=7, what="keys once xenstored appeared")
    finally:
        r.close()
    assert agent.log().count("lost XenStore") <= 1


def test_libxl_readonly_control_is_not_an_error(libxl_guest, xenstored, run_agent):
    from tests.hostmodel import LegacyReader
    agent = run_agent(libxl_guest.device)
    r = LegacyReader(xenstored.socket, libxl_guest.domid)
    try:
        r.wait_for(published, timeout=5, what="the version keys on a libxl host")
    finally:
        r.close()
    assert libxl_guest.read("control/feature-balloon") is None
    rc, took = agent.stop()
    assert rc == 0
    log = agent.log()
    assert log.count("control/feature-balloon") == 1 and "EACCES" in log, log
    assert "Traceback" not in log


def test_eacces_on_a_key_mid_run_is_logged_once(guest, legacy, run_agent, flag):
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    # dom0 makes attr/PVAddons read-only for the guest; NotUpgradable cannot be written there now.
    guest.dom0.set_perms(guest.path("attr/PVAddons"), [b"n0", b"r7"])
    for _ in range(3):
        flag.write_text("")
        flag.unlink()
    t0 = time.monotonic()
    flag.write_text("")
    deadline = time.monotonic() + 2
    while "NotUpgradable" not in agent.log() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert agent.alive()
    assert agent.log().count("attr/PVAddons/NotUpgradable") == 1, agent.log()
    assert legacy.view["valid"] and not legacy.view["not_upgradable"]
    # Rights restored and something changes: it is published. (The view was not NotUpgradable just
    # above; the agent may publish it at the set_perms event already, before the flag's changes.)
    guest.dom0.set_perms(guest.path("attr/PVAddons"), [b"n7"])
    flag.unlink()
    flag.write_text("x")
    legacy.wait_for(lambda v: v["not_upgradable"], timeout=2)


def test_sigterm_exits_zero_within_a_second_keys_left(guest, legacy, run_agent):
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    rc, took = agent.stop()
    assert rc == 0 and took < 1.0, (rc, took, agent.log())
    assert guest.read("attr/PVAddons/MajorVersion") == b"1"


def test_sigterm_while_xenstore_is_unreachable(xenstored, run_agent):
    xenstored.kill()
    agent = run_agent(xenstored.socket)
    time.sleep(0.2)
    rc, took = agent.stop(signal.SIGINT)
    assert rc == 0 and took < 1.0


def test_silent_at_idle_with_default_log_level(guest, legacy, run_agent, flag):
    agent = run_agent(guest.device, log_level="warning")
    legacy.wait_for(published, timeout=5)
    t0 = time.monotonic()
    flag.write_text("")
    legacy.wait_for(lambda v: v["not_upgradable"], since=t0)
    rc, _ = agent.stop()
    assert rc == 0
    assert agent.log() == ""


def test_a_refused_change_is_left_alone_not_retried_in_a_loop(guest, xenstored, legacy, run_agent, workdir):
    agent = run_agent(guest.device)
    legacy.wait_for(published, timeout=5)
    guest.dom0.set_perms(guest.path("attr/PVAddons"), [b"n0", b"r7"])
    for key in ("MajorVersion", "MinorVersion"):
        guest.dom0.set_perms(guest.path("attr/PVAddons/" + key), [b"n0", b"r7"])
    (workdir / "agent.conf").write_text("major_version = 9\n")
    agent.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "attr/PVAddons/MajorVersion" not in agent.log() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "refused" in agent.log(), agent.log()
    # Absence of a loop can only be seen over a window: a write/refuse/remove loop sends hundreds
    # of requests in it (220 without the fix); the tail of the refused batch is a handful.
    before = len(trace.requests(xenstored.trace, guest.domid))
    time.sleep(0.5)
    assert len(trace.requests(xenstored.trace, guest.domid)) - before < 30
    assert guest.read("attr/PVAddons/MajorVersion") == b"1"      # left as it was, not removed
    assert agent.log().count("attr/PVAddons/MajorVersion") == 1 and agent.alive()


def test_no_busy_loop_while_xenstore_is_gone(xenstored, run_agent):
    from tests.hostmodel import LegacyReader
    agent = run_agent(xenstored.socket)
    r = LegacyReader(xenstored.socket, 0)
    try:
        r.wait_for(published, timeout=5)
    finally:
        r.close()
    dom0 = xenstored.client()
    dom0.delete(b"/local/domain/0/attr/PVAddons/Installed")   # a watch fires: work pending...
    dom0.close()
    xenstored.kill()                                          # ...when the connection goes
    deadline = time.monotonic() + 5
    while "lost XenStore" not in agent.log() and time.monotonic() < deadline:
        time.sleep(0.01)
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = lambda: sum(int(x) for x in open("/proc/%d/stat" % agent.proc.pid).read().rsplit(")", 1)[1].split()[11:13])
    before = cpu()
    time.sleep(1.0)   # a window in which a spinning loop burns most of a core
    assert (cpu() - before) / ticks < 0.1
    assert agent.alive()


def test_a_value_xenstored_refuses_does_not_sink_the_batch(lab, rundir, run_agent, workdir):
    """A node over xenstored's size limit fails its write and then the whole commit: the agent
    sets that key aside and commits the rest."""
    from tests.hostmodel import LegacyReader
    from tests.lab import daemon
    xsd = daemon.Xenstored(rundir, args=["--entry-size", "600"], trace=True).start()
    guest = daemon.Guest(xsd, 7)
    try:
        (workdir / "etc" / "os-release").write_text('PRETTY_NAME="%s"\nID=debian\n' % ("Long name " * 80))
        agent = run_agent(guest.device)
        r = LegacyReader(xsd.socket, 7)
        try:
            r.wait_for(published, timeout=5, what="the version keys beside a refused os_name")
        finally:
            r.close()
        assert guest.read("data/os_distro") == b"debian" and guest.read("data/os_name") is None
        assert agent.log().count("data/os_name") == 1, agent.log()
        assert agent.alive()
    finally:
        guest.close()
        xsd.kill()


def test_sigterm_while_logging_still_exits(guest, run_agent, flag, workdir):
    """SIGTERM arriving inside a log call: logging catches Exception around every emit, so the
    stop must not be an Exception. The agent's stderr is a pipe the test stops reading, so the
    agent blocks in a log write; SIGTERM lands there."""
    import subprocess
    import sys
    import threading
    from tests.conftest import ROOT
    proc = subprocess.Popen([sys.executable, "-m", "xe_guest_agent", "run", "--xenstore", guest.device,
                             "--flag-file", str(flag), "--config", str(workdir / "agent.conf"),
                             "--sysfs", str(workdir / "sys"), "--meminfo", str(workdir / "meminfo"),
                             "--os-root", str(workdir), "--log-level", "debug"],
                            stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        deadline = time.monotonic() + 30
        wchan = ""
        while time.monotonic() < deadline and "pipe_write" not in wchan:   # toggle until a log write blocks
            flag.unlink() if flag.exists() else flag.write_text("")   # each look sees a change: a log line
            with open("/proc/%d/wchan" % proc.pid) as f:
                wchan = f.read()
        if proc.poll() is not None:
            raise AssertionError("the agent exited (%s): %s" % (proc.returncode, proc.stderr.read()[-2000:]))
        assert "pipe_write" in wchan, "the agent never blocked writing its log"
        proc.send_signal(signal.SIGTERM)
        threading.Thread(target=proc.stderr.read, daemon=True).start()   # let it finish writing
        assert proc.wait(5) == 0
    finally:
        proc.kill()
        proc.wait()


def test_in_a_xen_guest_a_missing_xenbus_device_is_waited_for(tmp_path):
    """Early in boot the xenbus device may not be there yet (a module still loading). In a Xen
    guest (the kernel's /sys/hypervisor/type says so) the agent waits for it, retrying, where exit
    2 would stop the unit for good (RestartPreventExitStatus=2). Outside Xen, exit 2 (test_cli)."""
    from tests.conftest import Agent
    (tmp_path / "hypervisor").mkdir()
    (tmp_path / "hypervisor" / "type").write_text("xen\n")
    agent = Agent(["run", "--config", "/dev/null", "--flag-file", str(tmp_path / "flag"),
                   "--sysfs", str(tmp_path), "--log-level", "info"], str(tmp_path), env={"XENSTORED_PATH": ""})
    try:
        deadline = time.monotonic() + 10
        while "cannot connect" not in agent.log():
            assert agent.alive() and time.monotonic() < deadline, agent.log()
            time.sleep(0.05)
        time.sleep(1.0)   # several retries later: still up, and said so once
        assert agent.alive(), agent.log()
        assert agent.log().count("cannot connect") == 1 and "/dev/xen/xenbus" in agent.log(), agent.log()
        assert agent.stop()[0] == 0
    finally:
        agent.close()
