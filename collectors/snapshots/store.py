"""Snapshots of a model at interesting moments: create, list, pin, delete, prune, and "snapshot now".

Layout (under ``<run>/snapshots/``)::

    anomaly_<YYYYMMDD_HHMMSS>_<reason>/   saved on a trigger (loss spike, best model, ...)
    manual_<YYYYMMDD_HHMMSS>/             saved on request ("Snapshot now")
        model/                            the weights (save_pretrained, or a copy of a checkpoint-*);
                                          absent when the live weights were not worth saving (NaN)
        last_good/                        the last good state from before the fault (anomaly snapshots):
                                          a hard-linked checkpoint-* or the rolling CPU copy, loadable
                                          with from_pretrained; rng_state.pth beside it
        metadata.json                     the guide's nine fields + the recovery fields (META_* below)
        training_status.json              the status at save time (+ where the weights came from)
        pinned.json                       present when a person pinned it (never pruned)

``control/snapshot_retention.json`` holds the retention the collector applies (for the Snapshots page).

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
import math
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
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
# metadata.json keys beyond the guide's nine (issue 11); this module owns them, the recovery code reads them
META_WEIGHTS_STEP = "weights_step"
"""int | None: the step of the weights in ``model/`` (None when there is no ``model/``)."""
META_LAST_GOOD = "last_good"
"""``{"step", "source", "path", "checkpoint"}`` (see :func:`last_good_record`) or None."""
META_LAST_GOOD_MISSING = "last_good_missing"
"""str | None: why an anomaly snapshot holds no last good state, in words."""
META_ONSET_STEP = "onset_step"
"""int | None: the first step of the condition that fired (a rule with patience fires later)."""
META_SUSPECT_STEPS = "suspect_steps"
"""``[first, last]`` or None: the steps that may carry the damage, last good step + 1 .. trigger step."""
META_RNG_STATE = "rng_state"
"""str | None: the RNG state file, relative to the snapshot (``last_good/rng_state.pth``)."""
META_OPTIMIZER_STATE = "optimizer_state"
"""str | None: the optimizer state file, relative to the snapshot (only when asked: ``save_optimizer``)."""
META_DATA_POSITION = "data_position"
"""``{"epoch", "step_in_epoch", "sampler_seed"}`` of the last good state (of ``weights_step`` without one)."""
META_ROLE = "role"
"""``best_model`` / ``anomaly`` / ``nan`` / ``manual``: which retention rule keeps the snapshot."""
RECOVERY_FIELDS = (META_WEIGHTS_STEP, META_LAST_GOOD, META_LAST_GOOD_MISSING, META_ONSET_STEP, META_SUSPECT_STEPS,
                   META_RNG_STATE, META_OPTIMIZER_STATE, META_DATA_POSITION)
LAST_GOOD_DIR = "last_good"
LAST_GOOD_SOURCES = ("checkpoint", "rolling")
RNG_STATE_FILE = "rng_state.pth"
OPTIMIZER_STATE_FILE = "optimizer.pt"
RETENTION_FILE = rf.SNAPSHOT_RETENTION_FILE
"""``control/snapshot_retention.json``: the policy the collector applies, so the page shows the same plan
(outside ``snapshots/``, which holds snapshot directories only)."""
ROLE_BEST, ROLE_ANOMALY, ROLE_NAN, ROLE_MANUAL = "best_model", "anomaly", "nan", "manual"
BEST_REASON_PREFIX = "best_model_loss_"

# retention defaults (issue 11)
KEEP_BEST = 3
"""Best-model snapshots kept, by their metric (the best always)."""
BUDGET_FRACTION_OF_FREE = 0.25
BUDGET_CAP_GB = 50.0
"""Default ``max_total_gb``: min(50 GB, 25 % of the disk free when the collector starts)."""
FLOOR_SNAPSHOT_MULTIPLE = 2.0
"""A snapshot is skipped when writing it would leave less than max(min_free_gb, 2 × its size) free."""

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
    role: str = ""
    """Which retention rule applies: best_model, anomaly, nan or manual (see :data:`META_ROLE`); told by
    the kind, reason and metadata when not given."""
    metric: float | None = None
    """A best-model snapshot's loss (what ``keep_best`` ranks on)."""

    def __post_init__(self) -> None:
        if not self.role:
            self.role = snapshot_role(self.kind, self.reason, self.metadata)
        if self.role == ROLE_BEST and self.metric is None:
            self.metric = self.loss

    def to_row(self) -> dict[str, Any]:
        """Plain data for a table (the dashboard's history)."""
        return {"name": self.name, "kind": self.kind, "timestamp": self.timestamp, "created": self.created,
                "reason": self.reason, "step": self.step, "loss": self.loss, "accuracy": self.accuracy,
                "pinned": self.pinned, "size_bytes": self.size_bytes, "problem": self.problem, "role": self.role,
                "weights_step": self.metadata.get(META_WEIGHTS_STEP),
                "last_good_step": (self.metadata.get(META_LAST_GOOD) or {}).get("step")
                if isinstance(self.metadata.get(META_LAST_GOOD), dict) else None}


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
                   best_loss_step: int | None, **recovery: Any) -> dict[str, Any]:
    """``metadata.json``'s document: the nine fields of the Smart Monitor guide, then the recovery fields
    (:data:`RECOVERY_FIELDS`, each ``None`` unless given; ``role`` too).

    Raises:
        ValueError: an unknown keyword (the allowed ones are listed).
    """
    bad = sorted(set(recovery) - set(RECOVERY_FIELDS) - {META_ROLE})
    if bad:
        raise ValueError(f"unknown metadata field {bad[0]!r}; allowed: {', '.join((*RECOVERY_FIELDS, META_ROLE))}")
    doc: dict[str, Any] = {"timestamp": timestamp, "reason": reason, "step": step, "loss": loss, "accuracy": accuracy,
                           "triggers": list(triggers), "loss_history": list(loss_history), "best_loss": best_loss,
                           "best_loss_step": best_loss_step}
    for key in RECOVERY_FIELDS:
        doc[key] = recovery.get(key)
    if doc[META_DATA_POSITION] is None:
        doc[META_DATA_POSITION] = data_position()
    if META_ROLE in recovery:
        doc[META_ROLE] = recovery[META_ROLE]
    return doc


