"""A XenStore connection with a bounded wait on every request, for a single-threaded event loop.

pyxs provides the wire format (Packet, Op), path checks, errors and the transports; its Router
thread waits forever for a reply that a dead xenstored never sends and dies on a stray reply id,
so requests, replies and watch events are framed here, over a non-blocking descriptor that the
agent's selector also watches. The same code serves a dom0 Unix socket and a guest's xenbus
character device (where watch events carry a garbage request id: they are told apart by type).
The descriptor is opened here too: a device is opened O_NOCTTY so that a pty standing in for
xenbus (the tests) never becomes our controlling terminal.
"""
import collections
import errno
import logging
import os
import select
import stat
import struct
import termios
import time

import socket

from pyxs._internal import NUL, Op, Packet
from pyxs.exceptions import PyXSError
from pyxs.helpers import check_path, error

HEADER = struct.Struct("<IIII")
log = logging.getLogger("xe-guest-agent.wire")   # every message, at debug level only
DEFAULT_PATHS = ("/dev/xen/xenbus", "/proc/xen/xenbus")


class Lost(Exception):
    """The connection is gone (closed, reset, or a reply did not come in time)."""


class Refused(PyXSError):
    """An error reply from XenStore (or the kernel's device), naming the request it answers."""

    def __init__(self, code, op, payload):
        super().__init__(code, os.strerror(code) if code else "unknown error")
        path = payload.split(NUL, 1)[0].decode("ascii", "replace")
        self.request = Op._fields[op] + (" " + path if path and op != Op.TRANSACTION_END else "")

    def __str__(self):
        return "%s to %s" % (errno.errorcode.get(self.args[0], "error %s" % self.args[0]), self.request)


def errname(exc):
    """'EACCES' for a PyXSError(13, ...), else the exception's text."""
    code = exc.args[0] if exc.args else None
    name = errno.errorcode.get(code) if isinstance(code, int) else None
    return name or str(exc)


def in_xen_guest(sysfs="/sys"):
    """True if the kernel says it runs on Xen (its hypervisor node), whatever /dev shows yet."""
    try:
        with open(os.path.join(sysfs, "hypervisor", "type")) as f:
            return f.read().strip() == "xen"
    except OSError:
        return False


def default_path(environ=os.environ):
    """$XENSTORED_PATH if set, else the first xenbus device that exists, else None."""
    if environ.get("XENSTORED_PATH"):
        return environ["XENSTORED_PATH"]
    return next((p for p in DEFAULT_PATHS if os.path.exists(p)), None)


