"""Snapshots page: history table, metadata/status viewer, pin/unpin/delete, and "Snapshot now".

"Snapshot now" is a Dash background callback (DiskcacheManager): it writes the request for a live
training or Smart Monitor, or copies the latest checkpoint itself when neither runs, shows progress
while it waits, and shows the outcome — a failure in words, never silently. Every snapshot name from
the browser goes through :func:`collectors.snapshots.resolve_snapshot` (no path leaves the run dir), then
:func:`services.security.safe_snapshot` (no symlink leads out of the base dir); actions only act on runs the
store lists (:func:`services.security.require_listed_run`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dash
from dash import Dash, Input, Output, State, ctx
from dash.exceptions import PreventUpdate

from collectors import runformat as rf
from collectors import snapshots as snap
from components import ids
from components.layout import TABLE_CHUNKS
from components.messages import build_not_collected, build_problem, build_waiting
from components.snapshots import build_detail, build_result, build_retention, build_snapshots_layout, table_rows
from services.context import catalog_for
from services.security import PathRefused, require_listed_run, safe_run_root, safe_snapshot, snapshot_refusal


def listing_signature(rows: list[dict[str, Any]]) -> list[Any]:
    """What must change for the table to re-render (pure)."""
    return [[r["name"], r["pinned"], r["size_bytes"]] for r in rows]


def retention_view(infos: list[snap.SnapshotInfo], policy: snap.RetentionPolicy | None, free: int | None,
                   now: float, problem: str | None = None) -> dict[str, Any]:
    """What the disk panel shows (pure): the collector's own planner over the listed snapshots, with
    the policy it wrote in ``control/snapshot_retention.json`` (the defaults, without a budget, when absent)."""
    known = policy is not None
    policy = policy or snap.RetentionPolicy()
    plan = snap.plan_retention(infos, policy, now)
    typical = max((i.size_bytes or 0 for i in infos), default=0)
    floor = max(policy.min_free_gb * snap.BYTES_PER_GB, 2 * typical)
    rules = (f"Keeps the {policy.keep_best} best models by loss" if policy.keep_best else "Keeps every best model")
    rules += (f" and the last {policy.keep_last} anomaly snapshots" if policy.keep_last else " and every anomaly snapshot")
    if policy.max_age_days is not None:
        rules += f" (none older than {policy.max_age_days:g} days)"
    rules += "; pinned and manual snapshots are never removed."
    if not known:
        rules += " (The collector has not written its settings yet: showing the defaults.)"
    return {"used_bytes": plan.used_bytes, "budget_bytes": plan.budget_bytes, "pinned_bytes": plan.pinned_bytes,
            "crowded": plan.crowded, "remove": [list(r) for r in plan.remove], "next_out": [list(n) for n in plan.next_out],
            "free_bytes": free, "floor_text": f"{floor / snap.BYTES_PER_GB:.3g} GB free", "rules": rules,
            "problem": problem}


def selected_name(data: list[dict[str, Any]] | None, selected: list[int] | None) -> str | None:
    if not data or not selected or selected[0] >= len(data):
        return None
    return data[selected[0]].get("name")


def snapshot_detail(run_root: Path, name: str | None, base: Path | None = None) -> Any:
    """The detail panel of snapshot ``name``; nothing outside ``base`` (default: the run dir) is read."""
    if not name:
        return build_detail(None, None, None)
    try:
        path = safe_snapshot(base or run_root, snap.resolve_snapshot(run_root, name))
    except (snap.SnapshotError, PathRefused) as exc:
        return build_detail(name, None, None, str(exc))
    meta, p1 = rf.read_json(path / rf.SNAPSHOT_METADATA)
    status, p2 = rf.read_json(path / rf.SNAPSHOT_STATUS)
    return build_detail(name, meta, status, p1 or p2)


def apply_action(run_root: Path, name: str | None, action: str, base: Path | None = None) -> tuple[str, bool]:
    """Pin, unpin or delete ``name``; returns (message, ok). Errors are messages, never exceptions.

    A snapshot (or ``snapshots/``, or a file in it) that leads outside ``base`` (default: the run dir) is refused.
    """
    if not name:
        return "Select a snapshot first.", False
    try:
        safe_snapshot(base or run_root, snap.resolve_snapshot(run_root, name))
        if action == "pin":
            snap.set_pinned(run_root, name, True)
            return f"Pinned {name}: it will never be pruned or deleted.", True
        if action == "unpin":
            snap.set_pinned(run_root, name, False)
            return f"Unpinned {name}.", True
        if action == "delete":
            snap.delete_snapshot(run_root, name)
            return f"Deleted {name}.", True
    except (snap.SnapshotError, PathRefused) as exc:
        return str(exc), False
    except OSError as exc:
        return f"{action} failed: {exc.strerror or exc}", False
    return f"unknown action {action!r}", False


NOT_COLLECTED_DETAIL = ("Snapshots are saved by the Trainboard collector inside a training (MonitorCallback "
                        "or Monitor); its checkpoints are listed on the Runs page.")


def layout(**_query: Any) -> Any:
    return build_snapshots_layout()


def register(app: Dash) -> None:
    store = catalog_for(app)
    base = Path(store.base)
    dash.register_page("snapshots", path="/snapshots", name="Snapshots", title="Trainboard · Snapshots",
                       layout=layout, order=11, dash_chunks=TABLE_CHUNKS)

    @app.callback(Output(ids.SNAPSHOTS_TABLE, "data"), Output(ids.SNAPSHOTS_MESSAGE, "children"),
                  Output(ids.SNAPSHOTS_STATE, "data"), Output(ids.SNAPSHOTS_TABLE, "selected_rows"),
                  Output(ids.SNAPSHOTS_RETENTION, "children"),
                  Input(ids.SHELL_TICK, "n_intervals"), Input(ids.SHELL_RUN_PICKER, "value"),
                  Input(ids.SNAPSHOTS_REFRESH, "data"), State(ids.SNAPSHOTS_STATE, "data"),
                  State(ids.SNAPSHOTS_SELECTED, "data"))
    def update_table(_n, run_id, _refresh, prev, selected):
        run = store.get(run_id)
        if run is None:
            if prev == {"waiting": True}:
                raise PreventUpdate
            return [], build_waiting(str(store.base), "Snapshots appear here once a run exists."), {"waiting": True}, [], ""
        if not run.has_collector:
            state = {"run": run_id, "not_collected": True}
            if prev == state:
                raise PreventUpdate
            return [], build_not_collected("snapshots", run.label, NOT_COLLECTED_DETAIL), state, [], ""
        try:
            root = safe_run_root(base, run.paths.root)
        except PathRefused as exc:
            if prev == {"run": run_id, "refused": str(exc)}:
                raise PreventUpdate
            return [], build_problem(str(exc)), {"run": run_id, "refused": str(exc)}, [], ""
        infos = [i for i in snap.list_snapshots(root) if snapshot_refusal(base, i.path) is None]
        rows = [i.to_row() for i in infos]
        policy, doc, problem = snap.read_retention(root)
        state = {"run": run_id, "sig": listing_signature(rows), "policy": policy.to_doc() if policy else problem}
        if prev == state:
            raise PreventUpdate
        message = None if rows else html_hint(run.paths.snapshots_dir)
        view = retention_view(infos, policy, snap.store.free_bytes(run.paths.snapshots_dir), time.time(), problem)
        # selection follows the snapshot's name, not its row number, as rows come and go
        return (table_rows(rows), message, state, [i for i, r in enumerate(rows) if r["name"] == selected][:1],
                build_retention(view))

    @app.callback(Output(ids.SNAPSHOTS_SELECTED, "data"), Input(ids.SNAPSHOTS_TABLE, "selected_rows"),
                  State(ids.SNAPSHOTS_TABLE, "data"), State(ids.SNAPSHOTS_SELECTED, "data"))
    def select(selected, data, current):
        name = selected_name(data, selected)
        if name == current:
            raise PreventUpdate
        return name

    @app.callback(Output(ids.SNAPSHOTS_DETAIL, "children"), Input(ids.SNAPSHOTS_SELECTED, "data"),
                  Input(ids.SNAPSHOTS_REFRESH, "data"), State(ids.SHELL_RUN_PICKER, "value"))
    def show_detail(name, _refresh, run_id):
        run = store.get(run_id)
        return snapshot_detail(run.paths.root, name, base) if run is not None else build_detail(None, None, None)

    @app.callback(Output(ids.SNAPSHOTS_ACTION_MESSAGE, "children"), Output(ids.SNAPSHOTS_REFRESH, "data"),
                  Output(ids.SNAPSHOTS_SELECTED, "data", allow_duplicate=True),
                  Input(ids.SNAPSHOTS_PIN_BUTTON, "n_clicks"), Input(ids.SNAPSHOTS_UNPIN_BUTTON, "n_clicks"),
                  Input(ids.SNAPSHOTS_DELETE_CONFIRM, "submit_n_clicks"),
                  State(ids.SNAPSHOTS_SELECTED, "data"), State(ids.SHELL_RUN_PICKER, "value"),
                  State(ids.SNAPSHOTS_REFRESH, "data"), prevent_initial_call=True)
    def act(_pin, _unpin, _delete, name, run_id, refresh):
        action = {ids.SNAPSHOTS_PIN_BUTTON: "pin", ids.SNAPSHOTS_UNPIN_BUTTON: "unpin",
                  ids.SNAPSHOTS_DELETE_CONFIRM: "delete"}.get(ctx.triggered_id)
        if action is None or not ctx.triggered[0].get("value"):
            raise PreventUpdate
        try:
            root = require_listed_run(store, run_id)
        except PathRefused as exc:
            return build_problem(f"Nothing done: {exc}."), refresh, name
        msg, ok = apply_action(root, name, action, base)
        out = msg if ok else build_problem(msg)
        return out, (refresh or 0) + 1, (None if ok and action == "delete" else name)

    @app.callback(Output(ids.SNAPSHOTS_NOW_RESULT, "children"),
                  Input(ids.SNAPSHOTS_NOW_BUTTON, "n_clicks"), State(ids.SHELL_RUN_PICKER, "value"),
                  background=True, prevent_initial_call=True,
                  running=[(Output(ids.SNAPSHOTS_NOW_BUTTON, "disabled"), True, False)],
                  progress=[Output(ids.SNAPSHOTS_NOW_PROGRESS, "children")])
    def snapshot_now(set_progress, n_clicks, run_id):
        if not n_clicks:
            raise PreventUpdate
        run = store.get(run_id)
        if run is not None and not run.has_collector:
            set_progress("")
            return build_result({"ok": False, "error": f"{run.label} has no Trainboard collector: the dashboard "
                                 "never writes snapshots into another tool's output directory"})
        try:
            root = require_listed_run(store, run_id)
        except PathRefused as exc:
            set_progress("")
            return build_result({"ok": False, "error": str(exc)})
        try:
            res = snap.snapshot_now(root, progress=lambda m: set_progress(m))
        except Exception as exc:  # noqa: BLE001 - shown to the person instead of a silent failure
            res = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        set_progress("")
        return build_result(res)


def html_hint(snaps_dir: Path) -> Any:
    from dash import html

    return html.Div(["No snapshots yet in ", html.Code(str(snaps_dir)),
                     ". They are saved on loss spikes, accuracy drops, divergence and new best models, "
                     "or with “Snapshot now”."], className="message message--waiting")
