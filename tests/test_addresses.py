"""address_keys: XenStore keys and stable indexes from interfaces and addresses (pure)."""
import time

from tests.sysfs_tree import SysfsTree
from xe_guest_agent import schema
from xe_guest_agent.collectors.addresses import CAP, address_keys
from xe_guest_agent.collectors.vif import Nic, sriov_vfs, vifs
from xe_guest_agent.netlink import IFA_F_DEPRECATED, IFA_F_SECONDARY, Addr, Link, Table

ETH0 = Nic(2, "eth0", 0, "00:16:3e:00:00:02", "", 0)


def addrs_of(*pairs):
    """{index: {(family, address): Addr}} like netlink.Table.addrs; pairs are (index, address[, flags])."""
    out = {}
    for index, address, *flags in pairs:
        family = 6 if ":" in address else 4
        addr = Addr("new", index, family, address, 64 if family == 6 else 24, 0, flags[0] if flags else 0)
        out.setdefault(index, {})[(family, address)] = addr
    return out


def run(addrs, previous=None, vifs_=None, sriov=None, links=None, cap=CAP):
    keys, assignment = address_keys(vifs_ if vifs_ is not None else {2: ETH0}, sriov or {}, links or {},
                                    addrs, previous, cap=cap)
    assert all(schema.valid_path(p) and schema.owned(p) for p in keys)
    return keys, assignment


def test_basic_keys():
    keys, assignment = run(addrs_of((2, "10.0.0.5"), (2, "2001:db8::5"), (2, "fe80::216:3eff:fe00:2"), (3, "10.9.9.9")))
    assert keys == {
        "attr/vif/0/ipv4/0": "10.0.0.5",
        "attr/vif/0/ipv6/0": "2001:db8::5",
        "attr/vif/0/ipv6/1": "fe80::216:3eff:fe00:2",  # link-local after global
    }
    assert assignment == {"attr/vif/0/ipv4": {"10.0.0.5": 0},
                          "attr/vif/0/ipv6": {"2001:db8::5": 0, "fe80::216:3eff:fe00:2": 1}}


def test_plain_sets_work_too():
    keys, _ = run({2: {(4, "10.0.0.2"), (4, "10.0.0.1")}})
    assert keys == {"attr/vif/0/ipv4/0": "10.0.0.1", "attr/vif/0/ipv4/1": "10.0.0.2"}


def test_primary_before_secondary_and_preferred_before_deprecated():
    keys, _ = run(addrs_of((2, "10.0.0.1", IFA_F_SECONDARY), (2, "10.0.0.9"),
                           (2, "2001:db8::1", IFA_F_DEPRECATED), (2, "2001:db8::9")))
    assert keys["attr/vif/0/ipv4/0"] == "10.0.0.9" and keys["attr/vif/0/ipv6/0"] == "2001:db8::9"


def test_index_stability():
    a, b, c = "10.0.0.1", "10.0.0.2", "10.0.0.3"
    keys, prev = run(addrs_of((2, a), (2, b), (2, c)))
    assert keys == {"attr/vif/0/ipv4/0": a, "attr/vif/0/ipv4/1": b, "attr/vif/0/ipv4/2": c}
    keys, prev = run(addrs_of((2, a), (2, c)), prev)  # the middle one goes: the others keep theirs
    assert keys == {"attr/vif/0/ipv4/0": a, "attr/vif/0/ipv4/2": c}
    keys, prev = run(addrs_of((2, "10.0.0.200"), (2, a), (2, c)), prev)  # a new one fills the gap
    assert keys == {"attr/vif/0/ipv4/0": a, "attr/vif/0/ipv4/1": "10.0.0.200", "attr/vif/0/ipv4/2": c}
    keys, prev = run(addrs_of((2, "10.0.0.200"), (2, c), (2, "10.0.0.0")), prev)  # even one that sorts first
    assert keys == {"attr/vif/0/ipv4/0": "10.0.0.0", "attr/vif/0/ipv4/1": "10.0.0.200", "attr/vif/0/ipv4/2": c}
    keys, prev = run({}, prev)
    assert keys == {} and prev == {}


def test_vif_gone_and_back_starts_afresh():
    _, prev = run(addrs_of((2, "10.0.0.1"), (2, "10.0.0.2")))
    keys, prev = run(addrs_of((2, "10.0.0.1"), (2, "10.0.0.2")), prev, vifs_={})
    assert keys == {} and prev == {}


def test_garbage_previous_is_tolerated():
    prev = {"attr/vif/0/ipv4": {"10.0.0.1": 5, "10.0.0.2": 5, "10.0.0.3": 99, "10.0.0.4": -1, "10.0.0.5": "1"}}
    keys, _ = run(addrs_of(*[(2, "10.0.0.%d" % i) for i in range(1, 6)]), prev)
    assert keys == {"attr/vif/0/ipv4/5": "10.0.0.1", "attr/vif/0/ipv4/0": "10.0.0.2", "attr/vif/0/ipv4/1": "10.0.0.3",
                    "attr/vif/0/ipv4/2": "10.0.0.4", "attr/vif/0/ipv4/3": "10.0.0.5"}


def test_bridge_master_addresses_reported_under_the_vif():
    links = {2: Link("new", 2, "eth0", 10, ""), 10: Link("new", 10, "xenbr0", 0, "")}
    addrs = addrs_of((10, "192.168.1.10"), (10, "2001:db8::10"), (2, "10.0.0.2"))
    keys, _ = run(addrs, links=links)
    assert keys == {"attr/vif/0/ipv4/0": "192.168.1.10", "attr/vif/0/ipv4/1": "10.0.0.2",
                    "attr/vif/0/ipv6/0": "2001:db8::10"}
    # without netlink links, the master found in sysfs is used
    keys2, _ = run(addrs, vifs_={2: ETH0._replace(master="xenbr0", master_index=10)})
    assert keys2 == keys


