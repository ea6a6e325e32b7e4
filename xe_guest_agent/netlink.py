"""A small rtnetlink client: interfaces and their addresses, dumped once, then kept current by events.

Three layers, the lower two pure:
- `parse(data)` turns a buffer of netlink messages into `Link` / `Addr` namedtuples (plus the
  `Done` / `Error` / `Interrupted` control records the client uses to sequence its dumps);
- `Table` applies those messages to a view {index: Link} and {index: {(family, address): Addr}};
- `RtNetlink` owns the socket, requests dumps and reads events without blocking.

Typical loop::

    nl, table = RtNetlink(), Table()
    nl.request_dump()
    while poll(nl.fileno()):
        msgs = nl.read()
        if OVERFLOW in msgs:       # events were lost: the view may be wrong, dump again
            nl.request_dump()
        if table.apply(msgs):      # True when the (complete) view changed
            publish(table.links, table.addrs)

Which addresses are kept (`reportable`): host-scope ones (127.0.0.1, ::1, or any address added
with `scope host`) are dropped, as are addresses still in duplicate address detection (tentative)
or that failed it: the kernel does not use them yet, and a tentative address that turns out to be a
duplicate never becomes usable. IPv6 link-local (fe80::/10) addresses are kept: both released agents
report them (the Go agent parses every `inet6` line of `ip addr`, the Rust agent forwards every
netlink address), so xapi users see them in `networks` today; addresses.py gives them the last
indexes so global addresses come first.
"""
import errno
import socket
import struct
from collections import namedtuple

# linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h
NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 2, 3, 4
NLM_F_REQUEST, NLM_F_DUMP_INTR, NLM_F_DUMP = 0x1, 0x10, 0x300
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER = 1, 3, 10
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_SECONDARY = 0x01  # IPv4 secondary; the same bit is IFA_F_TEMPORARY (privacy address) for IPv6
IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TENTATIVE = 0x08, 0x20, 0x40
RT_SCOPE_HOST = 254
AF_BRIDGE = 7
SO_RCVBUFFORCE = 33  # not exported by the socket module

GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
# Room for a burst of events (a bridge with many addresses going down) before the kernel drops some.
RCVBUF = 4 << 20
# A netlink datagram is at most 32 KiB (the kernel caps dump skbs there): 64 KiB never truncates.
BUFSIZE = 64 << 10
# Datagrams handled per read(): a flood of events cannot starve the caller's other work.
MAX_DATAGRAMS = 512

Link = namedtuple("Link", "kind index name master mac")
Link.__doc__ = "RTM_NEWLINK/DELLINK: kind 'new'|'del', ifindex, name, master ifindex (0: none), mac ('' if none)."
Addr = namedtuple("Addr", "kind index family address prefixlen scope flags")
Addr.__doc__ = "RTM_NEWADDR/DELADDR: kind 'new'|'del', ifindex, family 4|6, address text, prefixlen, scope, IFA_F_*."
Done = namedtuple("Done", "seq errno")  # NLMSG_DONE: the end of a dump (errno != 0: the dump failed)
Error = namedtuple("Error", "seq errno")  # NLMSG_ERROR: errno 0 is an acknowledgement
Interrupted = namedtuple("Interrupted", "seq")  # NLM_F_DUMP_INTR: the dump saw a change, it may be inconsistent

# Markers RtNetlink.read() mixes into its output (plain strings, never equal to a namedtuple).
OVERFLOW = "overflow"  # the kernel dropped events (ENOBUFS): call request_dump()
DUMP_START = "dump-start"  # what follows rebuilds the view from scratch
DUMP_DONE = "dump-done"  # the rebuilt view is complete and consistent

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTA = struct.Struct("=HH")  # rtattr: len, type
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_FAMILIES = {socket.AF_INET: (4, 4), socket.AF_INET6: (6, 16)}  # address family -> (4|6, address bytes)


def _align(n):
    return (n + 3) & ~3


