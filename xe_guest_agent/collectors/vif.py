"""Which network interfaces are Xen VIFs (or SR-IOV VFs), read from a sysfs tree.

A netfront interface's sysfs device is its xenbus node: SYSFS/class/net/<if>/device/nodename
reads "device/vif/<devid>" (and device/devtype reads "vif"). xapi keys addresses by that devid, so
the nodename decides: a devtype of "vif" without a readable nodename gives no devid to key by.

Interface names only locate files here: they may contain '.' or ':' and never reach a XenStore
path. Nothing here raises on an odd tree: unreadable or garbage files mean "not a VIF" / "unknown".
"""
import os
import re
import stat
from collections import namedtuple

Nic = namedtuple("Nic", "index name devid mac master master_index")
Nic.__doc__ = """A VIF (devid = its Xen device id) or an SR-IOV VF (devid = its VF id).

index: ifindex; name: interface name; mac: "aa:bb:.." lowercase or "";
master: name of the bridge/bond it is enslaved to ("" if none); master_index: its ifindex (0 if unknown).
"""

_NODENAME = re.compile(r"device/vif/([0-9]{1,9})\Z")
_ID = re.compile(r"[0-9]{1,9}\Z")
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")


def _read(path, limit=256):
    """The stripped text of a small regular file, or None. Never blocks on a FIFO, never raises."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):  # ValueError: a NUL in a name coming from outside
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)


def _int(text):
    return int(text) if text and _ID.match(text) else None


def _mac(text):
    text = (text or "").strip().lower().replace("-", ":")
    return text if _MAC.match(text) else ""


def _master(ifdir):
    try:
        return os.path.basename(os.readlink(os.path.join(ifdir, "master")))
    except (OSError, ValueError):
        return ""


def _interfaces(sysfs, links):
    """(index, name, ifdir, link or None) for each interface, from `links` when given, else sysfs."""
    net = os.path.join(sysfs, "class", "net")
    if links is not None:
        for link in sorted(links.values(), key=lambda l: l.index):
            if not link.name or "/" in link.name or link.name in (".", ".."):
                continue
            ifdir = os.path.join(net, link.name)
            index = _int(_read(os.path.join(ifdir, "ifindex")))
            if index is None or index == link.index:  # a different index: renamed meanwhile
                yield link.index, link.name, ifdir, link
        return
    try:
        names = sorted(os.listdir(net))
    except OSError:
        return
    for name in names:
        ifdir = os.path.join(net, name)
        index = _int(_read(os.path.join(ifdir, "ifindex")))
        if index:
            yield index, name, ifdir, None


def _nic(index, name, ifdir, link, devid, mac, links):
    master = _master(ifdir)
    if link is not None:  # netlink is the fresher source for the master
        master_index = link.master
        if master_index in links and links[master_index].name:
            master = links[master_index].name
        elif not master_index:
            master = ""
    else:
        master_index = _int(_read(os.path.join(ifdir, "master", "ifindex"))) or 0
    return Nic(index, name, devid, mac, master, master_index)


def _nodename_devid(ifdir):
    m = _NODENAME.match(_read(os.path.join(ifdir, "device", "nodename")) or "")
    return int(m.group(1)) if m else None


def vifs(sysfs="/sys", links=None):
    """{ifindex: Nic} for every Xen VIF under SYSFS/class/net.

    `links` ({ifindex: netlink.Link}) restricts the scan to those interfaces and supplies their
    index, MAC and master; without it every entry of SYSFS/class/net is examined.
    """
    out = {}
    for index, name, ifdir, link in _interfaces(sysfs, links):
        devid = _nodename_devid(ifdir)
        if devid is not None:
            mac = (link.mac if link is not None else "") or _mac(_read(os.path.join(ifdir, "address")))
            out[index] = _nic(index, name, ifdir, link, devid, mac, links)
    return out


def sriov_vfs(macs, sysfs="/sys", links=None):
    """{ifindex: Nic} for each SR-IOV VF: a non-VIF device whose MAC is one of `macs` {vf_id: mac}.

    `macs` comes from XenStore (xenserver/device/net-sriov-vf/<id>/mac); ids that are not decimal
    integers or MACs that do not parse are ignored. Only interfaces with a `device` (a PCI VF) are
    candidates: bridges, bonds and VLANs stacked on the VF carry its MAC too, and are reached
    through the VF's master instead. A bonded VF's current MAC may be the bond's, so its permanent
    one (bonding_slave/perm_hwaddr) is preferred.
    """
    wanted = {}
    for vf_id, mac in sorted(((str(k), v) for k, v in (macs or {}).items()), key=lambda kv: (len(kv[0]), kv[0])):
        vf, mac = _int(vf_id), _mac(mac if isinstance(mac, str) else "")
        if vf is not None and mac:
            wanted.setdefault(mac, vf)
    out = {}
    if not wanted:
        return out
    for index, name, ifdir, link in _interfaces(sysfs, links):
        if _nodename_devid(ifdir) is not None or not os.path.isdir(os.path.join(ifdir, "device")):
            continue
        mac = (_mac(_read(os.path.join(ifdir, "bonding_slave", "perm_hwaddr")))
               or (link.mac if link is not None else "") or _mac(_read(os.path.join(ifdir, "address"))))
        if mac in wanted:
            out[index] = _nic(index, name, ifdir, link, wanted[mac], mac, links)
    return out
