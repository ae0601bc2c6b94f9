"""Callbacks of the app shell: the run picker follows runs as they appear under the base dir."""
from __future__ import annotations

from dash import Dash, Input, Output, State, no_update

from components import ids
from services.context import store_for
from services.runstore import BASE_RUN_ID, RunStore


def run_options(run_ids: list[str], base_name: str) -> list[dict[str, str]]:
    """Dropdown options for the run picker: the base dir itself is shown by its folder name."""
    return [{"label": base_name if rid == BASE_RUN_ID else rid, "value": rid} for rid in run_ids]


def pick_run(current: str | None, run_ids: list[str], default: str | None) -> str | None:
    """Keep the person's choice while it exists; otherwise show the most recently updated run."""
    if current in run_ids:
        return current
    return default


def run_hint(n_runs: int) -> str:
    if n_runs == 0:
        return "no runs yet"
    return "1 run" if n_runs == 1 else f"{n_runs} runs"


def picker_state(store: RunStore) -> tuple[list[dict[str, str]], str | None, str]:
    """Options, selected run and hint of the run picker as the page opens."""
    run_ids = store.run_ids()
    return run_options(run_ids, store.base.name), store.default_run(), run_hint(len(run_ids))


def register(app: Dash) -> None:
    store = store_for(app)

    @app.callback(Output(ids.SHELL_RUN_PICKER, "options"), Output(ids.SHELL_RUN_PICKER, "value"),
                  Output(ids.SHELL_RUN_HINT, "children"),
                  Input(ids.SHELL_TICK, "n_intervals"), State(ids.SHELL_RUN_PICKER, "value"),
                  State(ids.SHELL_RUN_PICKER, "options"))
    def update_run_picker(_n: int, current: str | None, options: list[dict] | None):
        run_ids = store.run_ids()
        new_options = run_options(run_ids, store.base.name)
        value = pick_run(current, run_ids, store.default_run() if current not in run_ids else current)
        if new_options == (options or []) and value == current:
            return no_update, no_update, no_update
        return new_options, value, run_hint(len(run_ids))
