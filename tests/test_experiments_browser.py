"""The Runs page in a real headless Chromium against a real ``python app.py`` server."""
from __future__ import annotations

import csv
import io
import json

import pytest

from collectors import ConfigTracker
from tests.conftest import assert_no_console_errors, save_screenshot
from tests.test_services_readers import make_experiment, make_trainboard_run

pytestmark = pytest.mark.browser
TIMEOUT_MS = 30_000
TRACE_NAMES_JS = """() => { const g = document.querySelector('#runs-graph .js-plotly-plot');
                             return g && g.data ? g.data.map(t => t.name) : []; }"""


def row_checkbox(page, name):
    return page.locator("#runs-table tr", has=page.locator(f"td[data-dash-column='name'] >> text='{name}'")) \
        .locator("input[type=checkbox]")


def test_select_two_runs_and_compare(tmp_path, dashboard, page):
    base = tmp_path / "base"
    a = make_experiment(base, "exp_a", 1e-3, [3.0, 2.0, 2.5])
    b = make_experiment(base, "exp_b", 3e-4, [2.8, 2.6, 2.4], loss_scale=5.0)
    ConfigTracker(a).save_results({"val_loss": 2.0, "perplexity": 7.39}, "checkpoints/checkpoint_step_20.pt")
    ConfigTracker(b).save_results({"val_loss": 2.4, "perplexity": 11.02})
    make_trainboard_run(base / "monitor_run")
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(base / "tb_run")) as w:
        for step in range(0, 30, 3):
            w.add_scalar("train/loss", 3.0 / (step + 1), step)

    srv = dashboard(base)
    page.goto(srv.url + "/runs", wait_until="load")
    for name in ("exp_a", "exp_b", "monitor_run", "tb_run"):
        page.locator("#runs-table td[data-dash-column='name']", has_text=name).first.wait_for(timeout=TIMEOUT_MS)
    table = page.locator("#runs-table").inner_text()
    assert "experiment" in table and "trainboard" in table and "tensorboard" in table and "finished" in table
    page.get_by_text("Select two or more runs").wait_for(timeout=TIMEOUT_MS)

    row_checkbox(page, "exp_a").check()
    row_checkbox(page, "exp_b").check()
    page.wait_for_function(f"({TRACE_NAMES_JS})().length >= 4", timeout=TIMEOUT_MS)
    names = page.evaluate(TRACE_NAMES_JS)
    assert names == ["exp_a · train", "exp_a · eval", "exp_b · train", "exp_b · eval"]
    xs = page.evaluate("() => document.querySelector('#runs-graph .js-plotly-plot').data[1].x")
    assert xs == [10, 20, 30]  # eval points aligned by step
    assert page.locator("#runs-metric").inner_text().strip() == "loss"

    diff = page.locator("#runs-config-diff")
    diff.get_by_text("lr", exact=True).wait_for(timeout=TIMEOUT_MS)
    diff_text = diff.inner_text()
    assert "0.001" in diff_text and "0.0003" in diff_text and "batch_size" not in diff_text  # only differing keys
    results = page.locator("#runs-results").inner_text()
    assert "val_loss" in results and "7.39" in results and "11.02" in results
    ckpts = page.locator("#runs-checkpoints").inner_text()
    assert "Checkpoints · exp_a" in ckpts and "latest" in ckpts and "best" in ckpts
    assert "load_checkpoint(step=10)" in ckpts

    with page.expect_download(timeout=TIMEOUT_MS) as dl:
        page.locator("#runs-csv-button").click()
    rows = list(csv.DictReader(io.StringIO(open(dl.value.path(), encoding="utf-8").read())))
    assert {r["run"] for r in rows} == {"exp_a", "exp_b"} and len(rows) == 2 * (30 + 3)

    page.locator("#runs-align input[value='wall']").check()
    page.wait_for_function("() => { const g = document.querySelector('#runs-graph .js-plotly-plot');"
                           " return g && g.layout.xaxis.title.text === 'seconds since run start'; }", timeout=TIMEOUT_MS)
    page.locator("#runs-align input[value='step']").check()
    page.wait_for_function("() => document.querySelector('#runs-graph .js-plotly-plot').layout.xaxis.title.text === 'step'",
                           timeout=TIMEOUT_MS)
    save_screenshot(page, "runs.png")
    assert_no_console_errors(page)


def test_runs_page_waits_then_lists_a_new_run(tmp_path, dashboard, page):
    base = tmp_path / "base"
    base.mkdir()
    srv = dashboard(base)
    page.goto(srv.url + "/runs", wait_until="load")
    page.get_by_text("Waiting for training data...").wait_for(timeout=TIMEOUT_MS)
    hf = base / "hf_out" / "checkpoint-4"
    hf.mkdir(parents=True)
    (hf / "trainer_state.json").write_text(json.dumps(
        {"global_step": 4, "max_steps": 8, "best_model_checkpoint": str(hf),
         "log_history": [{"loss": 2.0, "step": 2}, {"eval_loss": 1.75, "step": 4}]}))
    page.locator("#runs-table td[data-dash-column='name']", has_text="hf_out").wait_for(timeout=TIMEOUT_MS)
    row = page.locator("#runs-table tr", has=page.locator("td", has_text="hf_out")).inner_text()
    assert "huggingface" in row and "1.75" in row and "training" in row
    assert_no_console_errors(page)