def data_position(epoch: float | None = None, step_in_epoch: int | None = None,
                  sampler_seed: int | None = None) -> dict[str, Any]:
    """``metadata.json``'s ``data_position`` (pure)."""
    return {"epoch": epoch, "step_in_epoch": step_in_epoch, "sampler_seed": sampler_seed}


def last_good_record(step: int, source: str, checkpoint: str | None = None) -> dict[str, Any]:
    """``metadata.json``'s ``last_good`` (pure).

    Raises:
        ValueError: ``source`` not one of :data:`LAST_GOOD_SOURCES`.
    """
    if source not in LAST_GOOD_SOURCES:
        raise ValueError(f"last_good source must be one of {', '.join(LAST_GOOD_SOURCES)}; got {source!r}")
    return {"step": int(step), "source": source, "path": LAST_GOOD_DIR, "checkpoint": checkpoint}


def suspect_range(last_good_step: int | None, trigger_step: int) -> list[int] | None:
    """``[last good + 1, trigger]``: the steps that may have done the damage (pure); None without a last good."""
    if last_good_step is None:
        return None
    return [int(last_good_step) + 1, max(int(trigger_step), int(last_good_step) + 1)]


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


def floor_problem(free_bytes: int | None, size_bytes: int, min_free_gb: float) -> str | None:
    """Why a snapshot of ``size_bytes`` must be skipped to protect the disk, or None (pure).

    Writing it must leave at least max(``min_free_gb``, 2 × its size) free, so the training's own
    ``save_steps`` checkpoint (about one snapshot's size, more with the optimizer) still fits.
    """
    if free_bytes is None:
        return None
    floor = max(min_free_gb * BYTES_PER_GB, FLOOR_SNAPSHOT_MULTIPLE * size_bytes)
    left = free_bytes - size_bytes
    if left >= floor:
        return None
    return (f"writing it ({size_bytes / BYTES_PER_GB:.3g} GB) would leave {max(left, 0) / BYTES_PER_GB:.3g} GB free, "
            f"below the floor of {floor / BYTES_PER_GB:.3g} GB (max of min_free_gb={min_free_gb:g} and "
            f"{FLOOR_SNAPSHOT_MULTIPLE:g} x the snapshot) that keeps room for the training's own checkpoints")


