"""The dashboard's view of one run's samples: ``logs/samples.jsonl`` tailed, ``status/training_detail.json`` read.

Used by the Samples page (callbacks/samples.py). Each run gets one :class:`SamplesHistory`, kept on the
Flask server's config next to the RunCatalog, so every browser tab shares the tailing work. Reading never
raises: a missing, empty, half-written or malformed file becomes a problem string the page shows.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from collectors import runformat as rf
from services.model import drop_rolled_back

MAX_HISTORY = 10_000
"""Most sample records kept in memory per run (the oldest are dropped beyond it)."""
HISTORY_KEY = "TRAINBOARD_SAMPLES"
SAMPLE_KINDS = frozenset({rf.RecordKind.SAMPLE.value})


class SamplesHistory:
    """The samples of one run, brought up to date by :meth:`refresh`.

    Attributes:
        records: sample records in file order (at most :data:`MAX_HISTORY`).
        detail: the latest detail document (``None`` before any or when unreadable).
        detail_problem: why the detail file could not be read (``None`` when fine or simply absent).
        version: increases whenever anything shown changed.
        bad_lines: malformed lines skipped in samples.jsonl.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.paths = rf.RunPaths.of(root)
        self.records: list[dict[str, Any]] = []
        self.detail: dict[str, Any] | None = None
        self.detail_problem: str | None = None
        self.version = 0
        self._tailer = rf.JsonlTailer(self.paths.samples, known_kinds=SAMPLE_KINDS)
        self._detail_sig: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._superseded: tuple[int, int] | None = None

    def apply_resumes(self, resumes: Any) -> bool:
        """Drop the samples a resumed training rolled back (written before a resume, at a later step;
        issue 11). Cheap when nothing is new; True when samples were dropped."""
        if not resumes:
            return False
        with self._lock:
            key = (len(resumes), len(self.records))
            if key == self._superseded:
                return False
            before = len(self.records)
            self.records = list(drop_rolled_back(self.records, resumes))  # type: ignore[arg-type]
            self._superseded = (len(resumes), len(self.records))
            if len(self.records) != before:
                self.version += 1
                return True
            return False

    @property
    def bad_lines(self) -> int:
        return self._tailer.bad_lines

    def refresh(self) -> bool:
        """Read what is new; True when something changed."""
        with self._lock:
            changed = self._refresh_detail()
            records, reset = self._tailer.poll()
            if reset:
                self.records = []
                changed = True
            good = [r for r in records if isinstance(r.get("step"), (int, float)) and not isinstance(r.get("step"), bool)]
            if good:
                self.records.extend(good)
                if len(self.records) > MAX_HISTORY:
                    del self.records[: len(self.records) - MAX_HISTORY]
                changed = True
            if changed:
                self.version += 1
            return changed

    def _refresh_detail(self) -> bool:
        try:
            st = os.stat(self.paths.detail)
            sig: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            sig = None
        if sig == self._detail_sig:
            return False
        self._detail_sig = sig
        if sig is None:
            changed = self.detail is not None or self.detail_problem is not None
            self.detail, self.detail_problem = None, None
            return changed
        doc, problem = rf.read_json(self.paths.detail)
        if doc is not None and not isinstance(doc, dict):
            doc, problem = None, f"{self.paths.detail} does not hold a JSON object"
        changed = problem != self.detail_problem or (doc is not None and doc != self.detail)
        self.detail_problem = problem
        if doc is not None:
            self.detail = doc
        return changed


_lock = threading.Lock()


def history_for(app: Any, root: str | os.PathLike[str]) -> SamplesHistory:
    """The app's shared :class:`SamplesHistory` for the run at ``root`` (created on first use)."""
    with _lock:
        registry: dict[Path, SamplesHistory] = app.server.config.setdefault(HISTORY_KEY, {})
        key = Path(root)
        hist = registry.get(key)
        if hist is None:
            hist = registry[key] = SamplesHistory(key)
        return hist
