"""The plain-loop anomaly API of the "Advanced Anomaly Detection System" guide, on Trainboard's rule engine.

``AdvancedAnomalyDetector.analyze_training_step(model=, optimizer=, loss=, batch_size=, rewards=,
predictions=)`` reads the gradient norm from the model's ``.grad`` tensors and the learning rate from
the optimizer, applies :class:`collectors.anomaly.rules.RuleEngine`, saves the alerts as JSON lines
(through :class:`collectors.alerts.AlertLog`, the same record shape as ``logs/alerts.jsonl``) and returns them. ``AnomalyDetectionHook`` forwards alerts to handlers registered in
``profiler_registry``. torch is only touched through the objects the caller passes in.
"""
from __future__ import annotations

import atexit
import math
import weakref
from collections import Counter, deque
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from collectors import runformat as rf
from collectors.alerts import SOURCE_DETECTOR, Alert, AlertLog, Severity
from collectors.anomaly.rules import AnomalyConfig, Observation, RuleEngine, coerce_config
from collectors.anomaly.updatewatch import UpdateWatch
from collectors.runtime import Guard

DEFAULT_OUTPUT_DIR = "anomaly_detection_results"
ALERTS_FILE = "alerts.jsonl"
SUMMARY_FILE = "summary_report.json"
LATEST_ALERTS = 20
"""Alerts kept in memory for ``latest_alerts`` of the summary (counts cover all of them)."""
HOOK_NAME = "anomaly_detection"

AlertHandler = Callable[[list[Alert], int], Any]


def model_grad_norm(model: Any) -> float | None:
    """Total L2 norm of the model's gradients, or ``None`` when no parameter has one.

    One fused pass (``torch._foreach_norm`` through ``get_total_norm``) where available; runs under
    ``no_grad`` and never changes the gradients.
    """
    params = getattr(model, "parameters", None)
    if params is None:
        return None
    grads = [p.grad for p in params() if getattr(p, "grad", None) is not None]
    if not grads:
        return None
    import torch

    with torch.no_grad():
        total = getattr(torch.nn.utils, "get_total_norm", None)
        if total is not None:
            return float(total(grads, 2.0))
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])))


def optimizer_lr(optimizer: Any) -> float | None:
    """The learning rate of the optimizer's first parameter group (``None`` without one)."""
    groups = getattr(optimizer, "param_groups", None)
    if not groups:
        return None
    lr = groups[0].get("lr")
    try:
        return float(lr)
    except (TypeError, ValueError):  # e.g. a tensor LR on an exotic optimizer: item() below
        item = getattr(lr, "item", None)
        return float(item()) if callable(item) else None


def to_float(value: Any) -> float | None:
    """A Python float from a number, 0-d tensor or numpy scalar; ``None`` for ``None``."""
    if value is None:
        return None
    item = getattr(value, "item", None)
    if callable(item):
        value = item()
    return float(value)


def to_float_list(values: Any) -> list[float] | None:
    """A flat list of floats from a list, tuple, numpy array or tensor; ``None`` for ``None``."""
    if values is None:
        return None
    detach = getattr(values, "detach", None)
    if callable(detach):
        values = detach().flatten().cpu().tolist()
    elif hasattr(values, "ravel"):
        values = values.ravel().tolist()
    elif isinstance(values, (int, float)):
        values = [values]
    return [float(v) for v in values]


class ProfilerRegistry:
    """Named lists of handlers; ``call(name, ...)`` runs each, reporting a failing one once.

    Example:
        >>> profiler_registry.register_hook("anomaly_detection", lambda alerts, step: None)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._hooks: dict[str, list[Callable[..., Any]]] = {}
        self.guard = Guard()

    def register_hook(self, name: str, handler: Callable[..., Any]) -> None:
        """Add ``handler`` under ``name``.

        Raises:
            ValueError: when ``name`` is empty or ``handler`` is not callable.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"register_hook(name=...) must be a non-empty string; got {name!r}")
        if not callable(handler):
            raise ValueError(f"register_hook(handler=...) must be callable; got {type(handler).__name__}")
        self._hooks.setdefault(name, []).append(handler)

    def unregister_hook(self, name: str, handler: Callable[..., Any] | None = None) -> None:
        """Remove ``handler`` (or every handler) under ``name``; unknown names are ignored."""
        if handler is None:
            self._hooks.pop(name, None)
        elif handler in self._hooks.get(name, ()):
            self._hooks[name].remove(handler)

    def handlers(self, name: str) -> list[Callable[..., Any]]:
        return list(self._hooks.get(name, ()))

    def call(self, name: str, *args: Any, **kwargs: Any) -> None:
        for handler in self.handlers(name):
            self.guard.run(f"alert handler {getattr(handler, '__name__', handler)!s}", handler, *args, **kwargs)


