"""The in-training collector: ``Monitor`` for plain PyTorch loops and ``MonitorCallback`` for Trainer.

Both write the run directory described in :mod:`collectors.runformat`: one metrics record per logged
step and an atomically rewritten status file. Features (anomaly rules, samples, spectral metrics) plug
in as :class:`~collectors.plugin.MonitorPlugin` objects that receive the same hooks, so the file-writing
spine is written once; which plugins the ``anomaly=``/``spectral=`` options give is decided by
:mod:`collectors.features`, so this module names no feature. Only the world rank 0 process writes anything.

This module imports without torch and transformers; ``MonitorCallback`` needs transformers and is
loaded lazily from ``collectors/__init__.py``.
"""
from __future__ import annotations

import atexit
import math
import os
import socket
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping, Sequence

from collectors import features
from collectors.notify import notifier_from_settings
from collectors import runformat as rf
from collectors.plugin import MonitorPlugin
from collectors.runtime import Guard, as_number, is_main_process, iso_now, process_memory

NOTIFY_CLOSE_S = 5.0
"""Longest a closing run waits for its last notifications (a receiver that hangs is given up on)."""

LR_ALIASES = ("lr",)
"""Names accepted for the learning rate in ``Monitor.log``; stored as ``learning_rate`` like Trainer."""
__all__ = ["LR_ALIASES", "Monitor", "MonitorPlugin", "StatusTracker"]


@dataclass
class StatusTracker:
    """Builds the status document from the records seen so far. Pure: no I/O, tested directly.

    Attributes mirror the fields of ``status/training_status.json`` (docs/run-format.md).
    """

    started_at: float = field(default_factory=time.time)
    samples_per_step: float | None = None
    tokens_per_step: float | None = None
    state: rf.RunState = rf.RunState.TRAINING
    step: int = 0
    epoch: float | None = None
    train_loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    steps_per_second: float | None = None
    latest: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    _rate_anchor: tuple[int, float] | None = None

    def update(self, record: Mapping[str, Any], now: float) -> None:
        """Fold one metrics record (train, eval or summary) into the status."""
        kind = record.get("kind")
        step = record.get("step")
        if isinstance(step, int) and step >= self.step:
            if kind == rf.RecordKind.TRAIN.value:
                self._update_rate(step, now)
            self.step = step
        if record.get("epoch") is not None:
            self.epoch = record["epoch"]
        if kind == rf.RecordKind.TRAIN.value:
            # a loss Trainer replaced (its NaN/Inf filter) is not a loss: shown as NaN, never as 0.0
            self.train_loss = math.nan if record.get(rf.LOSS_REPLACED) else record.get("loss", self.train_loss)
            self.learning_rate = record.get("learning_rate", self.learning_rate)
            self.grad_norm = record.get("grad_norm", self.grad_norm)
        elif kind == rf.RecordKind.EVAL.value:
            self.eval_loss = record.get("eval_loss", self.eval_loss)
        for k, v in record.items():
            if k not in ("v", "kind", "time"):
                self.latest[k] = v

    def _update_rate(self, step: int, now: float) -> None:
        if self._rate_anchor is not None:
            s0, t0 = self._rate_anchor
            if step > s0 and now > t0:
                self.steps_per_second = (step - s0) / (now - t0)
        self._rate_anchor = (step, now)

    def document(self, now: float, memory: Mapping[str, float], extra: Mapping[str, Any]) -> dict[str, Any]:
        """The status file's content at time ``now``."""
        sps = self.steps_per_second
        doc: dict[str, Any] = {
            "v": rf.SCHEMA_VERSION,
            "state": self.state.value,
            "step": self.step,
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "eval_loss": self.eval_loss,
            "learning_rate": self.learning_rate,
            "grad_norm": self.grad_norm,
            "throughput": {
                "steps_per_second": sps,
                "samples_per_second": sps * self.samples_per_step if sps and self.samples_per_step else None,
                "tokens_per_second": sps * self.tokens_per_step if sps and self.tokens_per_step else None,
            },
            "memory": dict(memory),
            "started_at": self.started_at,
            "updated_at": now,
            "started_at_iso": iso_now(self.started_at),
            "updated_at_iso": iso_now(now),
            "error": self.error,
            "latest": dict(self.latest),
        }
        doc.update(extra)
        return doc


