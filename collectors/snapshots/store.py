"""Snapshots of a model at interesting moments: create, list, pin, delete, prune, and "snapshot now".

Layout (under ``<run>/snapshots/``)::

    anomaly_<YYYYMMDD_HHMMSS>_<reason>/   saved on a trigger (loss spike, best model, ...)
    manual_<YYYYMMDD_HHMMSS>/             saved on request ("Snapshot now")
        model/                            the weights (save_pretrained, or a copy of a checkpoint-*)
        metadata.json                     timestamp, reason, step, loss, accuracy, triggers,
                                          loss_history, best_loss, best_loss_step
        training_status.json              the status at save time (+ where the weights came from)
        pinned.json                       present when pinned (best-model snapshots are born pinned)

A snapshot is built under a temporary name (``.tmp-snap-<pid>-<token>``) and renamed into place, so a
kill at any moment leaves either nothing or a hidden temporary directory that listings ignore and
:func:`clean_stale_temps` removes later. Deletion renames first, too. Every function taking a snapshot
name from outside (the dashboard) validates it and checks it stays inside the run directory.

Used by the in-training plugin, the standalone Smart Monitor and the dashboard's Snapshots page. Copies
of a Trainer checkpoint are made by :mod:`collectors.snapshots.from_checkpoint`, "Snapshot now" by
:mod:`collectors.snapshots.now`; the request/result files themselves belong to :mod:`collectors.control`.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from collectors import runformat as rf
from collectors.runtime import BYTES_PER_GB

TS_FORMAT = "%Y%m%d_%H%M%S"
KIND_ANOMALY = "anomaly"
KIND_MANUAL = "manual"
TMP_SNAPSHOT = rf.TMP_PREFIX + "snap-"
TMP_DELETE = rf.TMP_PREFIX + "del-"
MAX_REASON_CHARS = 80
MAX_NAME_CHARS = 200
STALE_TEMP_SECONDS = 24 * 3600
"""A temporary directory of a process that may still be alive is removed only after this long."""
METADATA_FIELDS = ("timestamp", "reason", "step", "loss", "accuracy", "triggers", "loss_history",
                   "best_loss", "best_loss_step")
_NAME_RE = re.compile(r"^(anomaly|manual)_(\d{8}_\d{6})(?:_([A-Za-z0-9._-]+))?$")
_REASON_BAD = re.compile(r"[^A-Za-z0-9._-]+")


class SnapshotError(ValueError):
    """A snapshot request that cannot be honoured (bad name, pinned, missing); the message says why."""


@dataclass
class SnapshotResult:
    """The outcome of one attempt to save a snapshot.

    Attributes:
        ok: the snapshot exists now.
        name: its directory name ('' when not saved).
        path: its path (None when not saved).
        skipped: it was deliberately not saved (low disk, no checkpoint yet); ``error`` says why.
        error: what went wrong, in words.
        pending: queued on the background writer (``ok`` means "accepted"; the outcome is recorded
            when the write finishes, a failure as a ``snapshot_skipped`` alert).
    """

    ok: bool
    name: str = ""
    path: Path | None = None
    skipped: bool = False
    error: str | None = None
    pending: bool = False


@dataclass
class SnapshotInfo:
    """One listed snapshot (complete by construction; ``problem`` is set when its metadata is unreadable)."""

    name: str
    path: Path
    kind: str
    timestamp: str
    created: float
    reason: str
    step: int | None
    loss: float | None
    accuracy: float | None
    pinned: bool
    size_bytes: int | None
    metadata: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    mtime: float = 0.0
    """When it was completed (orders snapshots named within the same second)."""

    def to_row(self) -> dict[str, Any]:
        """Plain data for a table (the dashboard's history)."""
        return {"name": self.name, "kind": self.kind, "timestamp": self.timestamp, "created": self.created,
                "reason": self.reason, "step": self.step, "loss": self.loss, "accuracy": self.accuracy,
                "pinned": self.pinned, "size_bytes": self.size_bytes, "problem": self.problem}


# --------------------------------------------------------------------------- names (pure)

def format_ts(now: float) -> str:
    """``YYYYMMDD_HHMMSS`` in local time, as in the guide's snapshot names."""
    return time.strftime(TS_FORMAT, time.localtime(now))


def sanitize_reason(reason: str) -> str:
    """A reason safe inside a directory name: letters, digits, ``.``, ``_``, ``-`` only; bounded length."""
    clean = _REASON_BAD.sub("_", str(reason)).strip("._-")
    return clean[:MAX_REASON_CHARS] or "snapshot"


def snapshot_name(kind: str, ts: str, reason: str | None = None) -> str:
    """``anomaly_<ts>_<reason>`` or ``manual_<ts>`` (pure).

    Raises:
        ValueError: unknown ``kind`` (allowed: anomaly, manual).
    """
    if kind == KIND_ANOMALY:
        return f"{rf.ANOMALY_SNAPSHOT_PREFIX}{ts}_{sanitize_reason(reason or 'anomaly')}"
    if kind == KIND_MANUAL:
        return f"{rf.MANUAL_SNAPSHOT_PREFIX}{ts}"
    raise ValueError(f"snapshot kind must be {KIND_ANOMALY!r} or {KIND_MANUAL!r}; got {kind!r}")


def parse_snapshot_name(name: str) -> tuple[str, str, str] | None:
    """``(kind, timestamp, rest)`` for a snapshot directory name, ``None`` for anything else."""
    m = _NAME_RE.match(name) if isinstance(name, str) and len(name) <= MAX_NAME_CHARS else None
    if m is None:
        return None
    return m.group(1), m.group(2), m.group(3) or ""


def validate_snapshot_name(name: Any) -> str:
    """Return ``name`` if it can only be a snapshot directory directly under ``snapshots/``.

    Raises:
        SnapshotError: when it contains a path separator, is hidden/temporary, or is not a snapshot name.
    """
    if not isinstance(name, str) or not name:
        raise SnapshotError(f"a snapshot name must be a non-empty string; got {name!r}")
    if "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
        raise SnapshotError(f"invalid snapshot name {name!r}: it must not contain a path")
    if name.startswith("."):
        raise SnapshotError(f"invalid snapshot name {name!r}: hidden and temporary names are not snapshots")
    if parse_snapshot_name(name) is None:
        raise SnapshotError(f"invalid snapshot name {name!r}: expected anomaly_YYYYMMDD_HHMMSS_<reason> "
                            "or manual_YYYYMMDD_HHMMSS")
    return name


def resolve_snapshot(run_dir: str | os.PathLike[str], name: Any, *, must_exist: bool = True) -> Path:
    """The path of snapshot ``name`` after validating it and checking it stays inside the run directory.

    Raises:
        SnapshotError: invalid name, a path escaping the run directory (symlink), or missing snapshot.
    """
    validate_snapshot_name(name)
    snaps = rf.RunPaths.of(run_dir).snapshots_dir
    path = snaps / name
    if not rf.is_within(snaps, path) or path.resolve().parent != snaps.resolve():
        raise SnapshotError(f"snapshot {name!r} points outside {snaps}")
    if must_exist and not path.is_dir():
        raise SnapshotError(f"no snapshot named {name!r} in {snaps}")
    return path


# --------------------------------------------------------------------------- metadata (pure)

def build_metadata(*, timestamp: str, reason: str, step: int | None, loss: float | None, accuracy: float | None,
                   triggers: Sequence[str], loss_history: Sequence[float], best_loss: float | None,
                   best_loss_step: int | None) -> dict[str, Any]:
    """``metadata.json``'s document: exactly the nine fields of the Smart Monitor guide."""
    return {"timestamp": timestamp, "reason": reason, "step": step, "loss": loss, "accuracy": accuracy,
            "triggers": list(triggers), "loss_history": list(loss_history), "best_loss": best_loss,
            "best_loss_step": best_loss_step}


# --------------------------------------------------------------------------- creating

def free_gb(path: Path) -> float | None:
    """Free disk space (GB) on the filesystem holding ``path`` or its nearest existing parent."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free / BYTES_PER_GB
    except OSError:
        return None


def create_snapshot(run_dir: str | os.PathLike[str], *, kind: str, reason: str | None, metadata: Mapping[str, Any],
                    status: Mapping[str, Any] | None, write_model: Callable[[Path], Any], pinned: bool = False,
                    pinned_by: str = "best_model", min_free_gb: float = 0.0, now: float | None = None) -> SnapshotResult:
    """Build a snapshot under a temporary name and rename it into place; never leaves a partial one visible.

    Args:
        run_dir: the run directory (``snapshots/`` is created in it).
        kind: ``"anomaly"`` or ``"manual"``.
        reason: the trigger's reason (``loss_spike_37.8pct``); ignored for manual snapshots.
        metadata: the ``metadata.json`` document (see :func:`build_metadata`).
        status: the training status at save time (``training_status.json``); ``None`` writes ``{}``.
        write_model: called with the empty ``model/`` directory; writes the weights there.
        pinned: create it pinned (best-model snapshots).
        min_free_gb: skip (``skipped=True``) when less disk than this is free.
        now: the time for the name (default now).

    Returns:
        A :class:`SnapshotResult`; errors are returned, not raised, so a training never stops on one.
    """
    now = time.time() if now is None else now
    snaps = rf.RunPaths.of(run_dir).snapshots_dir
    free = free_gb(snaps)
    if min_free_gb > 0 and free is not None and free < min_free_gb:
        return SnapshotResult(False, skipped=True,
                              error=f"only {free:.2f} GB free on the disk of {snaps} (minimum {min_free_gb:g} GB): snapshot skipped")
    tmp = snaps / f"{TMP_SNAPSHOT}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        snaps.mkdir(parents=True, exist_ok=True)
        model_dir = tmp / rf.SNAPSHOT_MODEL_DIR
        model_dir.mkdir(parents=True)
        write_model(model_dir)
        rf.write_json_atomic(tmp / rf.SNAPSHOT_STATUS, dict(status or {}))
        if pinned:
            rf.write_json_atomic(tmp / rf.SNAPSHOT_PIN, {"pinned": True, "by": pinned_by, "at": now})
        # metadata last: a directory with metadata.json was written completely
        rf.write_json_atomic(tmp / rf.SNAPSHOT_METADATA, dict(metadata))
        final = _rename_unique(tmp, snaps, snapshot_name(kind, format_ts(now), reason))
    except Exception as exc:  # noqa: BLE001 - reported to the caller as data, never raised into training
        shutil.rmtree(tmp, ignore_errors=True)
        return SnapshotResult(False, error=f"snapshot failed: {type(exc).__name__}: {exc}")
    return SnapshotResult(True, final.name, final)


def _rename_unique(tmp: Path, snaps: Path, base: str) -> Path:
    """Rename ``tmp`` to ``base``, or ``base_2``, ``base_3``... when a snapshot of that name exists already."""
    for n in range(1, 1000):
        target = snaps / (base if n == 1 else f"{base}_{n}")
        if target.exists():
            continue
        try:
            os.rename(tmp, target)
            return target
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    raise OSError(f"too many snapshots named {base} in the same second")


# --------------------------------------------------------------------------- listing

def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def read_snapshot(path: Path, *, with_size: bool = True) -> SnapshotInfo | None:
    """Describe one snapshot directory; ``None`` when ``path`` is not a snapshot name."""
    parsed = parse_snapshot_name(path.name)
    if parsed is None or not path.is_dir():
        return None
    kind, ts, rest = parsed
    meta, problem = rf.read_json(path / rf.SNAPSHOT_METADATA)
    if not isinstance(meta, dict):
        meta, problem = {}, problem or "metadata.json is not a JSON object"
    try:
        created = time.mktime(time.strptime(ts, TS_FORMAT))
    except ValueError:
        created = path.stat().st_mtime
    def num(key: str) -> Any:
        v = meta.get(key)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    step = num("step")
    return SnapshotInfo(
        name=path.name, path=path, kind=kind, timestamp=ts, created=created,
        reason=str(meta.get("reason") or (rest if kind == KIND_ANOMALY else "manual")),
        step=int(step) if step is not None else None, loss=num("loss"), accuracy=num("accuracy"),
        pinned=(path / rf.SNAPSHOT_PIN).is_file(), size_bytes=dir_size(path) if with_size else None,
        metadata=meta, problem=problem, mtime=_mtime(path / rf.SNAPSHOT_METADATA))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def order_key(info: SnapshotInfo) -> tuple[str, float, str]:
    """Newest-last ordering: name timestamp, then completion time (``_2`` after the first of a second)."""
    return (info.timestamp, info.mtime, info.name)


def list_snapshots(run_dir: str | os.PathLike[str], *, with_size: bool = True) -> list[SnapshotInfo]:
    """The snapshots of a run, newest first. Temporary (in-progress, being deleted) directories are
    never listed; a missing ``snapshots/`` gives an empty list."""
    snaps = rf.RunPaths.of(run_dir).snapshots_dir
    try:
        entries = list(os.scandir(snaps))
    except OSError:
        return []
    out = []
    for e in entries:
        if e.name.startswith(".") or not e.is_dir(follow_symlinks=False):
            continue
        info = read_snapshot(Path(e.path), with_size=with_size)
        if info is not None:
            out.append(info)
    out.sort(key=order_key, reverse=True)
    return out


# --------------------------------------------------------------------------- pin / delete / prune

def set_pinned(run_dir: str | os.PathLike[str], name: Any, pinned: bool, *, by: str = "user") -> SnapshotInfo:
    """Pin or unpin a snapshot (pinned ones are never pruned or deleted).

    Raises:
        SnapshotError: invalid or unknown name.
    """
    path = resolve_snapshot(run_dir, name)
    marker = path / rf.SNAPSHOT_PIN
    if pinned:
        rf.write_json_atomic(marker, {"pinned": True, "by": by, "at": time.time()})
    else:
        try:
            marker.unlink()
        except FileNotFoundError:
            pass
    info = read_snapshot(path, with_size=False)
    assert info is not None
    return info


def delete_snapshot(run_dir: str | os.PathLike[str], name: Any) -> None:
    """Delete a snapshot; a pinned one is refused. The directory is renamed to a temporary name first,
    so it disappears from listings at once and a crash mid-delete never shows half a snapshot.

    Raises:
        SnapshotError: invalid/unknown name, or the snapshot is pinned (unpin it first).
    """
    path = resolve_snapshot(run_dir, name)
    if (path / rf.SNAPSHOT_PIN).is_file():
        raise SnapshotError(f"snapshot {name!r} is pinned: unpin it before deleting")
    doomed = path.parent / f"{TMP_DELETE}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot named {name!r}") from None
    shutil.rmtree(doomed, ignore_errors=True)


def plan_prune(infos: Iterable[SnapshotInfo], keep_last: int, max_age_days: float | None, now: float) -> list[str]:
    """Names to remove (pure): unpinned anomaly snapshots beyond the newest ``keep_last`` (0 keeps all)
    or older than ``max_age_days``. Manual and pinned snapshots are never pruned."""
    candidates = sorted((i for i in infos if i.kind == KIND_ANOMALY and not i.pinned), key=order_key, reverse=True)
    out = []
    for rank, info in enumerate(candidates):
        too_many = keep_last > 0 and rank >= keep_last
        too_old = max_age_days is not None and now - info.created > max_age_days * 86400
        if too_many or too_old:
            out.append(info.name)
    return out


def prune_snapshots(run_dir: str | os.PathLike[str], keep_last: int, max_age_days: float | None = None,
                    now: float | None = None) -> list[str]:
    """Apply :func:`plan_prune`; returns the names removed."""
    now = time.time() if now is None else now
    removed = []
    for name in plan_prune(list_snapshots(run_dir, with_size=False), keep_last, max_age_days, now):
        try:
            delete_snapshot(run_dir, name)
            removed.append(name)
        except SnapshotError:
            pass
    return removed


def clean_stale_temps(run_dir: str | os.PathLike[str], now: float | None = None) -> list[str]:
    """Remove temporary snapshot directories left by killed processes; returns their names.

    A ``.tmp-snap-<pid>-*`` directory whose process is gone is removed at once; one whose pid is alive
    (maybe reused) only after :data:`STALE_TEMP_SECONDS`. ``.tmp-del-*`` leftovers always go.
    """
    now = time.time() if now is None else now
    snaps = rf.RunPaths.of(run_dir).snapshots_dir
    removed = []
    try:
        entries = list(os.scandir(snaps))
    except OSError:
        return removed
    for e in entries:
        if not e.name.startswith(rf.TMP_PREFIX) or not e.is_dir(follow_symlinks=False):
            continue
        stale = e.name.startswith(TMP_DELETE)
        if e.name.startswith(TMP_SNAPSHOT):
            pid_txt = e.name[len(TMP_SNAPSHOT):].split("-", 1)[0]
            try:
                age = now - e.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if pid_txt.isdigit() and int(pid_txt) == os.getpid():
                stale = age > STALE_TEMP_SECONDS
            else:
                stale = not (pid_txt.isdigit() and rf.pid_alive(int(pid_txt))) or age > STALE_TEMP_SECONDS
        if stale:
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(e.name)
    return removed
