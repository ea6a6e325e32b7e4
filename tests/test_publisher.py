"""The pure core: desired state and the ordered plan, in-process."""
import pytest

from xe_guest_agent import publisher, schema
from xe_guest_agent.config import Config
from xe_guest_agent.publisher import Step

V = {"attr/PVAddons/MajorVersion": "1", "attr/PVAddons/MinorVersion": "0",
     "attr/PVAddons/MicroVersion": "0", "attr/PVAddons/BuildVersion": "0", "attr/PVAddons/Installed": "1"}


def test_desired_state_versions_and_flag():
    assert publisher.desired_state(Config(), False) == V
    assert publisher.desired_state(Config(), True) == dict(V, **{"attr/PVAddons/NotUpgradable": "1"})
    cfg = Config(major_version=8, minor_version=4, micro_version=0, build_version=123)
    state = publisher.desired_state(cfg, False, {"data/os_name": "Debian", "data/os_minorver": ""})
    assert state["attr/PVAddons/MajorVersion"] == "8" and state["attr/PVAddons/BuildVersion"] == "123"
    assert state["data/os_name"] == "Debian" and "data/os_minorver" not in state


def test_plan_from_nothing_orders_data_attr_then_updated():
    desired = dict(V, **{"data/os_name": "Debian", "control/feature-balloon": "1"})
    steps = publisher.plan(desired, {}, "42")
    paths = [s.path for s in steps]
    assert paths[0] == "data/os_name"
    assert paths[-1] == "data/updated" and steps[-1] == Step("write", "data/updated", "42")
    assert set(paths[1:-1]) == set(V) | {"control/feature-balloon"}
    assert all(s.op == "write" for s in steps)


def test_plan_nothing_changed_writes_nothing_not_even_updated():
    actual = dict(V, **{"data/updated": "7"})
    assert publisher.plan(V, actual, "8") == []


def test_plan_rewrites_a_missing_updated():
    assert publisher.plan(V, dict(V), "8") == [Step("write", "data/updated", "8")]


def test_plan_removes_stale_keys_and_whole_stale_branches():
    desired = dict(V, **{"attr/vif/0/ipv4/0": "10.0.0.2"})
    actual = dict(V, **{"attr/PVAddons/NotUpgradable": "1", "data/updated": "1",
                        "attr/vif/0/ipv4/0": "10.0.0.2", "attr/vif/0/ipv4/1": "10.0.0.3",
                        "attr/vif/1/ipv4/0": "10.1.0.2", "attr/vif/1/ipv6/0": "fe80::1"})
    steps = publisher.plan(desired, actual, "2")
    assert steps == [Step("rm", "attr/PVAddons/NotUpgradable", None), Step("rm", "attr/vif/0/ipv4/1", None),
                     Step("rm", "attr/vif/1", None), Step("write", "data/updated", "2")]


def test_plan_changed_value_is_rewritten():
    actual = dict(V, **{"attr/PVAddons/MinorVersion": "x", "data/updated": "1"})
    assert publisher.plan(V, actual, "2") == [Step("write", "attr/PVAddons/MinorVersion", "0"),
                                              Step("write", "data/updated", "2")]


@pytest.mark.parametrize("previous, now, expected", [
    (None, 1000, "1000"), ("999", 1000, "1000"), ("1000", 1000, "1001"), ("5000", 1000, "5001"),
    ("garbage", 1000, "1000"), ("1", 1000, "1000"),
])
def test_next_updated_always_differs(previous, now, expected):
    assert publisher.next_updated(previous, now) == expected
    assert publisher.next_updated(previous, now) != previous


@pytest.mark.parametrize("text, expected", [
    ("Debian GNU/Linux 12 (bookworm)", "Debian GNU/Linux 12 (bookworm)"),
    ("Fedora Linux 39 (Workstation Édition)", "Fedora Linux 39 (Workstation Edition)"),
    ("tab\there\nnewline\x1b[31m", "tab here newline [31m"),
    ("  ", ""),
    ("中文", "??"),
    ("x" * 5000, "x" * schema.MAX_VALUE),
])
def test_safe_value(text, expected):
    out = schema.safe_value(text)
    assert out == expected
    assert all(0x20 <= ord(c) < 0x7f for c in out) and len(out.encode()) <= schema.MAX_VALUE


@pytest.mark.parametrize("path, ok", [
    ("attr/vif/0/ipv4/0", True), ("attr/eth0.100/ip", False), ("attr/eth0:1/ip", False),
    ("/local/domain/0", False), ("attr//x", False), ("attr/x/", False), ("data/os_name", True),
])
def test_valid_path(path, ok):
    assert schema.valid_path(path) is ok


INSTALLED = Step("write", "attr/PVAddons/Installed", "1")


@pytest.mark.parametrize("before, after, extra", [
    # Any batch of data/ changes alone: xenopsd reads data/ only when a path it watches fires.
    ({"data/os_name": "Debian 11"}, {"data/os_name": "Debian 12"}, [INSTALLED]),
    ({"data/host_name_dns": "a"}, {"data/host_name_dns": "b"}, [INSTALLED]),
    ({}, {"data/host_name_dns": "a", "data/domain": "example.com"}, [INSTALLED]),
    ({"data/host_name_dns": "a", "data/domain": "x"}, {"data/host_name_dns": "a"}, [INSTALLED]),   # a removal
    ({"data/meminfo_free": "1"}, {"data/meminfo_free": "2", "data/host_name_dns": "a"}, [INSTALLED]),
    # Memory alone: rrdd reads meminfo_free on its own watch, xapi keeps no memory in its metrics.
    ({"data/meminfo_free": "1"}, {"data/meminfo_free": "2"}, []),
    ({"data/meminfo_free": "1", "data/meminfo_total": "9"}, {"data/meminfo_free": "2", "data/meminfo_total": "8"}, []),
    # A watched path is in the batch already: no extra write.
    ({"data/host_name_dns": "a"}, {"data/host_name_dns": "b", "attr/vif/0/ipv4/0": "10.0.0.1"}, []),
    ({}, {"data/host_name_dns": "b", "feature/hotplug/vif": "1"}, []),
    ({}, {"feature/hotplug/vbd": "1"}, []),
])
def test_plan_a_data_change_alone_also_touches_what_xenopsd_watches(before, after, extra):
    actual = dict(V, **before, **{"data/updated": "1"})
    steps = publisher.plan(dict(V, **after), actual, "2")
    changes = [Step("write", k, v) for k, v in sorted(after.items()) if before.get(k) != v]
    changes += [Step("rm", k, None) for k in sorted(before) if k not in after]
    assert sorted(steps[:-1]) == sorted(changes + extra)
    assert steps[-1] == Step("write", "data/updated", "2")
    assert [s.path for s in steps] == sorted((s.path for s in steps), key=lambda p: (schema.write_rank(p), p))

