"""The shell: one event loop that owns all I/O (XenStore, inotify, netlink, timers, signals).

It keeps a picture of the agent's keys as XenStore holds them (`actual`), refreshed by watch
events, and after anything changes runs the pure plan and carries it out in one transaction.
Its own writes come back as watch events too; they are re-read, match, and produce no plan,
so the agent never fights itself.
"""
import errno
import logging
import random
import selectors
import signal
import socket
import time

from . import config as configmod
from . import publisher, schema, sdnotify
from .clockwatch import ClockWatch
from .flagwatch import FlagWatch
from .xenstore import Lost, XenStore, errname
from pyxs.exceptions import PyXSError

log = logging.getLogger("xe-guest-agent")

TOKEN = "xe-guest-agent"
EAGAIN_TRIES = 20
QUOTA_ERRORS = {errno.ENOSPC, getattr(errno, "EDQUOT", 122)}
QUOTA_RETRY = 60.0   # seconds before a key refused for quota is tried again
SETTLE = 0.01        # seconds a burst of watch events may take before we look


class Shutdown(BaseException):
    """Raised from the SIGTERM/SIGINT handler so that no wait, however long, delays the exit.
    A BaseException, like KeyboardInterrupt: library code that catches Exception (logging's
    handleError does, around every emit) must not swallow it."""


class Backoff:
    """Jittered exponential back-off: 50 ms doubling to 5 s."""

    def __init__(self, first=0.05, limit=5.0):
        self.first, self.limit, self.delay = first, limit, first

    def next(self):
        delay, self.delay = self.delay, min(self.delay * 2, self.limit)
        return delay * random.uniform(0.5, 1.5)

    def reset(self):
        self.delay = self.first


