"""Spectral switch monitor: decision logic over per-layer SVD metrics, the log-line format, and the CLI.

Adaptive trainings switch a layer from full-rank to low-rank updates when its gradient starts to clobber the
principal subspace, or when conditions are safe (stable subspace, gradient mostly minor, compression
lossless). :class:`SVDMonitor` watches the metrics of each layer (see docs/spectral.md) against
:class:`SwitchThresholds` and returns alerts: CRITICAL when a switch is due, WARNING when a trigger is within
``warn_margin``, INFO for trends with a linear-fit estimate of the steps left, and mode switches.

Everything here is pure and imports neither torch nor dash: the in-training collector
(:mod:`collectors.spectral_collector`), the dashboard's SVD page and ``python -m collectors.svd_monitor``
(a watcher for log files, run directories and W&B runs) all use it.

Example:
    >>> mon = SVDMonitor(SwitchThresholds(warn_margin=0.05))
    >>> alerts = mon.add_metrics(SVDMetrics(step=100, layer_name="block0.attn.c_q", mode=0.0, r=246,
    ...     principal_alignment=0.45, minor_alignment=0.48, subspace_angle=0.15, reconstruction_error=0.008))
    >>> [a.severity.value for a in alerts]
    ['CRITICAL']
"""
from __future__ import annotations

import argparse
import enum
import math
import os
import re
import signal
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TextIO

# --------------------------------------------------------------------------- constants

DEFAULT_WARN_MARGIN = 0.05
DEFAULT_PRINCIPAL_DANGER = 0.4
DEFAULT_MINOR_SAFE = 0.6
DEFAULT_ANGLE_STABLE = 0.1
DEFAULT_RECON_SAFE = 0.01

ALERT_CATEGORY = "spectral"
TREND_MIN_POINTS = 5
"""Fewest measurements of a layer before a trend is reported."""
TREND_MAX_POINTS = 20
"""The trend fit uses at most the last this many measurements."""
TREND_MIN_R2 = 0.7
"""A fit explaining less of the variance than this is noise: no trend, no estimate."""
TREND_MAX_HORIZON = 10.0
"""No estimate further ahead than this many times the fitted window's step span (a flat trend)."""

LINE_PREFIX = "[trainboard-svd]"
"""Start of the line the collector prints per measurement; the CLI's default parser looks for it."""
METRIC_NAMES = ("principal_alignment", "minor_alignment", "subspace_angle", "reconstruction_error")
REQUIRED_PATTERN_GROUPS = ("step", "layer", *METRIC_NAMES)
OPTIONAL_PATTERN_GROUPS = ("mode", "r")
DEFAULT_REFRESH_SECONDS = 10.0
EXIT_USAGE = 2


class Severity(str, enum.Enum):
    """Alert levels, most urgent first."""

    CRITICAL = "CRITICAL"
    WARNING = "WARNING"
    INFO = "INFO"


SEVERITY_ICON = {Severity.CRITICAL: "🚨", Severity.WARNING: "⚠️ ", Severity.INFO: "ℹ️ "}


class Mode(str, enum.Enum):
    """A layer's update mode: full-rank or low-rank."""

    FULL = "FULL"
    LOW_RANK = "LOW-RANK"


_MODE_WORDS = {"full": Mode.FULL, "full-rank": Mode.FULL, "fullrank": Mode.FULL, "0": Mode.FULL,
               "low-rank": Mode.LOW_RANK, "lowrank": Mode.LOW_RANK, "low_rank": Mode.LOW_RANK,
               "low": Mode.LOW_RANK, "1": Mode.LOW_RANK}


def parse_mode(value: Any) -> Mode:
    """A :class:`Mode` from a Mode, a word (``FULL``, ``LOW-RANK``, ``lowrank`` …) or a number (0 full, 1 low-rank).

    Trainings that log to W&B log the mode as 0.0 / 1.0, hence the numbers.

    Raises:
        ValueError: for anything else, naming the accepted values.
    """
    if isinstance(value, Mode):
        return value
    if isinstance(value, bool):
        return Mode.LOW_RANK if value else Mode.FULL
    if isinstance(value, (int, float)) and value in (0, 1):
        return Mode.LOW_RANK if value == 1 else Mode.FULL
    if isinstance(value, str):
        key = value.strip().lower()
        try:
            key = str(int(float(key))) if key.replace(".", "", 1).isdigit() else key
        except ValueError:
            pass
        if key in _MODE_WORDS:
            return _MODE_WORDS[key]
    raise ValueError(f"mode must be FULL or LOW-RANK (or 0 / 1); got {value!r}")


def _as_float(name: str, value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, str) and value.strip().lower() in ("nan", "none", "null", ""):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None


# --------------------------------------------------------------------------- settings and records

