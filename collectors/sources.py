"""Run sources for the Runs page: find and read every kind of training output under a base directory.

Four kinds are recognised, each read without any change to the training that writes it:

* ``trainboard``: a Trainboard run directory (``runformat.is_run_dir``: status file or metrics log);
* ``experiment``: an experiment directory made by :mod:`collectors.experiments` (a Trainboard run plus
  ``config.json`` / ``results.json`` / ``checkpoints/``);
* ``huggingface``: a plain Trainer ``output_dir`` (``trainer_state.json`` and ``checkpoint-*/``);
* ``tensorboard``: a directory of TensorBoard event files (read with tbparse).

Every source gives the same :class:`RunSummary` (kind, name, state, last step, best eval loss, duration,
alert and snapshot counts), metric series per split and tag (step, value, wall time), a flat config
for diffing, final results and a checkpoint list with the command to resume. ``refresh()`` re-reads
only when the files it depends on changed (a ``stat`` signature), so polling an unchanged run is cheap.

This module imports neither dash nor torch; tbparse is imported only to read event files.
"""
from __future__ import annotations

import enum
import functools
import math
import os
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from collectors import runformat as rf
from collectors.experiments.checkpoints import scan_checkpoints

HF_STATE_FILE = "trainer_state.json"
"""Written by transformers' Trainer in its output_dir (at the end) and in each ``checkpoint-<N>/``."""
HF_CHECKPOINT_PREFIX = "checkpoint-"
HF_MODEL_CONFIG = "config.json"
TB_EVENT_MARK = "events.out.tfevents."
LIVE_WINDOW_S = 120.0
"""A run whose files changed within this many seconds (and that has not finished) counts as training."""
STALE_AFTER_S = 300.0
"""A status that says training but has not been rewritten for this long is shown as stale."""
DISCOVERY_DEPTH = 2
RESCAN_INTERVAL_S = 2.0
SKIP_TAGS = frozenset({"epoch", "step", "total_flos", "runtime", "samples_per_second", "steps_per_second"})
"""Numbers logged alongside metrics that are bookkeeping, not curves worth comparing."""
HF_SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")
CONFIG_SKIP = frozenset({"v", "timestamp", "created_at", "experiment_id", "command"})
"""config.json fields that differ between any two runs by nature: left out of the config diff."""


class SourceKind(str, enum.Enum):
    TRAINBOARD = "trainboard"
    EXPERIMENT = "experiment"
    HUGGINGFACE = "huggingface"
    TENSORBOARD = "tensorboard"


class Split(str, enum.Enum):
    TRAIN = "train"
    EVAL = "eval"


@dataclass
class MetricSeries:
    """One curve: values of ``tag`` in ``split`` by step (one value per step: the last one logged)."""

    split: str
    tag: str
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    wall_times: list[float | None] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.split}/{self.tag}"


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


# --------------------------------------------------------------------------- pure helpers

RecordKindEval = rf.RecordKind.EVAL.value

@functools.lru_cache(maxsize=4096)
def normalize_metric(kind: str | None, name: str) -> tuple[str, str] | None:
    """``(split, tag)`` of a logged number, or None for bookkeeping fields. Pure.

    ``eval_loss``, ``eval/loss``, ``val_loss``, ``loss/val`` and a ``loss`` in an eval record all become
    ``("eval", "loss")``; ``train/loss`` and ``Loss/train`` become ``("train", "loss")``.
    """
    n = name.strip().lower()
    split = Split.EVAL.value if kind == RecordKindEval else Split.TRAIN.value
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


