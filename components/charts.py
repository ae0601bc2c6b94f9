"""Figure builders shared by every page: train/eval colours, hover with exact values, log-y, markers.

Pure: they take columns of numbers and return plotly figures (as dicts, which Dash serialises fastest).
Non-finite values become gaps in the line and red markers at the last finite level, with "NaN"/"Inf"
in the hover, so a browser never receives a NaN it cannot parse.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from components.format import hover_value

TRAIN_COLOUR = "#1f77b4"
EVAL_COLOUR = "#ff7f0e"
LR_COLOUR = "#2ca02c"
GRAD_COLOUR = "#9467bd"
NONFINITE_COLOUR = "#d62728"
SNAPSHOT_COLOUR = "#2ca02c"
RESUME_COLOUR = "#17becf"
CRASH_COLOUR = "#7f7f7f"
RESUME_TRACE = "resumed"
CRASH_TRACE = "crash (rolled back)"
HOVER_TEMPLATE = "step %{x}<br>%{customdata}<extra>%{fullData.name}</extra>"


@dataclass
class TracePoints:
    """The browser-safe form of one series chunk: finite values, gaps, and non-finite markers."""

    x: list[float] = field(default_factory=list)
    y: list[float | None] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    bad_x: list[float] = field(default_factory=list)
    bad_y: list[float] = field(default_factory=list)
    bad_text: list[str] = field(default_factory=list)


def to_trace_points(xs: Sequence[float], ys: Sequence[float], last_finite: float | None = None) -> TracePoints:
    """Split a series into plottable points and non-finite markers (placed at the last finite value)."""
    out = TracePoints()
    level = last_finite
    for x, y in zip(xs, ys):
        xv = int(x) if float(x).is_integer() else float(x)
        y = float(y)
        if math.isfinite(y):
            out.x.append(xv)
            out.y.append(y)
            out.text.append(hover_value(y))
            level = y
        else:
            out.x.append(xv)
            out.y.append(None)
            out.text.append(hover_value(y))
            out.bad_x.append(xv)
            out.bad_y.append(level if level is not None else 0.0)
            out.bad_text.append(hover_value(y))
    return out


@dataclass(frozen=True)
class TraceSpec:
    """How one series is drawn."""

    name: str
    colour: str
    markers: bool = False


def build_trace(spec: TraceSpec, pts: TracePoints) -> dict[str, Any]:
    # always SVG: a chart gets at most ~2 x MAX_POINTS points, and the page's plotly.js has no WebGL traces
    return {"type": "scatter", "name": spec.name, "x": pts.x, "y": pts.y,
            "customdata": pts.text, "hovertemplate": HOVER_TEMPLATE,
            "mode": "lines+markers" if spec.markers else "lines",
            "line": {"color": spec.colour, "width": 2}, "marker": {"color": spec.colour, "size": 6},
            "connectgaps": False}


def build_nonfinite_trace(name: str, pts: TracePoints) -> dict[str, Any]:
    return {"type": "scatter", "name": f"{name}: NaN/Inf", "x": pts.bad_x, "y": pts.bad_y,
            "customdata": pts.bad_text, "hovertemplate": HOVER_TEMPLATE, "mode": "markers",
            "marker": {"color": NONFINITE_COLOUR, "symbol": "x", "size": 11}, "showlegend": bool(pts.bad_x)}


def build_series_figure(specs: Sequence[TraceSpec], points: Sequence[TracePoints], *, title: str, y_title: str,
                        log_y: bool = False, uirevision: str = "", x_range: Sequence[float] | None = None,
                        note: str | None = None, y_format: str = "") -> dict[str, Any]:
    """A line chart of several series sharing the step axis, plus one non-finite marker trace per series.

    Trace order is fixed (series first, then their non-finite markers) so incremental updates can
    address traces by index.
    """
    data = [build_trace(s, p) for s, p in zip(specs, points)]
    data += [build_nonfinite_trace(s.name, p) for s, p in zip(specs, points)]
    xaxis: dict[str, Any] = {"title": {"text": "step"}, "showgrid": True, "gridcolor": "#eee"}
    if x_range is not None:
        xaxis["range"] = list(x_range)
        xaxis["autorange"] = False
    layout: dict[str, Any] = {
        "title": {"text": title, "x": 0.01, "font": {"size": 14}},
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "xaxis": xaxis,
        "yaxis": {"title": {"text": y_title}, "type": "log" if log_y else "linear", "showgrid": True,
                  "gridcolor": "#eee", "exponentformat": "e" if log_y else "none", "tickformat": y_format},
        "legend": {"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"},
        "hovermode": "x unified",
        "uirevision": uirevision,
        "plot_bgcolor": "white",
    }
    if note:
        layout["annotations"] = [{"text": note, "xref": "paper", "yref": "paper", "x": 0, "y": -0.22,
                                  "showarrow": False, "font": {"size": 11, "color": "#666"}, "xanchor": "left"}]
    return {"data": data, "layout": layout}


def add_markers(fig: dict[str, Any], name: str, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str],
                colour: str, symbol: str = "triangle-up") -> dict[str, Any]:
    """Append a marker trace (alerts, snapshots) to a figure built by :func:`build_series_figure`."""
    fig["data"].append({"type": "scatter", "name": name, "x": list(xs), "y": list(ys), "customdata": list(texts),
                        "hovertemplate": "step %{x}<br>%{customdata}<extra>" + name + "</extra>", "mode": "markers",
                        "marker": {"color": colour, "symbol": symbol, "size": 12, "line": {"width": 1, "color": "#333"}}})
    return fig


def build_resume_traces(resumed: tuple[Sequence[float], Sequence[float], Sequence[str]] | None,
                        crashed: tuple[Sequence[float], Sequence[float], Sequence[str]] | None) -> list[dict[str, Any]]:
    """Marker traces for where a training stopped (crashed) and where the resumed one took over (issue 11).

    Each argument is ``(xs, ys, hover texts)`` or None. The resume marker is a right-pointing triangle
    ("continues from here"), the crash an ``x``: the steps between them were rolled back.
    """
    traces = []
    for name, pts, colour, symbol in ((RESUME_TRACE, resumed, RESUME_COLOUR, "triangle-right"),
                                      (CRASH_TRACE, crashed, CRASH_COLOUR, "x-thin-open")):
        if not pts or not len(pts[0]):
            continue
        xs, ys, texts = pts
        traces.append({"type": "scatter", "mode": "markers", "name": name, "x": list(xs), "y": list(ys),
                       "customdata": list(texts), "hovertemplate": "step %{x}<br>%{customdata}<extra></extra>",
                       "marker": {"color": colour, "symbol": symbol, "size": 14,
                                  "line": {"width": 2, "color": colour if symbol.startswith("x") else "#333"}}})
    return traces


def empty_figure(title: str, message: str) -> dict[str, Any]:
    """A chart frame that says why it is empty instead of showing blank axes."""
    return {"data": [], "layout": {"title": {"text": title, "x": 0.01, "font": {"size": 14}},
                                   "xaxis": {"visible": False}, "yaxis": {"visible": False},
                                   "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
                                   "annotations": [{"text": message, "xref": "paper", "yref": "paper", "x": 0.5,
                                                    "y": 0.5, "showarrow": False, "font": {"size": 13, "color": "#666"}}]}}
