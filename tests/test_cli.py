"""The command line: user mistakes are one line and exit 2, runtime failures exit 1; show and status."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, cli
from tests.lab import daemon

OCAML_MAX = "4611686018427387903"


def one_line(r, status=2):
    return (r.returncode == status and r.stderr.startswith("xe-guest-agent: ")
            and r.stderr.count("\n") == 1 and not r.stdout)


def refusing_socket(path):
    """A Unix socket file that nothing listens on: connect() gets ECONNREFUSED."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return str(path)


@pytest.mark.parametrize("args, message", [
    (["--major-version", "1.2"], "--major-version"),
    (["--build-version", "proto-0.5.0-dev"], "--build-version"),
    (["--minor-version", "-3"], "--minor-version"),
])
def test_bad_version_flags_exit_2_with_one_line(args, message, tmp_path):
    for command in ("show", "run"):
        r = cli(command, "--config", "/dev/null", "--xenstore" if command == "run" else "--json",
                *(["/nonexistent"] if command == "run" else []), *args)
        assert r.returncode == 2, r
        assert r.stderr.count("\n") == 1 and message in r.stderr and r.stderr.startswith("xe-guest-agent: ")


def test_bad_config_exits_2_naming_file_line_and_key(tmp_path):
    conf = tmp_path / "agent.conf"
    conf.write_text("major_version = 8\nminor_version = two\n")
    r = cli("run", "--config", str(conf), "--xenstore", "/nonexistent")
    assert r.returncode == 2
    assert r.stderr == "xe-guest-agent: %s:2: minor_version = 'two': must be a non-negative integer\n" % conf


def test_no_xenstore_means_not_a_xen_guest():
    r = cli("run", "--config", "/dev/null", env={"XENSTORED_PATH": ""})
    assert r.returncode == 2 and "not a Xen guest?" in r.stderr and r.stderr.count("\n") == 1


def test_show_needs_no_xenstore(tmp_path):
    flag = tmp_path / "flag"
    conf = tmp_path / "agent.conf"
    conf.write_text("major_version = 8\nbuild_version = 42\n")
    r = cli("show", "--config", str(conf), "--flag-file", str(flag), "--json", "--sysfs", str(tmp_path))
    assert r.returncode == 0, r.stderr
    keys = json.loads(r.stdout)
    assert keys["attr/PVAddons/MajorVersion"] == "8" and keys["attr/PVAddons/BuildVersion"] == "42"
    assert "attr/PVAddons/NotUpgradable" not in keys
    flag.write_text("")
    r = cli("show", "--config", str(conf), "--flag-file", str(flag), "--sysfs", str(tmp_path))
    assert "attr/PVAddons/NotUpgradable = 1\n" in r.stdout


def test_version():
    from xe_guest_agent import __version__
    r = cli("--version")
    assert r.returncode == 0 and r.stdout == "xe-guest-agent %s\n" % __version__


def test_status_reads_back_what_run_published(xenstored, run_agent, flag):
    from tests.hostmodel import LegacyReader
    flag.write_text("")
    run_agent(xenstored.socket)     # over the socket both are dom0: keys under /local/domain/0
    r = LegacyReader(xenstored.socket, 0)
    try:
        r.wait_for(lambda v: v["valid"] and v["not_upgradable"], timeout=5)
    finally:
        r.close()
    out = cli("status", "--xenstore", xenstored.socket, "--json")
    assert out.returncode == 0, out.stderr
    keys = json.loads(out.stdout)
    assert keys["attr/PVAddons/MajorVersion"] == "1" and keys["attr/PVAddons/NotUpgradable"] == "1"
    assert list(keys)[-1] == "data/updated"
    text = cli("status", "--xenstore", xenstored.socket).stdout
    assert "attr/PVAddons/Installed = 1\n" in text




@pytest.mark.parametrize("args, words", [
    (["run", "--config", "/dev/null", "--log-level", "nonsense"], "--log-level"),
    (["run", "--bogus"], "--bogus"),
    (["show", "--xenstore", "/x"], "--xenstore"),
    (["show", "unexpected"], "unexpected"),
    (["frob"], "frob"),
    (["status", "--xenstore"], "--xenstore"),
])
def test_every_usage_error_is_one_line_exit_2(args, words):
    r = cli(*args)
    assert one_line(r) and words in r.stderr, r


