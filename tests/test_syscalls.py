"""What the agent does at the system-call level, seen by strace: it never starts another program,
and it writes one XenStore message per write() to the xenbus device."""
import os
import re
import shutil
import signal
import struct
import time

import pytest


def strace():
    path = shutil.which("strace")
    if not path:
        pytest.fail("this test needs strace (apt-get install strace)", pytrace=False)
    return path


def stop_traced(agent):
    """SIGTERM to the agent itself (strace's child); strace then exits with its status."""
    child = int(open("/proc/%d/task/%d/children" % (agent.proc.pid, agent.proc.pid)).read().split()[0])
    os.kill(child, signal.SIGTERM)
    return agent.proc.wait(5)


def test_agent_never_starts_a_program(guest, legacy, run_agent, flag, workdir):
    strace_path = strace()
    out = workdir / "strace.log"
    agent = run_agent(guest.device, prefix=[strace_path, "-f", "-qq", "-e", "trace=execve,execveat,fork,vfork",
                                            "-o", str(out)])
    legacy.wait_for(lambda v: v["valid"], timeout=10, what="the version keys (under strace)")
    t0 = time.monotonic()
    flag.write_text("")
    legacy.wait_for(lambda v: v["not_upgradable"], since=t0, timeout=5)
    assert stop_traced(agent) == 0
    calls = [line for line in out.read_text().splitlines() if "exec" in line or "fork" in line]
    # One execve: strace starting the interpreter. Anything else is a program we started.
    assert len([c for c in calls if "execve(" in c]) == 1 and not [c for c in calls if "fork(" in c], calls


def test_one_message_per_write_to_the_device(guest, legacy, run_agent, flag, workdir):
    """Linux's xenbus_file_write() handles the first message of a write() and drops the rest of
    the buffer, so a batch sent in one write() would lose all but its first request on a real
    guest. A pty keeps no write boundaries, so this is checked on the system calls themselves."""
    out = workdir / "strace.log"
    agent = run_agent(guest.device, prefix=[strace(), "-qq", "-e", "trace=openat,write", "-xx", "-s", "8192", "-o", str(out)])
    legacy.wait_for(lambda v: v["valid"], timeout=10, what="the version keys (under strace)")
    t0 = time.monotonic()
    flag.write_text("")
    legacy.wait_for(lambda v: v["not_upgradable"], since=t0, timeout=5)
    assert stop_traced(agent) == 0
    text = out.read_text()
    hexpath = "".join("\\x%02x" % c for c in guest.device.encode())   # -xx shows paths in hex too
    fds = set(re.findall(r'openat\(AT_FDCWD, "%s", [^)]*\) = (\d+)' % re.escape(hexpath), text))
    assert fds, "the agent never opened %s" % guest.device
    writes = re.findall(r'^write\((%s), "((?:\\x[0-9a-f]{2})*)", (\d+)\) = (\d+)' % "|".join(fds), text, re.M)
    assert len(writes) > 10
    for fd, data, size, done in writes:
        raw = bytes.fromhex(data.replace("\\x", ""))
        op, rq, tx, length = struct.unpack_from("<IIII", raw)
        assert len(raw) == int(size) == int(done) == 16 + length, (op, len(raw), length)
