"""``AnomalyPlugin``: the anomaly rules and snapshots inside a training (on by default in Monitor/MonitorCallback).

At each metrics record it runs :class:`collectors.anomaly.rules.RuleEngine` (reading the gradient norm
from the model and the learning rate from the optimizer when the logs lack them), appends alerts to
``logs/alerts.jsonl``, saves snapshots of the live weights on triggers, and at most once per
``control_poll_s`` honours ``control/snapshot_request.json`` and reloads ``control/thresholds.json``
when it changed. Optionally it asks the Trainer to stop on a critical alert. Everything runs through
the monitor's Guard: a problem here is reported once and the training goes on.

Where the work runs (issue 12: ``Monitor.log`` costs the training thread ≤ 20 µs; the rule engine alone
takes 25-50 µs per record): the training thread only reads what exists there alone (the gradient norm of
the live model when the logs lack it, the optimizer's learning rate) and queues the evaluation; the rules
run as the writer's per-record hook (``on_record_background``, see :mod:`collectors.writer`): on the
training thread just before its weights change, where their verdicts are needed, or on the writer thread
at its next pass, and they write the alerts. What needs the training thread comes back to it
(``monitor.on_training_thread``): the snapshot of the live weights is taken at its next call into the
monitor. In a Trainer that is ``on_pre_optimizer_step`` of the next step, which first runs (or waits for)
the rules still queued, so the snapshot holds exactly the weights of the step that fired (the optimizer
has not changed them yet); a plain loop gets the same by calling
``monitor.pre_optimizer_step(step)`` before ``optimizer.step()``, otherwise the snapshot is taken at its
next ``log`` (the weights one step later). With ``stop_on_critical`` the rules run on the training thread
instead (+25-50 µs per logged step), so the stop is set inside the ``on_log`` of the step that fired and
the Trainer stops after that very step.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from collectors import control
from collectors import runformat as rf
from collectors import snapshots as snap
from collectors.alerts import SOURCE_COLLECTOR, Severity
from collectors.anomaly.actions import AlertActions, BackgroundWrite
from collectors.anomaly.detector import model_grad_norm, optimizer_lr
from collectors.anomaly.losswatch import LossWatch
from collectors.anomaly.updatewatch import CHECK_EVERY_STEPS, UpdateWatch
from collectors.anomaly.rules import AnomalyConfig, Observation, RuleEngine, coerce_config, observation_from_record
from collectors.runtime import BYTES_PER_GB, process_memory
from collectors.snapshots import last_good as lg
from collectors.snapshots.repeat_save import RepeatSaver

CONTROL_POLL_SECONDS = 1.0
"""Control files are checked at most this often (two ``stat`` calls), so a step costs nothing extra."""
RESTART_SCHEDULES = frozenset({"cosine_with_restarts"})
"""Trainer's ``lr_scheduler_type`` values whose rate jumps back to its peak on purpose (warm restarts)."""


_QUIET = threading.local()
_QUIET_HOOK_LOCK = threading.Lock()
_chained_hook: Any = None


def _quiet_hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """transformers tqdm hook: an empty bar in threads inside :func:`quiet_progress`; everywhere else the
    hook that was set before ours (if any) or the normal bar."""
    if getattr(_QUIET, "on", False):
        from transformers.utils import logging as hf_logging

        return hf_logging.EmptyTqdm(*args, **kwargs)
    if _chained_hook is not None:
        return _chained_hook(factory, args, kwargs)
    return factory(*args, **kwargs)


