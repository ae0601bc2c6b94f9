"""The in-training spectral collector: a :class:`~collectors.plugin.MonitorPlugin` measuring SVD metrics.

Every ``svd_interval`` optimizer steps it measures, for each 2-D layer whose name matches ``layer_pattern``
(default: attention projections), the metrics of :mod:`collectors.spectral.metrics` from the weight and its
gradient (in ``on_pre_optimizer_step``, where gradients are present), feeds them to an
:class:`~collectors.spectral.tracker.SVDMonitor`, and writes:

- ``logs/spectral.jsonl``: one ``spectral`` record per layer measurement, with its compute time;
- ``logs/alerts.jsonl``: an ``alert`` record (category ``spectral``) when a layer's alert starts firing,
  through :class:`collectors.alerts.AlertLog` like every other alert;
- stdout: one ``[trainboard-svd] step=… layer=…`` line per measurement, the line format
  ``python -m collectors.spectral.monitor --log-file`` reads (``echo=False`` turns it off).

Enable it with ``Monitor(..., spectral=True)`` / ``MonitorCallback(..., spectral=True)`` (or a
:class:`SpectralConfig`). An adaptive training reports its own mode and rank with
:meth:`SpectralPlugin.report_mode`; otherwise the recorded mode and r are the monitor's recommendation.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from collectors import runformat as rf
from collectors.alerts import SOURCE_COLLECTOR, AlertLog
from collectors.spectral.decisions import Mode, SpectralAlert, SVDMetrics, SwitchThresholds, parse_mode, recommend_mode
from collectors.spectral.metrics import (DEFAULT_RECON_TARGET, DEFAULT_TOP_K_FRACTION, FULL_SVD_MAX_DIM, METHODS,
                                         measure)
from collectors.spectral.text import LINE_PREFIX, format_alert, format_line
from collectors.spectral.tracker import SVDMonitor

DEFAULT_SVD_INTERVAL = 20
DEFAULT_LAYER_PATTERN = (r"(?:^|\.)(?:attn\.(?:c_attn|c_proj|c_q|c_k|c_v)|q_proj|k_proj|v_proj|o_proj|out_proj"
                         r"|attention\.self\.(?:query|key|value)|attention\.output\.dense)$")
"""Attention projections of common architectures: GPT-2 (``attn.c_attn``, ``attn.c_proj``, a Conv1D),
LLaMA/Mistral/OPT (``q_proj`` … ``o_proj``, ``out_proj``), BERT (``attention.self.query`` …). GPT-2's
``mlp.c_proj`` is deliberately not matched."""
DEFAULT_COST_BUDGET = 0.05
"""Largest share of training time the measurements may take; above it the interval is doubled."""
MAX_INTERVAL_FACTOR = 64
"""The interval is never stretched beyond this many times ``svd_interval``."""
DEFAULT_CPU_THREADS = 1
"""Threads for measurements on CPU. Measured on the demo's layers (192×64) on 2 busy cores: one thread
takes ~1 ms per layer, two threads 15-30 ms median and up to 1 s (the OpenMP hand-off dominates such
small LAPACK calls when the cores are shared with the training), and one thread leaves the other
cores to the training."""


@dataclass
class SpectralConfig:
    """Settings of the spectral collector.

    Args:
        svd_interval: measure every this many optimizer steps (default 20).
        layer_pattern: regex searched in module names (default :data:`DEFAULT_LAYER_PATTERN`).
        top_k_fraction: k as a fraction of min(out, in), default 0.1.
        recon_target: reconstruction target defining r, default 0.01.
        thresholds: the switch thresholds (default ``SwitchThresholds()``), or a dict of its fields.
        method: ``"auto"`` (default), ``"full"`` or ``"lowrank"``.
        max_full_dim: the full/low-rank size threshold for ``"auto"`` (default 512).
        echo: print one line per measurement to stdout (default True).
        cost_budget: share of training time the measurements may take before the interval is doubled
            (default 0.05; 0 disables the adjustment).
        max_layers: measure at most this many matched layers (default all).
        cpu_threads: torch threads while measuring CPU layers (default 1; ``None`` keeps torch's setting).

    Raises:
        ValueError: on an out-of-range value or a regex that does not compile.

    Example:
        >>> SpectralConfig(svd_interval=50, layer_pattern=r"q_proj$").svd_interval
        50
    """

    svd_interval: int = DEFAULT_SVD_INTERVAL
    layer_pattern: str = DEFAULT_LAYER_PATTERN
    top_k_fraction: float = DEFAULT_TOP_K_FRACTION
    recon_target: float = DEFAULT_RECON_TARGET
    thresholds: SwitchThresholds = field(default_factory=SwitchThresholds)
    method: str = "auto"
    max_full_dim: int = FULL_SVD_MAX_DIM
    echo: bool = True
    cost_budget: float = DEFAULT_COST_BUDGET
    max_layers: int | None = None
    cpu_threads: int | None = DEFAULT_CPU_THREADS

    def __post_init__(self) -> None:
        if isinstance(self.svd_interval, bool) or not isinstance(self.svd_interval, int) or self.svd_interval < 1:
            raise ValueError(f"svd_interval must be a positive integer; got {self.svd_interval!r}")
        try:
            re.compile(self.layer_pattern)
        except (re.error, TypeError) as exc:
            raise ValueError(f"layer_pattern is not a valid regular expression: {exc}") from None
        if not (isinstance(self.top_k_fraction, (int, float)) and 0 < self.top_k_fraction <= 1):
            raise ValueError(f"top_k_fraction must be in (0, 1]; got {self.top_k_fraction!r}")
        if not (isinstance(self.recon_target, (int, float)) and 0 < self.recon_target < 1):
            raise ValueError(f"recon_target must be in (0, 1); got {self.recon_target!r}")
        if isinstance(self.thresholds, Mapping):
            self.thresholds = SwitchThresholds(**self.thresholds)
        if not isinstance(self.thresholds, SwitchThresholds):
            raise ValueError(f"thresholds must be a SwitchThresholds or a dict of its fields; got {self.thresholds!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if not isinstance(self.max_full_dim, int) or self.max_full_dim < 1:
            raise ValueError(f"max_full_dim must be a positive integer; got {self.max_full_dim!r}")
        if not (isinstance(self.cost_budget, (int, float)) and 0 <= self.cost_budget < 1):
            raise ValueError(f"cost_budget must be in [0, 1); got {self.cost_budget!r}")
        if self.max_layers is not None and (not isinstance(self.max_layers, int) or self.max_layers < 1):
            raise ValueError(f"max_layers must be a positive integer or None; got {self.max_layers!r}")
        if self.cpu_threads is not None and (not isinstance(self.cpu_threads, int) or self.cpu_threads < 1):
            raise ValueError(f"cpu_threads must be a positive integer or None; got {self.cpu_threads!r}")


def config_from(values: Mapping[str, Any]) -> SpectralConfig:
    """A :class:`SpectralConfig` from a dict, with a clear error for unknown field names.

    Raises:
        ValueError: for an unknown field or a bad value.
    """
    allowed = tuple(SpectralConfig.__dataclass_fields__)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"unknown spectral setting(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return SpectralConfig(**dict(values))


@dataclass(frozen=True)
class WatchedLayer:
    """A layer to measure: its name, module, and whether its weight is stored in × out (GPT-2 Conv1D)."""

    name: str
    module: Any
    transposed: bool


def find_layers(model: Any, pattern: str = DEFAULT_LAYER_PATTERN) -> list[WatchedLayer]:
    """The 2-D-weight layers of ``model`` whose module name matches ``pattern`` (``re.search``).

    ``nn.Linear`` (weight out × in) and transformers' ``Conv1D`` (weight in × out, used by GPT-2, hence
    ``transposed``) are recognised; other modules are ignored even when their name matches.
    """
    import torch

    rx = re.compile(pattern)
    out: list[WatchedLayer] = []
    for name, module in model.named_modules():
        if not name or not rx.search(name):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            continue
        if isinstance(module, torch.nn.Linear):
            out.append(WatchedLayer(name, module, False))
        elif type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
            out.append(WatchedLayer(name, module, True))
    return out


class SpectralPlugin:
    """Measures spectral metrics inside a training (a MonitorPlugin).

    Args:
        config: the settings (default ``SpectralConfig()``); keyword overrides are applied on top.

    Attributes:
        monitor: the :class:`SVDMonitor` holding each layer's history and alerts.
        interval: the current measurement interval (``svd_interval``, doubled while over the cost budget).
        measure_seconds: total time spent measuring; ``train_seconds``: wall time between measurements.

    Example:
        >>> mon = Monitor("runs/x", spectral=SpectralConfig(svd_interval=50)).watch(model)  # doctest: +SKIP
        >>> mon.spectral.report_mode("model.layers.0.self_attn.q_proj", "LOW-RANK", r=220)   # doctest: +SKIP
    """

    def __init__(self, config: SpectralConfig | None = None, **overrides: Any) -> None:
        base = config or SpectralConfig()
        if not isinstance(base, SpectralConfig):
            raise ValueError(f"config must be a SpectralConfig; got {type(base).__name__}")
        self.config = config_from({**asdict(base), "thresholds": base.thresholds, **overrides})
        self.monitor = SVDMonitor(self.config.thresholds)
        self.interval = self.config.svd_interval
        self.measure_seconds = 0.0
        self.train_seconds = 0.0
        self.measurements = 0
        self._layers: list[WatchedLayer] | None = None
        self._layers_of: int | None = None
        self._prev_u: dict[str, Any] = {}
        self._reported: dict[str, tuple[Mode, int | None]] = {}
        self._recommended: dict[str, Mode] = {}
        self._firing: dict[str, set[str]] = {}
        self._last_step = -1
        self._last_end: float | None = None
        self._pre_hook_seen = False
        self._spectral: rf.JsonlWriter | None = None
        self._alerts: AlertLog | None = None

    # ----------------------------------------------------------------- public API
    def report_mode(self, layer: str, mode: Mode | str | float, r: int | None = None) -> None:
        """Tell the collector the mode and rank an adaptive training uses for ``layer`` (from now on).

        Raises:
            ValueError: for an unknown mode or a negative r.
        """
        m = parse_mode(mode)
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 0):
            raise ValueError(f"r must be a non-negative integer or None; got {r!r}")
        self._reported[str(layer)] = (m, r)

    def due(self, step: int) -> bool:
        """True when ``step`` is a measurement step (a positive multiple of the current interval)."""
        return step > 0 and step % self.interval == 0 and step != self._last_step

    def overhead(self) -> float:
        """Measurement time as a share of the training time between measurements (0 before the second one)."""
        return self.measure_seconds / self.train_seconds if self.train_seconds > 0 else 0.0

    # ----------------------------------------------------------------- hooks
    def on_start(self, monitor: Any) -> None:
        self._last_end = time.perf_counter()

    def on_pre_optimizer_step(self, monitor: Any, step: int) -> None:
        self._pre_hook_seen = True
        if self.due(step):
            self.measure_all(monitor, step)

    def on_step_end(self, monitor: Any, step: int) -> None:
        # Plain loops that never call pre_optimizer_step still get the weight metrics (gradients are
        # usually gone by now, so the alignments are NaN unless the loop keeps them).
        if not self._pre_hook_seen and self.due(step):
            monitor.guard.warn_once("spectral without gradients",
                                    "spectral metrics are measured at step end because pre_optimizer_step(step) "
                                    "is never called: alignments need the gradients, call it after backward()")
            self.measure_all(monitor, step)

    def on_close(self, monitor: Any, state: Any) -> None:
        for w in (self._spectral, self._alerts):
            if w is not None:
                monitor.guard.run("closing spectral logs", w.close)
        if self.config.echo and self.monitor.latest and getattr(monitor, "is_main", True):
            self.monitor.print_summary()

    # ----------------------------------------------------------------- work
    def layers(self, model: Any) -> list[WatchedLayer]:
        """The watched layers of ``model`` (found once per model)."""
        if self._layers is None or self._layers_of != id(model):
            self._layers = find_layers(model, self.config.layer_pattern)[: self.config.max_layers]
            self._layers_of = id(model)
        return self._layers

    def measure_all(self, monitor: Any, step: int) -> list[SVDMetrics]:
        """Measure every watched layer now, write the records and alerts; returns the metrics."""
        import torch

        if not getattr(monitor, "is_main", True):
            return []  # only the world rank 0 writes; other ranks hold the same replicated weights
        t_start = time.perf_counter()
        if self._last_end is not None:
            self.train_seconds += max(0.0, t_start - self._last_end)
        self._last_step = step
        model = getattr(monitor, "model", None)
        if model is None:
            monitor.guard.warn_once("spectral without model", "spectral metrics need the model: call "
                                    "monitor.watch(model) (MonitorCallback does it for Trainer)")
            return []
        layers = self.layers(model)
        if not layers:
            monitor.guard.warn_once("spectral no layers", f"spectral metrics: no Linear/Conv1D layer matches "
                                    f"layer_pattern {self.config.layer_pattern!r}")
            return []
        if self._spectral is None:
            monitor.paths.logs_dir.mkdir(parents=True, exist_ok=True)
            self._spectral = rf.JsonlWriter(monitor.paths.spectral)
            self._alerts = AlertLog(monitor.paths.alerts, source=SOURCE_COLLECTOR, guard=monitor.guard,
                                    notifier=getattr(monitor, "notifier", None))
        out: list[SVDMetrics] = []
        threads = torch.get_num_threads()
        on_cpu = any(layer.module.weight.device.type == "cpu" for layer in layers)
        if on_cpu and self.config.cpu_threads is not None and self.config.cpu_threads != threads:
            torch.set_num_threads(self.config.cpu_threads)
        try:
            with torch.no_grad():
                self._measure_layers(monitor, layers, step, out)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        no_grad = sum(1 for m in out if math.isnan(m.principal_alignment))
        if out and no_grad == len(out):
            monitor.guard.warn_once("spectral no gradients", f"spectral metrics: no gradient on the watched layers "
                                    f"at step {step}; principal/minor alignments are NaN")
        t_end = time.perf_counter()
        self.measure_seconds += t_end - t_start
        self.measurements += 1
        self._last_end = t_end
        self._adjust_interval(monitor)
        return out

    def _measure_layers(self, monitor: Any, layers: list[WatchedLayer], step: int, out: list[SVDMetrics]) -> None:
        for layer in layers:
            got = monitor.guard.run(f"spectral metrics of {layer.name}", self._measure_layer, layer, step)
            if got is None:
                continue
            metrics, record, alerts, _ = got
            out.append(metrics)
            self._write(monitor, metrics, record, alerts)

    def _measure_layer(self, layer: WatchedLayer, step: int) -> tuple[SVDMetrics, dict[str, Any], list[SpectralAlert], bool]:
        weight = layer.module.weight
        grad = weight.grad
        w = weight.detach()
        g = None if grad is None else grad.detach()
        if layer.transposed:
            w = w.T
            g = None if g is None else g.T
        reported = self._reported.get(layer.name)
        spec = measure(w, g, self._prev_u.get(layer.name), top_k_fraction=self.config.top_k_fraction,
                       recon_target=self.config.recon_target, reported_r=None if reported is None else reported[1],
                       method=self.config.method, max_full_dim=self.config.max_full_dim)
        self._prev_u[layer.name] = spec.u_k
        if reported is not None:
            mode, source = reported[0], "reported"
        else:
            mode, source = self._recommended.get(layer.name, Mode.FULL), "recommended"
        metrics = SVDMetrics(step=step, layer_name=layer.name, mode=mode, r=spec.r,
                             principal_alignment=spec.principal_alignment, minor_alignment=spec.minor_alignment,
                             subspace_angle=spec.subspace_angle, reconstruction_error=spec.reconstruction_error)
        alerts = self.monitor.add_metrics(metrics)
        if reported is None:  # the recommendation acts after the alert, as a training's switch would
            self._recommended[layer.name] = recommend_mode(metrics, self.config.thresholds, mode)
        record = rf.make_record(rf.RecordKind.SPECTRAL, step=step, time=time.time(), layer=layer.name,
                                mode=Mode(mode).value, mode_source=source, r=spec.r,
                                r_is_lower_bound=spec.r_is_lower_bound,
                                principal_alignment=spec.principal_alignment, minor_alignment=spec.minor_alignment,
                                subspace_angle=spec.subspace_angle, reconstruction_error=spec.reconstruction_error,
                                k=spec.k, shape=[int(w.shape[0]), int(w.shape[1])], method=spec.method,
                                seconds=spec.seconds, svd_seconds=spec.svd_seconds, interval=self.interval,
                                thresholds=self.config.thresholds.to_dict(), alerts=[a.rule for a in alerts])
        return metrics, record, alerts, g is not None

    def _write(self, monitor: Any, metrics: SVDMetrics, record: dict[str, Any], alerts: list[SpectralAlert]) -> None:
        if self._spectral is not None:
            monitor.guard.run("appending to spectral.jsonl", self._spectral.append, record)
        firing = {a.rule for a in alerts}
        new = [a for a in alerts if a.rule == "mode_switch" or a.rule not in self._firing.get(metrics.layer_name, set())]
        self._firing[metrics.layer_name] = firing
        if new and self._alerts is not None:  # edge-triggered: written when an alert starts firing, not every time
            self._alerts.write([a.to_alert() for a in new], now=record["time"])
        if self.config.echo:
            print(format_line(metrics, seconds=f"{record['seconds']:.4f}", method=record["method"]), flush=True)
            for a in new:
                where = "" if a.message.startswith(f"[{metrics.layer_name}]") else f"[{metrics.layer_name}] "
                print(f"{LINE_PREFIX} {where}{format_alert(a)}", flush=True)

    def _adjust_interval(self, monitor: Any) -> None:
        budget = self.config.cost_budget
        if budget <= 0 or self.measurements < 2 or self.train_seconds <= 0:
            return
        ratio = self.overhead()
        if ratio > budget and self.interval < self.config.svd_interval * MAX_INTERVAL_FACTOR:
            self.interval *= 2
            monitor.guard.warn_once("spectral cost", f"spectral metrics took {ratio:.1%} of training time (budget "
                                    f"{budget:.0%}); measuring every {self.interval} steps instead")

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor.state_dict(), "interval": self.interval,
                "recommended": {k: v.value for k, v in self._recommended.items()},
                "reported": {k: [v[0].value, v[1]] for k, v in self._reported.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.monitor.load_state_dict(state.get("monitor", {}))
        self.interval = int(state.get("interval", self.interval))
        self._recommended = {k: parse_mode(v) for k, v in dict(state.get("recommended", {})).items()}
        self._reported = {k: (parse_mode(v[0]), v[1]) for k, v in dict(state.get("reported", {})).items()}


def make_spectral_plugin(option: Any) -> SpectralPlugin:
    """The plugin for a ``spectral=`` argument: True, a :class:`SpectralConfig`, a dict of its fields, or a plugin.

    Raises:
        ValueError: for any other value (the message lists the accepted ones).
    """
    if isinstance(option, SpectralPlugin):
        return option
    if option is True:
        return SpectralPlugin()
    if isinstance(option, SpectralConfig):
        return SpectralPlugin(option)
    if isinstance(option, Mapping):
        return SpectralPlugin(config_from(option))
    raise ValueError("spectral= must be True, a SpectralConfig, a dict of SpectralConfig fields or a SpectralPlugin; "
                     f"got {option!r}")
