"""The host model proven against xapi's own golden cases (xapi-project/xen-api
ocaml/tests/test_guest_agent.ml: `Networks` and `Initial_guest_metrics`), and against the rules of
ocaml/xapi/xapi_guest_agent.ml and xapi_pv_driver_version.ml for what its tests leave out. Pure
functions, plus one look through CurrentReader at a tree dom0 wrote on the real xenstored."""
import time

import pytest

from tests import hostmodel

SRIOV = "xenserver/attr/net-sriov-vf/"


def xapi_networks(tree):
    """networks as xapi computes them for a guest tree {path: value}: attr/ and the SR-IOV tree."""
    return hostmodel.networks({k: v for k, v in tree.items() if k.startswith("attr/")}, "attr/vif/",
                              {k: v for k, v in tree.items() if k.startswith(SRIOV)})


# Networks: input paths -> [(source path, networks key)]. xapi lists every candidate path; the
# value comes from a lookup, so a candidate that does not exist (attr/eth0/ip below) shows nothing.
NETWORKS = [
    # basic cases
    (["attr/vif/0/ipv6/0"], [("attr/vif/0/ipv6/0", "0/ipv6/0")]),
    (["attr/vif/0/ipv4/0"], [("attr/vif/0/ipv4/0", "0/ip"), ("attr/vif/0/ipv4/0", "0/ipv4/0")]),
    (["attr/eth0/ip"], [("attr/eth0/ip", "0/ip"), ("attr/eth0/ip", "0/ipv4/0")]),
    (["attr/eth0/ipv6/0/addr"], [("attr/eth0/ip", "0/ip"), ("attr/eth0/ip", "0/ipv4/0"),
                                 ("attr/eth0/ipv6/0/addr", "0/ipv6/0")]),
    # index
    (["attr/vif/1/ipv6/2"], [("attr/vif/1/ipv6/2", "1/ipv6/2")]),
    (["attr/vif/1/ipv4/2"], [("attr/vif/1/ipv4/2", "1/ip"), ("attr/vif/1/ipv4/2", "1/ipv4/2")]),
    (["attr/eth1/ip"], [("attr/eth1/ip", "1/ip"), ("attr/eth1/ip", "1/ipv4/0")]),
    (["attr/eth1/ipv6/2/addr"], [("attr/eth1/ip", "1/ip"), ("attr/eth1/ip", "1/ipv4/0"),
                                 ("attr/eth1/ipv6/2/addr", "1/ipv6/2")]),
    # multiple ip addrs
    (["attr/vif/0/ipv6/0", "attr/vif/0/ipv6/1"],
     [("attr/vif/0/ipv6/1", "0/ipv6/1"), ("attr/vif/0/ipv6/0", "0/ipv6/0")]),
    (["attr/vif/0/ipv4/0", "attr/vif/0/ipv4/1"],
     [("attr/vif/0/ipv4/1", "0/ipv4/1"), ("attr/vif/0/ipv4/0", "0/ip"), ("attr/vif/0/ipv4/0", "0/ipv4/0")]),
    (["attr/eth0/ip", "attr/eth0/ipv6/0/addr"],
     [("attr/eth0/ip", "0/ip"), ("attr/eth0/ip", "0/ipv4/0"), ("attr/eth0/ipv6/0/addr", "0/ipv6/0")]),
    (["attr/vif/0/ipv4/0", "attr/vif/0/ipv6/0"],
     [("attr/vif/0/ipv4/0", "0/ip"), ("attr/vif/0/ipv4/0", "0/ipv4/0"), ("attr/vif/0/ipv6/0", "0/ipv6/0")]),
    # the legacy layout is read only when attr/vif is empty
    (["attr/eth0/ip", "attr/vif/0/ipv4/0", "attr/eth0/ipv6/0/addr", "attr/vif/0/ipv6/0"],
     [("attr/vif/0/ipv4/0", "0/ip"), ("attr/vif/0/ipv4/0", "0/ipv4/0"), ("attr/vif/0/ipv6/0", "0/ipv6/0")]),
    # multiple vifs and multiple ip addrs
    (["attr/vif/0/ipv6/0", "attr/vif/0/ipv6/1", "attr/vif/1/ipv6/0", "attr/vif/1/ipv6/1"],
     [("attr/vif/0/ipv6/1", "0/ipv6/1"), ("attr/vif/0/ipv6/0", "0/ipv6/0"),
      ("attr/vif/1/ipv6/1", "1/ipv6/1"), ("attr/vif/1/ipv6/0", "1/ipv6/0")]),
    (["attr/vif/0/ipv4/0", "attr/vif/0/ipv4/1", "attr/vif/1/ipv4/0", "attr/vif/1/ipv4/1"],
     [("attr/vif/0/ipv4/1", "0/ipv4/1"), ("attr/vif/0/ipv4/0", "0/ip"), ("attr/vif/0/ipv4/0", "0/ipv4/0"),
      ("attr/vif/1/ipv4/1", "1/ipv4/1"), ("attr/vif/1/ipv4/0", "1/ip"), ("attr/vif/1/ipv4/0", "1/ipv4/0")]),
    # exceptions: a non-integer index drops the VIF
    (["attr/vif/0/ipv4/a", "attr/vif/0/ipv4/1"], []),
]