def test_empty_config_path_is_refused_not_read_as_the_default():
    r = cli("show", "--config", "")
    assert one_line(r) and "--config" in r.stderr and "/etc/xe-guest-agent" not in r.stderr, r


def test_trailing_comments_and_hash_inside_a_value(tmp_path):
    flag = tmp_path / "not#upgradable"    # no space before '#': part of the path
    flag.write_text("")
    conf = tmp_path / "agent.conf"
    conf.write_text("major_version = 8   # appliance image\nbuild_version = 42\t; build\n"
                    "flag_file = %s  # the flag\n" % flag)
    r = cli("show", "--config", str(conf), "--json", "--sysfs", str(tmp_path))
    assert r.returncode == 0, r.stderr
    keys = json.loads(r.stdout)
    assert keys["attr/PVAddons/MajorVersion"] == "8" and keys["attr/PVAddons/BuildVersion"] == "42"
    assert keys["attr/PVAddons/NotUpgradable"] == "1"


def test_versions_fit_ocaml_int(tmp_path):
    r = cli("show", "--config", "/dev/null", "--json", "--sysfs", str(tmp_path), "--major-version", OCAML_MAX)
    assert r.returncode == 0 and json.loads(r.stdout)["attr/PVAddons/MajorVersion"] == OCAML_MAX, r
    conf = tmp_path / "agent.conf"
    for value in (str(int(OCAML_MAX) + 1), "9" * 5000):
        r = cli("show", "--config", "/dev/null", "--build-version", value)
        assert one_line(r) and "--build-version" in r.stderr and "too large" in r.stderr, r.stderr[:300]
        conf.write_text("minor_version = %s\n" % value)
        r = cli("run", "--config", str(conf), "--xenstore", "/nonexistent")
        assert one_line(r) and "agent.conf:1: minor_version" in r.stderr and "too large" in r.stderr, r.stderr[:300]
        assert len(r.stderr) < 300


def test_explicit_xenstore_path_missing_at_start_is_exit_2():
    for command in ("run", "status"):
        r = cli(command, *(["--config", "/dev/null"] if command == "run" else []), "--xenstore", "/nonexistent")
        assert one_line(r) and "/nonexistent" in r.stderr, r


def test_status_exit_codes_no_xenstore_2_refused_1(tmp_path):
    r = cli("status", env={"XENSTORED_PATH": ""})
    assert one_line(r) and "not a Xen guest?" in r.stderr, r
    path = refusing_socket(tmp_path / "sock")
    r = cli("status", "--xenstore", path)
    assert one_line(r, 1) and "cannot read XenStore at %s" % path in r.stderr, r


def wait_for_log(agent, predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = agent.log()
        if predicate(log):
            return log
        assert agent.alive(), log
        time.sleep(0.01)
    raise AssertionError("timed out; log:\n" + agent.log())


def test_refused_at_start_is_retried_as_cannot_connect_logged_once(lab, rundir, run_agent):
    xsd = daemon.Xenstored(rundir)
    refusing_socket(xsd.socket)
    agent = run_agent(xsd.socket, log_level="debug")
    try:
        log = wait_for_log(agent, lambda log: log.count("DEBUG: lost:") >= 3)   # three refused tries
        assert log.count("WARNING: cannot connect to XenStore at %s" % xsd.socket) == 1, log
        assert "lost XenStore" not in log
        xsd.start()
        log = wait_for_log(agent, lambda log: "transaction committed" in log)   # published
        assert "INFO: connected to XenStore at %s" % xsd.socket in log and "lost XenStore" not in log, log
        assert log.count("cannot connect") == 1
    finally:
        xsd.kill()


def test_runs_under_an_ascii_locale():
    # Python 3.6 under the C locale (a bare unit), where click < 8.1 refuses to start.
    r = cli("--version", env={"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"})
    assert r.returncode == 0 and r.stdout.startswith("xe-guest-agent "), r


def test_the_suite_as_non_root_is_one_clear_line():
    # A user namespace without a mapping: the same files, but the suite runs as uid 65534.
    r = subprocess.run(["unshare", "--user", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        os.path.join(ROOT, "tests", "test_config.py")], cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert r.returncode == 4 and "\n" not in r.stderr.strip() and "needs root" in r.stderr, r
    assert "passed" not in r.stdout and "failed" not in r.stdout
