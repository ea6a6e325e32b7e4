"""XenStore for guest scripts (`xe-guest-agent xenstore read|write|rm|ls|exists|watch`) and the
reads behind `status --host`, over the agent's own connection: every request waits at most its
time-out, through /dev/xen/xenbus as through a dom0 socket.

Values go out and come back as bytes, untouched. A relative path is resolved by xenstored below
the connection's home (a guest's /local/domain/<domid>). Several paths at once (read, write, rm,
exists) are one transaction, as with the classic tools, so a script reads or writes them together.
"""
import errno
import os
import select

from pyxs._internal import NUL, Op
from pyxs.exceptions import InvalidPath, InvalidPayload, PyXSError
from pyxs.helpers import check_path

from .xenstore import Lost, XenStore

USAGE, RUNTIME = 2, 1
BATCH = 32          # nodes per round trip when walking a tree (a read and a listing each)
MAX_NODES = 20000   # a walk stops here (a guest owns 1000 nodes by default, 8192 on XCP-ng)
TRIES = 10          # transactions tried again on EAGAIN
# What status --host reads of the home: xenopsd's roots (hostview.XENOPSD_ROOTS), what lies
# beside them in the guest-writable trees (for the warnings), and device/ for the backends.
HOME_ROOTS = ("control", "feature", "xenserver/attr", "attr", "drivers", "data", "device")


class ToolError(Exception):
    """One line for the user, and the exit status."""

    def __init__(self, message, status=RUNTIME):
        super().__init__(message)
        self.status = status


def valid(path):
    """The path as bytes, or a usage ToolError naming it."""
    try:
        return check_path(path.encode("ascii"))
    except (InvalidPath, UnicodeEncodeError):
        raise ToolError("%r: not a XenStore path (letters, digits and - / _ @ only, no trailing or double /)"
                        % path, USAGE)


def connect(where):
    xs = XenStore(where)
    try:
        xs.connect()
    except OSError as e:
        raise ToolError("cannot reach XenStore at %s: %s" % (where, e.strerror or e))
    return xs


def _msg(op, path, value=None):
    """(op, payload) of a request on `path` (bytes)."""
    return (op, path + NUL + value if value is not None else path + NUL)


def _refused(what, path, error):
    """The one line for an error reply to `what` on `path`."""
    code = error.args[0] if error.args else None
    if code == errno.ENOENT:
        return ToolError("xenstore %s %s: no such key" % (what, path.decode()))
    name = errno.errorcode.get(code, "error %s" % code)
    return ToolError("xenstore %s %s: %s (%s)" % (what, path.decode(), name, os.strerror(code) if code else "?"))


def together(xs, requests):
    """Send `requests` [(op, payload)] and return their replies: alone, or for several, inside one
    transaction that is committed (again from the start on EAGAIN) unless one of them failed."""
    if len(requests) == 1:
        return xs.pipeline([requests[0] + (0,)])
    for _ in range(TRIES):
        tx = xs.transaction_start()
        replies = xs.pipeline([r + (tx,) for r in requests])
        failed = any(isinstance(r, PyXSError) for r in replies)
        (end,) = xs.pipeline([xs.encode("abort" if failed else "commit", tx=tx)])
        if isinstance(end, PyXSError):
            if end.args and end.args[0] == errno.EAGAIN:
                continue
            raise end
        return replies
    raise ToolError("XenStore refused the transaction %d times (EAGAIN): too busy" % TRIES)


def walk(xs, roots, limit=MAX_NODES):
    """({path: value bytes}, {path: [child names]}) of every node at or below `roots`, in
    XenStore's directory order, a level per round trip (batched). A node that vanishes or that
    we may not read is left out."""
    values, children = {}, {}
    level = [valid(r) if isinstance(r, str) else r for r in roots]
    while level:
        nxt = []
        for i in range(0, len(level), BATCH):
            batch = level[i:i + BATCH]
            replies = xs.pipeline([_msg(op, p) + (0,) for op in (Op.READ, Op.DIRECTORY) for p in batch])
            for p, value, names in zip(batch, replies, replies[len(batch):]):
                if isinstance(value, PyXSError):
                    continue
                path = p.decode()
                values[path] = value
                children[path] = [] if isinstance(names, PyXSError) else \
                    [c.decode("ascii", "replace") for c in names.split(NUL) if c]
                nxt += [p + b"/" + c.encode("ascii") for c in children[path]]
                if len(values) > limit:
                    raise ToolError("more than %d nodes below %s: not walked" % (limit, ", ".join(
                        r.decode() if isinstance(r, bytes) else r for r in roots)))
        level = nxt
    return values, children


