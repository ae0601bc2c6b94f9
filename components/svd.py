"""SVD page components: per-layer gauges, the layers × metrics heatmap, trend charts and the alert feed.

Pure factories (no file access): they take plain numbers and return plotly figures (dicts) or Dash
components. Colours: red and orange are the shared CRITICAL and WARNING colours (a trigger reached, a
trigger within the warning margin); green marks a met switch criterion (or a safe clobbering distance).
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import plotly.graph_objects as go
from dash import dcc, html

from components import ids
from components.format import DASH
from components.severity import Severity, style_of

CRITICAL_COLOUR = style_of(Severity.CRITICAL).colour
WARNING_COLOUR = style_of(Severity.WARNING).colour
MET_COLOUR = "#b7e4b0"
FAR_COLOUR = "#eef0f4"
METRIC_COLOURS = {"principal_alignment": "#d62728", "minor_alignment": "#2ca02c", "subspace_angle": "#1f77b4",
                  "reconstruction_error": "#9467bd"}
METRIC_LABELS = {"principal_alignment": "principal alignment", "minor_alignment": "minor alignment",
                 "subspace_angle": "subspace angle (rad)", "reconstruction_error": "reconstruction error"}
GRAPH_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True)
class MetricGauge:
    """One gauge: a metric's value, its trigger and which side of it triggers."""

    metric: str
    value: float
    threshold: float
    trigger_above: bool
    """True: the trigger is value > threshold (principal clobbering, minor safe)."""
    good_when_triggered: bool
    """True for the optimal-condition criteria (met = green); False for clobbering (red)."""
    axis_max: float


def gauge_bands(g: MetricGauge, margin: float) -> list[dict[str, Any]]:
    """The coloured bands of a gauge axis: beyond the trigger, within the margin, and far (pure)."""
    t, top = g.threshold, g.axis_max
    hit = MET_COLOUR if g.good_when_triggered else CRITICAL_COLOUR
    if g.trigger_above:
        return [{"range": [0, max(0.0, t - margin)], "color": FAR_COLOUR},
                {"range": [max(0.0, t - margin), t], "color": WARNING_COLOUR},
                {"range": [t, top], "color": hit}]
    return [{"range": [0, t], "color": hit}, {"range": [t, min(top, t + margin)], "color": WARNING_COLOUR},
            {"range": [min(top, t + margin), top], "color": FAR_COLOUR}]


def build_gauge_figure(layer: str, gauges: Sequence[MetricGauge], margin: float) -> dict[str, Any]:
    """One row of four plotly Indicator gauges for a layer (a NaN value shows as an empty gauge)."""
    fig = go.Figure()
    n = len(gauges)
    for i, g in enumerate(gauges):
        finite = isinstance(g.value, (int, float)) and math.isfinite(g.value)
        fig.add_trace(go.Indicator(
            mode="gauge+number", value=g.value if finite else None,
            number={"valueformat": ".4f" if g.metric == "reconstruction_error" else ".3f", "font": {"size": 20}},
            title={"text": METRIC_LABELS[g.metric] + f"<br><span style='font-size:11px;color:#667'>"
                           f"trigger {'>' if g.trigger_above else '<'} {g.threshold:g}</span>", "font": {"size": 13}},
            domain={"x": [i / n + 0.02, (i + 1) / n - 0.02], "y": [0, 1]},
            gauge={"axis": {"range": [0, g.axis_max]}, "bar": {"color": "#1d2330", "thickness": 0.25},
                   "steps": gauge_bands(g, margin),
                   "threshold": {"line": {"color": "#1d2330", "width": 3}, "thickness": 0.9, "value": g.threshold}}))
    fig.update_layout(margin={"l": 25, "r": 25, "t": 62, "b": 8}, height=200, paper_bgcolor="white",
                      uirevision=layer)
    return fig.to_dict()


class HeatClass(int, enum.Enum):
    """Heatmap colour classes, by distance to a metric's trigger."""

    CLOBBERING = 0
    NEAR = 1
    FAR = 2
    MET = 3


HEAT_COLOURS = {HeatClass.CLOBBERING: CRITICAL_COLOUR, HeatClass.NEAR: WARNING_COLOUR, HeatClass.FAR: "#c9d6ea",
                HeatClass.MET: "#7cc47f"}
HEAT_LABELS = {HeatClass.CLOBBERING: "clobbering", HeatClass.NEAR: "within margin", HeatClass.FAR: "far",
               HeatClass.MET: "criterion met"}


