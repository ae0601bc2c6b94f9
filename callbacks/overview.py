"""Overview page: live metric cards and the loss, learning-rate and grad-norm charts.

The browser ticks every second; :func:`update_overview` answers with ``PreventUpdate`` when the run's
version has not changed (no re-render), extends the charts with only the new points (``Patch``) when it
has, and re-renders a chart in full only when the view changes (run, log-y, zoom) or a downsampled
chart has grown enough to be re-chosen. Zooming re-fetches full detail for the visible range.
"""
from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import dash
import numpy as np
from dash import Dash, Input, Output, Patch, State, ctx, no_update
from dash.exceptions import PreventUpdate

from components import ids
from components.cards import CardData, build_card_grid
from components.charts import (EVAL_COLOUR, GRAD_COLOUR, LR_COLOUR, SNAPSHOT_COLOUR, TRAIN_COLOUR, TraceSpec, build_resume_traces, build_series_figure,
                               empty_figure, to_trace_points)
from components.format import fmt_ago, fmt_epoch, fmt_gb, fmt_int, fmt_rate, fmt_sci, fmt_sig
from components.layout import LOG_Y_DEFAULT, SHOW_EVENTS_DEFAULT, build_overview_layout
from components.messages import build_notice, build_problem, build_waiting
from callbacks import ranks as ranks_callbacks
from callbacks.alerts import feed_for
from callbacks.shell import initial_run, only_tick, triggered_components
from collectors.snapshots import list_snapshots
from components.alerts import build_alert_marker_traces, build_event_marker_trace
from services.alerts import alerts_for, event_points, event_records, marker_points
from services.context import catalog_for
from services.downsample import MAX_POINTS, downsample_indices, select_range
from collectors.runformat import LOSS_NONFINITE_STEP, LOSS_REPLACED, RunPaths
from services.model import STALE_AFTER_S, STALLED, ResumePoint, Run, RunKind, series_key
REDRAW_AFTER_EXTEND = MAX_POINTS // 5
"""A downsampled chart is re-chosen after this many raw points were appended to it."""


@dataclass(frozen=True)
class ChartDef:
    graph_id: str
    title: str
    y_title: str
    traces: tuple[tuple[str, TraceSpec], ...]
    log_toggle: bool = False
    y_format: str = ""
    """plotly tickformat of the y axis (learning rates read best in scientific notation)."""


CHARTS: tuple[ChartDef, ...] = (
    ChartDef(ids.OVERVIEW_LOSS_GRAPH, "Loss", "loss",
             ((series_key("train", "loss"), TraceSpec("train loss", TRAIN_COLOUR)),
              (series_key("eval", "eval_loss"), TraceSpec("eval loss", EVAL_COLOUR, markers=True))), log_toggle=True),
    ChartDef(ids.OVERVIEW_LR_GRAPH, "Learning rate", "learning rate",
             ((series_key("train", "learning_rate"), TraceSpec("learning rate", LR_COLOUR)),), y_format=".1e"),
    ChartDef(ids.OVERVIEW_GRAD_GRAPH, "Gradient norm", "grad norm",
             ((series_key("train", "grad_norm"), TraceSpec("grad norm", GRAD_COLOUR)),)),
)


# ------------------------------------------------------------------------------------------ cards
def effective_status(run: Run, now: float | None = None) -> dict[str, Any]:
    """The status document, or one derived from the series when no status file exists (a Hugging Face
    or TensorBoard run, a MetricsLogger run), so cards show what is known instead of dashes; a live run
    that completes no step says ``stalled`` (with ``stalled_since``), a long marked phase how long."""
    doc = dict(run.derived_status())
    now = time.time() if now is None else now
    if run.state(now) == STALLED:
        verdict = run.stall(now)
        doc.update(state=STALLED, stalled_since=verdict.since, stall_threshold_s=verdict.threshold)
    return doc


