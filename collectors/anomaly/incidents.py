"""Incidents, not floods: consecutive firings of one rule become one incident; events stay apart; ack and mute.

The anomaly rules (:mod:`collectors.anomaly.rules`) answer "did this rule fire at this step?". A person
wants "what is wrong, since when, how bad, is it over?". This module turns the first into the second, for
every place that sees alerts:

* :class:`IncidentTracker` runs live (the anomaly plugin inside a training, the standalone Smart Monitor,
  the dashboard's own detections over a run without a collector). It is fed once per logged step with
  that step's alerts and returns :class:`IncidentChange` objects whose ``record`` goes to
  ``logs/alerts.jsonl`` beside the alert records: an incident is opened, updated at a bounded rate,
  and resolved after :data:`RESOLVE_AFTER` clean logged steps. Informational rules (new best model,
  plateau, spectral mode switches) come back as events, never as incidents.
* :func:`fold` / :func:`fold_records` rebuild the incident list of a run from its ``alerts.jsonl``
  records, including files written before incidents existed (plain alert records, grouped the same way),
  so the Alerts page shows incidents for every run.
* The ack/mute control file ``control/incidents.json`` (:data:`CONTROL_FILE`): pure functions that edit
  and check its document, and never-raising readers and an atomic writer for it. A muted rule still
  makes incidents (marked ``muted``) so nothing is hidden, but the caller sends no notification and takes
  no snapshot for it.

Standard library only (plus :mod:`collectors.runformat` and :mod:`collectors.alerts`): it imports inside
any training and in the dashboard. Nothing here touches torch, dash or the network. See docs/anomaly.md, "Incidents".
"""
from __future__ import annotations

import bisect
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from collectors import runformat as rf
from collectors.alerts import Alert, alert_record

# --------------------------------------------------------------------------- names and defaults

INCIDENT_KIND = rf.RecordKind.INCIDENT.value
"""Record kind of an incident change in ``logs/alerts.jsonl``."""
EVENT_KIND = rf.RecordKind.EVENT.value
"""Record kind of an informational event (already a :class:`runformat.RecordKind`)."""
ALERT_KIND = rf.RecordKind.ALERT.value
ALERTS_LOG_KINDS = frozenset({ALERT_KIND, EVENT_KIND, INCIDENT_KIND})
"""Every kind that ``logs/alerts.jsonl`` holds; pass it as ``known_kinds`` to the runformat readers."""

STATE_OPEN = "open"
STATE_UPDATED = "updated"
STATE_RESOLVED = "resolved"
CHANGE_STATES = (STATE_OPEN, STATE_UPDATED, STATE_RESOLVED)
"""The ``state`` of an incident record. An :class:`Incident` itself is only ever open or resolved."""

RESOLVE_AFTER = 20
"""Consecutive logged steps without a firing that resolve an incident (per rule and subject). Twenty logs
is longer than any real fault's quiet spell between firings (a NaN run fires at every step, a diverging
loss within a few) and short enough that "resolved" still means something on a 1,000-log run."""
UPDATE_EVERY = 50
"""An ``updated`` record is written at least every this many firings of an open incident."""
WORSEN_FACTOR = 2.0
"""An ``updated`` record is also written when the worst value worsens by this factor since the last
record: twice as high for rising rules, half as high for falling ones (see :func:`worsened_enough`).
With :data:`UPDATE_EVERY`, a 10,000-step incident writes a few hundred lines at most, not 10,000."""

HIGHER = "higher"
LOWER = "lower"
WORST_DIRECTION: dict[str, str] = {
    # rising is worse (a bigger loss, norm, share of rises, learning rate, drift)
    "loss_spike": HIGHER, "divergence": HIGHER, "non_finite_loss": HIGHER, "non_finite_grad_norm": HIGHER,
    "non_finite_eval_loss": HIGHER,
    "gradient_explosion": HIGHER, "gradient_variance": HIGHER, "lr_too_high": HIGHER,
    "lr_sudden_change": HIGHER, "batch_size_impact": HIGHER, "calibration_drift": HIGHER,
    "reward_distribution_drift": HIGHER,
    # falling is worse (accuracy, a vanishing norm, a rate that turns negative, a calibration score)
    "accuracy_drop": LOWER, "gradient_vanishing": LOWER, "lr_too_low": LOWER,
    "convergence_divergence": LOWER, "calibration_poor": LOWER,
}
"""Which way "worst value" goes for each rule (the ``value`` field of its alerts). Rules not listed
(spectral rules, future ones) count higher as worse. NaN is the worst value of every rule."""

SEVERITY_RANK: dict[str, int] = {"low": 0, "info": 0, "medium": 1, "high": 2, "warning": 2, "critical": 3}
"""Severity words, lowest first; the spectral monitor's CRITICAL/WARNING/INFO map onto the same levels."""
_RANK_WORD = {0: "low", 1: "medium", 2: "high", 3: "critical"}

MODE_SWITCH_RULE = "mode_switch"
"""The spectral monitor's informational rule: a layer switched between full-rank and low-rank."""
try:  # the rules module owns the list of informational rules once the noise-aware rules are merged
    from collectors.anomaly.rules import EVENT_RULES as _RULE_EVENTS  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - the list as the rules module defines it
    _RULE_EVENTS = frozenset({"best_model", "convergence_plateau", "gradient_variance"})
EVENT_RULES: frozenset[str] = frozenset(_RULE_EVENTS) | {MODE_SWITCH_RULE}
"""Rules whose firings are events (timeline, chart markers), never incidents or alert counts."""

SUBJECT_KEY = "layer"
"""Metadata key naming what one firing is about beyond its rule: spectral alerts are per layer, so a
clobbering layer A and a clobbering layer B are two incidents. Scalar rules have no subject."""

STATE_VERSION = 1
"""Version of :meth:`IncidentTracker.state_dict`."""

# --------------------------------------------------------------------------- helpers


def _num(x: Any) -> float | None:
    """``x`` as a float when it is a real number (bool excluded), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def _step(x: Any) -> int | None:
    """``x`` as a step (a non-bool int, or an integral float), else None."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    if isinstance(x, float) and math.isfinite(x) and x == int(x):
        return int(x)
    return None


def severity_rank(word: Any) -> int:
    """Rank of a severity word (case-insensitive); unknown words rank lowest, as readers show them."""
    return SEVERITY_RANK.get(str(word).strip().lower(), 0)


def severity_word(word: Any) -> str:
    """The canonical lowercase severity (``critical``/``high``/``medium``/``low``) of any accepted word."""
    return _RANK_WORD[severity_rank(word)]


def direction_of(rule: str, directions: Mapping[str, str] | None = None) -> str:
    """:data:`HIGHER` or :data:`LOWER`: which way the worst value of ``rule`` goes."""
    table = WORST_DIRECTION if directions is None else {**WORST_DIRECTION, **directions}
    return table.get(rule, HIGHER)


