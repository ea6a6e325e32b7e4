"""The reads behind `status --host`, over the agent's own connection: every request waits at most
its time-out, through /dev/xen/xenbus as through a dom0 socket. Values come back as bytes,
untouched; relative paths are resolved by xenstored below the connection's home.
"""
from pyxs._internal import NUL, Op
from pyxs.exceptions import InvalidPath, PyXSError
from pyxs.helpers import check_path

USAGE, RUNTIME = 2, 1
BATCH = 32          # nodes per round trip when walking a tree (a read and a listing each)
MAX_NODES = 20000   # a walk stops here (a guest owns 1000 nodes by default, 8192 on XCP-ng)
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


def _msg(op, path, value=None):
    """(op, payload) of a request on `path` (bytes)."""
    return (op, path + NUL + value if value is not None else path + NUL)


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

