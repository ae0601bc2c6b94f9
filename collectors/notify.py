"""Send Trainboard incidents and alerts to people (Slack, Discord, Teams, email, ntfy, desktop, webhooks).

Who uses it: the collector (``Monitor(notify=...)`` / ``MonitorCallback(notify=...)``) inside a training,
and ``trainboard serve --notify URL`` for runs without the collector. Delivery goes through apprise
(https://github.com/caronc/apprise), one maintained library that speaks ~100 services through one URL
syntax (``slack://...``, ``discord://...``, ``workflows://...`` (Teams), ``mailto://...``, ``ntfy://...``,
``tgram://...``, ``dbus://`` / ``macosx://`` / ``windows://`` desktop, and ``json://`` / ``form://``
plain webhooks).

Why it is built this way: a notification must never block or break a training. ``submit*`` only filters
(severity, duplicates, rate limit) and puts a shallow copy of the record on a bounded queue; formatting
and all network I/O happen on one daemon thread. A full queue drops the message and counts it; a failing
destination is reported once and counted; every send has explicit connect/read timeouts and ``close()``
returns within its own timeout even while a receiver hangs (the daemon thread is abandoned, never joined
for longer). apprise is imported only when a Notifier is built, so a training without apprise still
imports the collector; :func:`notifier_from_settings` then warns once and returns ``None``.

One message per incident: an incident record (``{"id", "rule", "severity", "run", "first_step",
"last_step", "count", "worst_value", "message", "state": "open"|"resolved"}``) is announced when it
opens and, with ``on_resolved=True``, when it resolves; submitting the same id and state again is a
no-op. Plain alert records (the ``logs/alerts.jsonl`` shape) are grouped by (run, rule): the first alert
of a group is sent, later ones only update the group, and a group ends when :meth:`Notifier.resolve` is
called, when an incident of that run and rule resolves, or when the next alert comes more than
``ALERT_GROUP_GAP_STEPS`` steps after the group's last one.

This module depends on the standard library (and apprise at run time) only; it never imports dash or torch.
"""
from __future__ import annotations

import atexit
import contextvars
import logging
import math
import os
import queue
import re
import threading
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote

from collectors.runtime import Guard

logger = logging.getLogger("trainboard")

ENV_VAR = "TRAINBOARD_NOTIFY"
"""Environment variable with notification URLs, separated by commas or whitespace."""

SEVERITY_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}
"""Severity levels from least to most urgent; ``min_severity`` keeps a level and everything above it."""
SEVERITY_ALIASES: dict[str, str] = {"info": "low", "warning": "medium", "warn": "medium", "error": "high"}
"""Other spellings seen in records (the dashboard's CRITICAL/WARNING/INFO table); unknown ones count as low."""

DEFAULT_MIN_SEVERITY = "high"
"""High and critical are the faults a person should act on (issue 10); lower levels stay on the page."""
DEFAULT_RATE_LIMIT_PER_MIN = 10
"""At most this many messages in any 60 s window; more are suppressed, counted, and mentioned in the next one.
Ten a minute lets several distinct faults through while a storm of rules cannot flood a channel."""
DEFAULT_QUEUE_SIZE = 100
"""Messages waiting for the sending thread; when full, new ones are dropped and counted."""
DEFAULT_SEND_TIMEOUT_S = 5.0
"""Read timeout of one delivery (one message to one URL), set on apprise's service explicitly."""
CONNECT_TIMEOUT_S = 4.0
"""TCP connect timeout of one delivery (apprise's own default, capped by the send timeout)."""
MAX_SERVICE_THROTTLE_S = 1.0
"""apprise waits up to 5.5 s between two messages to one service; our rate limit already spaces them,
so the per-service wait is capped to keep ``close()`` flushes short."""
DEFAULT_CLOSE_TIMEOUT_S = 5.0
"""How long :meth:`Notifier.close` waits for queued messages by default."""
ATEXIT_FLUSH_S = 3.0
"""At interpreter exit, unsent messages (often the critical one just before a crash) get this long."""
ALERT_GROUP_GAP_STEPS = 50
"""A plain alert more than this many steps after its group's last alert starts a new group (a new message)."""
MAX_TRACKED = 10_000
"""Incident ids and alert groups remembered for de-duplication (oldest forgotten first)."""
RATE_WINDOW_S = 60.0

