"""Fixtures: a real xenstored per test, a guest built as the toolstack builds it, the host's
readers, and the agent run as a real subprocess through its CLI, as that guest."""
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests import hostmodel
from tests.lab import daemon

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    # One line up front instead of a dozen raw `unshare: Operation not permitted` failures.
    if os.geteuid() != 0:
        raise pytest.UsageError("the test suite needs root: it runs xenstored, network namespaces "
                                "(unshare, ip netns) and strace; run it as root, e.g. sudo make check")


@pytest.fixture(scope="session")
def lab():
    try:
        daemon.ensure_built()
    except daemon.LabError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def rundir():
    # Short, so the Unix socket path stays under 108 bytes whatever the test's name.
    d = tempfile.mkdtemp(prefix="xga-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def xenstored(lab, rundir):
    xsd = daemon.Xenstored(rundir, trace=True).start()
    yield xsd
    xsd.kill()


def _guest(xenstored, profile):
    g = daemon.Guest(xenstored, domid=7, profile=profile)
    yield g
    g.close()


@pytest.fixture
def guest(xenstored):
    yield from _guest(xenstored, "xapi")


@pytest.fixture
def libxl_guest(xenstored):
    yield from _guest(xenstored, "libxl")


@pytest.fixture
def legacy(xenstored, guest):
    r = hostmodel.LegacyReader(xenstored.socket, guest.domid)
    yield r
    r.close()


@pytest.fixture
def current(xenstored, guest):
    r = hostmodel.CurrentReader(xenstored.socket, guest.domid)
    yield r
    r.close()


_agent_numbers = itertools.count()


class Agent:
    """`xe-guest-agent run` as a subprocess; its stderr goes to a file for the test to read."""

    def __init__(self, args, workdir, env=None, prefix=()):
        self.log_path = os.path.join(workdir, "agent-%d.log" % next(_agent_numbers))
        self._log = open(self.log_path, "wb")
        environ = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
        environ.pop("NOTIFY_SOCKET", None)
        environ.update(env or {})
        self.started = time.monotonic()
        # A session of its own, so close() can kill whatever a prefix (strace, ip netns exec) left.
        self.proc = subprocess.Popen(list(prefix) + [sys.executable, "-m", "xe_guest_agent"] + list(args),
                                     stdout=self._log, stderr=subprocess.STDOUT, env=environ, cwd=workdir,
                                     start_new_session=True)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Signal the agent; (exit status, seconds it took)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        return rc, time.monotonic() - t0

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._log.close()


@pytest.fixture
def workdir(tmp_path):
    """An empty config file and a directory for the flag file."""
    (tmp_path / "agent.conf").write_text("")
    (tmp_path / "etc").mkdir()
    (tmp_path / "sys").mkdir()
    (tmp_path / "meminfo").write_text(MEMINFO)
    (tmp_path / "etc" / "os-release").write_text(OS_RELEASE)
    return tmp_path


MEMINFO = "MemTotal:        2048000 kB\nMemFree:          512000 kB\nMemAvailable:    1024000 kB\n"
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'



@pytest.fixture
def flag(workdir):
    return workdir / "etc" / "pv-drivers-not-upgradable"


@pytest.fixture
def run_agent(workdir, flag):
    """Start `xe-guest-agent run` against a device or socket, with the test's flag and config."""
    started = []

    def start(xenstore, *extra, env=None, log_level=os.environ.get("XGA_TEST_LOG", "info"), prefix=()):
        args = ["run", "--xenstore", str(xenstore), "--flag-file", str(flag),
                "--config", str(workdir / "agent.conf"), "--sysfs", str(workdir / "sys"),
                "--meminfo", str(workdir / "meminfo"), "--os-root", str(workdir),
                "--log-level", log_level] + list(extra)
        a = Agent(args, str(workdir), env, prefix)
        started.append(a)
        return a

    yield start
    for a in started:
        a.close()


def cli(*args, env=None, timeout=30):
    """Run the CLI to completion: CompletedProcess with text stdout/stderr."""
    environ = dict(os.environ, PYTHONPATH=ROOT)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "xe_guest_agent"] + list(args), env=environ,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)