def read_home(xs):
    """What status --host needs: the guest's trees ({relative path: bytes}) and, for each device
    with a backend, that backend's state (None if unreadable)."""
    values, children = walk(xs, HOME_ROOTS)
    links = {p[:-len("/backend")]: v for p, v in values.items()
             if p.startswith("device/") and p.count("/") == 3 and p.endswith("/backend")}
    backends, asked = {}, []
    for device in sorted(links):
        try:
            asked.append((device, check_path(links[device].rstrip(NUL) + b"/state")))
        except InvalidPath:
            backends[device] = None   # not a path: no backend xenopsd would find there either
    states = xs.pipeline([_msg(Op.READ, path) + (0,) for _, path in asked]) if asked else []
    for (device, _), state in zip(asked, states):
        backends[device] = None if isinstance(state, PyXSError) else state.decode("ascii", "replace")
    return values, backends


# -- the commands ----------------------------------------------------------------------------------

def read(xs, paths, out, raw=False):
    """Each value, a line each (raw: the bytes alone, nothing added). Stops at the first path that
    fails, after printing the values before it."""
    encoded = [valid(p) for p in paths]
    replies = together(xs, [_msg(Op.READ, p) for p in encoded])
    for path, reply in zip(encoded, replies):
        if isinstance(reply, PyXSError):
            out.flush()
            raise _refused("read", path, reply)
        out.write(reply if raw else reply + b"\n")
    out.flush()


def write(xs, pairs):
    """Write each (path, value bytes), all or none."""
    encoded = [(valid(p), v) for p, v in pairs]
    try:
        replies = together(xs, [_msg(Op.WRITE, p, v) for p, v in encoded])
    except InvalidPayload:
        raise ToolError("xenstore write: a path and its value may take at most 4096 bytes")
    for (path, _), reply in zip(encoded, replies):
        if isinstance(reply, PyXSError):
            raise _refused("write", path, reply)


def rm(xs, paths):
    """Remove each path and what lies below it, all or none (xenstored accepts a missing key whose
    parent exists)."""
    encoded = [valid(p) for p in paths]
    for path, reply in zip(encoded, together(xs, [_msg(Op.RM, p) for p in encoded])):
        if isinstance(reply, PyXSError):
            raise _refused("rm", path, reply)


def exists(xs, paths):
    """True if every path exists; an error other than ENOENT is raised."""
    encoded = [valid(p) for p in paths]
    found = True
    for path, reply in zip(encoded, together(xs, [_msg(Op.READ, p) for p in encoded])):
        if isinstance(reply, PyXSError):
            if reply.args and reply.args[0] == errno.ENOENT:
                found = False
            else:
                raise _refused("exists", path, reply)
    return found


def home(xs):
    """The connection's home, /local/domain/<domid>, as xenstored names it."""
    (domid,) = xs.pipeline([_msg(Op.READ, b"domid") + (0,)])
    if isinstance(domid, PyXSError):
        raise _refused("read", b"domid", domid)
    (path,) = xs.pipeline([(Op.GET_DOMAIN_PATH, domid + NUL, 0)])
    if isinstance(path, PyXSError):
        raise _refused("get-domain-path", domid, path)
    return path.rstrip(NUL).decode("ascii")


def ls(xs, paths, out, recursive=False):
    """The children of each path, one a line; recursive: every node below, as a path relative to
    the one listed, parents first."""
    for path in paths or [home(xs)]:
        p = valid(path)
        if recursive:
            values, children = walk(xs, [p])
            if path not in values:
                raise ToolError("xenstore ls %s: no such key" % path)
            names = _below(children, path, "")
        else:
            (reply,) = xs.pipeline([_msg(Op.DIRECTORY, p) + (0,)])
            if isinstance(reply, PyXSError):
                raise _refused("ls", p, reply)
            names = [c for c in reply.split(NUL) if c]
            names = [n.decode("ascii", "replace") for n in names]
        for name in names:
            out.write(name.encode("ascii", "replace") + b"\n")
    out.flush()


def _below(children, path, prefix):
    out = []
    for c in children.get(path, []):
        out.append(prefix + c)
        out.extend(_below(children, path + "/" + c, prefix + c + "/"))
    return out


def watch(xs, paths, out, count=None):
    """Print the path of each event, one a line, as it comes; stop after `count` events (None:
    never). xenstored fires every watch once when it is set: that is the first line."""
    token = "xe-guest-agent-%d" % os.getpid()
    for p in paths:
        valid(p)
    try:
        xs.watch(paths, token)
    except PyXSError as e:
        raise _refused("watch", paths[0].encode(), e)
    seen = 0
    poll = select.poll()
    poll.register(xs.fileno(), select.POLLIN)
    while count is None or seen < count:
        if not xs.events:
            poll.poll()
            xs.pump()
            continue
        path, tok = xs.events.popleft()
        if tok == token:
            out.write(path.encode("ascii", "replace") + b"\n")
            out.flush()
            seen += 1


def run(where, action):
    """Connect, run action(xs), close; a lost connection or a refused transaction is one line."""
    xs = connect(where)
    try:
        return action(xs)
    except Lost as e:
        raise ToolError("XenStore at %s: %s" % (where, e))
    except PyXSError as e:
        raise ToolError("XenStore at %s refused: %s" % (where, e))
    finally:
        xs.close()