def _install_quiet_hook() -> None:
    """Put :func:`_quiet_hook` in front of whatever tqdm hook is set now (a hook set later by the user
    replaces ours; the next snapshot puts it back in front, chaining theirs)."""
    global _chained_hook
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    set_hook = getattr(hf_logging, "set_tqdm_hook", None)  # recent transformers 5.x; older: bars stay
    if set_hook is None:
        return
    with _QUIET_HOOK_LOCK:
        previous = set_hook(_quiet_hook)
        if previous is not _quiet_hook:
            _chained_hook = previous


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No "Writing model shards" bar from ``save_pretrained`` in this thread: a snapshot saved from a
    background thread would otherwise print into the middle of the training's own output."""
    _install_quiet_hook()
    before = getattr(_QUIET, "on", False)
    _QUIET.on = True
    try:
        yield
    finally:
        _QUIET.on = before


def save_live_model(model: Any, tokenizer: Any, out_dir: Path, state_dict: Mapping[str, Any] | None = None,
                    saver: RepeatSaver | None = None) -> None:
    """Save the live weights as safetensors through the model's own ``save_pretrained`` (a PEFT model
    saves its adapter only); a plain ``nn.Module`` goes through ``safetensors.torch.save_model``.
    ``state_dict`` (a CPU copy taken earlier, see :func:`cpu_state_dict`) is saved instead of the live
    weights when given; with a ``saver`` too, a later copy is written the way the first ``save_pretrained``
    wrote it, without its Python (:mod:`collectors.snapshots.repeat_save`: byte-identical files)."""
    save = getattr(model, "save_pretrained", None)
    if callable(save):
        with quiet_progress():
            if state_dict is not None and saver is not None and can_save_in_background(model):
                saver.save(model, out_dir, state_dict, lambda: save(str(out_dir), state_dict=dict(state_dict)))
            elif state_dict is not None:
                save(str(out_dir), state_dict=dict(state_dict))
            else:
                save(str(out_dir))
    elif state_dict is not None:
        from safetensors.torch import save_file

        unique: dict[str, Any] = {}
        seen: set[int] = set()
        for name, t in state_dict.items():  # tied weights once: safetensors refuses shared tensors
            if t.data_ptr() in seen:
                continue
            seen.add(t.data_ptr())
            unique[name] = t.contiguous()
        save_file(unique, str(out_dir / "model.safetensors"))
    else:
        from safetensors.torch import save_model

        save_model(model, str(out_dir / "model.safetensors"))
    tok_save = getattr(tokenizer, "save_pretrained", None)
    if callable(tok_save):
        tok_save(str(out_dir))


def can_save_in_background(model: Any) -> bool:
    """A Transformers model (not PEFT: its adapter is small and saved at once) can be saved from a CPU
    copy of its state dict while training goes on."""
    return callable(getattr(model, "save_pretrained", None)) and not hasattr(model, "peft_config")


def cpu_state_dict(model: Any) -> dict[str, Any]:
    """A CPU copy of the model's weights taken now; tensors that share storage (tied embeddings) stay
    shared, so the saved files are the ones the live model would give."""
    import torch

    copies: dict[tuple, Any] = {}
    out: dict[str, Any] = {}
    with torch.no_grad():
        for name, t in model.state_dict().items():
            key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
            if key not in copies:
                copies[key] = t.detach().to("cpu", copy=True)
            out[name] = copies[key]
    return out


