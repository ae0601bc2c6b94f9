"""The run model every page reads: one :class:`Run` per run, whatever wrote it.

A Trainboard run dir, an experiment dir, a plain Hugging Face ``output_dir`` and a TensorBoard event
dir are each turned into the same shape by their reader (:mod:`services.readers`): metric
:class:`Series` keyed ``"train/loss"`` / ``"eval/eval_loss"`` (the collector's record kinds and names),
a status document checked field by field (:func:`clean_status`), alerts, checkpoints, config and
results, plus a :class:`RunSummary` for the Runs table. The live/stale rule is defined here once
(:data:`STALE_AFTER_S`, :func:`run_state`) and used by every page.

Series are compact columns (``array('d')``) so a run of a million values costs a few tens of MB, and
they hold one value per step: a record whose step is not after the last one (a resumed run re-logging
from its checkpoint, a step logged twice) replaces the values from that step on, so the newest write
wins and no chart draws a line back in steps. A ``resume`` record (a training resumed into the same run
dir at step R, issue 11) goes further: every point logged after R by the earlier process is dropped at
once, duplicates or not (an eval at a step the resumed run has not reached yet included), and the
resume is kept in :attr:`Run.resumes` for the chart markers and for :func:`drop_rolled_back`, which
supersedes the rolled-back alerts the same way. Nothing here imports dash.
"""
from __future__ import annotations

import bisect
import enum
import functools
import math
import os
import threading
import time
from array import array
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from collectors import runformat as rf

STALE_AFTER_S = 120.0
"""A run that says (or seems) it is training but has written nothing for this long is stale/stopped.

The one live/stale rule: the Overview marks its cards stale after it, the Runs table says "stale" for a
status that claims training, and a run without a status file counts as training only while its files
changed within it."""
STALLED = "stalled"
"""The state of a live run that completes no step (issue 13): see :meth:`Run.stall` and docs/ranks.md."""
LIVE_STATES = frozenset({rf.RunState.TRAINING.value, rf.RunState.EVALUATING.value})
STALL_TIMES = 21
"""Recent train-record times the stall rule looks at (20 log intervals)."""
NUMERIC_SKIP = frozenset({"v", "kind", "step", "time", rf.LOSS_REPLACED, rf.LOSS_NONFINITE_STEP})
"""Record fields that are not metric series."""
SKIP_TAGS = frozenset({"epoch", "step", "total_flos", "runtime", "samples_per_second", "steps_per_second"})
"""Numbers logged alongside metrics that are bookkeeping, not curves worth comparing (Runs page)."""
METRIC_KINDS = (rf.RecordKind.TRAIN.value, rf.RecordKind.EVAL.value)
_NUMBER_TYPES = frozenset({int, float})
"""The value types that are metric numbers (``bool`` is a subclass of int but never a metric)."""


class RunKind(str, enum.Enum):
    """What wrote a run directory; every kind gives the same :class:`Run` model."""

    TRAINBOARD = "trainboard"
    EXPERIMENT = "experiment"
    HUGGINGFACE = "huggingface"
    TENSORBOARD = "tensorboard"


KIND_LABELS = {RunKind.TRAINBOARD: "Trainboard run", RunKind.EXPERIMENT: "experiment",
               RunKind.HUGGINGFACE: "Hugging Face output dir", RunKind.TENSORBOARD: "TensorBoard events"}


class Split(str, enum.Enum):
    TRAIN = "train"
    EVAL = "eval"


# --------------------------------------------------------------------------- series