def is_worse(new: float | None, old: float | None, direction: str) -> bool:
    """Whether ``new`` is a worse value than ``old``. NaN is worse than anything; None is no value."""
    if new is None:
        return False
    if old is None:
        return True
    if math.isnan(old):
        return False
    if math.isnan(new):
        return True
    return new > old if direction == HIGHER else new < old


def worsened_enough(new: float | None, old: float | None, direction: str, factor: float = WORSEN_FACTOR) -> bool:
    """Whether the worst value moved from ``old`` to ``new`` by at least ``factor`` the bad way.

    Rising rules: ``new >= old × factor`` (``old / factor`` when ``old`` is negative); falling rules the
    mirror. From 0, any worsening counts; a first NaN always counts, nothing is worse than NaN.
    """
    if not is_worse(new, old, direction):
        return False
    if old is None or new is None or math.isnan(new) or math.isinf(new):
        return True
    if direction == HIGHER:
        return new > 0 if old == 0 else new >= (old * factor if old > 0 else old / factor)
    return new < 0 if old == 0 else new <= (old / factor if old > 0 else old * factor)


def alert_fields(alert: Any) -> dict[str, Any]:
    """A plain dict of one alert: an ``Alert`` (anything with ``to_dict``), a ``SpectralAlert``
    (``to_fields``) or a record/mapping. Never raises; what is not an alert gives ``{}``."""
    for name in ("to_dict", "to_fields"):
        fn = getattr(alert, name, None)
        if callable(fn):
            try:
                out = fn()
            except Exception:  # noqa: BLE001 - a broken alert object is skipped, never fatal in training
                return {}
            return dict(out) if isinstance(out, Mapping) else {}
    return dict(alert) if isinstance(alert, Mapping) else {}


def subject_of(fields_: Mapping[str, Any]) -> str | None:
    """What a firing is about beyond its rule (a layer name), see :data:`SUBJECT_KEY`."""
    meta = fields_.get("metadata")
    sub = meta.get(SUBJECT_KEY) if isinstance(meta, Mapping) else None
    return str(sub) if isinstance(sub, (str, int)) and not isinstance(sub, bool) and str(sub) else None


def incident_key(rule: str, subject: str | None) -> str:
    """The key one incident is tracked under: the rule, plus the subject when there is one."""
    return rule if subject is None else f"{rule}@{subject}"


def incident_id(rule: str, subject: str | None, first_step: int) -> str:
    """The incident's id: ``"{rule}-{first_step}"`` (``"{rule}@{subject}-{first_step}"`` per layer).

    Stable (the same run gives the same ids on every read, live or folded) and unique within a run, since
    one rule has at most one open incident per subject and a new one opens only after the old resolved.
    """
    return f"{incident_key(rule, subject)}-{first_step}"


# --------------------------------------------------------------------------- records


@dataclass
class Incident:
    """One incident: consecutive firings of one rule (on one subject) in one run.

    Attributes:
        id: stable id, see :func:`incident_id`.
        rule: the rule that fired (``loss_spike``...).
        subject: the layer for spectral rules, else None.
        category: the category of its alerts (``loss``, ``gradient``...).
        severity: the highest severity among its firings.
        state: ``open`` or ``resolved``.
        first_step: step of the first firing (where it opened).
        last_step: step of the latest firing.
        count: number of firings (a legacy file written with repeat suppression counts the repeats its
            alerts report in ``metadata.repeated_for``).
        worst_value: the worst ``value`` seen (see :data:`WORST_DIRECTION`), None when no firing had one.
        worst_step: the step of that worst value.
        value: the latest firing's value.
        threshold: the latest firing's threshold.
        message: the latest firing's message (what a person reads first).
        resolved_step: the logged step at which it resolved (None while open).
        opened_at: wall time of the first firing (seconds since the epoch), None when unknown.
        updated_at: wall time of the latest firing.
        resolved_at: wall time of the resolution.
        muted: the rule was muted (control file) at the latest change: send nothing, snapshot nothing.
        acked: a person acknowledged this incident id.
        clean_steps: logged steps without a firing since the latest one (the tracker's counter).
        firings: the alert records behind it, oldest first (in a fold; the tracker keeps none).
    """

    id: str
    rule: str
    subject: str | None = None
    category: str = ""
    severity: str = "low"
    state: str = STATE_OPEN
    first_step: int = 0
    last_step: int = 0
    count: int = 0
    worst_value: float | None = None
    worst_step: int | None = None
    value: float | None = None
    threshold: float | None = None
    message: str = ""
    resolved_step: int | None = None
    opened_at: float | None = None
    updated_at: float | None = None
    resolved_at: float | None = None
    muted: bool = False
    acked: bool = False
    clean_steps: int = 0
    firings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.state == STATE_OPEN

    def to_dict(self, *, firings: bool = True) -> dict[str, Any]:
        """JSON-able fields (non-finite values are encoded by :func:`runformat.dumps` when written)."""
        out = asdict(self)
        if not firings:
            out.pop("firings")
        return out

    def add_firing(self, fields_: Mapping[str, Any], step: int, now: float | None, direction: str) -> None:
        """Count one firing at ``step``: count, last step, latest value/message, worst value, severity."""
        value = _num(fields_.get("value"))
        self.count += 1
        self.last_step = max(self.last_step, step)
        self.clean_steps = 0
        self.value = value
        self.threshold = _num(fields_.get("threshold"))
        self.message = str(fields_.get("message") or self.message)
        self.category = str(fields_.get("category") or self.category)
        if severity_rank(fields_.get("severity")) > severity_rank(self.severity):
            self.severity = severity_word(fields_.get("severity"))
        if is_worse(value, self.worst_value, direction):
            self.worst_value, self.worst_step = value, step
        if now is not None:
            self.updated_at = now


@dataclass(frozen=True)
class IncidentChange:
    """What one :meth:`IncidentTracker.observe` call changed: an incident opened, updated or resolved,
    or an event. ``record`` is ready to append to ``logs/alerts.jsonl``.

    Attributes:
        kind: ``"incident"`` or ``"event"``.
        state: ``open``, ``updated`` or ``resolved`` for incidents; None for events.
        rule: the rule.
        step: the step of this change (the firing's; for ``resolved``, the clean step that resolved it).
        severity: the incident's (highest) severity, or the event's.
        incident_id: the incident's id (None for events).
        muted: the rule is muted now: send no notification, take no snapshot for this change.
        acked: the incident was acknowledged: send no further notification for it.
        record: the JSONL record (see docs/anomaly.md, "Incidents", for its fields).
    """

    kind: str
    state: str | None
    rule: str
    step: int
    severity: str
    incident_id: str | None
    muted: bool
    acked: bool
    record: dict[str, Any]

    @property
    def notify(self) -> bool:
        """Whether a notifier should send this change (it still filters on severity and its settings)."""
        return self.kind == INCIDENT_KIND and not self.muted and not self.acked


