"""Removing series-cache files whose run is gone, so the cache folder does not grow forever.

The series cache (:mod:`services.seriescache`) keeps one file per metrics log in a per-user folder, named
by a digest of the log's path. A run deleted, moved, replaced or truncated leaves its cache file behind:
never used again, never overwritten. :func:`collect` removes such files:

* the log named in the file's header no longer exists, or is now another file (other device or inode),
  or is shorter than the part the cache covers: the entry can never be used again;
* the file is not a series cache this dashboard can read (damaged, or written by another format version)
  and was last written more than :data:`FOREIGN_AGE_S` ago (a dashboard of another version sharing the
  folder keeps its recent files).

Only the header of each file is read (a few hundred bytes), at most :data:`MAX_FILES_PER_PASS` files per
pass. :func:`start_collector` runs a pass on a daemon thread shortly after the dashboard starts and then
every :data:`INTERVAL_S`, never on a page request.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectors import runformat as rf
from services.seriescache import FORMAT_VERSION, MAGIC, TMP_MARK, SeriesCache

CACHE_SUFFIX = ".tbc"
HEADER_LEN_BYTES = 8
MAX_HEADER_BYTES = 1 << 20
"""A header longer than this is damaged (real ones are a few hundred bytes plus the series names)."""
FOREIGN_AGE_S = 7 * 24 * 3600.0
"""Unreadable or other-version cache files are kept this long (another dashboard version may use them)."""
MAX_FILES_PER_PASS = 20_000
"""Files looked at per pass: a pass costs at most this many header reads."""
START_DELAY_S = 60.0
"""The first pass waits this long after startup: the dashboard's own startup work (discovery, the first
run read) comes first."""
INTERVAL_S = 6 * 3600.0
"""A long-running dashboard collects again this often."""


@dataclass
class GcResult:
    """What one pass did: files looked at, removed (by reason), and kept."""

    examined: int = 0
    removed: int = 0
    kept: int = 0
    reasons: dict[str, int] | None = None


def read_header(path: Path) -> dict[str, Any] | None:
    """The JSON header of a cache file (not its columns), or None when it is not a readable one."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                return None
            n = int.from_bytes(fh.read(HEADER_LEN_BYTES), "little")
            if n <= 0 or n > MAX_HEADER_BYTES:
                return None
            header = rf.loads(fh.read(n))
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def stale_reason(header: dict[str, Any] | None, age_s: float) -> str | None:
    """Why a cache file with this header (None: unreadable) and age can never be used again, or None
    when it may still be. Reads only the ``stat`` of the log the header names."""
    if header is None or header.get("format") != FORMAT_VERSION:
        return "unreadable or another format" if age_s > FOREIGN_AGE_S else None
    source = header.get("source")
    if not isinstance(source, str):
        return "no source in the header"
    try:
        st = os.stat(source)
    except FileNotFoundError:
        return "its run is gone"
    except OSError:
        return None  # a folder we cannot reach right now (an unmounted disk): keep it
    if (st.st_dev, st.st_ino) != (header.get("dev"), header.get("inode")):
        return "its log was replaced"
    offset = header.get("offset")
    if isinstance(offset, int) and st.st_size < offset:
        return "its log was truncated"
    return None


def collect(directory: str | os.PathLike[str], *, max_files: int = MAX_FILES_PER_PASS,
            now: float | None = None) -> GcResult:
    """Remove the cache files of ``directory`` whose run no longer exists or changed (:func:`stale_reason`);
    temporary files are left to :func:`services.seriescache.remove_dead_temp_files`."""
    now = time.time() if now is None else now
    out = GcResult(reasons={})
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(CACHE_SUFFIX) and TMP_MARK not in n)
    except OSError:
        return out
    for name in names[:max_files]:
        path = Path(directory) / name
        try:
            age = now - os.stat(path).st_mtime
        except OSError:
            continue
        out.examined += 1
        why = stale_reason(read_header(path), age)
        if why is None:
            out.kept += 1
            continue
        try:
            os.unlink(path)
        except OSError:
            out.kept += 1
            continue
        out.removed += 1
        out.reasons[why] = out.reasons.get(why, 0) + 1  # type: ignore[index]
    return out


def start_collector(cache: SeriesCache | None, *, delay_s: float = START_DELAY_S,
                    interval_s: float = INTERVAL_S) -> threading.Thread | None:
    """Collect ``cache``'s folder on a daemon thread after ``delay_s``, then every ``interval_s``; None when
    there is no usable cache. The thread sleeps between passes (no idle cost)."""
    if cache is None or not cache.enabled:
        return None

    def loop() -> None:
        time.sleep(delay_s)
        while True:
            try:
                collect(cache.directory)
            except Exception:  # noqa: BLE001 - a failed pass costs disk space, never the dashboard
                pass
            time.sleep(interval_s)

    t = threading.Thread(target=loop, name="trainboard-cache-gc", daemon=True)
    t.start()
    return t