@dataclass
class Series:
    """One metric of one kind (train or eval) as parallel columns, one value per step, steps ascending.

    Attributes:
        rewinds: how many times an older-or-equal step replaced the tail (a chart that extended
            incrementally must redraw when this changes).
    """

    steps: array = field(default_factory=lambda: array("d"))
    values: array = field(default_factory=lambda: array("d"))
    times: array = field(default_factory=lambda: array("d"))
    rewinds: int = 0

    def _rewind(self, step: float) -> None:
        """Drop every point at or after ``step``: the newest write of those steps is about to come."""
        i = bisect.bisect_left(self.steps, step)
        del self.steps[i:]
        del self.values[i:]
        del self.times[i:]
        self.rewinds += 1

    def append(self, step: float, value: float, t: float) -> None:
        if self.steps and step <= self.steps[-1]:
            self._rewind(step)
        self.steps.append(step)
        self.values.append(value)
        self.times.append(t)

    def extend(self, steps: array, values: array, times: array, increasing: bool) -> None:
        """Append columns at once (the fast path for runs of same-shaped records); ``increasing`` says
        whether ``steps`` itself is strictly increasing (computed once per group by the caller)."""
        if not len(steps):
            return
        if not increasing:
            for s, v, t in zip(steps, values, times):
                self.append(s, v, t)
            return
        if self.steps and steps[0] <= self.steps[-1]:
            self._rewind(steps[0])
        self.steps.extend(steps)
        self.values.extend(values)
        self.times.extend(times)

    def roll_back(self, step: float) -> int:
        """Drop every point after ``step`` (a training resumed there); returns how many were dropped."""
        i = bisect.bisect_right(self.steps, step)
        n = len(self.steps) - i
        if n:
            del self.steps[i:]
            del self.values[i:]
            del self.times[i:]
            self.rewinds += 1
        return n

    def __len__(self) -> int:
        return len(self.steps)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) as numpy arrays (copies), sorted by step."""
        x = np.frombuffer(self.steps, dtype=np.float64).copy() if self.steps else np.empty(0)
        y = np.frombuffer(self.values, dtype=np.float64).copy() if self.values else np.empty(0)
        return x, y

    def last(self) -> float | None:
        return self.values[-1] if self.values else None


@dataclass(frozen=True)
class ResumePoint:
    """Where a training resumed into this run: at ``step``, at wall time ``time``; ``previous_step`` is the
    last step the crashed (or stopped) process had reported, so steps ``step+1..previous_step`` were
    rolled back."""

    step: int
    time: float | None = None
    previous_step: int | None = None
    previous_state: str | None = None
    rolled_back: int = 0
    """Points dropped from the series when the record was read."""

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "ResumePoint | None":
        step = rec.get("step")
        if not is_number(step) or not math.isfinite(step) or step < 0:
            return None
        t = rec.get("time")
        prev = rec.get("previous_step")
        state = rec.get("previous_state")
        return cls(int(step), float(t) if is_number(t) else None,
                   int(prev) if is_number(prev) and math.isfinite(prev) else None,
                   state if isinstance(state, str) else None)


def drop_rolled_back(records: Iterable[Mapping[str, Any]], resumes: Iterable[ResumePoint]) -> list[Mapping[str, Any]]:
    """The records (alerts, samples...) that no resume superseded. Pure.

    A record is rolled back when it was written before a resume (its ``time``) at a step after the
    resume's step: the steps it describes were trained again by the resumed process. Records without a
    usable step or time are kept (nothing proves them superseded).
    """
    points = [r for r in resumes if r.time is not None]
    if not points:
        return list(records)
    out = []
    for rec in records:
        step, t = rec.get("step"), rec.get("time")
        if is_number(step) and is_number(t) and any(t < r.time and step > r.step for r in points):  # type: ignore[operator]
            continue
        out.append(rec)
    return out


def series_key(kind: str, name: str) -> str:
    """The key of a series in :attr:`Run.series`: ``"train/loss"``, ``"eval/eval_loss"``."""
    return f"{kind}/{name}"


@dataclass
class MetricSeries:
    """One curve for comparing runs: values of ``tag`` in ``split`` by step, with wall times."""

    split: str
    tag: str
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    wall_times: list[float | None] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.split}/{self.tag}"


@functools.lru_cache(maxsize=4096)
def normalize_metric(kind: str | None, name: str) -> tuple[str, str] | None:
    """``(split, tag)`` of a logged number, or None for bookkeeping fields. Pure.

    ``eval_loss``, ``eval/loss``, ``val_loss``, ``loss/val`` and a ``loss`` in an eval record all become
    ``("eval", "loss")``; ``train/loss`` and ``Loss/train`` become ``("train", "loss")``.
    """
    n = name.strip().lower()
    split = Split.EVAL.value if kind == rf.RecordKind.EVAL.value else Split.TRAIN.value
    for prefix, sp in (("eval_", "eval"), ("eval/", "eval"), ("val_", "eval"), ("val/", "eval"),
                       ("validation_", "eval"), ("validation/", "eval"), ("train/", "train"), ("train_", "train")):
        if n.startswith(prefix) and len(n) > len(prefix):
            split, n = sp, n[len(prefix):]
            break
    else:
        for suffix, sp in (("/train", "train"), ("/eval", "eval"), ("/val", "eval"), ("/validation", "eval")):
            if n.endswith(suffix) and len(n) > len(suffix):
                split, n = sp, n[: -len(suffix)]
                break
    if n in SKIP_TAGS or not n:
        return None
    return split, n


def compare_series(series: Mapping[str, Series]) -> dict[str, MetricSeries]:
    """The run's series under normalised ``split/tag`` keys (``eval/loss`` for eval_loss, val_loss...). Pure.

    Two raw series that normalise to the same curve are merged by step, the later key winning.
    """
    merged: dict[tuple[str, str], dict[int, tuple[float, float | None]]] = {}
    for key in sorted(series):
        kind, _, name = key.partition("/")
        norm = normalize_metric(kind, name)
        if norm is None:
            continue
        s = series[key]
        points = merged.setdefault(norm, {})
        for step, value, t in zip(s.steps, s.values, s.times):
            points[int(step)] = (value, t if math.isfinite(t) else None)
    out: dict[str, MetricSeries] = {}
    for (split, tag), points in merged.items():
        ms = MetricSeries(split, tag)
        for step in sorted(points):
            v, w = points[step]
            ms.steps.append(step)
            ms.values.append(v)
            ms.wall_times.append(w)
        out[ms.key] = ms
    return out


def best_eval_loss(series: Mapping[str, MetricSeries]) -> float | None:
    """Lowest finite eval loss of normalised series, or None."""
    s = series.get(f"{Split.EVAL.value}/loss")
    finite = [v for v in (s.values if s else []) if math.isfinite(v)]
    return min(finite) if finite else None


def series_stats(series: Mapping[str, Series]) -> tuple[int | None, float | None, float | None] | None:
    """``(last step, best eval loss, first wall time)`` straight from a run's raw series, as
    :func:`last_step`, :func:`best_eval_loss` and :func:`wall_span` give them on :func:`compare_series`; or
    None when two raw series normalise to one curve (then the merged view decides). Pure.

    The runs table needs only these three; building the normalised view point by point (a dict entry per
    point) cost a 10,000,000-value run seconds and gigabytes each time the listing was refreshed."""
    import numpy as np

    picked: dict[tuple[str, str], Series] = {}
    for key, s in series.items():
        kind, _, name = key.partition("/")
        norm = normalize_metric(kind, name)
        if norm is None:
            continue
        if norm in picked:
            return None
        picked[norm] = s
    last = max((int(s.steps[-1]) for s in picked.values() if len(s.steps)), default=None)
    best = None
    ev = picked.get((Split.EVAL.value, "loss"))
    if ev is not None and len(ev.values):
        v = np.asarray(ev.values, dtype=np.float64)
        v = v[np.isfinite(v)]
        best = float(v.min()) if v.size else None
    first = None
    for s in picked.values():
        if len(s.times):
            t = np.asarray(s.times, dtype=np.float64)
            t = t[np.isfinite(t)]
            if t.size and (first is None or float(t.min()) < first):
                first = float(t.min())
    return last, best, first


def last_step(series: Mapping[str, MetricSeries]) -> int | None:
    steps = [s.steps[-1] for s in series.values() if s.steps]
    return max(steps) if steps else None


def wall_span(series: Mapping[str, MetricSeries]) -> tuple[float | None, float | None]:
    walls = [w for s in series.values() for w in s.wall_times if w is not None and math.isfinite(w)]
    return (min(walls), max(walls)) if walls else (None, None)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); lists kept. Pure."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            key = f"{prefix}{k}"
            if isinstance(v, Mapping) and v:
                out.update(flatten(v, key + "."))
            else:
                out[key] = v
    return out


# --------------------------------------------------------------------------- live / stale (the one rule)

def live_state(finished: bool, updated_at: float | None, now: float) -> str:
    """State of a run that has no status file: finished, training (recent writes) or stopped."""
    if finished:
        return rf.RunState.FINISHED.value
    if updated_at is not None and now - updated_at <= STALE_AFTER_S:
        return rf.RunState.TRAINING.value
    return "stopped"


def status_state(status: Mapping[str, Any] | None, now: float) -> str | None:
    """The state a status file claims, ``"stale"`` when it says training but stopped being rewritten."""
    if not status or not isinstance(status.get("state"), str):
        return None
    state = status["state"]
    updated = status.get("updated_at")
    if state in (rf.RunState.TRAINING.value, rf.RunState.EVALUATING.value) and is_number(updated) \
            and now - updated > STALE_AFTER_S:
        return "stale"
    return state


def run_state(status: Mapping[str, Any] | None, finished: bool, updated_at: float | None, now: float) -> str:
    """The state shown for a run: what its status file claims (or stale), else what its files suggest."""
    return status_state(status, now) or live_state(finished, updated_at, now)


# --------------------------------------------------------------------------- status checking

def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if is_number(v) else type(v).__name__)


STATUS_OBJECT_FIELDS = ("throughput", "memory", "config")
STATUS_NUMBER_FIELDS = ("updated_at", "started_at", "train_loss", "eval_loss", "learning_rate", "grad_norm", "epoch")
STATUS_TEXT_FIELDS = ("state", "error")


def clean_status(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The status document with every field of the wrong type removed, and a sentence per removed field. Pure.

    The pages read fields by type (``throughput`` as an object, ``updated_at`` as seconds...); a status
    written by another tool or an older collector must cost one message naming the field, never a
    blank page. An ``error`` that is not text is kept as its JSON text so the person still reads it.
    """
    out = dict(doc)
    problems: list[str] = []
    for name in STATUS_OBJECT_FIELDS:
        if name in out and out[name] is not None and not isinstance(out[name], dict):
            problems.append(f"status field '{name}' is {_type_name(out.pop(name))}, not an object: ignored")
    for name in STATUS_NUMBER_FIELDS:
        if name in out and out[name] is not None and not is_number(out[name]):
            problems.append(f"status field '{name}' is {_type_name(out.pop(name))}, not a number: ignored")
    if "step" in out and out["step"] is not None and not (is_number(out["step"]) and float(out["step"]).is_integer()):
        problems.append(f"status field 'step' is {_type_name(out.pop('step'))}, not a whole number: ignored")
    elif is_number(out.get("step")):
        out["step"] = int(out["step"])
    for name in STATUS_TEXT_FIELDS:
        v = out.get(name)
        if v is not None and not isinstance(v, str):
            if name == "error":
                out[name] = rf.dumps(v).decode("utf-8", "replace")[:500]
                problems.append(f"status field 'error' is {_type_name(v)}, not text: shown as JSON")
            else:
                out.pop(name)
                problems.append(f"status field '{name}' is {_type_name(v)}, not text: ignored")
    return out, problems