def free_bytes(path: Path) -> int | None:
    """Free disk space (bytes) on the filesystem holding ``path`` or its nearest existing parent."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def create_snapshot(run_dir: str | os.PathLike[str], *, kind: str, reason: str | None, metadata: Mapping[str, Any],
                    status: Mapping[str, Any] | None, write_model: Callable[[Path], Any] | None, pinned: bool = False,
                    pinned_by: str = "user", min_free_gb: float = 0.0, now: float | None = None,
                    size_estimate: int | None = None, write_extra: Callable[[Path], Mapping[str, Any] | None] | None = None,
                    ) -> SnapshotResult:
    """Build a snapshot under a temporary name and rename it into place; never leaves a partial one visible.

    Args:
        run_dir: the run directory (``snapshots/`` is created in it).
        kind: ``"anomaly"`` or ``"manual"``.
        reason: the trigger's reason (``loss_spike_37.8pct``); ignored for manual snapshots.
        metadata: the ``metadata.json`` document (see :func:`build_metadata`).
        status: the training status at save time (``training_status.json``); ``None`` writes ``{}``.
        write_model: called with the empty ``model/`` directory; writes the weights there. ``None``:
            no ``model/`` (a NaN event: the live weights are not worth saving).
        pinned: create it pinned (by a person).
        min_free_gb: skip (``skipped=True``) when less disk than this is free.
        now: the time for the name (default now).
        size_estimate: bytes the snapshot will take; with it, the free-disk floor of :func:`floor_problem`
            applies (skip when writing would leave less than max(min_free_gb, 2 × this)).
        write_extra: called with the temporary snapshot directory after ``model/`` (writes ``last_good/``);
            returns metadata fields to merge (the last good state's step, or why it is missing).

    Returns:
        A :class:`SnapshotResult`; errors are returned, not raised, so a training never stops on one.
    """
    now = time.time() if now is None else now
    snaps = rf.RunPaths.of(run_dir).snapshots_dir
    free = free_gb(snaps)
    if min_free_gb > 0 and free is not None and free < min_free_gb:
        return SnapshotResult(False, skipped=True,
                              error=f"only {free:.3g} GB free on the disk of {snaps}, already below the floor of "
                                    f"min_free_gb={min_free_gb:g} GB that keeps room for the training's own checkpoints")
    if size_estimate is not None:
        problem = floor_problem(free_bytes(snaps), int(size_estimate), min_free_gb)
        if problem is not None:
            return SnapshotResult(False, skipped=True, error=f"low disk on {snaps}: {problem}")
    tmp = snaps / f"{TMP_SNAPSHOT}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        snaps.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        if write_model is not None:
            model_dir = tmp / rf.SNAPSHOT_MODEL_DIR
            model_dir.mkdir()
            write_model(model_dir)
        meta = dict(metadata)
        if write_extra is not None:
            meta.update(write_extra(tmp) or {})
        rf.write_json_atomic(tmp / rf.SNAPSHOT_STATUS, dict(status or {}))
        if pinned:
            rf.write_json_atomic(tmp / rf.SNAPSHOT_PIN, {"pinned": True, "by": pinned_by, "at": now})
        # metadata last: a directory with metadata.json was written completely
        rf.write_json_atomic(tmp / rf.SNAPSHOT_METADATA, meta)
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
    """Bytes of the files under ``path``, each inode once (``model/`` and ``last_good/`` linked from the
    same checkpoint take its space once)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_size
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
    reason = str(meta.get("reason") or (rest if kind == KIND_ANOMALY else "manual"))
    role = snapshot_role(kind, reason, meta)
    metric = num("loss") if role == ROLE_BEST else None
    if role == ROLE_BEST and metric is None:
        try:
            metric = float(reason[len(BEST_REASON_PREFIX):])
        except ValueError:
            metric = None
    return SnapshotInfo(
        name=path.name, path=path, kind=kind, timestamp=ts, created=created,
        reason=reason, step=int(step) if step is not None else None, loss=num("loss"), accuracy=num("accuracy"),
        pinned=is_pinned_by_person(path), size_bytes=dir_size(path) if with_size else None,
        metadata=meta, problem=problem, mtime=_mtime(path / rf.SNAPSHOT_METADATA), role=role, metric=metric)


def snapshot_role(kind: str, reason: str, meta: Mapping[str, Any]) -> str:
    """Which retention rule keeps a snapshot (pure): its recorded role, else told by its kind and reason."""
    role = meta.get(META_ROLE)
    if role in (ROLE_BEST, ROLE_ANOMALY, ROLE_NAN, ROLE_MANUAL):
        return str(role)
    if kind == KIND_MANUAL:
        return ROLE_MANUAL
    return ROLE_BEST if reason.startswith(BEST_REASON_PREFIX) else ROLE_ANOMALY


def is_pinned_by_person(path: Path) -> bool:
    """A ``pinned.json`` written by a person. Older versions pinned every best-model snapshot at birth
    (``"by": "best_model"``); those are ranked by ``keep_best`` like the new ones, not kept forever."""
    marker = path / rf.SNAPSHOT_PIN
    if not marker.is_file():
        return False
    doc, _ = rf.read_json(marker)
    return not (isinstance(doc, dict) and doc.get("by") == "best_model")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def order_key(info: SnapshotInfo) -> tuple[str, float, str]:
    """Newest-last ordering: name timestamp, then completion time (``_2`` after the first of a second)."""
    return (info.timestamp, info.mtime, info.name)


LISTING_CACHE_RUNS = 256
"""Runs whose snapshot listings :func:`list_snapshots` keeps described (the least recently listed go first)."""
_listing_cache: dict[str, dict[str, tuple[tuple[Any, ...], SnapshotInfo]]] = {}
_listing_lock = threading.Lock()


def _stamp(path: str) -> tuple[Any, ...] | None:
    """What changes when a listed snapshot could read differently: the directory itself (its inode, and its
    mtime, which moves when ``pinned.json`` or ``metadata.json`` is replaced, added or removed in it) and
    ``metadata.json`` and ``pinned.json`` (inode, size and mtime: an in-place edit, or a coarse-mtime disk).
    ``None`` when the directory is gone. A snapshot's weights are written once, before it gets its name."""
    try:
        d = os.stat(path)
    except OSError:
        return None
    out: list[Any] = [d.st_dev, d.st_ino, d.st_mtime_ns]
    for name in (rf.SNAPSHOT_METADATA, rf.SNAPSHOT_PIN):
        try:
            f = os.stat(os.path.join(path, name))
            out += [f.st_ino, f.st_size, f.st_mtime_ns]
        except OSError:
            out.append(None)
    return tuple(out)


def list_snapshots(run_dir: str | os.PathLike[str], *, with_size: bool = True) -> list[SnapshotInfo]:
    """The snapshots of a run, newest first. Temporary (in-progress, being deleted) directories are
    never listed; a missing ``snapshots/`` gives an empty list.

    A snapshot already described by an earlier listing, and unchanged since (see :func:`_stamp`), is not read
    again: the training thread checks the disk budget before each snapshot, and reading every snapshot's
    metadata and walking its files cost ~0.5 ms there for only three of them. Each call returns its own
    :class:`SnapshotInfo` objects; their ``metadata`` dicts are shared with the cache and must not be changed."""
    snaps = rf.RunPaths.of(run_dir).snapshots_dir
    try:
        entries = list(os.scandir(snaps))
    except OSError:
        return []
    key = os.path.abspath(snaps)
    with _listing_lock:
        known = _listing_cache.get(key, {})
    fresh: dict[str, tuple[tuple[Any, ...], SnapshotInfo]] = {}
    out = []
    for e in entries:
        if e.name.startswith(".") or not e.is_dir(follow_symlinks=False):
            continue
        stamp = _stamp(e.path)
        hit = known.get(e.name)
        if stamp is not None and hit is not None and hit[0] == stamp and (hit[1].size_bytes is not None or not with_size):
            fresh[e.name] = hit
            out.append(replace(hit[1]))
            continue
        info = read_snapshot(Path(e.path), with_size=with_size)
        if info is None:
            continue
        if stamp is not None and stamp == _stamp(e.path):  # unchanged while it was read: safe to keep
            fresh[e.name] = (stamp, replace(info))
        out.append(info)
    with _listing_lock:
        _listing_cache.pop(key, None)
        _listing_cache[key] = fresh  # the most recently listed last
        while len(_listing_cache) > LISTING_CACHE_RUNS:
            _listing_cache.pop(next(iter(_listing_cache)))
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
    if is_pinned_by_person(path):
        raise SnapshotError(f"snapshot {name!r} is pinned: unpin it before deleting")
    doomed = path.parent / f"{TMP_DELETE}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot named {name!r}") from None
    shutil.rmtree(doomed, ignore_errors=True)


