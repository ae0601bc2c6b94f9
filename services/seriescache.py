"""The columnar cache of a run's series: reopening a large run reads columns, not its whole JSONL.

A Trainboard run's ``logs/metrics.jsonl`` of 200,000 steps takes about a second to parse; of 1,000,000
steps, several. The reader (:class:`services.readers.TrainboardRun`) parses it once and this module keeps
what the parse produced, the series columns plus the reader's counters and the byte offset the parse
reached, in one file per run in the dashboard's series cache directory
(:func:`services.cachedir.series_cache_dir`, never the run dir). After a restart the reader loads the
columns and parses only the bytes appended after that offset, so the result is the one a fresh parse
gives (the reader's rules are applied to the same bytes in the same order).

The cache is trusted only while it describes the file on disk (:func:`check_source`): same device and
inode (a replaced file), a size not below the offset (a truncated one), and the same BLAKE2 digest of
the first and the last :data:`DIGEST_BYTES` bytes before the offset (a file rewritten in place, even to
the same size). Anything else and the reader re-parses from byte 0.

File format, chosen over Arrow IPC (a 30+ MB dependency for one flat table) and ``.npy`` per series
(several files cannot be replaced atomically together): one file, ``MAGIC``, an 8-byte header length, a
JSON header, then each series' ``steps``, ``values`` and ``times`` as raw native float64, read straight
into the reader's ``array('d')`` columns with ``array.fromfile`` (no intermediate copy). It is written
to a temporary name in the same directory, fsynced and ``os.replace``-d, so a dashboard killed mid-write
leaves the old cache or none, never a torn one; a file whose length does not match its header is
rejected anyway. Temporary files of dead dashboards are removed when the cache opens.

Writes happen on one background thread (:class:`SeriesCache` queues them) and only when the unsaved part
grew past a quarter of what is saved (and at least :data:`MIN_CACHE_BYTES`), so a live run costs a
bounded, amortised number of rewrites and small runs are never cached at all.
"""
from __future__ import annotations

import hashlib
import os
import queue
import sys
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from collectors import runformat as rf

MAGIC = b"TBSERIES\n"
FORMAT_VERSION = 1
"""Raise when the reader's parsing rules or the layout change: older cache files are then ignored."""
DIGEST_BYTES = 64 * 1024
"""How much of the start and of the end (before the cached offset) of the JSONL is checksummed."""
MIN_CACHE_BYTES = 1 << 20
"""JSONL files smaller than this parse in milliseconds: not cached (a folder of 2,000 tiny runs writes nothing)."""
RESAVE_FRACTION = 0.25
"""A cache is rewritten when the bytes parsed after it exceed this fraction of the bytes it covers."""
TMP_MARK = ".tmp-"
_LEN = 8


# --------------------------------------------------------------------------- pure-ish helpers

