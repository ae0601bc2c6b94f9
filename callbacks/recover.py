"""The Recover panel's callbacks (issue 11): its content for a selected snapshot, and the code when the
skip range is edited.

Thin over pure functions: :func:`recover_panel_data` (reads one snapshot's metadata, safely, and asks
:func:`services.recovery.panel_data`), :func:`recover_panel_for` (the component for a page to embed).
The range callback is a pattern-matching one (``MATCH`` on the panel's key), so every panel on a page
(Snapshots now, the Alerts page's incidents later) updates on its own. Runs are looked up in the
catalog by id (never a path from the browser), snapshot names go through ``resolve_snapshot`` and
``safe_snapshot``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from dash import MATCH, Dash, Input, Output, State, no_update
from dash.exceptions import PreventUpdate

from collectors import runformat as rf
from collectors import snapshots as snap
from components import ids
from components.recover import build_recover_message, build_recover_panel, part_id
from services.context import catalog_for
from services.recovery import panel_data, run_length_of
from services.security import PathRefused, safe_snapshot


def recover_panel_data(run_root: Path, name: str, run_length: int | None = None, skip: str | None = None,
                       base: Path | None = None) -> dict[str, Any]:
    """:func:`services.recovery.panel_data` for snapshot ``name`` of the run at ``run_root`` (its
    metadata read only inside ``base``, default the run dir); problems come back as ``error``."""
    try:
        path = safe_snapshot(base or run_root, snap.resolve_snapshot(run_root, name))
    except (snap.SnapshotError, PathRefused) as exc:
        return {"ok": False, "last_good_step": None, "error": str(exc)}
    meta, problem = rf.read_json(path / rf.SNAPSHOT_METADATA)
    if not isinstance(meta, dict):
        return {"ok": False, "last_good_step": None,
                "error": f"cannot read {rf.SNAPSHOT_METADATA}: {problem or 'not a JSON object'}"}
    return panel_data(run_root, {"name": name, "metadata": meta}, run_length, skip)


def has_last_good(metadata: Mapping[str, Any] | None) -> bool:
    """Whether a snapshot's metadata offers a Recover panel (it names a last good state). Pure."""
    return isinstance(metadata, Mapping) and isinstance(metadata.get("last_good"), Mapping)


def recover_panel_for(run_id: str, run_root: Path, name: str, run_length: int | None = None,
                      base: Path | None = None) -> Any:
    """The Recover panel of snapshot ``name`` (for any page to embed), or ``None`` when the snapshot
    holds no last good state."""
    try:
        path = safe_snapshot(base or run_root, snap.resolve_snapshot(run_root, name))
    except (snap.SnapshotError, PathRefused):
        return None
    meta, _ = rf.read_json(path / rf.SNAPSHOT_METADATA)
    if not has_last_good(meta if isinstance(meta, dict) else None):
        return None
    data = recover_panel_data(run_root, name, run_length, None, base)
    return build_recover_panel(data, name, {"run_id": run_id, "snapshot": name, "run_length": run_length})


def edited_range(store: Any, context: Mapping[str, Any] | None, skip: str | None,
                 base: Path | None = None) -> tuple[str, str, Any]:
    """``(code, command, message)`` for a range typed in a panel. Pure over the catalog and files.

    A range that cannot be used keeps the code shown before (``no_update``) and says why."""
    ctx_ = context or {}
    run = store.get(ctx_.get("run_id"))
    if run is None:
        return no_update, no_update, build_recover_message({"error": "Not updated: this run is no longer listed"})
    length = ctx_.get("run_length") if isinstance(ctx_.get("run_length"), int) else run_length_of(run.status or {})
    data = recover_panel_data(run.paths.root, str(ctx_.get("snapshot") or ""), length, (skip or "").strip() or None, base)
    if data.get("error") or not data.get("ok"):
        return no_update, no_update, build_recover_message({"error": f"Not updated: {data.get('error')}"})
    return data.get("code", ""), data.get("command", ""), build_recover_message(data)


def register(app: Dash) -> None:
    store = catalog_for(app)
    base = Path(store.base)

    @app.callback(Output(ids.SNAPSHOTS_RECOVER, "children"), Input(ids.SNAPSHOTS_SELECTED, "data"),
                  Input(ids.SNAPSHOTS_REFRESH, "data"), State(ids.SHELL_RUN_PICKER, "value"))
    def show_recover(name, _refresh, run_id):
        run = store.get(run_id)
        if run is None or not name or not run.has_collector:
            return None
        return recover_panel_for(run.run_id, run.paths.root, name, run_length_of(run.status or {}), base)

    @app.callback(Output(part_id(ids.RECOVER_CODE_TYPE, MATCH), "children"),
                  Output(part_id(ids.RECOVER_COMMAND_TYPE, MATCH), "children"),
                  Output(part_id(ids.RECOVER_MESSAGE_TYPE, MATCH), "children"),
                  Input(part_id(ids.RECOVER_SKIP_TYPE, MATCH), "value"),
                  State(part_id(ids.RECOVER_CONTEXT_TYPE, MATCH), "data"), prevent_initial_call=True)
    def update_recover_code(skip, context):
        if context is None:
            raise PreventUpdate
        return edited_range(store, context, skip, base)