@pytest.mark.parametrize("paths,expected", NETWORKS, ids=[" ".join(p) for p, _ in NETWORKS])
def test_xapi_networks_golden(paths, expected):
    tree = {p: p for p in paths}   # the value names where it was read from
    assert xapi_networks(tree) == {key: src for src, key in expected if src in tree}


A6, B6 = "fe80:0000:0000:0000:7870:94ff:fe52:dd06", "fe80:0000:0000:0000:7870:94ff:fe52:dd07"
C6, D6 = "fe80:0000:0000:0000:7870:94ff:fe52:dd16", "fe80:0000:0000:0000:7870:94ff:fe52:dd17"
# Initial_guest_metrics: (path, value) pairs -> networks
INITIAL = [
    # basic cases
    ({"attr/vif/0/ipv6/0": A6}, {"0/ipv6/0": A6}),
    ({SRIOV + "0/ipv6/0": A6}, {"0/ipv6/0": A6}),
    ({"attr/vif/0/ipv4/0": "192.168.0.1"}, {"0/ip": "192.168.0.1", "0/ipv4/0": "192.168.0.1"}),
    ({SRIOV + "0/ipv4/0": "192.168.0.1"}, {"0/ip": "192.168.0.1", "0/ipv4/0": "192.168.0.1"}),
    ({"attr/eth0/ip": "192.168.0.1"}, {"0/ip": "192.168.0.1", "0/ipv4/0": "192.168.0.1"}),
    ({"attr/eth0/ipv6/0/addr": A6}, {"0/ipv6/0": A6}),
    # index
    ({"attr/vif/1/ipv6/2": A6}, {"1/ipv6/2": A6}),
    ({SRIOV + "1/ipv6/2": A6}, {"1/ipv6/2": A6}),
    ({"attr/vif/1/ipv4/2": "192.168.0.1"}, {"1/ip": "192.168.0.1", "1/ipv4/2": "192.168.0.1"}),
    ({"attr/eth1/ip": "192.168.0.1"}, {"1/ip": "192.168.0.1", "1/ipv4/0": "192.168.0.1"}),
    ({"attr/eth1/ipv6/2/addr": A6}, {"1/ipv6/2": A6}),
    # multiple ip addrs
    ({"attr/vif/0/ipv6/0": A6, "attr/vif/0/ipv6/1": B6}, {"0/ipv6/1": B6, "0/ipv6/0": A6}),
    ({SRIOV + "0/ipv6/0": A6, SRIOV + "0/ipv6/1": B6}, {"0/ipv6/1": B6, "0/ipv6/0": A6}),
    ({"attr/vif/0/ipv4/0": "192.168.0.1", "attr/vif/0/ipv4/1": "192.168.1.1"},
     {"0/ipv4/1": "192.168.1.1", "0/ip": "192.168.0.1", "0/ipv4/0": "192.168.0.1"}),
    ({"attr/eth0/ip": "192.168.0.1", "attr/eth0/ipv6/0/addr": A6},
     {"0/ip": "192.168.0.1", "0/ipv4/0": "192.168.0.1", "0/ipv6/0": A6}),
    ({"attr/vif/0/ipv4/0": "192.168.0.1", "attr/vif/0/ipv6/0": A6},
     {"0/ip": "192.168.0.1", "0/ipv4/0": "192.168.0.1", "0/ipv6/0": A6}),
    ({"attr/eth0/ip": "192.168.0.1", "attr/vif/0/ipv4/0": "192.168.0.1",
      "attr/eth0/ipv6/0/addr": A6, "attr/vif/0/ipv6/0": A6},
     {"0/ip": "192.168.0.1", "0/ipv4/0": "192.168.0.1", "0/ipv6/0": A6}),
    # multiple vifs and multiple ip addrs
    ({"attr/vif/0/ipv6/0": A6, "attr/vif/0/ipv6/1": B6, "attr/vif/1/ipv6/0": C6, "attr/vif/1/ipv6/1": D6},
     {"0/ipv6/1": B6, "0/ipv6/0": A6, "1/ipv6/1": D6, "1/ipv6/0": C6}),
    ({"attr/vif/0/ipv4/0": "192.168.0.1", "attr/vif/0/ipv4/1": "192.168.0.2",
      "attr/vif/1/ipv4/0": "192.168.1.1", "attr/vif/1/ipv4/1": "192.168.1.2"},
     {"0/ipv4/1": "192.168.0.2", "0/ip": "192.168.0.1", "0/ipv4/0": "192.168.0.1",
      "1/ipv4/1": "192.168.1.2", "1/ip": "192.168.1.1", "1/ipv4/0": "192.168.1.1"}),
    # combined SRIOV VF and plain VIF
    ({"attr/vif/0/ipv4/0": "192.168.0.1", "attr/vif/0/ipv4/1": "192.168.0.2",
      "attr/vif/1/ipv4/0": "192.168.1.1", "attr/vif/1/ipv4/1": "192.168.1.2",
      SRIOV + "2/ipv4/0": "192.168.2.1", SRIOV + "2/ipv4/1": "192.168.2.2",
      SRIOV + "3/ipv4/0": "192.168.3.1", SRIOV + "3/ipv4/1": "192.168.3.2"},
     {"0/ipv4/1": "192.168.0.2", "0/ip": "192.168.0.1", "0/ipv4/0": "192.168.0.1",
      "1/ipv4/1": "192.168.1.2", "1/ip": "192.168.1.1", "1/ipv4/0": "192.168.1.1",
      "2/ipv4/1": "192.168.2.2", "2/ip": "192.168.2.1", "2/ipv4/0": "192.168.2.1",
      "3/ipv4/1": "192.168.3.2", "3/ip": "192.168.3.1", "3/ipv4/0": "192.168.3.1"}),
    # exceptions
    ({"attr/vif/0/ipv4/a": "192.168.0.1", "attr/vif/0/ipv4/1": "192.168.0.1"}, {}),
    ({SRIOV + "0/ipv4/a": "192.168.0.1", SRIOV + "0/ipv4/1": "192.168.0.1"}, {}),
]


