"""The VIF / SR-IOV collector over fake sysfs trees (and once over the real /sys)."""
import os

from tests.sysfs_tree import SysfsTree
from xe_guest_agent.collectors.vif import Nic, sriov_vfs, vifs
from xe_guest_agent.netlink import Link


def test_vifs_by_nodename_with_devid_mac_and_index(tmp_path):
    tree = SysfsTree(tmp_path)
    tree.plain("lo", mac="00:00:00:00:00:00", index=1)
    eth0 = tree.vif("eth0", devid=0, mac="00:16:3E:0A:0B:0C")
    enx = tree.vif("enX3", devid=3, devtype=None)  # old kernels: no devtype file, nodename is enough
    assert vifs(tree.sysfs) == {
        eth0: Nic(eth0, "eth0", 0, "00:16:3e:0a:0b:0c", "", 0),
        enx: Nic(enx, "enX3", 3, tree.mac("enX3"), "", 0),
    }


def test_names_with_dots_and_colons_are_just_names(tmp_path):
    tree = SysfsTree(tmp_path)
    a = tree.vif("eth0.100", devid=7)
    b = tree.vif("weird:1", devid=8)
    found = vifs(tree.sysfs)
    assert {n.name: n.devid for n in found.values()} == {"eth0.100": 7, "weird:1": 8}
    assert set(found) == {a, b}


def test_bridge_and_bond_masters(tmp_path):
    tree = SysfsTree(tmp_path)
    eth0 = tree.vif("eth0", devid=0)
    eth1 = tree.vif("eth1", devid=1)
    eth2 = tree.vif("eth2", devid=2)
    br = tree.bridge("xenbr0", ports=["eth0"])
    bond = tree.bond("bond0", slaves=["eth1", "eth2"])
    found = vifs(tree.sysfs)
    assert set(found) == {eth0, eth1, eth2}  # masters themselves are not VIFs
    assert (found[eth0].master, found[eth0].master_index) == ("xenbr0", br)
    assert (found[eth1].master, found[eth1].master_index) == ("bond0", bond)
    tree.release("eth0")
    assert vifs(tree.sysfs)[eth0].master == "" and vifs(tree.sysfs)[eth0].master_index == 0


def test_garbage_trees_never_raise(tmp_path):
    tree = SysfsTree(tmp_path)
    good = tree.vif("eth0", devid=0)
    tree.vif("bad1", devid=1, nodename="device/vif/abc")
    tree.vif("bad2", devid=2, nodename="device/vbd/768")
    tree.vif("bad3", devid=3, nodename="device/vif/")
    tree.vif("bad4", devid=4, nodename="device/vif/-1")
    tree.vif("bad5", devid=5, nodename="device/vif/99999999999999999999")
    tree.vif("bad6", devid=6, nodename="")
    tree.vif("vifonly", devid=9, devtype="vif", nodename="")  # devtype says vif, but no devid to key by
    n = tree.vif("noindex", devid=10)
    tree.write("noindex", "ifindex", "garbage")
    tree.vif("binary", devid=11)
    with open(os.path.join(tree.dir("binary"), "..", "..", "nodename"), "wb") as f:
        f.write(b"\xff\xfe device/vif/11\x00")
    fifo = tree.vif("fifo", devid=12)
    nodename = os.path.join(tree.sysfs, "devices", "vif-12", "nodename")
    os.unlink(nodename)
    os.mkfifo(nodename)  # must not block
    d = tree.vif("dirnode", devid=13)
    os.unlink(os.path.join(tree.sysfs, "devices", "vif-13", "nodename"))
    os.mkdir(os.path.join(tree.sysfs, "devices", "vif-13", "nodename"))
    dangling = tree.vif("dangling", devid=14)
    os.symlink("../nowhere", os.path.join(tree.dir("dangling"), "master"))
    with open(os.path.join(tree.sysfs, "class", "net", "a-file"), "w") as f:
        f.write("not a directory")
    os.symlink("loop", os.path.join(tree.sysfs, "class", "net", "loop"))
    found = vifs(tree.sysfs)
    assert sorted(found) == sorted([good, dangling])
    assert found[dangling].master == "nowhere" and found[dangling].master_index == 0
    assert n not in found and fifo not in found and d not in found


def test_missing_trees(tmp_path):
    assert vifs(str(tmp_path / "nothing")) == {}
    assert vifs(str(tmp_path)) == {}
    assert sriov_vfs({"0": "00:16:3e:00:00:01"}, str(tmp_path)) == {}


def test_links_restrict_and_supply_index_mac_master(tmp_path):
    tree = SysfsTree(tmp_path)
    eth0 = tree.vif("eth0", devid=0)
    eth1 = tree.vif("eth1", devid=1)
    br = tree.bridge("br0")  # sysfs does not yet show eth0 in it: netlink is fresher
    links = {
        eth0: Link("new", eth0, "eth0", br, "00:16:3e:aa:aa:aa"),
        br: Link("new", br, "br0", 0, "00:16:3e:aa:aa:aa"),
        99: Link("new", 99, "../../etc", 0, ""),
        98: Link("new", 98, "", 0, ""),
    }
    found = vifs(tree.sysfs, links)
    assert found == {eth0: Nic(eth0, "eth0", 0, "00:16:3e:aa:aa:aa", "br0", br)}
    # eth1 was renamed and another interface took its old name: sysfs ifindex differs -> skipped
    assert vifs(tree.sysfs, {eth1 + 50: Link("new", eth1 + 50, "eth1", 0, "")}) == {}


def test_sriov_vf_by_mac(tmp_path):
    tree = SysfsTree(tmp_path)
    tree.vif("eth0", devid=0, mac="00:16:3e:00:00:01")
    vf = tree.vf("ens5", mac="02:00:00:00:00:05")
    tree.bridge("br-vf", ports=["ens5"], mac="02:00:00:00:00:05")  # carries the VF's MAC: not a VF
    macs = {"2": "02:00:00:00:00:05".upper(), "0": "00:16:3e:00:00:01", "x/y": "02:00:00:00:00:05", "3": "junk"}
    found = sriov_vfs(macs, tree.sysfs)
    assert list(found) == [vf]
    nic = found[vf]
    assert (nic.devid, nic.mac, nic.name, nic.master) == (2, "02:00:00:00:00:05", "ens5", "br-vf")
    assert sriov_vfs({}, tree.sysfs) == {} and sriov_vfs(None, tree.sysfs) == {}


def test_bonded_sriov_vf_matches_by_permanent_mac(tmp_path):
    tree = SysfsTree(tmp_path)
    eth0 = tree.vif("eth0", devid=0, mac="00:16:3e:00:00:01")
    vf = tree.vf("ens6", mac="02:00:00:00:00:06", slot=6)
    bond = tree.bond("bond0", slaves=["eth0", "ens6"])  # VIF + VF failover pair; both now show eth0's MAC
    assert tree.mac("ens6") == "00:16:3e:00:00:01"
    found = sriov_vfs({1: "02:00:00:00:00:06"}, tree.sysfs)
    assert list(found) == [vf] and found[vf].devid == 1 and found[vf].master_index == bond
    assert vifs(tree.sysfs)[eth0].master_index == bond


def test_real_sysfs_does_not_raise():
    assert isinstance(vifs("/sys"), dict)
    assert isinstance(sriov_vfs({"0": "00:16:3e:00:00:01"}, "/sys"), dict)
