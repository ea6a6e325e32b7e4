"""Event-driven notice that the guest was suspended and resumed (save/restore, migration).

A timerfd on CLOCK_REALTIME armed with TFD_TIMER_CANCEL_ON_SET becomes readable whenever the
clock is stepped, and the kernel steps it on every resume (timekeeping_resume -> timerfd_resume).
A resume may bring no XenStore event at all, so this is how the agent learns of one. A step by
NTP or `date -s` reads the same: one more look, which is harmless. Nothing wakes it otherwise.
"""
import ctypes
import errno
import os

CLOCK_REALTIME = 0
TFD_NONBLOCK, TFD_CLOEXEC = 0o4000, 0o2000000
TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET = 1, 2
FAR = 1 << 40   # seconds since the epoch: an expiry that never comes


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(None, use_errno=True)   # already loaded: no find_library (it shells out)


class ClockWatch:
    def __init__(self):
        self.fd = _libc.timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        self._arm()

    def _arm(self):
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(FAR, 0))
        if _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, ctypes.byref(spec), None) < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))

    def fileno(self):
        return self.fd

    def stepped(self):
        """True if the clock was stepped since the last call (re-arms the timer)."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno != errno.ECANCELED:
                raise
        self._arm()
        return True

    def close(self):
        os.close(self.fd)
