"""Spectral switch decisions: per-layer SVD metrics against the switch thresholds (pure).

Adaptive trainings switch a layer from full-rank to low-rank updates when its gradient starts to clobber the
principal subspace, or when conditions are safe (stable subspace, gradient mostly minor, compression
lossless). :func:`evaluate` checks one measurement of a layer (see docs/spectral.md) against
:class:`SwitchThresholds` and returns alerts: CRITICAL when a switch is due, WARNING when a trigger is within
``warn_margin``, INFO for trends with a linear-fit estimate of the steps left, and mode switches. The levels
are the one :class:`collectors.alerts.Severity` scale (WARNING is HIGH, INFO is LOW there).

Everything here is pure and imports neither torch nor dash: the in-training collector
(:mod:`collectors.spectral.plugin`), the dashboard's SVD page and ``python -m collectors.spectral.monitor``
all use it; :class:`collectors.spectral.tracker.SVDMonitor` keeps each layer's history.
"""
from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from collectors.alerts import SPECTRAL_LABELS, Alert, Severity

DEFAULT_WARN_MARGIN = 0.05
DEFAULT_PRINCIPAL_DANGER = 0.4
DEFAULT_MINOR_SAFE = 0.6
DEFAULT_ANGLE_STABLE = 0.1
DEFAULT_RECON_SAFE = 0.01

ALERT_CATEGORY = "spectral"
TRAINBOARD_SEVERITY: dict[str, Severity] = {
    "clobbering": Severity.MEDIUM,
    "optimal_conditions": Severity.LOW,
    "approaching_clobbering": Severity.LOW,
    "approaching_optimal": Severity.LOW,
    "subspace_stabilizing": Severity.LOW,
    "gradients_safer": Severity.LOW,
    "mode_switch": Severity.LOW,
}
"""The level of each spectral rule on Trainboard's one alert scale (logs/alerts.jsonl, the Alerts page,
notifications). The spectral monitor's own words (CRITICAL clobbering, WARNING approaching...) are advice
to an adaptive-rank training on when to switch a layer to low rank, and its terminal output and the SVD
page keep them (``metadata.spectral_level``). For a person they are not a fault to act on at 3 a.m.: a
healthy full-rank training crosses the clobbering threshold routinely (4 times in a 3,000-step demo), so
on Trainboard's scale, where high and critical mean "act now", clobbering is medium and the rest low."""
TREND_MIN_POINTS = 5
"""Fewest measurements of a layer before a trend is reported."""
TREND_MAX_POINTS = 20
"""The trend fit uses at most the last this many measurements."""
TREND_MIN_R2 = 0.7
"""A fit explaining less of the variance than this is noise: no trend, no estimate."""
TREND_MAX_HORIZON = 10.0
"""No estimate further ahead than this many times the fitted window's step span (a flat trend)."""

METRIC_NAMES = ("principal_alignment", "minor_alignment", "subspace_angle", "reconstruction_error")


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
    """One spectral alert of one layer; :meth:`to_alert` gives the record shape of logs/alerts.jsonl
    (``layer`` goes into ``metadata``)."""

    rule: str
    severity: Severity
    step: int
    layer: str
    value: float | None
    threshold: float | None
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)
    category: str = ALERT_CATEGORY

    @property
    def label(self) -> str:
        """The spectral monitor's word for the level: ``CRITICAL``, ``WARNING`` or ``INFO``."""
        return SPECTRAL_LABELS[Severity.parse(self.severity)]

    def to_fields(self) -> dict[str, Any]:
        """The record fields (without ``v``/``kind``/``time``/``source``/``reason``, which the writer adds), on
        Trainboard's scale (:data:`TRAINBOARD_SEVERITY`); the spectral word is kept in ``spectral_level``."""
        sev = TRAINBOARD_SEVERITY.get(self.rule, Severity.parse(self.severity))
        return {"rule": self.rule, "category": self.category, "severity": sev.value, "step": self.step,
                "value": self.value, "threshold": self.threshold, "message": self.message,
                "metadata": {"layer": self.layer, "spectral_level": self.label, **self.metadata}}

    def to_alert(self) -> Alert:
        """The same alert in the one shape every producer writes (:class:`collectors.alerts.Alert`)."""
        return Alert.from_dict(self.to_fields())


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