def incident_record(inc: Incident, state: str, step: int, *, alert: Mapping[str, Any] | None = None,
                    now: float | None = None, source: str | None = None) -> dict[str, Any]:
    """The ``logs/alerts.jsonl`` record of one incident change (kind ``incident``).

    Fields: ``state`` (open/updated/resolved), ``id``, ``rule``, ``subject``, ``category``, ``severity``
    (highest so far), ``step`` (this change's), ``first_step``, ``last_step``, ``count``, ``worst_value``,
    ``worst_step``, ``value``, ``threshold``, ``message``, ``resolved_step``, ``muted``, ``acked``,
    ``alert`` (the firing behind an open/updated record, without ``v``/``kind``; None for resolved),
    ``time`` and ``source`` (when given). Self-contained: a file of these alone folds into incidents.
    """
    fields_: dict[str, Any] = {
        "state": state, "id": inc.id, "rule": inc.rule, "subject": inc.subject, "category": inc.category,
        "severity": inc.severity, "step": step, "first_step": inc.first_step, "last_step": inc.last_step,
        "count": inc.count, "worst_value": inc.worst_value, "worst_step": inc.worst_step, "value": inc.value,
        "threshold": inc.threshold, "message": inc.message, "resolved_step": inc.resolved_step,
        "muted": inc.muted, "acked": inc.acked,
        "alert": None if alert is None else {k: v for k, v in alert.items() if k not in ("v", "kind")},
        "time": time.time() if now is None else now,
    }
    if source is not None:
        fields_["source"] = source
    return rf.make_record(INCIDENT_KIND, **fields_)


def event_record(fields_: Mapping[str, Any], *, now: float | None = None, source: str | None = None) -> dict[str, Any]:
    """The ``logs/alerts.jsonl`` record of an informational event (kind ``event``).

    Same fields as an alert record (``rule``, ``category``, ``severity``, ``step``, ``value``,
    ``threshold``, ``message``, ``metadata``, ``reason``, ``time``, ``source``), so chart-marker code
    serves both; only the kind differs, which keeps events out of every alert count.
    """
    out = {k: v for k, v in fields_.items() if k not in ("v", "kind")}
    out.setdefault("rule", "event")
    out.setdefault("category", "")
    out["severity"] = severity_word(out.get("severity", "low"))
    out.setdefault("value", None)
    out.setdefault("threshold", None)
    out.setdefault("message", "")
    out.setdefault("metadata", {})
    out.setdefault("reason", out["rule"])
    out["time"] = out.get("time") if now is None and _num(out.get("time")) is not None else (
        time.time() if now is None else now)
    if source is not None:
        out["source"] = source
    return rf.make_record(EVENT_KIND, **out)


# --------------------------------------------------------------------------- the live tracker