class AnomalyPlugin:
    """Anomaly rules, alerts and snapshots for :class:`collectors.monitor.Monitor` (a MonitorPlugin).

    Args:
        config: ``True``/``None`` for the defaults, an :class:`AnomalyConfig`, or a dict of overrides
            (same shape as ``control/thresholds.json``).
        control_poll_s: how often control files are checked, in seconds (default 1.0).

    Attributes:
        engine: the rule engine (``engine.best_loss``, ``engine.best_loss_step``...).
        alerts_written: number of alerts appended to ``logs/alerts.jsonl``.
        stop_requested: a critical alert asked to stop (``stop_on_critical``); plain loops may check it.

    Raises:
        ValueError: invalid ``config`` (the message names the key and the allowed values).

    Example:
        >>> Monitor("runs/exp1", anomaly=AnomalyConfig.from_dict({"smart": {"loss_spike_threshold": 0.5}}))  # doctest: +SKIP
    """

    def __init__(self, config: "bool | AnomalyConfig | Mapping[str, Any] | None" = None, *,
                 control_poll_s: float = CONTROL_POLL_SECONDS) -> None:
        cfg = coerce_config(config)
        if cfg is None:
            raise ValueError("AnomalyPlugin(config=False) makes no sense: leave the plugin out instead")
        self.base_config = cfg
        self.engine = RuleEngine(cfg)
        self.control_poll_s = float(control_poll_s)
        self.alerts_written = 0
        self.stop_requested = False
        self.losswatch: LossWatch | None = None
        self.thresholds_problem: str | None = None
        self.actions: AlertActions | None = None
        self._thresholds: control.ThresholdsFile[AnomalyConfig] | None = None
        self._next_poll = 0.0
        self._grad_cache: tuple[int, float] | None = None
        self._want_grad_norm = False
        self._pending_state: dict[str, Any] | None = None
        self._host: Any = None
        self._background: Any = None
        self._live_inputs: dict[int, tuple[float | None, float | None, Any]] = {}
        """Per queued record: grad norm, learning rate and the weight sample (``UpdateWatch.sample``)."""
        self._updates: UpdateWatch | None = None
        self._updates_step: int | None = None
        self._updates_model: Any = None
        """Whether the weights still change between logged steps (``optimizer_stalled``)."""
        self._engine_lock = threading.RLock()
        """The engine is used by the writer thread (rules) and the training thread (snapshot metadata,
        live thresholds, state_dict): one at a time."""
        self.rolling: lg.RollingCopy | None = None
        """The rolling CPU copy of the weights (the last good state of runs without checkpoints)."""
        self._pre_opt_seen = False
        self.saver = RepeatSaver()
        """Writes the later CPU copies of the weights (best models, anomalies, last good) as the first
        ``save_pretrained`` wrote them, without its Python (:mod:`collectors.snapshots.repeat_save`)."""
        self._model_seen: Any = None

    @property
    def config(self) -> AnomalyConfig:
        return self.engine.config

    # ------------------------------------------------------------------ hooks
    def on_start(self, monitor: Any) -> None:
        if not monitor.is_main:
            return
        self._host = monitor
        # a Monitor with a writer thread runs the rules there (on_record_background); other hosts inline
        self._background = getattr(monitor, "in_background", None)
        self.actions = AlertActions(monitor.paths.root, self.engine, source=SOURCE_COLLECTOR, guard=monitor.guard,
                                    notifier=getattr(monitor, "notifier", None))
        # tells the standalone monitor and the dashboard that this training honours snapshot requests itself
        control.announce_request_handler(monitor.extra_status)
        targs = getattr(monitor, "trainer_args", None)  # a Trainer that evaluates: best model = best eval loss
        if targs is not None and str(getattr(targs, "eval_strategy", "no")).split(".")[-1].lower() not in ("no", "none"):
            self.engine.expect_eval = True
        schedule = getattr(targs, "lr_scheduler_type", None) if targs is not None else None
        if str(getattr(schedule, "value", schedule)) in RESTART_SCHEDULES:
            self.engine.lr_restarts = True  # the schedule's own restarts are not sudden changes
        if self._pending_state:
            self.actions.last_anomaly_save_step = self._pending_state.get("last_anomaly_save_step")
            self.actions.incidents.load_state_dict(self._pending_state.get("incidents") or {})
        snap.clean_stale_temps(monitor.paths.root)
        self._setup_last_good(monitor, targs)
        if (monitor.model is not None and targs is not None and getattr(targs, "logging_nan_inf_filter", False)
                and self.losswatch is None):
            self._attach_losswatch(monitor)
        self._poll_control(monitor, force=True)

    def _setup_last_good(self, monitor: Any, targs: Any) -> None:
        """Where the last good state comes from: the Trainer's checkpoints and the rolling copy (issue 11)."""
        assert self.actions is not None
        actions = self.actions
        if targs is not None:
            out = getattr(targs, "output_dir", None)
            if out:
                actions.checkpoint_dirs = lambda: [Path(out)]
            seed = getattr(targs, "data_seed", None)
            actions.sampler_seed = seed if isinstance(seed, int) else getattr(targs, "seed", None)
        actions.epoch_at = lambda: getattr(getattr(monitor, "trainer_state", None), "epoch", None)
        # control/snapshot_retention.json is written with the first snapshot (a full disk is then one report, not two)
        self._watch_model(monitor, at_start=True)

    def _watch_model(self, monitor: Any, at_start: bool = False) -> None:
        """Measure the watched model and start its rolling copy; again when ``watch()`` gives another one
        (``with Monitor(...) as mon: mon.watch(model)`` starts before the model is known)."""
        assert self.actions is not None
        actions = self.actions
        model = monitor.model
        if model is None or model is self._model_seen or not hasattr(model, "state_dict"):
            return
        self._model_seen = model
        if self.rolling is not None:
            self.rolling.close()
            self.rolling = actions.rolling = None
        actions.weights_bytes = monitor.guard.run("measuring the weights", lg.state_bytes, model)
        cfg = self.config.snapshots
        if not (cfg.enabled and cfg.last_good and cfg.rolling_copy_steps > 0):
            return
        self.rolling = lg.RollingCopy(cfg.rolling_copy_steps, int(cfg.rolling_copy_max_gb * BYTES_PER_GB))
        tok, saver = monitor.tokenizer, self.saver
        actions.rolling = self.rolling
        actions.rolling_writer = lambda state, d: save_live_model(model, tok, d, state_dict=state, saver=saver)
        if at_start:  # the weights the training starts from (a model watched later: from its next due step,
            # since the step its weights belong to is not known)
            state = getattr(monitor, "trainer_state", None)
            start = int(getattr(state, "global_step", 0) or 0)
            monitor.guard.run("the last-good rolling copy", self._rolling_copy, monitor, start, True)

    def _rolling_copy(self, monitor: Any, step: int, force: bool = False) -> None:
        """Start a rolling copy at ``step`` when due (``force``: the weights the training starts from).
        Without the pre-optimizer hook (a plain loop that does not call it) the copy is waited for at once,
        so it never races the optimizer."""
        rc = self.rolling
        if rc is None or monitor.model is None:
            return
        if not (force or rc.due(step)):
            return
        state = getattr(monitor, "trainer_state", None)
        pos = lg.position_for(step, getattr(state, "epoch", None), self.actions.sampler_seed if self.actions else None)
        if force:
            rc.attach(monitor.model)
            if not rc.enabled:
                return
            started = rc.start(monitor.model, step, pos)
        else:
            started = rc.after_step(monitor.model, step, pos)
        if started and not self._pre_opt_seen:
            rc.before_optimizer_step()

    def _attach_losswatch(self, monitor: Any) -> None:
        """Trainer hides NaN/Inf losses (``logging_nan_inf_filter``): read them from the model's outputs."""
        def attach() -> None:
            self.losswatch = LossWatch(monitor.model)
            state = getattr(monitor, "trainer_state", None)
            self.losswatch.set_step((getattr(state, "global_step", 0) or 0) + 1)
        monitor.guard.run("watching the training loss for NaN/Inf", attach)

    def on_annotate(self, monitor: Any, record: dict[str, Any]) -> None:
        """Training thread, before the record is queued: read the live inputs it lacks (the gradient norm,
        the optimizer's learning rate) for the rules; mark a train loss that Trainer replaced."""
        if self.actions is not None:
            grad_norm = lr = changed = None
            train = "loss" in record and record.get("kind") == rf.RecordKind.TRAIN.value
            if monitor.model is not None and "grad_norm" not in record and train:
                self._want_grad_norm = True  # Trainer's logs lack it: pre_optimizer_step keeps the norm for us
                grad_norm = self._grad_norm_for(monitor, record.get("step"))
            if monitor.optimizer is not None and "learning_rate" not in record:
                lr = optimizer_lr(monitor.optimizer)
            if monitor.model is not None and train and self.config.convergence.stall_logs > 0:
                changed = monitor.guard.run("watching whether the weights change", self._weights_sample,
                                            monitor, record.get("step"))
            if grad_norm is not None or lr is not None or changed is not None:
                self._live_inputs[id(record)] = (grad_norm, lr, changed)  # popped by the rules, same record object
        if self.losswatch is None or record.get("kind") != rf.RecordKind.TRAIN.value or "loss" not in record:
            return
        check = self.losswatch.collect()
        if check.non_finite:
            record[rf.LOSS_REPLACED] = True
            if check.first_step is not None:
                record[rf.LOSS_NONFINITE_STEP] = check.first_step

    def _weights_sample(self, monitor: Any, step: Any) -> Any:
        """Training thread, at a logged step at least ``CHECK_EVERY_STEPS`` after the last sampled one: a
        host copy of the sampled weights (the rules compare it with the previous one, on whichever thread
        runs them)."""
        model = monitor.model
        if self._updates is None or self._updates_model is not model:
            self._updates, self._updates_model, self._updates_step = UpdateWatch(model), model, None
        if isinstance(step, int) and self._updates_step is not None and 0 <= step - self._updates_step < CHECK_EVERY_STEPS:
            return None
        self._updates_step = step if isinstance(step, int) else None
        return self._updates.sample()

    def on_record(self, monitor: Any, record: dict[str, Any]) -> None:
        """Training thread, after the record is queued: poll the control files (once per ``control_poll_s``);
        the rules run here only with ``stop_on_critical`` (else in ``on_record_background``)."""
        if self.actions is None:
            return
        if monitor.model is not self._model_seen:  # training thread: the model may be read here
            self._watch_model(monitor)
        if self._background is None or self.config.stop_on_critical:
            self._evaluate(monitor, record, *self._live_inputs.pop(id(record), (None, None, None)))
            # (a stop must be set before on_log returns)
        if time.monotonic() >= self._next_poll:
            self._poll_control(monitor)

    def on_record_background(self, monitor: Any, record: dict[str, Any]) -> None:
        """Writer thread: the rules on one record, with the live inputs ``on_record`` read for it."""
        if self.actions is None or self._background is None or self.config.stop_on_critical:
            return  # evaluated on the training thread already
        self._evaluate(monitor, record, *self._live_inputs.pop(id(record), (None, None, None)))

    def _evaluate(self, monitor: Any, record: dict[str, Any], grad_norm: float | None, lr: float | None,
                  changed: float | None = None) -> None:
        """Run the rules on one record (the writer thread, or the training thread with ``stop_on_critical``)."""
        with self._engine_lock:
            self._evaluate_locked(monitor, record, grad_norm, lr, changed)

    def _evaluate_locked(self, monitor: Any, record: dict[str, Any], grad_norm: float | None,
                         lr: float | None, changed: float | None = None) -> None:
        obs = observation_from_record(record)
        if obs is not None and record.get(rf.LOSS_REPLACED):
            # the real loss was NaN/Inf: critical at the step it happened; the stand-in Trainer logged
            # never enters the windows, nor becomes a "new best model"
            bad_step = record.get(rf.LOSS_NONFINITE_STEP)
            self.actions.observed(bad_step if isinstance(bad_step, int) else obs.step)
            alerts = self.engine.observe(Observation(step=bad_step if isinstance(bad_step, int) else obs.step,
                                                     loss=math.nan))
            for a in alerts:
                a.metadata.update(hidden_by_trainer=True, logged_loss=record.get("loss"))
                a.message += f" (Trainer's logging_nan_inf_filter logged {record.get('loss')!r} in its place)"
            at = bad_step if isinstance(bad_step, int) else obs.step
            if alerts or at != obs.step:
                self._act(monitor, alerts, list(self.engine.held), at)
            obs.loss = None
        if obs is not None:
            if obs.loss is not None and record.get("kind") == rf.RecordKind.TRAIN.value:
                self.actions.observed(obs.step)
            if obs.loss is not None and obs.grad_norm is None:
                obs.grad_norm = grad_norm
            if obs.loss is not None and obs.learning_rate is None:
                obs.learning_rate = lr
            if record.get("kind") == rf.RecordKind.TRAIN.value and changed is not None and self._updates is not None:
                obs.weights_changed = self._updates.compare(changed)
            alerts = self.engine.observe(obs)
            self._act(monitor, alerts, list(self.engine.held), obs.step)  # clean steps resolve incidents

    def on_pre_optimizer_step(self, monitor: Any, step: int) -> None:
        if self.rolling is not None:
            self._pre_opt_seen = True
            self.rolling.before_optimizer_step()  # a copy in progress must see the weights before this update
        if self.actions is None or not self._want_grad_norm or monitor.model is None:
            return
        args = getattr(monitor, "trainer_args", None)
        every = getattr(args, "logging_steps", None)
        if isinstance(every, int) and every > 0 and step % every != 0 and step != 1:
            return  # only the steps Trainer will log
        norm = model_grad_norm(monitor.model)
        if norm is not None:
            self._grad_cache = (step, norm)

    def on_step_end(self, monitor: Any, step: int) -> None:
        if self.losswatch is not None:
            self.losswatch.set_step(step + 1)  # the forwards until the next step end belong to the next step
        if self.actions is not None and monitor.model is not self._model_seen:
            self._watch_model(monitor)
        if self.rolling is not None:
            self._rolling_copy(monitor, step)
        if self.actions is not None:
            self._poll_control(monitor, step=step)

    def on_close(self, monitor: Any, state: rf.RunState) -> None:
        if self.actions is None:
            return
        self._poll_control(monitor, force=True)
        self.actions.close()
        if self.losswatch is not None:
            self.losswatch.close()
            self.losswatch = None

    # ------------------------------------------------------------------ internals
    def _grad_norm_for(self, monitor: Any, step: int) -> float | None:
        if self._grad_cache is not None and self._grad_cache[0] == step:
            return self._grad_cache[1]
        if monitor.model is not None:  # plain loops often log right after backward: grads are there
            return model_grad_norm(monitor.model)
        return None

    def _status(self, monitor: Any, source: str) -> dict[str, Any]:
        now = time.time()
        doc = monitor.tracker.document(now, process_memory(), monitor.extra_status)
        doc["snapshot_source"] = {"kind": source}
        return doc

    def _writer(self, monitor: Any, *, background: bool = False) -> Any:
        """The function filling ``model/``; with ``background`` (and a model that allows it) the weights
        are copied to CPU now and the returned :class:`BackgroundWrite` is run by the writer thread."""
        model, tok = monitor.model, monitor.tokenizer
        if model is None:
            return None  # no live model (Monitor without watch()): copy the latest checkpoint instead
        if background and self.config.snapshots.background and can_save_in_background(model):
            state = cpu_state_dict(model)
            saver = self.saver
            return BackgroundWrite(lambda d: save_live_model(model, tok, d, state_dict=state, saver=saver))
        return lambda d: save_live_model(model, tok, d)

    def _act(self, monitor: Any, alerts: list, held: list, step: int) -> None:
        """Write the alerts, events and incident changes now (any thread; called for every logged step,
        clean ones too, so incidents resolve); snapshots and the stop go to the training thread."""
        assert self.actions is not None
        actionable = self.actions.record_step(step, alerts, held)
        self.alerts_written += len(alerts)
        if not alerts:
            return
        stop = self.config.stop_on_critical and any(a.severity == Severity.CRITICAL.value for a in alerts)
        if stop:
            self.stop_requested = True  # plain loops read it; seen by the training thread at once
        on_training_thread = getattr(monitor, "on_training_thread", None)
        if on_training_thread is None:
            self._act_live(monitor, actionable, step, stop)
        else:
            on_training_thread(self._act_live, monitor, actionable, step, stop)

    def _act_live(self, monitor: Any, alerts: list, step: int, stop: bool) -> None:
        """Training thread: snapshots of the live weights for ``alerts`` of ``step`` (muted rules already
        left out), and the stop."""
        assert self.actions is not None
        writers: list[Any] = []

        def writer_for(plan: Any, s: int) -> Any:  # the weights are copied only when a snapshot is planned
            if not writers:
                writers.append(self._writer(monitor, background=True))
            return writers[0]

        source = "live weights" if monitor.model is not None else "checkpoint"
        if alerts:  # a muted rule saves no snapshot
            with self._engine_lock:
                self.actions.snapshot_for(alerts, step, self._status(monitor, source), writer_for)
        if stop:
            control = getattr(monitor, "trainer_control", None)
            if control is not None:
                control.should_training_stop = True

    def _poll_control(self, monitor: Any, *, step: int | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_poll:
            return
        self._next_poll = now + self.control_poll_s
        self._reload_thresholds(monitor)
        if self.actions is not None:
            self.actions.incidents.poll_control()
        if monitor.paths.snapshot_request.exists():
            self._honour_request(monitor, step if step is not None else monitor.tracker.step)

    def _reload_thresholds(self, monitor: Any) -> None:
        if self._thresholds is None or self._thresholds.path != monitor.paths.thresholds:
            self._thresholds = control.ThresholdsFile(monitor.paths.thresholds, self.base_config)
        with self._engine_lock:
            self._apply_thresholds(monitor)

    def _apply_thresholds(self, monitor: Any) -> None:
        assert self._thresholds is not None
        change = self._thresholds.poll()
        if change.kind == "invalid":
            self.thresholds_problem = change.problem
            monitor.guard.warn_once("thresholds.json", change.problem or "")
        elif change.kind == "removed" and self.config != self.base_config:
            self.engine.set_config(self.base_config)  # file removed: back to the configured values
        elif change.kind == "loaded" and change.config is not None:
            self.thresholds_problem = None
            self.engine.set_config(change.config)

    def _honour_request(self, monitor: Any, step: int) -> None:
        assert self.actions is not None
        req = control.claim_request(monitor.paths.root)
        if req is None:
            return
        if req.get("id") is None:
            res = snap.SnapshotResult(False, error=f"malformed snapshot request: {req.get('problem')}")
        else:
            writer = self._writer(monitor)
            with self._engine_lock:
                res = self.actions.save("manual", ["manual"], step,
                                        self._status(monitor, "live weights" if writer else "checkpoint"),
                                        writer, kind=snap.KIND_MANUAL)
        control.write_result(monitor.paths.root, req, res, handled_by="collector")

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """The engine's and the incidents' state after every record logged so far (the rules still queued
        are waited for)."""
        wait = getattr(self._host, "wait_background", None)
        if callable(wait):
            wait()
        with self._engine_lock:
            return {"engine": self.engine.state_dict(),
                    "last_anomaly_save_step": self.actions.last_anomaly_save_step if self.actions else None,
                    "incidents": self.actions.incidents.state_dict() if self.actions else
                    (self._pending_state or {}).get("incidents")}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with self._engine_lock:
            self.engine.load_state_dict(state.get("engine") or {})
        self._pending_state = dict(state)
        if self.actions is not None:
            self.actions.last_anomaly_save_step = state.get("last_anomaly_save_step")
            self.actions.incidents.load_state_dict(state.get("incidents") or {})

