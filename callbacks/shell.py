"""Callbacks of the app shell: the run picker follows runs of every kind as they appear under the base dir.

The picker holds every run (a folder of 2,000 runs included: typing in it filters them in the browser, so
every run is reachable by name). Its options go to the browser with the page and again only when the run
list changed: each 1 s tick sends a short digest of the list (:meth:`RunCatalog.run_list_key`, kept in a
store), never the options themselves (~85 KB for 2,000 runs, on every tick of every open tab).
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

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
    text = "no runs yet" if n_runs == 0 else ("1 run" if n_runs == 1 else f"{n_runs:,} runs")
    if problems:
        text += " · skipped: " + "; ".join(problems)
    return text


def picker_state(catalog: RunCatalog, requested: str | None = None) -> tuple[list[dict[str, str]], str | None, str, str]:
    """Options, selected run, hint and run-list key of the run picker as the page opens. ``requested`` is
    the page address's ``?run=`` (a notification's link): selected when it is a listed run, else ignored."""
    run_ids = catalog.run_ids()
    chosen = requested if isinstance(requested, str) and requested in run_ids else catalog.default_run()
    return (run_options(run_ids, catalog.label), chosen, run_hint(len(run_ids), catalog.problems),
            catalog.run_list_key())


def picker_update(catalog: RunCatalog, current: str | None, key: str | None, hint: str | None
                  ) -> tuple[object, object, object, object]:
    """(options, value, hint, key) for one tick; ``no_update`` for each that did not change. Cheap when
    nothing changed: the run list is compared by its digest, the options are built only when it differs."""
    run_ids = catalog.run_ids()
    new_key = catalog.run_list_key()
    value = current if current in run_ids else pick_run(current, run_ids, catalog.default_run())
    new_hint = run_hint(len(run_ids), catalog.problems)
    options = run_options(run_ids, catalog.label) if new_key != key else no_update
    return (options, value if value != current else no_update, new_hint if new_hint != hint else no_update,
            new_key if new_key != key else no_update)


def triggered_components(prop_ids: Iterable[str]) -> frozenset[str]:
    """The component ids among a callback's triggers (``ctx.triggered_prop_ids``: ``"id.prop"``). Pure.

    Dash sends one request for inputs that changed together, and ``ctx.triggered_id`` names only the first:
    a tick (or a server push) that coincides with a click would read as "just the tick" and the click's
    change would be dropped by the cheap path. Callbacks ask whether the tick is the *only* trigger."""
    return frozenset(p.rsplit(".", 1)[0] for p in prop_ids if isinstance(p, str) and p != ".")


def only_tick(prop_ids: Iterable[str]) -> bool:
    """Whether the shell's tick alone triggered the callback (the cheap "anything new?" path may skip)."""
    return triggered_components(prop_ids) == {ids.SHELL_TICK}


def register(app: Dash) -> None:
    catalog = catalog_for(app)

    # a server push (assets/push.js, services/push.py) advances the tick now: every page refreshes at once
    app.clientside_callback("function(pushed, n) { return (n || 0) + 1; }",
                            Output(ids.SHELL_TICK, "n_intervals"), Input(ids.SHELL_PUSH, "data"),
                            State(ids.SHELL_TICK, "n_intervals"), prevent_initial_call=True)

    @app.callback(Output(ids.SHELL_RUN_PICKER, "options"), Output(ids.SHELL_RUN_PICKER, "value"),
                  Output(ids.SHELL_RUN_HINT, "children"), Output(ids.SHELL_RUN_LIST_KEY, "data"),
                  Input(ids.SHELL_TICK, "n_intervals"), State(ids.SHELL_RUN_PICKER, "value"),
                  State(ids.SHELL_RUN_LIST_KEY, "data"), State(ids.SHELL_RUN_HINT, "children"))
    def update_run_picker(_n: int, current: str | None, key: str | None, hint: str | None):
        return picker_update(catalog, current, key, hint)
