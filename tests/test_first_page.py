"""A page arrives drawn: the layout request names the page (assets/firstpage.js), the server sends its
content inside Dash's page container (callbacks/shell.py first_page, components/layout.py
build_page_container), and Dash's page router, which runs only when the location changes, is not asked.

Pure units for the address matching, the server's answer over HTTP with and without the header, and a real
browser: the Overview drawn without a router request, ``?run=`` (a notification's link) selecting its run,
and navigation between pages still going through the router.
"""
from __future__ import annotations

import json
import math
import time
import urllib.request

import pytest

from callbacks.shell import PAGE_HEADER, drawn_container, first_page, page_chunks, query_params
from collectors import runformat as rf
from components.layout import DCC_CHUNKS, TABLE_CHUNKS, build_index_string, build_page_container, with_page_chunks
from tests.conftest import assert_no_console_errors

TIMEOUT_MS = 30_000
PAGES = [{"path": "/", "title": "Overview", "layout": None}, {"path": "/alerts", "title": "Alerts", "layout": None},
         {"path": "/item/<id>", "path_template": "/item/<id>", "title": "Item", "layout": None}]


def strip(path: str) -> str:  # Dash's strip_relative_path with the default prefix "/"
    return path.strip("/")


# ------------------------------------------------------------------------------------------ pure units
def test_query_params_are_what_dash_router_passes():
    assert query_params("") == {}
    assert query_params("run=a%2Fb&x=1&x=2") == {"run": "a/b", "x": ["1", "2"]}


def test_first_page_matches_the_registered_path_and_keeps_the_address_parts():
    fp = first_page("http://127.0.0.1:8081/alerts?run=exp%201#top", strip, PAGES)
    assert fp is not None and fp.page["title"] == "Alerts"
    assert fp.query == {"run": "exp 1"}
    # the parts dcc.Location compares with window.location: equal, so it does not fire the router on mount
    assert (fp.pathname, fp.search, fp.hash, fp.href) == ("/alerts", "?run=exp%201", "#top",
                                                          "http://127.0.0.1:8081/alerts?run=exp%201#top")
    root = first_page("http://127.0.0.1:8081/", strip, PAGES)
    assert root is not None and root.page["title"] == "Overview" and (root.search, root.hash) == ("", "")
    assert first_page("http://127.0.0.1:8081/alerts/", strip, PAGES).page["title"] == "Alerts"


@pytest.mark.parametrize("href", [None, "", 17, "http://h/nope", "http://h/item/3", "http://[::1/x",
                                  "http://h/" + "a" * 9000])
def test_first_page_leaves_everything_else_to_the_router(href):
    """No address, an unknown page (the router's 404), a templated path, a malformed or huge address."""
    assert first_page(href, strip, PAGES) is None


def test_first_page_with_a_path_prefix():
    def strip_prefixed(path: str) -> str | None:
        return path[len("/tb/"):].strip("/") if path.startswith("/tb/") else None

    assert first_page("http://h/tb/alerts", strip_prefixed, PAGES).page["title"] == "Alerts"
    assert first_page("http://h/other/alerts", strip_prefixed, PAGES) is None


def test_page_container_keeps_dash_ids_and_holds_the_content():
    import dash
    from dash import html

    pc = build_page_container(dash.page_container, html.P("drawn", id="x"), "Alerts", pathname="/alerts",
                              search="?run=a", hash_="", href="http://h/alerts?run=a")
    loc, content, store, dummy = pc.children
    assert [c.id for c in pc.children] == [c.id for c in dash.page_container.children]
    assert (loc.pathname, loc.search, loc.hash, loc.href, loc.refresh) == (
        "/alerts", "?run=a", "", "http://h/alerts?run=a", dash.page_container.children[0].refresh)
    assert content.children.id == "x" and store.data == {"title": "Alerts"}
    assert dash.page_container.children[1].children is None  # the template itself is untouched


