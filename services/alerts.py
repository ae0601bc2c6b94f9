"""The dashboard's view of alerts, snapshots and thresholds of a run (issue 3).

``AlertFeed`` tails ``logs/alerts.jsonl`` per run (whole lines only, truncation detected) and keeps the
most recent alerts; the rest are pure functions the callbacks call: filtering, summary counts, the
Overview's alert markers, the snapshot table rows, and validated threshold updates.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from collectors import runformat as rf
from collectors.alerts import Severity
from collectors.anomaly import incidents as inc
from collectors.anomaly.rules import AnomalyConfig, Category
from services.model import drop_rolled_back

MAX_ALERTS_KEPT = 5000
"""Alerts kept per run in memory (the feed shows the newest; counts cover what is kept)."""
RESUME_VERSION_STRIDE = 1_000_003
"""Added to an alerts view's version per resume of the run, so a page redraws when a resume supersedes
alerts even though alerts.jsonl itself did not change."""
SEVERITY_ORDER = tuple(s.value for s in Severity)
CATEGORY_ORDER = tuple(c.value for c in Category)


@dataclass
class AlertsView:
    """What one poll of a run's alerts gives the page."""

    records: list[dict[str, Any]]
    """Every record of ``logs/alerts.jsonl`` kept: alerts, events and incident changes, in file order."""
    version: int
    bad_lines: int
    problem: str | None = None
    detected: bool = False
    """True when the dashboard detected these alerts itself (the run has no collector, no alerts.jsonl)."""

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """The alert records (firings of fault rules), without events and incident changes."""
        return [r for r in self.records if r.get("kind", rf.RecordKind.ALERT.value) == rf.RecordKind.ALERT.value
                and r.get("rule") not in inc.EVENT_RULES]


class _RunAlerts:
    def __init__(self, path: Path) -> None:
        self.tailer = rf.JsonlTailer(path, known_kinds=inc.ALERTS_LOG_KINDS)
        self.alerts: deque[dict[str, Any]] = deque(maxlen=MAX_ALERTS_KEPT)
        self.version = 0


class AlertFeed:
    """Per-run tailers of ``logs/alerts.jsonl`` (thread-safe; one per app)."""

    def __init__(self) -> None:
        self._runs: dict[Path, _RunAlerts] = {}
        self._lock = threading.Lock()

    def poll(self, run_root: Path) -> AlertsView:
        paths = rf.RunPaths.of(run_root)
        with self._lock:
            ra = self._runs.get(paths.alerts)
            if ra is None:
                ra = self._runs[paths.alerts] = _RunAlerts(paths.alerts)
            try:
                records, reset = ra.tailer.poll()
            except OSError as exc:
                return AlertsView(list(ra.alerts), ra.version, ra.tailer.bad_lines, f"cannot read {paths.alerts}: {exc}")
            if reset:
                ra.alerts.clear()
                ra.version += 1
            if records:
                ra.alerts.extend(records)
                ra.version += 1
            return AlertsView(list(ra.alerts), ra.version, ra.tailer.bad_lines)


def alerts_for(feed: AlertFeed, run: Any) -> AlertsView:
    """The alerts of any run (a :class:`services.model.Run`): its ``alerts.jsonl`` when the collector
    wrote it, else what the dashboard's own detection found in its metrics (read-only)."""
    if run.has_collector:
        view = feed.poll(run.paths.root)
        resumes = getattr(run, "resumes", None)
        if resumes:  # a resumed training re-ran some steps: their earlier alerts are superseded (issue 11)
            view = AlertsView(drop_rolled_back(view.records, resumes),  # type: ignore[arg-type]
                              view.version + RESUME_VERSION_STRIDE * len(resumes), view.bad_lines, view.problem)
        return view
    return AlertsView(list(run.detected_alerts), run.version, 0, None, detected=True)


# --------------------------------------------------------------------------- pure functions

