"""Components of the Runs page: the runs table, the overlay chart, config diff, results and checkpoints.

Pure factories: they take plain data (from :mod:`services.model`, via callbacks/runs.py) and return
Dash components or plotly figure dicts. No file access here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from dash import dash_table, dcc, html

from components import ids
from components.charts import HOVER_TEMPLATE, NONFINITE_COLOUR, empty_figure, to_trace_points
from components.format import DASH, fmt_int, fmt_sig

RUN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
               "#bcbd22", "#7f7f7f")
"""One colour per compared run; train is a solid line, eval dashed with markers, in the run's colour."""
SPLIT_DASH = {"train": "solid", "eval": "dash"}
ALIGN_STEP = "step"
ALIGN_WALL = "wall"
ALIGN_OPTIONS = ({"label": " step", "value": ALIGN_STEP}, {"label": " wall time (since run start)", "value": ALIGN_WALL})
STATE_CLASSES = {"training": "state--live", "evaluating": "state--live", "finished": "state--good",
                 "crashed": "state--bad", "stale": "state--warn", "stopped": "state--idle",
                 "stalled": "state--bad"}
TABLE_COLUMNS = (("name", "Run"), ("kind", "Kind"), ("state", "State"), ("last_step", "Last step"),
                 ("best_eval_loss", "Best eval loss"), ("duration", "Duration"), ("alerts", "Alerts"),
                 ("snapshots", "Snapshots"), ("checkpoints", "Checkpoints"), ("updated", "Updated"))


@dataclass
class CompareRun:
    """One run's data for the overlay chart: its name and ``{"train/loss": (steps, values, walls)}``."""

    run_id: str
    name: str
    series: dict[str, tuple[list[int], list[float], list[float | None]]] = field(default_factory=dict)


def fmt_duration(seconds: float | None) -> str:
    """``42 s``, ``12 min``, ``3.4 h``, or a dash."""
    if seconds is None or seconds != seconds or seconds < 0:
        return DASH
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


RUNS_PAGE_SIZE = 50
"""Rows drawn at once: a folder of 2,000 runs draws one page (sorting still covers every row). The table's
first draw grows with its rows (100 rows took ~0.3 s more of the browser's main thread here than 50)."""


def build_runs_table(rows: list[dict[str, Any]], selected: Sequence[str]) -> dash_table.DataTable:
    """The list of runs, one selectable row each (row id = run id)."""
    return dash_table.DataTable(
        id=ids.RUNS_TABLE, data=rows, columns=[{"name": label, "id": key} for key, label in TABLE_COLUMNS],
        row_selectable="multi", selected_row_ids=list(selected), sort_action="native", page_action="native",
        page_size=RUNS_PAGE_SIZE,
        style_table={"overflowX": "auto"}, style_cell={"textAlign": "left", "padding": "6px 10px",
                                                        "fontFamily": "inherit", "fontSize": "13px",
                                                        "maxWidth": "320px", "whiteSpace": "normal"},
        style_header={"fontWeight": "600", "backgroundColor": "#eef0f4"},
        style_data_conditional=[
            {"if": {"filter_query": '{state} = "crashed"', "column_id": "state"}, "color": "#d62728", "fontWeight": "600"},
            {"if": {"filter_query": '{state} = "finished"', "column_id": "state"}, "color": "#2ca02c"},
            {"if": {"filter_query": '{state} = "training"', "column_id": "state"}, "color": "#1f77b4", "fontWeight": "600"},
            {"if": {"filter_query": '{state} = "stale"', "column_id": "state"}, "color": "#a15c00"},
            {"if": {"filter_query": '{state} = "stalled"', "column_id": "state"}, "color": "#d62728", "fontWeight": "600"},
        ],
    )


