"""A simulated Xen guest on a real xenstored, through the xsshim ring, and a pty that stands in
for the guest kernel's /dev/xen/xenbus.

The shim maps $XS_SHIM_DIR/ring-<domid> as the guest's xenstore page when dom0 sends
XS_INTRODUCE(domid, mfn, port). This module plays the guest side of that page (struct
xenstore_domain_interface):
- `PtyBridge(dir, domid)`: a raw pty whose slave the agent opens as its xenbus device; bytes are
  forwarded between the pty and the ring, as the kernel's xenbus driver does.
"""
import contextlib
import ctypes
import errno
import mmap
import os
import select
import struct
import threading
import time
import tty

from pyxs._internal import NUL, Op, Packet

RING = 1024
OFF_REQ, OFF_RSP = 0, 1024
OFF_REQ_CONS, OFF_REQ_PROD, OFF_RSP_CONS, OFF_RSP_PROD = 2048, 2052, 2056, 2060
U32 = struct.Struct("<I")
PAGE = 4096


def create_ring(shim_dir, domid):
    """Create (or zero in place) the guest page and its notify FIFO; call before XS_INTRODUCE.

    Zeroing in place, never truncating, keeps an existing mapping valid (a truncated mapped
    file raises SIGBUS in whoever touches it)."""
    path = os.path.join(shim_dir, "ring-%d" % domid)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"\0" * PAGE, 0)
    finally:
        os.close(fd)
    fifo = os.path.join(shim_dir, "notify-%d" % domid)
    if not os.path.exists(fifo):
        os.mkfifo(fifo, 0o600)
    return path


class RingTransport:
    def __init__(self, shim_dir, domid):
        self.shim_dir = shim_dir
        self.fd = os.open(os.path.join(shim_dir, "ring-%d" % domid), os.O_RDWR)
        self.mm = mmap.mmap(self.fd, PAGE)
        # Ring indices must be read and written as single aligned 32-bit accesses: byte-wise
        # access lets xenstored see torn indices and drop the domain (XENSTORE_ERROR_RINGIDX).
        self.idx = {off: ctypes.c_uint32.from_buffer(self.mm, off)
                    for off in (OFF_REQ_CONS, OFF_REQ_PROD, OFF_RSP_CONS, OFF_RSP_PROD)}
        # Readable whenever xenstored calls xenevtchn_notify() for our port.
        self.notify = os.open(os.path.join(shim_dir, "notify-%d" % domid), os.O_RDWR | os.O_NONBLOCK)
        self.evtchn = None

    def _get(self, off):
        return self.idx[off].value

    def _set(self, off, v):
        self.idx[off].value = v & 0xFFFFFFFF

    def kick(self):
        """Wake the daemon (any port other than 1, VIRQ_DOM_EXC, does)."""
        try:
            if self.evtchn is None:
                self.evtchn = os.open(os.path.join(self.shim_dir, "evtchn"), os.O_WRONLY | os.O_NONBLOCK)
            os.write(self.evtchn, U32.pack(2))
        except BlockingIOError:
            pass   # FIFO full: the daemon has wake-ups pending anyway
        except OSError:
            # No daemon reading (killed, restarting): reopen on the next kick.
            if self.evtchn is not None:
                os.close(self.evtchn)
            self.evtchn = None

    def drain_notify(self):
        try:
            while os.read(self.notify, 4096):
                pass
        except BlockingIOError:
            pass

    def fileno(self):
        return self.notify

    def space(self):
        return RING - ((self._get(OFF_REQ_PROD) - self._get(OFF_REQ_CONS)) & 0xFFFFFFFF)

    def put(self, data):
        """Copy as much of `data` as fits into the request ring; returns the count."""
        cons, prod = self._get(OFF_REQ_CONS), self._get(OFF_REQ_PROD)
        done = 0
        while done < len(data):
            space = RING - ((prod - cons) & 0xFFFFFFFF)
            if not space:
                break
            idx = prod % RING
            n = min(space, RING - idx, len(data) - done)
            self.mm[OFF_REQ + idx:OFF_REQ + idx + n] = data[done:done + n]
            prod += n
            done += n
        if done:
            self._set(OFF_REQ_PROD, prod)
            self.kick()
        return done

    def available(self):
        return (self._get(OFF_RSP_PROD) - self._get(OFF_RSP_CONS)) & 0xFFFFFFFF

    def take(self, size=None):
        """Take up to `size` (default: all) bytes from the response ring."""
        cons, prod = self._get(OFF_RSP_CONS), self._get(OFF_RSP_PROD)
        avail = (prod - cons) & 0xFFFFFFFF
        if avail > RING:
            return b""   # torn read during a reset: look again later
        size = avail if size is None else min(size, avail)
        out = bytearray()
        while len(out) < size:
            idx = cons % RING
            n = min(RING - idx, size - len(out))
            out += self.mm[OFF_RSP + idx:OFF_RSP + idx + n]
            cons += n
        if out:
            self._set(OFF_RSP_CONS, cons)
            self.kick()   # tell xenstored there is room again
        return bytes(out)

    def close(self):
        self.idx.clear()          # release buffer exports before closing the mmap
        self.mm.close()
        for fd in (self.fd, self.notify, self.evtchn):
            if fd is not None:
                os.close(fd)