profiler_registry = ProfilerRegistry()
"""The process-wide registry the guide's ``profiler_registry.register_hook(...)`` uses."""


def summarize(counts_cat: Mapping[str, int], counts_sev: Mapping[str, int], latest: Iterable[Alert]) -> dict[str, Any]:
    """The summary report document (pure)."""
    return {
        "total_alerts": int(sum(counts_sev.values())),
        "by_category": dict(sorted(counts_cat.items())),
        "by_severity": {s.value: int(counts_sev.get(s.value, 0)) for s in Severity if counts_sev.get(s.value)},
        "latest_alerts": [a.to_dict() for a in latest],
    }


_OPEN: "weakref.WeakSet[AdvancedAnomalyDetector]" = weakref.WeakSet()
_atexit_installed = False


def _save_open_summaries() -> None:
    for det in list(_OPEN):
        det.close()


class AdvancedAnomalyDetector:
    """Gradient, learning-rate, batch-size, convergence and reward-calibration rules for any training loop.

    Call :meth:`analyze_training_step` after ``loss.backward()`` and before ``optimizer.step()``: the
    gradient norm is read from the model's gradients and the learning rate from the optimizer.

    Args:
        output_dir: where alerts (``alerts.jsonl``) and the summary (``summary_report.json``) are saved
            (default ``"anomaly_detection_results"``, created on first write).
        save_alerts: write alerts and the summary (default True; the summary is also written at exit).
        gradient: ``{'explosion_threshold': 10.0, 'vanishing_threshold': 1e-6, 'window_size': 100,
            'variance_factor': 1.0}`` (any subset).
        learning_rate: ``{'change_threshold': 0.3, 'min_lr': 1e-8, 'max_lr': 1.0}``.
        batch_size: ``{'performance_threshold': 0.1, 'window_size': 20}``.
        convergence: ``{'plateau_threshold': 0.001, 'plateau_window': 50}``.
        reward_drift: ``{'drift_threshold': 0.1, 'calibration_threshold': 0.7}``.
        smart: Smart Monitor thresholds (``loss_spike_threshold``, ``accuracy_drop_threshold``, ...).
        config: a complete :class:`AnomalyConfig` instead of the sections above.

    Raises:
        ValueError: an unknown key or a value out of range (the message names it and the allowed keys).

    Example:
        >>> det = AdvancedAnomalyDetector(save_alerts=False, gradient={"explosion_threshold": 5.0})
        >>> for alert in det.analyze_training_step(model=model, optimizer=opt, loss=loss.item(),
        ...                                        batch_size=32):                     # doctest: +SKIP
        ...     print(alert.severity, alert.message)
    """

    def __init__(self, output_dir: str | Path = DEFAULT_OUTPUT_DIR, save_alerts: bool = True, *,
                 gradient: Mapping[str, Any] | None = None, learning_rate: Mapping[str, Any] | None = None,
                 batch_size: Mapping[str, Any] | None = None, convergence: Mapping[str, Any] | None = None,
                 reward_drift: Mapping[str, Any] | None = None, smart: Mapping[str, Any] | None = None,
                 config: AnomalyConfig | None = None) -> None:
        sections = {"gradient": gradient, "learning_rate": learning_rate, "batch_size": batch_size,
                    "convergence": convergence, "reward_drift": reward_drift, "smart": smart}
        base = config if config is not None else AnomalyConfig()
        if not isinstance(base, AnomalyConfig):
            base = coerce_config(base) or AnomalyConfig()
        self.config = base.merged({k: v for k, v in sections.items() if v is not None})
        if not str(output_dir).strip():
            raise ValueError("AdvancedAnomalyDetector(output_dir=...) must be a directory path; got an empty value")
        self.output_dir = Path(output_dir)
        self.save_alerts = bool(save_alerts)
        self.engine = RuleEngine(self.config)
        self.step = 0
        self.guard = Guard()
        self.by_category: Counter[str] = Counter()
        self.by_severity: Counter[str] = Counter()
        self.latest: deque[Alert] = deque(maxlen=LATEST_ALERTS)
        self._listeners: list[AlertHandler] = []
        self._log: AlertLog | None = None
        self._used = False
        self._updates: UpdateWatch | None = None
        self._updates_model: Any = None
        self.closed = False
        global _atexit_installed
        _OPEN.add(self)
        if not _atexit_installed:
            _atexit_installed = True
            atexit.register(_save_open_summaries)

    @property
    def alerts(self) -> list[Alert]:
        """The latest alerts (at most ``LATEST_ALERTS``), oldest first."""
        return list(self.latest)

    def set_config(self, config: AnomalyConfig) -> None:
        """Switch thresholds without losing histories (used by the live threshold sliders)."""
        self.config = config
        self.engine.set_config(config)

    # ------------------------------------------------------------------ analysis
    def analyze_training_step(self, model: Any = None, optimizer: Any = None, loss: Any = None,
                              batch_size: int | None = None, rewards: Any = None, predictions: Any = None, *,
                              step: int | None = None, grad_norm: float | None = None,
                              learning_rate: float | None = None, accuracy: float | None = None) -> list[Alert]:
        """Check one training step; returns its alerts (also saved and sent to the alert handlers).

        Args:
            model: reads the total gradient norm from ``p.grad`` (call before ``optimizer.zero_grad``).
            optimizer: reads the learning rate of the first parameter group.
            loss: the step's loss (float or 0-d tensor).
            batch_size: samples in this step (the batch-size impact rule compares before/after changes).
            rewards: reward values of this step (list, array or tensor), for the reward rules.
            predictions: predicted reward probabilities (or logits) matching ``rewards``, for calibration.
            step: the step number (default: one more than the previous call).
            grad_norm, learning_rate, accuracy: values you already have (skip reading them).
        """
        self.step = int(step) if step is not None else self.step + 1
        self._used = True
        if grad_norm is None and model is not None:
            grad_norm = self.guard.run("reading the gradient norm", model_grad_norm, model)
        if learning_rate is None and optimizer is not None:
            learning_rate = self.guard.run("reading the learning rate", optimizer_lr, optimizer)
        changed = None
        if model is not None and self.engine.config.convergence.stall_logs > 0:
            changed = self.guard.run("watching whether the weights change", self._weights_changed, model)
        obs = Observation(step=self.step, loss=to_float(loss), accuracy=to_float(accuracy),
                          grad_norm=to_float(grad_norm), learning_rate=to_float(learning_rate),
                          batch_size=int(batch_size) if batch_size is not None else None,
                          rewards=to_float_list(rewards), predictions=to_float_list(predictions),
                          weights_changed=changed)
        alerts = self.engine.observe(obs)
        if alerts:
            self.emit(alerts)
        return alerts

    def _weights_changed(self, model: Any) -> float | None:
        """Share of sampled weights changed since the previous call (``optimizer_stalled``)."""
        if self._updates is None or self._updates_model is not model:
            self._updates, self._updates_model = UpdateWatch(model), model
        return self._updates.collect()

    def emit(self, alerts: Sequence[Alert]) -> None:
        """Count, save and dispatch ``alerts`` (subclasses call it for alerts of their own rules)."""
        for a in alerts:
            self.by_category[a.category] += 1
            self.by_severity[a.severity] += 1
            self.latest.append(a)
        if self.save_alerts:
            if self._log is None:
                self._log = AlertLog(self.output_dir / ALERTS_FILE, source=SOURCE_DETECTOR, guard=self.guard)
            self._log.write(alerts)
        for listener in list(self._listeners):
            self.guard.run(f"alert listener {getattr(listener, '__name__', listener)!s}", listener, list(alerts), self.step)

    # ------------------------------------------------------------------ handlers and reports
    def add_alert_listener(self, handler: AlertHandler) -> None:
        """Call ``handler(alerts, step)`` whenever a step produced alerts."""
        if not callable(handler):
            raise ValueError(f"add_alert_listener(handler=...) must be callable; got {type(handler).__name__}")
        if handler not in self._listeners:
            self._listeners.append(handler)

    def remove_alert_listener(self, handler: AlertHandler) -> None:
        if handler in self._listeners:
            self._listeners.remove(handler)

    def get_summary_report(self) -> dict[str, Any]:
        """``total_alerts``, ``by_category``, ``by_severity`` and ``latest_alerts`` (on demand)."""
        return summarize(self.by_category, self.by_severity, self.latest)

    def save_summary_report(self, path: str | Path | None = None) -> Path:
        """Write the summary report atomically (default ``<output_dir>/summary_report.json``)."""
        target = Path(path) if path is not None else self.output_dir / SUMMARY_FILE
        rf.write_json_atomic(target, self.get_summary_report())
        return target

    def close(self) -> None:
        """Write the final summary (when saving) and close the alert file. Idempotent; also run at exit."""
        if self.closed:
            return
        self.closed = True
        _OPEN.discard(self)
        if self.save_alerts and self._used:
            self.guard.run("saving the anomaly summary report", self.save_summary_report)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> "AdvancedAnomalyDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "engine": self.engine.state_dict(),
                "by_category": dict(self.by_category), "by_severity": dict(self.by_severity)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state.get("step") or 0)
        self.engine.load_state_dict(state.get("engine") or {})
        self.by_category = Counter(state.get("by_category") or {})
        self.by_severity = Counter(state.get("by_severity") or {})


