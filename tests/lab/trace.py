"""Count what a guest sent, from xenstored's own `-T` trace: the xenstored side of the story."""
import calendar
import re
import time

_LINE = re.compile(r"^(IN|OUT) (0x[0-9a-f]+) (\d{8} \d\d:\d\d:\d\d) (\w+) \((.*)\)$")
_CREATE = re.compile(r"^CREATE connection (0x[0-9a-f]+)$")
MUTATING = {"WRITE", "RM", "MKDIR", "SET_PERMS"}


def _exchanges(trace_path, domid):
    """(time, direction, op, args) of domain `domid`'s connections (all of its introductions), in
    order. The time is whole seconds of xenstored's clock (its local time, UTC on the beds)."""
    guest, pending = set(), False
    with open(trace_path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = _LINE.match(line)
            if m:
                direction, conn, stamp, op, args = m.groups()
                if direction == "IN" and op == "INTRODUCE" and args.split(" ")[0] == str(domid):
                    pending = True
                elif conn in guest:
                    yield calendar.timegm(time.strptime(stamp, "%Y%m%d %H:%M:%S")), direction, op, args
                continue
            m = _CREATE.match(line)
            if m and pending:
                guest.add(m.group(1))
                pending = False


def exchanges(trace_path, domid):
    """[(direction, op, args)] of domain `domid`'s connections, in order: its requests ("IN") and
    what xenstored sent it ("OUT": replies, errors, watch events)."""
    return [(direction, op, args) for _, direction, op, args in _exchanges(trace_path, domid)]


def requests_at(trace_path, domid):
    """[(time, op, args)] the connections of domain `domid` sent, in order (whole seconds)."""
    return [(t, op, args) for t, direction, op, args in _exchanges(trace_path, domid) if direction == "IN"]


def requests(trace_path, domid):
    """[(op, args)] the connections of domain `domid` sent, in order."""
    return [(op, args) for direction, op, args in exchanges(trace_path, domid) if direction == "IN"]


def errors(trace_path, domid):
    """{errno name: count} of the error replies domain `domid` got."""
    out = {}
    for direction, op, args in exchanges(trace_path, domid):
        if direction == "OUT" and op == "ERROR":
            name = args.strip()
            out[name] = out.get(name, 0) + 1
    return out


def writes(trace_path, domid):
    """The mutating requests (WRITE, RM, MKDIR, SET_PERMS) domain `domid` sent."""
    return [r for r in requests(trace_path, domid) if r[0] in MUTATING]
