"""The dashboard's live view of a base directory: which runs exist and what each one holds.

A watchdog observer (inotify, or polling with ``--poll``) only marks paths dirty; reading happens when a
callback asks, through the tailers of :mod:`collectors.runformat`, which consume only complete lines and
detect truncation or replacement. Each run keeps its metrics as compact columns (``array('d')``) so a
run of a million values costs a few tens of MB, and a ``version`` that changes only when something new
was read, so an unchanged run costs the browser's poll no re-render.
"""
from __future__ import annotations

import math
import os
import threading
import time
import weakref
from array import array
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from collectors import runformat as rf

RESCAN_INTERVAL_S = 5.0
"""Even without file events, runs are rescanned this often (events can be lost on network filesystems)."""
NUMERIC_SKIP = frozenset({"v", "kind", "step", "time"})
"""Record fields that are not metric series."""
BASE_RUN_ID = "."
"""Run id of a base directory that is itself a run."""


@dataclass
class Series:
    """One metric of one kind (train or eval) as parallel columns, in file order."""

    steps: array = field(default_factory=lambda: array("d"))
    values: array = field(default_factory=lambda: array("d"))
    times: array = field(default_factory=lambda: array("d"))
    sorted_steps: bool = True

    def append(self, step: float, value: float, t: float) -> None:
        if self.steps and step < self.steps[-1]:
            self.sorted_steps = False
        self.steps.append(step)
        self.values.append(value)
        self.times.append(t)

    def extend(self, steps: array, values: array, times: array, ascending: bool) -> None:
        """Append columns at once (the fast path for runs of same-shaped records); ``ascending`` says
        whether ``steps`` itself is sorted (computed once per group by the caller)."""
        if len(steps) and (not ascending or (self.steps and steps[0] < self.steps[-1])):
            self.sorted_steps = False
        self.steps.extend(steps)
        self.values.extend(values)
        self.times.extend(times)

    def __len__(self) -> int:
        return len(self.steps)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) as numpy arrays sorted by step (a resumed run may go back in steps)."""
        x = np.frombuffer(self.steps, dtype=np.float64) if self.steps else np.empty(0)
        y = np.frombuffer(self.values, dtype=np.float64) if self.values else np.empty(0)
        if not self.sorted_steps:
            order = np.argsort(x, kind="stable")
            return x[order], y[order]
        return x.copy(), y.copy()


def series_key(kind: str, name: str) -> str:
    """The key of a series in :attr:`RunData.series`: ``"train/loss"``, ``"eval/eval_loss"``."""
    return f"{kind}/{name}"


class RunData:
    """Everything read so far from one run directory.

    Attributes:
        run_id: the run's id in the picker (path relative to the base dir, or ``"."``).
        version: increases whenever newly read data changes anything shown.
        status: the last status document read successfully (``None`` before any).
        status_problem: why the status file could not be read just now (``None`` when fine).
        series: ``"kind/metric"`` -> :class:`Series`.
        bad_lines / unknown_lines: malformed and unknown-kind lines skipped in metrics.jsonl.
    """

    def __init__(self, run_id: str, root: Path) -> None:
        self.run_id = run_id
        self.paths = rf.RunPaths(root)
        self.version = 0
        self.status: dict[str, Any] | None = None
        self.status_problem: str | None = None
        self.series: dict[str, Series] = {}
        self.records_read = 0
        self._metrics = rf.JsonlTailer(self.paths.metrics)
        self._status_sig: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    @property
    def bad_lines(self) -> int:
        return self._metrics.bad_lines

    @property
    def unknown_lines(self) -> int:
        return self._metrics.unknown_lines

    def refresh(self) -> bool:
        """Read whatever is new on disk; True when something changed."""
        with self._lock:
            changed = self._refresh_status()
            records, reset = self._metrics.poll()
            if reset:
                self.series.clear()
                self.records_read = 0
                changed = True
            if records:
                self._ingest(records)
                changed = True
            if changed:
                self.version += 1
            return changed

    def _refresh_status(self) -> bool:
        try:
            st = os.stat(self.paths.status)
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            sig = None
        if sig == self._status_sig and sig is not None:
            return False
        self._status_sig = sig
        doc, problem = rf.read_json(self.paths.status)
        if doc is not None and not isinstance(doc, dict):
            doc, problem = None, f"{self.paths.status} does not hold a JSON object"
        changed = problem != self.status_problem or (doc is not None and doc != self.status)
        self.status_problem = problem if sig is not None else None
        if doc is not None:
            self.status = doc
        return changed

    def _ingest(self, records: list[dict[str, Any]]) -> None:
        """Append records to the columns, a run of same-shaped records at a time.

        Trainings log the same keys every step, so consecutive records usually share a shape; each such
        run becomes one ``array('d', ...)`` extension per metric (C speed) instead of a Python loop per
        value. A run holding something that is not a number falls back to the per-record path.
        """
        i, n = 0, len(records)
        while i < n:
            first = records[i]
            shape = (first.get("kind"), tuple(first))
            j = i + 1
            while j < n and records[j].get("kind") == shape[0] and tuple(records[j]) == shape[1]:
                j += 1
            group = records[i:j]
            if not self._ingest_group(shape[0], first, group):
                for rec in group:
                    self._ingest_one(rec)
            self.records_read += len(group)
            i = j

    def _ingest_group(self, kind: Any, first: dict[str, Any], group: list[dict[str, Any]]) -> bool:
        if kind not in ("train", "eval"):
            return True
        try:
            steps = array("d", map(itemgetter("step"), group))
            times = array("d", (t if isinstance(t, (int, float)) else math.nan for t in map(itemgetter("time"), group))) \
                if "time" in first else array("d", [math.nan]) * len(group)
            columns = {name: array("d", map(itemgetter(name), group)) for name, value in first.items()
                       if name not in NUMERIC_SKIP and isinstance(value, (int, float)) and not isinstance(value, bool)}
        except (TypeError, KeyError):
            return False
        if any(isinstance(r["step"], bool) for r in (group[0], group[-1])):
            return False
        arr = np.frombuffer(steps, dtype=np.float64)
        ascending = bool(len(arr) < 2 or np.all(arr[1:] >= arr[:-1]))
        for name, values in columns.items():
            key = f"{kind}/{name}"
            s = self.series.get(key)
            if s is None:
                s = self.series[key] = Series()
            s.extend(steps, values, times, ascending)
        return True

    def _ingest_one(self, rec: dict[str, Any]) -> None:
        kind = rec.get("kind")
        if kind not in ("train", "eval"):
            return
        step = rec.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            return
        t = rec.get("time")
        t = float(t) if isinstance(t, (int, float)) else math.nan
        for name, value in rec.items():
            if name in NUMERIC_SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            key = f"{kind}/{name}"
            s = self.series.get(key)
            if s is None:
                s = self.series[key] = Series()
            s.append(float(step), float(value), t)

    def series_names(self) -> list[str]:
        return sorted(self.series)

    def last_update(self) -> float | None:
        """Unix time of the latest data: the status's ``updated_at`` or the metrics file's mtime."""
        if self.status and isinstance(self.status.get("updated_at"), (int, float)):
            return float(self.status["updated_at"])
        try:
            return os.stat(self.paths.metrics).st_mtime
        except OSError:
            return None


class _DirtyHandler:
    """watchdog handler: marks the run a changed path belongs to as dirty, nothing more."""

    def __init__(self, store: "RunStore") -> None:
        self.store = store

    def dispatch(self, event: Any) -> None:
        self.store.mark_dirty(getattr(event, "src_path", ""), getattr(event, "dest_path", ""))


class RunStore:
    """All runs under one base directory, kept current by file events and on-demand reading.

    Args:
        base_dir: a run directory, or a root with run directories one level down.
        poll: use watchdog's polling observer (network filesystems, containers without inotify).
        watch: start a watchdog observer at all (tests of the pure parts pass False).
    """

    def __init__(self, base_dir: str | os.PathLike[str], *, poll: bool = False, watch: bool = True) -> None:
        self.base = Path(base_dir).expanduser().resolve()
        self.poll = poll
        self._runs: dict[str, RunData] = {}
        self._run_ids: list[str] = []
        self._dirty_all = True
        self._dirty: set[str] = set()
        self._last_scan = 0.0
        self._lock = threading.Lock()
        self._observer: Any = None
        self.watch_problem: str | None = None
        _STORES.add(self)
        if watch:
            self._start_observer()

    # ------------------------------------------------------------------ watching
    def _start_observer(self) -> None:
        try:
            if self.poll:
                from watchdog.observers.polling import PollingObserver as Observer
            else:
                from watchdog.observers import Observer
            self.base.mkdir(parents=True, exist_ok=True)
            obs = Observer(timeout=0.5) if self.poll else Observer()
            obs.schedule(_DirtyHandler(self), str(self.base), recursive=True)
            obs.daemon = True
            obs.start()
            self._observer = obs
        except Exception as exc:  # noqa: BLE001 - fall back to rescanning on every request
            self.watch_problem = f"file watching unavailable ({type(exc).__name__}: {exc}); checking files on each refresh"
            self._observer = None

    def _after_fork(self) -> None:
        """In a forked child (Dash's background callbacks, e.g. "Snapshot now", run in one) the lock may have
        been copied while another thread held it, and the observer thread does not exist: start clean."""
        self._lock = threading.Lock()
        self._observer = None

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def mark_dirty(self, *paths: str) -> None:
        """Called from the watchdog thread: remember which run changed (or that the run list may have)."""
        with self._lock:
            for p in paths:
                if not p:
                    continue
                try:
                    rel = Path(p).resolve().relative_to(self.base)
                except (ValueError, OSError):
                    continue
                parts = rel.parts
                if not parts or parts[0] in (rf.STATUS_DIR, rf.LOGS_DIR, rf.SNAPSHOTS_DIR, rf.CONTROL_DIR):
                    self._dirty.add(BASE_RUN_ID)
                else:
                    self._dirty.add(parts[0])
                    if len(parts) <= 2:
                        self._dirty_all = True  # a new run dir or its status/logs dir appeared

    # ------------------------------------------------------------------ reading
    def run_ids(self) -> list[str]:
        """Ids of the runs under the base dir, rescanned when the tree changed (or every few seconds)."""
        now = time.monotonic()
        with self._lock:
            rescan = self._dirty_all or self._observer is None or now - self._last_scan > RESCAN_INTERVAL_S
            self._dirty_all = False
        if rescan:
            self._last_scan = now
            roots = rf.discover_runs(self.base)
            ids = [BASE_RUN_ID if r == self.base else r.relative_to(self.base).as_posix() for r in roots]
            with self._lock:
                self._run_ids = ids
        return list(self._run_ids)

    def get(self, run_id: str | None) -> RunData | None:
        """The run ``run_id``, brought up to date; None when it is not a run under the base dir.

        Only ids produced by :meth:`run_ids` are accepted, so nothing a browser sends can point outside.
        """
        if not run_id or run_id not in self.run_ids():
            return None
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                root = self.base if run_id == BASE_RUN_ID else self.base / run_id
                if not rf.is_within(self.base, root):
                    return None
                run = self._runs[run_id] = RunData(run_id, root)
                dirty = True
            else:
                dirty = run_id in self._dirty or self._observer is None or run.version == 0
            self._dirty.discard(run_id)
        if dirty or time.monotonic() - getattr(run, "_checked", 0.0) > RESCAN_INTERVAL_S:
            run._checked = time.monotonic()  # type: ignore[attr-defined]
            run.refresh()
        return run

    def warm(self) -> threading.Thread:
        """Read the most recent run in a background thread, so a large history is parsed before the first
        page asks for it (a browser that asks sooner just waits on the same run's lock)."""
        t = threading.Thread(target=lambda: self.get(self.default_run()), name="trainboard-warm", daemon=True)
        t.start()
        return t

    def default_run(self) -> str | None:
        """The run to show first: the most recently updated one."""
        ids = self.run_ids()
        if not ids:
            return None
        def mtime(rid: str) -> float:
            root = self.base if rid == BASE_RUN_ID else self.base / rid
            best = 0.0
            for p in (rf.RunPaths(root).status, rf.RunPaths(root).metrics):
                try:
                    best = max(best, p.stat().st_mtime)
                except OSError:
                    pass
            return best
        return max(ids, key=mtime)


_STORES: "weakref.WeakSet[RunStore]" = weakref.WeakSet()


def _reset_stores_after_fork() -> None:
    for store in list(_STORES):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_stores_after_fork)
