"""The real Xen 4.17 C xenstored (Debian's build), run without Xen through the xsshim LD_PRELOAD
shim, and the dom0 side of a guest's life: building its home the way the toolstack does,
introducing it, wiping it for a migration.
"""
import errno
import os
import queue
import signal
import socket
import subprocess
import time
import uuid

from pyxs import Client
from pyxs.exceptions import PyXSError

from .ring import PtyBridge, create_ring

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("XGA_LAB_CACHE", os.path.join(ROOT, ".cache", "xen"))
XENSTORED = os.path.join(CACHE, "root/usr/lib/xen-4.17/bin/xenstored")
LIBS = os.path.join(CACHE, "root/usr/lib/x86_64-linux-gnu")
SHIM = os.path.join(CACHE, "libxsshim.so")

# Dom0 tools use the socket; pyxs refuses domain-management requests unless it believes it is
# dom0 (it reads /proc/xen/capabilities, absent here).
Client.SU = True


class LabError(Exception):
    pass


def ensure_built():
    """Fetch xenstored and build the shim into the cache the first time (needs apt and gcc)."""
    if os.path.exists(XENSTORED) and os.path.exists(SHIM):
        return
    r = subprocess.run(["sh", os.path.join(HERE, "fetch-xenstored.sh"), CACHE], cwd=HERE,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if r.returncode or not os.path.exists(XENSTORED):
        raise LabError("could not fetch the real xenstored into %s (needs root, apt-get with Debian "
                       "bookworm sources, gcc):\n%s" % (CACHE, r.stdout[-3000:]))


def transaction(client, body):
    """Run body() in a dom0 transaction, again from the start whenever the commit conflicts."""
    while True:
        client.transaction()
        try:
            body()
        except BaseException:
            client.rollback()
            raise
        if client.commit():
            return


class Xenstored:
    """One daemon with its own run directory (socket, shim FIFOs, rings)."""

    def __init__(self, rundir, args=(), trace=False):
        self.rundir = rundir
        self.socket = os.path.join(rundir, "socket")
        self.args = list(args)
        self.trace = os.path.join(rundir, "trace") if trace else None
        self.proc = None
        self.env = dict(os.environ, XENSTORED_RUNDIR=rundir, XS_SHIM_DIR=rundir,
                        LD_LIBRARY_PATH=LIBS, LD_PRELOAD=SHIM)

    def start(self):
        ensure_built()
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        args = [XENSTORED, "--no-fork"] + self.args
        if self.trace:
            args += ["-T", self.trace]
        self.proc = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError("xenstored exited at start: %s" % self.proc.stderr.read().decode()[-2000:])
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.socket)
                return self
            except OSError:
                time.sleep(0.002)
        raise LabError("xenstored did not open %s within 10 s" % self.socket)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def client(self):
        """A connected dom0 pyxs client (close it when done)."""
        c = Client(unix_socket_path=self.socket)
        c.connect()
        return c


