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


def build_index_string(plotly_src: str) -> str:
    """Dash's page template with plotly.js (``plotly_src``) requested from ``<head>`` with ``defer``.

    Dash loads plotly.js only when the first ``dcc.Graph`` mounts (after the layout and the first callbacks),
    and ``dcc.Graph`` uses ``window.Plotly`` when it is already defined. Requested from the head, the bundle
    downloads in parallel with Dash's scripts; ``defer`` runs it once the page is parsed, before any
    callback response is handled, so the first chart draws without waiting for a download.
    """
    return INDEX_TEMPLATE.replace("{plotly_src}", html_escape(plotly_src, quote=True))


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


def build_overview_layout() -> html.Div:
    """The Overview page: state message, metric cards, loss chart with log-y toggle, LR and grad-norm charts."""
    graph_cfg = {"displaylogo": False, "responsive": True}
    return html.Div([
        html.Div(id=ids.OVERVIEW_MESSAGE),
        html.Div(id=ids.OVERVIEW_CARDS, className="cards"),
        html.Div([html.Span("Updated ", className="updated__label"),
                  html.Span("never", id=ids.OVERVIEW_UPDATED, className="updated__value")],
                 className="updated"),
        dcc.Store(id=ids.OVERVIEW_UPDATED_AT, data=None),
        dcc.Store(id=ids.OVERVIEW_CHART_STATE, data=None),
        html.Div([
            html.Div([html.Div([
                dcc.Checklist(id=ids.OVERVIEW_LOG_Y, options=[{"label": " log-scale loss", "value": "log"}],
                              value=[], className="chart__toggle", inline=True),
                dcc.Checklist(id=ids.OVERVIEW_SHOW_EVENTS,
                              options=[{"label": " events (new best model, plateau)", "value": "events"}],
                              value=["events"], className="chart__toggle", inline=True)], className="chart__toggles"),
                      dcc.Graph(id=ids.OVERVIEW_LOSS_GRAPH, config=graph_cfg, className="chart__graph")],
                     className="chart chart--wide"),
            html.Div(dcc.Graph(id=ids.OVERVIEW_LR_GRAPH, config=graph_cfg, className="chart__graph"), className="chart"),
            html.Div(dcc.Graph(id=ids.OVERVIEW_GRAD_GRAPH, config=graph_cfg, className="chart__graph"), className="chart"),
        ], className="charts"),
        html.Div(id=ids.OVERVIEW_RANKS, className="ranks", hidden=True),
        html.Div(id=ids.OVERVIEW_SKIPPED, className="skipped"),
    ], className="page page--overview")