def build_runs_layout(rows: Sequence[dict[str, Any]] = (), message: Any = None,
                      table_state: str | None = None) -> html.Div:
    """The Runs page: message, runs table, and the comparison area filled by the callbacks. ``rows``,
    ``message`` and ``table_state`` (the listing's fingerprint) let the page arrive with its table filled."""
    return html.Div([
        html.Div(message, id=ids.RUNS_MESSAGE),
        html.Div([html.H2("Runs", className="section__title"),
                  html.Div(build_runs_table(list(rows), []), className="runs__table")], className="section"),
        dcc.Store(id=ids.RUNS_TABLE_STATE, data=table_state),
        dcc.Store(id=ids.RUNS_COMPARE_STATE, data=None),
        html.Div(id=ids.RUNS_COMPARE_HINT, className="runs__hint"),
        html.Div([
            html.Div([
                html.Label("Metric", htmlFor=ids.RUNS_METRIC, className="runs__label"),
                dcc.Dropdown(id=ids.RUNS_METRIC, options=[{"label": "loss", "value": "loss"}], value="loss", clearable=False, className="runs__metric"),
                dcc.RadioItems(id=ids.RUNS_ALIGN, options=list(ALIGN_OPTIONS), value=ALIGN_STEP, inline=True,
                               className="runs__align"),
                dcc.Checklist(id=ids.RUNS_LOG_Y, options=[{"label": " log-scale", "value": "log"}], value=[],
                              className="runs__log"),
                html.Button("Download CSV", id=ids.RUNS_CSV_BUTTON, n_clicks=0, className="button"),
                dcc.Download(id=ids.RUNS_CSV_DOWNLOAD),
            ], className="runs__controls"),
            html.Div(id=ids.RUNS_GRAPH_BOX, className="chart"),
            html.Div(id=ids.RUNS_GRAPH_NOTE, className="skipped"),
            html.Div([html.H3("Config differences", className="section__subtitle"),
                      html.Div(id=ids.RUNS_CONFIG_DIFF)], className="section"),
            html.Div([html.H3("Results", className="section__subtitle"), html.Div(id=ids.RUNS_RESULTS)],
                     className="section"),
        ], id=ids.RUNS_COMPARE, className="runs__compare"),
        html.Div(id=ids.RUNS_CHECKPOINTS, className="runs__checkpoints"),
    ], className="page page--runs")


# ------------------------------------------------------------------------------------------ chart
GRAPH_CONFIG = {"displaylogo": False, "responsive": True,
                "toImageButtonOptions": {"format": "png", "filename": "trainboard-runs", "scale": 2}}


def build_compare_graph(figure: dict[str, Any]) -> dcc.Graph:
    """The overlay chart. Put on the page only once runs are compared: a ``dcc.Graph`` makes the browser
    load plotly.js (~4.7 MB to parse), which would otherwise delay the runs table of every Runs page open."""
    return dcc.Graph(id=ids.RUNS_GRAPH, figure=figure, config=GRAPH_CONFIG, className="chart__graph runs__graph")


def build_compare_figure(runs: Sequence[CompareRun], tag: str, align: str, log_y: bool,
                         uirevision: str) -> tuple[dict[str, Any], list[str]]:
    """Train and eval curves of ``tag`` for every run, overlaid, by step or by seconds since each run's start.

    Returns the figure and notes (runs left out because they have no such metric or no wall times).
    """
    data: list[dict[str, Any]] = []
    notes: list[str] = []
    for i, run in enumerate(runs):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        drawn = False
        for split in ("train", "eval"):
            s = run.series.get(f"{split}/{tag}")
            if not s or not s[0]:
                continue
            steps, values, walls = s
            if align == ALIGN_WALL:
                start = run_start(run)
                if start is None or any(w is None for w in walls):
                    continue
                xs: list[float] = [float(w) - start for w in walls]  # type: ignore[arg-type]
            else:
                xs = [float(x) for x in steps]
            pts = to_trace_points(xs, values)
            eval_ = split == "eval"
            data.append({"type": "scatter", "name": f"{run.name} · {split}", "x": pts.x, "y": pts.y,
                         "customdata": pts.text, "hovertemplate": HOVER_TEMPLATE.replace("step", "x" if align == ALIGN_WALL else "step"),
                         "mode": "lines+markers" if eval_ else "lines", "connectgaps": False,
                         "line": {"color": colour, "width": 2, "dash": SPLIT_DASH[split]},
                         "marker": {"color": colour, "size": 6}, "legendgroup": run.run_id})
            if pts.bad_x:
                data.append({"type": "scatter", "name": f"{run.name} · {split}: NaN/Inf", "x": pts.bad_x, "y": pts.bad_y,
                             "customdata": pts.bad_text, "hovertemplate": HOVER_TEMPLATE, "mode": "markers",
                             "marker": {"color": NONFINITE_COLOUR, "symbol": "x", "size": 11}, "legendgroup": run.run_id})
            drawn = True
        if not drawn:
            has_metric = any(k.endswith(f"/{tag}") for k in run.series)
            notes.append(f"{run.name}: no wall times recorded (plain Trainer log history); compare by step"
                         if align == ALIGN_WALL and has_metric else f"{run.name}: no '{tag}' logged")
    if not data:
        return empty_figure(f"{tag} by {'wall time' if align == ALIGN_WALL else 'step'}",
                            "no values of this metric in the selected runs"), notes
    x_title = "seconds since run start" if align == ALIGN_WALL else "step"
    layout = {"title": {"text": f"{tag}: train (solid) and eval (dashed)", "x": 0.01, "font": {"size": 14}},
              "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
              "xaxis": {"title": {"text": x_title}, "showgrid": True, "gridcolor": "#eee"},
              "yaxis": {"title": {"text": tag}, "type": "log" if log_y else "linear", "showgrid": True,
                        "gridcolor": "#eee", "exponentformat": "e" if log_y else "none"},
              "legend": {"orientation": "h", "y": 1.14, "x": 1, "xanchor": "right"},
              "hovermode": "closest", "uirevision": uirevision, "plot_bgcolor": "white"}
    return {"data": data, "layout": layout}, notes