# --------------------------------------------------------------------------- retention (one planner)

CROWD_FRACTION = 0.5
"""Pinned and manual snapshots "crowd out" the budget when they take at least half of it."""


@dataclass(frozen=True)
class RetentionPolicy:
    """What retention keeps; the collector applies it, the Snapshots page shows it (``control/snapshot_retention.json``).

    Args:
        keep_best: best-model snapshots kept, ranked by their metric (default 3; 0 keeps all). The best is
            always kept.
        keep_last: anomaly snapshots kept, newest first (default 20; 0 keeps all).
        max_age_days: anomaly snapshots older than this go (default None: no limit).
        budget_bytes: total size of all snapshots (None: no budget). See :func:`resolve_budget`.
        min_free_gb: the free-disk floor's minimum (see :func:`floor_problem`).
    """

    keep_best: int = KEEP_BEST
    keep_last: int = 20
    max_age_days: float | None = None
    budget_bytes: int | None = None
    min_free_gb: float = 1.0

    def to_doc(self) -> dict[str, Any]:
        return {"keep_best": self.keep_best, "keep_last": self.keep_last, "max_age_days": self.max_age_days,
                "budget_bytes": self.budget_bytes, "min_free_gb": self.min_free_gb}

    @classmethod
    def from_doc(cls, doc: Any) -> "RetentionPolicy | None":
        """The policy in a ``retention.json`` document, None when it is not one (pure)."""
        if not isinstance(doc, Mapping):
            return None
        try:
            budget = doc.get("budget_bytes")
            age = doc.get("max_age_days")
            return cls(keep_best=int(doc.get("keep_best", KEEP_BEST)), keep_last=int(doc.get("keep_last", 20)),
                       max_age_days=float(age) if age is not None else None,
                       budget_bytes=int(budget) if budget is not None else None,
                       min_free_gb=float(doc.get("min_free_gb", 1.0)))
        except (TypeError, ValueError):
            return None


