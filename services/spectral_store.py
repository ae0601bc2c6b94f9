"""The dashboard's live view of a run's spectral metrics (logs/spectral.jsonl) and spectral alerts.

Runs are resolved through the app's :class:`services.catalog.RunCatalog` (so only runs it lists can be
read), then ``spectral.jsonl`` and ``alerts.jsonl`` are followed with the tailers of
:mod:`collectors.runformat`: complete lines only, truncation and replacement detected, malformed lines
counted. Each layer keeps its measurements as compact columns, so a long run stays small.
"""
from __future__ import annotations

import bisect

import math
import threading
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from collectors import runformat as rf
from collectors.spectral import ALERT_CATEGORY, METRIC_NAMES, Mode, SVDMetrics, SwitchThresholds, parse_mode
from services.catalog import RunCatalog

MAX_ALERTS = 500
"""Spectral alerts kept per run for the feed (the newest)."""
STORE_KEY = "TRAINBOARD_SPECTRAL_STORE"


@dataclass
class LayerSeries:
    """One layer's measurements as parallel columns (steps ascending as written)."""

    steps: array = field(default_factory=lambda: array("d"))
    principal_alignment: array = field(default_factory=lambda: array("d"))
    minor_alignment: array = field(default_factory=lambda: array("d"))
    subspace_angle: array = field(default_factory=lambda: array("d"))
    reconstruction_error: array = field(default_factory=lambda: array("d"))
    r: array = field(default_factory=lambda: array("d"))
    low_rank: array = field(default_factory=lambda: array("b"))
    latest: dict[str, Any] = field(default_factory=dict)

    def append(self, m: SVDMetrics, record: dict[str, Any]) -> None:
        self.steps.append(float(m.step))
        for name in METRIC_NAMES:
            getattr(self, name).append(float(getattr(m, name)))
        self.r.append(float("nan") if m.r is None else float(m.r))
        self.low_rank.append(1 if m.mode == Mode.LOW_RANK else 0)
        self.latest = record

    def roll_back_from(self, step: float) -> None:
        """Drop the measurements at or after ``step``: a resumed training measures them again (issue 11);
        the ones before it stay."""
        i = bisect.bisect_left(self.steps, step)
        for col in ("steps", *METRIC_NAMES, "r", "low_rank"):
            del getattr(self, col)[i:]

    def __len__(self) -> int:
        return len(self.steps)

    def metrics_at(self, i: int, layer: str) -> SVDMetrics:
        r = self.r[i]
        return SVDMetrics(step=int(self.steps[i]), layer_name=layer, mode=Mode.LOW_RANK if self.low_rank[i] else Mode.FULL,
                          r=None if math.isnan(r) else int(r), principal_alignment=self.principal_alignment[i],
                          minor_alignment=self.minor_alignment[i], subspace_angle=self.subspace_angle[i],
                          reconstruction_error=self.reconstruction_error[i])

    def switches(self) -> list[tuple[float, str, float]]:
        """Mode changes as (step, new mode, r)."""
        out = []
        for i in range(1, len(self.low_rank)):
            if self.low_rank[i] != self.low_rank[i - 1]:
                out.append((self.steps[i], Mode.LOW_RANK.value if self.low_rank[i] else Mode.FULL.value, self.r[i]))
        return out


class SpectralRunData:
    """Everything read so far from one run's spectral log and its spectral alerts.

    Attributes:
        layers: layer name -> :class:`LayerSeries`.
        alerts: the newest spectral alert records (category ``spectral``), oldest first.
        thresholds: the thresholds the collector recorded last (defaults before any record).
        version: increases whenever something new was read.
        bad_lines / unknown_lines: lines skipped in spectral.jsonl (malformed; unknown kind or newer format).
    """

    def __init__(self, paths: rf.RunPaths) -> None:
        self.paths = paths
        self.layers: dict[str, LayerSeries] = {}
        self.alerts: deque[dict[str, Any]] = deque(maxlen=MAX_ALERTS)
        self.thresholds = SwitchThresholds()
        self.version = 0
        self.invalid_records = 0
        self._spectral = rf.JsonlTailer(paths.spectral, known_kinds={rf.RecordKind.SPECTRAL.value})
        self._alerts = rf.JsonlTailer(paths.alerts, known_kinds={rf.RecordKind.ALERT.value})
        self._lock = threading.Lock()

    @property
    def bad_lines(self) -> int:
        return self._spectral.bad_lines

    @property
    def exists(self) -> bool:
        return self.paths.spectral.is_file()

    def refresh(self) -> bool:
        """Read whatever is new; True when something changed."""
        with self._lock:
            changed = False
            records, reset = self._spectral.poll()
            if reset:
                self.layers.clear()
                self.invalid_records = 0
                changed = True
            if records:
                self._ingest(records)
                changed = True
            alerts, areset = self._alerts.poll()
            if areset:
                self.alerts.clear()
                changed = True
            fresh = [a for a in alerts if a.get("category") == ALERT_CATEGORY]
            if fresh:
                self.alerts.extend(fresh)
                changed = True
            if changed:
                self.version += 1
            return changed

    def _ingest(self, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            try:
                m = SVDMetrics.from_mapping(rec)
            except ValueError:
                self.invalid_records += 1
                continue
            series = self.layers.get(m.layer_name)
            if series is None:
                series = self.layers[m.layer_name] = LayerSeries()
            if len(series) and m.step <= series.steps[-1]:
                series.roll_back_from(m.step)  # a resumed training re-measures from an earlier step
            series.append(m, rec)
            th = rec.get("thresholds")
            if isinstance(th, dict):
                try:
                    self.thresholds = SwitchThresholds(**{k: th[k] for k in SwitchThresholds.__dataclass_fields__ if k in th})
                except (ValueError, TypeError):
                    pass

    def latest_step(self) -> int | None:
        steps = [int(s.steps[-1]) for s in self.layers.values() if len(s)]
        return max(steps) if steps else None


class SpectralStore:
    """Spectral data of the runs a :class:`RunCatalog` lists, created on first request."""

    def __init__(self, runs: RunCatalog) -> None:
        self.runs = runs
        self._data: dict[str, SpectralRunData] = {}
        self._lock = threading.Lock()

    def get(self, run_id: str | None) -> SpectralRunData | None:
        """The run's spectral data, brought up to date; None when ``run_id`` is not a listed run."""
        run = self.runs.get(run_id)
        if run is None:
            return None
        key = str(run.paths.root)
        with self._lock:
            data = self._data.get(key)
            if data is None:
                data = self._data[key] = SpectralRunData(run.paths)
        data.refresh()
        return data


def attach_spectral_store(app: Any, store: SpectralStore) -> None:
    app.server.config[STORE_KEY] = store


def spectral_store_for(app: Any) -> SpectralStore | None:
    return app.server.config.get(STORE_KEY)


def mode_value(value: Any) -> str:
    """A mode as its display word (FULL / LOW-RANK), tolerant of anything a log holds."""
    try:
        return parse_mode(value).value
    except ValueError:
        return str(value)
