"""The per-layer spectral tracker: each layer's history of measurements, its alerts and a summary.

:class:`SVDMonitor` is what the in-training collector, the CLI and the dashboard feed measurements into;
the decisions themselves are :func:`collectors.spectral.decisions.evaluate`'s. Pure, no torch.

Example:
    >>> mon = SVDMonitor(SwitchThresholds(warn_margin=0.05))
    >>> alerts = mon.add_metrics(SVDMetrics(step=100, layer_name="block0.attn.c_q", mode=0.0, r=246,
    ...     principal_alignment=0.45, minor_alignment=0.48, subspace_angle=0.15, reconstruction_error=0.008))
    >>> [a.label for a in alerts]
    ['CRITICAL']
"""
from __future__ import annotations

import math
import sys
from collections import deque
from typing import Any, Mapping, TextIO

from collectors.spectral.decisions import (TREND_MAX_POINTS, Mode, SpectralAlert, SVDMetrics, SwitchThresholds, criteria,
                                           evaluate)
from collectors.spectral.text import format_value


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
                      f"    principal_alignment: {format_value(m.principal_alignment)}",
                      f"    minor_alignment:     {format_value(m.minor_alignment)}",
                      f"    subspace_angle:      {format_value(m.subspace_angle)}",
                      f"    reconstruction_error:{format_value(m.reconstruction_error)}",
                      "  Distance to switch:",
                      f"    Clobbering threshold: {'n/a' if math.isnan(dist) else f'{dist:+.4f}'} {safe}",
                      f"    Optimal conditions: {sum(c.met for c in crit)}/3 met"]
            short = {"stable_subspace": ("angle", "<"), "safe_gradients": ("minor", ">"),
                     "safe_reconstruction": ("error", "<")}
            for c in crit:
                word, op = short[c.key]
                lines.append(f"      {c.label + ':':<20} {'✓' if c.met else '✗'} "
                             f"({word}={format_value(c.value)} vs {op}{c.threshold:g})")
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
