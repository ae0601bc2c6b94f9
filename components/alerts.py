"""Alerts page components, threshold sliders and the Overview's alert markers (pure builders, issue 3)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from dash import dcc, html

from components import ids
from components.severity import SEVERITY_STYLES, Severity, style_of
from services.validation import THRESHOLDS_BY_KEY, ThresholdRange

DASHBOARD_SOURCE = "dashboard"
"""``source`` of alerts the dashboard detected itself (services.detection writes it)."""
DETECTED_LABEL = "detected by the dashboard"

ANOMALY_SEVERITIES = (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW)
CATEGORIES = ("loss", "accuracy", "gradient", "learning_rate", "batch_size", "convergence", "reward", "snapshot")
MARKER_SYMBOL = "x-thin-open"
FEED_LIMIT = 200
"""Incidents listed on the page (the newest); the counters cover every incident."""


@dataclass(frozen=True)
class SliderDef:
    """One threshold slider: ``key`` is ``section.name`` in ``control/thresholds.json``. Its range is the
    one the server accepts (``services.validation``), so a slider can never offer a refused value."""

    key: str
    label: str
    step: float
    help: str

    @property
    def range(self) -> ThresholdRange:
        return THRESHOLDS_BY_KEY[self.key]

    @property
    def min(self) -> float:
        return self.range.lo

    @property
    def max(self) -> float:
        return self.range.hi

    @property
    def section(self) -> str:
        return self.range.section

    @property
    def name(self) -> str:
        return self.range.name


SLIDERS: tuple[SliderDef, ...] = (
    SliderDef("smart.loss_spike_threshold", "Loss spike (fraction above recent average)", 0.05,
              "0.3 = a loss 30 % above the average of the last 5 is a spike"),
    SliderDef("smart.accuracy_drop_threshold", "Accuracy drop (percentage points)", 1,
              "10 = accuracy 10 points below its recent average"),
    SliderDef("snapshots.min_steps_between_saves", "Min steps between anomaly snapshots", 50,
              "best-model snapshots are never blocked"),
    SliderDef("noise.k", "Noise gate (robust standard deviations)", 0.5,
              "6 = a spike must also clear the loss's own batch-to-batch spread 6 times over (on top of the "
              "fraction above)"),
    SliderDef("gradient.explosion_threshold", "Gradient explosion (norm)", 1,
              "critical above this norm, when also beyond the norms' own noise"),
    SliderDef("learning_rate.change_threshold", "LR sudden change (fraction of peak)", 0.05,
              "a rise above the schedule's own trend"),
    SliderDef("convergence.plateau_threshold", "Plateau (relative improvement)", 0.001,
              "below this improvement over the window = plateau"),
)


def slider_id(key: str) -> dict[str, str]:
    return {"type": ids.ALERTS_THRESHOLD_TYPE, "key": key}


def build_threshold_panel(values: Mapping[str, float]) -> html.Div:
    """The sliders with their current values (``values`` by ``section.name``)."""
    rows = []
    for s in SLIDERS:
        rows.append(html.Div([
            html.Div([html.Span(s.label, className="threshold__label"), html.Span(s.help, className="threshold__help")]),
            dcc.Slider(id=slider_id(s.key), min=s.min, max=s.max, step=s.step, value=values.get(s.key),
                       marks=None, updatemode="mouseup", allow_direct_input=True,
                       tooltip={"placement": "bottom", "always_visible": False}, className="threshold__slider"),
        ], className="threshold"))
    return html.Div([html.H3("Thresholds", className="panel__title"),
                     html.Div("Saved to control/thresholds.json; the running detector picks them up within a poll.",
                              className="panel__hint"),
                     html.Div(rows, className="thresholds"),
                     html.Div(id=ids.ALERTS_THRESHOLDS_MESSAGE, className="threshold__message", role="status")],
                    className="panel")


MUTE_CHOICES: tuple[tuple[str, int], ...] = (("15 min", 900), ("1 hour", 3600), ("4 hours", 4 * 3600),
                                              ("1 day", 86400), ("7 days", 7 * 86400))
"""How long the Mute button mutes a rule (label, seconds); the collector's limit is 30 days."""
DEFAULT_MUTE_SECONDS = 3600
FIRINGS_SHOWN = 50
"""Firings listed inside one expanded incident (the newest; the count says how many there were)."""


