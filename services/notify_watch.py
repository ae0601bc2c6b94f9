"""``trainboard serve --notify URL``: the dashboard's own detections, sent as notifications.

Runs written by the collector send their own notifications from inside the training
(``MonitorCallback(notify=...)``). Runs without the collector (a Hugging Face output dir, TensorBoard
event files) have only the alerts the dashboard detects over their files (:mod:`services.detection`),
and nobody sees those until a browser opens the page. :class:`DashboardNotifier` closes that gap: a
daemon thread of the server visits those runs every ``interval_s`` seconds, groups their detected
alerts into incidents with the collector's own tracker (one message per incident, not per firing), and
hands the incident changes to a :class:`collectors.notify.Notifier`, which sends on its own thread.

What a run already held when the dashboard first saw it is taken in silently: starting the dashboard on
a folder of old runs sends nothing, only what happens from then on. The dashboard writes nothing into
those runs, so ack and mute (``control/incidents.json``) do not apply to them.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from collectors.anomaly import incidents as inc
from services.model import RunKind, series_key

log = logging.getLogger("trainboard")
DEFAULT_INTERVAL_S = 5.0
"""How often the runs without a collector are checked for new detections."""
SOURCE = "dashboard"


@dataclass
class _Followed:
    tracker: inc.IncidentTracker
    last_step: int | None = None
    seen: int = 0
    """How many of the run's detected alerts were fed to the tracker."""
    primed: bool = False
    """False until the history found at first sight was taken in (silently)."""
    sent: list[str] = field(default_factory=list)


class DashboardNotifier:
    """Sends the dashboard-detected incidents of runs without a collector through ``notifier``.

    Args:
        catalog: the app's :class:`services.catalog.RunCatalog`.
        notifier: a :class:`collectors.notify.Notifier` (its ``public_url`` makes the messages link to
            ``/alerts?run=<run>``).
        interval_s: seconds between two checks of the runs.
    """

    def __init__(self, catalog: Any, notifier: Any, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.catalog = catalog
        self.notifier = notifier
        self.interval_s = float(interval_s)
        self.runs: dict[str, _Followed] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "DashboardNotifier":
        self._thread = threading.Thread(target=self._loop, name="trainboard-dashboard-notify", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.notifier.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_once()
            except Exception as exc:  # noqa: BLE001 - a bad run must not end the notifications of the others
                log.warning("Trainboard: dashboard notifications: %s: %s", type(exc).__name__, exc)
            self._stop.wait(self.interval_s)

    def check_once(self) -> int:
        """Visit every run without a collector once; returns how many notifications were queued."""
        queued = 0
        for run_id in self.catalog.run_ids():
            if self.catalog.kind_of(run_id) in (None, RunKind.TRAINBOARD):
                continue
            run = self.catalog.get(run_id)
            if run is None or run.has_collector:
                continue
            queued += self._check_run(run_id, run)
        return queued

    def _check_run(self, run_id: str, run: Any) -> int:
        f = self.runs.get(run_id)
        if f is None:
            f = self.runs[run_id] = _Followed(inc.IncidentTracker(source=SOURCE))
        alerts = list(run.detected_alerts)
        if len(alerts) < f.seen:  # the run was rewritten from scratch: follow it anew
            f = self.runs[run_id] = _Followed(inc.IncidentTracker(source=SOURCE))
        new = alerts[f.seen:]
        f.seen = len(alerts)
        s = run.series.get(series_key("train", "loss"))
        x = s.arrays()[0] if s is not None and len(s) else np.empty(0)
        fresh = x if f.last_step is None else x[x > f.last_step]  # only the steps logged since the last check
        by_step: dict[int, list[dict[str, Any]]] = {}
        for a in new:
            if isinstance(a.get("step"), int):
                by_step.setdefault(a["step"], []).append(a)
        todo = sorted({int(v) for v in fresh} | set(by_step))
        queued = 0
        for step in todo:
            for change in f.tracker.observe(step, by_step.get(step, ())):
                if f.primed and change.kind == inc.INCIDENT_KIND and change.state != inc.STATE_UPDATED:
                    if self.notifier.submit({**change.record, "run": run_id}):
                        queued += 1
                        f.sent.append(f"{change.state} {change.incident_id}")
            f.last_step = step if f.last_step is None else max(f.last_step, step)
        f.primed = True
        return queued