class SeriesBuilder:
    """Accumulates (split, tag) -> step -> (value, wall time), keeping the last value per step."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], dict[int, tuple[float, float | None]]] = {}

    def clear(self) -> None:
        self._data.clear()

    def add(self, split: str, tag: str, step: int, value: float, wall: float | None) -> None:
        self._data.setdefault((split, tag), {})[step] = (value, wall)

    def add_record(self, kind: str | None, record: Mapping[str, Any], step: int, wall: float | None) -> None:
        for name, value in record.items():
            if name in ("v", "kind", "step", "time") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            norm = normalize_metric(kind, name)
            if norm is not None:
                self.add(norm[0], norm[1], step, float(value), wall)

    def build(self) -> dict[str, MetricSeries]:
        out: dict[str, MetricSeries] = {}
        for (split, tag), points in self._data.items():
            s = MetricSeries(split, tag)
            for step in sorted(points):
                v, w = points[step]
                s.steps.append(step)
                s.values.append(v)
                s.wall_times.append(w)
            out[s.key] = s
        return out


def best_eval_loss(series: Mapping[str, MetricSeries]) -> float | None:
    """Lowest finite eval loss, or None."""
    s = series.get(f"{Split.EVAL.value}/loss")
    finite = [v for v in (s.values if s else []) if math.isfinite(v)]
    return min(finite) if finite else None


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


def live_state(finished: bool, updated_at: float | None, now: float) -> str:
    """State of a run that has no status file: finished, training (recent writes) or stopped."""
    if finished:
        return rf.RunState.FINISHED.value
    if updated_at is not None and now - updated_at <= LIVE_WINDOW_S:
        return rf.RunState.TRAINING.value
    return "stopped"


def status_state(status: Mapping[str, Any] | None, now: float) -> str | None:
    """The state a status file claims, ``"stale"`` when it says training but stopped being rewritten."""
    if not status or not isinstance(status.get("state"), str):
        return None
    state = status["state"]
    updated = status.get("updated_at")
    if state in (rf.RunState.TRAINING.value, rf.RunState.EVALUATING.value) and isinstance(updated, (int, float)) \
            and now - updated > STALE_AFTER_S:
        return "stale"
    return state


def shell_join(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def experiment_resume_command(root: Path, step: int, is_latest: bool, command: Mapping[str, Any] | None) -> str:
    """How to resume an experiment from one checkpoint. Pure.

    The latest checkpoint: re-run the recorded command (a script following the guide resumes from
    ``load_latest_checkpoint()``). Any checkpoint: the two lines that load it into a training.
    """
    load = (f"from collectors import CheckpointManager; mgr = CheckpointManager({str(root)!r}); "
            f"start_step = mgr.restore(mgr.load_checkpoint(step={step}), model, optimizer, scheduler)")
    argv = (command or {}).get("argv")
    cwd = (command or {}).get("cwd")
    python = (command or {}).get("python") or "python"
    if is_latest and isinstance(argv, list) and argv and argv[0] not in ("-c", "-", ""):
        return f"cd {shlex.quote(str(cwd or '.'))} && {shell_join([python, *argv])}"
    return load


def hf_resume_command(checkpoint: Path) -> str:
    """How to resume a Trainer from one of its checkpoints. Pure."""
    return f"trainer.train(resume_from_checkpoint={str(checkpoint)!r})"


def _stat_sig(path: Path) -> tuple[Any, ...]:
    try:
        st = os.stat(path)
    except OSError:
        return (str(path), None)
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _dir_size(path: Path) -> int:
    total = 0
    try:
        for entry in os.scandir(path):
            try:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
                elif entry.is_dir(follow_symlinks=False):
                    total += _dir_size(Path(entry.path))
            except OSError:
                continue
    except OSError:
        pass
    return total


def hf_checkpoint_dirs(root: Path) -> list[tuple[int, Path]]:
    """``(step, dir)`` of every ``checkpoint-<N>`` in ``root``, by step."""
    out = []
    for name in _listdir(root):
        if name.startswith(HF_CHECKPOINT_PREFIX) and name[len(HF_CHECKPOINT_PREFIX):].isdigit():
            p = root / name
            if p.is_dir():
                out.append((int(name[len(HF_CHECKPOINT_PREFIX):]), p))
    return sorted(out)


# --------------------------------------------------------------------------- detection

def _is_experiment(path: Path) -> bool:
    p = rf.RunPaths.of(path)
    if p.results.is_file() or p.checkpoint_manifest.is_file() or p.checkpoint_latest.exists():
        return True
    if p.checkpoints_dir.is_dir() and any(rf.checkpoint_step(n) is not None for n in _listdir(p.checkpoints_dir)):
        return True
    if p.config.is_file():
        doc, _ = rf.read_json(p.config)
        return isinstance(doc, dict) and "experiment_id" in doc and "hardware" in doc
    return False


def _is_hf(path: Path) -> bool:
    if (path / HF_STATE_FILE).is_file():
        return True
    return any((d / HF_STATE_FILE).is_file() for _, d in hf_checkpoint_dirs(path))


def _is_tensorboard(path: Path) -> bool:
    return any(n.startswith(TB_EVENT_MARK) for n in _listdir(path))


def detect_kind(path: str | os.PathLike[str]) -> SourceKind | None:
    """The kind of run ``path`` is, or None when it is none of them."""
    p = Path(path)
    if not p.is_dir():
        return None
    if _is_experiment(p):
        return SourceKind.EXPERIMENT
    if rf.is_run_dir(p):
        return SourceKind.TRAINBOARD
    if _is_hf(p):
        return SourceKind.HUGGINGFACE
    if _is_tensorboard(p):
        return SourceKind.TENSORBOARD
    return None


def discover(base: str | os.PathLike[str], depth: int = DISCOVERY_DEPTH) -> list[tuple[str, SourceKind, Path]]:
    """Every run under ``base``: ``(run_id, kind, path)``, run_id being the path relative to base (``"."``
    for base itself). A directory recognised as a run is not searched further (its ``checkpoints/`` or an
    HF dir's ``runs/`` event files belong to it). Hidden and temporary directories are skipped.
    """
    root = Path(base)
    found: list[tuple[str, SourceKind, Path]] = []
    level = [root]
    for d in range(depth + 1):
        nxt: list[Path] = []
        for p in level:
            kind = detect_kind(p)
            if kind is not None:
                rid = "." if p == root else p.relative_to(root).as_posix()
                found.append((rid, kind, p))
                continue
            if d < depth:
                nxt += [p / n for n in _listdir(p) if not n.startswith((".", rf.TMP_PREFIX)) and (p / n).is_dir()]
        level = nxt
    return sorted(found, key=lambda t: t[0])


# --------------------------------------------------------------------------- sources

class RunSource:
    """Base of the four readers. Subclasses implement ``_signature`` and ``_read``.

    Attributes:
        version: increases whenever a refresh read something new.
        problems: what could not be read at the last refresh, in words.
    """

    kind: SourceKind = SourceKind.TRAINBOARD

    def __init__(self, run_id: str, root: Path) -> None:
        self.run_id = run_id
        self.root = Path(root)
        self.version = 0
        self.problems: list[str] = []
        self._sig: Any = None
        self._lock = threading.Lock()
        self._series: dict[str, MetricSeries] = {}
        self._config: dict[str, Any] = {}
        self._results: dict[str, Any] = {}
        self._checkpoints: list[CheckpointRow] = []
        self._summary: RunSummary | None = None

    @property
    def name(self) -> str:
        return self.root.name if self.run_id == "." else self.run_id

    def refresh(self, now: float | None = None) -> bool:
        """Re-read when the files changed since the last call; True when something was read."""
        with self._lock:
            sig = self._signature()
            if sig == self._sig and self._summary is not None:
                return False
            self._sig = sig
            self.problems = []
            self._read(time.time() if now is None else now)
            self.version += 1
            return True

    def summary(self) -> RunSummary:
        if self._summary is None:
            self.refresh()
        assert self._summary is not None
        return self._summary

    def series(self) -> dict[str, MetricSeries]:
        return self._series

    def config(self) -> dict[str, Any]:
        return self._config

    def results(self) -> dict[str, Any]:
        return self._results

    def checkpoints(self) -> list[CheckpointRow]:
        return self._checkpoints

    def _signature(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, now: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _derived_results(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        train = self._series.get(f"{Split.TRAIN.value}/loss")
        out: dict[str, Any] = {"last_step": last_step(self._series),
                               "final_train_loss": train.values[-1] if train and train.values else None,
                               "best_eval_loss": best_eval_loss(self._series)}
        out.update(extra or {})
        return out


class TrainboardSource(RunSource):
    """A Trainboard run directory (and, as :class:`ExperimentSource`, an experiment directory).

    metrics.jsonl and alerts.jsonl are tailed incrementally, so a refresh reads only the new lines.
    """

    kind = SourceKind.TRAINBOARD

    def __init__(self, run_id: str, root: Path) -> None:
        super().__init__(run_id, root)
        self.paths = rf.RunPaths.of(root)
        self._metrics = rf.JsonlTailer(self.paths.metrics)
        self._alerts = rf.JsonlTailer(self.paths.alerts, known_kinds=None)
        self._builder = SeriesBuilder()
        self._alert_count = 0
        self._status: dict[str, Any] | None = None
        self._first_time: float | None = None
        self._summary_record: dict[str, Any] = {}

    def _signature(self) -> Any:
        p = self.paths
        return (_stat_sig(p.metrics), _stat_sig(p.status), _stat_sig(p.alerts), tuple(_listdir(p.snapshots_dir)),
                *self._extra_signature())

    def _extra_signature(self) -> tuple[Any, ...]:
        # a Trainer writing into the run (MonitorCallback with save_strategy) keeps checkpoint-* dirs below it
        return tuple(_listdir(self.root / n) for n in self._hf_subdirs())

    def _hf_subdirs(self) -> list[str]:
        return [n for n in _listdir(self.root) if (self.root / n).is_dir() and hf_checkpoint_dirs(self.root / n)]

    def _read(self, now: float) -> None:
        records, reset = self._metrics.poll()
        if reset:
            self._builder.clear()
            self._first_time = None
        for rec in records:
            step = rec.get("step")
            if not isinstance(step, (int, float)) or isinstance(step, bool):
                continue
            wall = rec.get("time") if isinstance(rec.get("time"), (int, float)) else None
            if wall is not None and (self._first_time is None or wall < self._first_time):
                self._first_time = float(wall)
            if rec.get("kind") == rf.RecordKind.SUMMARY.value:
                self._summary_record = {k: v for k, v in rec.items() if k not in ("v", "kind", "time")}
                continue
            self._builder.add_record(rec.get("kind"), rec, int(step), wall)
        self._series = self._builder.build()
        if self._metrics.bad_lines:
            self.problems.append(f"{self._metrics.bad_lines} malformed line(s) skipped in {rf.METRICS_LOG}")
        alerts, alerts_reset = self._alerts.poll()
        self._alert_count = (0 if alerts_reset else self._alert_count) + sum(
            1 for a in alerts if a.get("kind") == rf.RecordKind.ALERT.value)
        status, problem = rf.read_json(self.paths.status)
        if isinstance(status, dict):
            self._status = status
        elif problem and self.paths.status.exists():
            self.problems.append(problem)
        self._read_extras(now)
        self._summary = self._make_summary(now)

    def _read_extras(self, now: float) -> None:
        cfg = (self._status or {}).get("config")
        self._config = flatten(cfg) if isinstance(cfg, dict) else {}
        self._results = self._derived_results(self._summary_record)
        rows: list[CheckpointRow] = []
        for sub in self._hf_subdirs():
            rows += read_hf_checkpoints(self.root / sub)[0]
        self._checkpoints = rows

    def _snapshot_count(self) -> int:
        return sum(1 for n in _listdir(self.paths.snapshots_dir)
                   if not n.startswith((".", rf.TMP_PREFIX)) and (self.paths.snapshots_dir / n).is_dir())

    def _updated_at(self) -> float | None:
        st = self._status or {}
        if isinstance(st.get("updated_at"), (int, float)):
            return float(st["updated_at"])
        return _mtime(self.paths.metrics)

    def _started_at(self) -> float | None:
        st = self._status or {}
        return float(st["started_at"]) if isinstance(st.get("started_at"), (int, float)) else self._first_time

    def _finished(self) -> bool:
        return False

    def _make_summary(self, now: float) -> RunSummary:
        updated, started = self._updated_at(), self._started_at()
        state = status_state(self._status, now) or live_state(self._finished(), updated, now)
        steps = [s for s in (last_step(self._series), (self._status or {}).get("step")) if isinstance(s, int)]
        return RunSummary(
            run_id=self.run_id, kind=self.kind.value, name=self.name, path=str(self.root), state=state,
            last_step=max(steps) if steps else None, best_eval_loss=best_eval_loss(self._series),
            duration_s=(updated - started) if updated is not None and started is not None else None,
            alert_count=self._alert_count, snapshot_count=self._snapshot_count(),
            checkpoint_count=len(self._checkpoints), started_at=started, updated_at=updated,
            problems=list(self.problems))


class ExperimentSource(TrainboardSource):
    """An experiment directory: metrics as a Trainboard run, plus config.json, results.json, checkpoints/."""

    kind = SourceKind.EXPERIMENT

    def __init__(self, run_id: str, root: Path) -> None:
        super().__init__(run_id, root)
        self._config_doc: dict[str, Any] = {}
        self._results_doc: dict[str, Any] = {}

    def _extra_signature(self) -> tuple[Any, ...]:
        p = self.paths
        return (_stat_sig(p.config), _stat_sig(p.results), _stat_sig(p.checkpoint_manifest),
                tuple(_listdir(p.checkpoints_dir)), os.path.realpath(p.checkpoint_latest))

    def _read_extras(self, now: float) -> None:
        self._config_doc = self._read_doc(self.paths.config)
        self._results_doc = self._read_doc(self.paths.results)
        cfg: dict[str, Any] = {}
        doc = self._config_doc
        if doc:
            cfg.update(flatten(doc.get("config") or {}))
            for section in ("dataset_info", "model", "hardware"):
                if isinstance(doc.get(section), dict):
                    cfg.update(flatten(doc[section], f"{section}."))
            for k, v in doc.items():
                if k not in CONFIG_SKIP and k not in ("config", "dataset_info", "model", "hardware"):
                    cfg[k] = v
        self._config = cfg
        final = self._results_doc.get("final_metrics")
        self._results = dict(final) if isinstance(final, dict) else self._derived_results(self._summary_record)
        self._checkpoints = self._read_checkpoints()

    def _read_doc(self, path: Path) -> dict[str, Any]:
        doc, problem = rf.read_json(path)
        if problem and path.exists():
            self.problems.append(problem)
        return doc if isinstance(doc, dict) else {}

    def _read_checkpoints(self) -> list[CheckpointRow]:
        entries = scan_checkpoints(self.paths.checkpoints_dir)
        best_name = self._results_doc.get("best_checkpoint")
        best_name = Path(best_name).name if isinstance(best_name, str) else None
        if best_name is None or best_name not in {e.path.name for e in entries}:
            best_name = best_by_metric([(e.path.name, e.metrics) for e in entries])
        command = self._config_doc.get("command") if isinstance(self._config_doc.get("command"), dict) else None
        return [CheckpointRow(step=e.step, path=str(e.path), size_mb=e.size_mb, modified=e.modified,
                              is_latest=e.is_latest, is_best=e.path.name == best_name,
                              resume_command=experiment_resume_command(self.root, e.step, e.is_latest, command))
                for e in entries]

    def _finished(self) -> bool:
        return bool(self._results_doc)

    def _started_at(self) -> float | None:
        created = self._config_doc.get("created_at")
        return float(created) if isinstance(created, (int, float)) else super()._started_at()

    def _updated_at(self) -> float | None:
        times = [t for t in (super()._updated_at(), self._results_doc.get("finished_at")) if isinstance(t, (int, float))]
        return max(times) if times else None


def best_by_metric(entries: Sequence[tuple[str, Mapping[str, Any]]]) -> str | None:
    """The checkpoint with the lowest recorded eval/val loss (saved via ``metrics=``), if any. Pure."""
    best: tuple[float, str] | None = None
    for name, metrics in entries:
        for key in ("eval_loss", "val_loss", "validation_loss", "loss"):
            v = metrics.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                if best is None or v < best[0]:
                    best = (float(v), name)
                break
    return best[1] if best else None


def newest_trainer_state(output_dir: Path, dirs: Sequence[tuple[int, Path]]) -> dict[str, Any] | None:
    """The trainer_state.json document with the highest global_step: output_dir's (written at the end) or
    the newest readable one among the last two checkpoints (the newest may still be being written)."""
    best: dict[str, Any] | None = None
    candidates = [output_dir / HF_STATE_FILE] + [d / HF_STATE_FILE for _, d in reversed(dirs[-2:])]
    for path in candidates:
        doc, _problem = rf.read_json(path)
        if isinstance(doc, dict) and (best is None or (doc.get("global_step") or 0) > (best.get("global_step") or 0)):
            best = doc
    return best


def read_hf_checkpoints(output_dir: Path) -> tuple[list[CheckpointRow], dict[str, Any] | None]:
    """The checkpoint rows of a Trainer output dir and its most advanced trainer_state.json document."""
    dirs = hf_checkpoint_dirs(output_dir)
    doc = newest_trainer_state(output_dir, dirs)
    best = (doc or {}).get("best_model_checkpoint")
    best_name = Path(best).name if isinstance(best, str) else None
    latest = dirs[-1][0] if dirs else None
    rows = [CheckpointRow(step=step, path=str(d), size_mb=_dir_size(d) / (1024 * 1024),
                          modified=_mtime(d / HF_STATE_FILE) or _mtime(d), is_latest=step == latest,
                          is_best=d.name == best_name, resume_command=hf_resume_command(d.resolve()))
            for step, d in dirs]
    return rows, doc


class HuggingFaceSource(RunSource):
    """A plain Trainer ``output_dir``: log_history of the newest trainer_state.json, checkpoints, model config.

    Trainer rewrites trainer_state.json in every ``checkpoint-<N>/`` it saves and in ``output_dir`` at the
    end, so watching those files follows a training live with no change to it.
    """

    kind = SourceKind.HUGGINGFACE

    def _signature(self) -> Any:
        dirs = hf_checkpoint_dirs(self.root)
        newest = [_stat_sig(d / HF_STATE_FILE) for _, d in dirs[-2:]]
        return (tuple(n for n in _listdir(self.root)), _stat_sig(self.root / HF_STATE_FILE), *newest)

    def _read(self, now: float) -> None:
        rows, doc = read_hf_checkpoints(self.root)
        self._checkpoints = rows
        doc = doc or {}
        builder = SeriesBuilder()
        summary_extra: dict[str, Any] = {}
        for entry in doc.get("log_history") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                continue
            if "train_runtime" in entry:
                summary_extra = {k: entry[k] for k in HF_SUMMARY_KEYS if k in entry}
                continue
            kind = RecordKindEval if any(k.startswith("eval_") for k in entry) else rf.RecordKind.TRAIN.value
            builder.add_record(kind, entry, entry["step"], None)
        self._series = builder.build()
        cfg: dict[str, Any] = {k: doc[k] for k in ("train_batch_size", "max_steps", "num_train_epochs", "logging_steps",
                                                   "eval_steps", "save_steps") if k in doc}
        model_cfg_path = (Path(rows[-1].path) / HF_MODEL_CONFIG) if rows else self.root / HF_MODEL_CONFIG
        model_cfg, _ = rf.read_json(model_cfg_path)
        if isinstance(model_cfg, dict):
            cfg.update(flatten({k: v for k, v in model_cfg.items() if not k.startswith("_")}, "model."))
        self._config = cfg
        self._results = self._derived_results(summary_extra)
        global_step, max_steps = doc.get("global_step"), doc.get("max_steps")
        finished = bool(summary_extra) or (isinstance(global_step, int) and isinstance(max_steps, int)
                                           and max_steps > 0 and global_step >= max_steps)
        mtimes = [t for t in [_mtime(self.root / HF_STATE_FILE)] + [r.modified for r in rows] if t is not None]
        updated = max(mtimes) if mtimes else None
        steps = [s for s in (last_step(self._series), global_step) if isinstance(s, int)]
        runtime = summary_extra.get("train_runtime")
        if not doc:
            self.problems.append(f"no readable {HF_STATE_FILE} in {self.root} or its checkpoints yet")
        self._summary = RunSummary(
            run_id=self.run_id, kind=self.kind.value, name=self.name, path=str(self.root),
            state=live_state(finished, updated, now), last_step=max(steps) if steps else None,
            best_eval_loss=best_eval_loss(self._series),
            duration_s=float(runtime) if isinstance(runtime, (int, float)) else None,
            checkpoint_count=len(rows), updated_at=updated, problems=list(self.problems))


class TensorBoardSource(RunSource):
    """A directory of TensorBoard event files, read with tbparse (re-read whole when a file grows)."""

    kind = SourceKind.TENSORBOARD

    def _event_files(self) -> list[Path]:
        return [self.root / n for n in _listdir(self.root) if n.startswith(TB_EVENT_MARK)]

    def _signature(self) -> Any:
        return tuple(_stat_sig(p) for p in self._event_files())

    def _read(self, now: float) -> None:
        builder = SeriesBuilder()
        cfg: dict[str, Any] = {}
        try:
            from tbparse import SummaryReader

            reader = SummaryReader(str(self.root), extra_columns={"wall_time"})
            df = reader.scalars
            if len(df):
                for step, tag, value, wall in zip(df["step"].tolist(), df["tag"].tolist(), df["value"].tolist(),
                                                  df["wall_time"].tolist()):
                    norm = normalize_metric(None, str(tag))
                    if norm is not None:
                        builder.add(norm[0], norm[1], int(step), float(value), float(wall))
            try:
                hp = reader.hparams
                if len(hp):
                    cfg = {str(t): v for t, v in zip(hp["tag"].tolist(), hp["value"].tolist())}
            except Exception:  # noqa: BLE001 - hparams are optional; scalars still show
                pass
        except Exception as exc:  # noqa: BLE001 - a damaged event file is shown as a problem, not a crash
            self.problems.append(f"cannot read TensorBoard events in {self.root}: {type(exc).__name__}: {exc}")
        self._series = builder.build()
        self._config = cfg
        self._results = self._derived_results()
        first, last = wall_span(self._series)
        updated = max((t for t in (_mtime(p) for p in self._event_files()) if t is not None), default=None)
        self._summary = RunSummary(
            run_id=self.run_id, kind=self.kind.value, name=self.name, path=str(self.root),
            state=live_state(False, updated, now), last_step=last_step(self._series),
            best_eval_loss=best_eval_loss(self._series),
            duration_s=(last - first) if first is not None and last is not None else None,
            started_at=first, updated_at=updated, problems=list(self.problems))


SOURCE_CLASSES: dict[SourceKind, type[RunSource]] = {
    SourceKind.TRAINBOARD: TrainboardSource, SourceKind.EXPERIMENT: ExperimentSource,
    SourceKind.HUGGINGFACE: HuggingFaceSource, SourceKind.TENSORBOARD: TensorBoardSource,
}


def open_source(path: str | os.PathLike[str], run_id: str | None = None) -> RunSource | None:
    """A reader for the run at ``path`` (kind detected), or None when it is not a run."""
    kind = detect_kind(path)
    if kind is None:
        return None
    return SOURCE_CLASSES[kind](run_id or Path(path).name, Path(path))


class SourceCatalog:
    """Every run under a base directory, each with its reader kept between calls (so re-reads are incremental).

    Args:
        base: the directory to search (the base itself may be a run).
        rescan_interval_s: the directory tree is searched for new runs at most this often (default 2 s).

    Example:
        >>> cat = SourceCatalog("runs")                               # doctest: +SKIP
        >>> for src in cat.sources():
        ...     s = src.summary(); print(s.name, s.kind, s.state, s.last_step, s.best_eval_loss)
    """

    def __init__(self, base: str | os.PathLike[str], *, rescan_interval_s: float = RESCAN_INTERVAL_S) -> None:
        self.base = Path(base).expanduser().resolve()
        self.rescan_interval_s = rescan_interval_s
        self._sources: dict[str, RunSource] = {}
        self._last_scan = -math.inf
        self._lock = threading.Lock()

    def rescan(self, force: bool = False) -> list[str]:
        """Find runs (at most every ``rescan_interval_s`` unless forced); returns their ids."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_scan < self.rescan_interval_s:
                return sorted(self._sources)
            self._last_scan = now
            found = discover(self.base)
            fresh: dict[str, RunSource] = {}
            for rid, kind, path in found:
                old = self._sources.get(rid)
                fresh[rid] = old if old is not None and old.kind == kind else SOURCE_CLASSES[kind](rid, path)
            self._sources = fresh
            return sorted(fresh)

    def sources(self, refresh: bool = True) -> list[RunSource]:
        """Every run's reader, refreshed (cheap for runs whose files did not change)."""
        self.rescan()
        with self._lock:
            srcs = [self._sources[k] for k in sorted(self._sources)]
        if refresh:
            for s in srcs:
                s.refresh()
        return srcs

    def get(self, run_id: str | None) -> RunSource | None:
        """The reader of ``run_id`` (only ids found by discovery: nothing a browser sends reaches other paths)."""
        if not run_id:
            return None
        self.rescan()
        with self._lock:
            src = self._sources.get(run_id)
        if src is not None and rf.is_within(self.base, src.root):
            src.refresh()
            return src
        return None

    def version(self) -> tuple[tuple[str, int], ...]:
        """A fingerprint of all runs' versions: unchanged means nothing new anywhere."""
        return tuple((s.run_id, s.version) for s in self.sources())