def resolve_budget(max_total_gb: float | None, free_at_start: int | None) -> int | None:
    """The snapshot budget in bytes (pure): ``max_total_gb`` when set (0: no budget), else the default
    min(:data:`BUDGET_CAP_GB`, :data:`BUDGET_FRACTION_OF_FREE` × the free disk at start)."""
    if max_total_gb is not None:
        return int(max_total_gb * BYTES_PER_GB) if max_total_gb > 0 else None
    cap = int(BUDGET_CAP_GB * BYTES_PER_GB)
    if free_at_start is None:
        return cap
    return min(cap, int(BUDGET_FRACTION_OF_FREE * free_at_start))


@dataclass
class RetentionPlan:
    """What retention does to a list of snapshots (see :func:`plan_retention`).

    Attributes:
        remove: ``(name, why)`` in the order they go.
        used_bytes: the size of every listed snapshot now.
        kept_bytes: the size of what stays.
        budget_bytes: the budget (None: none).
        pinned_bytes: the size of the snapshots retention never removes (pinned and manual ones).
        crowded: those take at least :data:`CROWD_FRACTION` of the budget.
        next_out: ``(name, when)``: what goes next, and on which event.
    """

    remove: list[tuple[str, str]]
    used_bytes: int
    kept_bytes: int
    budget_bytes: int | None
    pinned_bytes: int
    crowded: bool
    next_out: list[tuple[str, str]]

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.remove]


