"""The command line: user mistakes are one line and exit 2; show and status."""
import json

import pytest

from tests.conftest import cli


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


def test_status_unreachable_is_one_line(tmp_path):
    r = cli("status", "--xenstore", str(tmp_path / "nothing"))
    assert r.returncode == 1 and r.stderr.count("\n") == 1
