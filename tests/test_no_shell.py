"""The agent never starts another program (no `ip`, `blkid`, `ldconfig`...): proven by strace
following it from start through a publish, a flag change and a clean exit."""
import os
import shutil
import signal
import time

import pytest


def test_agent_never_starts_a_program(guest, legacy, run_agent, flag, workdir):
    strace = shutil.which("strace")
    if not strace:
        pytest.fail("this test needs strace (apt-get install strace)", pytrace=False)
    out = workdir / "strace.log"
    agent = run_agent(guest.device, prefix=[strace, "-f", "-qq", "-e", "trace=execve,execveat,fork,vfork",
                                            "-o", str(out)])
    legacy.wait_for(lambda v: v["valid"], timeout=10, what="the version keys (under strace)")
    t0 = time.monotonic()
    flag.write_text("")
    legacy.wait_for(lambda v: v["not_upgradable"], since=t0, timeout=5)
    # SIGTERM goes to the agent itself (strace's child); strace then exits with its status.
    child = int(open("/proc/%d/task/%d/children" % (agent.proc.pid, agent.proc.pid)).read().split()[0])
    os.kill(child, signal.SIGTERM)
    assert agent.proc.wait(5) == 0
    calls = [line for line in out.read_text().splitlines() if "exec" in line or "fork" in line]
    # One execve: strace starting the interpreter. Anything else is a program we started.
    assert len([c for c in calls if "execve(" in c]) == 1 and not [c for c in calls if "fork(" in c], calls