class PtyBridge:
    """A raw pty bridged to domain <domid>'s ring: `self.device` is the path the agent opens.

    Like the kernel's xenbus driver it remembers the watches registered through it, and after
    xenstored comes back (`replay_watches`) registers them again, so that each fires once; the
    replies to those requests are its own and are not passed on. The bridge keeps a slave
    descriptor open, so the master never sees a hang-up while the agent reopens the device. Like
    the kernel, it reads a request's body only when it sends it, from one buffer that each
    message written overwrites: requests written back to back, unanswered, go out garbled.

    Fault injection: `refuse`, if set, is called as refuse(op, payload) for each whole request
    from the agent; a returned errno name (e.g. "E2BIG", as oxenstored or the kernel answer) is
    sent back as the XS_ERROR reply and the request never reaches xenstored. `suspended()` and
    `retarget(domid)` let a test move the guest to another domain, as a migration does.
    """

    REPLAY_ID = 0x7FFF0000

    def __init__(self, shim_dir, domid):
        self.shim_dir, self.domid = shim_dir, domid
        self.master, slave = os.openpty()
        tty.setraw(slave)   # no echo, no line discipline: bytes pass untouched
        self.slave = slave
        self.device = os.ttyname(slave)
        os.set_blocking(self.master, False)
        self.ring = RingTransport(shim_dir, domid)
        self.lock = threading.Lock()
        self.pending = b""    # from the agent, not yet in the ring
        self.up = bytearray()  # from the agent, not yet framed (watch tracking)
        self.down = bytearray()  # from xenstored, not yet framed (replay replies)
        self.watches = set()
        self.bytes_in = 0     # agent -> xenstored, for the benchmark's accounting
        self.refuse = None    # fault injection: refuse(op, payload) -> errno name or None
        self.refused = []     # (op, payload) of the requests refused that way
        self.ops = []         # the op of every request from the agent, in order
        self.injected = bytearray()   # error replies made up here, not yet passed on
        self.retired = []     # rings of domains the guest has left (closed in close())
        self.busy = {}        # request id -> (op, tx, since): the agent's requests not answered yet
        self.msgbuf = bytearray(4096)   # the kernel's xenbus_file_priv message buffer (its body part)
        # As the kernel's xenbus_file_priv: the transactions this file opened, each with the
        # generation (bumped by every resume) it was opened in; None: its START is unanswered.
        self.transactions = {}   # tx id -> generation
        self.generation = 0
        self._stop_r, self._stop_w = os.pipe()
        self.thread = threading.Thread(target=self._loop, name="pty-bridge-%d" % domid, daemon=True)
        self.thread.start()

    def _loop(self):
        while True:
            timeout = 0.005 if self.pending else 0.05
            rlist, _, _ = select.select([self.master, self.ring.notify, self._stop_r], [], [], timeout)
            if self._stop_r in rlist:
                return
            with self.lock:
                self.ring.drain_notify()
                if self.master in rlist:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:
                        data = b""
                    self.bytes_in += len(data)
                    self.pending += self._track(data)
                if self.pending:
                    self.pending = self.pending[self.ring.put(self.pending):]
                out = bytes(self.injected) + self._filter(self.ring.take())
                self.injected.clear()
                while out:
                    try:
                        out = out[os.write(self.master, out):]
                    except BlockingIOError:
                        # The agent is not reading (stopped, or gone): do not outlive close().
                        if select.select([self._stop_r], [self.master], [], 0.05)[0]:
                            return

    def _track(self, data):
        """Note watches; return the whole requests to pass on to xenstored (less refused ones)."""
        self.up += data
        forward = bytearray()
        queued = []
        for op, rq, tx, payload in _frames(self.up):
            self.ops.append(op)
            self.msgbuf[:len(payload)] = payload
            parts = tuple(payload.split(NUL)[:2])
            if op == Op.WATCH:
                self.watches.add(parts)
            elif op == Op.UNWATCH:
                self.watches.discard(parts)
            error = self.refuse(op, payload) if self.refuse else None
            if error is None:
                error, reply = self._kernel_rules(op, tx, payload)
                if reply is not None:   # the kernel answers this itself
                    self.injected += Packet._struct.pack(op, rq, tx, len(reply)) + reply
                    continue
            else:
                self.refused.append((op, payload))
            if error:
                body = error.encode() + NUL
                self.injected += Packet._struct.pack(Op.ERROR, rq, tx, len(body)) + body
                continue
            self.busy[rq] = (op, tx, time.monotonic())
            queued.append((op, rq, tx, len(payload)))
        # The kernel's xenbus_dev_request_and_reply() queues a request with its body still in
        # the file's one message buffer, copied to the ring only when the xenbus thread gets to it;
        # every write() overwrites that buffer. Requests that reached us together are sent as the
        # slowest kernel would: each with its own header and whatever the buffer then holds.
        for op, rq, tx, size in queued:
            forward += Packet._struct.pack(op, rq, tx, size) + bytes(self.msgbuf[:size])
        return bytes(forward)

    def _kernel_rules(self, op, tx, payload):
        """What Linux's xenbus_write_transaction() (drivers/xen/xenbus/xenbus_dev_frontend.c)
        answers by itself: (error name, None), (None, reply payload), or (None, None) to pass the
        request on."""
        if op == Op.TRANSACTION_START or op in (Op.WATCH, Op.UNWATCH):
            return None, None
        if tx != 0 and tx not in self.transactions:
            return "ENOENT", None
        if op == Op.TRANSACTION_END:
            if payload not in (b"T" + NUL, b"F" + NUL):
                return "EINVAL", None
            if self.transactions.get(tx) != self.generation:
                # Opened before a resume: xenstored has forgotten it.
                del self.transactions[tx]
                return ("EAGAIN", None) if payload.startswith(b"T") else (None, b"OK" + NUL)
        return None, None

    def _filter(self, data):
        """Pass on whole packets, less the replies to our own replayed watches."""
        self.down += data
        out = bytearray()
        for op, rq, tx, payload in _frames(self.down):
            if op == Op.WATCH and rq >= self.REPLAY_ID:
                continue
            if op != Op.WATCH_EVENT and rq in self.busy:
                asked, asked_tx, _ = self.busy.pop(rq)
                if asked == Op.TRANSACTION_START and op != Op.ERROR:
                    self.transactions[int(payload.rstrip(NUL) or 0)] = self.generation
                elif asked == Op.TRANSACTION_END:
                    self.transactions.pop(asked_tx, None)
            out += Packet._struct.pack(op, rq, tx, len(payload)) + payload
        return bytes(out)

    def reset(self):
        """Zero the ring (xenstored died): what was in flight is lost, as on a real host."""
        with self.lock:
            self.pending = b""
            self.down.clear()
            self.busy.clear()
            create_ring(self.shim_dir, self.domid)

    def replay_watches(self):
        """Register the remembered watches again, as the kernel does once xenstored is back."""
        with self.lock:
            self._queue_replay()

    def _queue_replay(self):
        for i, (path, token) in enumerate(sorted(self.watches)):
            payload = path + NUL + token + NUL
            self.pending += Packet._struct.pack(Op.WATCH, self.REPLAY_ID + i, 0, len(payload)) + payload

    @contextlib.contextmanager
    def suspended(self, timeout=5.0):
        """The guest is paused (suspend, migration): nothing passes either way inside the block;
        what the agent sends meanwhile waits in the pty. Like the kernel's xs_suspend, it first
        waits (up to `timeout` s) for the agent's requests in flight (those older than 3 s were
        given up by the agent, whose requests time out after 2 s). Not for its transactions: the
        kernel holds a suspend off only for its own (xs_request_enter counts user ones out)."""
        deadline = time.monotonic() + timeout
        while True:
            self.lock.acquire()
            now = time.monotonic()
            busy = self.pending or any(now - since < 3 for _, _, since in self.busy.values())
            if not busy or now > deadline:
                break
            self.lock.release()
            time.sleep(0.001)
        try:
            yield
        finally:
            self.lock.release()

    def retarget(self, domid, replay=True):
        """Inside suspended(): the guest resumes as domain `domid` (its ring created and introduced
        by dom0). Like the kernel, the bridge reconnects to the new ring and registers the
        remembered watches there (relative paths now resolve in the new home); replies still in
        the old ring are lost. replay=False holds the registration back (replay_watches() later):
        the agent then sees the new domain before any event of it."""
        self.retired.append(self.ring)   # the loop may still be selecting on its descriptor
        self.domid = domid
        self.ring = RingTransport(self.shim_dir, domid)
        self.down.clear()
        self.busy.clear()   # lost with the old ring (only after a suspend that timed out)
        self.generation += 1   # the transactions still open are dead (xb_dev_generation_id)
        if replay:
            self._queue_replay()

    def close(self):
        os.write(self._stop_w, b"x")
        self.thread.join(5)
        self.ring.close()
        for ring in self.retired:
            ring.close()
        for fd in (self.master, self.slave, self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError as e:
                if e.errno != errno.EBADF:
                    raise


def _frames(buf):
    """Yield (op, rq_id, tx_id, payload) for each whole packet at the front of `buf`, consuming them."""
    while len(buf) >= 16:
        op, rq, tx, size = Packet._struct.unpack_from(buf)
        if len(buf) < 16 + size:
            return
        payload = bytes(buf[16:16 + size])
        del buf[:16 + size]
        yield op, rq, tx, payload

