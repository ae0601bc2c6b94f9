"""Spectral metrics as text: the collector's one-line log format, its parser, and the CLI's blocks.

The in-training collector prints one :func:`format_line` per measurement; ``python -m
collectors.spectral.monitor --log-file`` reads such lines back with :func:`parse_line` (or any format
through a ``--pattern`` regex, :func:`compile_pattern`). Pure, no torch.
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

from collectors.alerts import Severity
from collectors.spectral.decisions import METRIC_NAMES, Mode, SpectralAlert, SVDMetrics, SwitchThresholds

LINE_PREFIX = "[trainboard-svd]"
"""Start of the line the collector prints per measurement; the CLI's default parser looks for it."""
REQUIRED_PATTERN_GROUPS = ("step", "layer", *METRIC_NAMES)
OPTIONAL_PATTERN_GROUPS = ("mode", "r")
SEVERITY_ICON = {Severity.CRITICAL: "🚨", Severity.HIGH: "⚠️ ", Severity.MEDIUM: "⚠️ ", Severity.LOW: "ℹ️ "}


def format_value(value: float | None, digits: int = 4) -> str:
    """A metric for the terminal: ``n/a`` when unknown, ``nan`` when not measured, else fixed digits."""
    if value is None:
        return "n/a"
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def format_alert(a: SpectralAlert) -> str:
    """``🚨 CRITICAL: message`` (the per-step block's alert line)."""
    return f"{SEVERITY_ICON[Severity.parse(a.severity)]} {a.label}: {a.message}"


def format_block(m: SVDMetrics, alerts: Sequence[SpectralAlert], t: SwitchThresholds) -> str:
    """The per-step block the CLI prints: step, layer, alerts, metrics with thresholds, mode and r."""
    bar = "=" * 80
    lines = [bar, f"Step {m.step} | {m.layer_name}", "-" * 80]
    lines += [format_alert(a) for a in alerts] or ["(no alerts)"]
    lines += ["", "Current metrics:",
              f"  principal_alignment: {format_value(m.principal_alignment)} (danger at >{t.principal_danger:g})",
              f"  minor_alignment:     {format_value(m.minor_alignment)} (safe at >{t.minor_safe:g})",
              f"  subspace_angle:      {format_value(m.subspace_angle)} (stable at <{t.angle_stable:g})",
              f"  reconstruction_error:{format_value(m.reconstruction_error)} (safe at <{t.recon_safe:g})",
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