class IncidentTracker:
    """Groups a stream of alerts into incidents, one :meth:`observe` call per logged step.

    Call :meth:`observe` for every logged step, with no alerts too, since clean steps are what resolve
    an incident. Firings of one rule (on one subject) with fewer than ``resolve_after`` clean logged
    steps between them are one incident. A step not later than the last one seen (an eval record at a
    train step, a replay after resume) counts its firings but is not a clean step.

    Feed it every firing. The rule engine's repeat suppression of lasting conditions
    (``rules.ALERT_REPEAT_EVERY``: alerted every 50 observations) reads as silence here and would resolve
    a lasting incident between repeats; the tracker's bounded updates replace that suppression.

    Args:
        resolve_after: clean logged steps that resolve an incident (default :data:`RESOLVE_AFTER`, 20).
        update_every: an ``updated`` record at least every this many firings (default 50).
        worsen_factor: an ``updated`` record when the worst value worsens by this factor (default 2.0),
            or the severity rises.
        event_rules: rules whose firings are events (default :data:`EVENT_RULES`).
        resolve_after_for: per-rule ``resolve_after`` for rules that can only fire at some logged steps
            (eval-only or spectral rules measured every N steps), e.g. ``{"clobbering": 100}``.
        directions: per-rule overrides of :data:`WORST_DIRECTION`.
        source: written as the records' ``source`` (``collector``, ``smart_monitor``...), None to omit.
        control: the ack/mute document (see :func:`read_control`); change it with :meth:`set_control`.

    Raises:
        ValueError: a setting out of range, naming it and the allowed values.

    Example:
        >>> t = IncidentTracker(resolve_after=2)
        >>> fire = {"rule": "gradient_explosion", "severity": "critical", "value": 50.0, "message": "norm 50"}
        >>> [c.state for c in t.observe(1, [{**fire, "step": 1}])]
        ['open']
        >>> t.observe(2, []), t.observe(3, [])[0].state
        ([], 'resolved')
    """

    def __init__(self, resolve_after: int = RESOLVE_AFTER, *, update_every: int = UPDATE_EVERY,
                 worsen_factor: float = WORSEN_FACTOR, event_rules: Iterable[str] | None = None,
                 resolve_after_for: Mapping[str, int] | None = None, directions: Mapping[str, str] | None = None,
                 source: str | None = None, control: Mapping[str, Any] | None = None) -> None:
        _check_count("resolve_after", resolve_after)
        _check_count("update_every", update_every)
        if _num(worsen_factor) is None or not math.isfinite(worsen_factor) or worsen_factor <= 1.0:
            raise ValueError(f"worsen_factor must be a number > 1 (2.0: twice as bad); got {worsen_factor!r}")
        for rule, n in (resolve_after_for or {}).items():
            _check_count(f"resolve_after_for[{rule!r}]", n)
        for rule, d in (directions or {}).items():
            if d not in (HIGHER, LOWER):
                raise ValueError(f"directions[{rule!r}] must be {HIGHER!r} or {LOWER!r}; got {d!r}")
        self.resolve_after = resolve_after
        self.update_every = update_every
        self.worsen_factor = float(worsen_factor)
        self.event_rules = frozenset(EVENT_RULES if event_rules is None else event_rules)
        self.resolve_after_for = dict(resolve_after_for or {})
        self.directions = dict(directions or {})
        self.source = source
        self.control: dict[str, Any] = dict(control) if control else empty_control()
        self.last_step: int | None = None
        self.open: dict[str, Incident] = {}
        """Open incidents by :func:`incident_key`."""
        self._reported: dict[str, tuple[int, float | None, int]] = {}
        """Per open key: (count, worst value, severity rank) as of its last written record."""
        self._ids: dict[str, tuple[int, int]] = {}
        """Per key: (first step of its latest incident, repeats of that step) for unique ids."""

    # ------------------------------------------------------------------ control
    def set_control(self, doc: Mapping[str, Any] | None) -> None:
        """Use a new ack/mute document (already validated, e.g. from :class:`ControlFollower`)."""
        self.control = dict(doc) if doc else empty_control()

    def is_muted(self, rule: str, now: float | None = None) -> bool:
        """Whether ``rule`` is muted now: the caller skips its snapshots and notifications."""
        return is_muted(self.control, rule, time.time() if now is None else now)

    # ------------------------------------------------------------------ observe
    def observe(self, step: int, alerts: Iterable[Any] = (), *, events: Iterable[Any] = (),
                now: float | None = None) -> list[IncidentChange]:
        """Take one logged step's alerts; return what changed (events first, then incident changes).

        Args:
            step: the logged step.
            alerts: this step's alerts (``Alert`` objects, ``SpectralAlert`` objects or records); event
                rules among them come back as events.
            events: more events to record at this step (anything alert-shaped; a ``name`` is taken as
                its ``rule``), e.g. a mode switch the caller saw.
            now: wall time for mutes and records (default ``time.time()``).
        """
        now = time.time() if now is None else now
        new_step = self.last_step is None or step > self.last_step
        changes: list[IncidentChange] = []
        fired: dict[str, list[dict[str, Any]]] = {}
        tagged = [(a, True) for a in events] + [(a, False) for a in alerts]
        for a, is_event in tagged:
            f = alert_fields(a)
            rule = f.get("rule") or f.get("name")
            if not isinstance(rule, str) or not rule:
                continue
            f["rule"] = rule
            if _step(f.get("step")) is None:
                f["step"] = step
            if is_event or rule in self.event_rules:
                changes.append(self._event(f, now))
            else:
                fired.setdefault(incident_key(rule, subject_of(f)), []).append(f)
        for key, firings in fired.items():
            changes.extend(self._fire(key, firings, step, now))
        if new_step:
            for key in [k for k in self.open if k not in fired]:
                inc = self.open[key]
                inc.clean_steps += 1
                if inc.clean_steps >= self.resolve_after_for.get(inc.rule, self.resolve_after):
                    changes.append(self._resolve(key, step, now))
            self.last_step = step
        return changes

    def _event(self, f: dict[str, Any], now: float) -> IncidentChange:
        rec = event_record(f, now=now, source=self.source)
        return IncidentChange(EVENT_KIND, None, rec["rule"], int(rec["step"]), rec["severity"], None,
                              is_muted(self.control, rec["rule"], now), False, rec)

    def _fire(self, key: str, firings: list[dict[str, Any]], step: int, now: float) -> list[IncidentChange]:
        first = firings[0]
        rule = first["rule"]
        direction = direction_of(rule, self.directions)
        muted = is_muted(self.control, rule, now)
        inc = self.open.get(key)
        state = STATE_UPDATED
        if inc is None:
            subject = subject_of(first)
            inc = Incident(id=self._new_id(key, rule, subject, step), rule=rule, subject=subject,
                           first_step=step, last_step=step, opened_at=now)
            self.open[key] = inc
            state = STATE_OPEN
        for f in firings:
            inc.add_firing(f, step, now, direction)
        inc.muted = muted
        inc.acked = is_acked(self.control, inc.id)
        if state == STATE_UPDATED and not self._worth_update(key, inc, direction):
            return []
        # the worst firing of this step is the one a person should see in the record
        shown = max(firings, key=lambda f: (_worse_key(_num(f.get("value")), direction)))
        self._reported[key] = (inc.count, inc.worst_value, severity_rank(inc.severity))
        return [self._change(inc, state, step, shown, now)]

    def _worth_update(self, key: str, inc: Incident, direction: str) -> bool:
        """The bounded-rate rule: severity rose, worst worsened by ``worsen_factor``, or ``update_every``
        firings since the last record."""
        count, worst, rank = self._reported.get(key, (0, None, -1))
        return (severity_rank(inc.severity) > rank
                or worsened_enough(inc.worst_value, worst, direction, self.worsen_factor)
                or inc.count - count >= self.update_every)

    def _resolve(self, key: str, step: int, now: float) -> IncidentChange:
        inc = self.open.pop(key)
        self._reported.pop(key, None)
        inc.state, inc.resolved_step, inc.resolved_at = STATE_RESOLVED, step, now
        inc.muted = is_muted(self.control, inc.rule, now)
        inc.acked = is_acked(self.control, inc.id)
        return self._change(inc, STATE_RESOLVED, step, None, now)

    def _change(self, inc: Incident, state: str, step: int, alert: Mapping[str, Any] | None,
                now: float) -> IncidentChange:
        rec = incident_record(inc, state, step, alert=alert, now=now, source=self.source)
        return IncidentChange(INCIDENT_KIND, state, inc.rule, step, inc.severity, inc.id, inc.muted, inc.acked, rec)

    def _new_id(self, key: str, rule: str, subject: str | None, step: int) -> str:
        prev_step, repeats = self._ids.get(key, (None, 0))
        repeats = repeats + 1 if prev_step == step else 0
        self._ids[key] = (step, repeats)
        base = incident_id(rule, subject, step)
        return base if repeats == 0 else f"{base}.{repeats + 1}"

    # ------------------------------------------------------------------ views
    def open_incidents(self) -> list[Incident]:
        """The open incidents, newest first (copies: changing them changes nothing here)."""
        return sorted((replace(i, firings=[]) for i in self.open.values()),
                      key=lambda i: (i.first_step, i.id), reverse=True)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed training needs to continue the same incidents with the same ids."""
        return {
            "version": STATE_VERSION, "last_step": self.last_step,
            "open": {k: i.to_dict(firings=False) for k, i in self.open.items()},
            "reported": {k: list(v) for k, v in self._reported.items()},
            "ids": {k: list(v) for k, v in self._ids.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`. Malformed entries are skipped, never raised on: a resume must not
        fail over the monitor's bookkeeping (at worst an incident reopens under a new id)."""
        self.open.clear()
        self._reported.clear()
        self._ids.clear()
        if not isinstance(state, Mapping):
            return
        last = _step(state.get("last_step"))
        self.last_step = last
        names = set(Incident.__dataclass_fields__) - {"firings"}
        for key, d in (state.get("open") or {}).items() if isinstance(state.get("open"), Mapping) else ():
            if not isinstance(d, Mapping) or not isinstance(d.get("id"), str) or not isinstance(d.get("rule"), str):
                continue
            try:
                inc = Incident(**{k: v for k, v in d.items() if k in names})
            except TypeError:
                continue
            self.open[str(key)] = inc
        for key, v in (state.get("reported") or {}).items() if isinstance(state.get("reported"), Mapping) else ():
            if isinstance(v, (list, tuple)) and len(v) == 3 and str(key) in self.open:
                self._reported[str(key)] = (int(v[0]), _num(v[1]), int(v[2]))
        for key, v in (state.get("ids") or {}).items() if isinstance(state.get("ids"), Mapping) else ():
            if isinstance(v, (list, tuple)) and len(v) == 2 and _step(v[0]) is not None and _step(v[1]) is not None:
                self._ids[str(key)] = (int(v[0]), int(v[1]))


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of logged steps >= 1; got {value!r}")


def _worse_key(value: float | None, direction: str) -> float:
    """Sort key: bigger means worse (None least bad, NaN worst)."""
    if value is None:
        return -math.inf
    if math.isnan(value):
        return math.inf
    return value if direction == HIGHER else -value