def stalled_note(status: Mapping[str, Any], now: float) -> str | None:
    """"stalled since 12:04:31 UTC (95 s without a step; limit 60 s)" for a stalled run (pure)."""
    since = status.get("stalled_since")
    if not isinstance(since, (int, float)) or isinstance(since, bool):
        return None
    limit = status.get("stall_threshold_s")
    clock = datetime.fromtimestamp(since, tz=timezone.utc).strftime("%H:%M:%S UTC")
    extra = f"; limit {limit:.0f} s" if isinstance(limit, (int, float)) else ""
    return f"stalled since {clock} ({fmt_ago(max(now - since, 0.0)).replace(' ago', '')} without a step{extra})"


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def overview_cards(status: Mapping[str, Any]) -> list[CardData]:
    """The Overview cards for a status document (pure). Fields of the wrong type count as missing
    (:func:`services.model.clean_status` reports them)."""
    thr = _obj(status.get("throughput"))
    mem = _obj(status.get("memory"))
    cfg = _obj(status.get("config"))
    state = status.get("state")
    if thr.get("tokens_per_second"):
        tput, tnote = fmt_rate(thr["tokens_per_second"], "tokens"), fmt_rate(thr.get("steps_per_second"), "steps")
    elif thr.get("samples_per_second"):
        tput, tnote = fmt_rate(thr["samples_per_second"], "samples"), fmt_rate(thr.get("steps_per_second"), "steps")
    else:
        tput, tnote = fmt_rate(thr.get("steps_per_second"), "steps"), None
    tput_value, tput_unit = split_unit(tput)
    cuda = mem.get("cuda_allocated_gb")
    mem_note = f"CUDA {fmt_gb(cuda)} (peak {fmt_gb(mem.get('cuda_peak_gb'))})" if cuda is not None else "process RSS"
    max_steps = cfg.get("max_steps")
    loss = status.get("train_loss")
    bad_loss = isinstance(loss, float) and not math.isfinite(loss)
    latest = status.get("latest") if isinstance(status.get("latest"), dict) else {}
    loss_note = None
    if latest.get(LOSS_REPLACED):  # Trainer's logging_nan_inf_filter logged a stand-in: say so, never show it
        at = latest.get(LOSS_NONFINITE_STEP)
        loss_note = (f"replaced: Trainer logged {fmt_sig(latest.get('loss'))} in its place"
                     + (f" (NaN/Inf from step {at})" if isinstance(at, int) else ""))
    return [
        CardData("train_loss", "Train loss", fmt_sig(loss), note=loss_note, tone="bad" if bad_loss else None),
        CardData("eval_loss", "Eval loss", fmt_sig(status.get("eval_loss"))),
        CardData("step", "Step", fmt_int(status.get("step")),
                 note=f"of {fmt_int(max_steps)}" if isinstance(max_steps, int) and max_steps > 0 else None),
        CardData("epoch", "Epoch", fmt_epoch(status.get("epoch"))),
        CardData("learning_rate", "Learning rate", fmt_sci(status.get("learning_rate"))),
        CardData("grad_norm", "Grad norm", fmt_sig(status.get("grad_norm"))),
        CardData("memory", "Memory", fmt_gb(mem.get("rss_gb") if cuda is None else cuda), note=mem_note),
        CardData("throughput", "Throughput", tput_value, unit=tput_unit, note=tnote),
        CardData("state", "State", str(state) if state else "unknown",
                 note=str(status["error"]) if status.get("error") else stalled_note(status, time.time()),
                 tone={"crashed": "bad", "finished": "good", STALLED: "bad"}.get(str(state))),
    ]


def split_unit(text: str) -> tuple[str, str | None]:
    """("433", "samples/s") from "433 samples/s"; a value without a unit ("NaN", "—") stays whole."""
    value, _, unit = text.partition(" ")
    return (value, unit) if unit else (text, None)


def skipped_note(bad: int, unknown: int, bad_steps: int = 0) -> str:
    """The line under the charts that says how many lines were skipped, so nothing is silently lost."""
    parts = []
    if bad:
        parts.append(f"{bad} malformed line{'s' if bad != 1 else ''} skipped in metrics.jsonl")
    if unknown:
        parts.append(f"{unknown} line{'s' if unknown != 1 else ''} of unknown kind or newer format skipped")
    if bad_steps:
        parts.append(f"{bad_steps} record{'s' if bad_steps != 1 else ''} without a numeric step skipped")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------ charts
