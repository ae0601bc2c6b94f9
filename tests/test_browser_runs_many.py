"""A folder of many runs in a real Chromium against a real ``python app.py`` (issue 12).

300 tiny collector runs plus one run with evaluations stand in for the bench's 2,000 (suite time): the
Runs page shows rows (one page of ``RUNS_PAGE_SIZE``, all 301 paged; the table's code requested once, from
the page's head), the rows carry what the listing read from each
run's status and log tail, the run picker reaches a run deep in the list by typing part of its name, and
comparing two runs still draws the overlay chart (put on the page only then).
"""
from __future__ import annotations

import math
import time

import pytest

from bench.bench_scale import write_many_runs
from collectors import runformat as rf
from components.runs import RUNS_PAGE_SIZE
from tests.conftest import assert_no_console_errors, save_screenshot
from tests.test_experiments_browser import TRACE_NAMES_JS, row_checkbox

pytestmark = pytest.mark.browser
TIMEOUT_MS = 90_000
N_RUNS = 300


def test_many_runs_are_listed_and_the_picker_reaches_any_by_typing(tmp_path, dashboard, page):
    base = tmp_path / "base"
    write_many_runs(base, N_RUNS)
    p = rf.RunPaths(base / "zz-evals")
    p.logs_dir.mkdir(parents=True)
    p.metrics.write_bytes(b"".join(rf.dumps(rf.make_record(kind, step=s, time=1e9 + s, **{key: v})) + b"\n"
                                   for kind, s, key, v in (("train", 10, "loss", 2.0), ("eval", 10, "eval_loss", 1.75),
                                                           ("train", 20, "loss", 1.5), ("eval", 20, "eval_loss", 1.25))))
    rf.write_json_atomic(p.status, {"v": 1, "state": "finished", "step": 20, "updated_at": time.time()})
    srv = dashboard(base)

    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(srv.url + "/runs", wait_until="load")
    page.locator("#shell-run-hint", has_text=f"{N_RUNS + 1} runs").wait_for(timeout=TIMEOUT_MS)
    first = page.locator("#runs-table tr", has=page.locator("td[data-dash-column='name'] >> text='run-00000'"))
    first.wait_for(timeout=TIMEOUT_MS)
    cells = first.inner_text()
    assert "finished" in cells and "5" in cells and "trainboard" in cells
    assert page.locator("#runs-table td[data-dash-column='name']").count() == RUNS_PAGE_SIZE  # one page drawn
    assert f"/ {math.ceil(301 / RUNS_PAGE_SIZE)}" in page.locator("#runs-table").inner_text()  # all 301 paged
    assert len([u for u in requested if u.endswith("/dash_table/async-table.js")]) == 1  # the head asks; dash_table does not again
    # the sort covers every row: the run with evaluations comes first by name, descending
    page.locator("#runs-table th[data-dash-column='name'] .column-header--sort").click()
    page.locator("#runs-table th[data-dash-column='name'] .column-header--sort").click()
    evals = page.locator("#runs-table tr", has=page.locator("td[data-dash-column='name'] >> text='zz-evals'"))
    evals.wait_for(timeout=TIMEOUT_MS)
    assert "1.25" in evals.inner_text() and "20" in evals.inner_text()

    # the picker: every run is reachable by typing, however long the list
    page.locator("#shell-run-picker").click()
    page.locator("input.dash-dropdown-search").fill("run-00277")
    page.get_by_role("option", name="run-00277", exact=True).click()
    page.locator("#shell-run-picker").filter(has_text="run-00277").wait_for(timeout=TIMEOUT_MS)

    # comparing two runs puts the overlay chart on the page
    assert page.locator("#runs-graph").count() == 0
    row_checkbox(page, "zz-evals").check()
    row_checkbox(page, "run-00299").check()
    page.wait_for_function(f"({TRACE_NAMES_JS})().length >= 3", timeout=TIMEOUT_MS)
    assert "zz-evals · eval" in page.evaluate(TRACE_NAMES_JS)
    save_screenshot(page, "runs-many.png")
    assert_no_console_errors(page)
