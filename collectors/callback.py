"""``MonitorCallback``: the one-line Trainboard integration for a transformers ``Trainer``.

It forwards Trainer's hooks to a :class:`collectors.monitor.Monitor`, which owns the files. Only the
world process zero writes (``state.is_world_process_zero``), so ``torchrun`` gives one coherent run dir.

Resume (issue 11): the callback is a ``transformers.trainer_callback.ExportableState``, so Trainer saves
its :meth:`MonitorCallback.state` (the plugins' ``state_dict()``s: best loss, rule windows, incidents) in
every checkpoint's ``trainer_state.json`` under ``stateful_callbacks["MonitorCallback"]``. Trainer
restores such state itself only with ``restore_callback_states_from_checkpoint=True`` (default False),
and then by building a new callback from the saved ``args`` and replacing the one the user passed. So
the callback restores itself: at ``on_train_begin`` of a resumed training (``global_step > 0``; Trainer
has loaded the checkpoint's state by then) it reads its entry back from ``state.stateful_callbacks``,
and writes a ``resume`` record at that step. With the flag on, the saved ``args`` name the live instance
(``restore_into``, its creation index in the process), so Trainer's rebuild returns that same instance
and keeps the user's options.
"""
from __future__ import annotations

import json
import os
import threading
import time
import weakref
from typing import Any, Sequence

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from collectors import features
from collectors import runformat as rf
from collectors.monitor import Monitor
from collectors.notify import notifier_from_settings
from collectors.plugin import MonitorPlugin
from collectors.ranks import coerce_ranks


MAX_STATE_BYTES = 512 * 1024
"""Largest collector state saved in a checkpoint's trainer_state.json; a plugin whose state would pass it
is left out (reported once), so a checkpoint never grows by more than this."""
STATE_ATTRIBUTE = "trainboard_state"

_INSTANCES: list["weakref.ref[MonitorCallback]"] = []
_INSTANCES_LOCK = threading.Lock()


def plain_json(obj: Any) -> Any:
    """``obj`` as plain JSON types (tuples -> lists, numpy scalars -> numbers, NaN kept as Python floats,
    which trainer_state.json's ``json.dumps`` writes as ``NaN`` and reads back). Raises TypeError for
    anything else, so an unsaveable state is found before Trainer's save step could fail on it."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, dict):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_json(v) for v in obj]
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item):
        return plain_json(item())
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def history_entry(state: TrainerState, logs: dict[str, Any]) -> dict[str, Any]:
    """The metrics of this log call as Trainer recorded them in ``log_history`` (which can hold more than
    ``logs``, e.g. ``total_flos``), falling back to ``logs`` when the last entry is not this call's."""
    last = state.log_history[-1] if state.log_history else None
    if isinstance(last, dict) and last.get("step") == state.global_step and all(k in last for k in logs):
        return {k: v for k, v in last.items() if k != "step"}
    return dict(logs)


