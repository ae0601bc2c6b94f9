"""The app shell every page sits in: nav bar, run picker, the shared 1 s tick, and the page container."""
from __future__ import annotations

from html import escape as html_escape
from typing import Any, Sequence

from dash import dcc, html

from components import ids

TICK_MS = 1000
"""Browser poll interval; each tick costs one cheap version check per visible page."""
PLOTLY_BUNDLE = "vendor/plotly-trainboard-4.1.1.min.js"
"""plotly.js with only :data:`PLOTLY_TRACE_TYPES`, under assets/ (scripts/plotly-bundle/README.md says how it is
built): 1.2 MB instead of Dash's 4.8 MB full bundle, whose start-up was most of a page's first-chart time."""
PLOTLY_TRACE_TYPES = ("scatter", "heatmap", "indicator")
"""The plotly trace types in :data:`PLOTLY_BUNDLE`: a figure of any other type would draw nothing."""
PLOTLY_ASSETS_IGNORE = r"^plotly-trainboard-.*\.js$"
"""Keeps Dash from adding the bundle as a blocking script: :func:`build_index_string` loads it."""
INDEX_TEMPLATE = """<!DOCTYPE html>
<html>
    <head>
        {%metas%}
        <title>{%title%}</title>
        {%favicon%}
        {%css%}
        <script defer src="{plotly_src}"></script>
        {chunk_scripts}
    </head>
    <body>
        {%app_entry%}
        <footer>
            {%config%}
            {%scripts%}
            {%renderer%}
        </footer>
    </body>
</html>"""
"""Dash's default page template (the documented ``index_string`` placeholders) plus the plotly.js tag."""


DCC_CHUNKS = ("graph", "dropdown")
"""dcc's lazily loaded chunks every page mounts at once (the charts, the run picker)."""

TABLE_CHUNKS = ("dash_table/async-table", "dash_table/async-highlight")
"""dash_table's lazily loaded chunks (under ``_dash-component-suites/dash/``), which a page holding a
``DataTable`` mounts at once. Requested from the head only by the pages that have a table (the page's
``dash_chunks`` in its registration): the table's code (630 KB) would cost every other page its parse."""


def chunk_scripts(chunks: Sequence[str], prefix: str = "/") -> str:
    """``<script defer>`` tags for Dash component chunks (``"dcc/async-graph"``) under ``prefix``, the app's
    ``requests_pathname_prefix``."""
    return "\n        ".join(
        f'<script defer src="{html_escape(prefix, quote=True)}_dash-component-suites/dash/'
        f'{html_escape(chunk, quote=True)}.js"></script>' for chunk in chunks)


def build_index_string(plotly_src: str, chunks_prefix: str = "/") -> str:
    """Dash's page template with plotly.js (``plotly_src``) requested from ``<head>`` with ``defer``.

    Dash loads plotly.js only when the first ``dcc.Graph`` mounts (after the layout and the first callbacks),
    and ``dcc.Graph`` uses ``window.Plotly`` when it is already defined. Requested from the head, the bundle
    downloads in parallel with Dash's scripts; ``defer`` runs it once the page is parsed, before any
    callback response is handled, so the first chart draws without waiting for a download.

    dcc's graph and dropdown chunks (:data:`DCC_CHUNKS`, under ``chunks_prefix``, the app's
    ``requests_pathname_prefix``) are requested the same way: dcc would fetch each only when the layout
    mounts its first Graph or Dropdown, and Dash fires no callback until they have arrived. A chunk run
    early registers itself with dcc's loader, which then does not fetch it again.
    """
    chunks = chunk_scripts([f"dcc/async-{c}" for c in DCC_CHUNKS], chunks_prefix)
    return INDEX_TEMPLATE.replace("{plotly_src}", html_escape(plotly_src, quote=True)).replace("{chunk_scripts}", chunks)


def with_page_chunks(index_html: str, chunks: Sequence[str], prefix: str = "/") -> str:
    """The served page ``index_html`` with the first page's own chunks (``chunks``, e.g.
    :data:`TABLE_CHUNKS`) requested from its head too, after the ones every page gets. Pure; unchanged
    when there are none or the page has no head."""
    if not chunks or "</head>" not in index_html:
        return index_html
    head, rest = index_html.split("</head>", 1)
    return f"{head}    {chunk_scripts(chunks, prefix)}\n    </head>{rest}"


def build_nav(items: Sequence[tuple[str, str]]) -> html.Nav:
    """Links to every page, ``items`` as (name, path)."""
    return html.Nav([dcc.Link(name, href=path, className="nav__link") for name, path in items],
                    className="nav__links", id=ids.SHELL_NAV)