@pytest.mark.parametrize("tree,expected", INITIAL, ids=[" ".join(t) for t, _ in INITIAL])
def test_xapi_initial_guest_metrics_golden(tree, expected):
    assert xapi_networks(tree) == expected


def test_networks_rules_beyond_the_goldens():
    # <devid>/ip is the lowest ipv4 index numerically (10 > 9), whatever the order of the keys
    tree = {"attr/vif/3/ipv4/10": "10.0.0.10", "attr/vif/3/ipv4/9": "10.0.0.9", "attr/vif/3/ipv6/0": "::1"}
    assert xapi_networks(tree)["3/ip"] == "10.0.0.9"
    # a bad index in one family drops the whole VIF, not the other VIFs
    bad = dict(tree, **{"attr/vif/3/ipv6/x": "::2", "attr/vif/3/ipv6/1": "::3", "attr/vif/4/ipv4/0": "10.4.0.1"})
    assert xapi_networks(bad) == {"4/ip": "10.4.0.1", "4/ipv4/0": "10.4.0.1"}
    # xenbr<N>, ens<N>... of the legacy layout; ignored as soon as attr/vif has an entry, even empty
    legacy = {"attr/xenbr2/ip": "10.2.0.1", "attr/ens5/ip": "10.5.0.1", "attr/PVAddons/MajorVersion": "1"}
    assert xapi_networks(legacy) == {"2/ip": "10.2.0.1", "2/ipv4/0": "10.2.0.1",
                                     "5/ip": "10.5.0.1", "5/ipv4/0": "10.5.0.1"}
    assert xapi_networks(dict(legacy, **{"attr/vif/0": ""})) == {}