def test_drawn_container_draws_the_page_or_leaves_it_to_the_router():
    import dash
    from dash import html

    def layout(run=None, **_):
        return html.P(f"run {run}")

    def broken(**_):
        raise RuntimeError("unreadable")

    pages = [{"path": "/", "title": lambda **q: f"Overview of {q.get('run')}", "layout": layout},
             {"path": "/broken", "title": "Broken", "layout": broken}]
    fp = first_page("http://h/?run=a", strip, pages)
    pc = drawn_container(fp, dash.page_container, "Trainboard")
    assert pc.children[1].children.children == "run a" and pc.children[2].data == {"title": "Overview of a"}
    assert drawn_container(None, dash.page_container, "Trainboard") is dash.page_container
    assert drawn_container(first_page("http://h/broken", strip, pages), dash.page_container, "x") is dash.page_container


def test_index_requests_the_chunks_dcc_would_fetch_late():
    page = build_index_string("/assets/p.js", "/tb/")
    for chunk in DCC_CHUNKS:
        assert f'<script defer src="/tb/_dash-component-suites/dash/dcc/async-{chunk}.js"></script>' in page
    assert page.index('src="/assets/p.js"') < page.index("async-graph.js")


def test_a_page_with_a_table_requests_the_table_chunks_from_the_head():
    pages = PAGES + [{"path": "/runs", "title": "Runs", "layout": None, "dash_chunks": TABLE_CHUNKS},
                     {"path": "/odd", "title": "Odd", "layout": None, "dash_chunks": "not-a-list"}]
    assert page_chunks("/runs", strip, pages) == TABLE_CHUNKS
    for other in ("/", "/alerts", "/odd", "/no-such-page", "/item/3", None, "", "http://[::1/x"):
        assert page_chunks(other, strip, pages) == (), other
    index = "<html><head><title>t</title></head><body>x</body></html>"
    served = with_page_chunks(index, TABLE_CHUNKS, "/tb/")
    head, body = served.split("</head>")
    for chunk in TABLE_CHUNKS:
        assert f'<script defer src="/tb/_dash-component-suites/dash/{chunk}.js"></script>' in head
    assert body == "<body>x</body></html>" and head.startswith("<html><head><title>t</title>")
    assert with_page_chunks(index, (), "/") == index and with_page_chunks("no head", TABLE_CHUNKS) == "no head"


# ------------------------------------------------------------------------------------------ real server
def write_run(run, steps, loss0=3.0):
    paths = rf.RunPaths.of(run)
    with rf.JsonlWriter(paths.metrics) as w:
        for i in range(1, steps + 1):
            w.append(rf.make_record("train", step=i, time=time.time(), loss=loss0 / i, learning_rate=1e-3,
                                    grad_norm=1.0 + (i % 5) / 10))
    rf.write_json_atomic(paths.status, {"v": 1, "state": "training", "step": steps, "train_loss": loss0 / steps,
                                        "updated_at": time.time()})


