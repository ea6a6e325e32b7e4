"""Rename a process's UTS namespace from outside it, so that a test can change the agent's host
name without touching the machine's.

The agent is started as `unshare --uts python -m xe_guest_agent ...` (unshare execs, so the
process is the agent) and gets a copy of the machine's host name. Renamer(pid) starts a helper
that joins /proc/<pid>/ns/uts (setns: one thread, so the whole helper moves) and calls
sethostname(2) for each name it is given, answering with the CLOCK_MONOTONIC moment just
before the call: a latency is measured from the change itself, not from the pipe.
"""
import subprocess
import sys

UNSHARE = ("unshare", "--uts")

_HELPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY)
if libc.setns(fd, 0x04000000) != 0:   # CLONE_NEWUTS
    sys.exit("setns: " + os.strerror(ctypes.get_errno()))
print("ready", flush=True)
for line in sys.stdin:
    name = line.rstrip("\n").encode()
    t = time.monotonic()
    rc = libc.sethostname(name, len(name))
    print("%r %d" % (t, ctypes.get_errno() if rc else 0), flush=True)
"""


class Renamer:
    def __init__(self, pid):
        self.proc = subprocess.Popen([sys.executable, "-c", _HELPER, "/proc/%d/ns/uts" % pid],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)
        line = self.proc.stdout.readline()
        if line != "ready\n":
            self.close()
            raise RuntimeError("cannot enter the UTS namespace of process %d" % pid)

    def sethostname(self, name):
        """Set the namespace's host name; returns the time.monotonic() just before the change."""
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        t, err = self.proc.stdout.readline().split()
        if int(err):
            raise OSError(int(err), "sethostname(%r)" % name)
        return float(t)

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(5)
