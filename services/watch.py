"""File events for the run catalog: one inotify instance, a few directories, never their subtrees.

The catalog asks to watch exactly what it reads: the base dir (new runs), each run's root, and a
Trainboard run's ``status/``, ``logs/``, ``control/`` and ``snapshots/`` directories, each watched
*non-recursively*. A snapshot's ``model/`` folder (dozens of files, built under a temporary name and
renamed) is never watched: its appearance shows as one event in ``snapshots/``, which is all the pages
need. A recursive watch on the base dir (what the dashboard used before) put an inotify watch inside
every snapshot, and watchdog printed a multi-KB RuntimeWarning for each renamed one.

One inotify instance serves every directory (a per-directory observer would spend one of the 128
instances a user may have per watch). The handler only marks paths dirty; reading happens when a page
asks. Where inotify is missing (not Linux, ``--poll``) the catalog checks file signatures on each request,
which costs a few ``stat`` calls per run. When inotify runs out while the dashboard runs, because the
watch limit is reached (``ENOSPC`` from ``inotify_add_watch``, or the ``max_watches`` given here) or the
kernel's event queue overflowed (``IN_Q_OVERFLOW``: events were lost), the watcher gives up as a whole:
it releases its watches, says why once (:attr:`DirWatcher.problem`, one log line) and the catalog polls
from then on. Partial watching would leave some runs followed by events and others silently not.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct
import sys
import threading
from typing import Callable

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = 0o2000000
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
EVENT_HEADER = struct.Struct("iIII")
READ_TIMEOUT_S = 0.5
MAX_WATCHES_ENV = "TRAINBOARD_MAX_WATCHES"
"""Most directories one dashboard watches (default: what the kernel allows); above it, polling."""
LOG = logging.getLogger("trainboard.watch")


class DirWatcher:
    """Non-recursive inotify watches on chosen directories; ``on_change(dir_path)`` per event.

    Args:
        on_change: called from the watcher thread with the watched directory an event happened in
            (it must only mark something dirty).
        max_watches: most directories watched before giving up and asking for polling (default
            ``$TRAINBOARD_MAX_WATCHES`` or unlimited: the kernel's ``max_user_watches`` decides).
        on_give_up: called once (from any thread) when watching stops for good, with the reason.

    Attributes:
        available: whether events arrive at all (False: the caller checks files itself).
        problem: why not, in words.
        gave_up: True once watching stopped because a limit was reached or events were lost.
    """

    def __init__(self, on_change: Callable[[str], None], *, max_watches: int | None = None,
                 on_give_up: Callable[[str], None] | None = None) -> None:
        self.on_change = on_change
        self.on_give_up = on_give_up
        if max_watches is None and os.environ.get(MAX_WATCHES_ENV, "").strip().isdigit():
            max_watches = int(os.environ[MAX_WATCHES_ENV])
        self.max_watches = max_watches
        self.gave_up = False
        self.available = False
        self.problem: str | None = None
        self._wd_to_path: dict[int, str] = {}
        self._path_to_wd: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fd = -1
        self._libc: ctypes.CDLL | None = None
        if not sys.platform.startswith("linux"):
            self.problem = "file events need Linux inotify; checking files on each refresh instead"
            return
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        except (OSError, AttributeError) as exc:
            self.problem = f"file watching unavailable ({exc}); checking files on each refresh instead"
            return
        self._libc, self._fd, self.available = libc, fd, True
        self._thread = threading.Thread(target=self._loop, name="trainboard-watch", daemon=True)
        self._thread.start()

    def watch(self, path: str | os.PathLike[str]) -> bool:
        """Watch one directory (not its subdirectories); True when it is watched (already or now)."""
        if not self.available or self._libc is None:
            return False
        p = os.fspath(path)
        with self._lock:
            if p in self._path_to_wd:
                return True
            if self._stop.is_set() or self._fd < 0:
                return False
            if self.max_watches is not None and len(self._path_to_wd) >= self.max_watches:
                wd, err = -1, errno.ENOSPC
            else:
                wd = self._libc.inotify_add_watch(self._fd, os.fsencode(p), WATCH_MASK)
                err = ctypes.get_errno() if wd < 0 else 0
            if wd >= 0:
                old = self._wd_to_path.get(wd)
                if old is not None:  # the same directory under another name (a link): keep one name
                    self._path_to_wd.pop(old, None)
                self._wd_to_path[wd] = p
                self._path_to_wd[p] = wd
                return True
            if err != errno.ENOSPC:
                return False  # the directory vanished or is unreadable: its parent's events cover it
            count = len(self._path_to_wd)
        self.give_up(f"the inotify watch limit is reached (fs.inotify.max_user_watches, or {MAX_WATCHES_ENV}) "
                     f"at {count:,} directories")
        return False

    def is_watched(self, path: str | os.PathLike[str]) -> bool:
        with self._lock:
            return os.fspath(path) in self._path_to_wd

    def watched(self) -> list[str]:
        with self._lock:
            return sorted(self._path_to_wd)

    def _loop(self) -> None:
        """Read events until stopped; this thread alone closes the inotify fd (so no other thread ever
        selects on a closed or reused descriptor), which releases every watch at once."""
        try:
            while not self._stop.is_set():
                try:
                    ready, _, _ = select.select([self._fd], [], [], READ_TIMEOUT_S)
                except (OSError, ValueError):
                    return
                if not ready or self._stop.is_set():
                    continue
                try:
                    data = os.read(self._fd, 64 * 1024)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                self._dispatch(data)
        finally:
            with self._lock:
                fd, self._fd = self._fd, -1
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _dispatch(self, data: bytes) -> None:
        changed: set[str] = set()
        i = 0
        while i + EVENT_HEADER.size <= len(data):
            wd, mask, _cookie, length = EVENT_HEADER.unpack_from(data, i)
            i += EVENT_HEADER.size + length
            if mask & IN_Q_OVERFLOW:
                self.give_up("the inotify event queue overflowed (fs.inotify.max_queued_events): events were lost")
                return
            with self._lock:
                path = self._wd_to_path.get(wd)
                if mask & IN_IGNORED and path is not None:  # the directory went away: it may be re-added later
                    del self._wd_to_path[wd]
                    if self._path_to_wd.get(path) == wd:
                        del self._path_to_wd[path]
            if path is not None:
                changed.add(path)
        for path in changed:
            try:
                self.on_change(path)
            except Exception:  # noqa: BLE001 - a handler bug must not stop the events of every other run
                pass

    def give_up(self, reason: str) -> None:
        """Stop watching for good and release every watch: the caller polls from now on. Said once."""
        with self._lock:
            if self.gave_up:
                return
            self.gave_up = True
            self.problem = f"{reason}; checking files on each refresh instead (polling)"
        LOG.warning("trainboard: %s", self.problem)
        self._release()
        if self.on_give_up is not None:
            try:
                self.on_give_up(self.problem)
            except Exception:  # noqa: BLE001 - the fallback must happen even if the handler fails
                pass

    def _release(self) -> None:
        """Stop the event thread (it closes the fd, freeing the kernel's watches) and forget the watches."""
        self.available = False
        self._stop.set()
        with self._lock:
            self._wd_to_path.clear()
            self._path_to_wd.clear()

    def stop(self) -> None:
        self._release()
        t = getattr(self, "_thread", None)
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2)
