"""Runs page: every run under the base dir (Trainboard, experiment, Hugging Face, TensorBoard), compared.

The browser ticks every second. The runs table re-renders only when some run's row may have changed (the
fingerprint of :meth:`services.catalog.RunCatalog.listing`, which reads each run not opened yet from its status
and the tail of its log, never its series), and the comparison only when a selected run changed or a control
moved, so an idle page costs a digest check (with file events) or a few ``stat`` calls per run (polling). Discovery and reading live in
:mod:`services.catalog` (the same catalog every page uses); the functions here turn their data into rows and figures and are unit-tested.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from datetime import datetime
from typing import Any, Mapping, Sequence

import dash
from dash import Dash, Input, Output, State, dcc, no_update
from dash.exceptions import PreventUpdate

from components import ids
from components.format import DASH, fmt_ago, fmt_int, fmt_sig
from components.layout import TABLE_CHUNKS
from components.messages import build_problem, build_waiting
from components.runs import (CompareRun, build_checkpoints_panel, build_compare_figure, build_compare_graph,
                             build_config_diff,
                             build_results_table, build_runs_layout, fmt_duration, run_start)
from services.context import catalog_for
from services.model import CheckpointRow, Run, RunSummary

DEFAULT_METRIC = "loss"


# ------------------------------------------------------------------------------------------ pure
def table_rows(summaries: Sequence[RunSummary], now: float) -> list[dict[str, Any]]:
    """Rows of the runs table (strings with units), ``id`` = run id for selection."""
    return [{"id": s.run_id, "name": s.name, "kind": s.kind, "state": s.state,
             "last_step": fmt_int(s.last_step),
             "best_eval_loss": ("≤ " if s.best_eval_partial else "") + fmt_sig(s.best_eval_loss),
             "duration": fmt_duration(s.duration_s), "alerts": s.alert_count, "snapshots": s.snapshot_count,
             "checkpoints": s.checkpoint_count,
             "updated": fmt_ago(now - s.updated_at) if s.updated_at is not None else "never"} for s in summaries]


def run_problems(summaries: Sequence[RunSummary]) -> list[str]:
    return [f"{s.name}: {p}" for s in summaries for p in s.problems]


def metric_options(series_keys: Sequence[Sequence[str]]) -> list[str]:
    """Tags present in any selected run, ``loss`` first."""
    tags = sorted({k.split("/", 1)[1] for keys in series_keys for k in keys if "/" in k})
    return sorted(tags, key=lambda t: (t != DEFAULT_METRIC, t))


def compare_run(run: Run) -> CompareRun:
    return CompareRun(run.run_id, run.name, {k: (s.steps, s.values, s.wall_times)
                                             for k, s in run.compare_series().items()})


def config_diff(configs: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """Keys whose values differ between the configs (missing counts as a value), each value as text."""
    keys = sorted({k for c in configs for k in c})
    rows = []
    for k in keys:
        vals = [c.get(k, _MISSING) for c in configs]
        if any(v != vals[0] for v in vals[1:]):
            rows.append((k, [DASH if v is _MISSING else _text(v) for v in vals]))
    return rows


_MISSING = object()


def _text(v: Any) -> str:
    if isinstance(v, float):
        return fmt_sig(v, 6)
    return str(v)


def results_matrix(results: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """(metric names, values per metric per run) for the results table; first-seen metric order."""
    metrics: list[str] = []
    for r in results:
        for k in r:
            if k not in metrics:
                metrics.append(k)
    return metrics, [[r.get(m) for r in results] for m in metrics]


def compare_csv(runs: Sequence[CompareRun], tag: str) -> str:
    """The compared curves as CSV: run, split, metric, step, wall_time, seconds_since_start, value."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run", "split", "metric", "step", "wall_time", "seconds_since_start", "value"])
    for run in runs:
        start = run_start(run)
        for split in ("train", "eval"):
            s = run.series.get(f"{split}/{tag}")
            if not s:
                continue
            for step, value, wall in zip(*s):
                w.writerow([run.name, split, tag, step, "" if wall is None else repr(wall),
                            "" if wall is None or start is None else repr(wall - start), repr(float(value))])
    return buf.getvalue()


def checkpoint_rows(rows: Sequence[CheckpointRow]) -> list[dict[str, Any]]:
    """Checkpoint rows for the panel, newest first, with human units."""
    out = []
    for r in sorted(rows, key=lambda r: r.step, reverse=True):
        when = datetime.fromtimestamp(r.modified).strftime("%Y-%m-%d %H:%M:%S") if r.modified else DASH
        out.append({"step": r.step, "size": f"{r.size_mb:.2f} MB", "time": when, "is_latest": r.is_latest,
                    "is_best": r.is_best, "resume": r.resume_command})
    return out


def compare_fingerprint(sources: Sequence[Run], metric: str, align: str, log_y: bool) -> list[Any]:
    return [[s.run_id, s.version] for s in sources] + [metric, align, log_y]