def build_alerts_layout(slider_values: Mapping[str, float]) -> html.Div:
    sev_opts = [{"label": s.value, "value": s.value} for s in ANOMALY_SEVERITIES]
    cat_opts = [{"label": c.replace("_", " "), "value": c} for c in CATEGORIES]
    mute_opts = [{"label": label, "value": secs} for label, secs in MUTE_CHOICES]
    return html.Div([
        html.Div(id=ids.ALERTS_MESSAGE),
        html.Div(id=ids.ALERTS_SUMMARY, className="alert-summary"),
        html.Div([
            html.Div([
                html.Div([
                    dcc.Dropdown(id=ids.ALERTS_SEVERITY_FILTER, options=sev_opts, value=[], multi=True,
                                 placeholder="all severities", className="alerts__filter"),
                    dcc.Dropdown(id=ids.ALERTS_CATEGORY_FILTER, options=cat_opts, value=[], multi=True,
                                 placeholder="all categories", className="alerts__filter"),
                    html.Label(["Mute for ",
                                dcc.Dropdown(id=ids.ALERTS_MUTE_DURATION, options=mute_opts, value=DEFAULT_MUTE_SECONDS,
                                             clearable=False, className="alerts__mute-duration")],
                               className="alerts__mute-label"),
                ], className="alerts__filters"),
                html.Div(id=ids.ALERTS_ACTION_MESSAGE, className="alerts__action-message", role="status"),
                html.Div(id=ids.ALERTS_MUTES, className="alerts__mutes"),
                html.H3("Incidents", className="panel__title"),
                html.Div(id=ids.ALERTS_FEED, className="alert-feed"),
                html.H3("Events", className="panel__title"),
                html.Div("New best model, plateau and spectral mode switches: information, never counted as alerts.",
                         className="panel__hint"),
                dcc.Graph(id=ids.ALERTS_EVENTS_GRAPH, figure=event_timeline_figure([]),
                          config={"displaylogo": False}, className="alerts__events"),
            ], className="panel alerts__main"),
            build_threshold_panel(slider_values),
        ], className="alerts__grid"),
        dcc.Store(id=ids.ALERTS_STATE, data=None),
        dcc.Store(id=ids.ALERTS_CONTROL_VERSION, data=0),
    ], className="page page--alerts")


def build_incident_summary(summary: Mapping[str, Any]) -> list[html.Div]:
    """Count badges: incidents in total and open, one per severity (incidents, not firings), then events."""
    out = [html.Div([html.Span("Incidents", className="badge__label"),
                     html.Span(str(summary.get("total_incidents", 0)), className="badge__value")], className="badge"),
           html.Div([html.Span("open", className="badge__label"),
                     html.Span(str(summary.get("open", 0)), className="badge__value")], className="badge")]
    for sev in ANOMALY_SEVERITIES:
        n = summary.get("by_severity", {}).get(sev.value, 0)
        out.append(html.Div([html.Span(sev.value, className="badge__label"), html.Span(str(n), className="badge__value")],
                            className=f"badge {SEVERITY_STYLES[sev].css_class}"))
    out.append(html.Div([html.Span("events", className="badge__label"),
                         html.Span(str(summary.get("events", 0)), className="badge__value")], className="badge badge--event"))
    cats = summary.get("by_category") or {}
    if cats:
        out.append(html.Div(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in cats.items()), className="badge__cats"))
    return out


