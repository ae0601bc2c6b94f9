"""Alerts page: incidents (expandable to their firings), events on a timeline, ack and mute, thresholds.

The page tails ``logs/alerts.jsonl`` (``services.alerts.AlertFeed``) at each tick, folds its records into
incidents and events (``collectors.anomaly.incidents.fold``) and re-renders only when something new was
read, a filter changed or the ack/mute file changed. Acknowledge and Mute write ``control/incidents.json``
atomically; the running collector and the Smart Monitor follow it. A slider change is validated and
written atomically to ``control/thresholds.json``; the running detector reloads it within its poll.
"""
from __future__ import annotations

import json
import time
from typing import Any

import dash
from dash import ALL, Dash, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from collectors import runformat as rf
from collectors.anomaly.rules import AnomalyConfig
from components import ids
from callbacks.recover import has_last_good, recover_panel_for
from collectors import snapshots as snap
from collectors.anomaly import incidents as inc
from components.alerts import (MUTE_CHOICES, SLIDERS, build_alerts_layout, build_incident_list,
                               build_incident_summary, build_mutes, event_timeline_figure)
from services.model import series_key
from services.recovery import run_length_of
from components.messages import build_notice, build_problem, build_waiting
from services import alerts as svc
from services.context import catalog_for
from services.security import PathRefused, require_listed_run
from services.validation import ThresholdRefused, validate_threshold

FEED_KEY = "TRAINBOARD_ALERT_FEED"


def slider_values(config: AnomalyConfig) -> dict[str, float]:
    """Current value of every slider's key in ``config`` (pure)."""
    d = config.to_dict()
    return {s.key: d[s.section][s.name] for s in SLIDERS}


def feed_for(app: Dash) -> svc.AlertFeed:
    feed = app.server.config.get(FEED_KEY)
    if feed is None:
        feed = app.server.config[FEED_KEY] = svc.AlertFeed()
    return feed


def save_threshold(run_root: Any, key: str, value: Any) -> tuple[str, bool]:
    """Validate and write one slider's value; returns (message, ok). Unchanged values write nothing.

    Only the sliders' keys, each within its range, are written (services.validation); anything else a
    request carries is refused with a "Not saved: ..." message.
    """
    try:
        spec, value = validate_threshold(key, value)
    except ThresholdRefused as exc:
        return str(exc), False
    section, name = spec.section, spec.name
    current, _problem = rf.read_json(rf.RunPaths.of(run_root).thresholds)
    replaced = ""
    if current is not None and not isinstance(current, dict):
        current, replaced = None, " (the old file was not a JSON object and was replaced)"
    cfg, _ = svc.current_thresholds(run_root)
    if getattr(getattr(cfg, section), name) == value and current is not None:
        return "", True
    doc, error = svc.threshold_update(current, section, name, value)
    if error:
        return error, False
    rf.write_json_atomic(rf.RunPaths.of(run_root).thresholds, doc)
    return f"Saved {key} = {value:g} to control/thresholds.json{replaced}", True


def triggered_slider(inputs_list: Any, values: Any, trig: Any) -> tuple[Any, Any]:
    """``(key, value)`` of the slider that fired, from the request's pattern-matching inputs (pure).

    A request shaped by hand rather than by the page gives ``(key, None)`` or a key that
    :func:`save_threshold` refuses, never an exception (an exception would be an HTTP 500).
    """
    key = trig.get("key") if isinstance(trig, dict) else None
    try:
        for item, value in zip(inputs_list[0], values):
            if item["id"]["key"] == key:
                return key, value
    except (IndexError, KeyError, TypeError):
        pass
    return key, None


def can_write_control(run: Any) -> bool:
    """Acks and mutes are written only where something follows them: a collector run, or a run a Smart
    Monitor watches (it writes ``logs/alerts.jsonl`` into the directory it watches)."""
    return bool(run.has_collector or run.paths.alerts.exists())