def parse_relayout(relayout: Mapping[str, Any] | None) -> tuple[bool, list[float] | None]:
    """(changed, x_range) from a graph's relayoutData: a zoom gives a range, autorange/reset gives None."""
    if not relayout:
        return False, None
    if "xaxis.range[0]" in relayout and "xaxis.range[1]" in relayout:
        return True, [float(relayout["xaxis.range[0]"]), float(relayout["xaxis.range[1]"])]
    if isinstance(relayout.get("xaxis.range"), (list, tuple)) and len(relayout["xaxis.range"]) == 2:
        return True, [float(v) for v in relayout["xaxis.range"]]
    if relayout.get("xaxis.autorange") or relayout.get("autosize") is None and "xaxis.autorange" in relayout:
        return True, None
    return False, None


def series_lengths(run: Run, chart: ChartDef) -> dict[str, int]:
    return {key: len(run.series[key]) if key in run.series else 0 for key, _ in chart.traces}


def plan_chart(prev: Mapping[str, Any] | None, lengths: Mapping[str, int], view: Mapping[str, Any]) -> str:
    """Decide how one chart changes: ``"full"`` re-render, ``"extend"`` with new points, or ``"none"`` (pure)."""
    if prev is None or prev.get("view") != dict(view):
        return "full"
    sent = prev.get("sent", {})
    if not any(sent.values()) and any(lengths.values()):
        return "full"  # nothing sent yet means the browser holds an empty frame without traces: nothing to extend
    if any(lengths.get(k, 0) < sent.get(k, 0) for k in lengths):
        return "full"  # the file was truncated or replaced
    if all(lengths.get(k, 0) == sent.get(k, 0) for k in lengths):
        return "none"
    grown = sum(lengths.get(k, 0) - sent.get(k, 0) for k in lengths) + prev.get("extended", 0)
    if prev.get("downsampled") and grown > REDRAW_AFTER_EXTEND:
        return "full"
    return "extend"


