"""The dashboard's reading of per-rank health: ``ranks/rank-N.jsonl`` -> a :class:`RanksView` (issue 13).

Each process of a multi-process run appends its own file (see :mod:`collectors.ranks`). Any of them may
be missing (a rank that has not started, or whose node does not share the filesystem), truncated, half
written or replaced: a :class:`~collectors.runformat.JsonlTailer` per file reads whole lines only,
and what cannot be read becomes a problem in words. The view is pure over the records kept (the newest
:data:`MAX_POINTS` per rank), so the Overview's Ranks panel and its tests read the same numbers.
"""
from __future__ import annotations

import math
import os
import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from collectors import runformat as rf
from collectors.ranks import SILENT_AFTER_S, rank_time

MAX_POINTS = 2000
"""Records kept per rank (the heatmap shows the newest :data:`HEATMAP_STEPS` log steps)."""
HEATMAP_STEPS = 300
MAX_READERS = 64


@dataclass
class RankRow:
    """One rank's latest numbers, for the panel's table."""

    rank: int
    step: int | None
    time_s: float | None
    step_time_s: float | None
    data_wait_s: float | None
    rss_gb: float | None
    cuda_allocated_gb: float | None
    cuda_peak_gb: float | None
    loss: float | None
    non_finite_step: int | None
    age_s: float | None
    host: str | None
    node: int | None
    finished: bool = False

    @property
    def silent(self) -> bool:
        return not self.finished and self.age_s is not None and self.age_s > SILENT_AFTER_S


@dataclass
class RanksView:
    """What the Ranks panel shows. ``multi`` is False for a single-process run (the panel stays hidden)."""

    multi: bool = False
    world_size: int | None = None
    rows: list[RankRow] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    matrix: list[list[float | None]] = field(default_factory=list)
    """``matrix[i][j]``: rank ``rows[i].rank``'s time per step at log step ``steps[j]`` (None: no record)."""
    slowest: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def non_finite(self) -> list[int]:
        return [r.rank for r in self.rows if r.non_finite_step is not None]

    @property
    def missing(self) -> list[int]:
        """Ranks the world should have that never wrote a record."""
        seen = {r.rank for r in self.rows}
        return [r for r in range(self.world_size or 0) if r not in seen]


class RanksReader:
    """Follows one run's ``ranks/`` directory; ``poll()`` reads what was appended since the last call."""

    def __init__(self, ranks_dir: Path) -> None:
        self.dir = Path(ranks_dir)
        self.records: dict[int, list[dict[str, Any]]] = {}
        self.mtimes: dict[int, float] = {}
        self.finished: set[int] = set()
        self.nf_first: dict[int, int] = {}
        self.bad_lines = 0
        self.problem: str | None = None
        self._tailers: dict[int, rf.JsonlTailer] = {}
        self.version = 0
        self._lock = threading.Lock()

    def poll(self) -> bool:
        """Read new lines of every rank file; True when anything changed."""
        with self._lock:
            try:
                names = sorted(os.listdir(self.dir))
                self.problem = None
            except FileNotFoundError:
                return False
            except OSError as exc:
                self.problem = f"cannot list {self.dir}: {exc.strerror or exc}"
                return False
            changed = False
            for name in names:
                r = rf.rank_of_file(name)
                if r is None:
                    continue
                path = self.dir / name
                try:
                    mt = os.stat(path).st_mtime
                except OSError:
                    continue
                if self.mtimes.get(r) != mt:
                    self.mtimes[r] = mt
                    changed = True
                tailer = self._tailers.setdefault(r, rf.JsonlTailer(path, known_kinds={rf.RecordKind.RANK.value}))
                try:
                    got, reset = tailer.poll()
                except OSError as exc:
                    self.problem = f"cannot read {path}: {exc.strerror or exc}"
                    continue
                if reset:
                    self.records.pop(r, None)
                    self.nf_first.pop(r, None)
                    self.finished.discard(r)
                    changed = True
                self.bad_lines = sum(t.bad_lines for t in self._tailers.values())
                for rec in got:
                    if rec.get("rank") != r or not isinstance(rec.get("step"), int):
                        continue  # a line from elsewhere, or without a step: skipped
                    changed = True
                    if rec.get("final"):
                        self.finished.add(r)
                        continue
                    if rec.get("non_finite"):
                        self.nf_first.setdefault(r, rec["step"])
                    lst = self.records.setdefault(r, [])
                    lst.append(rec)
                    if len(lst) > MAX_POINTS:
                        del lst[: len(lst) - MAX_POINTS]
            if changed:
                self.version += 1
            return changed