def summarize(alerts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``total_alerts``, ``by_severity`` (every severity, in order) and ``by_category`` counts."""
    sev: Counter[str] = Counter()
    cat: Counter[str] = Counter()
    n = 0
    for a in alerts:
        n += 1
        sev[str(a.get("severity"))] += 1
        cat[str(a.get("category"))] += 1
    return {"total_alerts": n, "by_severity": {s: sev.get(s, 0) for s in SEVERITY_ORDER},
            "by_category": dict(sorted(cat.items(), key=lambda kv: (-kv[1], kv[0])))}


def marker_points(alerts: Iterable[Mapping[str, Any]], steps: Sequence[float], values: Sequence[float]
                  ) -> dict[str, tuple[list[float], list[float], list[str]]]:
    """Alert markers for the Overview loss chart, grouped by severity: ``{severity: (xs, ys, texts)}``.

    Each marker sits on the loss curve at the alert's step (the last finite loss at or before it), so
    it reads as "this happened here"; a non-finite-loss alert sits at the level the curve had before it
    broke, next to the NaN marker. Pure; ``steps`` must be sorted ascending.
    """
    import bisect

    out: dict[str, tuple[list[float], list[float], list[str]]] = {}
    if not len(steps):
        return out
    for a in alerts:
        step = a.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            continue
        i = max(bisect.bisect_right(steps, step) - 1, 0)
        while i > 0 and not _finite(values[i]):
            i -= 1
        y = values[i]
        if not _finite(y):
            continue
        xs, ys, texts = out.setdefault(str(a.get("severity")), ([], [], []))
        xs.append(step)
        ys.append(float(y))
        texts.append(f"{a.get('severity', '?')}: {a.get('message', a.get('rule', 'alert'))}")
    return out


def _finite(y: Any) -> bool:
    return isinstance(y, (int, float)) and y == y and abs(y) != float("inf")


def threshold_update(current: Mapping[str, Any] | None, section: str, key: str, value: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The new ``control/thresholds.json`` document with ``section.key = value``, validated (pure).

    Returns ``(doc, None)`` or ``(None, message)`` naming the problem; other keys already in the file are kept.
    """
    doc: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in (current or {}).items()}
    doc.pop("updated_at", None)
    doc.setdefault(section, {})
    if not isinstance(doc[section], dict):
        doc[section] = {}
    doc[section][key] = value
    try:
        AnomalyConfig.from_dict(doc)
    except ValueError as exc:
        return None, f"Not saved: {exc}"
    doc["v"] = rf.SCHEMA_VERSION
    doc["updated_at"] = time.time()
    return doc, None


def current_thresholds(run_root: Path) -> tuple[AnomalyConfig, str | None]:
    """The thresholds in effect for a run (defaults + ``control/thresholds.json``), and a problem if the
    file is unreadable or invalid (then the defaults are shown)."""
    path = rf.RunPaths.of(run_root).thresholds
    doc, problem = rf.read_json(path)
    if doc is None:
        return AnomalyConfig(), None if not path.exists() else problem
    try:
        return AnomalyConfig.from_dict(doc), None
    except ValueError as exc:
        return AnomalyConfig(), f"{path} is invalid ({exc}); the training keeps its previous thresholds"



# --------------------------------------------------------------------------- incidents and events

@dataclass
class IncidentsView:
    """A run's incidents (newest first, each with its firings), its events, and its acks and mutes."""

    incidents: list[inc.Incident]
    events: list[dict[str, Any]]
    mutes: dict[str, float]
    """Rules muted now, with the time each mute ends (seconds since the epoch)."""
    control_problem: str | None = None


def incidents_of(view: AlertsView, root: Path, logged_steps: Sequence[int] | None = None,
                 now: float | None = None) -> IncidentsView:
    """Fold a run's alert records into incidents and events (pure over the records plus one read of
    ``control/incidents.json``; never raises). ``logged_steps`` are the run's logged train steps, so a
    file written before incidents existed is grouped exactly as the collector's tracker would."""
    now = time.time() if now is None else now
    control, problem = inc.read_control(root) if not view.detected else (inc.empty_control(), None)
    folded = inc.fold(view.records, logged_steps=logged_steps, control=control)
    mutes = {rule: until for rule in control.get("mutes", {})
             if (until := inc.mute_until(control, rule, now)) is not None}
    return IncidentsView(folded.incidents, folded.events, mutes, problem)


def filter_incidents(incidents: Iterable[inc.Incident], categories: Sequence[str] | None,
                     severities: Sequence[str] | None) -> list[inc.Incident]:
    """Incidents whose category and severity are selected (an empty/None selection means all)."""
    cats, sevs = set(categories or ()), set(severities or ())
    return [i for i in incidents if (not cats or i.category in cats) and (not sevs or i.severity in sevs)]


def summarize_incidents(incidents: Sequence[inc.Incident], events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The Alerts page's counters: incidents (not firings) in total, open, by severity and category,
    plus the number of events (which are never counted as alerts)."""
    base = summarize({"severity": i.severity, "category": i.category} for i in incidents)
    return {**base, "total_incidents": len(incidents), "open": sum(i.is_open for i in incidents),
            "events": len(events)}


def event_records(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The events among a run's alert records (event records, and legacy alert records of event rules)."""
    return inc.fold(records).events


def event_points(events: Iterable[Mapping[str, Any]], steps: Sequence[float], values: Sequence[float]
                 ) -> tuple[list[float], list[float], list[str]]:
    """Event markers on the loss curve (new best model, plateau, mode switches): ``(xs, ys, texts)``."""
    pts = marker_points(({**e, "severity": "event"} for e in events), steps, values)
    return pts.get("event", ([], [], []))
