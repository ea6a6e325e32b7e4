"""Sources: the shell's side of each collector. A source owns the I/O its collector needs beyond
reading files once (a netlink socket, a timer) and hands the agent plain {key: value} data.
"""
import logging
import os
import select
import selectors
import time

from inotify_simple import flags

from . import flagwatch, schema
from .collectors import addresses, hostname, hotplug, memory, os_info, vif

log = logging.getLogger("xe-guest-agent")


class Source:
    """Defaults for a source that contributes nothing: subclasses override what they need."""
    agent = None

    def collect(self):
        """First look at the system, synchronously (also what `show` prints)."""

    def attach(self, agent):
        """Called once by the agent: register descriptors and timers here."""
        self.agent = agent

    def keys(self):
        """{key: value} this source wants published now."""
        return {}

    def owned_keys(self):
        """Fixed keys (beyond schema.OWNED_KEYS) this source publishes and may need to remove."""
        return []

    def reset(self):
        """A new domain or connection: what was read from XenStore is stale."""

    def refresh(self, xs, dirty):
        """Read what the source needs from XenStore; `dirty` holds the watch paths that fired,
        or None after a reset (read everything)."""

    def on_timer(self, name):
        """A timer of the agent's has fired."""

    def reload(self, config):
        """The configuration has been reloaded (SIGHUP)."""


class Balloon(Source):
    """control/feature-balloon = 1: the guest's balloon driver can honour memory/target."""

    def __init__(self, config):
        self.enabled = config.feature_balloon

    def keys(self):
        return {schema.FEATURE_BALLOON: "1"} if self.enabled else {}

    def owned_keys(self):
        # Owned even when turned off: a run with feature_balloon = no removes what an earlier run
        # published, or squeezed would go on believing the guest can balloon.
        return [schema.FEATURE_BALLOON]

    def reload(self, config):
        self.enabled = config.feature_balloon


class OsInfo(Source):
    """data/os_*: read once at start and on reload; they change only with an upgrade and a reboot."""

    def __init__(self, root="/"):
        self.root, self.current = root, {}

    def collect(self):
        self.current = os_info.collect(self.root)

    def keys(self):
        return self.current

    def reload(self, config):
        self.collect()


class Memory(Source):
    """data/meminfo_*: on a timer, published only when they moved by more than the threshold."""

    def __init__(self, config, path="/proc/meminfo"):
        self.path, self.config, self.current = path, config, {}

    def collect(self):
        self.current = memory.collect(self.path)

    def attach(self, agent):
        self.agent = agent
        agent.timers["memory"] = time.monotonic() + self.config.memory_interval

    def keys(self):
        return self.current

    def on_timer(self, name):
        if name != "memory":
            return
        new = memory.collect(self.path)
        threshold = self.config.memory_threshold_kib(int(new.get(memory.TOTAL) or 0))
        if memory.changed(self.current, new, threshold):
            self.current = new
        self.agent.timers["memory"] = time.monotonic() + self.config.memory_interval

    def reload(self, config):
        self.config = config
        if self.agent:
            self.agent.timers["memory"] = time.monotonic() + config.memory_interval


class Network(Source):
    """attr/vif/<devid>/ipv4|ipv6/<n> (and SR-IOV VFs), driven by rtnetlink events."""

    SRIOV_DEVICES = "xenserver/device/net-sriov-vf"
    DUMP_WAIT = 1.0   # seconds the first dump may take before we publish without it

    def __init__(self, config, sysfs="/sys"):
        from .netlink import OVERFLOW, RtNetlink, Table
        self._overflow, self._socket_class = OVERFLOW, RtNetlink
        self.sysfs, self.cap = sysfs, config.max_addresses
        self.table = Table()
        self.nl = None
        self.macs = {}          # SR-IOV vf id -> MAC, from XenStore
        self.assignment = {}    # stable indexes, carried from one computation to the next
        self.current = {}

    def collect(self):
        try:
            self.nl = self._socket_class()
            self.nl.request_dump()
        except OSError as e:
            log.warning("no rtnetlink (%s): addresses will not be published", e.strerror)
            self.nl = None
            return
        deadline = time.monotonic() + self.DUMP_WAIT
        sel = selectors.DefaultSelector()
        sel.register(self.nl, selectors.EVENT_READ)
        while self.table.links == {} or self.table.syncing:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            self._read()
        sel.close()
        self._compute()

    def attach(self, agent):
        self.agent = agent
        if self.nl is not None:
            agent.selector.register(self.nl, selectors.EVENT_READ, self._on_readable)

    def _read(self):
        messages = self.nl.read()
        if self._overflow in messages:
            log.debug("rtnetlink overflow: resynchronising")
            self.nl.request_dump()
        return self.table.apply(messages)

    def _on_readable(self):
        if self._read():
            self._compute()

    def _compute(self):
        vifs = vif.vifs(self.sysfs, self.table.links)
        sriov = vif.sriov_vfs(self.macs, self.sysfs, self.table.links) if self.macs else {}
        self.current, self.assignment = addresses.address_keys(
            vifs, sriov, self.table.links, self.table.addrs, self.assignment, self.cap)

    def keys(self):
        return self.current

    def reset(self):
        self.macs = None   # re-read from the new domain's tree

    def refresh(self, xs, dirty):
        if self.macs is not None and not any(p.startswith(self.SRIOV_DEVICES) or
                                             self.SRIOV_DEVICES.startswith(p + "/") for p in dirty or ()):
            return
        found = xs.walk(self.SRIOV_DEVICES)
        macs = {k.split("/")[-2]: v for k, v in found.items() if k.endswith("/mac")}
        if macs != self.macs:
            self.macs = macs
            self._compute()

    def reload(self, config):
        self.cap = config.max_addresses
        self._compute()