class MonitorCallback(TrainerCallback, ExportableState):
    """Streams a Trainer's logs to a Trainboard run directory.

    Args:
        base_dir: the run directory to write; default ``None`` uses ``<output_dir>/trainboard``.
        plugins: extra features (anomaly rules, samples, spectral metrics); default none.
        tokens_per_step: tokens per optimizer step for tokens/s; default ``None`` (samples/s is
            derived from the TrainingArguments).
        samples: live golden-vs-predicted samples (issue 4): ``True`` for the defaults, a
            :class:`collectors.samples.SamplesConfig`, or a list/dataset of samples; default ``None`` (off).
        anomaly: anomaly rules, alerts and snapshots: ``True`` (default), ``False``, or an
            ``AnomalyConfig``/dict of thresholds (see :class:`collectors.monitor.Monitor`).
        spectral: per-layer SVD metrics (issue 5, docs/spectral.md): ``True``, a ``SpectralConfig``, a
            dict of its fields or a ``SpectralPlugin``; default ``None`` (off). The plugin is ``self.spectral``.
        ranks: per-rank health and the stall watchdog (issue 13, docs/ranks.md): ``True`` (default), a
            ``RanksConfig`` or a dict of its fields; ``False`` off.

        restore_into: internal: Trainer's callback-state restore passes it (see the module docstring).

    Example:
        >>> trainer = Trainer(model=model, args=args, train_dataset=ds)           # doctest: +SKIP
        >>> trainer.add_callback(MonitorCallback(base_dir="runs/exp1"))           # doctest: +SKIP
    """

    def __new__(cls, *args: Any, restore_into: int | None = None, **kwargs: Any) -> "MonitorCallback":
        if restore_into is not None:
            live = _live_instance(restore_into)
            if isinstance(live, cls):
                return live  # Trainer rebuilding us from saved args: keep the instance with the user's options
        return super().__new__(cls)

    def __init__(self, base_dir: str | os.PathLike[str] | None = None, *, plugins: Sequence[MonitorPlugin] = (),
                 tokens_per_step: float | None = None, samples: Any = None, anomaly: Any = True,
                 spectral: Any = None, notify: Any = None, ranks: Any = True, restore_into: int | None = None) -> None:
        if restore_into is not None and getattr(self, "_index", None) is not None:
            return  # the live instance returned by __new__: already set up
        self._pending_state: dict[str, Any] | None = None
        with _INSTANCES_LOCK:
            self._index = len(_INSTANCES)
            _INSTANCES.append(weakref.ref(self))
        if base_dir is not None and not str(base_dir).strip():
            raise ValueError("MonitorCallback(base_dir=...) must be a directory path or None; got an empty string")
        self.base_dir = base_dir
        # samples and spectral plugins now; the anomaly plugin is added by the Monitor created at train begin
        assembled = features.assemble(plugins, samples=samples, spectral=spectral)
        self.plugins = assembled.plugins
        self.spectral: Any = assembled.spectral
        self.tokens_per_step = tokens_per_step
        self.monitor: Monitor | None = None
        features.check_anomaly(anomaly)  # a bad value fails at construction, not at train begin
        self.anomaly = anomaly
        self.ranks: Any = coerce_ranks(ranks) if ranks is not False else False  # a bad value fails here
        # bad notification URLs fail here too; the Notifier is handed to the Monitor at train begin
        self.notify: Any = notifier_from_settings(notify) if notify is not False else False

    # ------------------------------------------------------------------ helpers
    def _ensure(self, args: TrainingArguments, state: TrainerState, model: Any = None, **kwargs: Any) -> Monitor:
        if self.monitor is None:
            base = self.base_dir if self.base_dir is not None else os.path.join(args.output_dir or ".", "trainboard")
            world = max(int(getattr(args, "world_size", 1) or 1), 1)
            per_step = args.per_device_train_batch_size * max(args.gradient_accumulation_steps, 1) * world
            self.monitor = Monitor(base, samples_per_step=per_step, tokens_per_step=self.tokens_per_step,
                                   plugins=self.plugins, main_process=state.is_world_process_zero, anomaly=self.anomaly,
                                   notify=self.notify, ranks=self.ranks,
                                   run_config={"output_dir": args.output_dir, "learning_rate": args.learning_rate,
                                               "per_device_train_batch_size": args.per_device_train_batch_size,
                                               "gradient_accumulation_steps": args.gradient_accumulation_steps,
                                               "max_steps": state.max_steps, "num_train_epochs": args.num_train_epochs,
                                               "world_size": world, "seed": args.seed})
        mon = self.monitor
        opt = kwargs.get("optimizer")
        tok = kwargs.get("processing_class") or kwargs.get("tokenizer")
        # every hook passes them: hand them on only when they changed (on_log's budget is microseconds)
        if (model is not None and model is not mon.model) or (opt is not None and opt is not mon.optimizer) \
                or (tok is not None and tok is not mon.tokenizer):
            mon.watch(model=model, optimizer=opt, tokenizer=tok)
        return mon

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        resuming = state.global_step > 0  # Trainer loaded a checkpoint's state before this hook
        saved = self._pending_state
        if resuming and saved is None:
            saved = saved_state(state.stateful_callbacks, type(self).__name__)
        if isinstance(state.stateful_callbacks, dict):
            # a checkpoint saved without this callback has no entry, and Trainer's save step indexes it
            state.stateful_callbacks.setdefault(type(self).__name__, {"args": {}, "attributes": {}})
        mon = self._ensure(args, state, **kwargs)
        mon.trainer_state = state  # type: ignore[attr-defined]  # plugins read epoch/max_steps from it
        mon.trainer_args = args  # type: ignore[attr-defined]
        mon.trainer_control = control  # type: ignore[attr-defined]
        mon.trainer_kwargs = kwargs  # type: ignore[attr-defined]
        if resuming and saved:
            mon.guard.run("restoring the monitor's state from the checkpoint", self.load_state_dict, saved)
        self._pending_state = None
        mon.start()
        if resuming:
            mon.guard.run("writing the resume record", mon.resumed, int(state.global_step),
                          restored_state=bool(saved))

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs:
            return
        mon = self._ensure(args, state, **kwargs)
        mon.write_record(rf.make_record(rf.classify(logs), step=state.global_step, time=time.time(),
                                        **history_entry(state, logs)))

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.set_state(rf.RunState.TRAINING)
            self.monitor.set_phase("saving" if control.should_save else None)

    def on_prediction_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.set_state(rf.RunState.EVALUATING)

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.monitor is not None:
            # global_step is incremented after the optimizer step: the step being computed is +1.
            self.monitor.pre_optimizer_step(state.global_step + 1)

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.set_phase(None)  # a save Trainer skipped after all (save_strategy="best") ended the phase
            self.monitor.step_begin(state.global_step + 1)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.trainer_control = control  # type: ignore[attr-defined]
            self.monitor.trainer_kwargs = kwargs  # type: ignore[attr-defined]  # eval_dataloader appears after the first eval
            self.monitor.step_end(state.global_step)
            # DefaultFlowCallback ran first: an evaluation or a save follows this step (no watchdog calls it a stall)
            if control.should_evaluate or control.should_save:
                self.monitor.set_phase("evaluating" if control.should_evaluate else "saving")

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.set_phase(None)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.close(rf.RunState.FINISHED)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Plugin states, so a resumed training resumes its monitors too."""
        if self.monitor is None:
            return {}
        out: dict[str, Any] = {}
        for p in self.monitor.plugins:
            sd = getattr(p, "state_dict", None)
            if callable(sd):
                out[type(p).__name__] = sd()
        return out

    def state(self) -> dict[str, Any]:
        """What Trainer saves in each checkpoint (``ExportableState``): small, plain JSON, never raising.

        A plugin state that is not JSON-serialisable or would pass :data:`MAX_STATE_BYTES` is left out and
        reported once: a checkpoint save must never fail or balloon because of the monitor.
        """
        saved: dict[str, Any] = {}
        guard = self.monitor.guard if self.monitor is not None else None
        try:
            states = self.state_dict()
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not break Trainer's checkpoint
            states = {}
            if guard is not None:
                guard.warn_once("state_dict", f"the monitor's state was not saved with the checkpoint: {exc}")
        budget = MAX_STATE_BYTES
        for name, st in states.items():
            try:
                plain = plain_json(st)
                size = len(json.dumps(plain))
            except (TypeError, ValueError) as exc:
                if guard is not None:
                    guard.warn_once(f"state {name}", f"{name}'s state is not saved with checkpoints: {exc}")
                continue
            if size > budget:
                if guard is not None:
                    guard.warn_once(f"state {name}", f"{name}'s state ({size / 1024:.0f} KiB) is not saved with "
                                                     f"checkpoints: over the {MAX_STATE_BYTES // 1024} KiB budget")
                continue
            budget -= size
            saved[name] = plain
        return {"args": {"restore_into": self._index}, "attributes": {STATE_ATTRIBUTE: saved}}

    @property
    def trainboard_state(self) -> dict[str, Any]:
        """The saved plugin states (the attribute Trainer sets back when it restores callback states)."""
        return self.state()["attributes"][STATE_ATTRIBUTE]

    @trainboard_state.setter
    def trainboard_state(self, value: Any) -> None:
        if isinstance(value, dict):
            self._pending_state = value  # applied at on_train_begin, once the plugins exist

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore plugin states saved by :meth:`state_dict`."""
        for p in (self.monitor.plugins if self.monitor is not None else self.plugins):
            ld = getattr(p, "load_state_dict", None)
            if callable(ld) and type(p).__name__ in state:
                ld(state[type(p).__name__])


def _live_instance(index: Any) -> MonitorCallback | None:
    if isinstance(index, bool) or not isinstance(index, int):
        return None
    with _INSTANCES_LOCK:
        ref = _INSTANCES[index] if 0 <= index < len(_INSTANCES) else None
    return ref() if ref is not None else None


def saved_state(stateful: Any, name: str) -> dict[str, Any] | None:
    """The plugin states a checkpoint's ``stateful_callbacks`` holds for the callback class ``name``
    (the first one when Trainer stored a list for several instances); None when absent or malformed."""
    entry = stateful.get(name) if isinstance(stateful, dict) else None
    if isinstance(entry, list):
        entry = entry[0] if entry else None
    attrs = entry.get("attributes") if isinstance(entry, dict) else None
    st = attrs.get(STATE_ATTRIBUTE) if isinstance(attrs, dict) else None
    return st if isinstance(st, dict) and st else None