# --------------------------------------------------------------------------- folding a file


@dataclass
class Folded:
    """What :func:`fold` rebuilt from a run's alerts records.

    Attributes:
        incidents: newest first (by first step), each with its firings oldest first.
        events: event records (kind ``event``, and legacy alert records of event rules), oldest first.
        skipped: records that were not usable (no rule, no integer step, not a mapping).
    """

    incidents: list[Incident] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


def fold(records: Iterable[Any], *, resolve_after: int = RESOLVE_AFTER, logged_steps: Sequence[int] | None = None,
         last_step: int | None = None, event_rules: Iterable[str] | None = None,
         directions: Mapping[str, str] | None = None, control: Mapping[str, Any] | None = None) -> Folded:
    """Rebuild incidents and events from the records of ``logs/alerts.jsonl`` (pure; never raises).

    Incident records (kind ``incident``) are authoritative: the latest record of an id gives its state
    and counters, and the firings they carry (``alert``) plus alert records inside their span are its
    firings. An ``open`` record for an id already seen restarts it (a resumed training replaying
    steps). Alert records not covered by an incident record (files written before incidents existed,
    runs without the collector, firings from before the tracker was enabled) are grouped the way the
    tracker groups them: same rule and subject, fewer than ``resolve_after`` clean logged steps apart.
    An alert whose ``metadata.repeated_for`` says its condition lasted since the previous firing (the
    old repeat suppression) continues the incident whatever the gap.

    Args:
        records: decoded records in file order (e.g. ``runformat.iter_records(path, known_kinds=None)``).
        resolve_after: clean logged steps that resolve an incident (default 20, as the tracker).
        logged_steps: the run's logged steps (from ``logs/metrics.jsonl``), to count clean steps exactly;
            without them every training step counts as logged (exact for ``logging_steps=1``; with
            larger intervals legacy incidents split and resolve sooner than the tracker's).
        last_step: the run's latest step, for legacy incidents' resolution (default: the latest of
            ``logged_steps``, else of the records).
        event_rules: rules that are events (default :data:`EVENT_RULES`).
        directions: per-rule overrides of :data:`WORST_DIRECTION`.
        control: the ack/mute document; incidents whose id it acknowledges come back ``acked``.
    """
    ev_rules = frozenset(EVENT_RULES if event_rules is None else event_rules)
    out = Folded()
    by_id: dict[str, Incident] = {}
    alerts: list[tuple[int, dict[str, Any]]] = []
    max_step: int | None = None
    for order, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            out.skipped += 1
            continue
        kind = rec.get("kind", ALERT_KIND)
        rule, step = rec.get("rule"), _step(rec.get("step"))
        if not isinstance(rule, str) or not rule or step is None:
            out.skipped += 1
            continue
        max_step = step if max_step is None else max(max_step, step)
        if kind == INCIDENT_KIND:
            if not _fold_incident(rec, rule, step, by_id):
                out.skipped += 1
        elif kind == EVENT_KIND or (kind == ALERT_KIND and rule in ev_rules):
            out.events.append(dict(rec))
        elif kind == ALERT_KIND:
            alerts.append((order, dict(rec)))
        else:
            out.skipped += 1
    # alert records inside an incident record's span are that incident's firings (tagged ones by id)
    spans: dict[str, list[Incident]] = {}
    for inc in by_id.values():
        spans.setdefault(incident_key(inc.rule, inc.subject), []).append(inc)
    legacy: dict[str, list[dict[str, Any]]] = {}
    for _, rec in alerts:
        key = incident_key(rec["rule"], subject_of(rec))
        tagged = by_id.get(rec.get("incident")) if isinstance(rec.get("incident"), str) else None
        owner = tagged or _covering(spans.get(key, ()), _step(rec["step"]) or 0)
        if owner is not None:
            _attach(owner, rec)
        else:
            legacy.setdefault(key, []).append(rec)
    steps = sorted(set(s for s in (logged_steps or ()) if _step(s) is not None)) if logged_steps else None
    end = last_step if last_step is not None else (steps[-1] if steps else max_step)
    incidents = list(by_id.values())
    for key, recs in legacy.items():
        incidents.extend(_group_legacy(recs, resolve_after, steps, end, direction_of(recs[0]["rule"], directions)))
    for inc in incidents:
        inc.firings.sort(key=lambda f: _step(f.get("step")) or 0)
        if control is not None and is_acked(control, inc.id):
            inc.acked = True
    out.incidents = sorted(incidents, key=lambda i: (i.first_step, i.opened_at or 0.0, i.id), reverse=True)
    out.events.sort(key=lambda e: _step(e.get("step")) or 0)
    return out


def fold_records(records: Iterable[Any], **kwargs: Any) -> list[Incident]:
    """The incidents of a run, newest first, each with its firings: :func:`fold` without the events."""
    return fold(records, **kwargs).incidents


def fold_events(records: Iterable[Any], **kwargs: Any) -> list[dict[str, Any]]:
    """The events of a run (timeline, chart markers), oldest first: :func:`fold` without the incidents."""
    return fold(records, **kwargs).events


def _fold_incident(rec: Mapping[str, Any], rule: str, step: int, by_id: dict[str, Incident]) -> bool:
    """Apply one incident record to ``by_id``; False when it is unusable (no id, unknown state)."""
    iid, state = rec.get("id"), rec.get("state")
    if not isinstance(iid, str) or not iid or state not in CHANGE_STATES:
        return False
    first = _step(rec.get("first_step"))
    first = step if first is None else first
    inc = by_id.get(iid)
    if inc is None or state == STATE_OPEN:
        kept = [] if inc is None else [f for f in inc.firings if (_step(f.get("step")) or 0) < first]
        inc = Incident(id=iid, rule=rule, subject=rec.get("subject") if isinstance(rec.get("subject"), str) else None,
                       first_step=first, opened_at=_num(rec.get("time")), firings=kept)
        by_id[iid] = inc
    inc.category = str(rec.get("category") or inc.category)
    inc.severity = severity_word(rec.get("severity") or inc.severity)
    inc.last_step = max(_step(rec.get("last_step")) or step, inc.last_step)
    inc.count = max(_step(rec.get("count")) or 0, inc.count)
    inc.worst_value = _num(rec.get("worst_value"))
    inc.worst_step = _step(rec.get("worst_step"))
    inc.value, inc.threshold = _num(rec.get("value")), _num(rec.get("threshold"))
    inc.message = str(rec.get("message") or inc.message)
    inc.muted = rec.get("muted") is True
    inc.acked = inc.acked or rec.get("acked") is True
    t = _num(rec.get("time"))
    if state == STATE_RESOLVED:
        inc.state, inc.resolved_step, inc.resolved_at = STATE_RESOLVED, step, t
    else:
        inc.state, inc.resolved_step, inc.resolved_at = STATE_OPEN, None, None
        inc.updated_at = t
        if isinstance(rec.get("alert"), Mapping):
            _attach(inc, {"step": step, **rec["alert"]})
    return True