def runs_table_outputs(catalog: Any, prev: Any, now: float | None = None) -> tuple[Any, Any, str]:
    """(table rows, message, fingerprint) of the Runs table; raises ``PreventUpdate`` when the fingerprint
    equals ``prev``. The listing reads each run's status and log tail (series only of opened runs); one short
    digest, not 2,000 [id, version] pairs, goes back and forth on every tick. The tick's callback and the
    page layout (the page arrives with its rows) both call it."""
    now = time.time() if now is None else now
    summaries, digest = catalog.listing(now)
    fingerprint = f"{digest}-{int(now // 10)}"  # "ago" every 10 s
    if prev == fingerprint:
        raise PreventUpdate
    if not summaries:
        message: Any = build_waiting(str(catalog.base), "No runs yet: Trainboard runs, experiment directories, "
                                     "Hugging Face output dirs (trainer_state.json) and TensorBoard event dirs "
                                     "under this folder appear here.")
    else:
        problems = run_problems(summaries)
        message = build_problem("; ".join(problems[:5]), "Everything else on this page is current.") if problems else None
    return table_rows(summaries, now), message, fingerprint


# ------------------------------------------------------------------------------------------ register
def initial_layout(catalog: Any) -> Any:
    """The Runs page as it opens, its table filled (no round trip before the first rows); a listing that
    fails here leaves the table to the tick's callback, which reports what it can read."""
    try:
        rows, message, fingerprint = runs_table_outputs(catalog, None)
    except Exception as exc:  # noqa: BLE001 - the page must open
        logging.getLogger("trainboard").error("Trainboard: the Runs page's first listing failed (%s: %s)",
                                              type(exc).__name__, exc)
        return build_runs_layout()
    return build_runs_layout(rows, message, fingerprint)


def register(app: Dash) -> None:
    catalog = catalog_for(app)
    def layout(**_query: Any) -> Any:  # Dash pages call it with the query parameters
        return initial_layout(catalog)

    dash.register_page("runs", path="/runs", name="Runs", title="Trainboard · Runs", layout=layout, order=60,
                       dash_chunks=TABLE_CHUNKS)

    @app.callback(Output(ids.RUNS_TABLE, "data"), Output(ids.RUNS_MESSAGE, "children"),
                  Output(ids.RUNS_TABLE_STATE, "data"),
                  Input(ids.SHELL_TICK, "n_intervals"), State(ids.RUNS_TABLE_STATE, "data"))
    def update_runs_table(_n: int, prev: Any):
        return runs_table_outputs(catalog, prev)

    @app.callback(Output(ids.RUNS_GRAPH_BOX, "children"), Output(ids.RUNS_GRAPH_NOTE, "children"),
                  Output(ids.RUNS_METRIC, "options"), Output(ids.RUNS_CONFIG_DIFF, "children"),
                  Output(ids.RUNS_RESULTS, "children"), Output(ids.RUNS_CHECKPOINTS, "children"),
                  Output(ids.RUNS_COMPARE_HINT, "children"), Output(ids.RUNS_COMPARE, "className"),
                  Output(ids.RUNS_COMPARE_STATE, "data"),
                  Input(ids.SHELL_TICK, "n_intervals"), Input(ids.RUNS_TABLE, "selected_row_ids"),
                  Input(ids.RUNS_METRIC, "value"), Input(ids.RUNS_ALIGN, "value"), Input(ids.RUNS_LOG_Y, "value"),
                  State(ids.RUNS_COMPARE_STATE, "data"))
    def update_compare(_n: int, selected: list[str] | None, metric: str | None, align: str | None,
                       log_y: list[str] | None, prev: Any):
        sources = [s for s in (catalog.get(rid) for rid in (selected or [])) if s is not None]
        metric = metric or DEFAULT_METRIC
        fingerprint = compare_fingerprint(sources, metric, align or "step", "log" in (log_y or []))
        if prev == fingerprint:
            raise PreventUpdate
        panels = [build_checkpoints_panel(s.name, checkpoint_rows(s.checkpoints())) for s in sources]
        if len(sources) < 2:
            hint = ("Select two or more runs (tick their boxes) to overlay their curves and compare config and results."
                    if sources or not selected else "The selected runs are no longer under the base directory.")
            return (no_update, "", no_update, no_update, no_update, panels, hint, "runs__compare runs__compare--hidden",
                    fingerprint)
        runs = [compare_run(s) for s in sources]
        fig, notes = build_compare_figure(runs, metric, align or "step", "log" in (log_y or []),
                                          uirevision="|".join([*(s.run_id for s in sources), metric, align or "step"]))
        names = [s.name for s in sources]
        metrics, values = results_matrix([s.results() for s in sources])
        options = [{"label": t, "value": t} for t in metric_options([list(s.compare_series()) for s in sources])]
        return (build_compare_graph(fig), "; ".join(notes), options, build_config_diff(names, config_diff([s.config() for s in sources])),
                build_results_table(names, metrics, values), panels, "", "runs__compare", fingerprint)

    @app.callback(Output(ids.RUNS_CSV_DOWNLOAD, "data"), Input(ids.RUNS_CSV_BUTTON, "n_clicks"),
                  State(ids.RUNS_TABLE, "selected_row_ids"), State(ids.RUNS_METRIC, "value"), prevent_initial_call=True)
    def download_csv(n_clicks: int, selected: list[str] | None, metric: str | None):
        if not n_clicks:
            raise PreventUpdate
        runs = [compare_run(s) for s in (catalog.get(rid) for rid in (selected or [])) if s is not None]
        return dcc.send_string(compare_csv(runs, metric or DEFAULT_METRIC),
                               f"trainboard-{metric or DEFAULT_METRIC}-{time.strftime('%Y%m%d-%H%M%S')}.csv")

