"""One reader per run kind, each turning a directory into the :class:`services.model.Run` every page uses.

* :class:`TrainboardRun`: a Trainboard run directory (``runformat.is_run_dir``: status file or metrics
  log); ``metrics.jsonl`` is tailed incrementally (whole lines only, truncation detected);
* :class:`ExperimentRun`: an experiment directory made by :mod:`collectors.experiments` (a Trainboard
  run plus ``config.json`` / ``results.json`` / ``checkpoints/``);
* :class:`HuggingFaceRun`: a plain Trainer ``output_dir``: ``trainer_state.json`` in the dir or its
  newest ``checkpoint-*`` (read with :mod:`collectors.runformat`'s Trainer-layout functions, bare
  ``NaN`` tokens included), followed live as the training saves checkpoints;
* :class:`TensorBoardRun`: a directory of TensorBoard event files (read with tbparse).

The last two have no Trainboard collector: their metric records go through
:class:`services.detection.DashboardDetector`, so they get alerts too (read-only, labelled). Each
reader re-reads only when the files it depends on changed (a ``stat`` signature), so polling an
unchanged run is cheap. Detection of a directory's kind (:func:`detect_kind`) lives here too.
"""
from __future__ import annotations

import math
import os
import shlex
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from collectors import runformat as rf
from collectors.experiments.checkpoints import scan_checkpoints
from services import columnar
from services.detection import DashboardDetector
from services.model import (CheckpointRow, Run, RunKind, RunSummary, Series, flatten, group_records, is_number, listdir, mtime,
                            normalize_metric, stat_sig)
from services.seriescache import CacheEntry, CachedColumns, SeriesCache, default_cache, digest_range
from services.listing import TailStats, read_tail_stats

HF_MODEL_CONFIG = "config.json"
TB_EVENT_MARK = "events.out.tfevents."
HF_SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos")
HF_CONFIG_KEYS = ("train_batch_size", "max_steps", "num_train_epochs", "logging_steps", "eval_steps", "save_steps")
METRICS_CHUNK_BYTES = 8 << 20
"""Bytes of metrics.jsonl parsed per step: the decoded records of a chunk are alive at once (~4x its size
as dicts), so small chunks keep a 340 MB log's first open within a few hundred MB of RSS at the same speed."""
LIVE_DIGEST_BYTES = 4096
"""The last bytes a tailed metrics log had before its read offset, checksummed on every change: a file
rewritten in place (same inode, same or larger size) is noticed and re-read from the start."""
CONFIG_SKIP = frozenset({"v", "timestamp", "created_at", "experiment_id", "command"})
"""config.json fields that differ between any two runs by nature: left out of the config diff."""


OWN_DIRS = frozenset({rf.STATUS_DIR, rf.LOGS_DIR, rf.CONTROL_DIR, rf.SNAPSHOTS_DIR, rf.CHECKPOINTS_DIR,
                      rf.VISUALIZATIONS_DIR})
"""A run's own subdirectories: never a Trainer output dir."""