def layout_json(url: str, page_url: str | None) -> dict:
    req = urllib.request.Request(url + "/_dash-layout", headers={PAGE_HEADER: page_url} if page_url else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def find(node, component_id):
    """The component with ``component_id`` in a layout's JSON, depth first."""
    if isinstance(node, dict):
        if node.get("props", {}).get("id") == component_id:
            return node
        for v in node.get("props", {}).values():
            hit = find(v, component_id)
            if hit is not None:
                return hit
    elif isinstance(node, list):
        for v in node:
            hit = find(v, component_id)
            if hit is not None:
                return hit
    return None


def test_layout_request_with_the_page_header_arrives_drawn(tmp_path, dashboard):
    base = tmp_path / "base"
    write_run(base / "run-a", 30)
    srv = dashboard(base)
    plain = layout_json(srv.url, None)
    assert find(plain, "_pages_content")["props"].get("children") is None  # no header: Dash's router draws it
    assert find(plain, "overview-loss-graph") is None
    drawn = layout_json(srv.url, srv.url + "/")
    content = find(drawn, "_pages_content")
    loss = find(content, "overview-loss-graph")["props"]["figure"]
    assert loss["data"][0]["x"][-1] == 30 and math.isclose(loss["data"][0]["y"][-1], 0.1)
    assert find(content, "overview-chart-state")["props"]["data"]["run"] == "run-a"
    assert find(drawn, "_pages_location")["props"]["pathname"] == "/"
    assert find(drawn, "_pages_store")["props"]["data"] == {"title": "Trainboard · Overview"}
    # a page without data (an unknown address) and a hostile header are the router's: no error, no drawing
    for bad in (srv.url + "/no-such-page", "http://[::1/x", "../../etc/passwd"):
        assert find(layout_json(srv.url, bad), "_pages_content")["props"].get("children") is None


def test_only_the_pages_with_a_table_are_served_with_its_code(tmp_path, dashboard):
    base = tmp_path / "base"
    write_run(base / "run-a", 5)
    srv = dashboard(base)

    def head(path: str) -> str:
        with urllib.request.urlopen(srv.url + path, timeout=60) as resp:
            return resp.read().decode().split("</head>")[0]
    for path in ("/runs", "/snapshots", "/runs?run=run-a"):
        assert all(f"dash/{chunk}.js" in head(path) for chunk in TABLE_CHUNKS), path
    for path in ("/", "/alerts", "/no-such-page"):
        assert "dash_table/async" not in head(path) and "dcc/async-graph.js" in head(path), path


# ------------------------------------------------------------------------------------------ real browser
@pytest.mark.browser
def test_pages_open_drawn_and_navigation_still_routes(tmp_path, dashboard, page):
    base = tmp_path / "base"
    write_run(base / "run-a", 40)
    write_run(base / "run-b", 25, loss0=5.0)  # the newer one: the default run
    srv = dashboard(base)
    routed = []
    page.on("request", lambda r: routed.append(r.url) if "_pages_content" in (r.post_data or "") else None)

    page.goto(srv.url + "/", wait_until="load")
    page.wait_for_function("() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot');"
                           " return g && g.data && g.data[0] && g.data[0].x.length === 25; }", timeout=TIMEOUT_MS)
    page.locator("#overview-cards").get_by_text("25").first.wait_for(timeout=TIMEOUT_MS)
    assert page.title() == "Trainboard · Overview"
    assert routed == []  # drawn by the layout request: the router was not asked

    # a notification's link: ?run= selects that run in the picker and on the page
    page.goto(srv.url + "/?run=run-a", wait_until="load")
    page.wait_for_function("() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot');"
                           " return g && g.data && g.data[0] && g.data[0].x.length === 40; }", timeout=TIMEOUT_MS)
    page.locator("#shell-run-picker").get_by_text("run-a").wait_for(timeout=TIMEOUT_MS)
    assert routed == []
    page.goto(srv.url + "/alerts?run=run-a", wait_until="load")  # the link a notification carries
    page.wait_for_function("() => document.title === 'Trainboard · Alerts'", timeout=TIMEOUT_MS)
    page.locator("#shell-run-picker").get_by_text("run-a").wait_for(timeout=TIMEOUT_MS)
    page.goto(srv.url + "/?run=run-a", wait_until="load")
    page.wait_for_function("() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot');"
                           " return g && g.data && g.data[0] && g.data[0].x.length === 40; }", timeout=TIMEOUT_MS)
    assert routed == []

    # moving to another page goes through Dash's router as before, and back again
    page.get_by_role("link", name="Alerts").click()
    page.wait_for_function("() => document.title === 'Trainboard · Alerts'", timeout=TIMEOUT_MS)
    page.wait_for_function("() => location.pathname === '/alerts'", timeout=TIMEOUT_MS)
    assert len(routed) >= 1
    page.get_by_role("link", name="Overview").click()
    page.wait_for_function("() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot');"
                           " return g && g.data && g.data[0] && g.data[0].x.length === 40; }", timeout=TIMEOUT_MS)
    assert_no_console_errors(page)