def fmt_value(v: Any) -> str:
    """A value as a person reads it: ``nan``/``inf`` spelled out, 4 significant digits otherwise."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "–"
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Inf" if v > 0 else "-Inf"
    return f"{v:.4g}"


def fmt_until(until: float, now: float) -> str:
    """When a mute ends, as a clock time (a date when it is not today): it stays true between re-renders."""
    fmt = "%H:%M" if time.localtime(until)[:3] == time.localtime(now)[:3] else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.localtime(until))


def build_mutes(mutes: Mapping[str, float], now: float, can_act: bool) -> list[Any]:
    """The rules muted now, each with when its mute ends and an Unmute button."""
    if not mutes:
        return []
    items = [html.Span("Muted (no notifications, no snapshots):", className="alerts__mutes-label")]
    for rule, until in sorted(mutes.items()):
        items.append(html.Span([
            html.Span(rule, className="alerts__muted-rule"),
            html.Span(f" until {fmt_until(until, now)} ", className="alerts__muted-left"),
            html.Button("Unmute", id={"type": ids.INCIDENT_UNMUTE_TYPE, "rule": rule}, n_clicks=0,
                        className="button button--small", disabled=not can_act),
        ], className="alerts__muted"))
    return items


def _firing_row(f: Mapping[str, Any]) -> html.Tr:
    return html.Tr([html.Td(str(f.get("step", "?"))), html.Td(fmt_value(f.get("value"))),
                    html.Td(fmt_value(f.get("threshold"))), html.Td(str(f.get("message", "")))])


def build_incident(i: Any, *, muted: bool, can_act: bool, recover: Any = None) -> html.Details:
    """One incident: a summary line (severity, rule, steps, count, worst value, state, ack/mute buttons)
    that expands to its firings, newest first."""
    st = style_of(i.severity)
    span = f"step {i.first_step}" if i.last_step == i.first_step else f"steps {i.first_step}–{i.last_step}"
    state = "open" if i.is_open else f"resolved at step {i.resolved_step}"
    tags = []
    if i.acked:
        tags.append(html.Span("acknowledged", className="incident__tag incident__tag--acked"))
    if muted or i.muted:
        tags.append(html.Span("muted", className="incident__tag incident__tag--muted"))
    if any(f.get("source") == DASHBOARD_SOURCE for f in i.firings):
        tags.append(html.Span(DETECTED_LABEL, className="alert__source"))
    firings = list(reversed(i.firings))[:FIRINGS_SHOWN]
    more = len(i.firings) - len(firings)
    body: list[Any] = [html.Table([
        html.Thead(html.Tr([html.Th("step"), html.Th("value"), html.Th("threshold"), html.Th("message")])),
        html.Tbody([_firing_row(f) for f in firings])], className="incident__firings")] if firings else [
        html.Div("No firing records kept for this incident (older than the file's window).", className="panel__hint")]
    if more > 0:
        body.append(html.Div(f"… and {more} older firing(s)", className="panel__hint"))
    if recover is not None:  # the snapshot of this incident holds the weights from before it: Recover
        body.append(html.Div([html.H4("Recover", className="incident__recover-title"), recover],
                             className="incident__recover"))
    if i.count > len(i.firings):
        body.append(html.Div(f"{i.count} firings in all; repeats of a lasting condition are counted, not "
                             "written one per step.", className="panel__hint"))
    buttons = [
        html.Button("Acknowledged" if i.acked else "Acknowledge",
                    id={"type": ids.INCIDENT_ACK_TYPE, "incident": i.id}, n_clicks=0,
                    className="button button--small", disabled=i.acked or not can_act,
                    title="Stop notifications for this incident"),
        html.Button("Mute rule", id={"type": ids.INCIDENT_MUTE_TYPE, "rule": i.rule}, n_clicks=0,
                    className="button button--small", disabled=muted or not can_act,
                    title=f"No notifications and no snapshots from {i.rule} on this run for the chosen time"),
    ]
    return html.Details([
        html.Summary([
            html.Span(i.severity, className=f"alert__sev {st.css_class}"),
            html.Span(i.rule + (f" · {i.subject}" if i.subject else ""), className="alert__rule"),
            html.Span(span, className="alert__step"),
            html.Span(f"{i.count}×", className="incident__count", title="firings"),
            html.Span(f"worst {fmt_value(i.worst_value)}", className="incident__worst"),
            html.Span(state, className=f"incident__state incident__state--{'open' if i.is_open else 'resolved'}"),
            html.Span(fmt_time(i.opened_at), className="alert__time", title="opened at"),
            *tags,
            html.Span(i.message, className="alert__msg"),
            html.Span(buttons, className="incident__actions"),
        ], className="incident__summary"),
        *body,
    ], className="incident", id={"type": "incident", "incident": i.id}, style={"borderLeftColor": st.colour})


def build_incident_list(incidents: Sequence[Any], total: int, mutes: Mapping[str, float], can_act: bool,
                        limit: int = FEED_LIMIT, recover: Mapping[str, Any] | None = None) -> Any:
    """Incidents newest first, each expandable to its firings (and, with a saved last good state, its
    Recover panel, by incident id in ``recover``); or an honest empty state."""
    if not incidents:
        text = "No incidents match these filters." if total else "No incidents yet — the rules are watching."
        return html.Div(text, className="alert-feed__empty")
    rows: list[Any] = [build_incident(i, muted=i.rule in mutes, can_act=can_act, recover=(recover or {}).get(i.id))
                       for i in incidents[:limit]]
    if len(incidents) > limit:
        rows.append(html.Div(f"{len(incidents) - limit} older incident(s) not shown", className="panel__hint"))
    return rows


EVENT_COLOURS = {"best_model": "#2ca02c", "convergence_plateau": "#9467bd", "mode_switch": "#8c564b"}


def event_timeline_figure(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The events along the step axis, one row per event rule (plotly figure dict, pure)."""
    by_rule: dict[str, tuple[list[Any], list[str]]] = {}
    for e in events:
        step = e.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            continue
        xs, texts = by_rule.setdefault(str(e.get("rule", "event")), ([], []))
        xs.append(step)
        texts.append(str(e.get("message", "")))
    traces = [{"type": "scatter", "mode": "markers", "name": rule.replace("_", " "), "x": xs, "y": [rule] * len(xs),
               "customdata": texts, "hovertemplate": "step %{x}<br>%{customdata}<extra></extra>",
               "marker": {"symbol": "diamond", "size": 10, "color": EVENT_COLOURS.get(rule, "#7f7f7f")}}
              for rule, (xs, texts) in sorted(by_rule.items())]
    layout: dict[str, Any] = {"height": 90 + 30 * max(1, len(by_rule)), "margin": {"l": 140, "r": 10, "t": 10, "b": 30},
                              "showlegend": False, "xaxis": {"title": {"text": "step"}},
                              "yaxis": {"type": "category"}}
    if not traces:
        layout["annotations"] = [{"text": "no events yet", "showarrow": False, "xref": "paper", "yref": "paper",
                                  "x": 0.5, "y": 0.5}]
        layout["xaxis"]["visible"] = layout["yaxis"]["visible"] = False
    return {"data": traces, "layout": layout}