def cache_name(source: str | os.PathLike[str]) -> str:
    """File name of the cache of one JSONL: a digest of its real path (two runs never share one)."""
    real = os.path.realpath(os.fspath(source))
    return hashlib.blake2b(real.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest() + ".tbc"


def digest_range(path: str | os.PathLike[str], start: int, stop: int) -> str | None:
    """BLAKE2 hex digest of bytes ``[start, stop)`` of a file; None when they cannot all be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(stop - start)
    except OSError:
        return None
    if len(data) != stop - start:
        return None
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def source_digests(path: str | os.PathLike[str], offset: int) -> tuple[str | None, str | None]:
    """(head, tail) digests of a JSONL up to ``offset``: its first and last :data:`DIGEST_BYTES` bytes."""
    head = digest_range(path, 0, min(offset, DIGEST_BYTES))
    tail = digest_range(path, max(0, offset - DIGEST_BYTES), offset)
    return head, tail


def check_source(meta: dict[str, Any], path: str | os.PathLike[str]) -> str | None:
    """Why the cache described by ``meta`` does not describe ``path`` any more, or None when it does.

    Checked: the same device and inode (not replaced), a size at least the cached offset (not truncated)
    and the same digests of the first and last bytes before it (not rewritten in place).
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot stat {path}: {exc.strerror}"
    offset = meta.get("offset")
    if not isinstance(offset, int) or offset <= 0:
        return "no offset in the cache"
    if (st.st_dev, st.st_ino) != (meta.get("dev"), meta.get("inode")):
        return "the log was replaced"
    if st.st_size < offset:
        return "the log was truncated"
    if source_digests(path, offset) != (meta.get("head"), meta.get("tail")):
        return "the log was rewritten"
    return None


@dataclass
class CachedColumns:
    """One series as cached: its columns and how many times its tail was replaced."""

    steps: array
    values: array
    times: array
    rewinds: int = 0


@dataclass
class CacheEntry:
    """Everything the reader had after parsing a JSONL up to ``offset``.

    Attributes:
        offset / dev / inode: where the parse stopped, and the file it read.
        head / tail: digests of the first and last bytes before ``offset`` (:func:`source_digests`).
        series: ``"kind/metric"`` -> columns.
        counters: the reader's counters (records read, bad steps, bad and unknown lines).
        extra: reader-specific JSON (the summary record).
    """

    offset: int
    dev: int
    inode: int
    head: str | None
    tail: str | None
    series: dict[str, CachedColumns] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def write_entry(path: Path, entry: CacheEntry, source: str, *, fsync: bool = True) -> None:
    """Write ``entry`` atomically to ``path`` (temp file in the same directory, fsync, ``os.replace``).

    The caller must keep the columns from being resized while this runs (the reader's lock): they are
    written from their own buffers, without a copy.
    """
    header = {"format": FORMAT_VERSION, "byteorder": sys.byteorder, "source": source, "offset": entry.offset,
              "dev": entry.dev, "inode": entry.inode, "head": entry.head, "tail": entry.tail,
              "counters": entry.counters, "extra": entry.extra, "written_at": time.time(),
              "series": [[k, len(c.steps), c.rewinds] for k, c in entry.series.items()]}
    raw = rf.dumps(header)
    raw += b" " * (-(len(MAGIC) + _LEN + len(raw)) % 8)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(MAGIC)
            fh.write(len(raw).to_bytes(_LEN, "little"))
            fh.write(raw)
            for c in entry.series.values():
                if not (len(c.steps) == len(c.values) == len(c.times)):
                    raise ValueError("series columns of different lengths")
                for col in (c.steps, c.values, c.times):
                    fh.write(memoryview(col).cast("B"))
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_entry(path: Path) -> tuple[CacheEntry | None, str | None]:
    """The entry in a cache file, or (None, why not). Never raises on a bad file."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if fh.read(len(MAGIC)) != MAGIC:
                return None, "not a series cache file"
            n = int.from_bytes(fh.read(_LEN), "little")
            if n <= 0 or n > size:
                return None, "damaged header"
            header = rf.loads(fh.read(n))
            if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION \
                    or header.get("byteorder") != sys.byteorder:
                return None, "written by another version"
            specs = header.get("series")
            if not isinstance(specs, list):
                return None, "damaged header"
            total = len(MAGIC) + _LEN + n + sum(24 * int(s[1]) for s in specs)
            if total != size:
                return None, f"the file has {size} bytes, its header says {total} (an interrupted write)"
            series: dict[str, CachedColumns] = {}
            for key, count, rewinds in specs:
                cols = []
                for _ in range(3):
                    col = array("d")
                    if count:
                        col.fromfile(fh, int(count))
                    cols.append(col)
                series[str(key)] = CachedColumns(*cols, rewinds=int(rewinds))
    except FileNotFoundError:
        return None, "no cache yet"
    except (OSError, ValueError, TypeError, EOFError, IndexError) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    counters = header.get("counters") if isinstance(header.get("counters"), dict) else {}
    extra = header.get("extra") if isinstance(header.get("extra"), dict) else {}
    try:
        entry = CacheEntry(offset=int(header["offset"]), dev=int(header["dev"]), inode=int(header["inode"]),
                           head=header.get("head"), tail=header.get("tail"), series=series,
                           counters={k: int(v) for k, v in counters.items()}, extra=extra)
    except (KeyError, TypeError, ValueError):
        return None, "damaged header"
    return entry, None


def remove_dead_temp_files(directory: Path) -> int:
    """Remove the temporary files that killed dashboards left in the cache dir; how many were removed."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if TMP_MARK not in name:
            continue
        pid = name.rsplit(TMP_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and not rf.pid_alive(int(pid)):
            try:
                os.unlink(directory / name)
                removed += 1
            except OSError:
                pass
    return removed


# --------------------------------------------------------------------------- the cache

class SeriesCache:
    """The series cache of one dashboard: loads entries, and saves them on its own writer thread.

    Args:
        directory: where cache files live (created 0700; never a run dir).
        min_bytes: JSONL files below this are not cached (default :data:`MIN_CACHE_BYTES`).
        fsync: fsync each file before it replaces the old one.

    Attributes:
        problem: why the cache is off (the directory cannot be created or written), in words; None when fine.
        saves / save_errors: how many entries were written, and failed to be.

    Example:
        >>> cache = SeriesCache(Path("/tmp/tb-series"))                  # doctest: +SKIP
        >>> entry, why = cache.load("run/logs/metrics.jsonl")
    """

    def __init__(self, directory: str | os.PathLike[str], *, min_bytes: int = MIN_CACHE_BYTES,
                 fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.min_bytes = min_bytes
        self.fsync = fsync
        self.problem: str | None = None
        self.saves = 0
        self.save_errors = 0
        self._queue: "queue.Queue[tuple[str, threading.Lock, Callable[[], CacheEntry | None]]]" = queue.Queue()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._owner_pid = os.getpid()
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise PermissionError(f"{self.directory} is not writable")
        except OSError as exc:
            self.problem = f"series cache off: cannot use {self.directory} ({exc})"
            return
        remove_dead_temp_files(self.directory)

    @property
    def enabled(self) -> bool:
        return self.problem is None

    def path_for(self, source: str | os.PathLike[str]) -> Path:
        return self.directory / cache_name(source)

    def load(self, source: str | os.PathLike[str]) -> tuple[CacheEntry | None, str | None]:
        """The cached entry of a JSONL when it still describes the file, else (None, why not)."""
        if not self.enabled:
            return None, self.problem
        entry, why = read_entry(self.path_for(source))
        if entry is None:
            return None, why
        why = check_source({"offset": entry.offset, "dev": entry.dev, "inode": entry.inode, "head": entry.head,
                            "tail": entry.tail}, source)
        return (entry, None) if why is None else (None, why)

    def should_save(self, offset: int, saved_offset: int) -> bool:
        """Whether a reader at ``offset`` whose cache covers ``saved_offset`` should save now. Pure."""
        if not self.enabled or offset < self.min_bytes or offset <= saved_offset:
            return False
        return saved_offset <= 0 or offset - saved_offset >= RESAVE_FRACTION * saved_offset

    def save_later(self, source: str, lock: threading.Lock, build: Callable[[], CacheEntry | None]) -> None:
        """Queue a save of ``source``'s cache. On the writer thread, ``build()`` is called and its entry
        written while ``lock`` (the reader's) is held, so the columns neither change nor grow meanwhile."""
        if not self.enabled or self._owner_pid != os.getpid():
            return  # a forked child (Dash's background callbacks) reads the cache but leaves writing to its parent
        with self._lock:
            if source in self._pending:
                return
            self._pending.add(source)
            self._idle.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="trainboard-series-cache", daemon=True)
                self._thread.start()
        self._queue.put((source, lock, build))

    def save_now(self, source: str, entry: CacheEntry) -> None:
        """Write one entry in the calling thread (tools and tests)."""
        write_entry(self.path_for(source), entry, source, fsync=self.fsync)
        self.saves += 1

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued save is written (tests, clean shutdown)."""
        return self._idle.wait(timeout)

    def _loop(self) -> None:
        while True:
            try:
                source, lock, build = self._queue.get(timeout=5.0)
            except queue.Empty:
                with self._lock:
                    if not self._pending:
                        self._thread = None
                        return
                continue
            try:
                written = False
                with lock:  # the columns must not grow while their buffers are written
                    entry = build()
                    if entry is not None:
                        write_entry(self.path_for(source), entry, source, fsync=False)
                        written = True
                if written:
                    if self.fsync:
                        rf.fsync_path(self.path_for(source))
                    self.saves += 1
            except Exception:  # noqa: BLE001 - a full disk or a race costs the cache, never the dashboard
                self.save_errors += 1
            finally:
                with self._lock:
                    self._pending.discard(source)
                    if not self._pending:
                        self._idle.set()

    def clear(self) -> int:
        """Remove every cache file of this directory; how many were removed."""
        n = 0
        for name in os.listdir(self.directory) if self.enabled else []:
            if name.endswith(".tbc") or TMP_MARK in name:
                try:
                    os.unlink(self.directory / name)
                    n += 1
                except OSError:
                    pass
        return n




_DEFAULT: SeriesCache | None = None
_DEFAULT_SET = False
_DEFAULT_LOCK = threading.Lock()


def default_cache() -> SeriesCache | None:
    """The process's series cache (directory from :func:`services.cachedir.series_cache_dir`), or None
    when it is switched off (``TRAINBOARD_SERIES_CACHE=0``)."""
    global _DEFAULT, _DEFAULT_SET
    with _DEFAULT_LOCK:
        if not _DEFAULT_SET:
            from services.cachedir import series_cache_dir

            d = series_cache_dir()
            _DEFAULT = SeriesCache(d) if d is not None else None
            _DEFAULT_SET = True
        return _DEFAULT


def set_default_cache(cache: SeriesCache | None) -> None:
    """Use ``cache`` (None: no cache) for readers created from now on (tests, tools)."""
    global _DEFAULT, _DEFAULT_SET
    with _DEFAULT_LOCK:
        _DEFAULT, _DEFAULT_SET = cache, True


def reset_default_cache() -> None:
    """Forget the process's cache choice: the next :func:`default_cache` reads the environment again."""
    global _DEFAULT, _DEFAULT_SET
    with _DEFAULT_LOCK:
        _DEFAULT, _DEFAULT_SET = None, False
