"""A synchronous dom0 connection for the test side (host model, fault injection, benchmarks):
requests go out back to back on a socket of its own and the replies are read in the calling
thread, so a host-side look at a dozen keys costs one round trip instead of a dozen thread
hand-offs through pyxs's router (xapi's own reads are in-process and just as direct).
Independent of the agent's code on purpose."""
import socket
import struct

HDR = struct.Struct("<IIII")
DIRECTORY, READ, GET_PERMS, TRANSACTION_START, TRANSACTION_END, WRITE, ERROR = 1, 2, 3, 6, 7, 11, 16


class XsError(Exception):
    @property
    def name(self):
        return self.args[0]


class QuickReader:
    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)   # blocking: with a timeout set, a full listen backlog is EAGAIN
        self.sock.settimeout(timeout)
        self.rq = 0

    def _recv(self, n):
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("xenstored closed the connection")
            out += chunk
        return bytes(out)

    def pipeline(self, requests):
        """[(op, args, tx)] sent back to back, then every reply: payload bytes or XsError."""
        data = bytearray()
        for op, args, tx in requests:
            self.rq += 1
            body = b"\0".join(args) + (b"\0" if op != WRITE else b"")
            data += HDR.pack(op, self.rq, tx, len(body)) + body
        self.sock.sendall(data)
        out = []
        for _ in requests:
            rop, _rq, _tx, size = HDR.unpack(self._recv(HDR.size))
            reply = self._recv(size)
            out.append(XsError(reply.rstrip(b"\0").decode()) if rop == ERROR else reply)
        return out

    def many(self, requests):
        """[(op, path)] -> [payload bytes, or None for an error] in order, in one round trip."""
        return [None if isinstance(r, XsError) else r
                for r in self.pipeline([(op, (path.encode(),), 0) for op, path in requests])]

    def read_many(self, paths):
        return [None if v is None else v.decode(errors="replace") for v in self.many([(READ, p) for p in paths])]

    def list_many(self, paths):
        return [[] if v is None else [c.decode() for c in v.split(b"\0") if c]
                for v in self.many([(DIRECTORY, p) for p in paths])]

    def close(self):
        self.sock.close()
