"""What the Runs list needs from a run's metrics log without loading its series: its last lines.

A folder of 2,000 runs is listed on every open of the Runs page; reading every run's whole
``metrics.jsonl`` into series for that (what opening a run does) costs seconds, and for large runs
gigabytes. The listing reads instead each run's status file and the *tail* of its log, at most
:data:`TAIL_BYTES` (whole lines only) plus its first line (for the start time), and keeps the figures
of :class:`TailStats`. A run's series are read when a page opens that run; from then on its row comes
from the series (exact).

When the tail covers the whole log (every small run) the figures are exact. For a larger log never
opened, the best eval loss is the best of the evaluations in the tail: the true best is at most that,
which the row shows as ``≤ value`` (:attr:`TailStats.complete`). Everything here is pure or reads one
file; :class:`services.readers.TrainboardRun` uses it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from collectors import runformat as rf
from services.model import METRIC_KINDS, STALL_TIMES, is_number, normalize_metric

TAIL_BYTES = 64 * 1024
"""How much of the end of a metrics log the listing reads (a few hundred records of a typical run)."""
HEAD_BYTES = 4096
"""How much of its start is read for the first record's time (one line)."""


@dataclass
class TailStats:
    """Figures of a metrics log taken from its first line and its last :data:`TAIL_BYTES`.

    Attributes:
        complete: the tail covers the whole log, so every figure is exact.
        last_step: step of the newest train or eval record (newest write wins, like the series).
        best_eval_loss: lowest finite eval loss in the tail (of the whole log when ``complete``).
        first_time: wall time of the first record of the log.
        train_times: wall times of the newest train records with a loss (at most :data:`STALL_TIMES`),
            for the stall rule.
        bad_lines: malformed lines in the part read.
        summary: the fields of the newest ``summary`` record in the tail.
    """

    complete: bool = True
    last_step: int | None = None
    best_eval_loss: float | None = None
    first_time: float | None = None
    train_times: list[float] = field(default_factory=list)
    bad_lines: int = 0
    summary: dict[str, object] = field(default_factory=dict)


def read_window(path: str | os.PathLike[str], tail_bytes: int = TAIL_BYTES,
                head_bytes: int = HEAD_BYTES) -> tuple[bytes, bytes, bool]:
    """(first line, whole lines of the tail, whether the tail is the whole file) of a log; empty when it
    cannot be read. A line still being written (no newline yet) is left out, as the tailer does."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = max(0, size - tail_bytes)
            fh.seek(start)
            tail = fh.read(size - start)
            head = b""
            if start > 0:
                fh.seek(0)
                head = fh.read(head_bytes)
    except OSError:
        return b"", b"", True
    end = tail.rfind(b"\n")
    tail = tail[: end + 1] if end >= 0 else b""
    if start > 0:
        nl = tail.find(b"\n")
        tail = tail[nl + 1:] if nl >= 0 else b""  # the first line is cut by the window: not a record
        nl = head.find(b"\n")
        head = head[: nl + 1] if nl >= 0 else b""
    return head, tail, start == 0


def tail_stats(head: bytes, tail: bytes, complete: bool) -> TailStats:
    """The listing's figures from the bytes :func:`read_window` returned. Pure.

    A ``resume`` record at step R supersedes the evaluations logged after R before it (as the series do).
    """
    out = TailStats(complete=complete)
    parsed = rf.parse_lines(tail)
    out.bad_lines = parsed.bad_lines
    evals: list[tuple[float, float]] = []
    last: dict[str, float] = {}
    times: list[float] = []
    first = parsed.records[0] if parsed.records else None
    if head:
        got = rf.parse_lines(head).records
        first = got[0] if got else first
    if first is not None and is_number(first.get("time")) and math.isfinite(first["time"]):
        out.first_time = float(first["time"])
    for rec in parsed.records:
        kind = rec.get("kind")
        step = rec.get("step")
        if kind == rf.RecordKind.RESUME.value and is_number(step):
            evals = [(s, v) for s, v in evals if s <= step]
            last = {k: min(s, float(step)) for k, s in last.items()}
            continue
        if kind == rf.RecordKind.SUMMARY.value:
            out.summary = {k: v for k, v in rec.items() if k not in ("v", "kind", "time")}
            continue
        if kind not in METRIC_KINDS or not is_number(step) or not math.isfinite(step):
            continue
        last[kind] = float(step)
        for name, value in rec.items():
            if is_number(value) and normalize_metric(kind, name) == ("eval", "loss"):
                if evals and evals[-1][0] >= step:  # an older-or-equal step replaces the tail (newest write wins)
                    evals = [(s, v) for s, v in evals if s < step]
                evals.append((float(step), float(value)))
        if kind == rf.RecordKind.TRAIN.value and "loss" in rec:
            t = rec.get("time")
            if is_number(t) and math.isfinite(t) and t > 0:
                times.append(float(t))
    finite = [v for _, v in evals if math.isfinite(v)]
    out.best_eval_loss = min(finite) if finite else None
    out.last_step = int(max(last.values())) if last else None
    out.train_times = times[-STALL_TIMES:]
    return out


def read_tail_stats(path: str | os.PathLike[str], tail_bytes: int = TAIL_BYTES) -> TailStats:
    """:func:`tail_stats` of the log at ``path`` (an empty, complete one when it is missing)."""
    return tail_stats(*read_window(path, tail_bytes))
