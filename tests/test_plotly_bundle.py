"""The dashboard's own plotly.js bundle (assets/vendor, scripts/plotly-bundle/README.md).

Pages load a plotly.js built with only the trace types they draw, from the page's ``<head>``; Dash's full
4.8 MB bundle must never be fetched. The unit tests check the page template, the vendored file and that no
code names a trace type the bundle lacks (such a chart would draw nothing); the browser test opens a real
dashboard and draws every bundled trace type with the bundle the page loaded.
"""
from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import plotly.graph_objects as go
import pytest
from plotly.basedatatypes import BaseTraceType

from collectors import runformat as rf
from components.layout import (INDEX_TEMPLATE, PLOTLY_ASSETS_IGNORE, PLOTLY_BUNDLE, PLOTLY_TRACE_TYPES,
                               build_index_string)
from tests.conftest import assert_no_console_errors

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "assets" / PLOTLY_BUNDLE
TIMEOUT_MS = 30_000
ALL_TRACE_TYPES = {name.lower() for name in dir(go) if name[:1].isupper()
                   and isinstance(getattr(go, name), type) and issubclass(getattr(go, name), BaseTraceType)}
"""Every plotly trace type (from plotly's own trace classes): ``scatter``, ``scattergl``, ``bar``, ..."""
CODE_DIRS = ("components", "callbacks", "services")


def trace_types_named_in_code() -> dict[str, list[str]]:
    """Plotly trace types the dashboard's code names: ``"type": "x"`` / ``type="x"`` literals and ``go.X(``
    constructors, keyed by type, each with the files naming it."""
    found: dict[str, list[str]] = {}
    literal = re.compile(r"""["']?type["']?\s*[:=]\s*["']([a-z0-9]+)["']""")
    ctor = re.compile(r"\bgo\.([A-Z][A-Za-z0-9]*)\(")
    for d in CODE_DIRS:
        for path in sorted((REPO / d).rglob("*.py")):
            text = path.read_text()
            names = set(literal.findall(text)) | {c.lower() for c in ctor.findall(text)}
            for name in names & ALL_TRACE_TYPES:
                found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def test_the_code_draws_only_trace_types_the_bundle_has():
    found = trace_types_named_in_code()
    assert {"scatter", "heatmap", "indicator"} <= set(found), found  # the scan sees what the pages draw
    missing = {t: files for t, files in found.items() if t not in PLOTLY_TRACE_TYPES}
    assert not missing, (f"trace types not in the page's plotly.js bundle (they would draw nothing): {missing}; "
                         "add them to scripts/plotly-bundle/index-trainboard.js and PLOTLY_TRACE_TYPES, and rebuild")


def test_vendored_bundle_is_the_recorded_file():
    data = BUNDLE.read_bytes()
    version = re.search(r"plotly-trainboard-([0-9.]+)\.min\.js$", PLOTLY_BUNDLE).group(1)
    assert data.startswith(b"/**\n* plotly.js (trainboard: scatter, heatmap, indicator) v" + version.encode())
    sums = (BUNDLE.parent / "SHA256SUMS").read_text().split()
    assert sums == [hashlib.sha256(data).hexdigest(), BUNDLE.name]
    assert (BUNDLE.parent / "LICENSE-plotly.js.txt").read_text().startswith("MIT License")
    assert b"Bundled license information" in data[-20_000:]  # the bundled packages' licences kept
    assert re.search(PLOTLY_ASSETS_IGNORE, BUNDLE.name)  # Dash does not add it as a blocking script too


def test_index_string_defers_the_bundle_from_the_head():
    page = build_index_string('/prefix/assets/vendor/p.js?x="1"')
    head = page.split("</head>")[0]
    assert '<script defer src="/prefix/assets/vendor/p.js?x=&quot;1&quot;"></script>' in head
    for slot in ("{%metas%}", "{%title%}", "{%favicon%}", "{%css%}", "{%app_entry%}", "{%config%}",
                 "{%scripts%}", "{%renderer%}"):
        assert page.count(slot) == 1 and INDEX_TEMPLATE.count(slot) == 1, slot


DRAW_EVERY_TYPE_JS = """async () => {
    const div = document.createElement('div'); div.style.width = '600px'; div.style.height = '300px';
    document.body.appendChild(div);
    await Plotly.newPlot(div, [
        {type: 'scatter', x: [1, 2, 3], y: [3, 1, 2]},
        {type: 'heatmap', z: [[1, 2], [3, 4]], xaxis: 'x2', yaxis: 'y2'},
        {type: 'indicator', mode: 'gauge+number', value: 0.4, domain: {x: [0.7, 1], y: [0, 1]},
         gauge: {axis: {range: [0, 1]}}}],
        {xaxis: {domain: [0, 0.3]}, xaxis2: {domain: [0.35, 0.65], anchor: 'y2'}, yaxis2: {anchor: 'x2'}});
    return {visible: div._fullData.map(t => [t.type, t.visible]),
            drawn: [div.querySelectorAll('.scatterlayer .trace').length, div.querySelectorAll('.hm').length,
                    div.querySelectorAll('.indicatorlayer .trace text.number').length]};
}"""


@pytest.mark.browser
def test_pages_load_the_bundle_not_dash_full_plotly(tmp_path, dashboard, page):
    run = tmp_path / "base" / "run-a"
    paths = rf.RunPaths.of(run)
    with rf.JsonlWriter(paths.metrics) as w:
        for i in range(1, 31):
            w.append(rf.make_record("train", step=i, time=time.time(), loss=3.0 / i, learning_rate=1e-3, grad_norm=1.0))
    rf.write_json_atomic(paths.status, {"v": 1, "state": "training", "step": 30, "updated_at": time.time()})
    srv = dashboard(tmp_path / "base")
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(srv.url + "/", wait_until="load")
    page.wait_for_function("() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot');"
                           " return g && g._fullData && g._fullData.length > 0 && g.data[0].x.length === 30; }",
                           timeout=TIMEOUT_MS)
    plotly_urls = [u for u in requested if "plotly" in u.rsplit("/", 1)[-1]]
    assert len(plotly_urls) == 1 and PLOTLY_BUNDLE in plotly_urls[0], plotly_urls  # never package_data/plotly.min.js
    assert sorted(page.evaluate("() => Object.keys(Plotly.PlotSchema.get().traces)")) == sorted(PLOTLY_TRACE_TYPES)
    assert page.evaluate("() => document.querySelector('#overview-loss-graph .js-plotly-plot')._fullData"
                         ".filter(t => t.x && t.x.length).map(t => [t.type, t.visible])") == [["scatter", True]]
    drawn = page.evaluate(DRAW_EVERY_TYPE_JS)
    assert drawn == {"visible": [["scatter", True], ["heatmap", True], ["indicator", True]], "drawn": [1, 1, 1]}
    # the page moves on (Runs page, back): still one plotly.js, nothing else fetched
    page.click("text=Runs")
    page.locator("#runs-table td").first.wait_for(timeout=TIMEOUT_MS)
    assert len([u for u in requested if "plotly" in u.rsplit("/", 1)[-1]]) == 1
    assert_no_console_errors(page)