def loss_markers(run: Run, alerts: Sequence[Mapping[str, Any]], snapshots: Sequence[Mapping[str, Any]],
                 events: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Alert markers (one trace per severity, shared colours), event markers (when shown) and snapshot
    markers on the train-loss curve."""
    s = run.series.get(series_key("train", "loss"))
    if s is None or not len(s):
        return []
    x, y = s.arrays()
    traces = build_alert_marker_traces(marker_points(alerts, x, y))
    traces += build_event_marker_trace(event_points(events, x, y))
    snaps = marker_points([{"step": sn.get("step"), "severity": "snapshot",
                            "message": f"snapshot {sn.get('name')} ({sn.get('reason')})"} for sn in snapshots], x, y)
    if "snapshot" in snaps:
        xs, ys, texts = snaps["snapshot"]
        traces.append({"type": "scatter", "mode": "markers", "name": "snapshots", "x": xs, "y": ys, "customdata": texts,
                       "hovertemplate": "step %{x}<br>%{customdata}<extra></extra>",
                       "marker": {"color": SNAPSHOT_COLOUR, "symbol": "star", "size": 13, "line": {"width": 1, "color": "#333"}}})
    traces += build_resume_traces(*resume_points(getattr(run, "resumes", ()), x, y))
    return traces


def resume_points(resumes: Sequence[ResumePoint], x: Sequence[float], y: Sequence[float]
                  ) -> tuple[Any, Any]:
    """``(resumed, crashed)`` marker points for the loss chart, each ``(xs, ys, texts)`` or None. Pure.

    The resume sits at its step; the crash at the last step the earlier process reported (when it is
    after the resume step: the steps in between were rolled back and trained again).
    """
    rows, crash_rows = [], []
    for r in resumes:
        back = f"; steps {r.step + 1}–{r.previous_step} rolled back" if r.previous_step and r.previous_step > r.step else ""
        rows.append({"step": r.step, "severity": "resume", "message": f"training resumed from step {r.step}{back}"})
        if r.previous_step is not None and r.previous_step > r.step:
            what = r.previous_state if r.previous_state and r.previous_state not in ("training", "evaluating") else "stopped"
            crash_rows.append({"step": r.previous_step, "severity": "crash",
                               "message": f"earlier process {what} here (last reported step {r.previous_step})"})
    resumed = marker_points(rows, x, y).get("resume")
    crashed = marker_points(crash_rows, x, y).get("crash")
    return resumed, crashed


def render_chart(run: Run, chart: ChartDef, view: Mapping[str, Any],
                 markers: Sequence[dict[str, Any]] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """Full figure for one chart plus its state (points sent per series, downsampled or not).

    ``markers`` (alert and snapshot traces) go after the series and non-finite traces, so the indices
    that incremental updates address stay the same.
    """
    x_range = view.get("range")
    specs, points, sent, downsampled = [], [], {}, False
    for key, spec in chart.traces:
        s = run.series.get(key)
        x, y = s.arrays() if s is not None else (np.empty(0), np.empty(0))
        sl = select_range(x, *(x_range or (None, None)))
        xs, ys = x[sl], y[sl]
        idx = downsample_indices(xs, ys, MAX_POINTS)
        downsampled = downsampled or len(idx) < len(xs)
        specs.append(spec)
        points.append(to_trace_points(xs[idx], ys[idx]))
        sent[key] = len(s) if s is not None else 0
    note = f"downsampled to ≤{MAX_POINTS:,} points per series (MinMaxLTTB); zoom in for full detail" if downsampled else None
    uirev = f"{run.run_id}|{view.get('log_y')}"
    if not any(sent.values()):
        return empty_figure(chart.title, "no values logged yet"), {"view": dict(view), "sent": sent, "downsampled": False, "extended": 0}
    fig = build_series_figure(specs, points, title=chart.title, y_title=chart.y_title,
                              log_y=bool(view.get("log_y")) and chart.log_toggle, uirevision=uirev,
                              x_range=x_range, note=note, y_format=chart.y_format)
    fig["data"].extend(markers)
    return fig, {"view": dict(view), "sent": sent, "downsampled": downsampled, "extended": 0}


def extend_chart(run: Run, chart: ChartDef, prev: Mapping[str, Any]) -> tuple[Patch, dict[str, Any]]:
    """A Patch appending only the points logged since the last update, and the new state."""
    patch = Patch()
    sent = dict(prev.get("sent", {}))
    n_traces = len(chart.traces)
    added = 0
    for i, (key, _spec) in enumerate(chart.traces):
        s = run.series.get(key)
        start = sent.get(key, 0)
        if s is None or len(s) <= start:
            continue
        last_finite = next((v for v in reversed(s.values[:start]) if math.isfinite(v)), None) if start else None
        pts = to_trace_points(s.steps[start:], s.values[start:], last_finite)
        patch["data"][i]["x"].extend(pts.x)
        patch["data"][i]["y"].extend(pts.y)
        patch["data"][i]["customdata"].extend(pts.text)
        if pts.bad_x:
            patch["data"][n_traces + i]["x"].extend(pts.bad_x)
            patch["data"][n_traces + i]["y"].extend(pts.bad_y)
            patch["data"][n_traces + i]["customdata"].extend(pts.bad_text)
            patch["data"][n_traces + i]["showlegend"] = True
        added += len(s) - start
        sent[key] = len(s)
    state = {**prev, "sent": sent, "extended": prev.get("extended", 0) + added}
    return patch, state


def update_charts(run: Run, prev_state: Mapping[str, Any] | None, log_y: bool,
                  ranges: Mapping[str, list[float] | None], markers: Sequence[dict[str, Any]] = (),
                  markers_key: str = "") -> tuple[list[Any], dict[str, Any]]:
    """For each chart: a full figure, a Patch, or ``no_update``; plus the new combined state.

    ``markers`` belong to the loss chart; a new ``markers_key`` (alerts or snapshots changed) re-renders it.
    """
    prev_charts = (prev_state or {}).get("charts", {}) if (prev_state or {}).get("run") == run.run_id else {}
    outputs: list[Any] = []
    charts_state: dict[str, Any] = {}
    for chart in CHARTS:
        view = {"log_y": log_y and chart.log_toggle, "range": ranges.get(chart.graph_id),
                "rewinds": [run.series[k].rewinds if k in run.series else 0 for k, _ in chart.traces]}
        if chart.log_toggle:
            view["markers"] = markers_key
        prev = prev_charts.get(chart.graph_id)
        plan = plan_chart(prev, series_lengths(run, chart), view)
        if plan == "full":
            fig, st = render_chart(run, chart, view, markers if chart.log_toggle else ())
            outputs.append(fig)
        elif plan == "extend":
            fig, st = extend_chart(run, chart, prev or {})
            outputs.append(fig)
        else:
            st = dict(prev or {})
            outputs.append(no_update)
        charts_state[chart.graph_id] = st
    return outputs, {"run": run.run_id, "version": run.version, "charts": charts_state}


def current_ranges(prev_state: Mapping[str, Any] | None, run_id: str, triggered: str | frozenset[str] | None,
                   relayouts: Mapping[str, Mapping[str, Any] | None]) -> dict[str, list[float] | None]:
    """The zoom range of each chart: kept from the state, replaced by the chart(s) the person just zoomed
    (``triggered``: the triggering component id, or the set of them)."""
    if isinstance(triggered, str):
        triggered = frozenset({triggered})
    ranges: dict[str, list[float] | None] = {}
    same_run = (prev_state or {}).get("run") == run_id
    for chart in CHARTS:
        prev = ((prev_state or {}).get("charts", {}).get(chart.graph_id) or {}) if same_run else {}
        ranges[chart.graph_id] = (prev.get("view") or {}).get("range")
        relayout = relayouts.get(chart.graph_id)
        # a zoom not yet seen in the state counts even when a tick triggered this call: Dash drops the answer
        # to a zoom's request when a tick's request for this callback follows it, and the zoom must not be lost
        unseen = same_run and "relayout" in prev and relayout != prev.get("relayout")
        if (triggered and chart.graph_id in triggered) or unseen:
            changed, rng = parse_relayout(relayout)
            if changed:
                ranges[chart.graph_id] = rng
    return ranges


def mark_relayouts_seen(state: dict[str, Any], relayouts: Mapping[str, Mapping[str, Any] | None]) -> None:
    """Record in the chart state each chart's zoom (``relayoutData``) this answer took into account."""
    for chart in CHARTS:
        st = state.get("charts", {}).get(chart.graph_id)
        if isinstance(st, dict):
            st["relayout"] = relayouts.get(chart.graph_id)


class SnapshotRows:
    """Snapshot rows for the loss-chart markers, re-listed only when ``snapshots/`` itself changed.

    Listing reads every snapshot's metadata.json; the Overview asks each time new metrics arrive (about
    once a second in training), while snapshots appear, vanish or get renamed far more rarely — all of
    which change the directory's mtime.
    """

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[int | None, list[dict[str, Any]]]] = {}

    def __call__(self, paths: RunPaths) -> list[dict[str, Any]]:
        try:
            sig: int | None = paths.snapshots_dir.stat().st_mtime_ns
        except OSError:
            sig = None
        hit = self._cache.get(paths.root)
        if hit is not None and hit[0] == sig:
            return hit[1]
        rows = [sn.to_row() for sn in list_snapshots(paths.root, with_size=False)] if sig is not None else []
        self._cache[paths.root] = (sig, rows)
        return rows


