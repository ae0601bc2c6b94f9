"""The in-training collector: ``Monitor`` for plain PyTorch loops and ``MonitorCallback`` for Trainer.

Both write the run directory described in :mod:`collectors.runformat`: one metrics record per logged
step and an atomically rewritten status file, through one writer thread per run
(:mod:`collectors.writer`) so the training thread only queues. Features (anomaly rules, samples, spectral metrics) plug
in as :class:`~collectors.plugin.MonitorPlugin` objects that receive the same hooks, so the file-writing
spine is written once; which plugins the ``anomaly=``/``spectral=`` options give is decided by
:mod:`collectors.features`, so this module names no feature. Only the world rank 0 process writes anything.

This module imports without torch and transformers; ``MonitorCallback`` needs transformers and is
loaded lazily from ``collectors/__init__.py``.
"""
from __future__ import annotations

import atexit
import functools
import math
import os
import signal
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
from collectors.recovery import SkipRange, parse_skip_ranges, step_skipped
from collectors.runtime import Guard, as_number, is_main_process, iso_now, process_memory
from collectors.writer import CLOSE_TIMEOUT_S, RunWriter

NOTIFY_CLOSE_S = 5.0
"""Longest a closing run waits for its last notifications (a receiver that hangs is given up on)."""

SIGNALS_FLUSHED = (signal.SIGTERM, signal.SIGINT)
"""Signals on which open runs write what is queued before the signal goes on (never swallowed)."""
SIGNAL_FLUSH_S = 5.0
"""Longest a signal handler waits for the writer thread before handing the signal on."""
JOBS_WAIT_S = 1.0
"""Longest ``pre_optimizer_step`` waits for the rules still being evaluated (see ``Monitor`` docstring)."""

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
    """Flush open runs and mark them when the process ends: uncaught exception (crashed), normal exit
    before ``close()`` (crashed), SIGTERM/SIGINT (flushed, then the previous handler runs). Installed once."""
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
    _install_signal_handlers()