def _sig(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# --------------------------------------------------------------------------- pure helpers

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


def best_by_metric(entries: Sequence[tuple[str, Mapping[str, Any]]]) -> str | None:
    """The checkpoint with the lowest recorded eval/val loss (saved via ``metrics=``), if any. Pure."""
    best: tuple[float, str] | None = None
    for name, metrics in entries:
        for key in ("eval_loss", "val_loss", "validation_loss", "loss"):
            v = metrics.get(key)
            if is_number(v) and math.isfinite(v):
                if best is None or v < best[0]:
                    best = (float(v), name)
                break
    return best[1] if best else None


def dir_size(path: Path) -> int:
    total = 0
    try:
        for entry in os.scandir(path):
            try:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
                elif entry.is_dir(follow_symlinks=False):
                    total += dir_size(Path(entry.path))
            except OSError:
                continue
    except OSError:
        pass
    return total


def hf_checkpoint_rows(output_dir: Path, doc: Mapping[str, Any] | None) -> list[CheckpointRow]:
    """The checkpoint rows of a Trainer output dir (``best`` from its newest trainer_state.json)."""
    dirs = rf.find_checkpoints(output_dir)
    best = (doc or {}).get("best_model_checkpoint")
    best_name = Path(best).name if isinstance(best, str) else None
    latest = dirs[-1][0] if dirs else None
    return [CheckpointRow(step=step, path=str(d), size_mb=dir_size(d) / (1024 * 1024),
                          modified=mtime(d / rf.HF_TRAINER_STATE) or mtime(d), is_latest=step == latest,
                          is_best=d.name == best_name, resume_command=hf_resume_command(d.resolve()))
            for step, d in dirs]


# --------------------------------------------------------------------------- detection of kinds

def is_experiment(path: Path) -> bool:
    p = rf.RunPaths.of(path)
    if p.results.is_file() or p.checkpoint_manifest.is_file() or p.checkpoint_latest.exists():
        return True
    if p.checkpoints_dir.is_dir() and any(rf.checkpoint_step(n) is not None for n in listdir(p.checkpoints_dir)):
        return True
    if p.config.is_file():
        doc, _ = rf.read_json(p.config)
        return isinstance(doc, dict) and "experiment_id" in doc and "hardware" in doc
    return False


def is_hf_output(path: Path) -> bool:
    return any(p.is_file() for p in rf.trainer_state_files(path))


def is_tensorboard(path: Path) -> bool:
    return any(n.startswith(TB_EVENT_MARK) for n in listdir(path))


def detect_kind(path: str | os.PathLike[str]) -> RunKind | None:
    """The kind of run ``path`` is, or None when it is none of them."""
    p = Path(path)
    if not p.is_dir():
        return None
    if is_experiment(p):
        return RunKind.EXPERIMENT
    if rf.is_run_dir(p):
        return RunKind.TRAINBOARD
    if is_hf_output(p):
        return RunKind.HUGGINGFACE
    if is_tensorboard(p):
        return RunKind.TENSORBOARD
    return None


# --------------------------------------------------------------------------- Trainboard and experiment dirs

class TrainboardRun(Run):
    """A Trainboard run directory: status file read when it changed, metrics.jsonl tailed incrementally."""

    kind = RunKind.TRAINBOARD
    has_collector = True

    def __init__(self, run_id: str, root: Path, cache: SeriesCache | None | bool = True) -> None:
        super().__init__(run_id, root)
        self._metrics = rf.JsonlTailer(self.paths.metrics, chunk_bytes=METRICS_CHUNK_BYTES,
                                       columnar=columnar.parse_columns if columnar.available() else None)
        self.columnar_chunks = 0
        """Chunks of the metrics log parsed by the columnar fast path (services/columnar.py)."""
        self._cache: SeriesCache | None = default_cache() if cache is True else (cache or None)
        self._cache_offset = 0
        self._metrics_path = os.fspath(self.paths.metrics)
        self._metrics_seen: tuple[int, int, int] | None = None
        self._tail_mark: tuple[int, str | None] = (0, None)
        self.cache_info: dict[str, Any] = {"loaded": False, "offset": 0, "why": None, "parsed_bytes": 0}
        """How the series were obtained: ``loaded`` from the series cache up to ``offset`` (else ``why``
        not), and ``parsed_bytes`` of JSONL parsed by this reader since."""
        self._status_sig: tuple[int, int, int] | None = None
        self._summary_record: dict[str, Any] = {}
        self._extras_sig: Any = None
        self._alerts = rf.JsonlTailer(self.paths.alerts, known_kinds=(rf.RecordKind.ALERT.value,))
        self._alert_count = 0
        self._checkpoints: list[CheckpointRow] = []
        self._candidates: tuple[Any, list[str]] | None = None
        self._root_path = os.fspath(self.root)
        self._status_path = os.fspath(self.paths.status)
        self._alerts_path = os.fspath(self.paths.alerts)
        self._snapshots_path = os.fspath(self.paths.snapshots_dir)
        self._tail: TailStats | None = None
        """The listing's figures of the log's tail (:mod:`services.listing`), until the run is opened."""
        self._tail_sig: tuple[int, int, int] | None = None
        self._list_changes = 0

    @property
    def metrics_tailer(self) -> rf.JsonlTailer:
        return self._metrics

    # the Runs list: status, extras and the log's tail, no series (services.listing)
    @property
    def list_version(self) -> Any:
        return (self.version, self._list_changes)

    def list_refresh(self) -> bool:
        """The listing's read of a run not opened yet: status file, alert/snapshot/checkpoint listings and
        the last :data:`services.listing.TAIL_BYTES` of the metrics log; an opened run is refreshed."""
        with self._lock:
            if self.version == 0:
                changed = self._refresh_status()
                sig = self.extras_signature()
                if sig != self._extras_sig:
                    self._extras_sig = sig
                    self.read_extras()
                    changed = True
                msig = _sig(self._metrics_path)
                if self._tail is None or msig != self._tail_sig:
                    self._tail_sig = msig
                    self._tail = read_tail_stats(self._metrics_path)
                    changed = True
                if changed:
                    self._list_changes += 1
                    Run.changes += 1
                return changed
        return self.refresh()

    def list_summary(self, now: float | None = None) -> RunSummary:
        if self.version > 0 or self._tail is None:
            return self.summary(now)
        now = time.time() if now is None else now
        tail = self._tail
        steps = [s for s in (tail.last_step, (self.status or {}).get("step")) if isinstance(s, int)]
        started = self._listed_start(tail)
        updated = self.last_update()
        problems = self.all_problems()
        if tail.bad_lines:
            problems.append(f"{tail.bad_lines} malformed line(s) in the end of {rf.METRICS_LOG}"
                            + ("" if tail.complete else " (open the run for the whole log)"))
        return RunSummary(
            run_id=self.run_id, kind=self.kind.value, name=self.name, path=str(self.root), state=self.state(now),
            last_step=max(steps) if steps else None, best_eval_loss=tail.best_eval_loss,
            duration_s=(updated - started) if started is not None and updated is not None else None,
            alert_count=self.alert_count(), snapshot_count=self.snapshot_count(),
            checkpoint_count=len(self.checkpoints()), started_at=started, updated_at=updated, problems=problems,
            best_eval_partial=not tail.complete and tail.best_eval_loss is not None)

    def _listed_start(self, tail: TailStats) -> float | None:
        st = self.status or {}
        return float(st["started_at"]) if is_number(st.get("started_at")) else tail.first_time

    def _stall_times(self) -> list[float]:
        if self.version == 0 and self._tail is not None:
            return list(self._tail.train_times)
        return super()._stall_times()

    def _refresh(self) -> bool:
        changed = self._refresh_status()
        if self._tail is not None:  # listed before: status and extras were read, but never shown as read
            self._tail = None
            changed = True
        if self.version == 0 and self._metrics.state.offset == 0:
            changed = self._load_cache() or changed
        if self._rewritten_in_place():
            changed = True
        before = self._metrics.state.offset
        for records, reset in self._metrics.poll_chunks():  # one chunk's records alive at a time
            if reset:
                self.reset_series()
                self._summary_record = {}
                self._cache_offset = 0
                before = 0
                changed = True
            if isinstance(records, columnar.ColumnChunk):  # pyarrow's fast path took the chunk
                columnar.ingest_columns(self, records)
                self.columnar_chunks += 1
                changed = True
            elif records:
                self.ingest(records)
                summary_kind = rf.RecordKind.SUMMARY.value
                for rec in records:
                    if rec.get("kind") == summary_kind:
                        self._summary_record = {k: v for k, v in rec.items() if k not in ("v", "kind", "time")}
                changed = True
            del records
        if self.columnar_chunks and self._metrics.state.offset - before >= columnar.MIN_CHUNK_BYTES:
            columnar.release_memory()
        self.cache_info["parsed_bytes"] += self._metrics.state.offset - before
        self.bad_lines, self.unknown_lines = self._metrics.bad_lines, self._metrics.unknown_lines
        if self._metrics.state.offset != self._tail_mark[0]:
            self._tail_mark = (self._metrics.state.offset, self._live_digest(self._metrics.state.offset))
        if self._cache is not None and self._cache.should_save(self._metrics.state.offset, self._cache_offset):
            self._cache.save_later(self._metrics_path, self._lock, self._cache_entry)
        sig = self.extras_signature()
        if sig != self._extras_sig:
            self._extras_sig = sig
            self.read_extras()
            changed = True
        return changed

    # series cache: load on the first read, save (on the cache's thread) as the log grows
    def _load_cache(self) -> bool:
        """Take the series from the cache when it still describes the log; True when it did."""
        if self._cache is None:
            self.cache_info["why"] = "no series cache"
            return False
        entry, why = self._cache.load(self._metrics_path)
        if entry is None:
            self.cache_info["why"] = why
            return False
        self.series = {k: Series(c.steps, c.values, c.times, c.rewinds) for k, c in entry.series.items()}
        self.records_read = entry.counters.get("records_read", 0)
        self.bad_steps = entry.counters.get("bad_steps", 0)
        self._metrics.state = rf.TailState(dev=entry.dev, inode=entry.inode, size=entry.offset, offset=entry.offset)
        self._metrics.bad_lines = entry.counters.get("bad_lines", 0)
        self._metrics.unknown_lines = entry.counters.get("unknown_lines", 0)
        summary = entry.extra.get("summary")
        self._summary_record = dict(summary) if isinstance(summary, dict) else {}
        self._cache_offset = entry.offset
        self.cache_info.update(loaded=True, offset=entry.offset, why=None)
        return True

    def _cache_entry(self) -> CacheEntry | None:
        """What the cache should hold now (called on the cache's thread with this run's lock held)."""
        st = self._metrics.state
        if self._cache is None or not self._cache.should_save(st.offset, self._cache_offset):
            return None
        from services.seriescache import source_digests

        head, tail = source_digests(self._metrics_path, st.offset)
        if head is None or tail is None:
            return None
        self._cache_offset = st.offset
        return CacheEntry(offset=st.offset, dev=st.dev, inode=st.inode, head=head, tail=tail,
                          series={k: CachedColumns(s.steps, s.values, s.times, s.rewinds) for k, s in self.series.items()},
                          counters={"records_read": self.records_read, "bad_steps": self.bad_steps,
                                    "bad_lines": self._metrics.bad_lines, "unknown_lines": self._metrics.unknown_lines},
                          extra={"summary": self._summary_record})

    def _live_digest(self, offset: int) -> str | None:
        return digest_range(self._metrics_path, max(0, offset - LIVE_DIGEST_BYTES), offset) if offset else None

    def _rewritten_in_place(self) -> bool:
        """True (and the tailer restarted) when the log kept its inode and is not shorter but its bytes
        before the read offset changed: the tailer alone would read on from the old offset."""
        try:
            st = os.stat(self._metrics_path)
        except OSError:
            return False
        seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        if seen == self._metrics_seen:
            return False
        self._metrics_seen = seen
        offset, mark = self._tail_mark
        tail = self._metrics.state
        if not offset or offset != tail.offset or (st.st_dev, st.st_ino) != (tail.dev, tail.inode) \
                or st.st_size < offset or self._live_digest(offset) == mark:
            return False
        self.reset_series()
        self._summary_record = {}
        self._cache_offset = 0
        self._metrics.state = rf.TailState(dev=st.st_dev, inode=st.st_ino)
        self._metrics.bad_lines = self._metrics.unknown_lines = 0
        self._tail_mark = (0, None)
        self.cache_info["why"] = "the log was rewritten"
        return True

    def _refresh_status(self) -> bool:
        try:
            st = os.stat(self._status_path)
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            sig = None
        if sig == self._status_sig and sig is not None:
            return False
        self._status_sig = sig
        doc, problem = rf.read_json(self.paths.status)
        return self.set_status(doc, problem, sig is not None)

    # extras: snapshots count, alerts count, checkpoints (cheap listings, re-read when they change)
    def extras_signature(self) -> Any:
        # directory mtimes change when entries appear, vanish or are renamed: a few stat calls per poll
        return (_sig(self._alerts_path), _sig(self._snapshots_path), self._subdirs_signature())

    def _subdirs_signature(self) -> tuple[Any, ...]:
        root_sig = _sig(self._root_path)
        if self._candidates is None or self._candidates[0] != root_sig:
            names = [n for n in listdir(self.root) if not n.startswith(".") and n not in OWN_DIRS
                     and (self.root / n).is_dir()]
            self._candidates = (root_sig, [os.path.join(self._root_path, n) for n in names])
        return tuple(_sig(p) for p in self._candidates[1])

    def _hf_subdirs(self) -> list[str]:
        """Subdirectories holding ``checkpoint-*`` (a Trainer writing into the run, e.g. MonitorCallback with
        a save strategy); read only when :meth:`extras_signature` changed."""
        self._subdirs_signature()
        return [os.path.basename(p) for p in (self._candidates or (None, []))[1] if rf.find_checkpoints(p)]

    def read_extras(self) -> None:
        alerts, reset = self._alerts.poll()  # counted incrementally: only new lines are read
        self._alert_count = (0 if reset else self._alert_count) + len(alerts)
        rows: list[CheckpointRow] = []
        for sub in self._hf_subdirs():
            doc, _path, _problems = rf.newest_trainer_state(self.root / sub)
            rows += hf_checkpoint_rows(self.root / sub, doc)
        self._checkpoints = rows

    def alert_count(self) -> int:
        return self._alert_count

    def checkpoints(self) -> list[CheckpointRow]:
        return self._checkpoints

    def results(self) -> dict[str, Any]:
        return {**super().results(), **self._summary_record}

    def started_at(self) -> float | None:
        st = self.status or {}
        if is_number(st.get("started_at")):
            return float(st["started_at"])
        times = [s.times[0] for s in self.series.values() if len(s) and math.isfinite(s.times[0])]
        return min(times) if times else None


class ExperimentRun(TrainboardRun):
    """An experiment directory: metrics as a Trainboard run, plus config.json, results.json, checkpoints/."""

    kind = RunKind.EXPERIMENT

    def __init__(self, run_id: str, root: Path) -> None:
        super().__init__(run_id, root)
        self._config_doc: dict[str, Any] = {}
        self._results_doc: dict[str, Any] = {}
        self._extra_problems: list[str] = []

    def extras_signature(self) -> Any:
        p = self.paths
        return (super().extras_signature(), stat_sig(p.config), stat_sig(p.results), stat_sig(p.checkpoint_manifest),
                tuple(listdir(p.checkpoints_dir)), os.path.realpath(p.checkpoint_latest))

    def read_extras(self) -> None:
        super().read_extras()
        self._extra_problems = []
        self._config_doc = self._read_doc(self.paths.config)
        self._results_doc = self._read_doc(self.paths.results)
        self._checkpoints = self._read_checkpoints()
        self.problems = list(self._extra_problems)

    def _read_doc(self, path: Path) -> dict[str, Any]:
        doc, problem = rf.read_json(path)
        if problem and path.exists():
            self._extra_problems.append(problem)
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

    def config(self) -> dict[str, Any]:
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
        return cfg

    def results(self) -> dict[str, Any]:
        final = self._results_doc.get("final_metrics")
        return dict(final) if isinstance(final, dict) else super().results()

    def finished(self) -> bool:
        return bool(self._results_doc)

    def started_at(self) -> float | None:
        created = self._config_doc.get("created_at")
        return float(created) if is_number(created) else super().started_at()

    def _listed_start(self, tail: TailStats) -> float | None:
        created = self._config_doc.get("created_at")
        return float(created) if is_number(created) else super()._listed_start(tail)

    def last_update(self) -> float | None:
        times = [t for t in (super().last_update(), self._results_doc.get("finished_at")) if is_number(t)]
        return max(times) if times else None


# --------------------------------------------------------------------------- runs without the collector

class DetectedRun(Run):
    """A run no Trainboard collector wrote: re-read whole when its files change, alerts detected here."""

    has_collector = False

    def __init__(self, run_id: str, root: Path) -> None:
        super().__init__(run_id, root)
        self._sig: Any = None
        self._detector = DashboardDetector()

    def _refresh(self) -> bool:
        sig = self.signature()
        if sig == self._sig and self.version > 0:
            return False
        self._sig = sig
        self.problems = []
        records = self.read_records()
        self.reset_series()
        self.ingest(records)
        self._detector.reset()
        self._detector.feed(records)
        self.detected_alerts = list(self._detector.alerts)
        return True

    def read_records(self) -> list[dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError


class HuggingFaceRun(DetectedRun):
    """A plain Trainer ``output_dir``: log_history of the newest trainer_state.json, checkpoints, model config.

    Trainer rewrites trainer_state.json in every ``checkpoint-<N>/`` it saves and in ``output_dir`` at the
    end, so watching those files follows a training live with no change to it.
    """

    kind = RunKind.HUGGINGFACE

    def __init__(self, run_id: str, root: Path) -> None:
        super().__init__(run_id, root)
        self._doc: dict[str, Any] = {}
        self._rows: list[CheckpointRow] = []
        self._summary_extra: dict[str, Any] = {}
        self._bad_entries = 0

    def signature(self) -> Any:
        ckpts = rf.find_checkpoints(self.root)
        return (tuple(d.name for _, d in ckpts), stat_sig(self.root / rf.HF_TRAINER_STATE),
                *(stat_sig(d / rf.HF_TRAINER_STATE) for _, d in ckpts[-2:]))

    def read_records(self) -> list[dict[str, Any]]:
        doc, _path, problems = rf.newest_trainer_state(self.root)
        self.problems += problems
        if doc is None:
            if not problems:
                self.problems.append(f"no readable {rf.HF_TRAINER_STATE} in {self.root} or its checkpoints yet")
            doc = self._doc  # keep showing the last good read (the newest file may be half-written)
        self._doc = doc
        self._rows = hf_checkpoint_rows(self.root, doc)
        records, bad = rf.records_from_log_history(doc.get("log_history") or [])
        summary = [r for r in records if r["kind"] == rf.RecordKind.SUMMARY.value]
        self._summary_extra = {k: summary[-1][k] for k in HF_SUMMARY_KEYS if k in summary[-1]} if summary else {}
        metrics = [r for r in records if r["kind"] in (rf.RecordKind.TRAIN.value, rf.RecordKind.EVAL.value)]
        self._bad_entries = bad
        return metrics

    def _refresh(self) -> bool:
        changed = super()._refresh()
        if changed:
            self.bad_steps = self._bad_entries
        return changed

    def checkpoints(self) -> list[CheckpointRow]:
        return self._rows

    def _files_mtime(self) -> float | None:
        times = [t for t in [mtime(self.root / rf.HF_TRAINER_STATE)] + [r.modified for r in self._rows] if t is not None]
        return max(times) if times else None

    def finished(self) -> bool:
        gs, ms = self._doc.get("global_step"), self._doc.get("max_steps")
        return bool(self._summary_extra) or (isinstance(gs, int) and isinstance(ms, int) and 0 < ms <= gs)

    def status_config(self) -> dict[str, Any]:
        ms = self._doc.get("max_steps")
        return {"max_steps": ms} if isinstance(ms, int) else {}

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {k: self._doc[k] for k in HF_CONFIG_KEYS if k in self._doc}
        path = (Path(self._rows[-1].path) / HF_MODEL_CONFIG) if self._rows else self.root / HF_MODEL_CONFIG
        model_cfg, _ = rf.read_json(path)
        if isinstance(model_cfg, dict):
            cfg.update(flatten({k: v for k, v in model_cfg.items() if not k.startswith("_")}, "model."))
        return cfg

    def results(self) -> dict[str, Any]:
        return {**super().results(), **self._summary_extra}

    def duration_s(self) -> float | None:
        runtime = self._summary_extra.get("train_runtime")
        return float(runtime) if is_number(runtime) else None

    def started_at(self) -> float | None:
        return None


def tb_key(split: str, tag: str) -> tuple[str, str]:
    """(record kind, field name) of a normalised TensorBoard tag, in the collector's naming (eval
    fields carry the ``eval_`` prefix Trainer gives them), so pages find ``train/loss`` and
    ``eval/eval_loss`` whatever tool logged them. Pure."""
    if split == "eval":
        return rf.RecordKind.EVAL.value, f"eval_{tag}"
    return rf.RecordKind.TRAIN.value, tag


class TensorBoardRun(DetectedRun):
    """A directory of TensorBoard event files, read with tbparse (re-read whole when a file grows)."""

    kind = RunKind.TENSORBOARD

    def __init__(self, run_id: str, root: Path) -> None:
        super().__init__(run_id, root)
        self._hparams: dict[str, Any] = {}

    def event_files(self) -> list[Path]:
        return [self.root / n for n in listdir(self.root) if n.startswith(TB_EVENT_MARK)]

    def signature(self) -> Any:
        return tuple(stat_sig(p) for p in self.event_files())

    def read_records(self) -> list[dict[str, Any]]:
        points: list[tuple[str, str, int, float, float | None]] = []
        self._hparams = {}
        try:
            from tbparse import SummaryReader

            reader = SummaryReader(str(self.root), extra_columns={"wall_time"})
            df = reader.scalars
            if len(df):
                for step, tag, value, wall in zip(df["step"].tolist(), df["tag"].tolist(), df["value"].tolist(),
                                                  df["wall_time"].tolist()):
                    norm = normalize_metric(None, str(tag))
                    if norm is not None:
                        kind, name = tb_key(*norm)
                        points.append((kind, name, int(step), float(value), float(wall)))
            try:
                hp = reader.hparams
                if len(hp):
                    self._hparams = {str(t): v for t, v in zip(hp["tag"].tolist(), hp["value"].tolist())}
            except Exception:  # noqa: BLE001 - hparams are optional; scalars still show
                pass
        except Exception as exc:  # noqa: BLE001 - a damaged event file is shown as a problem, not a crash
            self.problems.append(f"cannot read TensorBoard events in {self.root}: {type(exc).__name__}: {exc}")
        return group_records(points)

    def _files_mtime(self) -> float | None:
        return max((t for t in (mtime(p) for p in self.event_files()) if t is not None), default=None)

    def config(self) -> dict[str, Any]:
        return dict(self._hparams)

    def started_at(self) -> float | None:
        times = [s.times[0] for s in self.series.values() if len(s) and math.isfinite(s.times[0])]
        return min(times) if times else None

    def duration_s(self) -> float | None:
        starts = [s.times[0] for s in self.series.values() if len(s) and math.isfinite(s.times[0])]
        ends = [s.times[-1] for s in self.series.values() if len(s) and math.isfinite(s.times[-1])]
        return (max(ends) - min(starts)) if starts and ends else None


READERS: dict[RunKind, type[Run]] = {
    RunKind.TRAINBOARD: TrainboardRun, RunKind.EXPERIMENT: ExperimentRun,
    RunKind.HUGGINGFACE: HuggingFaceRun, RunKind.TENSORBOARD: TensorBoardRun,
}


def open_run(path: str | os.PathLike[str], run_id: str | None = None) -> Run | None:
    """A reader for the run at ``path`` (kind detected), not read yet (call ``refresh()``); None when it is
    not a run."""
    kind = detect_kind(path)
    if kind is None:
        return None
    return READERS[kind](run_id or Path(path).name, Path(path))
