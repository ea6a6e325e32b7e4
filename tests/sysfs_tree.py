"""Build fake sysfs trees for the VIF collector (and the agent's --sysfs DIR).

The layout copies the kernel's: ROOT/class/net/<if> is a symlink into ROOT/devices/..., a netfront
interface lives under its xenbus device (devices/vif-<devid>, holding devtype and nodename), an
SR-IOV VF under a PCI device, bridges and bonds under devices/virtual/net; `master` is a symlink
to the master's directory.

    tree = SysfsTree(tmp_path)
    eth0 = tree.vif("eth0", devid=0)          # returns the ifindex it was given
    tree.bridge("xenbr0", ports=["eth0"])
    vifs(tree.sysfs)
"""
import os


class SysfsTree:
    def __init__(self, root):
        self.sysfs = str(root)
        self.indexes = {}  # name -> ifindex
        self._dirs = {}  # name -> real directory of the interface
        os.makedirs(self._path("class", "net"), exist_ok=True)

    def _path(self, *parts):
        return os.path.join(self.sysfs, *parts)

    def _add(self, name, devdir, index, mac, device=None):
        index = index if index is not None else max(self.indexes.values(), default=1) + 1
        ifdir = os.path.join(devdir, "net", name)
        os.makedirs(ifdir)
        self._write(ifdir, "ifindex", "%d\n" % index)
        self._write(ifdir, "address", (mac or "00:16:3e:00:%02x:%02x" % (index >> 8 & 255, index & 255)) + "\n")
        if device:
            os.symlink(os.path.relpath(device, ifdir), os.path.join(ifdir, "device"))
        os.symlink(os.path.relpath(ifdir, self._path("class", "net")), self._path("class", "net", name))
        self.indexes[name], self._dirs[name] = index, ifdir
        return index

    @staticmethod
    def _write(directory, name, text):
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)

    def dir(self, name):
        """The interface's real directory (what SYSFS/class/net/<name> points to)."""
        return self._dirs[name]

    def vif(self, name, devid, mac=None, index=None, nodename=None, devtype="vif"):
        """A netfront interface; nodename/devtype override the files (None for devtype: no file)."""
        device = self._path("devices", "vif-%s" % devid)
        os.makedirs(device, exist_ok=True)
        self._write(device, "nodename", (nodename if nodename is not None else "device/vif/%s" % devid) + "\n")
        if devtype is not None:
            self._write(device, "devtype", devtype + "\n")
        return self._add(name, device, index, mac, device)

    def vf(self, name, mac, index=None, slot=5):
        """An SR-IOV virtual function: a PCI network device (no nodename)."""
        device = self._path("devices", "pci0000:00", "0000:00:%02x.0" % slot)
        self._write(device, "vendor", "0x8086\n")
        return self._add(name, device, index, mac, device)

    def plain(self, name, mac=None, index=None):
        """A virtual interface with no device (lo, a VLAN, a veth...)."""
        return self._add(name, self._path("devices", "virtual"), index, mac)

    def bridge(self, name, ports=(), mac=None, index=None):
        index = self._add(name, self._path("devices", "virtual"), index, mac)
        os.makedirs(os.path.join(self._dirs[name], "bridge"))
        for port in ports:
            self.enslave(port, name)
        return index

    def bond(self, name, slaves=(), mac=None, index=None):
        """A bond; like the kernel, the slaves' current MAC becomes the bond's (the first slave's)."""
        mac = mac or (self.mac(slaves[0]) if slaves else None)
        index = self._add(name, self._path("devices", "virtual"), index, mac)
        for slave in slaves:
            self._write(os.path.join(self._dirs[slave], "bonding_slave"), "perm_hwaddr", self.mac(slave) + "\n")
            self._write(self._dirs[slave], "address", self.mac(name) + "\n")
            self.enslave(slave, name)
        self._write(os.path.join(self._dirs[name], "bonding"), "slaves", " ".join(slaves) + "\n")
        return index

    def mac(self, name):
        with open(os.path.join(self._dirs[name], "address")) as f:
            return f.read().strip()

    def enslave(self, name, master):
        link = os.path.join(self._dirs[name], "master")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.relpath(self._dirs[master], self._dirs[name]), link)

    def release(self, name):
        os.unlink(os.path.join(self._dirs[name], "master"))

    def write(self, name, relpath, text):
        """Overwrite (or create) a file below the interface, e.g. write("eth0", "device/nodename", "x")."""
        path = os.path.join(self.sysfs, "class", "net", name, relpath)
        self._write(os.path.dirname(path), os.path.basename(path), text)
