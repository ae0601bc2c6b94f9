"""Callbacks of the app shell: the run picker follows runs of every kind as they appear under the base dir.

Every run is reachable by typing part of its name in the picker, a folder of 2,000 runs included: the
picker holds at most :data:`PICKER_MAX_OPTIONS` runs at a time, and what a person types asks the server for
the matching runs (``dcc.Dropdown`` indexes each option for its own search as it mounts, ~0.5 ms an option
here: 2,000 options cost every page a second). The options go to the browser with the page and again only
when the run list or the typed text changed: each 1 s tick sends a short digest (:func:`options_key`, kept
in a store), never the options themselves.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

from dash import Dash, Input, Output, State, no_update

from components import ids
from components.layout import build_page_container
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


PICKER_MAX_OPTIONS = 100
"""Runs the picker holds at once (the first ones, or the first that match what is typed, plus the chosen one)."""


def matching_runs(run_ids: Sequence[str], label: Callable[[str], str], search: str | None, current: str | None,
                  limit: int = PICKER_MAX_OPTIONS) -> list[str]:
    """The first ``limit`` runs whose label contains every word of ``search`` (any case), in list order, and
    ``current`` (the chosen run, which the picker must hold to show it) when listed. Pure."""
    words = str(search or "").lower().split()
    out = [rid for rid in run_ids if all(w in label(rid).lower() for w in words)][:limit] if words else list(run_ids[:limit])
    if current in run_ids and current not in out:
        out.append(current)
    return out


def options_key(run_list_key: str, search: str | None) -> str:
    """What the picker's options were built from: the run list's digest and the typed text."""
    return f"{run_list_key}|{search or ''}"


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
    chosen = initial_run(catalog, requested, run_ids)
    return (run_options(matching_runs(run_ids, catalog.label, "", chosen), catalog.label), chosen,
            run_hint(len(run_ids), catalog.problems), options_key(catalog.run_list_key(), ""))


def initial_run(catalog: RunCatalog, requested: object = None, run_ids: Sequence[str] | None = None) -> str | None:
    """The run a page opens on: ``requested`` (the address's ``?run=``) when it is a listed run, else the
    catalog's default (the most recently updated). The picker and the Overview's first drawing agree on it."""
    listed = catalog.run_ids() if run_ids is None else run_ids
    return requested if isinstance(requested, str) and requested in listed else catalog.default_run()


def picker_update(catalog: RunCatalog, current: str | None, key: str | None, hint: str | None,
                  search: str | None = None) -> tuple[object, object, object, object]:
    """(options, value, hint, key) for one tick or a change of the typed ``search``; ``no_update`` for each
    that did not change. Cheap when nothing changed: the run list and the typed text are compared by their
    digest (:func:`options_key`), the options are built only when it differs or the chosen run changes."""
    run_ids = catalog.run_ids()
    new_key = options_key(catalog.run_list_key(), search)
    value = current if current in run_ids else pick_run(current, run_ids, catalog.default_run())
    new_hint = run_hint(len(run_ids), catalog.problems)
    options = (run_options(matching_runs(run_ids, catalog.label, search, value), catalog.label)
               if new_key != key or value != current else no_update)
    return (options, value if value != current else no_update, new_hint if new_hint != hint else no_update,
            new_key if new_key != key else no_update)


PAGE_HEADER = "X-Trainboard-Page"
"""Request header of Dash's layout request carrying the page's address (set by assets/firstpage.js)."""


@dataclass(frozen=True)
class FirstPage:
    """The page a layout request is for: its registry entry, query parameters (as Dash's router passes
    them to a page's layout) and the address parts ``dcc.Location`` holds (equal to ``window.location``'s,
    so the location does not fire the router on mount)."""

    page: Mapping[str, Any]
    query: dict[str, Any]
    pathname: str
    search: str
    hash: str
    href: str


def query_params(query: str) -> dict[str, Any]:
    """``a=1&b=2&b=3`` -> {"a": "1", "b": ["2", "3"]}: what Dash's page router passes to a layout. Pure."""
    return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(query).items()}


def first_page(href: str | None, strip: Callable[[str], str | None],
               pages: Iterable[Mapping[str, Any]]) -> FirstPage | None:
    """The registered page at address ``href`` (``strip``: the app's ``strip_relative_path``), or None when
    there is no address, it names no page (Dash's router then shows its 404 as usual), or it is malformed.
    Pure: the server uses it to send the first page drawn."""
    if not isinstance(href, str) or not href or len(href) > 8192:
        return None
    try:
        parts = urlsplit(href)
        path_id = strip(parts.path or "/")
    except Exception:  # noqa: BLE001 - ValueError, or Dash's UnsupportedRelativePath (a path outside the prefix)
        return None
    if path_id is None:
        return None
    for page in pages:
        if page.get("path_template"):
            continue  # a templated path needs Dash's own matching: left to the router
        if str(page.get("path", "")).strip("/") == path_id.strip("/"):
            return FirstPage(page, query_params(parts.query), parts.path or "/",
                             f"?{parts.query}" if parts.query else "",
                             f"#{parts.fragment}" if parts.fragment else "", href)
    return None


def page_chunks(path: str | None, strip: Callable[[str], str | None], pages: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """The component chunks (``dash_chunks`` of its registration) of the page at ``path``, for the page
    template to request from its head; none for an unknown page or address. Pure."""
    first = first_page(path, strip, pages)
    chunks = first.page.get("dash_chunks") if first is not None else None
    return tuple(c for c in chunks if isinstance(c, str)) if isinstance(chunks, (tuple, list)) else ()


def drawn_container(first: FirstPage | None, template: Any, default_title: str) -> Any:
    """Dash's page container (``template``: ``dash.page_container``) with ``first``'s page drawn in it, or the
    empty template when there is no page to draw or drawing it failed (Dash's router then draws it in its own
    round trip, as it always did)."""
    if first is None:
        return template
    layout, title = first.page.get("layout"), first.page.get("title") or default_title
    try:
        content = layout(**first.query) if callable(layout) else layout
        return build_page_container(template, content, title(**first.query) if callable(title) else title,
                                    pathname=first.pathname, search=first.search, hash_=first.hash, href=first.href)
    except Exception as exc:  # noqa: BLE001 - the page must open: the router draws it instead
        logging.getLogger("trainboard").error("Trainboard: drawing %s failed (%s: %s)", first.pathname,
                                              type(exc).__name__, exc)
        return template


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
                  Input(ids.SHELL_TICK, "n_intervals"), Input(ids.SHELL_RUN_PICKER, "search_value"),
                  State(ids.SHELL_RUN_PICKER, "value"), State(ids.SHELL_RUN_LIST_KEY, "data"),
                  State(ids.SHELL_RUN_HINT, "children"),
                  prevent_initial_call=True)  # the layout arrives with the picker filled: the first tick checks it
    def update_run_picker(_n: int, search: str | None, current: str | None, key: str | None, hint: str | None):
        return picker_update(catalog, current, key, hint, search)
