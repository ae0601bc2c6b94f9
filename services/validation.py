"""Which thresholds the dashboard may write to ``control/thresholds.json``, and in which ranges.

The Alerts page has one slider per key below; a request to the server can carry anything, so the
callback checks the key and value here before anything is read or written. Keys without a slider
(``smart.loss_window``, ``stop_on_critical``, ...) stay editable by hand in the file, where
``AnomalyConfig`` validates them for the training; the dashboard never writes them. The ranges are the
sliders' (``components.alerts.SLIDERS`` must match them; a test checks it) and are documented in
docs/anomaly.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_SHOWN_CHARS = 60
"""A refused value is quoted in the message up to this many characters."""


@dataclass(frozen=True)
class ThresholdRange:
    """One user-editable threshold: ``key`` is ``section.name``; ``lo``..``hi`` inclusive."""

    key: str
    lo: float
    hi: float
    integer: bool = False

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]


EDITABLE_THRESHOLDS: tuple[ThresholdRange, ...] = (
    ThresholdRange("smart.loss_spike_threshold", 0.05, 2.0),
    ThresholdRange("smart.accuracy_drop_threshold", 1, 50),
    ThresholdRange("snapshots.min_steps_between_saves", 0, 5000, integer=True),
    ThresholdRange("noise.k", 2, 20),
    ThresholdRange("gradient.explosion_threshold", 1, 100),
    ThresholdRange("learning_rate.change_threshold", 0.05, 2.0),
    ThresholdRange("convergence.plateau_threshold", 0.0, 0.05),
)
THRESHOLDS_BY_KEY: dict[str, ThresholdRange] = {t.key: t for t in EDITABLE_THRESHOLDS}


class ThresholdRefused(ValueError):
    """A threshold update the dashboard refuses; ``str()`` is the page's "Not saved: ..." message."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "..."


def _fmt(x: float) -> str:
    return f"{x:g}"


def validate_threshold(key: Any, value: Any) -> tuple[ThresholdRange, int | float]:
    """The range of ``key`` and ``value`` as the number to write (an int for integer keys) (pure).

    Raises:
        ThresholdRefused: ``key`` is not a user-editable threshold, or ``value`` is not a finite number
            inside its range; the message starts with "Not saved:" and names the problem.
    """
    spec = THRESHOLDS_BY_KEY.get(key) if isinstance(key, str) else None
    if spec is None:
        raise ThresholdRefused(f"Not saved: {_shown(key)} is not a threshold the dashboard may change; "
                               f"allowed: {', '.join(THRESHOLDS_BY_KEY)}")
    bounds = f"between {_fmt(spec.lo)} and {_fmt(spec.hi)}"
    kind = "an integer" if spec.integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ThresholdRefused(f"Not saved: {key} must be {kind} {bounds}; got {_shown(value)}")
    try:
        number = float(value)  # a 25-digit integer is merely out of range, not an overflow
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or not spec.lo <= number <= spec.hi:
        raise ThresholdRefused(f"Not saved: {key} must be {kind} {bounds}; got {_shown(value)}")
    if spec.integer:
        if not number.is_integer():
            raise ThresholdRefused(f"Not saved: {key} must be {kind} {bounds}; got {_shown(value)}")
        return spec, int(number)
    return spec, value