def alerts_message(view: svc.AlertsView, run_label: str) -> Any:
    """What the feed is made of when that needs saying: the dashboard's own detection, or lines skipped."""
    if view.detected:
        return build_notice(f"{run_label} has no Trainboard collector, so these alerts were detected by the "
                            "dashboard: the collector's rules run over the metrics it logged (read-only: nothing "
                            "is written into the run directory). Thresholds saved here apply only to collector runs.")
    if view.bad_lines:
        return build_problem(f"{view.bad_lines} malformed line(s) skipped in logs/alerts.jsonl",
                             "The other alerts are shown.")
    if view.problem:
        return build_problem(view.problem)
    return None


MUTE_SECONDS = frozenset(secs for _label, secs in MUTE_CHOICES)


def control_signature(root: Any) -> list[int] | None:
    """(mtime, size) of ``control/incidents.json``, None when absent: the page re-renders when it changes."""
    try:
        st = inc.control_path(root).stat()
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


def component_digest(component: Any) -> str:
    """A short digest of a component tree as Dash would send it. The incident list is sent again only when
    it differs: a redrawn list is new buttons to Dash, which re-fires the Ack/Mute callback and drops the
    answer to a click still in flight (its message never shown), and closes every expanded incident."""
    import hashlib

    import plotly.utils

    raw = json.dumps(component, cls=plotly.utils.PlotlyJSONEncoder, sort_keys=True)
    return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


def logged_steps(run: Any) -> list[int] | None:
    """The run's logged train steps (to group legacy alert files exactly as the tracker would)."""
    s = run.series.get(series_key("train", "loss"))
    if s is None or not len(s):
        return None
    x, _ = s.arrays()
    return [int(v) for v in x]


ACTION_ECHO_S = 10.0
"""How long after an Acknowledge / Mute / Unmute its message is shown again when the buttons are redrawn."""


class RecentActions:
    """The last action message per run, to show again when the buttons are redrawn right after a click.

    A click's request writes ``control/incidents.json``; the next tick then redraws the list and the mutes
    strip, and the redrawn buttons trigger the action callback again (no click: nothing to do). The
    browser keeps only the newest answer of a callback, so an answer of "nothing" there used to replace
    the click's message, which was then never shown although the action was saved. The callback answers
    a redraw with the message recorded here instead (within :data:`ACTION_ECHO_S`)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, Any]] = {}

    def record(self, run_id: str, message: Any, now: float) -> Any:
        self._last[str(run_id)] = (now, message)
        return message

    def recent(self, run_id: Any, now: float) -> Any:
        """The message of the run's last action if it is at most ``ACTION_ECHO_S`` old, else None."""
        hit = self._last.get(str(run_id))
        return hit[1] if hit is not None and 0.0 <= now - hit[0] <= ACTION_ECHO_S else None


def incident_action(root: Any, trig: Any, duration: Any, now: float | None = None) -> tuple[str, bool]:
    """Apply one Acknowledge / Mute / Unmute click to ``control/incidents.json``: ``(message, ok)``.

    ``trig`` is the clicked button's pattern-matching id; what it names is only ever a key inside the
    control document of a listed run, never a path. A mute lasts one of :data:`MUTE_CHOICES`.
    """
    if not isinstance(trig, dict):
        return "Not saved: unknown action.", False
    kind = trig.get("type")
    if kind == ids.INCIDENT_ACK_TYPE:
        iid = trig.get("incident")
        doc, problem = inc.acknowledge(root, iid, who="dashboard", now=now)
        return (problem, False) if problem else (f"Acknowledged {iid}: no further notifications for it.", True)
    if kind == ids.INCIDENT_MUTE_TYPE:
        rule = trig.get("rule")
        if isinstance(duration, bool) or duration not in MUTE_SECONDS:
            return f"Not saved: choose how long to mute (one of {', '.join(l for l, _ in MUTE_CHOICES)}).", False
        doc, problem = inc.mute(root, rule, float(duration), who="dashboard", now=now)
        label = next(l for l, secs in MUTE_CHOICES if secs == duration)
        return (problem, False) if problem else (
            f"Muted {rule} for {label}: no notifications and no snapshots from it on this run.", True)
    if kind == ids.INCIDENT_UNMUTE_TYPE:
        rule = trig.get("rule")
        doc, problem = inc.unmute_rule(root, rule, now=now)
        return (problem, False) if problem else (f"Unmuted {rule}.", True)
    return "Not saved: unknown action.", False