class AnomalyDetectionHook:
    """Connects a detector to ``profiler_registry``: handlers registered under ``"anomaly_detection"``
    receive ``(alerts, step)`` whenever the detector reports alerts.

    Args:
        detector: the :class:`AdvancedAnomalyDetector` to listen to.
        name: the registry name handlers use (default ``"anomaly_detection"``).
        registry: default the process-wide ``profiler_registry``.

    Example:
        >>> hook = AnomalyDetectionHook(detector)          # doctest: +SKIP
        >>> hook.register_with_profiler()
        >>> profiler_registry.register_hook("anomaly_detection", lambda alerts, step: print(step, alerts))
    """

    def __init__(self, detector: AdvancedAnomalyDetector, name: str = HOOK_NAME,
                 registry: ProfilerRegistry | None = None) -> None:
        if not isinstance(detector, AdvancedAnomalyDetector):
            raise ValueError(f"AnomalyDetectionHook(detector=...) needs an AdvancedAnomalyDetector; got {type(detector).__name__}")
        self.detector = detector
        self.name = name
        self.registry = registry if registry is not None else profiler_registry
        self.registered = False

    def register_with_profiler(self) -> "AnomalyDetectionHook":
        """Start forwarding the detector's alerts to the registry's handlers. Idempotent."""
        self.detector.add_alert_listener(self.dispatch)
        self.registered = True
        return self

    def unregister(self) -> None:
        self.detector.remove_alert_listener(self.dispatch)
        self.registered = False

    def dispatch(self, alerts: list[Alert], step: int) -> None:
        self.registry.call(self.name, alerts, step)

    def after_step(self, step: int | None = None, model: Any = None, optimizer: Any = None, loss: Any = None,
                   **kwargs: Any) -> list[Alert]:
        """For profilers that call hooks after each step: analyse it when a loss is given."""
        if loss is None:
            return []
        allowed = {"batch_size", "rewards", "predictions", "grad_norm", "learning_rate", "accuracy"}
        extra = {k: v for k, v in kwargs.items() if k in allowed}
        return self.detector.analyze_training_step(model=model, optimizer=optimizer, loss=loss, step=step, **extra)


def is_critical(alert: Alert) -> bool:
    return alert.severity == Severity.CRITICAL.value


def finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
