"""Alerts: the one severity scale, the one record shape of ``logs/alerts.jsonl`` and its one writer.

Every producer of alerts (the anomaly rules in a training, the standalone Smart Monitor, the plain-loop
detector, the spectral collector, and the dashboard when it runs the rules over a run without a collector)
builds :class:`Alert` objects and appends them through :class:`AlertLog`, so every line of the file has
the same fields. Readers pass records through :func:`normalize_alert`, which also accepts the shapes
written before this module existed (see docs/run-format.md, "Alerts"). Standard library only, like
:mod:`collectors.runformat`, so the dashboard's components can import :class:`Severity` from here.
"""
from __future__ import annotations

import copy
import enum
import threading
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from collectors import runformat as rf
from collectors.runtime import Guard, now as clock_now

SOURCE_COLLECTOR = "collector"
"""Written by the collector inside the training (anomaly rules, spectral metrics)."""
SOURCE_SMART_MONITOR = "smart_monitor"
"""Written by the standalone Smart Monitor watching a training from outside."""
SOURCE_DETECTOR = "detector"
"""Written by :class:`collectors.anomaly.detector.AdvancedAnomalyDetector` in a plain loop."""
SOURCE_DASHBOARD = "dashboard"
"""Detected by the dashboard over a run that has no collector (read-only, never written into the run)."""
ALERT_FIELDS = ("rule", "category", "severity", "step", "value", "threshold", "message", "metadata", "reason",
                "time", "source")
"""The fields of every alert record, after ``v`` and ``kind``, in the order they are written."""


class Severity(str, enum.Enum):
    """How urgent an alert is: one scale for every producer, coloured by one table on every page.

    ``WARNING`` and ``INFO`` are the spectral monitor's words for the same levels as ``HIGH`` and ``LOW``
    (enum aliases: ``Severity.WARNING is Severity.HIGH``), so iterating gives the four levels only.
    """

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    WARNING = "high"
    INFO = "low"

    @classmethod
    def parse(cls, value: Any) -> "Severity":
        """A severity from a member, a value (``"high"``) or a name in any case (``"WARNING"``, ``"Info"``).

        Raises:
            ValueError: for anything else, naming the accepted values.
        """
        if isinstance(value, cls):
            return value
        text = str(value).strip()
        try:
            return cls(text.lower())
        except ValueError:
            pass
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {value!r}; expected critical, high, medium or low "
                             "(or the spectral monitor's CRITICAL, WARNING, INFO)") from None


SPECTRAL_LABELS = {Severity.CRITICAL: "CRITICAL", Severity.HIGH: "WARNING", Severity.MEDIUM: "WARNING",
                   Severity.LOW: "INFO"}
"""The spectral monitor's words for the levels, as its terminal output prints them."""


@dataclass
class Alert:
    """One alert, as written to ``logs/alerts.jsonl`` (plus ``v``, ``kind``, ``time`` and ``source``).

    Attributes:
        rule: the alert type (``"loss_spike"``, ``"clobbering"``...).
        category: what it is about (``loss``, ``gradient``, ``spectral``...); the Alerts page filters on it.
        severity: ``critical``, ``high``, ``medium`` or ``low`` (a :class:`Severity` value).
        step: the training step it was seen at.
        value: the measured value, ``None`` when not a single number.
        threshold: the limit it crossed, ``None`` when not a single number.
        message: one sentence for a person.
        metadata: the numbers behind the decision (JSON-able); spectral alerts carry ``layer`` here.
        reason: short file-name-safe reason used in snapshot names (``loss_spike_37.8pct``); default ``rule``.
    """

    rule: str
    category: str
    severity: str
    step: int
    value: float | None
    threshold: float | None
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = self.rule

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, copied as ``dataclasses.asdict`` copies them (nested containers too),
        without its ``deepcopy`` of every number and string: every alert record goes through this."""
        return {f.name: plain_copy(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Alert":
        """Rebuild an alert from a record (extra keys such as ``v``/``kind``/``time`` are ignored)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        kw.setdefault("metadata", {})
        for req in ("rule", "category", "severity", "message"):
            kw.setdefault(req, "")
        kw.setdefault("step", 0)
        kw.setdefault("value", None)
        kw.setdefault("threshold", None)
        return cls(**kw)


_ATOMIC = frozenset({str, int, float, bool, type(None)})


