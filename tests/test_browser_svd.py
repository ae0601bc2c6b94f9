"""The SVD page in a real headless Chromium against a real ``python app.py`` server."""
from __future__ import annotations

import pytest

from collectors import runformat as rf
from tests.conftest import assert_no_console_errors, save_screenshot
from tests.svd_fixtures import write_spectral_run

pytestmark = pytest.mark.browser
TIMEOUT_MS = 30_000
GAUGE_ROWS = ".svd-gauges__row"
INDICATORS_JS = """[...document.querySelectorAll('.svd-gauges__graph .js-plotly-plot')]
    .reduce((n, p) => n + (p.data || []).filter(t => t.type === 'indicator').length, 0)"""
TREND_NAMES_JS = """(layer) => { const g = [...document.querySelectorAll('.svd-trends__graph')]
    .find(el => el.id.includes(layer)); const p = g && g.querySelector('.js-plotly-plot');
    return p && p.data ? p.data.map(t => t.name) : []; }"""


def test_svd_page_shows_layers_live_and_filters(tmp_path, dashboard, page):
    run = tmp_path / "base" / "run-a"
    mon = write_spectral_run(run, 20, 100)
    srv = dashboard(tmp_path / "base")
    page.goto(srv.url + "/svd", wait_until="load")
    page.locator(".svd-filter__summary").filter(has_text="4 layers · step 100 · 0 LOW-RANK").wait_for(timeout=TIMEOUT_MS)
    assert page.locator(GAUGE_ROWS).count() == 4
    # h.1.c_proj meets all switch criteria at step 100 (still FULL): the most urgent layer comes first
    assert page.locator(GAUGE_ROWS).first.locator(".svd-gauges__layer").inner_text() == "transformer.h.1.attn.c_proj"
    page.wait_for_function(INDICATORS_JS + " === 16", timeout=TIMEOUT_MS)  # four plotly indicators per layer
    page.locator(".svd-feed__item").filter(has_text="OPTIMAL CONDITIONS MET").first.wait_for(timeout=TIMEOUT_MS)
    heat = page.evaluate("() => document.querySelector('#svd-heatmap .js-plotly-plot').data[0].y")
    assert sorted(heat) == sorted(["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
                                   "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj"])

    # the training goes on: a layer switches to LOW-RANK, another approaches its threshold
    write_spectral_run(run, 120, 240, monitor=mon)
    page.locator(".svd-filter__summary").filter(has_text="step 240 · 1 LOW-RANK").wait_for(timeout=TIMEOUT_MS)
    page.locator(".svd-feed__item").filter(has_text="SWITCHED TO LOW-RANK (r=40)").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function(f"({TREND_NAMES_JS})('h.0.attn.c_attn').includes('subspace angle (rad) trend')",
                           timeout=TIMEOUT_MS)
    page.get_by_text("angle < 0.1 in ~").first.wait_for(timeout=TIMEOUT_MS)
    save_screenshot(page, "svd.png")

    # the layer filter: one layer chosen → one gauge row, one trend chart, its alerts only
    page.locator("#svd-layer-filter").click()
    page.get_by_role("option", name="transformer.h.1.attn.c_proj").click()
    page.keyboard.press("Escape")
    page.wait_for_function(f"document.querySelectorAll('{GAUGE_ROWS}').length === 1", timeout=TIMEOUT_MS)
    assert page.locator(".svd-gauges__layer").inner_text() == "transformer.h.1.attn.c_proj"
    assert page.locator(".svd-trends__graph").count() == 1
    layers = set(page.locator(".svd-feed__layer").all_inner_texts())
    assert layers == {"transformer.h.1.attn.c_proj"}
    assert_no_console_errors(page)


def test_svd_page_waits_with_a_hint_when_the_run_has_no_spectral_metrics(tmp_path, dashboard, page):
    run = tmp_path / "base"
    with rf.JsonlWriter(rf.RunPaths.of(run).metrics) as w:
        w.append(rf.make_record("train", step=1, time=0.0, loss=1.0))
    srv = dashboard(run)
    page.goto(srv.url + "/svd", wait_until="load")
    page.get_by_text("Waiting for training data...").wait_for(timeout=TIMEOUT_MS)
    assert "spectral=True" in page.locator(".message--waiting").inner_text()
    assert "spectral.jsonl" in page.locator(".message--waiting").inner_text()
    write_spectral_run(run, 20, 40)  # metrics arrive: the page follows without a reload
    page.locator(".svd-filter__summary").filter(has_text="step 40").wait_for(timeout=TIMEOUT_MS)
    assert page.locator(".message--waiting").count() == 0
    assert_no_console_errors(page)
