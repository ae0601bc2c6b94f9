"""How numbers are shown: units and precision every page uses (pure functions, tested directly).

Loss with 4 significant digits, learning rate in scientific notation, memory in GB, times as
"12 s ago"; NaN and ±Inf are shown as "NaN", "+Inf", "-Inf", never as an error.
"""
from __future__ import annotations

import math
from typing import Any

DASH = "—"
"""Shown for a value not known yet."""


def _special(value: Any) -> str | None:
    if value is None:
        return DASH
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return None


def fmt_sig(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (losses, grad norms)."""
    special = _special(value)
    return special if special is not None else f"{value:.{digits}g}"


def fmt_sci(value: Any, digits: int = 2) -> str:
    """Scientific notation (learning rates): ``3.00e-04``."""
    special = _special(value)
    return special if special is not None else f"{value:.{digits}e}"


def fmt_int(value: Any) -> str:
    """An integer with thousands separators (steps)."""
    special = _special(value)
    return special if special is not None else f"{int(value):,}"


def fmt_epoch(value: Any) -> str:
    special = _special(value)
    return special if special is not None else f"{value:.2f}"


def fmt_gb(value: Any) -> str:
    special = _special(value)
    return special if special is not None else f"{value:.2f} GB"


def fmt_rate(value: Any, unit: str) -> str:
    """Throughput: ``12.3 steps/s``, ``1.2k samples/s``."""
    special = _special(value)
    if special is not None:
        return special
    if value >= 10_000:
        return f"{value / 1000:.1f}k {unit}/s"
    return f"{value:.3g} {unit}/s"


def fmt_ago(seconds: float | None) -> str:
    """Age of data in words: "3 s ago", "4 min ago", "2 h ago"."""
    if seconds is None or not math.isfinite(seconds):
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def hover_value(value: float) -> str:
    """The exact value for chart hovers (full precision, specials spelled out)."""
    special = _special(value)
    return special if special is not None else repr(float(value))