def _install_signal_handlers() -> None:
    """On SIGTERM and SIGINT write what is queued, then hand the signal on: to the handler that was set
    before (Python's KeyboardInterrupt for SIGINT, a launcher's own handler), or, where that was the
    default action, mark the run crashed and re-raise the signal with the default action, so the process
    dies of it as it would have (exit status -15). An ignored signal stays ignored. Signal handlers can only
    be set from the main thread: elsewhere nothing is installed (atexit and the exception hook still flush).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS_FLUSHED:
        try:
            previous = signal.getsignal(signum)
        except (ValueError, OSError):
            continue
        if previous is signal.SIG_IGN or previous is None:
            continue  # ignored (nohup) or set from C: leave it alone
        try:
            signal.signal(signum, _make_signal_handler(signum, previous))
        except (ValueError, OSError):
            continue


def _make_signal_handler(signum: int, previous: Any) -> Any:
    def handler(sig: int, frame: Any) -> None:
        default = previous is signal.SIG_DFL
        for mon in list(_OPEN_MONITORS):
            try:
                if default:
                    mon.close_timeout = SIGNAL_FLUSH_S  # the signal must go on even if the disk hangs
                    mon.mark_crashed(f"terminated by {signal.Signals(sig).name}")
                else:
                    mon.flush(SIGNAL_FLUSH_S)
            except Exception:  # noqa: BLE001 - the signal must go on whatever happens here
                pass
        if callable(previous):
            previous(sig, frame)
        elif default:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)

    return handler


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
        skip_batches: optimizer steps whose batches a resumed loop must not train on (issue 11):
            ``"31-40"``, ``(31, 40)``, ``range(31, 41)`` or several (``"31-40,90-95"``); the loop asks
            :meth:`should_skip`. Default ``None`` (nothing skipped).
        ranks: per-rank health and the stall watchdog (issue 13, docs/ranks.md): ``True`` (default), a
            :class:`collectors.ranks.RanksConfig` or a dict of its fields; ``False`` turns both off. The
            plugin is then ``monitor.ranks``.

    Cost and durability (issue 12, docs/run-format.md "The writer thread"): ``log`` costs the training
    thread ~10-20 µs; one writer thread (``self.writer``, :class:`collectors.writer.RunWriter`) appends the
    records at least every 0.25 s, rewrites the status at most twice a second and at every state change,
    and runs the anomaly rules (their snapshots are taken back on the training thread before the weights
    change: see :meth:`watch` and :meth:`pre_optimizer_step`). ``close()``, a normal exit, an uncaught
    exception and SIGTERM/SIGINT write everything queued first; a ``kill -9`` loses at most the last
    0.5 s (``collectors.writer.KILL_WINDOW_S``); :meth:`flush` waits until everything logged is on disk.

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
                 anomaly: Any = True, spectral: Any = None, notify: Any = None, skip_batches: Any = None,
                 ranks: Any = True) -> None:
        if base_dir is None or not str(base_dir).strip():
            raise ValueError("Monitor(base_dir=...) needs a directory path; got an empty value")
        self.paths = rf.RunPaths.of(Path(base_dir).expanduser())
        if self.paths.root.exists() and not self.paths.root.is_dir():
            raise ValueError(f"Monitor base_dir {str(self.paths.root)!r} exists and is not a directory")
        for name, val in (("samples_per_step", samples_per_step), ("tokens_per_step", tokens_per_step)):
            if val is not None and (not isinstance(val, (int, float)) or not math.isfinite(val) or val <= 0):
                raise ValueError(f"Monitor({name}=...) must be a positive number or None; got {val!r}")
        self.is_main = is_main_process(main_process)
        self.skip_ranges: list[SkipRange] = parse_skip_ranges(skip_batches)  # a bad range fails here, before training
        self.skipped_steps = 0
        self.previous_status: dict[str, Any] | None = None
        """The status file a resumed run found (read before the first write), for the resume record."""
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
        if self.skip_ranges:
            self.extra_status["skip_batches"] = ",".join(str(r) for r in self.skip_ranges)
        if run_config:
            self.extra_status["config"] = dict(run_config)
        self.model: Any = None
        self.optimizer: Any = None
        self.tokenizer: Any = None
        self.closed = False
        self._metrics: rf.JsonlWriter | None = None
        self._lock = threading.RLock()
        self._started = False
        # the one writer thread: metrics appends, status rewrites and the plugins' background jobs
        # the writer thread's own tracker: it folds each record it appends, so the status it rewrites
        # (periodically, and the last one of a burst) never costs the training thread
        self._wtracker = StatusTracker(started_at=self.tracker.started_at, samples_per_step=samples_per_step,
                                       tokens_per_step=tokens_per_step)
        self.writer = RunWriter(self.paths.status, guard=self.guard, status_doc=self._status_doc,
                                fold=self._fold)
        self._hooked: dict[int, Any] = {}
        self._step_hooked = False
        """Whether the watched optimizer's step is hooked (then the forward pre-hook leaves the verdicts to it)."""
        self.close_timeout = CLOSE_TIMEOUT_S
        """Longest ``close()`` waits for the writer thread (a hung network disk is given up on, said once)."""
        self._annotate: list[tuple[str, Any]] = []
        self._on_record: list[tuple[str, Any]] = []
        self._on_rank_record: list[tuple[str, Any]] = []

    # ----------------------------------------------------------------- lifecycle
    def watch(self, model: Any = None, optimizer: Any = None, tokenizer: Any = None) -> "Monitor":
        """Give plugins access to the live model, optimizer and tokenizer (for gradients, snapshots, samples).

        On the main process it also hooks the optimizer's step (and the model's forward, which acts only
        while no optimizer step is hooked) with a check of a few attributes: the rules' verdicts of the
        last logged step are acted on there, before the weights change, so a snapshot holds exactly the
        weights of the step that fired.
        """
        if optimizer is not None:
            self.optimizer = optimizer
            inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
            self._hook(inner, "register_step_pre_hook", lambda opt, args, kwargs: self._before_weights_change())
            self._step_hooked = id(inner) in self._hooked
        if model is not None:
            self.model = model
            # the forward pre-hook only when no optimizer step could be hooked: the forward and backward
            # between a log and the optimizer's step are the writer thread's time for the rules
            self._hook(model, "register_forward_pre_hook", self._before_forward)
        if tokenizer is not None:
            self.tokenizer = tokenizer
        return self

    def _hook(self, obj: Any, method: str, fn: Any) -> None:
        """Register ``fn`` once per object with its torch hook method (nothing when it has none)."""
        if not self.is_main or id(obj) in self._hooked or not callable(getattr(obj, method, None)):
            return
        handle = self.guard.run(f"hooking {type(obj).__name__}", getattr(obj, method), fn)
        if handle is not None:
            self._hooked[id(obj)] = handle

    def _before_forward(self, module: Any, args: Any) -> None:
        """Model forward pre-hook: the last point before the weights change when the optimizer's step is
        not hooked (``watch(model)`` alone, or an optimizer without ``register_step_pre_hook``)."""
        if not self._step_hooked:
            self._before_weights_change()

    def _before_weights_change(self) -> None:
        """Optimizer step / forward pre-hook: act on the rules' verdicts while the weights are the logged ones."""
        writer = self.writer
        if writer.jobs_pending and not self.closed:
            self._verdicts_now(writer)
        if writer._soon:
            writer.run_soon()

    @staticmethod
    def _verdicts_now(writer: RunWriter) -> None:
        """The rules' verdicts on every record logged so far, before the weights change: run here what
        the writer thread has not started (a loop whose next forward follows its log at once gives it no
        time), wait for what it is running."""
        writer.run_hooks()
        if writer.jobs_pending and writer.alive:
            writer.wait_jobs(JOBS_WAIT_S)

    def add_plugin(self, plugin: MonitorPlugin) -> None:
        """Attach a feature after construction (it gets ``on_start`` if the run already started)."""
        self.plugins.append(plugin)
        if self._started:
            self._call(plugin, "on_start")
            self._record_hooks()

    def start(self) -> None:
        """Create the run directory and write the first status; called by the first ``log`` if needed."""
        with self._lock:
            if self._started:
                return
            self._started = True
            if self.is_main:
                _OPEN_MONITORS.add(self)
                _install_process_hooks()
                prev, _problem = rf.read_json(self.paths.status)
                self.previous_status = prev if isinstance(prev, dict) else None
                self.guard.run("creating the run directory", self._open)
                self.writer.start()
                self._write_status(urgent=True)
            for plugin in self.plugins:
                self._call(plugin, "on_start")
            self._record_hooks()

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
            if self.is_main:  # the rules' last verdicts (snapshots of the live weights) are acted on first
                self.writer.wait_jobs(NOTIFY_CLOSE_S)
                self.writer.run_soon()
            self.closed = True
            _OPEN_MONITORS.discard(self)
            self.tracker.state = state
            if error:
                self.tracker.error = error
            for plugin in self.plugins:
                self._call(plugin, "on_close", state)
            if self.is_main:
                self.writer.wait_jobs(NOTIFY_CLOSE_S)  # alerts from on_close reach the notifier before it closes
            if self.notifier is not None:
                self.guard.run("sending the last notifications", self.notifier.close, NOTIFY_CLOSE_S)
            if self.is_main:
                self._write_status(urgent=True)
                self.writer.close(self.close_timeout)  # writes what is queued + the final status, closes files
            for handle in self._hooked.values():
                self.guard.run("removing the monitor's hooks", handle.remove)
            self._hooked.clear()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything logged so far is on disk (records, status, the rules' alerts); True when
        done within ``timeout`` seconds. Results for the training thread (snapshots) are acted on at its
        next call. ``close()``, the exit hooks and the SIGTERM/SIGINT handlers flush too."""
        if not self.is_main or not self._started:
            return True
        return self.writer.flush(timeout)

    def in_background(self, fn: Any, *args: Any) -> None:
        """For plugins: run ``fn(*args)`` on the writer thread, after the records logged so far (slow work
        that needs no live tensor: the anomaly rules). Runs at once when this process writes nothing."""
        if self.is_main and self.writer.alive and not self.closed:
            self.writer.call(fn, *args)
        else:
            self.guard.run(getattr(fn, "__qualname__", "a plugin job"), fn, *args)

    def wait_background(self, timeout: float = JOBS_WAIT_S * 30) -> bool:
        """For plugins: wait until the background jobs queued so far ran (a state_dict after every record)."""
        if not self.writer.alive or threading.current_thread() is self.writer._thread:
            return True
        return self.writer.wait_jobs(timeout)

    def on_training_thread(self, fn: Any, *args: Any) -> None:
        """For background jobs: run ``fn(*args)`` on the training thread at its next call into the monitor
        (``log``, ``step_end``, ``pre_optimizer_step``, ``close``): snapshots of the live weights, a stop."""
        if threading.current_thread() is self.writer._thread:
            self.writer.on_training_thread(fn, *args)
        else:
            self.guard.run(getattr(fn, "__qualname__", "a plugin action"), fn, *args)

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
        clean = {k: v if type(v) is float else as_number(v) for k, v in metrics.items()}
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
        """Queue a ready metrics record, update the status, run plugins. Used by ``log`` and the callback.

        The record goes to the writer thread (appended within ``FLUSH_INTERVAL_S``); the status is queued
        at most twice a second. The record must not be changed after this call.
        """
        if not self._started:
            self.start()
        if self.closed:
            return None
        for name, fn in self._on_rank_record:  # every process, main or not (per-rank health)
            self.guard.run(name, fn, self, record)
        if not self.is_main:
            return None
        writer = self.writer
        if writer._soon:
            writer.run_soon()
        run = self.guard.run
        for name, fn in self._annotate:
            run(name, fn, self, record)
        now = record.get("time") or time.time()
        self.tracker.update(record, now)
        if self._metrics is None:  # the run dir could not be opened earlier (e.g. disk was full): retry
            self.guard.run("creating the run directory", self._open)
        if self._metrics is not None:
            writer.append(self._metrics, record)
        for name, fn in self._on_record:
            run(name, fn, self, record)
        return record

    def should_skip(self, step: int) -> bool:
        """Whether the plain loop must skip the batch of optimizer step ``step`` (``skip_batches=``).

        The loop calls it before the forward pass and ``continue``s without ``optimizer.step()``, so a
        skipped batch moves neither the weights nor Adam's moments. Which step numbers to use is the
        loop's choice; skipping at the data level (the loop still counts the skipped batch's step) keeps
        the data position meaning the same as in the run being recovered.

        Example:
            >>> for step, batch in enumerate(loader, start=1):                  # doctest: +SKIP
            ...     if step <= start_step or monitor.should_skip(step):
            ...         continue
        """
        if not self.skip_ranges or not step_skipped(int(step), self.skip_ranges):
            return False
        self.skipped_steps += 1
        self.extra_status["skipped_steps"] = self.skipped_steps
        return True

    def resumed(self, step: int, **info: Any) -> dict[str, Any] | None:
        """Record that this training resumed at optimizer step ``step`` into the same run dir (issue 11).

        Writes one ``resume`` record to ``metrics.jsonl``: every page then drops what the previous
        process logged after ``step`` (those steps are rolled back) and marks the crash and the resume
        on the loss chart. ``info`` (e.g. ``checkpoint=``) is stored in the record. Plugins do not see
        the record. Returns it (``None`` on other ranks).

        Raises:
            ValueError: when ``step`` is not a non-negative integer.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"Monitor.resumed(step=...) must be a non-negative integer; got {step!r}")
        self.start()
        if self.closed or not self.is_main:
            return None
        prev = self.previous_status or {}
        fields: dict[str, Any] = {"previous_step": prev.get("step") if isinstance(prev.get("step"), int) else None,
                                  "previous_state": prev.get("state") if isinstance(prev.get("state"), str) else None}
        fields.update({k: v for k, v in info.items() if v is not None})
        record = rf.make_record(rf.RecordKind.RESUME, step=step, time=time.time(), **fields)
        with self._lock:
            self.tracker.step = step
            if self._metrics is None:
                self.guard.run("creating the run directory", self._open)
            if self._metrics is not None:
                self.guard.run("appending to metrics.jsonl", self._metrics.append, record)
            self.extra_status["resumed_from_step"] = step
            self._write_status()
        return record

    def set_state(self, state: rf.RunState) -> None:
        """Change the run state (training / evaluating) and rewrite the status at once."""
        if self.writer._soon:
            self.writer.run_soon()
        if self.tracker.state != state and not self.closed:
            self.tracker.state = state
            self._write_status(urgent=True)

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
        if self.writer._soon:
            self.writer.run_soon()
        for plugin in self.plugins:
            self._call(plugin, "on_step_end", step)

    def pre_optimizer_step(self, step: int) -> None:
        """Hook for plugins that need the gradients (after backward and clipping, before the update).

        The last moment the weights of the previous step exist: the rules the writer thread has not come
        to are run here, one it is running is waited for (at most ``JOBS_WAIT_S``), and their results
        applied, so a snapshot they ask for holds exactly the weights of the step that fired.
        """
        writer = self.writer
        if writer.jobs_pending:
            self._verdicts_now(writer)
        if writer._soon:
            writer.run_soon()
        for plugin in self.plugins:
            self._call(plugin, "on_pre_optimizer_step", step)

    # ----------------------------------------------------------------- internals
    def _write_status(self, *, urgent: bool = False) -> None:
        """Queue a status rewrite with the current state for the writer thread (``urgent``: at once)."""
        if not self.is_main:
            return
        self.writer.status({"state": self.tracker.state.value, "error": self.tracker.error}, urgent=urgent)

    def _fold(self, record: dict[str, Any]) -> None:
        """Writer thread: fold an appended metrics record into its status tracker."""
        self._wtracker.update(record, record.get("time") or time.time())

    def _status_doc(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Writer thread: the status document, with the state changes queued by the training thread."""
        wt = self._wtracker
        if changes.get("state"):
            wt.state = rf.RunState(changes["state"])
        if changes.get("error"):
            wt.error = changes["error"]
        doc = wt.document(time.time(), process_memory(), self.extra_status)
        if self.notifier is not None:
            doc["notify"] = self.notifier.stats()  # sent / failed / dropped, so a lost message is visible
        return doc

    def _record_hooks(self) -> None:
        """(Re)build the per-hook lists the hot path iterates: only plugins that have the hook, bound once."""
        self._annotate = [(f"{type(p).__name__}.on_annotate", p.on_annotate) for p in self.plugins
                          if callable(getattr(p, "on_annotate", None))]
        self._on_record = [(f"{type(p).__name__}.on_record", p.on_record) for p in self.plugins
                           if callable(getattr(p, "on_record", None))]
        self._on_rank_record = [(f"{type(p).__name__}.on_rank_record", p.on_rank_record) for p in self.plugins
                                if callable(getattr(p, "on_rank_record", None))]
        self.writer.record_hooks = [functools.partial(p.on_record_background, self) for p in self.plugins
                                    if callable(getattr(p, "on_record_background", None))]

    def _call(self, plugin: MonitorPlugin, hook: str, *args: Any) -> None:
        fn = getattr(plugin, hook, None)
        if fn is not None:
            self.guard.run(f"{type(plugin).__name__}.{hook}", fn, self, *args)