@dataclass
class HeatCell:
    """One heatmap cell: the value and its distance to the trigger in warn margins (≤ 0: reached; NaN: unknown)."""

    value: float
    distance: float
    good_when_reached: bool = True
    """False for principal alignment, whose trigger (clobbering) is the danger."""

    @property
    def heat_class(self) -> HeatClass | None:
        if math.isnan(self.distance):
            return None
        if self.distance <= 0:
            return HeatClass.MET if self.good_when_reached else HeatClass.CLOBBERING
        return HeatClass.NEAR if self.distance <= 1 else HeatClass.FAR


def build_heatmap_figure(layers: Sequence[str], metrics: Sequence[str], cells: Sequence[Sequence[HeatCell]],
                         margin: float) -> dict[str, Any]:
    """Layers × metrics coloured by distance to each metric's trigger: reached (red for clobbering, green for
    a met switch criterion), within the warning margin (orange) or further (blue-grey); the value is the text."""
    z = [[None if c.heat_class is None else int(c.heat_class) for c in row] for row in cells]
    text = [[DASH if math.isnan(c.value) else f"{c.value:.3g}" for c in row] for row in cells]
    hover = [[("unknown" if math.isnan(c.distance) else
               f"{HEAT_LABELS[c.heat_class]}: {c.distance * margin:+.4f} from the trigger") for c in row] for row in cells]
    n = len(HeatClass)
    scale: list[list[Any]] = []
    for cls in HeatClass:  # a discrete scale: each class owns an equal slice
        scale += [[int(cls) / n, HEAT_COLOURS[cls]], [(int(cls) + 1) / n, HEAT_COLOURS[cls]]]
    trace = {"type": "heatmap", "x": [METRIC_LABELS[m] for m in metrics], "y": list(layers), "z": z, "zmin": -0.5,
             "zmax": n - 0.5, "colorscale": scale, "text": text, "texttemplate": "%{text}", "customdata": hover,
             "hovertemplate": "%{y}<br>%{x} = %{text}<br>%{customdata}<extra></extra>", "xgap": 2, "ygap": 2,
             "colorbar": {"tickvals": [int(c) for c in HeatClass], "ticktext": [HEAT_LABELS[c] for c in HeatClass],
                          "len": 1.0, "thickness": 14}}
    height = max(200, 80 + 34 * len(layers))
    return {"data": [trace], "layout": {"title": {"text": "Distance to switch triggers", "x": 0.01, "font": {"size": 14}},
                                        "margin": {"l": 220, "r": 20, "t": 40, "b": 40}, "height": height,
                                        "yaxis": {"autorange": "reversed", "automargin": True},
                                        "plot_bgcolor": "white", "uirevision": "heatmap"}}


@dataclass
class TrendLine:
    """One metric's series and, when there is a consistent trend, its projection to the threshold."""

    metric: str
    steps: list[float]
    values: list[float | None]
    threshold: float
    projection: tuple[float, float, float, float] | None = None
    """(step now, value now, step at threshold, threshold) of the fitted line, or None."""
    estimate: str | None = None