def plain_copy(value: Any) -> Any:
    """``value`` as ``dataclasses.asdict`` gives a field's value (dataclasses as dicts, containers copied
    with their own types, anything else deep-copied); immutable scalars are returned as they are. Pure."""
    if type(value) in _ATOMIC:
        return value
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*[plain_copy(v) for v in value])
    if isinstance(value, (list, tuple)):
        return type(value)(plain_copy(v) for v in value)
    if isinstance(value, dict):
        return type(value)((plain_copy(k), plain_copy(v)) for k, v in value.items())
    return copy.deepcopy(value)


def alert_record(alert: Alert, *, source: str, now: float | None = None) -> dict[str, Any]:
    """The ``logs/alerts.jsonl`` record of ``alert`` (kind ``alert``, canonical lowercase severity)."""
    fields_ = alert.to_dict()
    try:
        fields_["severity"] = Severity.parse(alert.severity).value
    except ValueError:
        pass  # an unknown word is kept as written: readers show it as the lowest level
    fields_["time"] = clock_now() if now is None else now
    fields_["source"] = source
    return rf.make_record(rf.RecordKind.ALERT, **fields_)


def normalize_alert(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record of any version in today's shape (pure), for readers.

    Older files hold spectral alerts with ``"CRITICAL"``/``"WARNING"``/``"INFO"`` severities and no
    ``source`` or ``reason``; those become ``critical``/``high``/``low``, ``source: "collector"`` and
    ``reason = rule``. An unknown severity word becomes ``low``. Other fields are kept as they are.
    """
    out = dict(record)
    try:
        out["severity"] = Severity.parse(record.get("severity")).value
    except ValueError:
        out["severity"] = Severity.LOW.value
    out.setdefault("source", SOURCE_COLLECTOR)
    if not out.get("reason"):
        out["reason"] = out.get("rule") or ""
    if not isinstance(out.get("metadata"), dict):
        out["metadata"] = {}
    return out


class AlertLog:
    """Appends alerts to one JSONL file as whole lines: the only code that writes ``logs/alerts.jsonl``.

    The file is opened on the first alert (a run without alerts has no file), under a lock because the
    snapshot thread reports failed background saves here too. Problems are reported once through
    ``guard`` and never raised: this runs inside the training.

    Args:
        path: the alerts file (usually ``RunPaths.alerts``; the plain-loop detector uses its own dir).
        source: written in every record (one of the ``SOURCE_*`` constants).
        guard: reports file problems once; default a new :class:`Guard`.

    Example:
        >>> log = AlertLog(rf.RunPaths.of("runs/exp1").alerts, source=SOURCE_COLLECTOR)  # doctest: +SKIP
        >>> log.write([Alert("loss_spike", "loss", "high", 37, 1.02, 0.3, "Loss spike")])  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, *, source: str, guard: Guard | None = None, notifier: Any = None) -> None:
        self.path = Path(path)
        self.source = source
        self.guard = guard or Guard()
        self.notifier = notifier
        """A :class:`collectors.notify.Notifier` (or None): each written alert is also submitted to it; it
        filters by severity, groups repeats and sends on its own thread, so this never waits."""
        self.written = 0
        self._writer: rf.JsonlWriter | None = None
        self._lock = threading.Lock()

    def write(self, alerts: Iterable[Alert], *, now: float | None = None, notify: bool = True) -> int:
        """Append ``alerts`` (one line each, all with the same time); returns how many were written.

        ``notify=False`` when the caller sends the incident records of these alerts instead (one message
        per incident, see :mod:`collectors.anomaly.incidents`)."""
        at = clock_now() if now is None else now
        return self.append([alert_record(a, source=self.source, now=at) for a in alerts],
                           notify=None if notify else ())

    def append(self, records: Iterable[dict[str, Any]], *, notify: Iterable[bool] | None = None) -> int:
        """Append ready records (alerts, incident changes, events); ``notify`` says per record whether it
        also goes to the notifier (default: every record). Returns how many lines were written."""
        batch = list(records)
        if not batch:
            return 0
        flags = [True] * len(batch) if notify is None else (list(notify) + [False] * len(batch))[:len(batch)]
        with self._lock:
            if self._writer is None:
                self._writer = self.guard.run("opening alerts.jsonl", rf.JsonlWriter, self.path)
            writer = self._writer
        if writer is None:
            return 0
        n = 0
        for rec, send in zip(batch, flags):
            if self.guard.run("appending to alerts.jsonl", writer.append, rec, default=False) is not False:
                n += 1
            if send and self.notifier is not None:
                self.guard.run("queueing a notification", self.notifier.submit, rec)
        self.written += n
        return n

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self.guard.run("closing alerts.jsonl", self._writer.close)
                self._writer = None