# ------------------------------------------------------------------------------------------ messages
def overview_problems(run: Run) -> list[str]:
    """What could not be read, in words: the status file, status fields of the wrong type, other files."""
    out = []
    if run.status_problem:
        out.append(run.status_problem)
    out += run.field_problems
    out += run.problems
    return out


SOURCE_NOTES = {
    RunKind.HUGGINGFACE: "read from its trainer_state.json as Trainer leaves it: the charts grow each time the "
                         "training saves a checkpoint",
    RunKind.TENSORBOARD: "read from its TensorBoard event files: the charts grow as the training flushes them",
}


def overview_message(run: Run) -> Any:
    """A problem box naming every unreadable file or field, saying what still works; for a run without the
    collector, a note on where its data comes from; None when there is nothing to say."""
    problems = overview_problems(run)
    if not problems:
        note = SOURCE_NOTES.get(run.kind)
        if note is None:
            return None
        return build_notice(f"{run.label} has no Trainboard collector; it is {note}. Alerts are detected by the "
                            "dashboard from its metrics (read-only).")
    return build_problem("; ".join(problems), "Everything else on this page keeps updating from the readable data.")


def waiting_message(base: Path, run: Run | None, run_id: str | None, watch_problem: str | None) -> Any:
    """The waiting state: what is watched, and why nothing shows yet (an unreadable file, no run)."""
    detail = watch_problem or ("Start a training with MonitorCallback or Monitor writing here, "
                               "or pick a run above." if run_id is None else None)
    if run is not None and overview_problems(run):
        detail = "; ".join(overview_problems(run))
    return build_waiting(str(base if run is None else run.root), detail)