def _size(info: SnapshotInfo) -> int:
    return int(info.size_bytes or 0)


def plan_retention(infos: Iterable[SnapshotInfo], policy: RetentionPolicy, now: float,
                   protect: Iterable[str] = ()) -> RetentionPlan:
    """The one retention planner, used by the collector (to prune) and the Snapshots page (to show) (pure).

    * best-model snapshots: the ``keep_best`` lowest by their metric stay, the best always;
    * anomaly (and NaN) snapshots: the newest ``keep_last`` stay, none older than ``max_age_days``;
    * then, while the rest exceeds the budget: the oldest anomaly snapshots go, then the worst best-model
      ones (never the best);
    * pinned (by a person) and manual snapshots are never removed, but count against the budget;
    * ``protect`` (the snapshot just written) is never removed.
    """
    infos = list(infos)
    keep = set(protect)
    removed: dict[str, str] = {}
    order: list[str] = []

    def drop(info: SnapshotInfo, why: str) -> None:
        if info.name not in keep and info.name not in removed:
            removed[info.name] = why
            order.append(info.name)

    fixed = [i for i in infos if i.pinned or i.role == ROLE_MANUAL]
    anomalies = sorted((i for i in infos if not i.pinned and i.role in (ROLE_ANOMALY, ROLE_NAN)), key=order_key,
                       reverse=True)
    bests = sorted((i for i in infos if not i.pinned and i.role == ROLE_BEST),
                   key=lambda i: (i.metric if i.metric is not None else math.inf, -i.created, i.name))
    for rank, info in enumerate(anomalies):
        if policy.keep_last > 0 and rank >= policy.keep_last:
            drop(info, f"beyond keep_last={policy.keep_last}")
        elif policy.max_age_days is not None and now - info.created > policy.max_age_days * 86400:
            drop(info, f"older than max_age_days={policy.max_age_days:g}")
    for rank, info in enumerate(bests):
        if rank > 0 and policy.keep_best > 0 and rank >= policy.keep_best:
            drop(info, f"not among the keep_best={policy.keep_best} best")
    # budget: the oldest anomaly snapshots first, then the worst best models (never the best)
    evictable = [i for i in reversed(anomalies) if i.name not in removed and i.name not in keep]
    evictable += [i for i in reversed(bests[1:]) if i.name not in removed and i.name not in keep]
    used = sum(_size(i) for i in infos)
    kept = used - sum(_size(i) for i in infos if i.name in removed)
    budget = policy.budget_bytes
    if budget is not None:
        for info in evictable:
            if kept <= budget:
                break
            drop(info, f"over the budget of {budget / BYTES_PER_GB:.3g} GB")
            kept -= _size(info)
    pinned_bytes = sum(_size(i) for i in fixed)
    crowded = budget is not None and budget > 0 and pinned_bytes >= CROWD_FRACTION * budget
    next_out: list[tuple[str, str]] = []
    kept_anom = [i for i in anomalies if i.name not in removed]
    if policy.keep_last > 0 and len(kept_anom) >= policy.keep_last:
        next_out.append((kept_anom[-1].name, f"when the next anomaly snapshot is saved (keep_last={policy.keep_last})"))
    kept_best = [i for i in bests if i.name not in removed]
    if policy.keep_best > 0 and len(kept_best) >= max(policy.keep_best, 2):
        next_out.append((kept_best[-1].name, f"when a better model is saved (keep_best={policy.keep_best})"))
    if budget is not None and infos:
        typical = max(_size(i) for i in infos)
        left = [i for i in evictable if i.name not in removed]
        if left and kept + typical > budget and all(n != left[0].name for n, _ in next_out):
            next_out.append((left[0].name, "when the next snapshot would exceed the budget"))
    return RetentionPlan([(n, removed[n]) for n in order], used, kept, budget, pinned_bytes, crowded, next_out)