class Agent:
    def __init__(self, config, xenstore_path, config_path=None, overrides=None, sources=()):
        self.config = config
        self.config_path, self.overrides = config_path, overrides
        self.xs = XenStore(xenstore_path)
        self.flag = FlagWatch(config.flag_file)
        self.sources = list(sources)    # collectors with state of their own (see collectors/)
        self.selector = selectors.DefaultSelector()
        self.actual = None              # our keys as XenStore holds them; None: read them all
        self.dirty = set()              # watched paths that fired since the last look
        self.dirty_due = 0.0            # when to look at them
        self.domain = None              # (unique-domain-id, domid) of the domain we published in
        self.denied = {}                # key -> (value refused, when to try again or None)
        self.reported = set()           # (key, error) already logged: each is logged once
        self.backoff = Backoff()
        self.ever_connected = False     # "cannot connect" until the first connection, "lost" after
        self.retry_at = 0.0             # when to try to (re)connect or publish again
        self.lost_logged = False
        self.ready = False
        self.reload = False
        self.timers = {}                # name -> monotonic deadline
        self._xs_fd = None
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self.selector.register(self.flag, selectors.EVENT_READ, self._on_flag)
        self.flag_present = self.flag.present()
        self.recheck = False            # read everything at the next look (the clock was stepped)
        self.clock = ClockWatch()
        self.selector.register(self.clock, selectors.EVENT_READ, self._on_clock)
        for source in self.sources:
            source.collect()
            source.attach(self)

    # -- state ------------------------------------------------------------------------------
    def desired(self):
        extra = {}
        for source in self.sources:
            extra.update(source.keys())
        state = publisher.desired_state(self.config, self.flag_present, extra)
        now = time.monotonic()
        for key in [k for k in self.denied if not self._still_denied(k, state.get(k), now)]:
            del self.denied[key]   # a new value, or time for another try
        # A refused key is left as XenStore has it: neither written again nor removed.
        for key in self.denied:
            if key in self.actual:
                state[key] = self.actual[key]
            else:
                state.pop(key, None)
        return state

    def _still_denied(self, key, value, now):
        refused_value, retry_at = self.denied[key]
        return refused_value == value and (retry_at is None or now < retry_at)

    def owned_keys(self):
        keys = list(schema.OWNED_KEYS) + [schema.UPDATED]
        for source in self.sources:
            keys += source.owned_keys()
        return keys

    # -- XenStore ---------------------------------------------------------------------------
    def connect(self):
        log.debug("connecting to %s", self.xs.path)
        self.xs.connect()
        # Linux registers a watch synchronously: the write() blocks, uninterruptibly, until
        # xenstored answers. Reads are asynchronous and so bounded: one read first, so that a
        # xenstored not answering yet costs a time-out and a retry, not a hung agent.
        self.xs.read_many(list(schema.IDENTITY))
        self.xs.watch(schema.WATCHED, TOKEN)
        self.xs.events.clear()   # the firing every new watch does: we are about to read everything
        self.dirty.clear()
        self._forget()           # the first look, a full one, tells whether the domain changed
        self._xs_fd = self.xs.fileno()
        self.selector.register(self._xs_fd, selectors.EVENT_READ, self._on_xenstore)

    def _forget(self):
        """A new domain (migration, resume) or a new connection: trust nothing we knew."""
        self.actual = None
        self.denied.clear()
        for source in self.sources:
            source.reset()

    def refresh(self, check=False):
        """Bring `actual` up to date: everything after a (re)connect or in a new domain, else what
        the watches named once they have settled (a burst of events, our echoes too, is one look).
        `check`: look at least at the identity. Returns True if it looked."""
        full = self.actual is None or self.recheck
        self.recheck = False
        due = bool(self.dirty) and time.monotonic() >= self.dirty_due
        if not (full or due or check):
            return False
        dirty = set()
        if due:
            dirty, self.dirty = self.dirty, set()
        if dirty:
            log.debug("watches fired: %s", ", ".join(sorted(dirty)))
        # After a resume the kernel registers every watch again and each fires at its own root:
        # every owned key lies below one, so that look reads them all and retries refused ones.
        # A key refused for its rights gets another try once something changed there (set_perms
        # fires watches too); our own refused writes fire nothing, so this cannot loop.
        for key in _affected(dirty, list(self.denied)):
            self.denied.pop(key, None)
        # The identity first, on its own: on the device every request is a round trip anyway, and
        # in a new domain the look that follows can then be the cheap full one at once.
        identity = tuple(self.xs.read_many(list(schema.IDENTITY)))
        if identity != self.domain:
            if self.domain is not None:
                log.info("new domain (domid %s, unique-domain-id %s): republishing everything",
                         identity[1], identity[0])
            self.domain = identity
            self._forget()   # its refusals and sources' reads too, even if this look was full
            full = True
        values = self._look(full, dirty)
        if not full and any(v is None and p in self.actual for p, v in values.items()):
            # One of our keys vanished: the tree may have been wiped under a domain that kept its
            # identity. Whatever else went with it, a full look reads it all.
            log.debug("a key of ours vanished: reading everything")
            full, values = True, self._look(True, dirty)
        if full:
            self.actual = {}
        for path, value in values.items():
            if value is None:
                self.actual.pop(path, None)
            else:
                self.actual[path] = value
        for tree in self._trees:
            for k in [k for k in self.actual if k.startswith(tree + "/")]:
                del self.actual[k]
            self.actual.update(self.xs.walk(tree))
        for source in self.sources:
            source.refresh(self.xs, None if full else dirty)
        return True

    def _look(self, full, dirty):
        """{path: value or None} of the owned keys a look needs (all of them if `full`); the
        subtrees to walk are left in self._trees. A full look lists the keys' folders first and
        reads only the keys there: in the wiped home of a new domain that is a handful of round
        trips instead of one per key."""
        keys = self.owned_keys()
        paths = keys + list(schema.OWNED_SUBTREES) if full else _affected(dirty, keys)
        plain = [p for p in paths if p not in schema.OWNED_SUBTREES]
        self._trees = [p for p in paths if p in schema.OWNED_SUBTREES]
        absent = set()
        if full:
            folders = sorted({p.rpartition("/")[0] for p in plain})
            for folder, names in zip(folders, self.xs.list_many(folders)):
                if isinstance(names, PyXSError):
                    continue   # not ours to list: each key is read
                absent.update(p for p in plain if p.rpartition("/")[0] == folder
                              and (names is None or p.rpartition("/")[2] not in names))
        present = [p for p in plain if p not in absent]
        values = dict.fromkeys(absent)
        values.update(zip(present, self.xs.read_many(present)))
        return values

    def publish(self):
        """Make XenStore match the desired state in one transaction; no-op if it already does."""
        looked = self.refresh()
        steps = publisher.plan(self.desired(), self.actual, self._next_updated())
        # A local change (flag, address, memory) planned on what we saw last is only written after
        # checking that this is still that domain: a resume may not have sent its events yet, or
        # at all. The check rides with the transaction's start (no extra round trip over a socket).
        if steps and not self._apply(steps, check=not looked):
            self.refresh(check=True)   # a new domain: read it all, and plan again
            steps = publisher.plan(self.desired(), self.actual, self._next_updated())
            if steps:
                self._apply(steps)

    def _next_updated(self):
        return publisher.next_updated(self.actual.get(schema.UPDATED) if self.actual else None,
                                      int(time.time() * 1000))

    def _apply(self, steps, check=False):
        """Carry out `steps` in one transaction: its writes and the commit go out back to back.
        `check`: first make sure the identity is still ours; False (nothing written) if not."""
        delays = Backoff(0.001, 0.1)
        for _ in range(EAGAIN_TRIES):
            if check:
                identity, tx = self.xs.transaction_start(schema.IDENTITY)
                if tuple(identity) != self.domain:
                    self.xs.pipeline([self.xs.encode("abort", tx=tx)])
                    return False
            else:
                tx = self.xs.transaction_start()
            requests = [self.xs.encode(s.op, s.path, s.value, tx) for s in steps]
            *replies, commit = self.xs.pipeline(requests + [self.xs.encode("commit", tx=tx)])
            failed = {s: r for s, r in zip(steps, replies) if isinstance(r, PyXSError)
                      and not (s.op == "rm" and r.args[0] == errno.ENOENT)}
            if not isinstance(commit, PyXSError):
                break
            if commit.args and commit.args[0] == errno.EAGAIN:
                time.sleep(delays.next())   # someone else wrote meanwhile: redo the whole batch
                continue
            if not failed and commit.args and commit.args[0] in QUOTA_ERRORS:
                # The domain's node quota is checked at the commit only: every write in the
                # batch succeeded, so the ones that add a node are the ones to set aside.
                failed = {s: commit for s in steps if s.op == "write" and s.path not in self.actual}
            if not failed:
                raise commit
            # A refused value (too long, over quota) makes xenstored refuse the whole commit:
            # set those keys aside and commit the rest.
            for step, exc in failed.items():
                self._refused(step, exc)
            steps = [s for s in steps if s not in failed]
            if all(s.path == schema.UPDATED for s in steps):
                return True
        else:
            raise PyXSError(errno.EAGAIN, "transaction kept conflicting")
        log.debug("transaction committed: %s", ", ".join("%s %s" % (s.op, s.path) for s in steps))
        for step in steps:
            if step in failed:
                self._refused(step, failed[step])
            elif step.op == "write":
                self.actual[step.path] = step.value
            else:
                for k in [k for k in self.actual if k == step.path or k.startswith(step.path + "/")]:
                    del self.actual[k]
        return True

    def _refused(self, step, exc):
        name = errname(exc)
        retry = time.monotonic() + QUOTA_RETRY if exc.args[0] in QUOTA_ERRORS else None
        self.denied[step.path] = (step.value, retry)
        if retry:
            self.timers["quota"] = retry
        if (step.path, name) in self.reported:
            return
        self.reported.add((step.path, name))
        # control/ is read-only for guests under libxl: expected there, so not a warning.
        level = logging.INFO if name == "EACCES" and step.path.startswith("control/") else logging.WARNING
        log.log(level, "xenstore refused to %s %s (%s); publishing the rest", step.op, step.path, name)

    # -- event loop -------------------------------------------------------------------------
    def _on_wake(self):
        try:
            while self._wake_r.recv(64):
                pass
        except BlockingIOError:
            pass

    def _on_flag(self):
        if self.flag.changed():
            self.flag_present = self.flag.present()

    def _on_clock(self):
        if self.clock.stepped():
            # Every resume steps the clock, and may bring no XenStore event: look at everything.
            log.debug("the clock was stepped (a resume?): reading everything")
            self.recheck = True

    def _on_xenstore(self):
        try:
            self.xs.pump()
        except Lost as e:
            self._on_lost(str(e))
        self._take_events()

    def _take_events(self):
        # Events also arrive while we wait for replies; they are queued in self.xs.events.
        if self.xs.events and not self.dirty:
            self.dirty_due = time.monotonic() + SETTLE
        while self.xs.events:
            self.dirty.add(self.xs.events.popleft()[0])

    def _on_lost(self, why):
        if self._xs_fd is not None:
            self.selector.unregister(self._xs_fd)   # before close: the number may be reused
            self._xs_fd = None
        self.xs.close()
        self.dirty.clear()   # everything is read afresh on reconnect
        log.debug("lost: %s", why)
        if not self.lost_logged:
            if self.ever_connected:
                log.warning("lost XenStore at %s (%s); reconnecting", self.xs.path, why)
            else:
                log.warning("cannot connect to XenStore at %s (%s); retrying", self.xs.path, why)
            self.lost_logged = True
        self._schedule_retry()

    def _schedule_retry(self):
        self.retry_at = time.monotonic() + self.backoff.next()

    def step(self, timeout):
        """Wait for at most `timeout` seconds for anything to happen and handle it."""
        for key, _ in self.selector.select(timeout):
            key.data()
        self._handle()

    def _handle(self):
        now = time.monotonic()
        for name, when in list(self.timers.items()):
            if now >= when:
                del self.timers[name]
                self._on_timer(name)
        if self.reload:
            self.reload = False
            self._reload()
        if now < self.retry_at:
            return
        try:
            if not self.xs.connected:
                self.connect()
                if self.lost_logged:
                    log.info("XenStore is back at %s" if self.ever_connected else "connected to XenStore at %s",
                             self.xs.path)
                self.lost_logged, self.ever_connected = False, True
            self.publish()
            self._take_events()   # the echoes of our own writes, at least: looked at next round
            self.backoff.reset()
        except (Lost, OSError) as e:
            self._on_lost(str(e))
        except PyXSError as e:
            # A failure that is neither a lost connection nor one key's problem: try again later.
            if ("publish", errname(e)) not in self.reported:
                self.reported.add(("publish", errname(e)))
                log.warning("publishing failed: xenstore answered %s; retrying", e)
            self._schedule_retry()
            # Ready even unpublished: without READY systemd kills and restarts us at its start
            # time-out, and retrying here does better than that.
            self._ready("publishing failed (%s); retrying" % errname(e))
            return
        if self.xs.connected and not self.ready:
            log.info("ready: XenStore at %s is up to date", self.xs.path)
            self._ready("published to XenStore")

    def _ready(self, status):
        if not self.ready:
            self.ready = True
            sdnotify.notify("READY=1\nSTATUS=" + status)

    def _on_timer(self, name):
        if name == "memory":
            # Also a heartbeat: one read shows a dead connection or a domain that changed
            # without telling us (a xenbus device keeps no promise of EOF).
            self.dirty.add(schema.DOMID)   # any path will do: every look reads the identity
            self.dirty_due = 0.0
        if name == "watchdog":
            sdnotify.notify("WATCHDOG=1")
            self.timers["watchdog"] = time.monotonic() + self.watchdog
        for source in self.sources:
            source.on_timer(name)

    def _reload(self):
        try:
            new = configmod.load(self.config_path, self.overrides)
        except configmod.ConfigError as e:
            log.error("reload refused, keeping the running configuration: %s", e)
            return
        logging.getLogger().setLevel(new.logging_level)
        if new.flag_file != self.config.flag_file:
            self.selector.unregister(self.flag)
            self.flag.close()
            self.flag = FlagWatch(new.flag_file)
            self.selector.register(self.flag, selectors.EVENT_READ, self._on_flag)
        self.config = new
        self.flag_present = self.flag.present()
        for source in self.sources:
            source.reload(new)
        log.info("configuration reloaded")

    def wake(self):
        try:
            self._wake_w.send(b"!")
        except (BlockingIOError, OSError):
            pass

    def run(self):
        """Serve until SIGTERM/SIGINT; returns the exit status."""
        def stop(signum, frame):
            raise Shutdown()

        def hup(signum, frame):
            self.reload = True

        old = {s: signal.signal(s, h) for s, h in
               ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, hup))}
        try:
            old_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        except TypeError:   # Python 3.6 has no keyword: a full pipe (a wake-up already pending) then warns
            old_fd = signal.set_wakeup_fd(self._wake_w.fileno())
        self.watchdog = sdnotify.watchdog_interval()
        if self.watchdog:
            self.timers["watchdog"] = time.monotonic() + self.watchdog
        try:
            self._handle()
            if not self.xs.connected:
                self._ready("waiting for XenStore at %s" % self.xs.path)
            while True:
                self.step(self._timeout())
        except Shutdown:
            sdnotify.notify("STOPPING=1")
            return 0
        finally:
            signal.set_wakeup_fd(old_fd)
            for s, h in old.items():
                signal.signal(s, h)
            self.xs.close()

    def _timeout(self):
        """Seconds until the next thing due; None (sleep until an event) at idle."""
        due = list(self.timers.values())
        if self.retry_at > time.monotonic():
            due.append(self.retry_at)   # nothing else can be done before then
        elif self.dirty:
            due.append(self.dirty_due)
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())


def _affected(dirty, keys):
    """The owned keys and subtrees a set of fired watch paths may have touched."""
    out = set()
    for p in dirty:
        for k in list(keys) + list(schema.OWNED_SUBTREES):
            if k == p or k.startswith(p + "/"):
                out.add(k)
            elif p.startswith(k + "/") and k in schema.OWNED_SUBTREES:
                out.add(k)
    return sorted(out)
