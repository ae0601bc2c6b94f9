"""The one severity table every page uses (alerts, spectral alerts, badges).

Smart Monitor / anomaly alerts use critical, high, medium, low; the spectral monitor uses CRITICAL,
WARNING, INFO. Both map to the same colours so a person learns them once.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(str, enum.Enum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class SeverityStyle:
    colour: str
    css_class: str
    rank: int
    """Sort order: 0 is the most severe."""


SEVERITY_STYLES: dict[Severity, SeverityStyle] = {
    Severity.CRITICAL: SeverityStyle("#d62728", "severity--critical", 0),
    Severity.HIGH: SeverityStyle("#ff7f0e", "severity--high", 1),
    Severity.WARNING: SeverityStyle("#ff7f0e", "severity--warning", 1),
    Severity.MEDIUM: SeverityStyle("#e6b800", "severity--medium", 2),
    Severity.LOW: SeverityStyle("#1f77b4", "severity--low", 3),
    Severity.INFO: SeverityStyle("#1f77b4", "severity--info", 3),
}


def severity_of(value: str | Severity | None) -> Severity:
    """Parse a severity from any case ("CRITICAL", "critical"); unknown values count as INFO."""
    if isinstance(value, Severity):
        return value
    try:
        return Severity(str(value).strip().lower())
    except ValueError:
        return Severity.INFO


def style_of(value: str | Severity | None) -> SeverityStyle:
    return SEVERITY_STYLES[severity_of(value)]
