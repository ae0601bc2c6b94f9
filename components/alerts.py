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


def build_alerts_layout(slider_values: Mapping[str, float]) -> html.Div:
    sev_opts = [{"label": s.value, "value": s.value} for s in ANOMALY_SEVERITIES]
    cat_opts = [{"label": c.replace("_", " "), "value": c} for c in CATEGORIES]
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
                ], className="alerts__filters"),
                html.Div(id=ids.ALERTS_FEED, className="alert-feed"),
            ], className="panel alerts__main"),
            build_threshold_panel(slider_values),
        ], className="alerts__grid"),
        dcc.Store(id=ids.ALERTS_STATE, data=None),
    ], className="page page--alerts")


def build_summary(summary: Mapping[str, Any]) -> list[html.Div]:
    """Count badges: total, then one per severity in the shared colours."""
    out = [html.Div([html.Span("Alerts", className="badge__label"),
                     html.Span(str(summary.get("total_alerts", 0)), className="badge__value")], className="badge")]
    for sev in ANOMALY_SEVERITIES:
        n = summary.get("by_severity", {}).get(sev.value, 0)
        out.append(html.Div([html.Span(sev.value, className="badge__label"), html.Span(str(n), className="badge__value")],
                            className=f"badge {SEVERITY_STYLES[sev].css_class}"))
    cats = summary.get("by_category") or {}
    if cats:
        out.append(html.Div(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in cats.items()), className="badge__cats"))
    return out


def fmt_time(t: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if isinstance(t, (int, float)) else ""


def build_feed(alerts: Sequence[Mapping[str, Any]], total: int) -> html.Div | list:
    """The newest alerts first, each with its severity colour; or an honest empty state."""
    if not alerts:
        text = "No alerts match these filters." if total else "No alerts yet — the rules are watching."
        return html.Div(text, className="alert-feed__empty")
    rows = []
    for a in alerts:
        st = style_of(a.get("severity"))
        rows.append(html.Div([
            html.Span(str(a.get("severity", "?")), className=f"alert__sev {st.css_class}"),
            html.Span(f"step {a.get('step', '?')}", className="alert__step"),
            html.Span(str(a.get("rule", "")), className="alert__rule"),
            html.Span([str(a.get("message", "")),
                       *([html.Span(DETECTED_LABEL, className="alert__source")] if a.get("source") == DASHBOARD_SOURCE
                         else [])], className="alert__msg"),
            html.Span(fmt_time(a.get("time")), className="alert__time"),
        ], className="alert", style={"borderLeftColor": st.colour}))
    return rows


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
