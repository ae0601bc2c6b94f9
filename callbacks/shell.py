"""Callbacks of the app shell: the run picker follows runs of every kind as they appear under the base dir."""
from __future__ import annotations

from typing import Callable, Sequence

from dash import Dash, Input, Output, State, no_update

from components import ids
from services.catalog import RunCatalog
from services.context import catalog_for


def run_options(run_ids: Sequence[str], label: Callable[[str], str]) -> list[dict[str, str]]:
    """Dropdown options for the run picker: each run by its path, with its kind when not a Trainboard run."""
    return [{"label": label(rid), "value": rid} for rid in run_ids]


def pick_run(current: str | None, run_ids: list[str], default: str | None) -> str | None:
    """Keep the person's choice while it exists; otherwise show the most recently updated run."""
    if current in run_ids:
        return current
    return default


def run_hint(n_runs: int, problems: Sequence[str] = ()) -> str:
    """"3 runs", plus what discovery skipped (a symbolic link not followed), so nothing vanishes silently."""
    text = "no runs yet" if n_runs == 0 else ("1 run" if n_runs == 1 else f"{n_runs} runs")
    if problems:
        text += " · skipped: " + "; ".join(problems)
    return text


def picker_state(catalog: RunCatalog, requested: str | None = None) -> tuple[list[dict[str, str]], str | None, str]:
    """Options, selected run and hint of the run picker as the page opens. ``requested`` is the page
    address's ``?run=`` (a notification's link): selected when it is a listed run, else ignored."""
    run_ids = catalog.run_ids()
    chosen = requested if isinstance(requested, str) and requested in run_ids else catalog.default_run()
    return run_options(run_ids, catalog.label), chosen, run_hint(len(run_ids), catalog.problems)


def register(app: Dash) -> None:
    catalog = catalog_for(app)

    # a server push (assets/push.js, services/push.py) advances the tick now: every page refreshes at once
    app.clientside_callback("function(pushed, n) { return (n || 0) + 1; }",
                            Output(ids.SHELL_TICK, "n_intervals"), Input(ids.SHELL_PUSH, "data"),
                            State(ids.SHELL_TICK, "n_intervals"), prevent_initial_call=True)

    @app.callback(Output(ids.SHELL_RUN_PICKER, "options"), Output(ids.SHELL_RUN_PICKER, "value"),
                  Output(ids.SHELL_RUN_HINT, "children"),
                  Input(ids.SHELL_TICK, "n_intervals"), State(ids.SHELL_RUN_PICKER, "value"),
                  State(ids.SHELL_RUN_PICKER, "options"), State(ids.SHELL_RUN_HINT, "children"))
    def update_run_picker(_n: int, current: str | None, options: list[dict] | None, hint: str | None):
        run_ids = catalog.run_ids()
        new_options = run_options(run_ids, catalog.label)
        value = pick_run(current, run_ids, catalog.default_run() if current not in run_ids else current)
        new_hint = run_hint(len(run_ids), catalog.problems)
        if new_options == (options or []) and value == current and new_hint == hint:
            return no_update, no_update, no_update
        return new_options, value, new_hint
