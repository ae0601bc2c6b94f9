"""The Overview page in a real headless Chromium against a real ``python app.py`` server."""
from __future__ import annotations

import math
import time

import pytest

from collectors import runformat as rf
from tests.conftest import assert_no_console_errors, save_screenshot

pytestmark = pytest.mark.browser
TIMEOUT_MS = 30_000
LOSS_POINTS_JS = """() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot');
                            return g && g.data && g.data.length ? g.data[0].x.length : -1; }"""


def write_run(run, steps, start=1, nan_at=None, state="training"):
    paths = rf.RunPaths.of(run)
    with rf.JsonlWriter(paths.metrics) as w:
        for i in range(start, start + steps):
            w.append(rf.make_record("train", step=i, time=time.time(), loss=math.nan if i == nan_at else 3.0 / i,
                                    learning_rate=1e-3 * (1 - i / 1000), grad_norm=1.0 + (i % 7) / 10, epoch=i / 100))
            if i % 10 == 0:
                w.append(rf.make_record("eval", step=i, time=time.time(), eval_loss=2.5 / i, epoch=i / 100))
    last = start + steps - 1
    rf.write_json_atomic(paths.status, {"v": 1, "state": state, "step": last, "epoch": last / 100,
                                        "train_loss": 3.0 / last, "eval_loss": 0.1, "learning_rate": 1e-3,
                                        "grad_norm": 1.2, "throughput": {"steps_per_second": 5.0},
                                        "memory": {"rss_gb": 0.42}, "updated_at": time.time()})


def card(page, metric):
    return page.locator(f'[id=\'{{"metric":"{metric}","type":"overview-card"}}\']')


def test_overview_shows_cards_and_updates_live(tmp_path, dashboard, page):
    run = tmp_path / "base" / "run-a"
    write_run(run, 40, nan_at=25)
    with open(rf.RunPaths.of(run).metrics, "ab") as fh:
        fh.write(b"{this line is broken\n")
    srv = dashboard(tmp_path / "base")
    page.goto(srv.url + "/", wait_until="load")
    card(page, "step").filter(has_text="40").wait_for(timeout=TIMEOUT_MS)
    assert card(page, "train_loss").inner_text() == "0.075"
    assert card(page, "memory").inner_text() == "0.42 GB"
    page.get_by_text("1 malformed line skipped in metrics.jsonl").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function(f"({LOSS_POINTS_JS})() == 40", timeout=TIMEOUT_MS)
    # a NaN loss shows as a red marker trace, never as an error
    nan_trace = page.evaluate("() => document.querySelector('#overview-loss-graph .js-plotly-plot').data"
                              ".find(t => t.name === 'train loss: NaN/Inf').x")
    assert nan_trace == [25]

    with rf.JsonlWriter(rf.RunPaths.of(run).alerts) as w:  # an alert arrives: a marker on the loss chart
        w.append(rf.make_record("alert", step=30, rule="loss_spike", category="loss", severity="high",
                                message="loss_spike_37.8pct", value=1.0, threshold=0.9, metadata={}))
    page.wait_for_function("() => document.querySelector('#overview-loss-graph .js-plotly-plot').data"
                           ".some(t => t.name === 'high alerts' && t.x[0] === 30)", timeout=TIMEOUT_MS)
    write_run(run, 20, start=41)  # the training goes on: the page follows without a reload
    card(page, "step").filter(has_text="60").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function(f"({LOSS_POINTS_JS})() == 60", timeout=TIMEOUT_MS)
    assert page.locator("#overview-updated").inner_text().endswith("s ago")
    save_screenshot(page, "overview.png")
    assert_no_console_errors(page)


def test_overview_waits_then_follows_a_new_run(tmp_path, dashboard, page):
    base = tmp_path / "base"
    base.mkdir()
    srv = dashboard(base)
    page.goto(srv.url + "/", wait_until="load")
    page.get_by_text("Waiting for training data...").wait_for(timeout=TIMEOUT_MS)
    assert str(base) in page.locator(".message--waiting").inner_text()
    write_run(base / "fresh", 15)
    card(page, "step").filter(has_text="15").wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("1 run").wait_for(timeout=TIMEOUT_MS)
    assert_no_console_errors(page)


def test_run_with_status_but_no_metrics_yet_then_first_metrics(tmp_path, dashboard, page):
    """Every Trainer run writes its status at train begin, a moment before its first metric. A page that
    opened in that moment must follow on when the metrics come (it froze once: a Patch extended an empty frame)."""
    run = tmp_path / "base" / "run-a"
    paths = rf.RunPaths.of(run)
    rf.write_json_atomic(paths.status, {"v": 1, "state": "training", "step": 0, "updated_at": time.time(),
                                        "memory": {"rss_gb": 0.4}})
    srv = dashboard(tmp_path / "base")
    page.goto(srv.url + "/", wait_until="load")
    card(page, "state").filter(has_text="training").wait_for(timeout=TIMEOUT_MS)
    page.locator("#overview-loss-graph").get_by_text("no values logged yet").wait_for(timeout=TIMEOUT_MS)
    write_run(run, 10)
    card(page, "step").filter(has_text="10").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function(f"({LOSS_POINTS_JS})() == 10", timeout=TIMEOUT_MS)
    write_run(run, 10, start=11, state="finished")  # and keeps following with incremental updates
    card(page, "state").filter(has_text="finished").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function(f"({LOSS_POINTS_JS})() == 20", timeout=TIMEOUT_MS)
    assert_no_console_errors(page)


def test_stale_and_crashed_runs_are_marked(tmp_path, dashboard, page):
    run = tmp_path / "base"
    write_run(run, 10)
    status = rf.read_json(rf.RunPaths.of(run).status)[0]
    status["updated_at"] = time.time() - 3600
    rf.write_json_atomic(rf.RunPaths.of(run).status, status)
    srv = dashboard(run)
    page.goto(srv.url + "/", wait_until="load")
    page.locator(".updated--stale").wait_for(timeout=TIMEOUT_MS)
    assert "stale" in page.locator("#overview-updated").inner_text()
    status.update(state="crashed", error="RuntimeError: CUDA out of memory", updated_at=time.time())
    rf.write_json_atomic(rf.RunPaths.of(run).status, status)
    page.locator(".card--bad").filter(has_text="crashed").wait_for(timeout=TIMEOUT_MS)
    assert "CUDA out of memory" in page.locator(".card--bad").inner_text()
    assert_no_console_errors(page)


def test_malformed_status_file_shows_a_problem_and_charts_keep_working(tmp_path, dashboard, page):
    run = tmp_path / "base"
    write_run(run, 10)
    rf.RunPaths.of(run).status.write_bytes(b'{"state": "train')
    srv = dashboard(run)
    page.goto(srv.url + "/", wait_until="load")
    page.locator(".message--problem").filter(has_text="not valid JSON").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function(f"({LOSS_POINTS_JS})() == 10", timeout=TIMEOUT_MS)
    assert_no_console_errors(page)