def build_event_marker_trace(points: tuple[list[float], list[float], list[str]]) -> list[dict[str, Any]]:
    """The Overview loss chart's event markers (one trace, legend-toggleable), or none."""
    xs, ys, texts = points
    if not xs:
        return []
    return [{"type": "scatter", "mode": "markers", "name": "events", "x": xs, "y": ys, "customdata": texts,
             "hovertemplate": "step %{x}<br>%{customdata}<extra></extra>",
             "marker": {"color": EVENT_COLOURS["best_model"], "symbol": "diamond-open", "size": 9}}]


def fmt_time(t: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if isinstance(t, (int, float)) else ""


def build_alert_marker_traces(points: Mapping[str, tuple[list[float], list[float], list[str]]]) -> list[dict[str, Any]]:
    """Plotly marker traces (one per severity, shared colours) for :func:`services.alerts.marker_points`.

    The Overview loss chart appends these after its own traces.
    """
    traces = []
    for sev in ANOMALY_SEVERITIES:
        if sev.value not in points:
            continue
        xs, ys, texts = points[sev.value]
        traces.append({"type": "scatter", "mode": "markers", "name": f"{sev.value} alerts", "x": xs, "y": ys,
                       "customdata": texts, "hovertemplate": "step %{x}<br>%{customdata}<extra></extra>",
                       "marker": {"color": SEVERITY_STYLES[sev].colour, "symbol": "triangle-down", "size": 12,
                                  "line": {"width": 1, "color": "#333"}}})
    return traces