@dataclass
class TrendChart:
    layer: str
    lines: list[TrendLine]
    switches: list[tuple[float, str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def build_trend_figure(chart: TrendChart) -> dict[str, Any]:
    """A layer's metrics over steps with dashed threshold lines, dotted projections to the threshold and
    mode-switch markers; reconstruction error uses the right axis."""
    data: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for line in chart.lines:
        colour = METRIC_COLOURS[line.metric]
        axis = "y2" if line.metric == "reconstruction_error" else "y"
        data.append({"type": "scatter", "mode": "lines+markers", "name": METRIC_LABELS[line.metric], "x": line.steps,
                     "y": line.values, "yaxis": axis, "line": {"color": colour, "width": 2}, "marker": {"size": 5},
                     "hovertemplate": "step %{x}<br>%{y:.4f}<extra>" + METRIC_LABELS[line.metric] + "</extra>",
                     "connectgaps": False})
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": axis, "y0": line.threshold,
                       "y1": line.threshold, "line": {"color": colour, "width": 1, "dash": "dash"}})
        if line.projection is not None:
            x0, y0, x1, y1 = line.projection
            data.append({"type": "scatter", "mode": "lines", "name": f"{METRIC_LABELS[line.metric]} trend",
                         "x": [x0, x1], "y": [y0, y1], "yaxis": axis, "showlegend": False,
                         "line": {"color": colour, "width": 2, "dash": "dot"},
                         "hovertemplate": "step %{x:.0f}<br>%{y:.4f}<extra>projection</extra>"})
    for step, mode, r in chart.switches:
        shapes.append({"type": "line", "xref": "x", "x0": step, "x1": step, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"color": "#1d2330", "width": 2, "dash": "dashdot"}})
        r_text = "" if r is None or (isinstance(r, float) and math.isnan(r)) else f" r={int(r)}"
        annotations.append({"x": step, "xref": "x", "y": 0.98, "yref": "paper", "text": f"→ {mode}{r_text}",
                            "showarrow": False, "xanchor": "left", "yanchor": "top", "font": {"size": 11},
                            "bgcolor": "rgba(255,255,255,0.85)"})
    note = " · ".join(chart.notes)
    if note:
        annotations.append({"text": note, "xref": "paper", "yref": "paper", "x": 0, "y": -0.3, "showarrow": False,
                            "xanchor": "left", "font": {"size": 11, "color": "#444"}})
    return {"data": data, "layout": {
        "title": {"text": chart.layer, "x": 0.01, "font": {"size": 13}}, "height": 300,
        "margin": {"l": 55, "r": 60, "t": 40, "b": 70}, "plot_bgcolor": "white", "uirevision": chart.layer,
        "xaxis": {"title": {"text": "step"}, "gridcolor": "#eee"},
        "yaxis": {"title": {"text": "alignment / angle (rad)"}, "gridcolor": "#eee", "rangemode": "tozero"},
        "yaxis2": {"title": {"text": "reconstruction error"}, "overlaying": "y", "side": "right", "rangemode": "tozero",
                   "showgrid": False, "tickformat": ".3f"},
        "legend": {"orientation": "h", "y": 1.18, "x": 1, "xanchor": "right", "font": {"size": 11}},
        "hovermode": "x unified", "shapes": shapes, "annotations": annotations}}


@dataclass(frozen=True)
class FeedItem:
    severity: str
    step: Any
    layer: str
    message: str


def build_alert_feed(items: Sequence[FeedItem], empty_text: str = "No spectral alerts yet.") -> list[Any]:
    """The spectral alert feed, newest first, with the shared severity colours."""
    if not items:
        return [html.Div(empty_text, className="svd-feed__empty")]
    out = []
    for it in items:
        st = style_of(it.severity)
        out.append(html.Div([
            html.Span(str(it.severity).upper(), className=f"svd-feed__badge {st.css_class}",
                      style={"backgroundColor": st.colour}),
            html.Span(f"step {it.step}", className="svd-feed__step"),
            html.Span(it.layer, className="svd-feed__layer"),
            html.Span(it.message, className="svd-feed__message"),
        ], className="svd-feed__item"))
    return out


def build_graph(kind: str, layer: str, figure: dict[str, Any], class_name: str) -> dcc.Graph:
    """A graph with a pattern-matching id per layer, so live updates reuse it (zoom is kept)."""
    return dcc.Graph(id={"type": kind, "layer": layer}, figure=figure, config=GRAPH_CONFIG, className=class_name)


def build_svd_layout() -> html.Div:
    """The SVD page: message, layer filter, summary line, gauges, heatmap, trends and the alert feed."""
    return html.Div([
        html.Div(id=ids.SVD_MESSAGE),
        html.Div([
            html.Label("Layers", htmlFor=ids.SVD_LAYER_FILTER, className="svd-filter__label"),
            dcc.Dropdown(id=ids.SVD_LAYER_FILTER, options=[], value=[], multi=True,
                         placeholder="the most urgent layers (pick layers to choose)", className="svd-filter__dropdown",
                         persistence=True, persistence_type="session"),
            html.Span(id=ids.SVD_SUMMARY, className="svd-filter__summary"),
        ], className="svd-filter"),
        dcc.Store(id=ids.SVD_STATE, data=None),
        html.Div([html.H3("Current metrics", className="svd-section__title"),
                  html.Div(id=ids.SVD_GAUGES, className="svd-gauges")], className="svd-section"),
        html.Div(dcc.Graph(id=ids.SVD_HEATMAP, config=GRAPH_CONFIG, className="svd-heatmap__graph"),
                 className="svd-section"),
        html.Div([
            html.Div([html.H3("Trends and time to threshold", className="svd-section__title"),
                      html.Div(id=ids.SVD_TRENDS, className="svd-trends")], className="svd-section svd-section--trends"),
            html.Div([html.H3("Spectral alerts", className="svd-section__title"),
                      html.Div(id=ids.SVD_ALERTS, className="svd-feed")], className="svd-section svd-section--feed"),
        ], className="svd-columns"),
        html.Div(id=ids.SVD_SKIPPED, className="skipped"),
    ], className="page page--svd")