def _covering(incs: Iterable[Incident], step: int) -> Incident | None:
    """The incident whose span holds ``step`` (open ones reach to the end of the run)."""
    for inc in incs:
        end = inc.last_step if inc.state == STATE_RESOLVED else math.inf
        if inc.first_step <= step <= end:
            return inc
    return None


def _attach(inc: Incident, firing: Mapping[str, Any]) -> None:
    """Add a firing to a folded incident, replacing one of the same step and message (a record written
    both inside an incident record and as an alert record, or replayed after a resume)."""
    f = {k: v for k, v in firing.items() if k not in ("v", "kind")}
    sig = (_step(f.get("step")), f.get("message"))
    inc.firings = [x for x in inc.firings if (_step(x.get("step")), x.get("message")) != sig] + [f]


def _clean_between(steps: list[int] | None, a: int, b: int) -> int:
    """Logged steps strictly between steps ``a`` and ``b`` (training steps when none are known)."""
    if steps is None:
        return max(0, b - a - 1)
    return max(0, bisect.bisect_left(steps, b) - bisect.bisect_right(steps, a))


def _nth_clean_after(steps: list[int] | None, a: int, n: int, end: int | None) -> int | None:
    """The step of the ``n``-th logged step after ``a`` (not later than ``end``), or None if not yet."""
    if steps is None:
        s = a + n
        return s if end is not None and s <= end else None
    i = bisect.bisect_right(steps, a) + n - 1
    return steps[i] if i < len(steps) and (end is None or steps[i] <= end) else None


def _group_legacy(recs: list[dict[str, Any]], resolve_after: int, steps: list[int] | None, end: int | None,
                  direction: str) -> list[Incident]:
    """Group plain alert records of one rule and subject as the tracker would have."""
    recs = sorted(recs, key=lambda r: _step(r["step"]) or 0)  # stable: file order within a step
    out: list[Incident] = []
    cur: Incident | None = None
    for rec in recs:
        step = _step(rec["step"]) or 0
        meta = rec.get("metadata") if isinstance(rec.get("metadata"), Mapping) else {}
        repeated = _step(meta.get("repeated_for"))
        if cur is not None and not (repeated is not None and repeated > 0) \
                and _clean_between(steps, cur.last_step, step) >= resolve_after:
            cur = None
        if cur is None:
            subject = subject_of(rec)
            cur = Incident(id=incident_id(rec["rule"], subject, step), rule=rec["rule"], subject=subject,
                           first_step=step, last_step=step, opened_at=_num(rec.get("time")))
            if any(i.id == cur.id for i in out):
                cur.id = f"{cur.id}.{sum(i.id.startswith(cur.id) for i in out) + 1}"
            out.append(cur)
        if any(_step(f.get("step")) == step and f.get("message") == rec.get("message") for f in cur.firings):
            _attach(cur, rec)  # the same firing written twice (a replay): one firing
            continue
        cur.add_firing(rec, step, _num(rec.get("time")), direction)
        if repeated is not None:
            cur.count = max(cur.count, repeated + 1)
        _attach(cur, rec)
    for inc in out:
        resolved = _nth_clean_after(steps, inc.last_step, resolve_after, end)
        if resolved is not None:
            inc.state, inc.resolved_step = STATE_RESOLVED, resolved
    return out


# --------------------------------------------------------------------------- ack and mute: control/incidents.json

CONTROL_FILE = f"{rf.CONTROL_DIR}/incidents.json"
"""Acknowledgements and mutes of one run, written by the dashboard, followed by the collector and the
Smart Monitor. One file for both, so a follower costs one ``stat`` per poll."""
CONTROL_VERSION = 1
MAX_ACKS = 1000
"""Acknowledgements kept (the newest); older ones are dropped when a new one is written."""
MAX_MUTE_SECONDS = 30 * 24 * 3600.0
"""The longest mute (30 days): a mute is a pause, not a way to switch a rule off for good."""
MAX_NAME_CHARS = 200
_CONTROL_FIELDS = ("v", "acks", "mutes")


def control_path(run_dir: str | os.PathLike[str]) -> Path:
    """``<run>/control/incidents.json``."""
    return Path(run_dir) / CONTROL_FILE


def empty_control() -> dict[str, Any]:
    """The document of a run with no acknowledgement and no mute."""
    return {"v": CONTROL_VERSION, "acks": {}, "mutes": {}}


def validate(doc: Any) -> str | None:
    """None when ``doc`` is a valid control document, else the first problem, naming the field.

    Shape: ``{"v": 1, "acks": {"<incident id>": {"by": str, "at": seconds}},
    "mutes": {"<rule>": {"until": seconds, "by": str, "at": seconds}}}``; ``by`` and ``at`` optional,
    times in seconds since the epoch.
    """
    if not isinstance(doc, Mapping):
        return f"the document must be a JSON object, not {type(doc).__name__}"
    for key in doc:
        if key not in _CONTROL_FIELDS:
            return f"unknown field {key!r} (expected {', '.join(_CONTROL_FIELDS)})"
    v = doc.get("v", CONTROL_VERSION)
    if _step(v) is None or v < 1:
        return f"v must be a positive integer, got {v!r}"
    if v > CONTROL_VERSION:
        return f"v is {v}: written by a newer Trainboard (this one reads up to {CONTROL_VERSION})"
    for section, required in (("acks", ()), ("mutes", ("until",))):
        entries = doc.get(section, {})
        if not isinstance(entries, Mapping):
            return f"{section} must be an object, got {type(entries).__name__}"
        for name, entry in entries.items():
            where = f"{section}[{name!r}]"
            if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
                return f"{where}: the name must be a non-empty string of at most {MAX_NAME_CHARS} characters"
            if not isinstance(entry, Mapping):
                return f"{where} must be an object, got {type(entry).__name__}"
            for k in required:
                if k not in entry:
                    return f"{where}.{k} is missing"
            for k, val in entry.items():
                if k in ("until", "at"):
                    if _num(val) is None or not math.isfinite(val):
                        return f"{where}.{k} must be a time in seconds since the epoch, got {val!r}"
                elif k == "by":
                    if not isinstance(val, str) or len(val) > MAX_NAME_CHARS:
                        return f"{where}.by must be a string of at most {MAX_NAME_CHARS} characters"
                else:
                    return f"{where}: unknown field {k!r} (expected {'until, ' if section == 'mutes' else ''}by, at)"
    return None


