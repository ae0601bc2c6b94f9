"""Metrics logging for experiment loops, in the very format the dashboard reads.

``MetricsLogger`` appends one record per logged step to ``logs/metrics.jsonl`` through
:class:`collectors.runformat.JsonlWriter` (records built with ``make_record``: schema version, kind
``train`` or ``eval``, ``step``, ``time`` and the metric names), and a human-readable line to
``logs/training.log``. An experiment directory is therefore a Trainboard run the dashboard can watch.
"""
from __future__ import annotations

import logging
import math
import os
import time
from datetime import datetime
from typing import Any, Mapping

from collectors import runformat as rf
from collectors.experiments.layout import run_root_of
from collectors.runtime import Guard, as_number, is_main_process

logger = logging.getLogger("trainboard")

DEFAULT_LOG_INTERVAL = 10
RESERVED_FIELDS = ("v", "kind", "step", "time")
"""Record fields that are not metrics (metric names may not use them)."""
LOGGED_KINDS = frozenset({rf.RecordKind.TRAIN.value, rf.RecordKind.EVAL.value, rf.RecordKind.SUMMARY.value})


def format_value(value: Any) -> str:
    """A metric value for the human-readable log: 4 significant digits, scientific when tiny or huge."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}"


def format_line(record: Mapping[str, Any]) -> str:
    """One ``training.log`` line: local time, kind, step, then ``name=value`` pairs."""
    ts = datetime.fromtimestamp(record.get("time") or time.time()).isoformat(sep=" ", timespec="seconds")
    pairs = " | ".join(f"{k}={format_value(v)}" for k, v in record.items() if k not in RESERVED_FIELDS)
    return f"{ts} [{record.get('kind')}] step {record.get('step')}" + (f" | {pairs}" if pairs else "")


def summarize(records: list[Mapping[str, Any]]) -> dict[str, Any]:
    """``total_steps`` plus ``<metric>_final``, ``_min``, ``_mean`` for every numeric metric. Pure.

    Non-finite values are left out of min and mean (they stay visible as ``_final``).
    """
    summary: dict[str, Any] = {"total_steps": 0}
    steps = [r["step"] for r in records if isinstance(r.get("step"), int)]
    if steps:
        summary["total_steps"] = max(steps)
    series: dict[str, list[float]] = {}
    for r in records:
        for k, v in r.items():
            if k in RESERVED_FIELDS or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            series.setdefault(k, []).append(float(v))
    for k, values in series.items():
        finite = [v for v in values if math.isfinite(v)]
        summary[f"{k}_final"] = values[-1]
        summary[f"{k}_min"] = min(finite) if finite else math.nan
        summary[f"{k}_mean"] = sum(finite) / len(finite) if finite else math.nan
    return summary


class MetricsLogger:
    """Appends metrics to ``logs/metrics.jsonl`` (dashboard format) and ``logs/training.log`` (for people).

    Args:
        log_dir: the experiment's ``logs/`` directory (as ``create_experiment_directory`` returns it) or
            the experiment directory itself; both write ``<experiment>/logs/``.
        log_interval: ``should_log(step)`` is true every this many steps (default 10).
        main_process: write from this process; default None means "world rank is 0".

    Raises:
        ValueError: when ``log_interval`` is not a positive integer or ``log_dir`` is empty or a file.

    Example:
        >>> logger = MetricsLogger(dirs["logs"], log_interval=10)     # doctest: +SKIP
        >>> if logger.should_log(step):
        ...     logger.log_metrics(step, {"loss": loss.item(), "learning_rate": lr})
    """

    def __init__(self, log_dir: str | os.PathLike[str], log_interval: int = DEFAULT_LOG_INTERVAL, *,
                 main_process: bool | None = None) -> None:
        if log_dir is None or not str(log_dir).strip():
            raise ValueError("MetricsLogger(log_dir=...) needs a directory path; got an empty value")
        if not isinstance(log_interval, int) or isinstance(log_interval, bool) or log_interval < 1:
            raise ValueError(f"MetricsLogger(log_interval=...) must be a positive integer; got {log_interval!r}")
        root = run_root_of(log_dir, rf.LOGS_DIR)
        self.paths = rf.RunPaths.of(root)
        if self.paths.logs_dir.exists() and not self.paths.logs_dir.is_dir():
            raise ValueError(f"MetricsLogger log_dir {str(self.paths.logs_dir)!r} is not a directory")
        self.log_dir = self.paths.logs_dir
        self.metrics_file = self.paths.metrics
        self.text_file = self.paths.training_log
        self.log_interval = log_interval
        self.is_main = is_main_process(main_process)
        self.guard = Guard(logger)
        self.bad_lines = 0
        self._writer: rf.JsonlWriter | None = None
        self._text: Any = None

    def should_log(self, step: int) -> bool:
        """True every ``log_interval`` steps, step 0 included (the starting loss is worth seeing)."""
        return step % self.log_interval == 0

    def log_metrics(self, step: int, metrics: Mapping[str, Any], flush: bool = True, *,
                    kind: rf.RecordKind | str | None = None) -> dict[str, Any] | None:
        """Append one record; returns it (None on non-main processes or when the disk refused it).

        Args:
            step: the training step (non-negative integer).
            metrics: metric name -> value; tensors and NumPy scalars are converted. Names ``eval_*``
                make an ``eval`` record unless ``kind`` says otherwise.
            flush: push the lines to the OS now (default True) so a crash loses nothing.
            kind: ``"train"``, ``"eval"`` or ``"summary"`` to override the automatic choice.

        Raises:
            ValueError: for a negative or non-integer step, a non-mapping ``metrics``, a metric named
                like a record field (v, kind, step, time) or an unknown ``kind``.
        """
        step = as_number(step)
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"log_metrics(step=...) must be a non-negative integer; got {step!r}")
        if not isinstance(metrics, Mapping):
            raise ValueError(f"log_metrics(metrics=...) must be a dict of name -> value; got {type(metrics).__name__}")
        clash = [k for k in metrics if k in RESERVED_FIELDS]
        if clash:
            raise ValueError(f"log_metrics: metric names {clash} are reserved record fields ({', '.join(RESERVED_FIELDS)})")
        clean = {str(k): as_number(v) for k, v in metrics.items()}
        if kind is None:
            rec_kind = rf.classify(clean)
        else:
            value = kind.value if isinstance(kind, rf.RecordKind) else kind
            if value not in LOGGED_KINDS:
                raise ValueError(f"log_metrics(kind=...) must be one of train, eval, summary; got {kind!r}")
            rec_kind = rf.RecordKind(value)
        record = rf.make_record(rec_kind, step=step, time=time.time(), **clean)
        if not self.is_main:
            return None
        ok = self.guard.run("appending to metrics.jsonl", self._append, record, flush, default=False)
        return record if ok else None

    def _append(self, record: dict[str, Any], flush: bool) -> bool:
        if self._writer is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = rf.JsonlWriter(self.metrics_file, flush=False)
            self._text = open(self.text_file, "a", encoding="utf-8")
        self._writer.append(record)
        self._text.write(format_line(record) + "\n")
        if flush:
            self._writer.flush()
            self._text.flush()
        return True

    def flush(self) -> None:
        """Push buffered lines to the OS."""
        if self._writer is not None:
            self.guard.run("flushing metrics.jsonl", self._writer.flush)
            self.guard.run("flushing training.log", self._text.flush)

    def close(self) -> None:
        """Flush and close both files (logging again reopens them)."""
        if self._writer is not None:
            self.guard.run("closing metrics.jsonl", self._writer.close)
            self.guard.run("closing training.log", self._text.close)
            self._writer, self._text = None, None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- reading back
    def load_metrics(self) -> list[dict[str, Any]]:
        """Every metrics record in the file, in order; invalid lines are skipped with a warning.

        Each entry is the record as written: ``kind``, ``step``, ``time`` and the metrics.
        """
        self.flush()
        try:
            data = self.metrics_file.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            logger.warning("Trainboard: cannot read %s: %s", self.metrics_file, exc)
            return []
        end = data.rfind(b"\n")
        complete, tail = (data[: end + 1], data[end + 1:]) if end >= 0 else (b"", data)
        parsed = rf.parse_lines(complete, known_kinds=None)
        bad = parsed.bad_lines + (1 if tail.strip() else 0)
        records = [r for r in parsed.records if r.get("kind") in LOGGED_KINDS]
        self.bad_lines = bad
        if bad:
            logger.warning("Trainboard: skipped %d invalid line(s) in %s", bad, self.metrics_file)
        return records

    def get_latest_step(self) -> int | None:
        """The highest step logged so far, or None when nothing was logged."""
        steps = [r["step"] for r in self.load_metrics() if isinstance(r.get("step"), int)]
        return max(steps) if steps else None

    def get_metrics_summary(self) -> dict[str, Any]:
        """``total_steps`` and ``<metric>_final``, ``<metric>_min``, ``<metric>_mean`` of every metric logged."""
        return summarize(self.load_metrics())