def budget_problem(infos: Iterable[SnapshotInfo], policy: RetentionPolicy, size_bytes: int) -> str | None:
    """Why a new snapshot of ``size_bytes`` cannot fit in the budget even after retention removes all it
    may: pinned and manual snapshots fill it (pure). None when it fits."""
    budget = policy.budget_bytes
    if budget is None:
        return None
    fixed = sum(_size(i) for i in infos if i.pinned or i.role == ROLE_MANUAL)
    if fixed + size_bytes <= budget:
        return None
    return (f"pinned and manual snapshots take {fixed / BYTES_PER_GB:.3g} GB of the {budget / BYTES_PER_GB:.3g} GB "
            f"snapshot budget (max_total_gb): no room for {size_bytes / BYTES_PER_GB:.3g} GB more; unpin or delete some")


def plan_prune(infos: Iterable[SnapshotInfo], keep_last: int, max_age_days: float | None, now: float) -> list[str]:
    """Names to remove (pure): unpinned anomaly snapshots beyond the newest ``keep_last`` (0 keeps all)
    or older than ``max_age_days``. Manual and pinned snapshots are never pruned; best-model ones are
    left alone (see :func:`plan_retention` for the full policy)."""
    return plan_retention(infos, RetentionPolicy(keep_best=0, keep_last=keep_last, max_age_days=max_age_days),
                          now).names


def prune_snapshots(run_dir: str | os.PathLike[str], keep_last: int, max_age_days: float | None = None,
                    now: float | None = None, *, policy: RetentionPolicy | None = None,
                    protect: Iterable[str] = ()) -> list[str]:
    """Apply :func:`plan_retention` (``policy``, or just ``keep_last``/``max_age_days``); returns the names removed."""
    now = time.time() if now is None else now
    policy = policy or RetentionPolicy(keep_best=0, keep_last=keep_last, max_age_days=max_age_days)
    removed = []
    infos = list_snapshots(run_dir, with_size=policy.budget_bytes is not None)
    for name in plan_retention(infos, policy, now, protect).names:
        try:
            delete_snapshot(run_dir, name)
            removed.append(name)
        except SnapshotError:
            pass
    return removed


def write_retention(run_dir: str | os.PathLike[str], policy: RetentionPolicy, **extra: Any) -> None:
    """``control/snapshot_retention.json``: the policy in force, so the Snapshots page plans with the same numbers."""
    path = Path(run_dir) / RETENTION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    rf.write_json_atomic(path, {**policy.to_doc(), **extra, "updated_at": time.time()})


def read_retention(run_dir: str | os.PathLike[str]) -> tuple[RetentionPolicy | None, dict[str, Any], str | None]:
    """``(policy, document, problem)`` from ``control/snapshot_retention.json``; a missing file is no problem."""
    path = Path(run_dir) / RETENTION_FILE
    if not path.exists():
        return None, {}, None
    doc, problem = rf.read_json(path)
    policy = RetentionPolicy.from_doc(doc)
    if policy is None:
        return None, {}, problem or f"{path.name} is not a retention document"
    return policy, dict(doc), None


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