def _name(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS:
        raise ValueError(f"{what} must be a non-empty text of at most {MAX_NAME_CHARS} characters; got {value!r}")
    return value.strip()


def _who(who: Any) -> str:
    if who is None:
        return ""
    if not isinstance(who, str) or len(who) > MAX_NAME_CHARS:
        raise ValueError(f"who must be a text of at most {MAX_NAME_CHARS} characters; got {who!r}")
    return who.strip()


def _copy(doc: Mapping[str, Any] | None) -> dict[str, Any]:
    src = doc if isinstance(doc, Mapping) else {}
    out = empty_control()
    for section in ("acks", "mutes"):
        entries = src.get(section)
        if isinstance(entries, Mapping):
            out[section] = {k: dict(v) for k, v in entries.items() if isinstance(v, Mapping)}
    return out


def _prune(doc: dict[str, Any], now: float) -> dict[str, Any]:
    """Drop expired mutes and the oldest acknowledgements beyond :data:`MAX_ACKS`, so the file stays small."""
    doc["mutes"] = {r: m for r, m in doc["mutes"].items() if (_num(m.get("until")) or 0.0) > now}
    if len(doc["acks"]) > MAX_ACKS:
        newest = sorted(doc["acks"].items(), key=lambda kv: _num(kv[1].get("at")) or 0.0)[-MAX_ACKS:]
        doc["acks"] = dict(newest)
    return doc


def apply_ack(doc: Mapping[str, Any] | None, incident_id: str, who: str | None, now: float) -> dict[str, Any]:
    """A new document with ``incident_id`` acknowledged by ``who`` at ``now`` (pure; input unchanged).

    Raises:
        ValueError: an empty or over-long id or name.
    """
    iid = _name("the incident id", incident_id)
    out = _copy(doc)
    out["acks"][iid] = {"by": _who(who), "at": float(now)}
    return _prune(out, now)


def unack(doc: Mapping[str, Any] | None, incident_id: str, now: float) -> dict[str, Any]:
    """A new document without the acknowledgement of ``incident_id`` (pure; absent is fine)."""
    out = _copy(doc)
    out["acks"].pop(str(incident_id), None)
    return _prune(out, now)


def apply_mute(doc: Mapping[str, Any] | None, rule: str, until: float, now: float, who: str | None = None) -> dict[str, Any]:
    """A new document with ``rule`` muted until ``until`` (seconds since the epoch; pure).

    Raises:
        ValueError: an empty rule, or ``until`` not a time after ``now`` and within
            :data:`MAX_MUTE_SECONDS` (30 days) of it.
    """
    name = _name("the rule", rule)
    u = _num(until)
    if u is None or not math.isfinite(u) or u <= now:
        raise ValueError(f"a mute must end after now; got until={until!r} (now is {now:.0f})")
    if u - now > MAX_MUTE_SECONDS:
        raise ValueError(f"a mute lasts at most {MAX_MUTE_SECONDS / 86400:.0f} days; got {(u - now) / 86400:.1f} days")
    out = _copy(doc)
    out["mutes"][name] = {"until": u, "by": _who(who), "at": float(now)}
    return _prune(out, now)


def unmute(doc: Mapping[str, Any] | None, rule: str, now: float) -> dict[str, Any]:
    """A new document where ``rule`` is not muted (pure; absent is fine)."""
    out = _copy(doc)
    out["mutes"].pop(str(rule), None)
    return _prune(out, now)


def mute_until(doc: Mapping[str, Any] | None, rule: str, now: float) -> float | None:
    """When the mute of ``rule`` ends, or None when it is not muted at ``now``. Never raises."""
    mutes = doc.get("mutes") if isinstance(doc, Mapping) else None
    entry = mutes.get(rule) if isinstance(mutes, Mapping) else None
    until = _num(entry.get("until")) if isinstance(entry, Mapping) else None
    return until if until is not None and until > now else None


def is_muted(doc: Mapping[str, Any] | None, rule: str, now: float) -> bool:
    """Whether ``rule`` is muted at ``now`` (a mute ends at its ``until``). Never raises."""
    return mute_until(doc, rule, now) is not None


def is_acked(doc: Mapping[str, Any] | None, incident_id: str | None) -> bool:
    """Whether ``incident_id`` was acknowledged. Never raises."""
    acks = doc.get("acks") if isinstance(doc, Mapping) else None
    return isinstance(acks, Mapping) and isinstance(incident_id, str) and isinstance(acks.get(incident_id), Mapping)


def read_control(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], str | None]:
    """The control document of a run and a problem in words, never raising.

    A missing file is no problem (``(empty, None)``); an unreadable, half-written, malformed or invalid
    one gives ``(empty, problem)``, the problem naming the file and the field.
    """
    path = control_path(run_dir)
    if not path.exists():
        return empty_control(), None
    doc, problem = rf.read_json(path)
    if problem is None:
        problem = validate(doc)
        if problem is not None:
            problem = f"{path}: {problem}"
    if problem is not None:
        return empty_control(), problem
    return _copy(doc), None


def write_control(run_dir: str | os.PathLike[str], doc: Mapping[str, Any]) -> None:
    """Replace ``control/incidents.json`` atomically (a follower sees the old file or the new one).

    Raises:
        ValueError: ``doc`` is not valid (see :func:`validate`); nothing is written.
        OSError: the control directory cannot be written.
    """
    problem = validate(doc)
    if problem is not None:
        raise ValueError(f"not saved: {problem}")
    rf.write_json_atomic(control_path(run_dir), dict(doc))


_CONTROL_LOCKS: dict[str, threading.Lock] = {}
_CONTROL_LOCKS_GUARD = threading.Lock()


def _control_lock(path: Path) -> threading.Lock:
    """One lock per control file in this process: the dashboard answers requests on several threads, and
    two clicks at once (Ack on one incident, Mute on another) must not each write a change the other lost."""
    key = os.path.abspath(path)
    with _CONTROL_LOCKS_GUARD:
        return _CONTROL_LOCKS.setdefault(key, threading.Lock())