def run_start(run: CompareRun) -> float | None:
    """Earliest wall time of any series of the run (the zero of the wall-time axis)."""
    walls = [w for s in run.series.values() for w in s[2] if w is not None]
    return min(walls) if walls else None


# ------------------------------------------------------------------------------------------ tables
def build_table(header: Sequence[str], rows: Sequence[Sequence[Any]], class_name: str = "table",
                first_col_class: str = "table__key") -> html.Table:
    return html.Table([
        html.Thead(html.Tr([html.Th(h) for h in header])),
        html.Tbody([html.Tr([html.Td(c, className=first_col_class if j == 0 else None) for j, c in enumerate(r)])
                    for r in rows]),
    ], className=class_name)


def build_config_diff(names: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> html.Div:
    """Only the keys whose values differ between the runs; says so when none differ."""
    if not rows:
        return html.Div("The selected runs have the same configuration (or none recorded).", className="runs__empty")
    return html.Div(build_table(["key", *names], [(k, *vals) for k, vals in rows], "table table--diff"),
                    className="table__wrap")


def build_results_table(names: Sequence[str], metrics: Sequence[str], values: Sequence[Sequence[Any]]) -> html.Div:
    """One row per metric, one column per run (numbers with 4 significant digits)."""
    if not metrics:
        return html.Div("No results recorded for the selected runs.", className="runs__empty")
    rows = [(m, *[fmt_cell(v) for v in vals]) for m, vals in zip(metrics, values)]
    return html.Div(build_table(["metric", *names], rows, "table table--results"), className="table__wrap")


def fmt_cell(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return DASH if v is None else str(v)
    if isinstance(v, int):
        return fmt_int(v)
    if isinstance(v, float):
        return fmt_sig(v)
    return str(v)


def build_checkpoints_panel(name: str, rows: Sequence[Mapping[str, Any]]) -> html.Div:
    """One run's checkpoints: step, size, time, latest/best badges and the command to resume from each."""
    if not rows:
        body: Any = html.Div("No checkpoints in this run.", className="runs__empty")
    else:
        trs = []
        for r in rows:
            badges = [html.Span("latest", className="ckpt-badge ckpt-badge--latest")] if r.get("is_latest") else []
            if r.get("is_best"):
                badges.append(html.Span("best", className="ckpt-badge ckpt-badge--best"))
            trs.append(html.Tr([html.Td(fmt_int(r["step"])), html.Td(r["size"]), html.Td(r["time"]), html.Td(badges),
                                html.Td(html.Code(r["resume"], className="runs__command"))]))
        body = html.Div(html.Table([html.Thead(html.Tr([html.Th(h) for h in ("step", "size", "saved", "", "resume with")])),
                                    html.Tbody(trs)], className="table table--checkpoints"), className="table__wrap")
    return html.Div([html.H3(f"Checkpoints · {name}", className="section__subtitle"), body], className="section")