def _attrs(data, off, end):
    """The rtattrs in data[off:end] as {type: bytes}; stops quietly at a malformed one."""
    attrs = {}
    while off + _RTA.size <= end:
        length, kind = _RTA.unpack_from(data, off)
        if length < _RTA.size or off + length > end:
            break
        attrs[kind & 0x3FFF] = bytes(data[off + _RTA.size:off + length])  # 0x3fff: drop NLA_F_NESTED/BYTEORDER
        off += _align(length)
    return attrs


def _u32(raw, default=0):
    return _U32.unpack_from(raw)[0] if raw is not None and len(raw) >= 4 else default


def _link(kind, data, off, end):
    if end - off < _IFINFO.size:
        return None
    family, _type, index, _flags, _change = _IFINFO.unpack_from(data, off)
    if family == AF_BRIDGE:
        # The bridge driver also sends PF_BRIDGE link messages about its ports; an RTM_DELLINK
        # there means "left the bridge", not "interface gone". The plain message covers both.
        return None
    attrs = _attrs(data, off + _IFINFO.size, end)
    name = attrs.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    mac = ":".join("%02x" % b for b in attrs.get(IFLA_ADDRESS, b""))
    return Link(kind, index, name, _u32(attrs.get(IFLA_MASTER)), mac)


def _addr(kind, data, off, end):
    if end - off < _IFADDR.size:
        return None
    af, prefixlen, flags, scope, index = _IFADDR.unpack_from(data, off)
    if af not in _FAMILIES:
        return None
    family, size = _FAMILIES[af]
    attrs = _attrs(data, off + _IFADDR.size, end)
    # With a peer (point-to-point), IFA_ADDRESS is the peer and IFA_LOCAL ours; otherwise only IFA_ADDRESS.
    raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
    if raw is None or len(raw) != size:
        return None
    # ifa_flags is 8 bits wide; IFA_FLAGS (kernel >= 3.14) carries all 32.
    return Addr(kind, index, family, socket.inet_ntop(af, raw), prefixlen, scope, _u32(attrs.get(IFA_FLAGS), flags))


_PAYLOAD = {
    RTM_NEWLINK: ("new", _link), RTM_DELLINK: ("del", _link),
    RTM_NEWADDR: ("new", _addr), RTM_DELADDR: ("del", _addr),
}


def parse(data):
    """Parse a buffer of netlink messages into a list of Link, Addr, Done, Error and Interrupted.

    Never raises on bad input: a truncated or malformed message ends the parse, unknown message
    types and attributes are skipped.
    """
    out = []
    off, size = 0, len(data)
    while off + _HDR.size <= size:
        length, kind, flags, seq, _pid = _HDR.unpack_from(data, off)
        if length < _HDR.size or off + length > size:
            break
        body, end = off + _HDR.size, off + length
        if flags & NLM_F_DUMP_INTR:
            out.append(Interrupted(seq))
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            code = -_I32.unpack_from(data, body)[0] if end - body >= 4 else 0
            out.append((Done if kind == NLMSG_DONE else Error)(seq, code))
        elif kind == NLMSG_OVERRUN:
            out.append(Error(seq, errno.ENOBUFS))
        elif kind in _PAYLOAD:
            what, fn = _PAYLOAD[kind]
            msg = fn(what, data, body, end)
            if msg is not None:
                out.append(msg)
        off += _align(length)
    return out


def reportable(addr):
    """True if `addr` (an Addr) is one the host should see; see the module docstring for why."""
    return addr.scope != RT_SCOPE_HOST and not addr.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)


class Table:
    """The current links and reportable addresses, from a dump followed by events.

    `links` is {ifindex: Link}; `addrs` is {ifindex: {(family, address): Addr}} (a dict used as an
    ordered set of (family, address) pairs; the Addr values carry scope and flags). Between
    DUMP_START and DUMP_DONE the messages build a fresh view aside, which then replaces the old
    one whole: the old view stays readable meanwhile, and anything the lost events would have
    changed is corrected.
    """

    def __init__(self):
        self.links, self.addrs = {}, {}
        self._next = None  # (links, addrs) being rebuilt by a dump

    @property
    def syncing(self):
        return self._next is not None

    def apply(self, messages):
        """Apply read() output; True if the visible view changed."""
        changed = False
        for msg in messages:
            if msg == DUMP_START:
                self._next = ({}, {})
            elif msg == DUMP_DONE:
                if self._next is not None:
                    changed |= self._next != (self.links, self.addrs)
                    self.links, self.addrs = self._next
                    self._next = None
            elif isinstance(msg, (Link, Addr)):
                links, addrs = self._next if self._next is not None else (self.links, self.addrs)
                updated = _apply_link(links, addrs, msg) if isinstance(msg, Link) else _apply_addr(addrs, msg)
                changed |= updated and self._next is None
        return changed