class XenStore:
    def __init__(self, path, timeout=2.0):
        self.path = path
        self.timeout = timeout
        self.events = collections.deque()   # (path, token) watch events not yet handled
        self._conn = None
        self._fd = -1
        self._buf = bytearray()
        self._replies = {}
        self._rq = 0

    # -- connection -------------------------------------------------------------------------
    def connect(self):
        """Open the socket or device; raises OSError/PyXSError if it is not there."""
        self.close()
        if stat.S_ISSOCK(os.stat(self.path).st_mode):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
            self._conn = sock
            self._fd = sock.fileno()
        else:
            self._fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            self._conn = self._fd
            if os.isatty(self._fd):
                # A pty standing in for xenbus keeps bytes across open/close; the real device starts
                # each open empty, so make the pty do the same.
                termios.tcflush(self._fd, termios.TCIOFLUSH)
        os.set_blocking(self._fd, False)

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close() if isinstance(self._conn, socket.socket) else os.close(self._fd)
            except OSError:
                pass
        self._conn, self._fd = None, -1
        self._buf.clear()
        self._replies.clear()
        self.events.clear()

    @property
    def connected(self):
        return self._conn is not None

    def fileno(self):
        return self._fd

    # -- framing ----------------------------------------------------------------------------
    def pump(self):
        """Read what is available and sort it into replies and watch events (never blocks)."""
        if self._fd < 0:
            raise Lost("not connected")
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                raise self._lose("read failed: %s" % e.strerror)
            if not chunk:
                raise self._lose("connection closed by xenstored")
            self._buf += chunk
        while len(self._buf) >= HEADER.size:
            op, rq, _tx, size = HEADER.unpack_from(self._buf)
            if size > 4096:
                raise self._lose("garbled reply (length %d)" % size)
            if len(self._buf) < HEADER.size + size:
                break
            payload = bytes(self._buf[HEADER.size:HEADER.size + size])
            del self._buf[:HEADER.size + size]
            if log.isEnabledFor(logging.DEBUG):
                log.debug("< %s", _describe(op, rq, _tx, payload))
            if op == Op.WATCH_EVENT:
                parts = payload.split(NUL)
                if len(parts) >= 2:
                    self.events.append((parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace")))
            else:
                self._replies[rq] = (op, payload)

    def _lose(self, why):
        self.close()
        return Lost(why)

    def _send(self, data, deadline):
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except (BlockingIOError, InterruptedError):
                self._wait(select.POLLOUT, deadline)
            except OSError as e:
                raise self._lose("write failed: %s" % e.strerror)

    def _wait(self, events, deadline):
        left = deadline - _now()
        if left <= 0:
            raise self._lose("no answer from xenstored within %.1f s" % self.timeout)
        p = select.poll()
        p.register(self._fd, events)
        p.poll(left * 1000)

    def request(self, op, payload, tx=0):
        """Send one request and return its reply payload; PyXSError for an error reply."""
        (result,) = self.pipeline([(op, payload, tx)])
        if isinstance(result, PyXSError):
            raise result
        return result

    def pipeline(self, requests):
        """Send (op, payload, tx) requests and return, per request, the reply payload or the
        PyXSError it got; Lost if a reply is overdue. Over a socket they go back to back, one round
        trip for the lot (xenstored answers in order). Over the kernel's device they go one at a
        time: Linux's xenbus_dev_frontend queues a request with its body still in the file's one
        message buffer and copies it to the ring later, so the next write() can overwrite the body
        of a request not yet sent (seen on a real guest: READ domid sent as "\\0omid",
        EINVAL; writes in a transaction sent with the path "T" of the commit after them, EACCES)."""
        if self._conn is None:
            raise Lost("not connected")
        if isinstance(self._conn, socket.socket):
            return self._exchange(requests)
        return [result for request in requests for result in self._exchange([request])]

    def _exchange(self, requests):
        deadline = _now() + self.timeout
        ids, messages = [], []
        asked = {}
        for op, payload, tx in requests:
            self._rq = (self._rq + 1) & 0x7FFFFFFF
            packet = Packet(op, payload, self._rq, tx)   # validates op and the 4096-byte limit
            messages.append(HEADER.pack(packet.op, packet.rq_id, packet.tx_id, packet.size) + payload)
            ids.append(self._rq)
            asked[self._rq] = (op, payload)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("> %s", _describe(op, self._rq, tx, payload))
        # On the device this is one request: it takes one message per write() and drops the rest.
        self._send(b"".join(messages), deadline)
        results = []
        for rq in ids:
            while rq not in self._replies:
                self._wait(select.POLLIN, deadline)
                self.pump()
            rop, body = self._replies.pop(rq)
            results.append(Refused(error(body.rstrip(NUL)).args[0], *asked[rq]) if rop == Op.ERROR else body)
        return results

    # -- operations -------------------------------------------------------------------------
    def read(self, path, tx=0):
        """The value as str, or None if the key does not exist."""
        try:
            return self.request(Op.READ, check_path(path.encode()) + NUL, tx).decode("ascii", "replace")
        except PyXSError as e:
            if e.args and e.args[0] == errno.ENOENT:
                return None
            raise

    def read_many(self, paths, tx=0):
        """[value or None] for each path (one round trip over a socket)."""
        return [_value(r) for r in self.pipeline([(Op.READ, check_path(p.encode()) + NUL, tx) for p in paths])]

    def directory(self, path, tx=0):
        """The children of `path` ([] for a leaf); None if there is no such node."""
        (names,) = self.list_many([path], tx)
        if isinstance(names, PyXSError):
            raise names
        return names

    def list_many(self, paths, tx=0):
        """For each path its children, None if there is no such node, or the PyXSError it got
        (one round trip over a socket)."""
        out = []
        for reply in self.pipeline([(Op.DIRECTORY, check_path(p.encode()) + NUL, tx) for p in paths]):
            if isinstance(reply, PyXSError):
                out.append(None if reply.args and reply.args[0] == errno.ENOENT else reply)
            else:
                out.append([c.decode("ascii", "replace") for c in reply.split(NUL) if c])
        return out

    @staticmethod
    def encode(op, path=None, value=None, tx=0):
        """A (op, payload, tx) request for pipeline(): op is "write", "rm", "commit" or "abort"."""
        if op in ("commit", "abort"):
            return (Op.TRANSACTION_END, (b"T" if op == "commit" else b"F") + NUL, tx)
        payload = check_path(path.encode()) + NUL
        if op == "write":
            return (Op.WRITE, payload + value.encode("ascii"), tx)
        return (Op.RM, payload, tx)

    def watch(self, paths, token):
        """Watch each of `paths` (one round trip for all over a socket)."""
        replies = self.pipeline([(Op.WATCH, check_path(p.encode()) + NUL + token.encode() + NUL, 0) for p in paths])
        for reply in replies:
            # EEXIST: the connection already has this watch (it outlived our descriptor).
            if isinstance(reply, PyXSError) and not (reply.args and reply.args[0] == errno.EEXIST):
                raise reply

    def transaction_start(self, reads=()):
        """A new transaction's id. With `reads`, those paths are read with it (not
        inside the transaction) and ([value or None], id) is returned."""
        replies = self.pipeline([(Op.READ, check_path(p.encode()) + NUL, 0) for p in reads]
                                + [(Op.TRANSACTION_START, NUL, 0)])
        *values, start = replies
        if isinstance(start, PyXSError):
            raise start
        tx = int(start.rstrip(NUL))
        if not reads:
            return tx
        try:
            return [_value(v) for v in values], tx
        except PyXSError:
            self.pipeline([self.encode("abort", tx=tx)])
            raise

    def walk(self, path, tx=0):
        """{path: value} for every leaf at or below `path` (nodes with no children)."""
        children = self.directory(path, tx)
        if children is None:
            return {}
        if not children:
            value = self.read(path, tx)
            return {} if value is None else {path: value}
        out = {}
        for c in children:
            out.update(self.walk(path + "/" + c, tx))
        return out


def _value(reply):
    """A read's reply as str; None for a key that does not exist; any other error raised."""
    if isinstance(reply, PyXSError):
        if reply.args and reply.args[0] == errno.ENOENT:
            return None
        raise reply
    return reply.decode("ascii", "replace")


def _describe(op, rq, tx, payload):
    """One line for the wire log: the operation, ids and payload (NULs shown as |)."""
    name = Op._fields[op] if op < len(Op._fields) else "op%d" % op
    return "%s rq=%d tx=%d %s" % (name, rq, tx, payload[:120].replace(NUL, b"|").decode("ascii", "replace"))


_now = time.monotonic