# --------------------------------------------------------------------------- summary rows

@dataclass
class CheckpointRow:
    """One checkpoint of a run as the checkpoints panel shows it."""

    step: int
    path: str
    size_mb: float
    modified: float | None
    is_latest: bool = False
    is_best: bool = False
    resume_command: str = ""


@dataclass
class RunSummary:
    """The row of the runs list."""

    run_id: str
    kind: str
    name: str
    path: str
    state: str
    last_step: int | None = None
    best_eval_loss: float | None = None
    duration_s: float | None = None
    alert_count: int = 0
    snapshot_count: int = 0
    checkpoint_count: int = 0
    started_at: float | None = None
    updated_at: float | None = None
    problems: list[str] = field(default_factory=list)
    best_eval_partial: bool = False
    """The best eval loss is the best of the log's last part only (a large run not opened yet): the
    run's true best is at most that (:mod:`services.listing`)."""


# --------------------------------------------------------------------------- the run

def stat_sig(path: Path) -> tuple[Any, ...]:
    """A cheap fingerprint of one file: changes when it is replaced, grows or is rewritten."""
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), None)
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


class Run:
    """One run as every page sees it; a reader subclass fills it from its files.

    Attributes:
        run_id: the run's id in the picker (path relative to the base dir, or ``"."``).
        kind: which reader made it (:class:`RunKind`).
        paths: the Trainboard paths below its root (status, logs, snapshots, control).
        version: increases whenever newly read data changes anything shown.
        status: the last status document read successfully, checked by :func:`clean_status` (None before any).
        status_problem: why the status file could not be read just now (None when fine).
        field_problems: one sentence per status field of the wrong type.
        series: ``"kind/metric"`` -> :class:`Series`.
        bad_lines / unknown_lines: malformed and unknown-kind lines skipped in the metrics source.
        bad_steps: records without a numeric step (counted, not silently dropped).
        problems: what else could not be read at the last refresh, in words.
        has_collector: whether Trainboard's collector wrote this run (alerts, samples, snapshots,
            spectral exist only then; otherwise the dashboard detects alerts itself, read-only).
    """

    kind: RunKind = RunKind.TRAINBOARD
    has_collector: bool = True
    changes: int = 0
    """Counts, over every run of the process, the reads that changed something shown (``version`` or
    ``list_version`` moved): the Runs list compares one number per tick instead of 2,000 versions. Only
    ever increased (an increment lost to a race between two threads still moves it)."""

    def __init__(self, run_id: str, root: Path) -> None:
        self.run_id = run_id
        self.root = Path(root)
        self.paths = rf.RunPaths(self.root)
        self.version = 0
        self.status: dict[str, Any] | None = None
        self.status_problem: str | None = None
        self.field_problems: list[str] = []
        self.series: dict[str, Series] = {}
        self.bad_lines = 0
        self.unknown_lines = 0
        self.bad_steps = 0
        self.records_read = 0
        self.problems: list[str] = []
        self.detected_alerts: list[dict[str, Any]] = []
        """Alerts the dashboard found itself (runs without the collector), as alert records."""
        self.resumes: list[ResumePoint] = []
        """Where trainings resumed into this run dir (``resume`` records), oldest first."""
        self._lock = threading.Lock()
        self._checked = 0.0
        self._compare: tuple[int, dict[str, MetricSeries]] | None = None
        self._summary: tuple[int, float, RunSummary] | None = None

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return self.root.name if self.run_id == "." else self.run_id

    @property
    def label(self) -> str:
        """What the run picker shows: the name, and the kind when it is not a Trainboard run."""
        return self.name if self.kind is RunKind.TRAINBOARD else f"{self.name} ({KIND_LABELS[self.kind]})"

    # ------------------------------------------------------------------ reading (subclasses)
    def refresh(self) -> bool:
        """Read whatever is new on disk; True when something changed."""
        with self._lock:
            changed = self._refresh()
            if changed:
                self.version += 1
                Run.changes += 1
            return changed

    def _refresh(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def signature(self) -> Any:
        """A fingerprint of the files this run depends on (compared before re-reading)."""
        return None

    # ------------------------------------------------------------------ ingestion (shared by every reader)
    def reset_series(self) -> None:
        self.series = {}
        self.records_read = 0
        self.bad_steps = 0
        self.resumes = []

    def ingest(self, records: list[dict[str, Any]]) -> None:
        """Append metric records to the columns, a run of same-shaped records at a time.

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
            if shape[0] == rf.RecordKind.RESUME.value:
                for rec in group:
                    self._resume(rec)
            elif not self._ingest_group(shape[0], first, group):
                for rec in group:
                    self._ingest_one(rec)
            self.records_read += len(group)
            i = j

    def _resume(self, rec: Mapping[str, Any]) -> None:
        """A training resumed at ``rec["step"]``: what was logged after it is rolled back on every series."""
        point = ResumePoint.from_record(rec)
        if point is None:
            self.bad_steps += 1
            return
        dropped = sum(s.roll_back(point.step) for s in self.series.values())
        self.resumes.append(ResumePoint(point.step, point.time, point.previous_step, point.previous_state, dropped))

    def _ingest_group(self, kind: Any, first: dict[str, Any], group: list[dict[str, Any]]) -> bool:
        """Append one run of same-shaped records column by column; False sends it to the per-record path.

        The result must not depend on where a group starts or ends (the tailer's chunks and the series
        cache split a file at different places): a column is taken here only when every value in it is a
        number (bools are not), and a column that mixes numbers with anything else goes to the per-record
        path, which keeps exactly the numeric values, as a one-record group would.
        """
        if kind not in METRIC_KINDS:
            return True
        if rf.LOSS_REPLACED in first:  # Trainer logged a stand-in for a NaN/Inf loss: show the NaN
            group = [{**r, "loss": math.nan} if r.get(rf.LOSS_REPLACED) else r for r in group]
        try:
            raw_steps = list(map(itemgetter("step"), group))
            if not set(map(type, raw_steps)) <= _NUMBER_TYPES:
                return False
            steps = array("d", raw_steps)
            if "time" in first:
                raw_times = list(map(itemgetter("time"), group))
                times = array("d", raw_times) if set(map(type, raw_times)) <= _NUMBER_TYPES else \
                    array("d", (t if type(t) in _NUMBER_TYPES else math.nan for t in raw_times))
            else:
                times = array("d", [math.nan]) * len(group)
            columns: dict[str, array] = {}
            for name in first:
                if name in NUMERIC_SKIP:
                    continue
                col = list(map(itemgetter(name), group))
                types = set(map(type, col))
                if types <= _NUMBER_TYPES:
                    columns[name] = array("d", col)
                elif types & _NUMBER_TYPES:
                    return False
        except (TypeError, KeyError, OverflowError):
            return False
        arr = np.frombuffer(steps, dtype=np.float64)
        if not np.isfinite(arr).all():
            return False
        increasing = bool(len(arr) < 2 or np.all(arr[1:] > arr[:-1]))
        for name, values in columns.items():
            key = f"{kind}/{name}"
            s = self.series.get(key)
            if s is None:
                s = self.series[key] = Series()
            s.extend(steps, values, times, increasing)
        return True

    def _ingest_one(self, rec: dict[str, Any]) -> None:
        kind = rec.get("kind")
        if kind not in METRIC_KINDS:
            return
        step = rec.get("step")
        if not is_number(step) or not math.isfinite(step):
            self.bad_steps += 1
            return
        if rec.get(rf.LOSS_REPLACED):
            rec = {**rec, "loss": math.nan}
        t = rec.get("time")
        t = float(t) if is_number(t) else math.nan
        for name, value in rec.items():
            if name in NUMERIC_SKIP or not is_number(value):
                continue
            key = f"{kind}/{name}"
            s = self.series.get(key)
            if s is None:
                s = self.series[key] = Series()
            s.append(float(step), float(value), t)

    def set_status(self, doc: Any, problem: str | None, exists: bool) -> bool:
        """Keep a freshly read status document (checked field by field); True when anything shown changed."""
        if doc is not None and not isinstance(doc, dict):
            doc, problem = None, f"{self.paths.status} does not hold a JSON object"
        field_problems = self.field_problems
        if doc is not None:
            doc, field_problems = clean_status(doc)
        new_problem = problem if exists else None
        changed = new_problem != self.status_problem or (doc is not None and doc != self.status) \
            or field_problems != self.field_problems
        self.status_problem = new_problem
        self.field_problems = field_problems
        if doc is not None:
            self.status = doc
        return changed

    # ------------------------------------------------------------------ what pages read
    def series_names(self) -> list[str]:
        return sorted(self.series)

    def has_data(self) -> bool:
        return bool(self.series) or self.status is not None

    def last_update(self) -> float | None:
        """Unix time of the latest data: the status's ``updated_at`` or the newest file's mtime."""
        if self.status and is_number(self.status.get("updated_at")):
            return float(self.status["updated_at"])
        return self._files_mtime()

    def _files_mtime(self) -> float | None:
        return mtime(self.paths.metrics)

    def finished(self) -> bool:
        return False

    def state(self, now: float | None = None) -> str:
        """training / evaluating / stalled / finished / crashed / stale / stopped (see :func:`run_state`
        and :meth:`stall`)."""
        now = time.time() if now is None else now
        state = run_state(self.status, self.finished(), self.last_update(), now)
        if state in LIVE_STATES and self.stall(now).state == STALLED:
            return STALLED
        return state

    def stall(self, now: float | None = None) -> Any:
        """The stall verdict (:func:`services.detection.run_stall`) from this run's files, for a run the
        live/stale rule still calls live: its collector's heartbeat is fresh, or its files changed within
        :data:`STALE_AFTER_S`. So a killed training is stalled at most until it turns stale/stopped."""
        from services.detection import run_stall  # detection imports the collector's rule engine: lazily

        now = time.time() if now is None else now
        times = self._stall_times()
        return run_stall(self.status, times, times[-1] if times else None, self.last_update(), now)

    def _stall_times(self) -> list[float]:
        """Wall times of the newest train records (at most :data:`STALL_TIMES`), for the stall rule."""
        train = self.series.get(series_key(Split.TRAIN.value, "loss"))
        if train is None:
            train = next((s for k, s in self.series.items() if k.startswith(Split.TRAIN.value + "/") and len(s)), None)
        return [t for t in (train.times[-STALL_TIMES:] if train is not None else []) if math.isfinite(t) and t > 0]

    def derived_status(self) -> dict[str, Any]:
        """The status document, or one derived from the series when no status file exists (an HF or
        TensorBoard run, a MetricsLogger run), so cards show what is known instead of dashes."""
        if self.status:
            return self.status
        def last(key: str) -> float | None:
            s = self.series.get(key)
            return s.last() if s is not None else None
        steps = [s.steps[-1] for s in self.series.values() if len(s)]
        state = self.state()
        return {"state": state if self.kind is not RunKind.TRAINBOARD or state == "finished" else None,
                "step": int(max(steps)) if steps else None, "train_loss": last("train/loss"),
                "eval_loss": last("eval/eval_loss"), "learning_rate": last("train/learning_rate"),
                "grad_norm": last("train/grad_norm"), "epoch": last("train/epoch"), "updated_at": self.last_update(),
                "config": self.status_config()}

    def status_config(self) -> dict[str, Any]:
        return {}

    def compare_series(self) -> dict[str, MetricSeries]:
        """Normalised series for comparing runs (cached per version)."""
        if self._compare is None or self._compare[0] != self.version:
            self._compare = (self.version, compare_series(self.series))
        return self._compare[1]

    def config(self) -> dict[str, Any]:
        cfg = (self.status or {}).get("config")
        return flatten(cfg) if isinstance(cfg, dict) else {}

    def results(self) -> dict[str, Any]:
        cs = self.compare_series()
        train = cs.get(f"{Split.TRAIN.value}/loss")
        return {"last_step": last_step(cs), "final_train_loss": train.values[-1] if train and train.values else None,
                "best_eval_loss": best_eval_loss(cs)}

    def checkpoints(self) -> list[CheckpointRow]:
        return []

    def alert_count(self) -> int:
        return len(self.detected_alerts)

    def snapshot_count(self) -> int:
        d = self.paths.snapshots_dir
        return sum(1 for n in listdir(d) if not n.startswith((".", rf.TMP_PREFIX)) and (d / n).is_dir())

    def started_at(self) -> float | None:
        st = self.status or {}
        if is_number(st.get("started_at")):
            return float(st["started_at"])
        stats = series_stats(self.series)
        if stats is not None:
            return stats[2]
        first, _ = wall_span(self.compare_series())
        return first

    def duration_s(self) -> float | None:
        started, updated = self.started_at(), self.last_update()
        return (updated - started) if started is not None and updated is not None else None

    def all_problems(self) -> list[str]:
        out = list(self.problems)
        if self.status_problem:
            out.append(self.status_problem)
        out += self.field_problems
        if self.bad_lines:
            out.append(f"{self.bad_lines} malformed line(s) skipped in {rf.METRICS_LOG}")
        if self.bad_steps:
            out.append(f"{self.bad_steps} record(s) without a numeric step skipped")
        return out

    # ------------------------------------------------------------------ the Runs list (no series)
    @property
    def opened(self) -> bool:
        """Whether this run's series were read (a page opened it); until then the listing reads less."""
        return self.version > 0

    def list_refresh(self) -> bool:
        """Bring what the Runs list shows up to date; True when it changed. Readers that can list a run
        without reading its series (Trainboard runs: status and the tail of the log) override this;
        the others read the run (their files are read whole anyway)."""
        return self.refresh()

    @property
    def list_version(self) -> Any:
        """Changes whenever :meth:`list_summary` may have (a fingerprint for the Runs table)."""
        return self.version

    def list_summary(self, now: float | None = None) -> RunSummary:
        """The Runs-table row as :meth:`list_refresh` left it (the full :meth:`summary` here)."""
        return self.summary(now)

    def summary(self, now: float | None = None) -> RunSummary:
        """The runs-table row (cached per version and per 10 s, since the state depends on the clock)."""
        if self.version == 0:
            self.refresh()  # a reader opened but not read yet
        now = time.time() if now is None else now
        if self._summary is not None and self._summary[0] == self.version and now - self._summary[1] < 10:
            return self._summary[2]
        stats = series_stats(self.series)
        if stats is None:
            cs = self.compare_series()
            stats = (last_step(cs), best_eval_loss(cs), None)
        steps = [s for s in (stats[0], (self.status or {}).get("step")) if isinstance(s, int)]
        summary = RunSummary(
            run_id=self.run_id, kind=self.kind.value, name=self.name, path=str(self.root), state=self.state(now),
            last_step=max(steps) if steps else None, best_eval_loss=stats[1], duration_s=self.duration_s(),
            alert_count=self.alert_count(), snapshot_count=self.snapshot_count(),
            checkpoint_count=len(self.checkpoints()), started_at=self.started_at(), updated_at=self.last_update(),
            problems=self.all_problems())
        self._summary = (self.version, now, summary)
        return summary


def group_records(pairs: Iterable[tuple[str, str, int, float, float | None]]) -> list[dict[str, Any]]:
    """Metric records from ``(kind, name, step, value, wall)`` points, one record per (kind, step), by step.

    TensorBoard stores one scalar per event; turning them into records lets them go through the same
    ingestion (and the same alert rules) as a Trainboard metrics log. Pure.
    """
    recs: dict[tuple[str, int], dict[str, Any]] = {}
    for kind, name, step, value, wall in pairs:
        rec = recs.get((kind, step))
        if rec is None:
            rec = recs[(kind, step)] = {"v": rf.SCHEMA_VERSION, "kind": kind, "step": step}
        rec[name] = value
        if wall is not None and not is_number(rec.get("time")):
            rec["time"] = wall
    return [recs[k] for k in sorted(recs, key=lambda k: (k[1], k[0] != rf.RecordKind.TRAIN.value))]