_URL_START = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_SPLIT_BEFORE_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.\-]*://)")
_COMMON_SCHEMES = "slack, discord, workflows (Teams), mailto, ntfy, tgram, json, form, dbus, macosx, windows"

_STOP = object()
"""Queue sentinel that ends the sending thread."""

# The apprise log records emitted while *we* send are captured here instead of reaching the training's
# console once per failed message: a contextvar, because apprise runs a timed call on its own executor
# with a copy of the caller's context, so the capture list follows the call onto those threads.
_CAPTURE: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("trainboard_notify_capture", default=None)


class _CaptureAppriseLogs(logging.Filter):
    """Diverts apprise's records made during a Trainboard send into that send's capture list."""

    def filter(self, record: logging.LogRecord) -> bool:
        buf = _CAPTURE.get()
        if buf is None:
            return True  # someone else's apprise use: leave it alone
        if record.levelno >= logging.WARNING:
            try:
                buf.append(record.getMessage())
            except Exception:  # noqa: BLE001 - a malformed log record must not break a send
                pass
        return False


_FILTER_LOCK = threading.Lock()
_FILTER_INSTALLED = False


def _install_log_filter() -> None:
    global _FILTER_INSTALLED
    with _FILTER_LOCK:
        if not _FILTER_INSTALLED:
            logging.getLogger("apprise").addFilter(_CaptureAppriseLogs())
            _FILTER_INSTALLED = True


# ----------------------------------------------------------------------------------------------------
# pure helpers (tested without threads or network)
# ----------------------------------------------------------------------------------------------------

def normalize_severity(value: object) -> str:
    """The canonical severity of a record's value; unknown or missing values count as ``low``."""
    text = str(value or "").strip().lower()
    text = SEVERITY_ALIASES.get(text, text)
    return text if text in SEVERITY_ORDER else "low"


def severity_passes(severity: object, min_severity: str) -> bool:
    """True when ``severity`` is at least ``min_severity`` (critical > high > medium > low)."""
    return SEVERITY_ORDER[normalize_severity(severity)] >= SEVERITY_ORDER[min_severity]


def parse_notify_urls(value: object, *, source: str = "notify") -> list[str]:
    """The notification URLs in ``value``: ``None``, one string, or a list/tuple of strings.

    A string may hold several URLs separated by whitespace or commas; a comma is a separator only before
    another ``scheme://`` so a URL's own commas (``mailto://...?to=a@x.org,b@y.org``) survive.

    Raises:
        ValueError: a non-string item, or an item that is not ``scheme://...``.
    """
    if value is None or value is False:
        return []
    if isinstance(value, str):
        items: list[str] = []
        for chunk in value.split():
            items.extend(_SPLIT_BEFORE_URL.split(chunk))
    elif isinstance(value, (list, tuple)):
        items = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ValueError(f"{source}: item {i} is a {type(item).__name__}, expected a URL string "
                                 f"such as 'slack://...' or 'json://host:port/path'")
            items.append(item)
    else:
        raise ValueError(f"{source} must be a URL string, a list of URL strings or None, "
                         f"not {type(value).__name__}")
    urls: list[str] = []
    for raw in items:
        url = raw.strip().strip(",").strip()
        if not url:
            continue
        if not _URL_START.match(url):
            shown = url if len(url) <= 40 else url[:37] + "..."
            raise ValueError(f"{source}: {shown!r} is not a notification URL (expected scheme://..., "
                             f"e.g. slack://..., json://host:port/path, mailto://...)")
        if url not in urls:
            urls.append(url)
    return urls


def url_scheme(url: str) -> str:
    """The lower-case scheme of ``url`` (``slack`` for ``slack://...``)."""
    return url.split("://", 1)[0].lower()


def format_value(value: object) -> str:
    """A measured value as a person reads it: 4 significant digits, NaN/Inf spelled out, n/a for none."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        text = value.strip()
        return text or "n/a"
    try:
        num = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(num):
        return "NaN"
    if math.isinf(num):
        return "Inf" if num > 0 else "-Inf"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return f"{num:.4g}"


def dashboard_link(public_url: str | None, run: str) -> str | None:
    """The dashboard's Alerts page for ``run`` (``{public_url}/alerts?run=<run>``), or None without a URL."""
    if not public_url:
        return None
    return f"{public_url.rstrip('/')}/alerts?run={quote(str(run), safe='')}"


