"""Event-driven presence of one file: inotify on its directory, and on every directory along its
symlink chain, so creation, deletion, renames, atomic replace and re-pointed or dangling symlinks
are all noticed without polling.

"Present" means the path exists after following symlinks: a dangling symlink is absent.
"""
import ctypes
import os

import inotify_simple
from inotify_simple import INotify, flags

# inotify_simple finds libc with ctypes.util.find_library, which runs `ldconfig -p` in a
# subprocess; the agent never shells out, and libc is already loaded in this process.
inotify_simple._libc = inotify_simple._libc or ctypes.CDLL(None, use_errno=True)

MASK = (flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO | flags.ATTRIB
        | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR)
MAX_LINKS = 40   # the kernel's own limit on symlink hops


def chain(path):
    """[(directory to watch, name in it that matters)] for `path` and every symlink it leads through.

    A directory that does not exist yet is stood in for by its nearest existing ancestor, watched
    for the name of the missing component.
    """
    out = []
    path = os.path.abspath(path)
    for _ in range(MAX_LINKS):
        directory, name = os.path.split(path)
        while directory != "/" and not os.path.isdir(directory):
            directory, name = os.path.split(directory)
        out.append((directory, name))
        try:
            target = os.readlink(path)
        except OSError:
            break   # not a symlink (or not there): the chain ends here
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return out


class FlagWatch:
    def __init__(self, path):
        self.path = path
        self.inotify = INotify()
        self._watches = {}   # wd -> directory
        self._names = set()
        self.rearm()

    def fileno(self):
        return self.inotify.fileno()

    def present(self):
        return os.path.exists(self.path)

    def rearm(self):
        """Watch exactly the directories the current symlink chain passes through."""
        links = chain(self.path)
        wanted = {d for d, _ in links}
        self._names = {n for _, n in links}
        for wd, d in list(self._watches.items()):
            if d not in wanted:
                self._rm_watch(wd)
        for d in wanted - set(self._watches.values()):
            try:
                self._watches[self.inotify.add_watch(d, MASK)] = d
            except OSError:
                pass   # vanished in between: the parent's event will bring us back here

    def _rm_watch(self, wd):
        self._watches.pop(wd, None)
        try:
            self.inotify.rm_watch(wd)
        except OSError:
            pass   # the kernel already dropped it (directory deleted)

    def changed(self):
        """Drain pending events; True if any could change presence (then the watches are re-armed)."""
        relevant = False
        for event in self.inotify.read(timeout=0):
            if event.mask & (flags.Q_OVERFLOW | flags.IGNORED | flags.DELETE_SELF | flags.MOVE_SELF):
                relevant = True   # lost events or a watched directory went away: look again
                if event.mask & flags.IGNORED:
                    self._watches.pop(event.wd, None)
            elif event.name in self._names:
                relevant = True
        if relevant:
            self.rearm()
        return relevant

    def close(self):
        self.inotify.close()