def update_control(run_dir: str | os.PathLike[str],
                   change: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """Read, change and write the control file: ``(new doc, None)`` or ``(None, problem)``; never raises.

    A file that is there but invalid is not overwritten (it may be a hand edit in progress): the problem
    says so, and what to do. The read-change-write is serialised within the process (``_control_lock``).
    """
    path = control_path(run_dir)
    with _control_lock(path):
        return _update_control_locked(run_dir, path, change)


def _update_control_locked(run_dir: str | os.PathLike[str], path: Path,
                           change: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    doc, problem = read_control(run_dir)
    if problem is not None:
        return None, f"not saved: {problem}; fix or delete {path.name}"
    try:
        new = change(doc)
        write_control(run_dir, new)
    except ValueError as exc:
        return None, str(exc) if str(exc).startswith("not saved") else f"not saved: {exc}"
    except OSError as exc:
        return None, f"not saved: cannot write {path}: {exc.strerror or exc}"
    return new, None


def acknowledge(run_dir: str | os.PathLike[str], incident_id: str, who: str | None = None,
                now: float | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Acknowledge an incident of a run (the Alerts page's Ack button), see :func:`update_control`."""
    t = time.time() if now is None else now
    return update_control(run_dir, lambda d: apply_ack(d, incident_id, who, t))


def mute(run_dir: str | os.PathLike[str], rule: str, seconds: float, who: str | None = None,
         now: float | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Mute ``rule`` of a run for ``seconds`` from now (the Alerts page's Mute button)."""
    t = time.time() if now is None else now
    s = _num(seconds)
    if s is None or not math.isfinite(s) or s <= 0:
        return None, f"not saved: a mute lasts a positive number of seconds; got {seconds!r}"
    return update_control(run_dir, lambda d: apply_mute(d, rule, t + s, t, who))


def unmute_rule(run_dir: str | os.PathLike[str], rule: str,
                now: float | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """End the mute of ``rule`` of a run now."""
    t = time.time() if now is None else now
    return update_control(run_dir, lambda d: unmute(d, rule, t))


class ControlFollower:
    """Follows ``control/incidents.json`` by (mtime, size): a poll costs one ``stat`` when nothing changed.

    For the collector and the Smart Monitor: an invalid file keeps the previous document (a half-edited
    file must not unmute everything) and reports its problem once per change; a removed file means no
    ack and no mute.

    Args:
        run_dir: the run directory.

    Example:
        >>> f = ControlFollower("/nonexistent-run")
        >>> f.poll()
        (False, None)
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.doc: dict[str, Any] = empty_control()
        self.problem: str | None = None
        self._sig: tuple[int, int] | None = None

    def poll(self) -> tuple[bool, str | None]:
        """``(changed, problem)``: whether :attr:`doc` changed, and a new problem to report (else None)."""
        try:
            st = os.stat(control_path(self.run_dir))
            sig: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            sig = None
        if sig == self._sig:
            return False, None
        self._sig = sig
        doc, problem = read_control(self.run_dir)
        if problem is not None:
            self.problem = problem
            return False, problem
        self.problem = None
        changed = doc != self.doc
        self.doc = doc
        return changed, None


# --------------------------------------------------------------------------- the collector's incident log


class IncidentLog:
    """Incidents as the collector writes them: one per run, used by the anomaly plugin inside a training
    and by the standalone Smart Monitor (through :class:`collectors.anomaly.actions.AlertActions`).

    Each logged step goes through :meth:`observe` once, with the alerts the rule engine returned and the
    firings its repeat suppression held back. What reaches ``logs/alerts.jsonl`` through the one alerts
    writer (:class:`collectors.alerts.AlertLog`):

    * an ``alert`` record per returned alert that is not an event (tagged with its ``incident`` id), so
      the file stays as short as before: a lasting condition writes its first firing and every 50th;
    * an ``event`` record per informational firing (new best model, plateau...), never counted as alerts;
    * an ``incident`` record when an incident opens, is updated (bounded rate) or resolves.

    Only incident records go to the notifier (one message per incident, not per firing), and only when
    the rule is not muted and the incident not acknowledged (``control/incidents.json``, followed here
    with one ``stat`` per :meth:`poll_control`). A muted rule's alerts are still written (nothing is
    hidden), but :meth:`observe` leaves them out of what it returns, so the caller saves no snapshot.
    Incident records are tagged with :data:`ALERTS_LOG_KINDS`' ``incident`` kind; readers that count
    alerts count ``alert`` records (or better, the folded incidents), never events.

    Args:
        log: the run's :class:`collectors.alerts.AlertLog` (anything with its ``append`` method).
        run_dir: the run directory (for ``control/incidents.json``).
        source: the records' ``source`` (``collector``, ``smart_monitor``).
        guard: reports an invalid control file once (anything with ``warn_once``), or None.
        resolve_after: clean logged steps that resolve an incident (default :data:`RESOLVE_AFTER`).
    """

    def __init__(self, log: Any, run_dir: str | os.PathLike[str], *, source: str, guard: Any = None,
                 resolve_after: int = RESOLVE_AFTER) -> None:
        self.log = log
        self.source = source
        self.guard = guard
        self.tracker = IncidentTracker(resolve_after, source=source)
        self.follower = ControlFollower(run_dir)
        self.changes_written = 0
        self.poll_every_s = 1.0
        self._next_poll = 0.0

    def poll_control(self) -> None:
        """Pick up a new ack/mute document (one ``stat`` when nothing changed); report a bad file once.
        :meth:`observe` also calls it, at most once per :attr:`poll_every_s`, so a mute is in effect
        for the rules of the same thread that evaluates them."""
        self._next_poll = time.monotonic() + self.poll_every_s
        changed, problem = self.follower.poll()
        if problem is not None and self.guard is not None:
            self.guard.warn_once("control/incidents.json", f"{problem}; the previous acks and mutes stay in effect")
        if changed:
            self.tracker.set_control(self.follower.doc)

    def is_muted(self, rule: str, now: float | None = None) -> bool:
        return self.tracker.is_muted(rule, now)

    def observe(self, step: int, alerts: Sequence[Any], held: Sequence[Any] = (), *,
                now: float | None = None) -> list[Any]:
        """Write one logged step (see the class doc); returns ``alerts`` minus muted rules: the ones that
        may still save a snapshot (a new best model is an event, and still saves its snapshot)."""
        now = time.time() if now is None else now
        if time.monotonic() >= self._next_poll:
            self.poll_control()
        # held-back repeats keep a fault's incident open; repeats of an informational condition (a plateau
        # lasting 50 logs) are not new events
        held = [h for h in held if alert_fields(h).get("rule") not in self.tracker.event_rules]
        changes = self.tracker.observe(step, list(alerts) + held, now=now)
        records: list[dict[str, Any]] = []
        flags: list[bool] = []
        actionable: list[Any] = []
        for a in alerts:
            f = alert_fields(a)
            rule = f.get("rule")
            if not isinstance(rule, str):
                continue
            if not self.tracker.is_muted(rule, now):
                actionable.append(a)
            if rule in self.tracker.event_rules:
                continue  # its event record comes with the changes
            inc = self.tracker.open.get(incident_key(rule, subject_of(f)))
            rec = _alert_record(a, f, self.source, now)
            if inc is not None:
                rec["incident"] = inc.id
            records.append(rec)
            flags.append(False)
        for ch in changes:
            records.append(ch.record)
            flags.append(ch.notify and ch.state != STATE_UPDATED)  # one message per incident
        self.changes_written += len(changes)
        if records:
            self.log.append(records, notify=flags)
        return actionable

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tracker.load_state_dict(state)


def _alert_record(alert: Any, fields_: Mapping[str, Any], source: str, now: float) -> dict[str, Any]:
    """The alert record of ``alert``: :func:`collectors.alerts.alert_record` for an ``Alert``, else the
    fields as given (a record from elsewhere), with this log's time and source."""
    if isinstance(alert, Alert):
        return alert_record(alert, source=source, now=now)
    out = {k: v for k, v in fields_.items() if k not in ("v", "kind")}
    out.setdefault("time", now)
    out.setdefault("source", source)
    return rf.make_record(ALERT_KIND, **out)