def incident_snapshots(incidents: Any, snapshots: Any) -> dict[str, str]:
    """``{incident id: snapshot name}`` for incidents that saved a snapshot holding a last good state
    (its step within the incident's span); the first incident claims a snapshot. Pure."""
    out: dict[str, str] = {}
    claimed: set[str] = set()
    for i in sorted(incidents, key=lambda x: x.first_step):
        for sn in snapshots:
            if sn.name in claimed or not has_last_good(sn.metadata) or sn.step is None:
                continue
            if i.first_step <= sn.step <= max(i.last_step, i.first_step):
                out[i.id] = sn.name
                claimed.add(sn.name)
                break
    return out


def recover_panels(run: Any, run_id: str, base: Any, incidents: Any) -> dict[str, Any]:
    """The Recover panel of each incident with a saved last good state (issue 11), by incident id."""
    if not run.has_collector:
        return {}
    snaps = snap.list_snapshots(run.paths.root, with_size=False)
    length = run_length_of(run.status or {})
    panels = {}
    for iid, name in incident_snapshots(incidents, snaps).items():
        panel = recover_panel_for(run_id, run.paths.root, name, length, base)
        if panel is not None:
            panels[iid] = panel
    return panels


def layout(**_query: Any) -> Any:
    return build_alerts_layout(slider_values(AnomalyConfig()))