@dataclass(frozen=True)
class Message:
    """One notification, ready for apprise: a title, a plain-text body and an apprise notify type."""

    title: str
    body: str
    notify_type: str  # "info" | "success" | "warning" | "failure" (apprise.NotifyType values)


_TYPE_BY_SEVERITY = {"critical": "failure", "high": "failure", "medium": "warning", "low": "info"}


def format_message(event: Mapping[str, Any], *, public_url: str | None = None, suppressed_before: int = 0) -> Message:
    """Turn a queued event (an incident, or a first alert of a group) into the text people receive.

    Args:
        event: a mapping with ``run``, ``rule``, ``severity``, ``state`` (``open``/``resolved``), ``step``,
            ``value`` and optionally ``first_step``, ``last_step``, ``count``, ``threshold``, ``message``.
        public_url: the dashboard's address as people reach it; adds a link to the run's Alerts page.
        suppressed_before: messages the rate limit held back since the last one sent (said in the body).
    """
    run = str(event.get("run") or "run")
    rule = str(event.get("rule") or "alert")
    severity = normalize_severity(event.get("severity"))
    resolved = event.get("state") == "resolved"
    step = event.get("step")
    step_text = format_value(step) if step is not None else "n/a"
    value_text = format_value(event.get("value"))
    if resolved:
        title = f"Trainboard: resolved {rule} on {run}"
        kind = "success"
    else:
        title = f"Trainboard: {severity.upper()} {rule} on {run}"
        kind = _TYPE_BY_SEVERITY[severity]
    lines = [f"Run: {run}", f"Rule: {rule} ({severity})"]
    first, last, count = event.get("first_step"), event.get("last_step"), event.get("count")
    if resolved:
        span = f"steps {format_value(first)}-{format_value(last)}" if first is not None and last is not None \
            else f"step {step_text}"
        lines.append(f"Resolved at step {step_text} ({span}, {format_value(count or 1)} firing(s))")
        lines.append(f"Worst value: {value_text}")
    else:
        lines.append(f"Step: {step_text}")
        threshold = event.get("threshold")
        lines.append(f"Value: {value_text}" + (f" (threshold {format_value(threshold)})" if threshold is not None else ""))
        if isinstance(count, int) and count > 1:
            lines.append(f"Firings so far: {count}")
    text = str(event.get("message") or "").strip()
    if text:
        lines.append(text if len(text) <= 500 else text[:497] + "...")
    link = dashboard_link(public_url, run)
    if link:
        lines.append(f"Dashboard: {link}")
    if suppressed_before > 0:
        lines.append(f"({suppressed_before} more notification(s) were held back by the rate limit)")
    return Message(title=title, body="\n".join(lines), notify_type=kind)


