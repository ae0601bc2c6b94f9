"""The folder Dash's background callbacks ("Snapshot now") keep their job results in, and its cleanup.

Each dashboard process gets its own ``trainboard-cache-<pid>-XXXXXXXX`` folder in the system temp dir
(``tempfile.gettempdir()``, i.e. ``$TMPDIR`` or ``/tmp``), created private (0700, by ``mkdtemp``). It is
removed when the process exits normally (atexit; ``app.main`` turns SIGTERM into a normal exit), and a
start also removes the folders that dashboards killed outright (``kill -9``, a crash) left behind: those
whose pid no longer runs and that belong to the same user. A folder per process, not one shared per user,
because Dash names job results by the callback and its inputs, so two dashboards sharing a cache could
read each other's "Snapshot now" results.

The series cache (:mod:`services.seriescache`) is the other kind: it must outlive the process (reopening a
large run after a restart reads it), so it lives in a per-user folder, :func:`series_cache_dir`.
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

CACHE_PREFIX = "trainboard-cache-"
SERIES_CACHE_ENV = "TRAINBOARD_CACHE_DIR"
"""Where the series cache lives, when set (default ``$XDG_CACHE_HOME/trainboard/series`` or
``~/.cache/trainboard/series``)."""
SERIES_CACHE_SWITCH_ENV = "TRAINBOARD_SERIES_CACHE"
"""``0`` / ``off`` / ``no`` switches the series cache off (every open parses the JSONL)."""
_OWN = re.compile(rf"^{re.escape(CACHE_PREFIX)}(\d+)-")


def stale_cache_dirs(tmp_dir: str | os.PathLike[str], pid_alive: Callable[[int], bool], uid: int | None) -> list[Path]:
    """Leftover cache folders in ``tmp_dir``: named ``trainboard-cache-<pid>-*`` for a pid that no longer
    runs, and (when ``uid`` is given) owned by ``uid``; symlinks are never followed or returned (pure but for
    listing the folder)."""
    out: list[Path] = []
    try:
        entries = list(os.scandir(tmp_dir))
    except OSError:
        return out
    for e in entries:
        m = _OWN.match(e.name)
        if m is None:
            continue
        try:
            if not e.is_dir(follow_symlinks=False) or (uid is not None and e.stat(follow_symlinks=False).st_uid != uid):
                continue
        except OSError:
            continue
        if not pid_alive(int(m.group(1))):
            out.append(Path(e.path))
    return out


def make_cache_dir() -> Path:
    """Create this process's cache folder, remove dead dashboards' leftovers, and remove it at exit."""
    from collectors.runformat import pid_alive

    tmp = tempfile.gettempdir()
    uid = os.getuid() if hasattr(os, "getuid") else None
    for old in stale_cache_dirs(tmp, pid_alive, uid):
        shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{CACHE_PREFIX}{os.getpid()}-"))
    owner = os.getpid()

    def _remove() -> None:
        if os.getpid() == owner:  # forked children (background callbacks) inherit atexit handlers
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(_remove)
    return path


def series_cache_dir(environ: dict[str, str] | None = None) -> Path | None:
    """The per-user folder of the series cache, or None when it is switched off. Pure but for the environment.

    ``$TRAINBOARD_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/trainboard/series``, else
    ``~/.cache/trainboard/series``. Never a run dir: the dashboard does not write into what it watches.
    """
    env = os.environ if environ is None else environ
    if env.get(SERIES_CACHE_SWITCH_ENV, "").strip().lower() in ("0", "off", "no", "false"):
        return None
    explicit = env.get(SERIES_CACHE_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    root = Path(xdg).expanduser() if xdg else Path(env.get("HOME") or Path.home()).expanduser() / ".cache"
    return root / "trainboard" / "series"
