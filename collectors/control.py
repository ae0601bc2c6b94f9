"""The control protocol: how the dashboard, a training's collector and the Smart Monitor talk through files.

Everything under ``<run>/control/`` is defined here, for every side:

* ``thresholds.json``: live anomaly thresholds. The dashboard writes it (:func:`write_thresholds`), the
  in-training plugin and the Smart Monitor follow it (:class:`ThresholdsFile`, one ``stat`` per poll).
* ``snapshot_request.json`` / ``snapshot_result.json``: "Snapshot now". The dashboard writes a request
  (:func:`request_snapshot`); whoever can save takes it with :func:`claim_request` (a rename, so exactly
  one claimer wins) and answers with :func:`write_result`. A live collector that answers requests says so
  in its status (:func:`announce_request_handler`), so others leave them to it.
* ``smart_monitor.lock``: one Smart Monitor per directory (:class:`DirLock`, :func:`monitor_running`).

Standard library only and below every feature in the import chain: the anomaly plugin, the Smart Monitor,
the snapshot code and the dashboard import it; it imports only :mod:`collectors.runformat`.
"""
from __future__ import annotations

import errno
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, Protocol, TypeVar

from collectors import runformat as rf

try:  # POSIX only; the lock is the standalone Smart Monitor's, so a training on Windows still imports this
    import fcntl
except ImportError:  # pragma: no cover - exercised only on Windows
    fcntl = None  # type: ignore[assignment]

TMP_CLAIM = rf.TMP_PREFIX + "claim-"
"""Prefix of a claimed request while its claimer reads it."""
LIVE_STATUS_SECONDS = 120.0
"""A status file updated within this many seconds, by a live process, means a training is running."""
REQUEST_HANDLER_KEY = "anomaly"
"""Status key under which a collector that answers snapshot requests announces itself."""
MAX_NOTE_CHARS = 200


# --------------------------------------------------------------------------- thresholds.json

class MergeableConfig(Protocol):
    """A configuration the thresholds file's values can be merged onto (``AnomalyConfig`` is one)."""

    def merged(self, overrides: Any) -> Any: ...


C = TypeVar("C", bound=MergeableConfig)


@dataclass
class ThresholdsChange(Generic[C]):
    """What :meth:`ThresholdsFile.poll` found: ``kind`` is ``"unchanged"``, ``"removed"`` (back to the
    base config), ``"loaded"`` (``config`` is new) or ``"invalid"`` (``problem`` says why; keep the old)."""

    kind: str
    config: C | None = None
    problem: str | None = None


class ThresholdsFile(Generic[C]):
    """Follows ``control/thresholds.json`` (written by the dashboard's sliders) by (mtime, size), so a
    poll costs one ``stat`` when nothing changed. Used by the in-training plugin and the Smart Monitor.

    Args:
        path: the thresholds file.
        base: the configuration the file's values are merged onto (and returned to when it is removed);
            its ``merged(doc)`` raises ValueError naming a bad value.
    """

    def __init__(self, path: Path, base: C) -> None:
        self.path = path
        self.base = base
        self._sig: tuple[int, int] | None = None

    def poll(self) -> ThresholdsChange[C]:
        try:
            st = os.stat(self.path)
            sig: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            sig = None
        if sig == self._sig:
            return ThresholdsChange("unchanged")
        self._sig = sig
        if sig is None:
            return ThresholdsChange("removed", self.base)
        doc, problem = rf.read_json(self.path)
        try:
            if problem:
                raise ValueError(problem)
            return ThresholdsChange("loaded", self.base.merged(doc))
        except ValueError as exc:
            return ThresholdsChange("invalid", problem=f"ignored {self.path}: {exc}")


def read_thresholds(run_dir: str | os.PathLike[str]) -> tuple[Any | None, str | None]:
    """The thresholds document of a run as written (``(None, None)`` when there is none), or a problem."""
    path = rf.RunPaths.of(run_dir).thresholds
    if not path.exists():
        return None, None
    return rf.read_json(path)


def write_thresholds(run_dir: str | os.PathLike[str], doc: Mapping[str, Any]) -> None:
    """Replace ``control/thresholds.json`` atomically (a follower sees the old file or the new one)."""
    rf.write_json_atomic(rf.RunPaths.of(run_dir).thresholds, dict(doc))


# --------------------------------------------------------------------------- snapshot request / result

class ResultLike(Protocol):
    """What a snapshot attempt reports (``collectors.snapshots.SnapshotResult`` is one)."""

    ok: bool
    name: str
    skipped: bool
    error: str | None


def request_snapshot(run_dir: str | os.PathLike[str], *, note: str = "", requested_by: str = "dashboard") -> dict[str, Any]:
    """Write ``control/snapshot_request.json`` (atomically) and return it; its ``id`` names the result."""
    req = {"v": rf.SCHEMA_VERSION, "id": secrets.token_hex(8), "requested_at": time.time(),
           "requested_by": requested_by, "note": str(note)[:MAX_NOTE_CHARS]}
    rf.write_json_atomic(rf.RunPaths.of(run_dir).snapshot_request, req)
    return req