class RateLimiter:
    """A sliding 60 s window: allows at most ``per_min`` events in any window (None or 0: no limit)."""

    def __init__(self, per_min: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_min = per_min or 0
        self._clock = clock
        self._times: deque[float] = deque()

    def allow(self) -> bool:
        """Record one event now and say whether it fits the limit (a refused event is not recorded)."""
        if self.per_min <= 0:
            return True
        now = self._clock()
        while self._times and now - self._times[0] >= RATE_WINDOW_S:
            self._times.popleft()
        if len(self._times) >= self.per_min:
            return False
        self._times.append(now)
        return True


def _as_mapping(record: object) -> Mapping[str, Any]:
    """A record as a mapping: a dict, an object with ``to_dict()`` (collectors' Alert) or a dataclass."""
    if isinstance(record, Mapping):
        return record
    to_dict = getattr(record, "to_dict", None)
    if callable(to_dict):
        data = to_dict()
        if isinstance(data, Mapping):
            return data
    if hasattr(record, "__dataclass_fields__"):
        return {name: getattr(record, name) for name in record.__dataclass_fields__}  # type: ignore[attr-defined]
    raise TypeError(f"a notification record must be a mapping or have to_dict(), not {type(record).__name__}")


def _worse(value: object, current: object, threshold: object) -> bool:
    """Whether ``value`` is worse than ``current``: non-finite first, then furthest from the threshold."""
    def rank(v: object) -> float:
        try:
            x = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return -math.inf
        if not math.isfinite(x):
            return math.inf
        try:
            t = float(threshold)  # type: ignore[arg-type]
            if math.isfinite(t):
                return abs(x - t)
        except (TypeError, ValueError):
            pass
        return abs(x)
    return rank(value) > rank(current)


@dataclass
class _AlertGroup:
    first_step: int
    last_step: int
    count: int = 1
    worst_value: Any = None
    threshold: Any = None
    severity: str = "low"
    message: str = ""
    announced: bool = False


@dataclass
class _Counters:
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    suppressed: int = 0
    rate_limited: int = 0
    below_severity: int = 0
    duplicates: int = 0
    extra: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# the notifier
# ----------------------------------------------------------------------------------------------------

class Notifier:
    """Sends incidents and alerts through apprise on a background thread, never blocking the caller.

    Args:
        urls: apprise URLs (one string, possibly several separated by commas/whitespace, or a list).
        min_severity: lowest severity that is sent (``critical`` > ``high`` > ``medium`` > ``low``);
            default ``"high"``.
        on_resolved: also send a message when an incident resolves (default False: only openings).
        rate_limit_per_min: at most this many messages per 60 s (default 10; 0 or None: no limit).
        public_url: the dashboard as people reach it (``http(s)://host[:port]``); messages then link to
            ``{public_url}/alerts?run=<run>``. Default None: no link.
        run_name: the run named in messages when a record carries no ``run`` (default ``"run"``).
        send_timeout_s: read timeout of one delivery in seconds (default 5.0); connect timeout is
            ``min(4.0, send_timeout_s)``.
        queue_size: messages waiting to be sent (default 100); more are dropped and counted.
        guard: where failures are reported once (the Monitor's Guard); default a private one.
        clock: monotonic clock for the rate limit (tests pass a fake one).

    Raises:
        ValueError: no URL, a URL apprise does not know or cannot use, an unknown ``min_severity``, a
            negative or non-integer rate limit, a non-positive timeout or queue size, or a bad public URL.

    Example:
        >>> n = Notifier("json://127.0.0.1:8000/hook", public_url="http://gpu-box:8050", run_name="gpt2")
        >>> n.submit({"rule": "loss_spike", "severity": "high", "step": 120, "value": 4.2,
        ...           "threshold": 1.3, "message": "loss 4.2 is 3x the recent average"})
        True
        >>> n.close(timeout=5.0)
    """

    def __init__(self, urls: str | Iterable[str], *, min_severity: str = DEFAULT_MIN_SEVERITY,
                 on_resolved: bool = False, rate_limit_per_min: int | None = DEFAULT_RATE_LIMIT_PER_MIN,
                 public_url: str | None = None, run_name: str = "run",
                 send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S, queue_size: int = DEFAULT_QUEUE_SIZE,
                 guard: Guard | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        url_list = parse_notify_urls(list(urls) if not isinstance(urls, str) and urls is not None else urls)
        if not url_list:
            raise ValueError("Notifier needs at least one notification URL (e.g. slack://..., json://host:port/path)")
        sev = str(min_severity).strip().lower()
        if sev not in SEVERITY_ORDER:
            raise ValueError(f"min_severity must be one of {', '.join(reversed(list(SEVERITY_ORDER)))}, "
                             f"not {min_severity!r}")
        if rate_limit_per_min is not None and (isinstance(rate_limit_per_min, bool)
                                               or not isinstance(rate_limit_per_min, int)):
            raise ValueError(f"rate_limit_per_min must be a whole number of messages per minute "
                             f"(0 or None: no limit), not {rate_limit_per_min!r}")
        if rate_limit_per_min is not None and rate_limit_per_min < 0:
            raise ValueError(f"rate_limit_per_min must be >= 0 (0 or None: no limit), not {rate_limit_per_min}")
        try:
            timeout_ok = float(send_timeout_s) > 0 and math.isfinite(float(send_timeout_s))
        except (TypeError, ValueError):
            timeout_ok = False
        if not timeout_ok:
            raise ValueError(f"send_timeout_s must be a positive number of seconds, not {send_timeout_s!r}")
        if not isinstance(queue_size, int) or isinstance(queue_size, bool) or queue_size < 1:
            raise ValueError(f"queue_size must be a positive whole number, not {queue_size!r}")
        if public_url is not None:
            public_url = str(public_url).strip()
            if not re.match(r"^https?://[^/\s]+", public_url):
                raise ValueError(f"public_url must be the dashboard's address as http(s)://host[:port], "
                                 f"not {public_url!r}")
        self.urls = url_list
        self.min_severity = sev
        self.on_resolved = bool(on_resolved)
        self.rate_limit_per_min = rate_limit_per_min or 0
        self.public_url = public_url.rstrip("/") if public_url else None
        self.run_name = str(run_name or "run")
        self.send_timeout_s = float(send_timeout_s)
        self.guard = guard or Guard(logger)

        self._lock = threading.Lock()
        self._counts = _Counters()
        self._limiter = RateLimiter(self.rate_limit_per_min, clock)
        self._held_back = 0  # rate-limited since the last queued message (told in the next one)
        self._seen_incidents: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._announced: OrderedDict[tuple[str, str], None] = OrderedDict()  # incidents whose opening was queued
        self._groups: OrderedDict[tuple[str, str], _AlertGroup] = OrderedDict()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False
        self._close_deadline: float | None = None

        # apprise is imported here, not at module import: a training without apprise still imports the
        # collector, and the cost (~0.5 s) is paid only when notifications are configured.
        try:
            import apprise  # noqa: F401
        except ImportError as exc:
            raise ImportError("notifications need the apprise package: pip install apprise") from exc
        _install_log_filter()  # before building: apprise explains unusable URLs through its logger
        self._services = [self._build_service(i, url) for i, url in enumerate(url_list)]

    # -- configuration -------------------------------------------------------------------------------
    def _build_service(self, index: int, url: str) -> Any:
        """One apprise object for one URL, with explicit timeouts, so each destination is counted alone."""
        import apprise

        scheme = url_scheme(url)
        label = f"notify URL #{index + 1} ({scheme}://...)"
        known = _known_scheme(scheme)
        if known is False:
            raise ValueError(f"{label}: apprise does not know the scheme {scheme!r} "
                             f"(common ones: {_COMMON_SCHEMES}; all: https://github.com/caronc/apprise/wiki)")
        if known == "disabled":
            raise ValueError(f"{label}: apprise's {scheme}:// service is disabled on this machine "
                             f"(it needs extra system packages, e.g. dbus/gi for desktop notifications)")
        asset = _sync_asset()
        token = _CAPTURE.set([])  # apprise logs why a URL is unusable; keep it out of the console
        try:
            plugin = apprise.Apprise.instantiate(url, asset=asset, suppress_exceptions=True)
            reasons = _CAPTURE.get() or []
        finally:
            _CAPTURE.reset(token)
        if plugin is None:
            why = f": {_mask('; '.join(reasons[-2:]), url)}" if reasons else ""
            raise ValueError(f"{label}: apprise cannot use this URL (check its tokens, host and port){why}")
        # explicit timeouts: apprise's defaults differ per service (mailto uses a 15 s connect timeout)
        plugin.socket_read_timeout = self.send_timeout_s
        plugin.socket_connect_timeout = min(CONNECT_TIMEOUT_S, self.send_timeout_s)
        if getattr(plugin, "request_rate_per_sec", 0) > MAX_SERVICE_THROTTLE_S:
            plugin.request_rate_per_sec = MAX_SERVICE_THROTTLE_S
        service = apprise.Apprise(asset=asset)
        service.add(plugin)
        return service

    # -- the caller's side: cheap, never raises, never does I/O --------------------------------------
    def submit(self, record: object) -> bool:
        """Offer one record: an incident (has ``id`` and ``state``) or a plain alert (logs/alerts.jsonl shape).

        Returns True when a message was queued for sending, False when it was filtered, a duplicate, rate
        limited, dropped (queue full, closed) or malformed. Never raises and never waits.
        """
        try:
            data = _as_mapping(record)
            if "id" in data and data.get("state") == "updated":
                return False  # one message per incident: its opening (and resolution), not its updates
            if "id" in data and data.get("state") in ("open", "resolved"):
                return self._offer_incident(data, str(data["state"]))
            return self._offer_alert(data)
        except Exception as exc:  # noqa: BLE001 - a bad record must never reach the training
            self.guard.warn_once("notify: bad record", f"notify: a record could not be used "
                                 f"({type(exc).__name__}: {exc}); it was not sent")
            return False

    def submit_incident_opened(self, record: object) -> bool:
        """Announce an incident that opened (sent once per incident id; see :meth:`submit`)."""
        return self._offer_incident_safely(record, "open")

    def submit_incident_resolved(self, record: object) -> bool:
        """Announce that an incident resolved (sent only with ``on_resolved=True`` and if its opening was)."""
        return self._offer_incident_safely(record, "resolved")

    def _offer_incident_safely(self, record: object, state: str) -> bool:
        try:
            return self._offer_incident(_as_mapping(record), state)
        except Exception as exc:  # noqa: BLE001 - a bad record must never reach the training
            self.guard.warn_once("notify: bad record", f"notify: an incident could not be used "
                                 f"({type(exc).__name__}: {exc}); it was not sent")
            return False

    def resolve(self, run: str | None = None, rule: str | None = None) -> int:
        """End the plain-alert groups of ``run`` (default: ``run_name``) and ``rule`` (default: all rules).

        With ``on_resolved=True`` a resolved message is queued for each group whose opening was sent.
        Returns how many groups ended. Never raises.
        """
        run_key = str(run or self.run_name)
        ended: list[tuple[tuple[str, str], _AlertGroup]] = []
        with self._lock:
            for key in list(self._groups):
                if key[0] == run_key and (rule is None or key[1] == rule):
                    ended.append((key, self._groups.pop(key)))
        for (run_id, rule_id), group in ended:
            if self.on_resolved and group.announced:
                self._enqueue({"run": run_id, "rule": rule_id, "severity": group.severity, "state": "resolved",
                               "step": group.last_step, "value": group.worst_value, "first_step": group.first_step,
                               "last_step": group.last_step, "count": group.count, "message": ""})
        return len(ended)

    def _offer_incident(self, data: Mapping[str, Any], state: str) -> bool:
        run = str(data.get("run") or self.run_name)
        inc_id = str(data.get("id"))
        key = (run, inc_id, state)
        severity = normalize_severity(data.get("severity"))
        with self._lock:
            if key in self._seen_incidents:
                self._counts.duplicates += 1
                return False
            _remember(self._seen_incidents, key, None)
            if state == "resolved":
                # the incident's alerts as a plain group (if any came that way) are over too
                self._groups.pop((run, str(data.get("rule") or "")), None)
                if not self.on_resolved or (run, inc_id) not in self._announced:
                    return False  # a person never told of the opening gets no "resolved" either
            elif SEVERITY_ORDER[severity] < SEVERITY_ORDER[self.min_severity]:
                self._counts.suppressed += 1
                self._counts.below_severity += 1
                return False
        step = data.get("last_step") if state == "resolved" else data.get("first_step")
        if step is None:
            step = data.get("step")
        event = {"run": run, "rule": data.get("rule"), "severity": severity, "state": state, "step": step,
                 "value": data.get("worst_value", data.get("value")), "first_step": data.get("first_step"),
                 "last_step": data.get("last_step"), "count": data.get("count"),
                 "threshold": data.get("threshold"), "message": data.get("message")}
        queued = self._enqueue(event)
        if queued and state == "open":
            with self._lock:
                _remember(self._announced, (run, inc_id), None)
        return queued

    def _offer_alert(self, data: Mapping[str, Any]) -> bool:
        run = str(data.get("run") or self.run_name)
        rule = str(data.get("rule") or "alert")
        severity = normalize_severity(data.get("severity"))
        try:
            step = int(data.get("step") or 0)
        except (TypeError, ValueError):
            step = 0
        value, threshold = data.get("value"), data.get("threshold")
        key = (run, rule)
        with self._lock:
            group = self._groups.get(key)
            if group is not None and abs(step - group.last_step) <= ALERT_GROUP_GAP_STEPS:
                group.count += 1
                group.last_step = max(group.last_step, step)
                if _worse(value, group.worst_value, threshold):
                    group.worst_value = value
                if SEVERITY_ORDER[severity] > SEVERITY_ORDER[group.severity]:
                    group.severity = severity  # an escalation within the group is not a new message
                self._counts.duplicates += 1
                return False
            group = _AlertGroup(first_step=step, last_step=step, worst_value=value, threshold=threshold,
                                severity=severity, message=str(data.get("message") or ""))
            _remember(self._groups, key, group)
            if SEVERITY_ORDER[severity] < SEVERITY_ORDER[self.min_severity]:
                self._counts.suppressed += 1
                self._counts.below_severity += 1
                return False
        event = {"run": run, "rule": rule, "severity": severity, "state": "open", "step": step, "value": value,
                 "threshold": threshold, "message": data.get("message"), "count": 1}
        queued = self._enqueue(event)
        if queued:
            group.announced = True
        return queued

    def _enqueue(self, event: dict[str, Any]) -> bool:
        """Rate limit, then hand the event to the sending thread without waiting."""
        with self._lock:
            if self._closed or os.getpid() != self._pid:
                self._counts.dropped += 1  # after close (or in a forked child) nothing is sent
                return False
            if not self._limiter.allow():
                self._counts.suppressed += 1
                self._counts.rate_limited += 1
                self._held_back += 1
                return False
            event["suppressed_before"] = self._held_back
            self._held_back = 0
            self._ensure_thread()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self._counts.dropped += 1
            self.guard.warn_once("notify: queue full", f"notify: the notification queue is full "
                                 f"({self._queue.maxsize} waiting; receivers are slow or down); "
                                 f"new messages are dropped and counted")
            return False
        return True

    def _ensure_thread(self) -> None:
        """Start the sending thread on first use (called with the lock held)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trainboard-notify", daemon=True)
            self._thread.start()
            atexit.register(_flush_at_exit, weakref.ref(self))

    # -- the sending thread --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            deadline = self._close_deadline
            if deadline is not None and time.monotonic() >= deadline:
                with self._lock:
                    self._counts.dropped += 1  # close() ran out of time before this one
                continue
            try:
                self._deliver(item)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any one bad message
                with self._lock:
                    self._counts.failed += 1
                self.guard.warn_once("notify: internal", f"notify: a message could not be sent "
                                     f"({type(exc).__name__}: {exc})")

    def _deliver(self, event: Mapping[str, Any]) -> None:
        msg = format_message(event, public_url=self.public_url,
                             suppressed_before=int(event.get("suppressed_before") or 0))
        for index, service in enumerate(self._services):
            ok, why = _send_one(service, msg)
            with self._lock:
                if ok:
                    self._counts.sent += 1
                else:
                    self._counts.failed += 1
            if not ok:
                scheme = url_scheme(self.urls[index])
                why = _mask(why, self.urls[index])
                self.guard.warn_once(f"notify: url {index}", f"notify: sending to notify URL #{index + 1} "
                                     f"({scheme}://...) failed{': ' + why if why else ''}; later failures "
                                     f"are counted, not logged")

    # -- results and shutdown ------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counts for the status file.

        ``sent``/``failed`` count deliveries (one message to one URL); ``dropped`` counts messages lost to
        a full queue, to ``close()`` running out of time, or submitted after close; ``suppressed`` counts
        messages held back on purpose: below ``min_severity`` (``below_severity``) or over the rate limit
        (``rate_limited``); ``pending`` is what waits in the queue now (0 after close: the rest is dropped).
        """
        with self._lock:
            c = self._counts
            return {"sent": c.sent, "failed": c.failed, "dropped": c.dropped, "suppressed": c.suppressed,
                    "rate_limited": c.rate_limited, "below_severity": c.below_severity,
                    "pending": 0 if self._closed else self._queue.qsize()}

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
        """Send what can be sent within ``timeout`` seconds, then stop; never waits longer, never raises.

        Messages still queued when the time is up are counted as dropped. A receiver that hangs keeps
        only the daemon thread busy (until its own send timeout); the caller returns on time.
        """
        try:
            timeout = max(0.0, float(timeout))
        except (TypeError, ValueError):
            timeout = DEFAULT_CLOSE_TIMEOUT_S
        end = time.monotonic() + timeout
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_deadline = end
            thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=max(0.0, end - time.monotonic()) or 0.001)
        except queue.Full:
            pass  # the thread is stuck behind a full queue; the deadline makes it drop the rest
        thread.join(max(0.0, end - time.monotonic()))
        if thread.is_alive():
            # still sending (a hanging receiver): what is queued will not go out in time
            left = sum(1 for item in _drain(self._queue) if item is not _STOP)
            with self._lock:
                self._counts.dropped += left
            try:
                self._queue.put_nowait(_STOP)  # let the thread end once its current send times out
            except queue.Full:
                pass

    def __enter__(self) -> "Notifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mask(text: str, url: str) -> str:
    """``text`` with the URL and its longer parts (tokens, passwords, webhook ids) replaced by ``***``,
    because apprise's messages quote the URL and warnings end up in shared logs."""
    text = text.replace(url, "***")
    for part in sorted(set(re.split(r"[/:@?&=#,]+", url.split("://", 1)[-1])), key=len, reverse=True):
        if len(part) >= 6:
            text = text.replace(part, "***")
    return text


def _drain(q: queue.Queue[object]) -> list[object]:
    items: list[object] = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def _remember(store: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    """Insert into a bounded de-duplication store, forgetting the oldest entries (lock held)."""
    store[key] = value
    store.move_to_end(key)
    while len(store) > MAX_TRACKED:
        store.popitem(last=False)


def _flush_at_exit(ref: "weakref.ReferenceType[Notifier]") -> None:
    notifier = ref()
    if notifier is not None:
        notifier.close(timeout=ATEXIT_FLUSH_S)


def _known_scheme(scheme: str) -> bool | str | None:
    """True/False whether apprise knows ``scheme``, ``"disabled"`` when it does but cannot run it here,
    None when this apprise version does not let us ask (instantiate() then decides)."""
    try:
        from apprise.manager_plugins import NotificationManager
    except ImportError:  # pragma: no cover - very old apprise
        return None
    try:
        manager = NotificationManager()
        if scheme not in manager:
            return False
        return True if getattr(manager[scheme], "enabled", True) else "disabled"
    except Exception:  # noqa: BLE001 - asking is a nicety; instantiate() is the real check
        return None


def _sync_asset() -> Any:
    """An apprise asset that sends on the calling thread (our daemon thread), one service at a time.

    apprise >= 2 otherwise runs each send on its shared ThreadPoolExecutor, whose non-daemon workers the
    interpreter joins at exit: a hung receiver could then delay the end of a training. On our daemon
    thread a send is bounded by the explicit connect/read timeouts and never holds up exit or close().
    """
    import apprise

    try:
        return apprise.AppriseAsset(async_mode=False, service_timeout=0)
    except Exception:  # noqa: BLE001 - apprise < 2 has no service_timeout (and no executor either)
        return apprise.AppriseAsset(async_mode=False)


def _send_one(service: Any, msg: Message) -> tuple[bool, str]:
    """Deliver one message to one apprise service; (ok, why it failed) with apprise's logs captured."""
    buf: list[str] = []
    token = _CAPTURE.set(buf)
    try:
        ok = bool(service.notify(body=msg.body, title=msg.title, notify_type=msg.notify_type))
    except Exception as exc:  # noqa: BLE001 - apprise or a plugin raising must count as a failure
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        _CAPTURE.reset(token)
    why = buf[-1] if buf else ("" if ok else "the service reported a failure")
    return ok, why[:300]


# ----------------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------------

def notifier_from_settings(notify: object = None, env: Mapping[str, str] | None = None,
                           **options: Any) -> Notifier | None:
    """The Notifier that ``notify=`` plus the ``TRAINBOARD_NOTIFY`` environment variable ask for, or None.

    Args:
        notify: ``None`` (only the environment), a URL string (several separated by commas/whitespace), a
            list of URL strings, an existing :class:`Notifier` (returned as is), or ``False`` (off, even
            when the environment sets URLs).
        env: the environment to read ``TRAINBOARD_NOTIFY`` from (default ``os.environ``).
        **options: passed to :class:`Notifier` (``min_severity``, ``on_resolved``, ``rate_limit_per_min``,
            ``public_url``, ``run_name``, ``send_timeout_s``, ``queue_size``, ``guard``).

    Returns:
        None when no URL is configured, or when apprise is not installed (one warning; training goes on).

    Raises:
        ValueError: a malformed setting (bad URL, unknown severity, negative rate ...), named in the message.
    """
    if isinstance(notify, Notifier):
        return notify
    if notify is False:
        return None
    env = os.environ if env is None else env
    urls = parse_notify_urls(notify, source="notify")
    for url in parse_notify_urls(env.get(ENV_VAR) or None, source=ENV_VAR):
        if url not in urls:
            urls.append(url)
    if not urls:
        return None
    try:
        import apprise  # noqa: F401
    except ImportError:
        guard = options.get("guard") or Guard(logger)
        guard.warn_once("notify: no apprise", f"notify: {len(urls)} notification URL(s) configured but the "
                        f"apprise package is not installed (pip install apprise); notifications are off")
        return None
    return Notifier(urls, **options)
