"""The Overview's Ranks panel (issue 13): shown only for multi-process runs, refreshed on the shell's tick.

Registered by :func:`callbacks.overview.register` (it is part of that page). The decorated function is a
hand-off to :func:`update_ranks_panel`, which the unit tests call with real run directories.
"""
from __future__ import annotations

import time
from typing import Any

from dash import Dash, Input, Output, State
from dash.exceptions import PreventUpdate

from components import ids
from components.ranks import build_ranks_panel
from services.context import catalog_for
from services.model import Run
from services.ranks import ranks_view, reader_for


def update_ranks_panel(run: Run | None, now: float | None = None) -> tuple[list[Any], bool, int | None]:
    """``(children, hidden, version)`` of the panel for ``run``: hidden (and empty) unless the run has
    more than one process; ``version`` changes whenever a rank file changed."""
    if run is None:
        return [], True, None
    reader = reader_for(run.root)
    reader.poll()
    view = ranks_view(reader, run.status, time.time() if now is None else now)
    if not view.multi:
        return [], True, reader.version
    return build_ranks_panel(view), False, reader.version


def register(app: Dash) -> None:
    store = catalog_for(app)

    @app.callback(
        Output(ids.OVERVIEW_RANKS, "children"), Output(ids.OVERVIEW_RANKS, "hidden"),
        Input(ids.SHELL_TICK, "n_intervals"), Input(ids.SHELL_RUN_PICKER, "value"),
        State(ids.OVERVIEW_RANKS, "hidden"),
    )
    def update_ranks(_n: int | None, run_id: str | None, hidden: bool | None) -> tuple[list[Any], bool]:
        children, hide, _version = update_ranks_panel(store.get(run_id))
        if hide and hidden:
            raise PreventUpdate  # a single-process run: nothing to show, nothing re-rendered
        return children, hide
