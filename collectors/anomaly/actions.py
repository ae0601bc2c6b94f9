"""What happens after the rules decided: alerts appended to ``logs/alerts.jsonl`` and the snapshots they
call for saved, pruned and reported. Shared by the in-training plugin (live weights) and the standalone
Smart Monitor (copies of ``checkpoint-*``), which differ only in how ``model/`` is written. Alerts go
through :class:`collectors.alerts.AlertLog`, the one writer of that file.

Issue 11: every anomaly snapshot also gets the last good state from before the fault's onset
(``last_good/``, see :mod:`collectors.snapshots.last_good`) and the recovery fields of
``metadata.json``; retention (:func:`collectors.snapshots.plan_retention`) runs after each write, never
removing the snapshot just written; the free-disk floor and the budget can skip a snapshot, with a
``snapshot_skipped`` alert.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from collectors import runformat as rf
from collectors import snapshots as snap
from collectors.alerts import Alert, AlertLog, Severity
from collectors.anomaly.incidents import IncidentLog
from collectors.anomaly.rules import (DIVERGENCE_RECENT, NAN_SNAPSHOT_RULES, AnomalyConfig, Category, Rule, RuleEngine,
                                      SnapshotPlan, plan_snapshots)
from collectors.runtime import Guard
from collectors.snapshots import last_good as lg
from collectors.snapshots import store as st

LOGGED_STEPS_KEPT = 256
"""Train log steps remembered to find a fault's onset (a rule with patience fires a few logs later)."""
ONSET_LOOKBACK_LOGS = {Rule.DIVERGENCE.value: DIVERGENCE_RECENT + 2}
"""Logs back to a rule's onset when its alert does not say (divergence judges the median of 9 logs, 3 times)."""


class BackgroundWrite:
    """A model writer that may run on the snapshot thread (its weights were already copied)."""

    def __init__(self, fn: Callable[[Path], Any]) -> None:
        self.fn = fn

    def __call__(self, model_dir: Path) -> Any:
        return self.fn(model_dir)


def _no_model(_model_dir: Path) -> None:
    """Marker: this snapshot has no ``model/`` (a NaN event)."""


