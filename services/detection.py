"""Alerts for runs the collector did not write: the dashboard runs the collector's own rule engine.

A plain Hugging Face output dir or a TensorBoard event dir has no ``logs/alerts.jsonl``. Its readers
hand their metric records to :class:`DashboardDetector`, which feeds them to the same
:class:`~collectors.anomaly.rules.RuleEngine` the collector and the Smart Monitor use (same thresholds,
same record shape), and keeps the alerts in memory. Nothing is written into the run directory: the
dashboard only reads other tools' output. Each alert is labelled ``source = "dashboard"`` so every
page can say "detected by the dashboard".

The same module judges ``stalled`` for every run (:func:`run_stall`) with the collector's own stall rule
(:mod:`collectors.ranks`), so a run without the collector is judged like one with it.

This is the one module of the dashboard that knows the collector's rule-engine API; when that moves,
only these imports change.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from collectors.alerts import alert_record
from collectors.anomaly.rules import observation_from_record
from collectors.anomaly.rules import AnomalyConfig, RuleEngine
from collectors.ranks import PHASES, StallVerdict, judge_stall, stall_threshold

DASHBOARD_SOURCE = "dashboard"
"""The ``source`` of alerts the dashboard detected itself (the collector writes its own name)."""
DETECTED_LABEL = "detected by the dashboard"
MAX_DETECTED = 5000
"""Alerts kept per run (the newest), like the alerts feed."""


def is_dashboard_alert(alert: Mapping[str, Any]) -> bool:
    return alert.get("source") == DASHBOARD_SOURCE


class DashboardDetector:
    """The rule engine over one run's metric records, fed incrementally; read-only.

    Args:
        config: thresholds (default: the collector's defaults).

    Example:
        >>> det = DashboardDetector()
        >>> det.feed([{"kind": "train", "step": 1, "loss": float("nan")}])
        >>> det.alerts[0]["rule"], det.alerts[0]["source"]
        ('non_finite_loss', 'dashboard')
    """

    def __init__(self, config: AnomalyConfig | None = None) -> None:
        self.config = config or AnomalyConfig()
        self.alerts: list[dict[str, Any]] = []
        self._engine = RuleEngine(self.config)

    def reset(self) -> None:
        """Start over (the run's history was replaced: a re-read from scratch follows)."""
        self.alerts = []
        self._engine = RuleEngine(self.config)

    def feed(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Apply the rules to metric records in order; returns how many alerts they raised."""
        before = len(self.alerts)
        for rec in records:
            obs = observation_from_record(rec)
            if obs is None:
                continue
            t = rec.get("time")
            wall = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) and t == t else None
            for alert in self._engine.observe(obs):
                out = alert_record(alert, source=DASHBOARD_SOURCE, now=wall or 0.0)
                out["time"] = wall  # the record's wall time; None when the source has none (trainer_state.json)
                out["detected_by"] = DETECTED_LABEL
                self.alerts.append(out)
        if len(self.alerts) > MAX_DETECTED:
            del self.alerts[: len(self.alerts) - MAX_DETECTED]
        return len(self.alerts) - before


def detect(records: Iterable[Mapping[str, Any]], config: AnomalyConfig | None = None) -> list[dict[str, Any]]:
    """All alerts the rules raise over ``records`` (pure apart from the engine's own state)."""
    det = DashboardDetector(config)
    det.feed(records)
    return det.alerts


# --------------------------------------------------------------------------- stalled (every run, from its files)

def run_stall(status: Mapping[str, Any] | None, log_times: Sequence[float], last_record: float | None,
              files_changed: float | None, now: float) -> StallVerdict:
    """Whether a run that should be progressing has stopped completing steps (pure; docs/ranks.md).

    The collector's own rule (:func:`collectors.ranks.judge_stall`, same factor and minimum), judged from
    files: the last progress is the newest of the status's ``last_step_at`` (the collector's watchdog
    writes it even between log steps) and the newest metric record's time, else the files' mtime (a
    Trainer output dir has no wall times); "the recent typical log interval" is the median gap of
    ``log_times``. A ``phase`` the collector marked (evaluating, saving) is reported as that phase,
    never as a stall. Whether the process is alive is the caller's business (:func:`services.model.run_state`).
    """
    st = status or {}
    candidates = [t for t in (st.get("last_step_at"), last_record) if _is_time(t)]
    last = max(candidates) if candidates else (files_changed if _is_time(files_changed) else None)
    phase = st.get("phase") if st.get("phase") in PHASES else None
    if phase is None and st.get("state") == "evaluating":
        phase = "evaluating"
    return judge_stall(last, now, stall_threshold(log_times), phase,
                       st.get("phase_since") if _is_time(st.get("phase_since")) else None)


def _is_time(t: Any) -> bool:
    return isinstance(t, (int, float)) and not isinstance(t, bool) and t == t and t > 0
