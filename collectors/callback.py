"""``MonitorCallback``: the one-line Trainboard integration for a transformers ``Trainer``.

It forwards Trainer's hooks to a :class:`collectors.monitor.Monitor`, which owns the files. Only the
world process zero writes (``state.is_world_process_zero``), so ``torchrun`` gives one coherent run dir.
"""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from collectors import features
from collectors import runformat as rf
from collectors.monitor import Monitor
from collectors.notify import notifier_from_settings
from collectors.plugin import MonitorPlugin
from collectors.ranks import coerce_ranks


def history_entry(state: TrainerState, logs: dict[str, Any]) -> dict[str, Any]:
    """The metrics of this log call as Trainer recorded them in ``log_history`` (which can hold more than
    ``logs``, e.g. ``total_flos``), falling back to ``logs`` when the last entry is not this call's."""
    last = state.log_history[-1] if state.log_history else None
    if isinstance(last, dict) and last.get("step") == state.global_step and all(k in last for k in logs):
        return {k: v for k, v in last.items() if k != "step"}
    return dict(logs)


class MonitorCallback(TrainerCallback):
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

    Example:
        >>> trainer = Trainer(model=model, args=args, train_dataset=ds)           # doctest: +SKIP
        >>> trainer.add_callback(MonitorCallback(base_dir="runs/exp1"))           # doctest: +SKIP
    """

    def __init__(self, base_dir: str | os.PathLike[str] | None = None, *, plugins: Sequence[MonitorPlugin] = (),
                 tokens_per_step: float | None = None, samples: Any = None, anomaly: Any = True,
                 spectral: Any = None, notify: Any = None, ranks: Any = True) -> None:
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
        self.monitor.watch(model=model, optimizer=kwargs.get("optimizer"),
                           tokenizer=kwargs.get("processing_class") or kwargs.get("tokenizer"))
        return self.monitor

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        mon = self._ensure(args, state, **kwargs)
        mon.trainer_state = state  # type: ignore[attr-defined]  # plugins read epoch/max_steps from it
        mon.trainer_args = args  # type: ignore[attr-defined]
        mon.trainer_control = control  # type: ignore[attr-defined]
        mon.trainer_kwargs = kwargs  # type: ignore[attr-defined]
        mon.start()

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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore plugin states saved by :meth:`state_dict`."""
        for p in (self.monitor.plugins if self.monitor is not None else self.plugins):
            ld = getattr(p, "load_state_dict", None)
            if callable(ld) and type(p).__name__ in state:
                ld(state[type(p).__name__])