class FileWatch(flagwatch.FlagWatch):
    """A FlagWatch that also reports new content: a write to the file (or to the end of its
    symlink chain) closed, besides creations, removals, renames and re-pointed links."""

    def rearm(self):
        super().rearm()
        for d in set(self._watches.values()):
            try:   # the same directory again: the kernel replaces its mask, the wd stays
                self.inotify.add_watch(d, flagwatch.MASK | flags.CLOSE_WRITE)
            except OSError:
                pass   # vanished in between: its parent's event re-arms


class HostName(Source):
    """data/host_name_dns and data/domain (collectors/hostname.py), driven by events only.

    The kernel signals a change of the host name through poll() on /proc/sys/kernel/hostname:
    POLLERR|POLLPRI once after each sethostname() since the file was opened or last reported
    (proc_sys_poll), then the value is read again with lseek and read. The file is always
    readable, so a selector's EVENT_READ would spin: an epoll of its own waits for POLLPRI, and
    the agent's selector waits on that. The notice is shared by every UTS namespace (one wait
    queue for all), the value is the reader's own: a change made in another namespace reads the
    same and writes nothing. /etc/hosts, which may give the domain, is watched with inotify.
    """

    PROC = "/proc/sys/kernel/hostname"

    def __init__(self, root="/", proc=PROC):
        self.proc, self.hosts = proc, os.path.join(root, "etc", "hosts")
        self.fd = self.poller = self.watch = None
        self.current = {}

    def collect(self):
        if self.fd is None:
            try:
                self.fd = os.open(self.proc, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                log.warning("cannot read %s (%s): the host name will not be published", self.proc, e.strerror)
        self._read()

    def _read(self):
        name = ""
        if self.fd is not None:
            try:
                os.lseek(self.fd, 0, os.SEEK_SET)
                name = os.read(self.fd, 4096).decode("ascii", "replace").strip()
            except OSError as e:
                log.debug("reading %s: %s", self.proc, e.strerror)
        self.current = hostname.keys(name, lambda: hostname.read_hosts(self.hosts))

    def attach(self, agent):
        self.agent = agent
        if self.fd is not None:
            self.poller = select.epoll()
            self.poller.register(self.fd, select.EPOLLPRI)
            agent.selector.register(self.poller, selectors.EVENT_READ, self._on_name)
        self.watch = FileWatch(self.hosts)
        agent.selector.register(self.watch, selectors.EVENT_READ, self._on_hosts)

    def _on_name(self):
        # Reported once: the poll that saw it (this one, or the agent's epoll looking through
        # ours) cleared it. Draining drops our epoll's ready entry so the agent's stops firing.
        self.poller.poll(0)
        self._read()

    def _on_hosts(self):
        if self.watch.changed():
            self._read()

    def keys(self):
        return self.current

    def reload(self, config):
        self._read()


class Hotplug(Source):
    """feature/hotplug/vif|vbd (collectors/hotplug.py): "1" while sysfs shows the frontend.

    A frontend built as a module may come later (udev loads it for the first device of its kind,
    or an administrator does). sysfs gives no inotify event for that, and a uevent socket would
    wake the agent for every device event on the machine, so it is checked again at every full
    look (start, reconnect, new domain, resume) and on the memory tick: two stat() calls, no
    wake-up of its own. Being late is harmless: until it is published xapi reads the key as
    unspecified, which allows hot-plug for a guest with PV drivers, and the module that came
    was loaded for a device that was already plugged.
    """

    def __init__(self, sysfs="/sys"):
        self.sysfs, self.current = sysfs, {}

    def collect(self):
        self.current = hotplug.collect(self.sysfs)

    def keys(self):
        return self.current

    def refresh(self, xs, dirty):
        if dirty is None:
            self.collect()

    def on_timer(self, name):
        if name == "memory":
            self.collect()

    def reload(self, config):
        self.collect()


def default_sources(config, sysfs="/sys", os_root="/", meminfo="/proc/meminfo"):
    return [OsInfo(os_root), Memory(config, meminfo), Balloon(config), Network(config, sysfs),
            HostName(os_root), Hotplug(sysfs)]