def claim_request(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Take the pending snapshot request, if any. The rename makes exactly one claimer win when the
    training, the standalone monitor and the dashboard look at the same moment. A malformed request
    is claimed and returned as ``{"id": None, "problem": ...}`` so it is answered, not retried forever."""
    paths = rf.RunPaths.of(run_dir)
    src = paths.snapshot_request
    if not src.exists():
        return None
    claimed = paths.control_dir / f"{TMP_CLAIM}{os.getpid()}-{secrets.token_hex(4)}.json"
    try:
        os.rename(src, claimed)
    except OSError:
        return None
    doc, problem = rf.read_json(claimed)
    try:
        claimed.unlink()
    except OSError:
        pass
    if not isinstance(doc, dict):
        return {"id": None, "problem": problem or "the request is not a JSON object"}
    return doc


def write_result(run_dir: str | os.PathLike[str], request: Mapping[str, Any] | None, result: ResultLike,
                 *, handled_by: str) -> dict[str, Any]:
    """Write ``control/snapshot_result.json`` answering ``request``."""
    doc = {"v": rf.SCHEMA_VERSION, "id": (request or {}).get("id"), "ok": result.ok, "name": result.name,
           "skipped": result.skipped, "error": result.error, "handled_by": handled_by, "finished_at": time.time()}
    rf.write_json_atomic(rf.RunPaths.of(run_dir).snapshot_result, doc)
    return doc


def read_result(run_dir: str | os.PathLike[str], request_id: str | None = None) -> dict[str, Any] | None:
    """The latest snapshot result (only the one for ``request_id`` when given)."""
    doc, _ = rf.read_json(rf.RunPaths.of(run_dir).snapshot_result)
    if not isinstance(doc, dict) or (request_id is not None and doc.get("id") != request_id):
        return None
    return doc


def wait_for_result(run_dir: str | os.PathLike[str], request_id: str, wait_s: float,
                    poll_s: float) -> dict[str, Any] | None:
    """Poll for the result of request ``request_id`` for up to ``wait_s`` seconds; None if none came."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        res = read_result(run_dir, request_id)
        if res is not None:
            return res
        time.sleep(poll_s)
    return None


def announce_request_handler(extra_status: dict[str, Any]) -> None:
    """Mark a status document as written by a collector that answers snapshot requests itself."""
    extra_status[REQUEST_HANDLER_KEY] = {"enabled": True}


def training_is_live(status: Mapping[str, Any] | None, now: float, *, host: str | None = None,
                     alive: Callable[[int], bool] = rf.pid_alive, stale_s: float = LIVE_STATUS_SECONDS) -> bool:
    """Pure given ``alive``: the status says training/evaluating, was updated within ``stale_s`` and, on
    this host, its process still exists."""
    if not isinstance(status, Mapping) or status.get("state") not in (rf.RunState.TRAINING.value, rf.RunState.EVALUATING.value):
        return False
    updated = status.get("updated_at")
    if not isinstance(updated, (int, float)) or now - updated > stale_s:
        return False
    pid = status.get("pid")
    if status.get("host") == (host or socket.gethostname()) and isinstance(pid, int):
        return alive(pid)
    return True


def live_collector_takes_requests(status: Any, now: float) -> bool:
    """Whether the training that wrote ``status`` is alive and announced (:func:`announce_request_handler`)
    that it saves the live weights for a snapshot request at its next step."""
    return (isinstance(status, dict) and isinstance(status.get(REQUEST_HANDLER_KEY), dict)
            and bool(status[REQUEST_HANDLER_KEY].get("enabled")) and training_is_live(status, now))


# --------------------------------------------------------------------------- the Smart Monitor's lock

class AlreadyRunning(RuntimeError):
    """Another Smart Monitor holds the directory's lock (``pid`` when known)."""

    def __init__(self, base: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        hint = f"; stop it first (kill {pid})" if pid else ""
        super().__init__(f"another Smart Monitor ({who}) is already watching {base}{hint}")
        self.pid = pid


class DirLock:
    """An exclusive ``flock`` on ``control/smart_monitor.lock``; the kernel drops it when the process dies
    (even on kill -9), so a crashed monitor never blocks its restart."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.path = rf.RunPaths.of(base).smart_monitor_lock
        self.fd: int | None = None

    def acquire(self) -> None:
        """Raises AlreadyRunning when held elsewhere, OSError when this system has no ``flock``."""
        if fcntl is None:
            raise OSError(errno.ENOSYS, "the Smart Monitor's lock needs POSIX flock (not available here)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise AlreadyRunning(self.base, pid) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            finally:
                os.close(self.fd)
                self.fd = None


def _read_pid(fd: int) -> int | None:
    try:
        txt = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return None
    return int(txt) if txt.isdigit() else None


def monitor_running(base: str | os.PathLike[str]) -> int | None:
    """The pid of a Smart Monitor watching ``base`` (0 when running but pid unknown), else ``None``."""
    path = rf.RunPaths.of(base).smart_monitor_lock
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        pid = _read_pid(fd)
        os.close(fd)
        return pid or 0
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return None