def register(app: Dash) -> None:
    store = catalog_for(app)
    feed = feed_for(app)
    recent = RecentActions()
    dash.register_page("alerts", path="/alerts", name="Alerts", title="Trainboard · Alerts", layout=layout, order=10)

    @app.callback(Output(ids.ALERTS_SUMMARY, "children"), Output(ids.ALERTS_FEED, "children"),
                  Output(ids.ALERTS_EVENTS_GRAPH, "figure"), Output(ids.ALERTS_MUTES, "children"),
                  Output(ids.ALERTS_MESSAGE, "children"), Output(ids.ALERTS_STATE, "data"),
                  Input(ids.SHELL_TICK, "n_intervals"), Input(ids.SHELL_RUN_PICKER, "value"),
                  Input(ids.ALERTS_SEVERITY_FILTER, "value"), Input(ids.ALERTS_CATEGORY_FILTER, "value"),
                  Input(ids.ALERTS_CONTROL_VERSION, "data"), State(ids.ALERTS_STATE, "data"))
    def update_alerts(_n, run_id, severities, categories, _control_version, prev):
        run = store.get(run_id)
        if run is None:
            if prev == {"waiting": True}:
                raise PreventUpdate
            return ([], build_incident_list([], 0, {}, False), event_timeline_figure([]), [],
                    build_waiting(str(store.base), "Alerts appear here once a run exists."), {"waiting": True})
        view = svc.alerts_for(feed, run)
        now = time.time()
        state = {"run": run_id, "version": view.version, "sev": severities or [], "cat": categories or [],
                 "control": control_signature(run.paths.root)}
        if prev == state:
            raise PreventUpdate  # nothing changed: the DOM (and any expanded incident) stays as it is
        iv = svc.incidents_of(view, run.paths.root, logged_steps(run), now)
        shown = svc.filter_incidents(iv.incidents, categories, severities)
        can_act = can_write_control(run)
        message = alerts_message(view, run.label)
        if iv.control_problem:
            message = [message, build_problem(iv.control_problem, "Acks and mutes are not applied until it is fixed.")]
        same_run = isinstance(prev, dict) and prev.get("run") == run_id
        mutes_same = same_run and prev.get("control") == state["control"]
        panels = recover_panels(run, run_id, store.base, shown)
        listed = build_incident_list(shown, len(iv.incidents), iv.mutes, can_act, recover=panels)
        state["feed"] = component_digest(listed)
        return (build_incident_summary(svc.summarize_incidents(iv.incidents, iv.events)),
                no_update if same_run and prev.get("feed") == state["feed"] else listed,
                no_update if same_run and prev.get("version") == view.version else event_timeline_figure(iv.events),
                no_update if mutes_same else build_mutes(iv.mutes, now, can_act), message, state)

    @app.callback(Output(ids.ALERTS_ACTION_MESSAGE, "children"), Output(ids.ALERTS_CONTROL_VERSION, "data"),
                  Input({"type": ids.INCIDENT_ACK_TYPE, "incident": ALL}, "n_clicks"),
                  Input({"type": ids.INCIDENT_MUTE_TYPE, "rule": ALL}, "n_clicks"),
                  Input({"type": ids.INCIDENT_UNMUTE_TYPE, "rule": ALL}, "n_clicks"),
                  State(ids.ALERTS_MUTE_DURATION, "value"), State(ids.SHELL_RUN_PICKER, "value"),
                  State(ids.ALERTS_CONTROL_VERSION, "data"), prevent_initial_call=True)
    def act_on_incident(_acks, _mutes, _unmutes, duration, run_id, version):
        trig = ctx.triggered_id
        if not isinstance(trig, dict) or len(ctx.triggered) != 1 or not ctx.triggered[0].get("value"):
            echo = recent.recent(run_id, time.monotonic())  # buttons (re)drawn with n_clicks 0: not a click
            if echo is None:
                raise PreventUpdate
            return echo, no_update  # this answer replaces the click's own in the browser: say it again
        try:
            root = require_listed_run(store, run_id)
        except PathRefused as exc:
            return build_problem(f"Not saved: {exc}."), no_update
        run = store.get(run_id)
        if run is None or not can_write_control(run):
            return build_problem("Not saved: this run has no Trainboard collector or Smart Monitor to follow acks "
                                 "and mutes, and the dashboard never writes into another tool's output directory."), no_update
        msg, ok = incident_action(root, trig, duration)
        return recent.record(run_id, msg if ok else build_problem(msg), time.monotonic()), (version or 0) + 1

    @app.callback(Output({"type": ids.ALERTS_THRESHOLD_TYPE, "key": ALL}, "value"),
                  Output(ids.ALERTS_THRESHOLDS_MESSAGE, "children", allow_duplicate=True),
                  Input(ids.SHELL_RUN_PICKER, "value"), prevent_initial_call="initial_duplicate")
    def load_thresholds(run_id):
        run = store.get(run_id)
        if run is None:
            return [no_update] * len(SLIDERS), ""
        cfg, problem = svc.current_thresholds(run.paths.root)
        values = slider_values(cfg)
        keys = [o["id"]["key"] for o in ctx.outputs_list[0]]
        return [values.get(k) for k in keys], (build_problem(problem) if problem else "")

    @app.callback(Output(ids.ALERTS_THRESHOLDS_MESSAGE, "children"),
                  Input({"type": ids.ALERTS_THRESHOLD_TYPE, "key": ALL}, "value"),
                  State(ids.SHELL_RUN_PICKER, "value"), prevent_initial_call=True)
    def write_threshold(values, run_id):
        trig = ctx.triggered_id
        if not isinstance(trig, dict) or len(ctx.triggered) != 1:
            raise PreventUpdate  # several at once = the load above filled them in
        try:
            root = require_listed_run(store, run_id)
        except PathRefused as exc:
            return build_problem(f"Not saved: {exc}.", "Thresholds are saved per run.")
        run = store.get(run_id)
        if run is None:
            return build_problem("No run selected: thresholds are saved per run.")
        if not run.has_collector:
            return build_problem(f"Not saved: {run.label} has no Trainboard collector to read thresholds, and the "
                                 "dashboard never writes into another tool's output directory.")
        key, value = triggered_slider(ctx.inputs_list, values, trig)
        if value is None:
            raise PreventUpdate
        try:
            msg, ok = save_threshold(root, key, value)
        except OSError as exc:
            return build_problem(f"Could not write control/thresholds.json: {exc.strerror or exc}")
        if not msg:
            raise PreventUpdate
        return msg if ok else build_problem(msg, "The previous thresholds stay in effect.")