class Guest:
    """Domain <domid> as the toolstack builds it, with a pty that stands in for its xenbus device.
    The bridge is the ring's only consumer: a second guest-side client on the same domain would
    steal its replies.

    profile "xapi": control/ is guest-writable, unique-domain-id written (xenopsd); "libxl": as the
    xl toolstack builds it: control/ read-only for the guest and no unique-domain-id.
    """

    DIRS = ("data", "attr", "control", "feature", "drivers", "device", "error", "xenserver/attr")

    def __init__(self, xenstored, domid=7, profile="xapi"):
        self.xsd, self.domid, self.profile = xenstored, domid, profile
        self.home = "/local/domain/%d" % domid
        self.uuid = None
        self.dom0 = xenstored.client()
        self.build()
        create_ring(xenstored.rundir, domid)
        self.dom0.introduce_domain(domid, 1, 1)
        self.bridge = PtyBridge(xenstored.rundir, domid)
        self.device = self.bridge.device

    def path(self, rel):
        return (self.home + "/" + rel).encode()

    def build(self):
        """Create the home (in one transaction, as the toolstack does) with a fresh unique-domain-id."""
        transaction(self.dom0, self._populate)

    def migrate(self, domid=None, replay=True):
        """What the guest sees of a migration/resume: its tree wiped and rebuilt with a new
        unique-domain-id (the same domid here), in one transaction.

        With a new `domid`: the guest is paused, the old domain released and its home removed,
        the new one built and introduced, and the guest resumes as that domain: the bridge moves
        to its ring and registers the remembered watches again, as the kernel does."""
        if domid is not None and domid != self.domid:
            return self._move(domid, replay)

        def wipe_and_build():
            self.dom0.delete(self.home.encode())
            self._populate()
        transaction(self.dom0, wipe_and_build)

    def _move(self, domid, replay=True):
        with self.bridge.suspended():
            self.dom0.release_domain(self.domid)
            self.dom0.delete(self.home.encode())
            self.domid, self.home = domid, "/local/domain/%d" % domid
            self.build()
            create_ring(self.xsd.rundir, domid)
            self.dom0.introduce_domain(domid, 1, 1)
            self.bridge.retarget(domid, replay)

    def _populate(self):
        self.uuid = str(uuid.uuid4())
        d, n = self.domid, str(self.domid).encode()
        ro = [b"n0", b"r" + n]
        rw = [b"n" + n]
        self.dom0.mkdir(self.home.encode())
        self.dom0.set_perms(self.home.encode(), ro)
        # xenopsd writes unique-domain-id; the xl/libxl toolstack does not (seen on a real host).
        uid = () if self.profile == "libxl" else (("unique-domain-id", self.uuid.encode()),)
        for key, value in (("domid", n),) + uid + (
                           ("name", b"guest-%d" % d), ("vm", b"/vm/" + self.uuid.encode()),
                           ("memory/target", b"1048576"), ("memory/static-max", b"1048576"),
                           ("control/platform-feature-multiprocessor-suspend", b"1")):
            self.dom0.write(self.path(key), value)
            self.dom0.set_perms(self.path(key), ro)
        self.dom0.set_perms(self.path("memory"), ro)
        for sub in self.DIRS:
            self.dom0.mkdir(self.path(sub))
            writable = not (self.profile == "libxl" and sub == "control")
            self.dom0.set_perms(self.path(sub), rw if writable else ro)
        self.dom0.set_perms(self.path("xenserver"), ro)

    def restart_xenstored(self):
        """Kill the daemon, start a new one, rebuild and re-introduce this domain."""
        self.dom0.close()
        self.xsd.kill()
        self.bridge.reset()
        self.xsd.start()
        self.dom0 = self.xsd.client()
        self.build()
        self.dom0.introduce_domain(self.domid, 1, 1)
        self.bridge.replay_watches()

    def read(self, rel):
        """The value dom0 reads at `rel` below the home, or None if there is no such key."""
        try:
            return self.dom0.read(self.path(rel))
        except PyXSError as e:
            if e.args[0] == errno.ENOENT:
                return None
            raise

    def wait_key(self, rel, predicate, timeout=5.0):
        """Wait on a dom0 watch until predicate(value or None) holds for the key at `rel`; returns
        the value. AssertionError with the last value if it does not within `timeout` seconds."""
        monitor = self.dom0.monitor()
        token = b"wait-%d" % id(monitor)
        monitor.watch(self.path(rel), token)
        deadline = time.monotonic() + timeout
        try:
            while True:
                value = self.read(rel)
                if predicate(value):
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s never satisfied the condition; it is %r" % (rel, value))
                try:
                    monitor.events.get(timeout=left)
                except queue.Empty:
                    pass
        finally:
            monitor.unwatch(self.path(rel), token)

    def close(self):
        self.bridge.close()
        try:
            self.dom0.close()
        except Exception:
            pass