def _apply_link(links, addrs, link):
    if link.kind == "new":
        if links.get(link.index) == link:
            return False
        links[link.index] = link
        return True
    gone = links.pop(link.index, None) is not None
    return addrs.pop(link.index, None) is not None or gone


def _apply_addr(addrs, addr):
    key = (addr.family, addr.address)
    have = addrs.get(addr.index, {})
    if addr.kind == "new" and reportable(addr):
        if have.get(key) == addr:
            return False
        addrs[addr.index] = have
        have[key] = addr
        return True
    if have.pop(key, None) is None:
        return False
    if not have:
        del addrs[addr.index]
    return True


class RtNetlink:
    """A non-blocking NETLINK_ROUTE socket subscribed to link and IPv4/IPv6 address events."""

    def __init__(self, rcvbuf=RCVBUF, groups=GROUPS):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        try:
            # As root, exceed net.core.rmem_max; otherwise take what rmem_max allows.
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((0, groups))
        self._buf = bytearray(BUFSIZE)
        self._seq = 0
        self._dump = None  # (RTM_GETLINK | RTM_GETADDR, seq) while a dump runs
        self._redo = False  # dump again when the running one ends (interrupted, or asked meanwhile)
        self._pending = []  # markers for the next read()

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request_dump(self):
        """Rebuild the whole view: read() returns DUMP_START, the links, the addresses, DUMP_DONE."""
        if self._dump is not None:
            self._redo = True  # the kernel runs one dump per socket at a time (EBUSY)
            return
        # Queued events predate the dump, which supersedes them; after an overflow they have
        # gaps (a NEWADDR whose DELADDR was dropped) that would leave ghosts in the new view.
        self._drain()
        self._redo = False
        self._send(RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
        self._pending.append(DUMP_START)

    def read(self):
        """Everything available now, without blocking: Link, Addr and the marker strings."""
        out, self._pending = self._pending, []
        for _ in range(MAX_DATAGRAMS):
            try:
                n, (pid, _groups) = self.sock.recvfrom_into(self._buf, 0, socket.MSG_TRUNC)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                out.append(OVERFLOW)  # keep reading: what is queued (and a running dump) is still valid
                continue
            if pid != 0:
                continue  # only the kernel speaks for the kernel (root could unicast forged messages)
            if n > len(self._buf):
                out.append(OVERFLOW)  # truncated datagram: something was lost
                continue
            for msg in parse(bytes(memoryview(self._buf)[:n])):
                if isinstance(msg, (Link, Addr)):
                    out.append(msg)
                elif self._control(msg, out):
                    break  # a new dump started: the rest of this datagram is superseded
        return out

    def _control(self, msg, out):
        """Sequence our dumps; True if a new dump was just started."""
        if self._dump is None or msg.seq != self._dump[1]:
            return False
        if isinstance(msg, Interrupted):
            self._redo = True
            return False
        if msg.errno:  # the dump request failed (Error) or the dump ended in error (Done)
            self._dump = None
            out.append(OVERFLOW)
            return False
        if isinstance(msg, Done) and self._dump[0] == RTM_GETLINK:
            # Links first, then addresses, so addresses can be matched to known links.
            self._send(RTM_GETADDR, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
        elif isinstance(msg, Done):
            self._dump = None
            if not self._redo:
                out.append(DUMP_DONE)
                return False
            self.request_dump()
            out.extend(self._pending)
            self._pending = []
            return True
        return False

    def _send(self, kind, body):
        self._seq = self._seq % 0xFFFFFFFF + 1
        self._dump = (kind, self._seq)
        msg = _HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0) + body
        self.sock.sendto(msg, (0, 0))

    def _drain(self):
        for _ in range(100000):
            try:
                self.sock.recv_into(self._buf)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
