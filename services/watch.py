"""File events for the run catalog: one inotify instance, a few directories, never their subtrees.

The catalog asks to watch exactly what it reads: the base dir (new runs), each run's root, and a
Trainboard run's ``status/``, ``logs/``, ``control/`` and ``snapshots/`` directories, each watched
*non-recursively*. A snapshot's ``model/`` folder (dozens of files, built under a temporary name and
renamed) is never watched: its appearance shows as one event in ``snapshots/``, which is all the pages
need. A recursive watch on the base dir (what the dashboard used before) put an inotify watch inside
every snapshot, and watchdog printed a multi-KB RuntimeWarning for each renamed one.

One inotify instance serves every directory (a per-directory observer would spend one of the 128
instances a user may have per watch). The handler only marks paths dirty; reading happens when a page
asks. Where inotify is missing (not Linux, ``--poll``, limits reached) the catalog falls back to
checking file signatures on each request, which costs a few ``stat`` calls per run.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
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
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = 0o2000000
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
EVENT_HEADER = struct.Struct("iIII")
READ_TIMEOUT_S = 0.5


class DirWatcher:
    """Non-recursive inotify watches on chosen directories; ``on_change(dir_path)`` per event.

    Args:
        on_change: called from the watcher thread with the watched directory an event happened in
            (it must only mark something dirty).

    Attributes:
        available: whether events arrive at all (False: the caller checks files itself).
        problem: why not, in words.
    """

    def __init__(self, on_change: Callable[[str], None]) -> None:
        self.on_change = on_change
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
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(p), WATCH_MASK)
            if wd < 0:
                err = ctypes.get_errno()
                if err == errno.ENOSPC and self.problem is None:
                    self.problem = ("the inotify watch limit is reached (fs.inotify.max_user_watches); "
                                    "some runs are checked on each refresh instead")
                return False
            old = self._wd_to_path.get(wd)
            if old is not None:  # the same directory under another name (a link): keep one name
                self._path_to_wd.pop(old, None)
            self._wd_to_path[wd] = p
            self._path_to_wd[p] = wd
            return True

    def watched(self) -> list[str]:
        with self._lock:
            return sorted(self._path_to_wd)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._fd], [], [], READ_TIMEOUT_S)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            except OSError:
                return
            self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        changed: set[str] = set()
        i = 0
        while i + EVENT_HEADER.size <= len(data):
            wd, mask, _cookie, length = EVENT_HEADER.unpack_from(data, i)
            i += EVENT_HEADER.size + length
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

    def stop(self) -> None:
        self._stop.set()
        if self.available:
            self.available = False
            t = getattr(self, "_thread", None)
            if t is not None:
                t.join(timeout=2)
            try:
                os.close(self._fd)
            except OSError:
                pass
