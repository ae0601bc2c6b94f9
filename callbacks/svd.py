"""SVD page: per-layer spectral metrics against the switch thresholds, live.

The browser ticks every second; :func:`update_svd` answers with ``PreventUpdate`` when neither the run's
spectral data nor the person's choices changed, and otherwise re-renders from :func:`svd_view`, a pure
function of the run's spectral data (unit-tested). Graphs have per-layer pattern-matching ids and a
``uirevision`` so a zoomed trend chart stays zoomed while data streams in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import dash
from dash import Dash, Input, Output, State
from dash.exceptions import PreventUpdate

from collectors.spectral import METRIC_NAMES, SwitchThresholds, criteria, trend_toward
from components import ids
from components.messages import build_not_collected, build_problem, build_waiting
from components.svd import (FeedItem, HeatCell, MetricGauge, TrendChart, TrendLine, build_alert_feed,
                            build_gauge_figure, build_graph, build_heatmap_figure, build_svd_layout,
                            build_trend_figure)
from services.context import catalog_for
from services.model import drop_rolled_back
from services.spectral_store import (LayerSeries, SpectralRunData, SpectralStore, attach_spectral_store,
                                     spectral_store_for)

DEFAULT_SHOWN_LAYERS = 4
"""Without a filter, gauges and trends show this many layers, the closest to a trigger first."""
FEED_LENGTH = 50
TREND_POINTS = 20
ANGLE_AXIS_MAX = math.pi / 2
NO_DATA_HINT = ("No spectral metrics in this run yet. Turn them on with MonitorCallback(spectral=True) or "
                "Monitor(spectral=True) (the demo: python -m collectors.demo --spectral); the first measurement "
                "comes at step svd_interval (20 by default).")


# ------------------------------------------------------------------------------------------ pure view
def distances(values: dict[str, float], t: SwitchThresholds) -> dict[str, float]:
    """Each metric's distance to its trigger in warn margins (≤ 0: triggered; NaN: unknown). Pure.

    Triggers: principal_alignment > principal_danger; minor_alignment > minor_safe; subspace_angle <
    angle_stable; reconstruction_error < recon_safe.
    """
    margin = t.warn_margin if t.warn_margin > 0 else 1e-9
    raw = {"principal_alignment": t.principal_danger - values["principal_alignment"],
           "minor_alignment": t.minor_safe - values["minor_alignment"],
           "subspace_angle": values["subspace_angle"] - t.angle_stable,
           "reconstruction_error": values["reconstruction_error"] - t.recon_safe}
    return {k: (math.nan if math.isnan(v) else v / margin) for k, v in raw.items()}


def urgency(values: dict[str, float], t: SwitchThresholds) -> float:
    """How close a layer is to any trigger: the smallest known distance (NaN-free; +inf when none known)."""
    d = [v for v in distances(values, t).values() if not math.isnan(v)]
    return min(d) if d else math.inf


def gauges_for(values: dict[str, float], t: SwitchThresholds) -> list[MetricGauge]:
    rec_max = 4 * t.recon_safe
    rec_val = values["reconstruction_error"]
    if math.isfinite(rec_val):
        rec_max = max(rec_max, rec_val * 1.1)
    return [MetricGauge("principal_alignment", values["principal_alignment"], t.principal_danger, True, False, 1.0),
            MetricGauge("minor_alignment", values["minor_alignment"], t.minor_safe, True, True, 1.0),
            MetricGauge("subspace_angle", values["subspace_angle"], t.angle_stable, False, True, ANGLE_AXIS_MAX),
            MetricGauge("reconstruction_error", rec_val, t.recon_safe, False, True, rec_max)]


def trend_chart(layer: str, s: LayerSeries, t: SwitchThresholds) -> TrendChart:
    """The trend chart data of one layer: series, thresholds, projections for angle and minor alignment."""
    steps = list(s.steps)
    lines: list[TrendLine] = []
    notes: list[str] = []
    thresholds = {"principal_alignment": t.principal_danger, "minor_alignment": t.minor_safe,
                  "subspace_angle": t.angle_stable, "reconstruction_error": t.recon_safe}
    for metric in METRIC_NAMES:
        vals = list(getattr(s, metric))
        line = TrendLine(metric, steps, [v if math.isfinite(v) else None for v in vals], thresholds[metric])
        watch = {"subspace_angle": (True, "angle", "<"), "minor_alignment": (False, "minor", ">"),
                 "principal_alignment": (False, "principal", ">")}.get(metric)
        if watch is not None and vals:
            decreasing, short, op = watch
            last = vals[-1]
            met = math.isfinite(last) and ((last < line.threshold) if decreasing else (last > line.threshold))
            tr = None if met else trend_toward(steps, vals, line.threshold, decreasing=decreasing,
                                               max_points=TREND_POINTS)
            if tr is not None and tr.steps_to_threshold is not None:
                line.projection = (steps[-1], tr.fitted_now, steps[-1] + tr.steps_to_threshold, line.threshold)
                line.estimate = f"{short} {op} {line.threshold:g} in ~{tr.steps_to_threshold:.0f} steps (R² {tr.r2:.2f})"
                notes.append(line.estimate)
        lines.append(line)
    if not notes:
        notes.append("no consistent trend toward a threshold (flat, noisy or fewer than 5 points)")
    return TrendChart(layer, lines, s.switches(), notes)


@dataclass
class SvdView:
    """Everything the SVD page shows for one run and layer selection."""

    layers: list[str]
    shown: list[str]
    thresholds: SwitchThresholds
    gauges: dict[str, list[MetricGauge]] = field(default_factory=dict)
    heat_layers: list[str] = field(default_factory=list)
    heat_cells: list[list[HeatCell]] = field(default_factory=list)
    trends: list[TrendChart] = field(default_factory=list)
    feed: list[FeedItem] = field(default_factory=list)
    summary: str = ""
    skipped: str = ""


def latest_values(s: LayerSeries) -> dict[str, float]:
    return {m: float(getattr(s, m)[-1]) for m in METRIC_NAMES}


def svd_view(data: SpectralRunData, selected: Sequence[str] | None, resumes: Sequence[Any] = ()) -> SvdView:
    """The page content for ``data`` and the layer filter ``selected`` (empty: the most urgent layers). Pure.
    ``resumes`` (the run's resume points) supersede the spectral alerts of rolled-back steps."""
    t = data.thresholds
    layers = sorted(name for name, s in data.layers.items() if len(s))
    latest = {name: latest_values(data.layers[name]) for name in layers}
    chosen = [x for x in (selected or []) if x in latest]
    if not chosen:
        # the closest to a trigger first; layers already LOW-RANK have nothing left to switch: last
        chosen = sorted(layers, key=lambda n: (bool(data.layers[n].low_rank[-1]), urgency(latest[n], t), n))
        chosen = chosen[:DEFAULT_SHOWN_LAYERS]
    view = SvdView(layers=layers, shown=chosen, thresholds=t)
    for name in chosen:
        view.gauges[name] = gauges_for(latest[name], t)
        view.trends.append(trend_chart(name, data.layers[name], t))
    heat = [x for x in (selected or []) if x in latest] or layers
    view.heat_layers = heat
    for name in heat:
        d = distances(latest[name], t)
        view.heat_cells.append([HeatCell(latest[name][m], d[m], m != "principal_alignment") for m in METRIC_NAMES])
    wanted = set(selected or []) & set(latest)
    for rec in reversed(drop_rolled_back(data.alerts, resumes) if resumes else data.alerts):
        layer = (rec.get("metadata") or {}).get("layer", "")
        if wanted and layer not in wanted:
            continue
        level = (rec.get("metadata") or {}).get("spectral_level") or rec.get("severity", "INFO")  # the monitor's word
        view.feed.append(FeedItem(str(level), rec.get("step", "?"), str(layer),
                                  str(rec.get("message", ""))))
        if len(view.feed) >= FEED_LENGTH:
            break
    step = data.latest_step()
    met = []
    for name in layers:
        s = data.layers[name]
        m = s.metrics_at(len(s) - 1, name)
        met.append(sum(c.met for c in criteria(m, t)))
    low = sum(1 for n in layers if data.layers[n].low_rank[-1])
    secs = [data.layers[n].latest.get("seconds") for n in layers]
    secs = [x for x in secs if isinstance(x, (int, float)) and math.isfinite(x)]
    cost = f" · last measurement {1000 * sum(secs):.1f} ms" if secs else ""
    view.summary = (f"{len(layers)} layer{'s' if len(layers) != 1 else ''} · step {step} · {low} LOW-RANK · "
                    f"thresholds: principal > {t.principal_danger:g}, minor > {t.minor_safe:g}, "
                    f"angle < {t.angle_stable:g}, error < {t.recon_safe:g} (margin {t.warn_margin:g}){cost}")
    parts = []
    if data.bad_lines:
        parts.append(f"{data.bad_lines} malformed line{'s' if data.bad_lines != 1 else ''} skipped in spectral.jsonl")
    if data.invalid_records:
        parts.append(f"{data.invalid_records} record{'s' if data.invalid_records != 1 else ''} without the four metrics skipped")
    view.skipped = "; ".join(parts)
    return view


# ------------------------------------------------------------------------------------------ register
def layout(**_query: Any) -> Any:
    return build_svd_layout()


def register(app: Dash) -> None:
    runs = catalog_for(app)
    store = spectral_store_for(app)
    if store is None:
        store = SpectralStore(runs)
        attach_spectral_store(app, store)
    dash.register_page("svd", path="/svd", name="SVD", title="Trainboard · SVD", layout=layout, order=50)

    @app.callback(
        Output(ids.SVD_MESSAGE, "children"), Output(ids.SVD_LAYER_FILTER, "options"), Output(ids.SVD_SUMMARY, "children"),
        Output(ids.SVD_GAUGES, "children"), Output(ids.SVD_HEATMAP, "figure"), Output(ids.SVD_TRENDS, "children"),
        Output(ids.SVD_ALERTS, "children"), Output(ids.SVD_SKIPPED, "children"), Output(ids.SVD_STATE, "data"),
        Input(ids.SHELL_TICK, "n_intervals"), Input(ids.SHELL_RUN_PICKER, "value"), Input(ids.SVD_LAYER_FILTER, "value"),
        State(ids.SVD_STATE, "data"),
    )
    def update_svd(_n, run_id, selected, prev_state):
        run = runs.get(run_id)
        if run is not None and not run.has_collector:
            key = {"run": run_id, "not_collected": True}
            if prev_state == key:
                raise PreventUpdate
            empty = build_heatmap_figure([], [], [], 0.05)
            return (build_not_collected("spectral metrics", run.label, NO_DATA_HINT), [], "", [], empty, [],
                    build_alert_feed([]), "", key)
        data = store.get(run_id)
        key = {"run": run_id, "version": None if data is None else data.version, "selected": list(selected or []),
               "resumes": len(getattr(run, "resumes", ()) or ()) if run is not None else 0,
               "has": bool(data is not None and data.layers)}
        if prev_state == key:
            raise PreventUpdate  # nothing new on disk, nothing chosen: no re-render
        if data is None or not data.layers:
            watched = str(runs.base) if data is None else str(data.paths.spectral)
            detail = NO_DATA_HINT if run_id is not None else "Start a training writing here, or pick a run above."
            message = build_waiting(watched, detail)
            if data is not None and data.exists and data.bad_lines:
                message = build_problem(f"{data.paths.spectral} holds no readable spectral record "
                                        f"({data.bad_lines} malformed lines)", "The page shows them as soon as "
                                        "complete records arrive.")
            empty = build_heatmap_figure([], [], [], 0.05)
            empty["layout"]["annotations"] = [{"text": "no spectral metrics yet", "xref": "paper", "yref": "paper",
                                               "x": 0.5, "y": 0.5, "showarrow": False}]
            return (message, [], "", [], empty, [], build_alert_feed([]), "", key)
        resumes = list(getattr(run, "resumes", ()) or ()) if run is not None else []
        view = svd_view(data, selected, resumes)
        t = view.thresholds
        gauges = [build_graph(ids.SVD_GAUGE_TYPE, name, build_gauge_figure(name, view.gauges[name], t.warn_margin),
                              "svd-gauges__graph") for name in view.shown]
        gauge_blocks = [dash.html.Div([dash.html.Div(name, className="svd-gauges__layer"), g], className="svd-gauges__row")
                        for name, g in zip(view.shown, gauges)]
        trends = [build_graph(ids.SVD_TREND_TYPE, c.layer, build_trend_figure(c), "svd-trends__graph")
                  for c in view.trends]
        options = [{"label": n, "value": n} for n in view.layers]
        heat = build_heatmap_figure(view.heat_layers, list(METRIC_NAMES), view.heat_cells, t.warn_margin)
        return (None, options, view.summary, gauge_blocks, heat, trends, build_alert_feed(view.feed), view.skipped, key)