# xapi_pv_driver_version.get_drivers_version: major and minor required, micro/build default to -1,
# anything present must pass OCaml's int_of_string or the VM has no PV drivers ("Unknown": {}).
PV = [
    ({}, {}),
    ({"MajorVersion": "1"}, {}),
    ({"MajorVersion": "1", "MinorVersion": "2"}, {"major": 1, "minor": 2, "micro": -1}),
    ({"MajorVersion": "1", "MinorVersion": "2", "MicroVersion": "3", "BuildVersion": "4"},
     {"major": 1, "minor": 2, "micro": 3, "build": 4}),
    ({"MajorVersion": "1", "MinorVersion": "2", "MicroVersion": "x"}, {}),
    ({"MajorVersion": "1", "MinorVersion": "2", "BuildVersion": "1.0"}, {}),
    ({"MajorVersion": "1", "MinorVersion": "2", "BuildVersion": ""}, {}),
    ({"MajorVersion": "1", "MinorVersion": "2", "Application": "anything"}, {"major": 1, "minor": 2, "micro": -1}),
    # OCaml's int_of_string, not Python's int(): no spaces or newlines, no non-ASCII digits...
    ({"MajorVersion": "1 ", "MinorVersion": "2"}, {}),
    ({"MajorVersion": "1", "MinorVersion": "2\n"}, {}),
    ({"MajorVersion": "\u0661", "MinorVersion": "2"}, {}),
    ({"MajorVersion": "4611686018427387904", "MinorVersion": "2"}, {}),   # max_int + 1 (63-bit)
    # ...but signs, underscores and 0x/0o/0b prefixes
    ({"MajorVersion": "+1", "MinorVersion": "1_0", "MicroVersion": "0x10", "BuildVersion": "-0b11"},
     {"major": 1, "minor": 10, "micro": 16, "build": -3}),
    ({"MajorVersion": "4611686018427387903", "MinorVersion": "0o17"},
     {"major": (1 << 62) - 1, "minor": 15, "micro": -1}),
]


@pytest.mark.parametrize("keys,expected", PV, ids=[repr(k) for k, _ in PV])
def test_pv_drivers_version(keys, expected):
    assert hostmodel.pv_drivers_version({"attr/PVAddons/" + k: v for k, v in keys.items()}) == expected


def test_os_version_other_memory_keys_as_xapi_names_them():
    data = {"data/os_name": "Debian GNU/Linux 12 (bookworm)", "data/os_uname": "6.1.0", "data/os_distro": "debian",
            "data/os_majorver": "12", "data/os_minorver": "4", "data/updated": "1", "data/ts": "0"}
    assert hostmodel.os_version(data) == {"name": "Debian GNU/Linux 12 (bookworm)", "uname": "6.1.0",
                                          "distro": "debian", "major": "12", "minor": "4"}
    assert hostmodel.os_version({"data/os_name": "x"}) == {"name": "x"}   # absent keys are left out
    control = {"control/feature-balloon": "1", "control/platform-feature-multiprocessor-suspend": "1"}
    assert hostmodel.other(control, data) == {"feature-balloon": "1", "platform-feature-multiprocessor-suspend": "1",
                                              "data-ts": "0"}
    assert hostmodel.other({"control": ""}) == {}   # control/ with nothing below it


def test_current_reader_reads_with_xapi_depth_limits(xenstored, guest, current):
    """dom0 writes a tree; the reader on the real xenstored computes what the pure functions say."""
    writes = {"attr/vif/0/ipv4/0": "10.0.0.1", "attr/vif/0/ipv4/0/prefix": "24",   # below the limit: unread
              "attr/vif/0/ipv6/1": "2001:db8::1", "attr/eth9/ip": "10.9.9.9",       # legacy: ignored
              SRIOV + "2/ipv4/0": "10.2.0.1", "data/os_distro": "debian", "data/os_majorver": "12",
              "data/volumes/0/name": "/dev/xvda",                                    # data: one level only
              "data/meminfo_free": "1024", "data/meminfo_total": "2048",
              "control/feature-balloon": "1"}   # last: data/ is not watched, control/ is
    t0 = time.monotonic()
    for key, value in writes.items():
        guest.dom0.write(guest.path(key), value.encode())
    # Every key awaited: a look under way may read data/ before the last data write and control/
    # after the feature-balloon write.
    current.wait_for(lambda v: v["networks"].get("2/ip") and v["other"].get("feature-balloon")
                     and v["memory"].get("total") and v["os_version"].get("major"), since=t0)
    view = current.view
    assert view["networks"] == {"0/ip": "10.0.0.1", "0/ipv4/0": "10.0.0.1", "0/ipv6/1": "2001:db8::1",
                                "2/ip": "10.2.0.1", "2/ipv4/0": "10.2.0.1"}
    assert view["os_version"] == {"distro": "debian", "major": "12"}
    assert view["memory"] == {"free": "1024", "total": "2048"}
    assert view["other"] == {"feature-balloon": "1", "platform-feature-multiprocessor-suspend": "1"}
