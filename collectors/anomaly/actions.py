"""What happens after the rules decided: alerts appended to ``logs/alerts.jsonl`` and the snapshots they
call for saved, pruned and reported. Shared by the in-training plugin (live weights) and the standalone
Smart Monitor (copies of ``checkpoint-*``), which differ only in how ``model/`` is written. Alerts go
through :class:`collectors.alerts.AlertLog`, the one writer of that file.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from collectors import runformat as rf
from collectors import snapshots as snap
from collectors.alerts import Alert, AlertLog, Severity
from collectors.anomaly.incidents import IncidentLog
from collectors.anomaly.rules import AnomalyConfig, Category, Rule, RuleEngine, SnapshotPlan, plan_snapshots
from collectors.runtime import Guard


class BackgroundWrite:
    """A model writer that may run on the snapshot thread (its weights were already copied)."""

    def __init__(self, fn: Callable[[Path], Any]) -> None:
        self.fn = fn

    def __call__(self, model_dir: Path) -> Any:
        return self.fn(model_dir)


ModelWriter = Callable[[SnapshotPlan, int], Callable[[Path], Any] | None]
"""Given the plan and step, returns the function filling ``model/`` (or None: copy a checkpoint)."""


def snapshot_problem_alert(step: int, result: snap.SnapshotResult, reason: str) -> Alert:
    """The alert raised when a snapshot was skipped (low disk, no checkpoint) or failed."""
    word = "skipped" if result.skipped else "failed"
    return Alert(Rule.SNAPSHOT_SKIPPED.value, Category.SNAPSHOT.value, Severity.HIGH.value, step, None, None,
                 f"Snapshot for {reason} {word}: {result.error}", {"snapshot_reason": reason, "skipped": result.skipped})


class AlertActions:
    """Writes alerts and saves/prunes snapshots for one run directory.

    Args:
        run_dir: the run directory (``logs/alerts.jsonl`` and ``snapshots/`` go there).
        engine: the rule engine (its histories fill ``metadata.json``).
        source: written in every alert record (``collector`` or ``smart_monitor``).
        guard: reports file problems once.
        notifier: where alerts are also sent (``Monitor(notify=...)``), or None.
    """

    def __init__(self, run_dir: str | Path, engine: RuleEngine, *, source: str, guard: Guard | None = None,
                 notifier: Any = None) -> None:
        self.paths = rf.RunPaths.of(run_dir)
        self.engine = engine
        self.source = source
        self.guard = guard or Guard()
        self.last_anomaly_save_step: int | None = None
        self.snapshots_saved: list[str] = []
        self.log = AlertLog(self.paths.alerts, source=source, guard=self.guard, notifier=notifier)
        self.incidents = IncidentLog(self.log, self.paths.root, source=source, guard=self.guard)
        """Groups each logged step's alerts into incidents and follows ack/mute (``control/incidents.json``)."""
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    @property
    def config(self) -> AnomalyConfig:
        return self.engine.config

    def record_step(self, step: int, alerts: Sequence[Alert], held: Sequence[Alert] = ()) -> list[Alert]:
        """Write one logged step's alerts, events and incident changes (see :class:`IncidentLog`); call it
        for every logged step, clean ones too. Returns the alerts that may save a snapshot (muted rules and
        events left out)."""
        return self.incidents.observe(step, alerts, held)

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        """Append ``alerts`` (the snapshot thread reports failed background saves here too)."""
        self.log.write(alerts)

    def metadata(self, plan_reason: str, triggers: Sequence[str], step: int, now: float) -> dict[str, Any]:
        e = self.engine
        # a best-model snapshot records the loss that made it best (the eval loss when best follows evals)
        loss = e.best_loss if plan_reason.startswith("best_model_loss_") else e.latest_loss
        return snap.build_metadata(timestamp=snap.format_ts(now), reason=plan_reason, step=step, loss=loss,
                                   accuracy=e.latest_accuracy, triggers=triggers, loss_history=e.loss_history(),
                                   best_loss=e.best_loss, best_loss_step=e.best_loss_step)

    def snapshot_for(self, alerts: Sequence[Alert], step: int, status: Mapping[str, Any],
                     writer: ModelWriter) -> list[snap.SnapshotResult]:
        """Save the snapshots ``alerts`` call for; problems become ``snapshot_skipped`` alerts (written)."""
        cfg = self.config.snapshots
        if not cfg.enabled:
            return []
        results = []
        for plan in plan_snapshots(alerts, step, self.last_anomaly_save_step, cfg.min_steps_between_saves):
            res = self.save(plan.reason, list(plan.triggers), step, status, writer(plan, step),
                            kind=snap.KIND_ANOMALY, pinned=plan.pinned)
            if res.ok and not plan.best_model:
                self.last_anomaly_save_step = step
            results.append(res)
        if any(r.ok for r in results) and (cfg.keep_last or cfg.max_age_days):
            self.guard.run("pruning old snapshots", snap.prune_snapshots, self.paths.root, cfg.keep_last, cfg.max_age_days)
        return results

    def save(self, reason: str, triggers: list[str], step: int, status: Mapping[str, Any],
             write_model: Callable[[Path], Any] | None, *, kind: str, pinned: bool = False) -> snap.SnapshotResult:
        """One snapshot: live weights through ``write_model``, or (None) a copy of the checkpoint at/before ``step``."""
        now = time.time()
        meta = self.metadata(reason if kind == snap.KIND_ANOMALY else "manual", triggers, step, now)
        min_free = self.config.snapshots.min_free_gb
        if write_model is None:
            # an anomaly copies the checkpoint at/before its step (the weights just before it); manual: the latest
            at = step if kind == snap.KIND_ANOMALY else None
            res = snap.snapshot_from_checkpoint(self.paths.root, kind=kind, reason=reason, step=at, metadata=meta,
                                                min_free_gb=min_free, now=now, pinned=pinned)
        elif isinstance(write_model, BackgroundWrite):
            return self._save_in_background(step, reason, dict(kind=kind, reason=reason, metadata=meta, status=status,
                                                               write_model=write_model, pinned=pinned,
                                                               min_free_gb=min_free, now=now))
        else:
            res = snap.create_snapshot(self.paths.root, kind=kind, reason=reason, metadata=meta, status=status,
                                       write_model=write_model, pinned=pinned, min_free_gb=min_free, now=now)
        self._record(step, reason, res)
        return res

    def _record(self, step: int, reason: str, res: snap.SnapshotResult) -> None:
        if res.ok:
            self.snapshots_saved.append(res.name)
        else:
            self.write_alerts([snapshot_problem_alert(step, res, reason)])

    def _save_in_background(self, step: int, reason: str, kwargs: dict[str, Any]) -> snap.SnapshotResult:
        """Queue one snapshot on the writer thread; returns a result with ``pending=True``.

        At most one snapshot is written while another waits, so at most two CPU copies of the weights
        exist at once: a third trigger waits for the oldest write to finish (back-pressure)."""
        if self._pending is not None and not self._pending.done():
            self._pending.result()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainboard-snapshot")

        def job() -> snap.SnapshotResult:
            res = snap.create_snapshot(self.paths.root, **kwargs)
            self._record(step, reason, res)
            return res

        self._pending = self._pool.submit(job)
        return snap.SnapshotResult(True, pending=True)

    def flush(self) -> None:
        """Wait until every queued snapshot is on disk (called at close; tests call it too)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending = None

    def close(self) -> None:
        self.flush()
        self.log.close()