def test_vif_in_bond_in_bridge_and_two_vifs_in_one_bond():
    links = {2: Link("new", 2, "eth0", 20, ""), 3: Link("new", 3, "eth1", 20, ""),
             20: Link("new", 20, "bond0", 30, ""), 30: Link("new", 30, "br0", 0, "")}
    eth1 = Nic(3, "eth1", 1, "", "bond0", 20)
    keys, _ = run(addrs_of((30, "10.1.0.1"), (20, "10.2.0.1")), vifs_={2: ETH0, 3: eth1}, links=links)
    assert keys == {"attr/vif/0/ipv4/0": "10.2.0.1", "attr/vif/0/ipv4/1": "10.1.0.1",
                    "attr/vif/1/ipv4/0": "10.2.0.1", "attr/vif/1/ipv4/1": "10.1.0.1"}


def test_master_loops_terminate():
    links = {2: Link("new", 2, "eth0", 20, ""), 20: Link("new", 20, "a", 21, ""), 21: Link("new", 21, "b", 20, "")}
    keys, _ = run(addrs_of((21, "10.0.0.21")), links=links)
    assert keys == {"attr/vif/0/ipv4/0": "10.0.0.21"}


def test_same_address_on_master_and_vif_is_reported_once():
    links = {2: Link("new", 2, "eth0", 10, ""), 10: Link("new", 10, "br0", 0, "")}
    keys, _ = run(addrs_of((10, "10.0.0.1"), (2, "10.0.0.1")), links=links)
    assert keys == {"attr/vif/0/ipv4/0": "10.0.0.1"}


def test_cap_is_deterministic_and_freed_slots_are_refilled():
    many = addrs_of(*[(2, "10.0.%d.%d" % (i // 200, i % 200)) for i in range(40)])
    keys, prev = run(many)
    assert len(keys) == CAP
    assert sorted(keys.values()) == sorted("10.0.0.%d" % i for i in range(CAP))
    assert keys == run(dict(reversed(list(many.items()))))[0]
    del many[2][(4, "10.0.0.3")]
    keys, prev = run(many, prev)
    assert keys["attr/vif/0/ipv4/3"] == "10.0.0.%d" % CAP and len(keys) == CAP


def test_thousands_of_addresses_on_many_vifs():
    nics = {i: Nic(i, "enX%d" % i, i, "", "", 0) for i in range(2, 12)}
    addrs = {}
    for i in nics:
        for j in range(1000):
            addrs.setdefault(i, {})[(4, "10.%d.%d.%d" % (i, j // 250, j % 250))] = None
            addrs[i][(6, "2001:db8:%x::%x" % (i, j))] = None
    start = time.monotonic()
    keys, prev = run(addrs, vifs_=nics)
    keys, prev = run(addrs, prev, vifs_=nics)
    assert time.monotonic() - start < 5
    assert len(keys) == len(nics) * 2 * CAP


def test_custom_cap():
    keys, _ = run(addrs_of((2, "10.0.0.1"), (2, "10.0.0.2")), cap=1)
    assert keys == {"attr/vif/0/ipv4/0": "10.0.0.1"}


def test_sriov_prefix():
    vf = Nic(5, "ens5", 3, "02:00:00:00:00:05", "", 0)
    keys, assignment = run(addrs_of((5, "172.16.0.5"), (2, "10.0.0.2")), sriov={5: vf})
    assert keys == {"xenserver/attr/net-sriov-vf/3/ipv4/0": "172.16.0.5", "attr/vif/0/ipv4/0": "10.0.0.2"}
    assert set(assignment) == {"xenserver/attr/net-sriov-vf/3/ipv4", "attr/vif/0/ipv4"}


def test_from_sysfs_and_netlink_table_with_awkward_names(tmp_path):
    """The whole pipeline: fake sysfs + a Table fed with netlink messages -> keys."""
    tree = SysfsTree(tmp_path)
    a = tree.vif("eth0.100", devid=4)
    b = tree.vif("we:ird", devid=5)
    br = tree.bridge("br.lan", ports=["we:ird"])
    vf = tree.vf("ens5.vf", mac="02:00:00:00:00:05")
    table = Table()
    table.apply(["dump-start",
                 Link("new", a, "eth0.100", 0, tree.mac("eth0.100")),
                 Link("new", b, "we:ird", br, tree.mac("we:ird")),
                 Link("new", br, "br.lan", 0, tree.mac("br.lan")),
                 Link("new", vf, "ens5.vf", 0, "02:00:00:00:00:05"),
                 Addr("new", a, 4, "10.4.0.1", 24, 0, 0),
                 Addr("new", br, 6, "2001:db8::5", 64, 0, 0),
                 Addr("new", br, 6, "2001:db8::6", 64, 0, 0x40),  # tentative: not reported
                 Addr("new", vf, 4, "172.16.0.5", 24, 0, 0),
                 "dump-done"])
    nics = vifs(tree.sysfs, table.links)
    vfs = sriov_vfs({"7": "02:00:00:00:00:05"}, tree.sysfs, table.links)
    keys, _ = address_keys(nics, vfs, table.links, table.addrs, {})
    assert keys == {"attr/vif/4/ipv4/0": "10.4.0.1", "attr/vif/5/ipv6/0": "2001:db8::5",
                    "xenserver/attr/net-sriov-vf/7/ipv4/0": "172.16.0.5"}
    assert all(schema.valid_path(p) for p in keys)
