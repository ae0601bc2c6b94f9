"""The plugin protocol between :class:`collectors.monitor.Monitor` and the features it runs.

A feature (anomaly rules, samples, spectral metrics, or a user's own) is an object with some of the
hooks of :class:`MonitorPlugin`; each hook receives the monitor as a :class:`PluginHost`, which names
what a feature may use of it. Both protocols live here, below the features and the Monitor, so a
feature can be typed against the monitor without importing it (the Monitor imports the features).
"""
from __future__ import annotations

from typing import Any, Protocol

from collectors import runformat as rf
from collectors.runtime import Guard


class PluginHost(Protocol):
    """What the Monitor offers the plugins it calls.

    Attributes:
        paths: the run directory's paths (write only what your feature owns).
        guard: report problems once through it; never raise into the training.
        is_main: only the world rank 0 process writes files.
        closed: the run was closed (hooks after close do nothing).
        model, optimizer, tokenizer: what ``Monitor.watch`` was given (``None`` when not).
        tracker: the status tracker (``step``, ``document(now, memory, extra)``).
        extra_status: fields merged into every status document (a feature may announce itself there).
        notifier: where alerts are also sent (``notify=``), or None; :class:`collectors.alerts.AlertLog` takes it.

    Methods (a plain host without them runs everything on the calling thread):
        in_background(fn, *args): run on the writer thread, in order with the records.
        on_training_thread(fn, *args): from the writer thread, run at the training thread's next call.
        wait_background(): wait for the background work queued so far.
    """

    paths: rf.RunPaths
    guard: Guard
    is_main: bool
    closed: bool
    model: Any
    optimizer: Any
    tokenizer: Any
    tracker: Any
    extra_status: dict[str, Any]
    notifier: Any


class MonitorPlugin(Protocol):
    """What a feature plugged into :class:`collectors.monitor.Monitor` may implement (every method is optional).

    Plugins run inside the training: the Monitor calls each hook through its :class:`Guard`, so a plugin
    that raises is reported once and skipped, never breaking the step.
    """

    def on_start(self, monitor: PluginHost) -> None: ...
    def on_annotate(self, monitor: PluginHost, record: dict[str, Any]) -> None:
        """Add fields to a metrics record before it is written (e.g. ``loss_replaced``); never remove any."""
    def on_record(self, monitor: PluginHost, record: dict[str, Any]) -> None:
        """Training thread, after the record is queued: keep it to microseconds (read live tensors here)."""
    def on_record_background(self, monitor: PluginHost, record: dict[str, Any]) -> None:
        """The monitor's writer thread, for every record in order (slow work: rules, alerts). What needs the
        training thread again (live weights, a stop) goes through ``monitor.on_training_thread(fn, ...)``."""
    def on_step_end(self, monitor: PluginHost, step: int) -> None: ...
    def on_step_begin(self, monitor: PluginHost, step: int) -> None:
        """An optimizer step begins (its batch was just fetched); every process."""
    def on_rank_record(self, monitor: PluginHost, record: dict[str, Any]) -> None:
        """Every metrics record on every process, main or not, before only the main one writes it."""
    def on_phase(self, monitor: PluginHost, phase: str | None) -> None:
        """A long phase (``"evaluating"``, ``"saving"``) began, or ended (``None``)."""
    def on_pre_optimizer_step(self, monitor: PluginHost, step: int) -> None: ...
    def on_close(self, monitor: PluginHost, state: rf.RunState) -> None: ...