def build_shell(nav_items: Sequence[tuple[str, str]], base_path: str, page_container: Any,
                run_options: Sequence[dict[str, str]] = (), run_value: str | None = None, run_hint: str = "",
                run_list_key: str | None = None) -> html.Div:
    """The whole app frame. ``page_container`` is Dash's ``dash.page_container``; the run picker starts
    filled (built per page load) so the page's first callback already knows the run. ``run_list_key``
    names the run list the options were built from (the tick sends it instead of the options)."""
    header = html.Header([
        html.Div([html.Span("Trainboard", className="brand__name"),
                  html.Span(base_path, className="brand__path", id=ids.SHELL_BASE_PATH, title=base_path)],
                 className="brand"),
        build_nav(nav_items),
        html.Div([html.Label("Run", htmlFor=ids.SHELL_RUN_PICKER, className="picker__label"),
                  dcc.Dropdown(id=ids.SHELL_RUN_PICKER, options=list(run_options), value=run_value, clearable=False,
                               placeholder="no run yet", className="picker__dropdown", persistence=True,
                               persistence_type="session"),
                  html.Span(run_hint, id=ids.SHELL_RUN_HINT, className="picker__hint")],
                 className="picker"),
    ], className="header")
    return html.Div([
        dcc.Location(id=ids.SHELL_URL),
        dcc.Interval(id=ids.SHELL_TICK, interval=TICK_MS, n_intervals=0),
        dcc.Store(id=ids.SHELL_PUSH, data=0),  # set by assets/push.js on a server push (services/push.py)
        dcc.Store(id=ids.SHELL_RUN_LIST_KEY, data=run_list_key),
        header,
        html.Main(page_container, className="main"),
    ], className="shell")


LOG_Y_DEFAULT: list[str] = []
"""The loss chart's log-scale toggle as a page opens (off)."""
SHOW_EVENTS_DEFAULT: list[str] = ["events"]
"""The events toggle as a page opens (on: new best model and plateau markers shown)."""


def build_overview_layout(initial: Sequence[Any] | None = None) -> html.Div:
    """The Overview page: state message, metric cards, loss chart with log-y toggle, LR and grad-norm charts.

    ``initial``: the page's first content, as the Overview callback's outputs (cards, message, updated-at,
    skipped note, loss/LR/grad figures, chart state), so the page arrives drawn; None leaves it to the
    callback."""
    cards, message, updated, skipped, loss_fig, lr_fig, grad_fig, state = (
        initial if initial is not None else ([], None, None, None, None, None, None, None))
    graph_cfg = {"displaylogo": False, "responsive": True}

    def graph(graph_id: str, fig: Any) -> dcc.Graph:
        return dcc.Graph(id=graph_id, config=graph_cfg, className="chart__graph",
                         **({"figure": fig} if fig is not None else {}))

    return html.Div([
        html.Div(message, id=ids.OVERVIEW_MESSAGE),
        html.Div(cards, id=ids.OVERVIEW_CARDS, className="cards"),
        html.Div([html.Span("Updated ", className="updated__label"),
                  html.Span("never", id=ids.OVERVIEW_UPDATED, className="updated__value")],
                 className="updated"),
        dcc.Store(id=ids.OVERVIEW_UPDATED_AT, data=updated),
        dcc.Store(id=ids.OVERVIEW_CHART_STATE, data=state),
        html.Div([
            html.Div([html.Div([
                dcc.Checklist(id=ids.OVERVIEW_LOG_Y, options=[{"label": " log-scale loss", "value": "log"}],
                              value=list(LOG_Y_DEFAULT), className="chart__toggle", inline=True),
                dcc.Checklist(id=ids.OVERVIEW_SHOW_EVENTS,
                              options=[{"label": " events (new best model, plateau)", "value": "events"}],
                              value=list(SHOW_EVENTS_DEFAULT), className="chart__toggle", inline=True)],
                className="chart__toggles"),
                      graph(ids.OVERVIEW_LOSS_GRAPH, loss_fig)],
                     className="chart chart--wide"),
            html.Div(graph(ids.OVERVIEW_LR_GRAPH, lr_fig), className="chart"),
            html.Div(graph(ids.OVERVIEW_GRAD_GRAPH, grad_fig), className="chart"),
        ], className="charts"),
        html.Div(id=ids.OVERVIEW_RANKS, className="ranks", hidden=True),
        html.Div(skipped, id=ids.OVERVIEW_SKIPPED, className="skipped"),
    ], className="page page--overview")


def build_page_container(template: Any, content: Any, title: str, *, pathname: str, search: str, hash_: str,
                         href: str) -> html.Div:
    """Dash's page container (``template``: ``dash.page_container``, whose component ids its router uses)
    with the page ``content`` already in it and its location set to the page's address: the router, which
    runs only when the location changes, then leaves the page as sent (see callbacks/shell.py first_page)."""
    location, content_div, store, dummy = template.children
    return html.Div([
        dcc.Location(id=location.id, refresh=location.refresh, pathname=pathname, search=search, hash=hash_,
                     href=href),
        html.Div(content, id=content_div.id, disable_n_clicks=True),
        dcc.Store(id=store.id, data={"title": title}),
        html.Div(id=dummy.id, disable_n_clicks=True),
    ])