_OPEN_MONITORS: "weakref.WeakSet[Monitor]" = weakref.WeakSet()
_hooks_installed = False
_hook_lock = threading.Lock()


def _install_process_hooks() -> None:
    """Mark open runs crashed when the process dies with an uncaught exception (best effort)."""
    global _hooks_installed
    with _hook_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
    previous = sys.excepthook

    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        for mon in list(_OPEN_MONITORS):
            mon.mark_crashed(f"{exc_type.__name__}: {exc}")
        previous(exc_type, exc, tb)

    sys.excepthook = excepthook

    def at_exit() -> None:
        for mon in list(_OPEN_MONITORS):
            mon.mark_crashed("process exited before training finished")

    atexit.register(at_exit)


class Monitor:
    """Trainboard's collector for a plain PyTorch loop: log metrics, get a live dashboard.

    Args:
        base_dir: the run directory to write (created). Point the dashboard at it or at its parent.
        samples_per_step: samples per optimizer step (batch size × accumulation × world size), so the
            status shows samples/s; ``None`` (default) shows steps/s only.
        tokens_per_step: tokens per optimizer step, for tokens/s; default ``None``.
        plugins: features run at each hook (anomaly rules, samples, spectral metrics); default none.
        run_config: any JSON-able settings to record once in the status file (``config``); default none.
        main_process: write files from this process; default ``None`` means "world rank is 0".
        anomaly: anomaly rules, alerts and snapshots (:class:`collectors.anomaly.plugin.AnomalyPlugin`):
            ``True`` (default) with the guides' thresholds, ``False`` off, or an ``AnomalyConfig``/dict.
        spectral: per-layer SVD metrics (issue 5, docs/spectral.md): ``True``, a
            ``collectors.spectral.SpectralConfig``, a dict of its fields or a ``SpectralPlugin``;
            default ``None`` (off). The plugin is then ``monitor.spectral``; call ``pre_optimizer_step(step)``
            after ``backward()`` so it sees the gradients.
        ranks: per-rank health and the stall watchdog (issue 13, docs/ranks.md): ``True`` (default), a
            :class:`collectors.ranks.RanksConfig` or a dict of its fields; ``False`` turns both off. The
            plugin is then ``monitor.ranks``.

    Raises:
        ValueError: when ``base_dir`` is empty or names an existing file, or ``anomaly`` is invalid.

    Example:
        >>> with Monitor(base_dir="runs/exp1") as monitor:          # doctest: +SKIP
        ...     for step, batch in enumerate(loader, 1):
        ...         loss = train_step(batch)
        ...         monitor.log(step, loss=loss.item(), lr=sched.get_last_lr()[0])
    """

    def __init__(self, base_dir: str | os.PathLike[str], *, samples_per_step: float | None = None,
                 tokens_per_step: float | None = None, plugins: Sequence[MonitorPlugin] = (),
                 run_config: Mapping[str, Any] | None = None, main_process: bool | None = None,
                 anomaly: Any = True, spectral: Any = None, notify: Any = None, ranks: Any = True) -> None:
        if base_dir is None or not str(base_dir).strip():
            raise ValueError("Monitor(base_dir=...) needs a directory path; got an empty value")
        self.paths = rf.RunPaths.of(Path(base_dir).expanduser())
        if self.paths.root.exists() and not self.paths.root.is_dir():
            raise ValueError(f"Monitor base_dir {str(self.paths.root)!r} exists and is not a directory")
        for name, val in (("samples_per_step", samples_per_step), ("tokens_per_step", tokens_per_step)):
            if val is not None and (not isinstance(val, (int, float)) or not math.isfinite(val) or val <= 0):
                raise ValueError(f"Monitor({name}=...) must be a positive number or None; got {val!r}")
        self.is_main = is_main_process(main_process)
        self.guard = Guard()
        # alerts to Slack/Discord/email/webhooks (apprise), from notify= or TRAINBOARD_NOTIFY; bad URLs fail here
        self.notifier: Any = notifier_from_settings(notify, run_name=self.paths.root.name, guard=self.guard) \
            if self.is_main else None
        if self.notifier is not None and self.notifier.run_name == "run":
            self.notifier.run_name = self.paths.root.name  # a Notifier built by the callback names the run now
        if not self.is_main and hasattr(notify, "close"):
            notify.close(0.0)  # another rank's callback built it: only world rank 0 sends
        assembled = features.assemble(plugins, anomaly=anomaly, spectral=spectral, ranks=ranks)  # options -> plugins
        self.plugins: list[MonitorPlugin] = assembled.plugins
        self.spectral: Any = assembled.spectral
        self.ranks: Any = assembled.ranks
        self.tracker = StatusTracker(samples_per_step=samples_per_step, tokens_per_step=tokens_per_step)
        self.extra_status: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
        if run_config:
            self.extra_status["config"] = dict(run_config)
        self.model: Any = None
        self.optimizer: Any = None
        self.tokenizer: Any = None
        self.closed = False
        self._metrics: rf.JsonlWriter | None = None
        self._lock = threading.RLock()
        self._started = False

    # ----------------------------------------------------------------- lifecycle
    def watch(self, model: Any = None, optimizer: Any = None, tokenizer: Any = None) -> "Monitor":
        """Give plugins access to the live model, optimizer and tokenizer (for gradients, snapshots, samples)."""
        if model is not None:
            self.model = model
        if optimizer is not None:
            self.optimizer = optimizer
        if tokenizer is not None:
            self.tokenizer = tokenizer
        return self

    def add_plugin(self, plugin: MonitorPlugin) -> None:
        """Attach a feature after construction (it gets ``on_start`` if the run already started)."""
        self.plugins.append(plugin)
        if self._started:
            self._call(plugin, "on_start")

    def start(self) -> None:
        """Create the run directory and write the first status; called by the first ``log`` if needed."""
        with self._lock:
            if self._started:
                return
            self._started = True
            if self.is_main:
                _OPEN_MONITORS.add(self)
                _install_process_hooks()
                self.guard.run("creating the run directory", self._open)
                self._write_status()
            for plugin in self.plugins:
                self._call(plugin, "on_start")

    def _open(self) -> None:
        for d in (self.paths.status_dir, self.paths.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._metrics = rf.JsonlWriter(self.paths.metrics)

    def close(self, state: rf.RunState = rf.RunState.FINISHED, error: str | None = None) -> None:
        """Mark the run ``state`` (finished by default), let plugins finish, and close the files. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.start()
            self.closed = True
            _OPEN_MONITORS.discard(self)
            self.tracker.state = state
            if error:
                self.tracker.error = error
            for plugin in self.plugins:
                self._call(plugin, "on_close", state)
            if self.notifier is not None:
                self.guard.run("sending the last notifications", self.notifier.close, NOTIFY_CLOSE_S)
            if self.is_main:
                self._write_status()
                if self._metrics is not None:
                    self.guard.run("closing metrics.jsonl", self._metrics.close)

    def mark_crashed(self, error: str) -> None:
        """Record that the training died (called from the exception hook); never raises."""
        try:
            self.close(rf.RunState.CRASHED, error)
        except Exception:  # noqa: BLE001 - we are already inside a dying process
            pass

    def __enter__(self) -> "Monitor":
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close(rf.RunState.FINISHED)
        else:
            self.close(rf.RunState.CRASHED, f"{exc_type.__name__}: {exc}")

    # ----------------------------------------------------------------- logging
    def log(self, step: int, *, kind: rf.RecordKind | str | None = None, **metrics: Any) -> dict[str, Any] | None:
        """Record the metrics of one step (``loss=``, ``lr=`` or ``learning_rate=``, ``grad_norm=``, any other).

        Metrics named ``eval_*`` make an eval record unless ``kind`` says otherwise. Returns the record
        written (``None`` on non-main processes).

        Raises:
            ValueError: when ``step`` is not a non-negative integer or ``kind`` is unknown (user mistakes,
                reported at once rather than hidden).
        """
        step = as_number(step)
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"Monitor.log(step=...) must be a non-negative integer; got {step!r}")
        for alias in LR_ALIASES:
            if alias in metrics:
                metrics.setdefault("learning_rate", metrics.pop(alias))
        clean = {k: as_number(v) for k, v in metrics.items()}
        if kind is None:
            rec_kind = rf.classify(clean)
        else:
            try:
                rec_kind = rf.RecordKind(kind)
            except ValueError:
                allowed = ", ".join(k.value for k in (rf.RecordKind.TRAIN, rf.RecordKind.EVAL, rf.RecordKind.SUMMARY))
                raise ValueError(f"Monitor.log(kind=...) must be one of {allowed}; got {kind!r}") from None
        record = rf.make_record(rec_kind, step=step, time=time.time(), **clean)
        return self.write_record(record)

    def write_record(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Append a ready metrics record, update the status, run plugins. Used by ``log`` and the callback."""
        self.start()
        if self.closed:
            return None
        for plugin in self.plugins:  # every process, main or not (per-rank health)
            if hasattr(plugin, "on_rank_record"):
                self._call(plugin, "on_rank_record", record)
        if not self.is_main:
            return None
        for plugin in self.plugins:
            self._call(plugin, "on_annotate", record)
        with self._lock:
            now = record.get("time") or time.time()
            self.tracker.update(record, now)
            if self._metrics is None:  # the run dir could not be opened earlier (e.g. disk was full): retry
                self.guard.run("creating the run directory", self._open)
            if self._metrics is not None:
                self.guard.run("appending to metrics.jsonl", self._metrics.append, record)
            self._write_status(now)
        for plugin in self.plugins:
            self._call(plugin, "on_record", record)
        return record

    def set_state(self, state: rf.RunState) -> None:
        """Change the run state (training / evaluating) and rewrite the status at once."""
        if self.tracker.state != state and not self.closed:
            self.tracker.state = state
            self._write_status()

    def step_begin(self, step: int) -> None:
        """Hook for plugins that time the data loading (the batch is fetched before a step begins)."""
        for plugin in self.plugins:
            if hasattr(plugin, "on_step_begin"):
                self._call(plugin, "on_step_begin", step)

    def set_phase(self, phase: str | None) -> None:
        """Mark a long non-step phase (``"evaluating"``, ``"saving"``) or its end (``None``), so no
        watchdog calls it a stall; shown as ``phase`` in the status."""
        if self.closed or self.extra_status.get("phase") == phase:
            return
        self.extra_status["phase"] = phase
        for plugin in self.plugins:
            if hasattr(plugin, "on_phase"):
                self._call(plugin, "on_phase", phase)
        self._write_status()

    def heartbeat(self) -> None:
        """Rewrite the status now, from a plugin's thread, so the dashboard sees the process alive while no
        step completes (a stall) and can tell it from a dead one (stale)."""
        with self._lock:
            if not self.closed:
                self._write_status()

    def step_end(self, step: int) -> None:
        """Hook for plugins that act every optimizer step (control requests, samples, spectral)."""
        for plugin in self.plugins:
            self._call(plugin, "on_step_end", step)

    def pre_optimizer_step(self, step: int) -> None:
        """Hook for plugins that need the gradients (after backward and clipping, before the update)."""
        for plugin in self.plugins:
            self._call(plugin, "on_pre_optimizer_step", step)

    # ----------------------------------------------------------------- internals
    def _write_status(self, now: float | None = None) -> None:
        if not self.is_main:
            return
        now = time.time() if now is None else now
        doc = self.tracker.document(now, process_memory(), self.extra_status)
        if self.notifier is not None:
            doc["notify"] = self.notifier.stats()  # sent / failed / dropped, so a lost message is visible
        self.guard.run("writing training_status.json", rf.write_json_atomic, self.paths.status, doc)

    def _call(self, plugin: MonitorPlugin, hook: str, *args: Any) -> None:
        fn = getattr(plugin, hook, None)
        if fn is not None:
            self.guard.run(f"{type(plugin).__name__}.{hook}", fn, self, *args)