def overview_outputs(store: Any, feed: Any, snapshot_rows: "SnapshotRows", run_id: str | None,
                     triggered: frozenset[str], log_y: Sequence[str] | None,
                     relayouts: Mapping[str, Mapping[str, Any] | None], show_events: Sequence[str] | None,
                     prev_state: Mapping[str, Any] | None) -> tuple[Any, ...]:
    """The Overview's outputs (cards, message, updated-at, skipped note, the three figures, chart state) for
    ``run_id``; raises ``PreventUpdate`` when nothing changed. The callback calls it on every trigger, and the
    page layout once with no trigger and no previous state, so the page arrives drawn (no second round trip
    before the first chart)."""
    run = store.get(run_id)
    if run is None or not run.has_data():
        waiting = {"waiting": str(store.base), "run": run_id,
                   "problems": run.all_problems() if run is not None else []}
        if prev_state == waiting:
            raise PreventUpdate
        empty = [empty_figure(c.title, "no data yet") for c in CHARTS]
        return ([], waiting_message(store.base, run, run_id, store.watch_problem), None, "", *empty, waiting)
    ranges = current_ranges(prev_state, run.run_id, triggered, relayouts)
    alerts_view = alerts_for(feed, run)
    run_state = run.state()  # depends on the clock too: a run turns stalled with nothing new on disk
    unchanged = ((prev_state or {}).get("run") == run.run_id and prev_state.get("version") == run.version
                 and prev_state.get("alerts_version") == alerts_view.version
                 and prev_state.get("run_state") == run_state)
    if unchanged and only_tick(triggered) and ranges == current_ranges(prev_state, run.run_id, frozenset(), {}):
        raise PreventUpdate  # the cheap path: nothing new on disk, no zoom to apply, nothing re-rendered
    snaps = snapshot_rows(run.paths) if run.has_collector else []
    events = event_records(alerts_view.records) if "events" in (show_events or []) else []
    markers_key = (f"{alerts_view.version}|{len(snaps)}|{snaps[-1]['name'] if snaps else ''}|{bool(events)}|"
                   f"{len(run.resumes)}")
    figs, state = update_charts(run, prev_state, "log" in (log_y or []), ranges,
                                loss_markers(run, alerts_view.alerts, snaps, events), markers_key)
    state["alerts_version"] = alerts_view.version
    state["run_state"] = run_state
    mark_relayouts_seen(state, relayouts)
    if unchanged:
        return (no_update, no_update, no_update, no_update, *figs, state)
    status = effective_status(run)
    updated = {"t": status.get("updated_at"), "state": status.get("state"), "now": time.time()}
    return (build_card_grid(overview_cards(status)), overview_message(run), updated,
            skipped_note(run.bad_lines, run.unknown_lines, run.bad_steps), *figs, state)


