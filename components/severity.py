"""The one severity table every page uses (alerts, spectral alerts, badges).

The levels are the collector's one :class:`collectors.alerts.Severity` scale (critical, high, medium,
low); the spectral monitor's CRITICAL, WARNING, INFO are the same levels (WARNING is HIGH, INFO is LOW),
so they share the colours and a person learns them once.
"""
from __future__ import annotations

from dataclasses import dataclass

from collectors.alerts import Severity


@dataclass(frozen=True)
class SeverityStyle:
    colour: str
    css_class: str
    rank: int
    """Sort order: 0 is the most severe."""


SEVERITY_STYLES: dict[Severity, SeverityStyle] = {
    Severity.CRITICAL: SeverityStyle("#d62728", "severity--critical", 0),
    Severity.HIGH: SeverityStyle("#ff7f0e", "severity--high", 1),
    Severity.MEDIUM: SeverityStyle("#e6b800", "severity--medium", 2),
    Severity.LOW: SeverityStyle("#1f77b4", "severity--low", 3),
}


def severity_of(value: str | Severity | None) -> Severity:
    """Parse a severity from any case ("CRITICAL", "critical"); unknown values count as INFO."""
    try:
        return Severity.parse(value)
    except ValueError:
        return Severity.INFO


def style_of(value: str | Severity | None) -> SeverityStyle:
    return SEVERITY_STYLES[severity_of(value)]