@dataclass(frozen=True)
class SwitchThresholds:
    """The switch thresholds and the warning margin (defaults are those of the adaptive SVD training).

    Args:
        warn_margin: WARNING when a value is within this distance of its trigger (absolute units), default 0.05.
        principal_danger: clobbering when principal_alignment is above it, default 0.4.
        minor_safe: safe gradients when minor_alignment is above it, default 0.6.
        angle_stable: stable subspace when subspace_angle (radians) is below it, default 0.1.
        recon_safe: safe compression when reconstruction_error is below it, default 0.01.

    Raises:
        ValueError: when a value is not finite or out of its range (the message names the range).

    Example:
        >>> SwitchThresholds(warn_margin=0.08, principal_danger=0.35).minor_safe
        0.6
    """

    warn_margin: float = DEFAULT_WARN_MARGIN
    principal_danger: float = DEFAULT_PRINCIPAL_DANGER
    minor_safe: float = DEFAULT_MINOR_SAFE
    angle_stable: float = DEFAULT_ANGLE_STABLE
    recon_safe: float = DEFAULT_RECON_SAFE

    def __post_init__(self) -> None:
        for name, lo, hi, lo_open in (("warn_margin", 0.0, 1.0, False), ("principal_danger", 0.0, 1.0, True),
                                      ("minor_safe", 0.0, 1.0, True), ("angle_stable", 0.0, math.pi / 2, True),
                                      ("recon_safe", 0.0, 1.0, True)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"SwitchThresholds.{name} must be a finite number; got {value!r}")
            if value > hi or value < lo or (lo_open and value == lo):
                bracket = "(" if lo_open else "["
                raise ValueError(f"SwitchThresholds.{name} must be in {bracket}{lo:g}, {hi:.4g}]; got {value!r}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class SVDMetrics:
    """One measurement of one layer.

    Args:
        step: training step.
        layer_name: the layer (module name, e.g. ``transformer.h.0.attn.c_attn`` or ``block0.attn.c_q``).
        mode: FULL / LOW-RANK (a word, a :class:`Mode`, or 0.0 / 1.0 as W&B logs store it).
        r: the rank (the training's own, or the monitor's recommendation); ``None`` when unknown.
        principal_alignment, minor_alignment: gradient shares in [0, 1] (NaN when unknown).
        subspace_angle: radians (NaN at a layer's first measurement).
        reconstruction_error: relative tail error at ``r``.

    Raises:
        ValueError: when a field cannot be read as its type (the message names the field).
    """

    step: int
    layer_name: str
    mode: Mode | str | float
    r: int | None
    principal_alignment: float
    minor_alignment: float
    subspace_angle: float
    reconstruction_error: float

    def __post_init__(self) -> None:
        step = _as_float("step", self.step)
        if not math.isfinite(step) or step < 0 or not float(step).is_integer():
            raise ValueError(f"step must be a non-negative integer; got {self.step!r}")
        self.step = int(step)
        if not isinstance(self.layer_name, str) or not self.layer_name.strip():
            raise ValueError(f"layer_name must be a non-empty string; got {self.layer_name!r}")
        self.mode = parse_mode(self.mode)
        if self.r is not None:
            r = _as_float("r", self.r)
            self.r = int(r) if math.isfinite(r) else None
        for name in METRIC_NAMES:
            setattr(self, name, _as_float(name, getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mode"] = self.mode.value if isinstance(self.mode, Mode) else self.mode
        return d

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "SVDMetrics":
        """Build from a dict with the field names (a spectral.jsonl record, or ``layer`` for ``layer_name``).

        Raises:
            ValueError: when a required field is missing or unreadable.
        """
        layer = data.get("layer_name", data.get("layer"))
        missing = [n for n in ("step", *METRIC_NAMES) if n not in data] + ([] if layer is not None else ["layer"])
        if missing:
            raise ValueError(f"spectral record lacks {', '.join(missing)}")
        return cls(step=data["step"], layer_name=layer, mode=data.get("mode", Mode.FULL), r=data.get("r"),
                   principal_alignment=data["principal_alignment"], minor_alignment=data["minor_alignment"],
                   subspace_angle=data["subspace_angle"], reconstruction_error=data["reconstruction_error"])


@dataclass
class SpectralAlert:
    """One alert. The fields match the alert records of logs/alerts.jsonl (rule, category, severity, step,
    value, threshold, message, metadata); ``layer`` is also in ``metadata``."""

    rule: str
    severity: Severity
    step: int
    layer: str
    value: float | None
    threshold: float | None
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)
    category: str = ALERT_CATEGORY

    def to_fields(self) -> dict[str, Any]:
        """The record fields (without ``v``/``kind``/``time``, which the writer adds)."""
        return {"rule": self.rule, "category": self.category, "severity": self.severity.value, "step": self.step,
                "value": self.value, "threshold": self.threshold, "message": self.message,
                "metadata": {"layer": self.layer, **self.metadata}}


@dataclass(frozen=True)
class Criterion:
    """One of the three optimal-condition criteria evaluated on one measurement."""

    key: str
    label: str
    metric: str
    value: float
    threshold: float
    above: bool  # True: met when value > threshold; False: met when value < threshold

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value > self.threshold if self.above else self.value < self.threshold

    @property
    def distance(self) -> float:
        """How far the value still is from meeting the criterion (≤ 0 when met; NaN when unknown)."""
        return self.threshold - self.value if self.above else self.value - self.threshold

    def near(self, margin: float) -> bool:
        return not self.met and not math.isnan(self.value) and self.distance <= margin


def criteria(m: SVDMetrics, t: SwitchThresholds) -> list[Criterion]:
    """The optimal-condition criteria of ``m`` in the order stable subspace, safe gradients, safe reconstruction."""
    return [Criterion("stable_subspace", "Stable subspace", "subspace_angle", m.subspace_angle, t.angle_stable, False),
            Criterion("safe_gradients", "Safe gradients", "minor_alignment", m.minor_alignment, t.minor_safe, True),
            Criterion("safe_reconstruction", "Safe reconstruction", "reconstruction_error", m.reconstruction_error,
                      t.recon_safe, False)]


# --------------------------------------------------------------------------- trends

@dataclass(frozen=True)
class Trend:
    """A least-squares line through recent values of one metric.

    Attributes:
        slope: change per step; intercept: value at step 0; r2: coefficient of determination.
        n: points used; span: steps covered; fitted_now: the line's value at the latest step.
        steps_to_threshold: steps until the line crosses the threshold (None when not heading there,
            noisy, or further than :data:`TREND_MAX_HORIZON` × span).
    """

    slope: float
    intercept: float
    r2: float
    n: int
    span: float
    fitted_now: float
    steps_to_threshold: float | None


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares ``y = slope·x + intercept`` and R² (R² is 0 for a constant y or a single x).

    Raises:
        ValueError: with fewer than two points or different lengths.
    """
    n = len(xs)
    if n != len(ys) or n < 2:
        raise ValueError(f"fit_line needs two or more (x, y) pairs of equal length; got {len(xs)} and {len(ys)}")
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0:
        return 0.0, my, 0.0
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    r2 = 0.0 if syy == 0 else max(0.0, min(1.0, sxy * sxy / (sxx * syy)))
    return slope, my - slope * mx, r2


def trend_toward(steps: Sequence[int], values: Sequence[float], threshold: float, *, decreasing: bool,
                 min_points: int = TREND_MIN_POINTS, max_points: int = TREND_MAX_POINTS,
                 min_r2: float = TREND_MIN_R2, max_horizon: float = TREND_MAX_HORIZON) -> Trend | None:
    """A consistent trend of ``values`` toward ``threshold``, or None when there is none.

    None when: fewer than ``min_points`` finite values, the fit's R² is below ``min_r2`` (noisy), the
    slope points away from the threshold (or is zero), or the crossing is further ahead than
    ``max_horizon`` times the fitted window's span (flat). Uses the last ``max_points`` finite values.
    """
    pts = [(float(s), float(v)) for s, v in zip(steps, values) if v is not None and math.isfinite(v)][-max_points:]
    if len(pts) < min_points:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    slope, intercept, r2 = fit_line(xs, ys)
    span = xs[-1] - xs[0]
    if r2 < min_r2 or span <= 0 or slope == 0 or (slope > 0) == decreasing:
        return None
    now = slope * xs[-1] + intercept
    remaining = (threshold - now) / slope
    if remaining < 0:
        remaining = 0.0
    if remaining > max_horizon * span:
        return None
    return Trend(slope, intercept, r2, len(pts), span, now, remaining)


# --------------------------------------------------------------------------- decision

def evaluate(m: SVDMetrics, t: SwitchThresholds, history: Sequence[SVDMetrics] = (),
             previous: SVDMetrics | None = None) -> list[SpectralAlert]:
    """The alerts of one measurement. Pure.

    Args:
        m: the measurement.
        t: the thresholds.
        history: the layer's earlier measurements (oldest first), for trends.
        previous: the layer's previous measurement, for mode-switch detection (default: last of history).

    Rules: a mode change → INFO ``mode_switch``. While the layer is LOW-RANK the switch rules are moot
    and stay silent. Otherwise: principal_alignment > danger → CRITICAL ``clobbering``; within the margin
    below it → WARNING ``approaching_clobbering``; all three optimal criteria → CRITICAL
    ``optimal_conditions``; else every unmet criterion within the margin → WARNING ``approaching_optimal``;
    INFO ``subspace_stabilizing`` / ``gradients_safer`` for consistent trends toward an unmet threshold.
    """
    alerts: list[SpectralAlert] = []
    layer, step = m.layer_name, m.step
    prev = previous if previous is not None else (history[-1] if history else None)
    if prev is not None and prev.mode != m.mode:
        r_text = "" if m.r is None else f" (r={m.r})"
        alerts.append(SpectralAlert("mode_switch", Severity.INFO, step, layer, m.r, None,
                                    f"[{layer}] SWITCHED TO {Mode(m.mode).value}{r_text}",
                                    {"from": Mode(prev.mode).value, "to": Mode(m.mode).value, "r": m.r}))
    if m.mode == Mode.LOW_RANK:
        return alerts
    pa = m.principal_alignment
    if not math.isnan(pa):
        if pa > t.principal_danger:
            alerts.append(SpectralAlert("clobbering", Severity.CRITICAL, step, layer, pa, t.principal_danger,
                                        f"Gradient clobbering: principal_alignment={pa:.4f} > {t.principal_danger:g} "
                                        "→ switch to low-rank NOW", {"metric": "principal_alignment"}))
        elif t.principal_danger - pa <= t.warn_margin:
            alerts.append(SpectralAlert("approaching_clobbering", Severity.WARNING, step, layer, pa, t.principal_danger,
                                        f"Approaching clobbering threshold: principal_alignment={pa:.4f} "
                                        f"(within {t.principal_danger - pa:.4f} of {t.principal_danger:g})",
                                        {"metric": "principal_alignment", "distance": t.principal_danger - pa}))
    crit = criteria(m, t)
    n_met = sum(c.met for c in crit)
    detail = {c.key: {"value": c.value, "threshold": c.threshold, "met": c.met} for c in crit}
    if n_met == len(crit):
        alerts.append(SpectralAlert("optimal_conditions", Severity.CRITICAL, step, layer, None, None,
                                    "OPTIMAL CONDITIONS MET! All criteria satisfied → SWITCH IMMINENT",
                                    {"criteria": detail, "met": n_met}))
    elif all(c.met or c.near(t.warn_margin) for c in crit):
        parts = [f"✓ {c.label}" for c in crit if c.met]
        parts += [f"{c.metric}={c.value:.4f} (within {c.distance:.4f} of {c.threshold:g})" for c in crit if not c.met]
        nearest = min((c for c in crit if not c.met), key=lambda c: c.distance)
        alerts.append(SpectralAlert("approaching_optimal", Severity.WARNING, step, layer, nearest.value, nearest.threshold,
                                    f"Approaching optimal conditions: {n_met}/3 criteria met: " + ", ".join(parts),
                                    {"criteria": detail, "met": n_met}))
    series = [*history, m]
    steps = [h.step for h in series]
    for key, label, c, decreasing in (("subspace_stabilizing", "Subspace stabilizing", crit[0], True),
                                      ("gradients_safer", "Gradients becoming safer", crit[1], False)):
        if c.met or math.isnan(c.value):
            continue
        tr = trend_toward(steps, [getattr(h, c.metric) for h in series], c.threshold, decreasing=decreasing)
        if tr is None or tr.steps_to_threshold is None:
            continue
        alerts.append(SpectralAlert(key, Severity.INFO, step, layer, c.value, c.threshold,
                                    f"{label}: {c.value:.3f} → ~{tr.steps_to_threshold:.0f} steps to threshold",
                                    {"metric": c.metric, "slope": tr.slope, "r2": tr.r2, "points": tr.n,
                                     "steps_to_threshold": tr.steps_to_threshold}))
    return alerts


def recommend_mode(m: SVDMetrics, t: SwitchThresholds, current: Mode = Mode.FULL) -> Mode:
    """The mode an adaptive training would be in after ``m``: LOW-RANK once clobbering or optimal conditions
    are seen (sticky, like the training's one-way switch), else ``current``."""
    if current == Mode.LOW_RANK:
        return Mode.LOW_RANK
    clobber = not math.isnan(m.principal_alignment) and m.principal_alignment > t.principal_danger
    optimal = all(c.met for c in criteria(m, t))
    return Mode.LOW_RANK if clobber or optimal else Mode.FULL


# --------------------------------------------------------------------------- text

def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def format_alert(a: SpectralAlert) -> str:
    """``🚨 CRITICAL: message`` (the per-step block's alert line)."""
    return f"{SEVERITY_ICON[a.severity]} {a.severity.value}: {a.message}"


def format_block(m: SVDMetrics, alerts: Sequence[SpectralAlert], t: SwitchThresholds) -> str:
    """The per-step block the CLI prints: step, layer, alerts, metrics with thresholds, mode and r."""
    bar = "=" * 80
    lines = [bar, f"Step {m.step} | {m.layer_name}", "-" * 80]
    lines += [format_alert(a) for a in alerts] or ["(no alerts)"]
    lines += ["", "Current metrics:",
              f"  principal_alignment: {_fmt(m.principal_alignment)} (danger at >{t.principal_danger:g})",
              f"  minor_alignment:     {_fmt(m.minor_alignment)} (safe at >{t.minor_safe:g})",
              f"  subspace_angle:      {_fmt(m.subspace_angle)} (stable at <{t.angle_stable:g})",
              f"  reconstruction_error:{_fmt(m.reconstruction_error)} (safe at <{t.recon_safe:g})",
              f"  mode:                {Mode(m.mode).value}",
              f"  r:                   {'n/a' if m.r is None else m.r}", bar]
    return "\n".join(lines)


def format_line(m: SVDMetrics, **extra: Any) -> str:
    """The one-line form the collector prints (and :func:`parse_line` reads back).

    ``[trainboard-svd] step=450 layer=block0.attn.c_q mode=FULL r=246 principal_alignment=0.32 …``
    """
    parts = [LINE_PREFIX, f"step={m.step}", f"layer={m.layer_name}", f"mode={Mode(m.mode).value}",
             f"r={'nan' if m.r is None else m.r}"]
    parts += [f"{n}={getattr(m, n):.6g}" for n in METRIC_NAMES]
    parts += [f"{k}={v}" for k, v in extra.items()]
    return " ".join(parts)


_KV = re.compile(r"(\w+)=(\S+)")


def parse_line(line: str, pattern: re.Pattern[str] | None = None) -> SVDMetrics | None:
    """The metrics of one log line, or None when the line holds none (any other output of a training).

    Without ``pattern`` it reads the collector's lines (see :func:`format_line`) wherever they appear in the
    line (a logger's prefix is fine). With ``pattern`` (named groups, see :func:`compile_pattern`) it reads
    any format. Lines that match but hold unreadable values are skipped (None).
    """
    if pattern is None:
        pos = line.find(LINE_PREFIX)
        if pos < 0:
            return None
        fields = dict(_KV.findall(line[pos + len(LINE_PREFIX):]))
    else:
        match = pattern.search(line)
        if match is None:
            return None
        fields = {k: v for k, v in match.groupdict().items() if v is not None}
    try:
        return SVDMetrics.from_mapping(fields)
    except ValueError:
        return None


def compile_pattern(text: str) -> re.Pattern[str]:
    """Compile a ``--pattern`` regex and check it names the required groups.

    Required named groups: ``step``, ``layer``, ``principal_alignment``, ``minor_alignment``,
    ``subspace_angle``, ``reconstruction_error``; optional: ``mode``, ``r``.

    Raises:
        ValueError: when the regex does not compile or lacks a required group (the message names it).
    """
    try:
        pat = re.compile(text)
    except re.error as exc:
        raise ValueError(f"--pattern is not a valid regular expression: {exc}") from None
    missing = [g for g in REQUIRED_PATTERN_GROUPS if g not in pat.groupindex]
    if missing:
        raise ValueError("--pattern lacks the named group(s) " + ", ".join(f"(?P<{g}>...)" for g in missing)
                         + "; required: " + ", ".join(REQUIRED_PATTERN_GROUPS)
                         + "; optional: " + ", ".join(OPTIONAL_PATTERN_GROUPS))
    return pat


# --------------------------------------------------------------------------- the monitor

class SVDMonitor:
    """Tracks per-layer spectral metrics and returns alerts as measurements arrive.

    Args:
        thresholds: the switch thresholds; default ``SwitchThresholds()``.
        history_size: measurements kept per layer (the trend window uses the last ``TREND_MAX_POINTS``).

    Attributes:
        latest: the latest measurement of each layer.
        alerts: every alert returned so far (bounded to ``history_size`` × layers).

    Example:
        >>> mon = SVDMonitor(SwitchThresholds())
        >>> _ = mon.add_metrics(SVDMetrics(100, "block0.attn.c_q", "FULL", 246, 0.32, 0.48, 0.15, 0.008))
        >>> mon.print_summary()  # doctest: +SKIP
    """

    def __init__(self, thresholds: SwitchThresholds | None = None, *, history_size: int = 200) -> None:
        if thresholds is not None and not isinstance(thresholds, SwitchThresholds):
            raise ValueError(f"thresholds must be a SwitchThresholds; got {type(thresholds).__name__}")
        if not isinstance(history_size, int) or history_size < TREND_MAX_POINTS:
            raise ValueError(f"history_size must be an integer ≥ {TREND_MAX_POINTS}; got {history_size!r}")
        self.thresholds = thresholds or SwitchThresholds()
        self.history_size = history_size
        self.history: dict[str, deque[SVDMetrics]] = {}
        self.latest: dict[str, SVDMetrics] = {}
        self.alerts: deque[SpectralAlert] = deque(maxlen=history_size * 8)

    def add_metrics(self, m: SVDMetrics) -> list[SpectralAlert]:
        """Record one measurement and return its alerts (empty for a repeated step of the same layer).

        A step lower than the layer's latest means the training restarted from an earlier point: the
        layer's history is dropped and tracking starts again.
        """
        if not isinstance(m, SVDMetrics):
            raise ValueError(f"add_metrics needs an SVDMetrics; got {type(m).__name__}")
        hist = self.history.setdefault(m.layer_name, deque(maxlen=self.history_size))
        if hist and m.step == hist[-1].step:
            return []
        if hist and m.step < hist[-1].step:
            hist.clear()
        out = evaluate(m, self.thresholds, list(hist)[-(TREND_MAX_POINTS - 1):])
        hist.append(m)
        self.latest[m.layer_name] = m
        self.alerts.extend(out)
        return out

    def layers(self) -> list[str]:
        return sorted(self.latest)

    def summary_text(self) -> str:
        """The summary: per layer the latest step, mode, rank, metrics, distance to clobbering and criteria."""
        t = self.thresholds
        bar = "=" * 80
        lines = [bar, "SVD MONITORING SUMMARY", bar]
        if not self.latest:
            lines += ["", "No metrics collected yet.", bar]
            return "\n".join(lines)
        for name in self.layers():
            m = self.latest[name]
            pa = m.principal_alignment
            dist = t.principal_danger - pa
            safe = "🟢 SAFE" if not math.isnan(pa) and dist >= 0 else ("⚪ UNKNOWN" if math.isnan(pa) else "🔴 DANGER")
            crit = criteria(m, t)
            lines += ["", name, f"  Latest step: {m.step}", f"  Mode: {Mode(m.mode).value}",
                      f"  Rank: {'n/a' if m.r is None else m.r}", "  Metrics:",
                      f"    principal_alignment: {_fmt(m.principal_alignment)}",
                      f"    minor_alignment:     {_fmt(m.minor_alignment)}",
                      f"    subspace_angle:      {_fmt(m.subspace_angle)}",
                      f"    reconstruction_error:{_fmt(m.reconstruction_error)}",
                      "  Distance to switch:",
                      f"    Clobbering threshold: {'n/a' if math.isnan(dist) else f'{dist:+.4f}'} {safe}",
                      f"    Optimal conditions: {sum(c.met for c in crit)}/3 met"]
            short = {"stable_subspace": ("angle", "<"), "safe_gradients": ("minor", ">"),
                     "safe_reconstruction": ("error", "<")}
            for c in crit:
                word, op = short[c.key]
                lines.append(f"      {c.label + ':':<20} {'✓' if c.met else '✗'} "
                             f"({word}={_fmt(c.value)} vs {op}{c.threshold:g})")
        lines.append(bar)
        return "\n".join(lines)

    def print_summary(self, file: TextIO | None = None) -> None:
        """Print :meth:`summary_text` (to stdout by default)."""
        print(self.summary_text(), file=file or sys.stdout, flush=True)

    def state_dict(self) -> dict[str, Any]:
        """The per-layer histories, so a resumed training resumes its trends."""
        return {"thresholds": self.thresholds.to_dict(),
                "history": {k: [m.to_dict() for m in v] for k, v in self.history.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for layer, items in dict(state.get("history", {})).items():
            hist = self.history.setdefault(layer, deque(maxlen=self.history_size))
            hist.clear()
            for d in items:
                hist.append(SVDMetrics.from_mapping(d))
            if hist:
                self.latest[layer] = hist[-1]


# --------------------------------------------------------------------------- sources (CLI)

DEFAULT_FILE_REFRESH_SECONDS = 1.0
WANDB_KEY = re.compile(r"^(?:svd/)?(?P<layer>.+?)[/.](?P<metric>principal_alignment|minor_alignment|subspace_angle"
                       r"|reconstruction_error|mode|r)$")
"""W&B history keys read by ``--wandb-run``: ``[svd/]<layer>/<metric>`` (or ``<layer>.<metric>``)."""


class LineTailer:
    """Follows a text log across appends, truncation and replacement; returns complete lines only.

    A carriage return also ends a line, so progress bars (tqdm) that share a line with our output do not
    hide it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.inode: tuple[int, int] | None = None
        self.offset = 0

    def poll(self, max_bytes: int = 16 << 20) -> tuple[list[str], bool]:
        """``(new complete lines, reset)``; ``reset`` is True when the file was truncated or replaced."""
        try:
            st = os.stat(self.path)
        except OSError:
            return [], False
        reset = False
        ident = (st.st_dev, st.st_ino)
        if ident != self.inode or st.st_size < self.offset:
            reset = self.inode is not None
            self.inode, self.offset = ident, 0
        lines: list[str] = []
        try:
            with open(self.path, "rb") as fh:
                while True:
                    fh.seek(self.offset)
                    data = fh.read(max_bytes)
                    end = data.rfind(b"\n")
                    if end < 0:
                        break
                    chunk = data[: end + 1].decode("utf-8", errors="replace")
                    lines += [seg for line in chunk.split("\n") for seg in line.split("\r") if seg.strip()]
                    self.offset += end + 1
                    if len(data) < max_bytes:
                        break
        except OSError:
            return lines, reset
        return lines, reset


def metrics_from_wandb_row(row: Mapping[str, Any]) -> list[SVDMetrics]:
    """The per-layer measurements in one W&B history row (keys ``[svd/]<layer>/<metric>``). Pure.

    Layers with any of the four metrics missing or unreadable in the row are skipped.
    """
    step = row.get("_step", row.get("step"))
    if step is None:
        return []
    per_layer: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        match = WANDB_KEY.match(str(key))
        if match:
            per_layer.setdefault(match["layer"], {})[match["metric"]] = value
    out: list[SVDMetrics] = []
    for layer, values in sorted(per_layer.items()):
        try:
            out.append(SVDMetrics.from_mapping({"step": step, "layer": layer, **values}))
        except ValueError:
            continue
    return out


def iter_log_file(tailer: LineTailer, pattern: re.Pattern[str] | None) -> Iterator[SVDMetrics]:
    lines, _ = tailer.poll()
    for line in lines:
        m = parse_line(line, pattern)
        if m is not None:
            yield m


def iter_run_dir(tailer: Any) -> Iterator[SVDMetrics]:
    records, _ = tailer.poll()
    for rec in records:
        try:
            yield SVDMetrics.from_mapping(rec)
        except ValueError:
            continue


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m collectors.svd_monitor",
        description="Watch per-layer SVD metrics of a training (our log lines, a Trainboard run dir or a W&B run) "
                    "and alert before full-rank → low-rank switches. Ctrl+C prints the summary.",
        epilog="--pattern: a Python regex searched in each log line, with the named groups "
               + ", ".join(f"(?P<{g}>...)" for g in REQUIRED_PATTERN_GROUPS) + " and optionally "
               + ", ".join(f"(?P<{g}>...)" for g in OPTIONAL_PATTERN_GROUPS)
               + ". Example: 'step (?P<step>\\d+) (?P<layer>\\S+) pa=(?P<principal_alignment>\\S+) "
                 "ma=(?P<minor_alignment>\\S+) ang=(?P<subspace_angle>\\S+) rec=(?P<reconstruction_error>\\S+)'.")
    src = p.add_argument_group("source (exactly one)")
    src.add_argument("--log-file", help="a training's text log (stdout) holding our [trainboard-svd] lines")
    src.add_argument("--run-dir", help="a Trainboard run directory (reads logs/spectral.jsonl)")
    src.add_argument("--wandb-run", help="a W&B run id (needs the wandb package, its login and a network)")
    p.add_argument("--project", help="W&B project of --wandb-run")
    p.add_argument("--entity", help="W&B entity of --wandb-run (default: your default entity)")
    p.add_argument("--follow", action="store_true", help="keep watching the file for new lines (like tail -f)")
    p.add_argument("--refresh-interval", type=float, default=None,
                   help=f"seconds between polls (default {DEFAULT_FILE_REFRESH_SECONDS:g} for files, "
                        f"{DEFAULT_REFRESH_SECONDS:g} for W&B)")
    p.add_argument("--pattern", help="regex with named groups for another log format (see below)")
    p.add_argument("--only-alerts", action="store_true", help="print a step block only when it has alerts")
    th = p.add_argument_group("thresholds")
    th.add_argument("--warn-margin", type=float, default=DEFAULT_WARN_MARGIN, help="default %(default)s")
    th.add_argument("--principal-danger", type=float, default=DEFAULT_PRINCIPAL_DANGER, help="default %(default)s")
    th.add_argument("--minor-safe", type=float, default=DEFAULT_MINOR_SAFE, help="default %(default)s")
    th.add_argument("--angle-stable", type=float, default=DEFAULT_ANGLE_STABLE, help="radians, default %(default)s")
    th.add_argument("--recon-safe", type=float, default=DEFAULT_RECON_SAFE, help="default %(default)s")
    return p


@dataclass
class CliOptions:
    """Validated command-line options."""

    source: str
    target: str
    thresholds: SwitchThresholds
    follow: bool
    refresh: float
    pattern: re.Pattern[str] | None
    project: str | None
    entity: str | None
    only_alerts: bool


def parse_cli(argv: Sequence[str] | None) -> CliOptions:
    """Parse and validate; every user mistake ends in ``p.error`` (exit 2, a message, no traceback)."""
    p = build_parser()
    a = p.parse_args(argv)
    given = [(n, v) for n, v in (("log-file", a.log_file), ("run-dir", a.run_dir), ("wandb-run", a.wandb_run)) if v]
    if len(given) != 1:
        p.error("give exactly one source: --log-file F, --run-dir D or --wandb-run ID"
                + (f" (got {', '.join('--' + n for n, _ in given)})" if given else ""))
    source, target = given[0]
    if source == "wandb-run" and not a.project:
        p.error("--wandb-run needs --project P (and optionally --entity E)")
    if source != "wandb-run" and (a.project or a.entity):
        p.error("--project/--entity only go with --wandb-run")
    if a.pattern and source != "log-file":
        p.error("--pattern only applies to --log-file")
    refresh = a.refresh_interval
    if refresh is None:
        refresh = DEFAULT_REFRESH_SECONDS if source == "wandb-run" else DEFAULT_FILE_REFRESH_SECONDS
    if not math.isfinite(refresh) or refresh <= 0:
        p.error(f"--refresh-interval must be a positive number of seconds; got {a.refresh_interval}")
    try:
        thresholds = SwitchThresholds(warn_margin=a.warn_margin, principal_danger=a.principal_danger,
                                      minor_safe=a.minor_safe, angle_stable=a.angle_stable, recon_safe=a.recon_safe)
    except ValueError as exc:
        p.error(str(exc).replace("SwitchThresholds.", "--").replace("_", "-"))
    pattern = None
    if a.pattern:
        try:
            pattern = compile_pattern(a.pattern)
        except ValueError as exc:
            p.error(str(exc))
    path = Path(target)
    if source == "log-file" and not a.follow and not path.is_file():
        p.error(f"--log-file {target}: no such file (add --follow to wait for it)")
    if source == "log-file" and path.is_dir():
        p.error(f"--log-file {target} is a directory; did you mean --run-dir?")
    if source == "run-dir" and not path.is_dir():
        p.error(f"--run-dir {target}: no such directory")
    return CliOptions(source, target, thresholds, bool(a.follow) or source == "wandb-run", refresh, pattern,
                      a.project, a.entity, a.only_alerts)


def _emit(mon: SVDMonitor, items: Iterable[SVDMetrics], only_alerts: bool, out: TextIO) -> int:
    n = 0
    for m in items:
        alerts = mon.add_metrics(m)
        n += 1
        if alerts or not only_alerts:
            print(format_block(m, alerts, mon.thresholds), file=out, flush=True)
    return n


def _wandb_source(opts: CliOptions, err: TextIO) -> Callable[[], list[SVDMetrics]] | None:
    try:
        import wandb  # noqa: F401 - optional dependency
    except ImportError:
        print("svd_monitor: the wandb package is not installed, so --wandb-run cannot be read. Install it with "
              "'pip install wandb' and log in ('wandb login'), or watch the training's log with --log-file F "
              "or a Trainboard run with --run-dir D.", file=err, flush=True)
        return None
    path = "/".join(x for x in (opts.entity, opts.project, opts.target) if x)
    state: dict[str, Any] = {"run": None, "min_step": 0}

    def poll() -> list[SVDMetrics]:
        try:
            if state["run"] is None:
                state["run"] = wandb.Api().run(path)
            else:
                state["run"].load(force=True)
            out: list[SVDMetrics] = []
            for row in state["run"].scan_history(min_step=state["min_step"]):
                out += metrics_from_wandb_row(row)
                step = row.get("_step")
                if isinstance(step, (int, float)):
                    state["min_step"] = max(state["min_step"], int(step) + 1)
            return out
        except Exception as exc:  # noqa: BLE001 - network/auth problems: say so and retry at the next poll
            print(f"svd_monitor: W&B connection error for run {path}: {type(exc).__name__}: {exc} "
                  f"(retrying in {opts.refresh:g} s)", file=err, flush=True)
            return []

    return poll


def run_cli(opts: CliOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Read the source, print per-step blocks; on Ctrl+C/SIGTERM (or the end without --follow) the summary."""
    mon = SVDMonitor(opts.thresholds)
    if opts.source == "log-file":
        tailer = LineTailer(opts.target)
        poll: Callable[[], Iterable[SVDMetrics]] = lambda: list(iter_log_file(tailer, opts.pattern))  # noqa: E731
        where = f"log file {opts.target}"
    elif opts.source == "run-dir":
        from collectors import runformat as rf

        jt = rf.JsonlTailer(rf.RunPaths.of(opts.target).spectral, known_kinds={rf.RecordKind.SPECTRAL.value})
        poll = lambda: list(iter_run_dir(jt))  # noqa: E731
        where = f"{rf.RunPaths.of(opts.target).spectral}"
    else:
        wb = _wandb_source(opts, err)
        if wb is None:
            return EXIT_USAGE
        poll = wb
        where = f"W&B run {opts.target}"
    previous = signal.getsignal(signal.SIGTERM)

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _term)
    except ValueError:  # not the main thread (embedded use): Ctrl+C still works
        pass
    try:
        print(f"Watching {where} (thresholds: {', '.join(f'{k}={v:g}' for k, v in opts.thresholds.to_dict().items())})"
              + ("; Ctrl+C for the summary" if opts.follow else ""), file=out, flush=True)
        total = _emit(mon, poll(), opts.only_alerts, out)
        waited = False
        while opts.follow:
            if total == 0 and not waited:
                print(f"No metrics collected yet; waiting for {where} (every {opts.refresh:g} s)", file=out, flush=True)
                waited = True
            time.sleep(opts.refresh)
            total += _emit(mon, poll(), opts.only_alerts, out)
        if total == 0:
            print(f"No SVD metrics found in {where}.", file=out, flush=True)
    except KeyboardInterrupt:
        print("", file=out, flush=True)
    finally:
        try:
            signal.signal(signal.SIGTERM, previous)
        except (ValueError, TypeError):
            pass
    mon.print_summary(file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m collectors.svd_monitor``: see ``--help``."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]  # emoji on a narrow terminal
        except (AttributeError, ValueError):
            pass
    opts = parse_cli(argv)
    return run_cli(opts)


if __name__ == "__main__":
    sys.exit(main())