# ------------------------------------------------------------------------------------------ register
def initial_layout(store: Any, feed: Any, snapshot_rows: SnapshotRows, requested: object = None) -> Any:
    """The Overview page as it opens, drawn for the run the picker opens on (``requested``: the address's
    ``?run=``). A run that cannot be drawn here still gets the page: the callback then shows its state."""
    try:
        outputs = overview_outputs(store, feed, snapshot_rows, initial_run(store, requested), frozenset(),
                                   LOG_Y_DEFAULT, {}, SHOW_EVENTS_DEFAULT, None)
    except Exception as exc:  # noqa: BLE001 - the page must open; the callback reports what it can read
        logging.getLogger("trainboard").error("Trainboard: the Overview's first drawing failed (%s: %s); the "
                                              "page's callback draws it", type(exc).__name__, exc)
        outputs = None
    return build_overview_layout(outputs)


def register(app: Dash) -> None:
    store = catalog_for(app)
    feed = feed_for(app)
    snapshot_rows = SnapshotRows()
    def layout(run: object = None, **_query: Any) -> Any:  # Dash pages call it with the query parameters
        return initial_layout(store, feed, snapshot_rows, run)

    dash.register_page("overview", path="/", name="Overview", title="Trainboard · Overview", layout=layout, order=0)

    @app.callback(
        Output(ids.OVERVIEW_CARDS, "children"), Output(ids.OVERVIEW_MESSAGE, "children"),
        Output(ids.OVERVIEW_UPDATED_AT, "data"), Output(ids.OVERVIEW_SKIPPED, "children"),
        Output(ids.OVERVIEW_LOSS_GRAPH, "figure"), Output(ids.OVERVIEW_LR_GRAPH, "figure"),
        Output(ids.OVERVIEW_GRAD_GRAPH, "figure"), Output(ids.OVERVIEW_CHART_STATE, "data"),
        Input(ids.SHELL_TICK, "n_intervals"), Input(ids.SHELL_RUN_PICKER, "value"), Input(ids.OVERVIEW_LOG_Y, "value"),
        Input(ids.OVERVIEW_LOSS_GRAPH, "relayoutData"), Input(ids.OVERVIEW_LR_GRAPH, "relayoutData"),
        Input(ids.OVERVIEW_GRAD_GRAPH, "relayoutData"), Input(ids.OVERVIEW_SHOW_EVENTS, "value"),
        State(ids.OVERVIEW_CHART_STATE, "data"),
    )
    def update_overview(_n, run_id, log_y, loss_rl, lr_rl, grad_rl, show_events, prev_state):
        return overview_outputs(store, feed, snapshot_rows, run_id, triggered_components(ctx.triggered_prop_ids),
                                log_y, {ids.OVERVIEW_LOSS_GRAPH: loss_rl, ids.OVERVIEW_LR_GRAPH: lr_rl,
                                        ids.OVERVIEW_GRAD_GRAPH: grad_rl}, show_events, prev_state)

    ranks_callbacks.register(app)

    app.clientside_callback(
        f"""
        function(n, data) {{
            if (!data || !data.t) {{ return ["never", "updated__value", "cards"]; }}
            const age = Math.max(0, Date.now() / 1000 - data.t);
            let txt;
            if (age < 90) {{ txt = Math.round(age) + " s ago"; }}
            else if (age < 5400) {{ txt = Math.round(age / 60) + " min ago"; }}
            else {{ txt = (age / 3600).toFixed(1) + " h ago"; }}
            const live = data.state === "training" || data.state === "evaluating" || !data.state;
            const stale = live && age > {STALE_AFTER_S};
            if (stale) {{ txt += " — stale: no new data"; }}
            if (data.state === "finished") {{ txt += " (finished)"; }}
            if (data.state === "crashed") {{ txt += " (crashed)"; }}
            if (data.state === "stalled") {{ txt += " — stalled: no step completes"; }}
            return [txt, stale ? "updated__value updated--stale" : "updated__value",
                    stale ? "cards cards--stale" : "cards"];
        }}
        """,
        Output(ids.OVERVIEW_UPDATED, "children"), Output(ids.OVERVIEW_UPDATED, "className"),
        Output(ids.OVERVIEW_CARDS, "className"),
        Input(ids.SHELL_TICK, "n_intervals"), Input(ids.OVERVIEW_UPDATED_AT, "data"),
    )