NO_MODEL: Callable[[Path], Any] = _no_model
"""Pass as ``write_model`` for a snapshot without ``model/`` (the live weights are not worth saving)."""

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
        self.last_nan_save_step: int | None = None
        """A NaN snapshot is rate-limited on its own: an anomaly snapshot just before must not block it."""
        self.snapshots_saved: list[str] = []
        self.log = AlertLog(self.paths.alerts, source=source, guard=self.guard, notifier=notifier)
        self.incidents = IncidentLog(self.log, self.paths.root, source=source, guard=self.guard)
        """Groups each logged step's alerts into incidents and follows ack/mute (``control/incidents.json``)."""
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self.logged_steps: deque[int] = deque(maxlen=LOGGED_STEPS_KEPT)
        self.rolling: lg.RollingCopy | None = None
        """The plugin's rolling copy of the live weights (None: standalone, or off)."""
        self.rolling_writer: Callable[[Mapping[str, Any], Path], Any] | None = None
        """Writes a rolling copy's state dict as a loadable model into a directory (the plugin's)."""
        self.weights_bytes: int | None = None
        """Bytes of the live weights (the plugin measures them): one snapshot's size for the disk floor."""
        self.checkpoint_dirs: Callable[[], list[Path]] = lambda: snap.checkpoint_dirs_for(self.paths.root)
        self.sampler_seed: int | None = None
        self.epoch_at: Callable[[], float | None] = lambda: None
        self.free_at_start = st.free_bytes(self.paths.snapshots_dir)
        self._published: dict[str, Any] | None = None

    @property
    def config(self) -> AnomalyConfig:
        return self.engine.config

    def record_step(self, step: int, alerts: Sequence[Alert], held: Sequence[Alert] = ()) -> list[Alert]:
        """Write one logged step's alerts, events and incident changes (see :class:`IncidentLog`); call it
        for every logged step, clean ones too. Returns the alerts that may save a snapshot (muted rules and
        events left out)."""
        return self.incidents.observe(step, alerts, held)

    # ------------------------------------------------------------------ retention
    def policy(self) -> st.RetentionPolicy:
        """The retention in force: the config's numbers, the budget resolved against the disk at start."""
        cfg = self.config.snapshots
        return st.RetentionPolicy(keep_best=cfg.keep_best, keep_last=cfg.keep_last, max_age_days=cfg.max_age_days,
                                  budget_bytes=st.resolve_budget(cfg.max_total_gb, self.free_at_start),
                                  min_free_gb=cfg.min_free_gb)

    def publish_policy(self) -> None:
        """Write ``control/snapshot_retention.json`` when the policy changed (at start, after a thresholds reload)."""
        doc = self.policy().to_doc()
        if doc == self._published:
            return
        self._published = doc
        cfg = self.config.snapshots
        self.guard.run("writing control/snapshot_retention.json", st.write_retention, self.paths.root, self.policy(),
                       max_total_gb=cfg.max_total_gb, budget_default=cfg.max_total_gb is None,
                       free_at_start_bytes=self.free_at_start, source=self.source)

    def prune(self, protect: Sequence[str] = ()) -> list[str]:
        return self.guard.run("pruning old snapshots", snap.prune_snapshots, self.paths.root, 0,
                              policy=self.policy(), protect=protect) or []

    # ------------------------------------------------------------------ the fault's onset
    def observed(self, step: int) -> None:
        """A train log at ``step`` (called before the rules judge it): the steps onsets are found in."""
        if not self.logged_steps or step > self.logged_steps[-1]:
            self.logged_steps.append(int(step))

    def onset_of(self, alerts: Sequence[Alert]) -> int:
        """The first step of the condition behind ``alerts`` (pure over the logged steps): an alert's own
        ``onset_step`` when it has one, the first of its ``consecutive`` logs for a rule with patience."""
        onsets = []
        steps = [s for s in self.logged_steps]
        for a in alerts:
            meta = a.metadata or {}
            if isinstance(meta.get("onset_step"), int):
                onsets.append(meta["onset_step"])
                continue
            back = meta.get("consecutive") if isinstance(meta.get("consecutive"), int) else ONSET_LOOKBACK_LOGS.get(a.rule, 1)
            upto = [s for s in steps if s <= a.step]
            onsets.append(upto[-back] if back >= 1 and len(upto) >= back else (upto[0] if upto else a.step))
        return min(onsets) if onsets else 0

    def _checkpoints(self) -> list[tuple[int, Path]]:
        found: list[tuple[int, Path]] = []
        for d in self.checkpoint_dirs():
            found.extend(rf.find_checkpoints(d))
        return sorted(found)

    def last_good_plan(self, alerts: Sequence[Alert], step: int) -> tuple[dict[str, Any], Callable[[Path], Any] | None, int]:
        """For an anomaly snapshot: ``(metadata fields, writer of last_good/, bytes it writes)``, decided
        now on the training thread (a rolling copy is leased here, so it cannot be overwritten)."""
        onset = self.onset_of(alerts)
        fields: dict[str, Any] = {st.META_ONSET_STEP: onset}
        if not self.config.snapshots.last_good:
            fields[st.META_LAST_GOOD_MISSING] = "the last good state is off (snapshots.last_good=False)"
            return fields, None, 0
        limit = lg.good_limit(onset, list(self.logged_steps))
        cps = self._checkpoints()
        rolling = self.rolling
        rsteps = rolling.steps() if rolling is not None else []
        choice = lg.choose_last_good(limit, cps, rsteps)
        note = rolling.note if rolling is not None else "no live weights to copy (standalone)"
        if choice is None:
            fields[st.META_LAST_GOOD_MISSING] = lg.missing_reason(limit, cps, rsteps, note if not rsteps else None)
            return fields, None, 0
        source, good_step, cp = choice
        fields[st.META_SUSPECT_STEPS] = st.suspect_range(good_step, step)
        seed = self.sampler_seed
        with_opt = self.config.snapshots.save_optimizer
        if source == "checkpoint" and cp is not None:
            record = st.last_good_record(good_step, "checkpoint", cp.name)

            def write_cp(tmp: Path) -> dict[str, Any]:
                files = lg.link_checkpoint(cp, tmp / st.LAST_GOOD_DIR, with_optimizer=with_opt)
                return {st.META_LAST_GOOD: record, st.META_RNG_STATE: files["rng_state"],
                        st.META_OPTIMIZER_STATE: files["optimizer_state"],
                        st.META_DATA_POSITION: lg.checkpoint_position(cp, good_step, seed)}
            return fields, write_cp, 0
        lease = rolling.lease(good_step) if rolling is not None else None
        writer = self.rolling_writer
        if lease is None or writer is None:
            fields[st.META_SUSPECT_STEPS] = None
            fields[st.META_LAST_GOOD_MISSING] = f"the rolling copy of step {good_step} was replaced before it could be saved"
            return fields, None, 0
        record = st.last_good_record(good_step, "rolling")

        def write_rolling(tmp: Path) -> dict[str, Any]:
            try:
                if not lease.all_finite():
                    return {st.META_LAST_GOOD: None, st.META_SUSPECT_STEPS: None,
                            st.META_LAST_GOOD_MISSING: f"the rolling copy of step {good_step} already held non-finite weights"}
                dest = tmp / st.LAST_GOOD_DIR
                dest.mkdir()
                writer(lease.state, dest)
                rng = lg.save_rng_state(lease.rng, dest)
                pos = lease.position or st.data_position(sampler_seed=seed)
                return {st.META_LAST_GOOD: record, st.META_RNG_STATE: rng, st.META_DATA_POSITION: pos}
            finally:
                lease.release()
        write_rolling.cancel = lease.release  # type: ignore[attr-defined]  # a skipped snapshot frees the copy
        return fields, write_rolling, int(rolling.bytes if rolling is not None else 0)

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        """Append ``alerts`` (the snapshot thread reports failed background saves here too)."""
        self.log.write(alerts)

    def metadata(self, plan_reason: str, triggers: Sequence[str], step: int, now: float,
                 **recovery: Any) -> dict[str, Any]:
        e = self.engine
        # a best-model snapshot records the loss that made it best (the eval loss when best follows evals)
        loss = e.best_loss if plan_reason.startswith("best_model_loss_") else e.latest_loss
        return snap.build_metadata(timestamp=snap.format_ts(now), reason=plan_reason, step=step, loss=loss,
                                   accuracy=e.latest_accuracy, triggers=triggers, loss_history=e.loss_history(),
                                   best_loss=e.best_loss, best_loss_step=e.best_loss_step, **recovery)

    def snapshot_for(self, alerts: Sequence[Alert], step: int, status: Mapping[str, Any],
                     writer: ModelWriter) -> list[snap.SnapshotResult]:
        """Save the snapshots ``alerts`` call for; problems become ``snapshot_skipped`` alerts (written)."""
        cfg = self.config.snapshots
        if not cfg.enabled:
            return []
        self.publish_policy()
        results = []
        plans = plan_snapshots(alerts, step, self.last_anomaly_save_step, cfg.min_steps_between_saves)
        nan = [a for a in alerts if a.rule in NAN_SNAPSHOT_RULES]
        if (nan and not any(not p.best_model for p in plans)
                and (self.last_nan_save_step is None or step - self.last_nan_save_step >= cfg.min_steps_between_saves)):
            plans.insert(0, SnapshotPlan(nan[0].reason, tuple(a.reason for a in nan), False, False, live_weights=False,
                                         alerts=tuple(nan)))
        for plan in plans:
            role = st.ROLE_BEST if plan.best_model else (st.ROLE_ANOMALY if plan.live_weights else st.ROLE_NAN)
            fields: dict[str, Any] = {}
            extra, extra_bytes = None, 0
            if not plan.best_model:
                fields, extra, extra_bytes = self.last_good_plan(plan.alerts, step)
            write_model = writer(plan, step) if plan.live_weights else NO_MODEL
            res = self.save(plan.reason, list(plan.triggers), step, status, write_model, kind=snap.KIND_ANOMALY,
                            pinned=plan.pinned, role=role, recovery=fields, write_extra=extra, extra_bytes=extra_bytes)
            if res.ok and not plan.best_model:
                self.last_anomaly_save_step = step
            if res.ok and not plan.live_weights:
                self.last_nan_save_step = step
            results.append(res)
        return results

    def save(self, reason: str, triggers: list[str], step: int, status: Mapping[str, Any],
             write_model: Callable[[Path], Any] | None, *, kind: str, pinned: bool = False, role: str | None = None,
             recovery: Mapping[str, Any] | None = None, write_extra: Callable[[Path], Any] | None = None,
             extra_bytes: int = 0) -> snap.SnapshotResult:
        """One snapshot: live weights through ``write_model``, :data:`NO_MODEL` for none (a NaN event), or
        (None) a copy of the checkpoint at/before ``step``; ``write_extra`` adds ``last_good/``."""
        now = time.time()
        role = role or (st.ROLE_MANUAL if kind == snap.KIND_MANUAL else st.ROLE_ANOMALY)
        fields = dict(recovery or {})
        fields[st.META_ROLE] = role
        if write_model is not None and write_model is not NO_MODEL:
            fields[st.META_WEIGHTS_STEP] = step
        if write_model is NO_MODEL:
            fields.setdefault(st.META_LAST_GOOD_MISSING, None)
        meta = self.metadata(reason if kind == snap.KIND_ANOMALY else "manual", triggers, step, now, **fields)
        if meta.get(st.META_DATA_POSITION) == st.data_position():
            meta[st.META_DATA_POSITION] = st.data_position(self.epoch_at(), None, self.sampler_seed)
        min_free = self.config.snapshots.min_free_gb
        live_bytes = int(self.weights_bytes or 0) if write_model not in (None, NO_MODEL) else 0
        size = live_bytes + int(extra_bytes)
        problem = self._budget_problem(size)
        if problem is not None:
            res = snap.SnapshotResult(False, skipped=True, error=problem)
        elif write_model is None:
            # an anomaly copies the checkpoint at/before its step (never a later one); manual: the latest
            at = step if kind == snap.KIND_ANOMALY else None
            res = snap.snapshot_from_checkpoint(self.paths.root, kind=kind, reason=reason, step=at, metadata=meta,
                                                min_free_gb=min_free, now=now, pinned=pinned,
                                                source_dirs=self.checkpoint_dirs(), strict=kind == snap.KIND_ANOMALY,
                                                write_extra=write_extra, size_estimate=size)
        elif isinstance(write_model, BackgroundWrite):
            return self._save_in_background(step, reason, dict(kind=kind, reason=reason, metadata=meta, status=status,
                                                               write_model=write_model, pinned=pinned,
                                                               min_free_gb=min_free, now=now, write_extra=write_extra,
                                                               size_estimate=size))
        else:
            res = snap.create_snapshot(self.paths.root, kind=kind, reason=reason, metadata=meta, status=status,
                                       write_model=None if write_model is NO_MODEL else write_model, pinned=pinned,
                                       min_free_gb=min_free, now=now, write_extra=write_extra, size_estimate=size)
        self._record(step, reason, res, write_extra)
        return res

    def _budget_problem(self, size: int) -> str | None:
        policy = self.policy()
        if policy.budget_bytes is None:
            return None
        infos = snap.list_snapshots(self.paths.root)
        return st.budget_problem(infos, policy, size)

    def _record(self, step: int, reason: str, res: snap.SnapshotResult, write_extra: Any = None) -> None:
        cancel = getattr(write_extra, "cancel", None)
        if cancel is not None:
            cancel()  # a rolling copy held for last_good/ (released already when it was written)
        if res.ok:
            self.snapshots_saved.append(res.name)
            self.prune(protect=[res.name])
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
            self._record(step, reason, res, kwargs.get("write_extra"))
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
        if self.snapshots_saved:  # the last one written was protected; now it is one like the others
            self.prune()
        if self.rolling is not None:
            self.rolling.close()
        self.log.close()