_READERS: dict[str, RanksReader] = {}
_READERS_LOCK = threading.Lock()


def reader_for(run_root: Path) -> RanksReader:
    """The (cached) reader of a run's ``ranks/`` directory."""
    key = str(Path(run_root))
    with _READERS_LOCK:
        rd = _READERS.get(key)
        if rd is None:
            if len(_READERS) >= MAX_READERS:
                _READERS.pop(next(iter(_READERS)))
            rd = _READERS[key] = RanksReader(rf.RunPaths.of(run_root).ranks_dir)
        return rd


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def ranks_view(reader: RanksReader, status: Mapping[str, Any] | None, now: float) -> RanksView:
    """The panel's data from what the reader holds (pure apart from reading its fields)."""
    world = (status or {}).get("world") if isinstance((status or {}).get("world"), Mapping) else {}
    ws = world.get("world_size") if isinstance(world.get("world_size"), int) else None
    ranks = sorted(set(reader.records) | set(reader.mtimes))
    view = RanksView(multi=(ws or 0) > 1 or len(ranks) > 1, world_size=ws or (len(ranks) or None))
    if reader.problem:
        view.problems.append(reader.problem)
    if reader.bad_lines:
        view.problems.append(f"{reader.bad_lines} malformed line(s) skipped in {rf.RANKS_DIR}/")
    steps: set[int] = set()
    for r in ranks:
        for rec in reader.records.get(r, [])[-HEATMAP_STEPS:]:
            steps.add(rec["step"])
    view.steps = sorted(steps)[-HEATMAP_STEPS:]
    index = {s: j for j, s in enumerate(view.steps)}
    for r in ranks:
        recs = reader.records.get(r, [])
        row_vals: list[float | None] = [None] * len(view.steps)
        for rec in recs[-HEATMAP_STEPS:]:
            j = index.get(rec["step"])
            if j is not None:
                row_vals[j] = rank_time(rec)
        last = recs[-1] if recs else {}
        mt = reader.mtimes.get(r)
        view.rows.append(RankRow(
            rank=r, step=last.get("step"), time_s=rank_time(last) if last else None,
            step_time_s=_num(last.get("step_time_s")), data_wait_s=_num(last.get("data_wait_s")),
            rss_gb=_num(last.get("rss_gb")), cuda_allocated_gb=_num(last.get("cuda_allocated_gb")),
            cuda_peak_gb=_num(last.get("cuda_peak_gb")),
            loss=last.get("loss") if isinstance(last.get("loss"), float) else None,
            non_finite_step=reader.nf_first.get(r), age_s=(now - mt) if mt is not None else None,
            host=last.get("host") if isinstance(last.get("host"), str) else None,
            node=last.get("node") if isinstance(last.get("node"), int) else None, finished=r in reader.finished))
        view.matrix.append(row_vals)
    view.slowest = slowest_now(view)
    return view


def slowest_now(view: RanksView) -> dict[str, Any] | None:
    """The slowest rank at the newest log step every rank has a time for (else the newest with two or
    more), against the median of the other ranks (pure)."""
    cols = []
    for j in range(len(view.steps) - 1, -1, -1):
        col = {row.rank: view.matrix[i][j] for i, row in enumerate(view.rows) if view.matrix[i][j] is not None}
        if len(col) >= 2:
            cols.append((j, col))
    full = [c for c in cols if len(c[1]) == len(view.rows)]
    pick = full[0] if full else (cols[0] if cols else None)
    if pick is None:
        return None
    j, col = pick
    r = max(col, key=lambda k: col[k])
    med = statistics.median(v for k, v in col.items() if k != r)
    return {"rank": r, "step": view.steps[j], "time_s": col[r], "median_s": med,
            "ratio": col[r] / med if med > 0 else None}
