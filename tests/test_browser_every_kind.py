"""Every run is a first-class run (issue 9), in a real Chromium against a real ``python app.py``.

One base dir holds a Trainboard run, a real Hugging Face Trainer output dir (tiny GPT-2 trained here, with
``checkpoint-*``), a real ``torch.utils.tensorboard.SummaryWriter`` dir, and an HF output dir whose
trainer_state.json holds NaN written with ``json.dumps`` as Trainer writes it. Each is picked in the run
picker and shows its loss on Overview; the NaN run shows NaN markers and a critical alert detected by the
dashboard. A second test checks the terminal: a run writing snapshots while the dashboard watches it
produces no file-watcher warning.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collectors import runformat as rf
from tests.conftest import REPO, assert_no_console_errors, save_screenshot
from tests.test_browser_overview import LOSS_POINTS_JS, card, write_run
from tests.test_services_readers import tiny_trainer

pytestmark = pytest.mark.browser
TIMEOUT_MS = 45_000
DEMO_TIMEOUT_S = 600
TRACES_JS = "() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot'); return g && g.data ? g.data : []; }"


def pick_run(page, label: str) -> None:
    """Choose a run in the header's run picker, as a person does (open it, click the option)."""
    page.locator("#shell-run-picker").click()
    page.get_by_role("option", name=label, exact=True).click()
    page.locator("#shell-run-picker").filter(has_text=label).wait_for(timeout=TIMEOUT_MS)


def wait_loss_points(page, n: int) -> None:
    page.wait_for_function(f"({LOSS_POINTS_JS})() === {n}", timeout=TIMEOUT_MS)


def write_nan_hf_dir(out: Path) -> int:
    """An HF output dir as Trainer leaves it when the loss went NaN: checkpoint-6/trainer_state.json via json.dumps."""
    history = [{"epoch": i / 10, "grad_norm": 1.0, "learning_rate": 1e-3, "loss": 2.0 - i * 0.1, "step": i}
               for i in range(1, 6)]
    history.append({"epoch": 0.6, "grad_norm": math.nan, "learning_rate": 1e-3, "loss": math.nan, "step": 6})
    ckpt = out / "checkpoint-6"
    ckpt.mkdir(parents=True)
    text = json.dumps({"global_step": 6, "max_steps": 20, "log_history": history}, indent=2, sort_keys=True) + "\n"
    assert "NaN" in text  # a bare token, not valid strict JSON
    (ckpt / rf.HF_TRAINER_STATE).write_text(text)
    return 6


@pytest.mark.integration
def test_every_kind_is_picked_and_shows_its_loss(tmp_path, dashboard, page):
    from torch.utils.tensorboard import SummaryWriter

    base = tmp_path / "base"
    write_run(base / "tb-run", 30, state="finished")
    trainer = tiny_trainer(base / "hf-run")  # a real Trainer: max_steps=12, logging 2, eval+save every 4
    trainer.train()
    hf_losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert (base / "hf-run" / "checkpoint-12" / rf.HF_TRAINER_STATE).is_file()
    writer = SummaryWriter(log_dir=str(base / "tb-events"))
    for step in range(10):
        writer.add_scalar("train/loss", 4.0 / (step + 1), step)
        writer.add_scalar("train/learning_rate", 1e-3, step)
    writer.flush()
    nan_step = write_nan_hf_dir(base / "hf-nan")
    before = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if "tb-events" not in p.parts)

    srv = dashboard(base)
    page.goto(srv.url + "/", wait_until="load")
    hint = page.locator("#shell-run-hint")
    hint.filter(has_text="4 runs").wait_for(timeout=TIMEOUT_MS)

    pick_run(page, "tb-run")
    wait_loss_points(page, 30)

    pick_run(page, "hf-run (Hugging Face output dir)")
    wait_loss_points(page, len(hf_losses))
    ys = page.evaluate(f"() => ({TRACES_JS})()[0].y")
    assert ys == pytest.approx(hf_losses)
    card(page, "step").filter(has_text="12").wait_for(timeout=TIMEOUT_MS)
    page.locator("#overview-message").filter(has_text="saves a checkpoint").wait_for(timeout=TIMEOUT_MS)
    card(page, "state").filter(has_text="finished").wait_for(timeout=TIMEOUT_MS)

    pick_run(page, "tb-events (TensorBoard events)")
    wait_loss_points(page, 10)
    for step in range(10, 15):  # the training goes on writing events: the page follows without a reload
        writer.add_scalar("train/loss", 4.0 / (step + 1), step)
    writer.flush()
    wait_loss_points(page, 15)
    writer.close()

    pick_run(page, "hf-nan (Hugging Face output dir)")
    wait_loss_points(page, 6)
    page.wait_for_function(f"() => ({TRACES_JS})().some(t => t.name === 'train loss: NaN/Inf' && t.x[0] === {nan_step})",
                           timeout=TIMEOUT_MS)
    page.wait_for_function(f"() => ({TRACES_JS})().some(t => t.name === 'critical alerts' && t.x.includes({nan_step}))",
                           timeout=TIMEOUT_MS)
    card(page, "train_loss").filter(has_text="NaN").wait_for(timeout=TIMEOUT_MS)
    save_screenshot(page, "every-kind-overview-nan.png")

    page.get_by_role("link", name="Alerts").click()
    feed = page.locator("#alerts-feed")
    feed.locator(".incident").filter(has_text="non_finite_loss").filter(has_text="detected by the dashboard") \
        .wait_for(timeout=TIMEOUT_MS)
    assert "critical" in feed.locator(".incident").filter(has_text="non_finite_loss").first.inner_text().lower()
    page.get_by_text("has no Trainboard collector, so these alerts were detected by the dashboard").wait_for(
        timeout=TIMEOUT_MS)
    save_screenshot(page, "every-kind-alerts-nan.png")

    page.get_by_role("link", name="Samples").click()
    page.get_by_text("This run has no samples: the collector was not attached.").wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("link", name="Snapshots").click()
    page.get_by_text("This run has no snapshots: the collector was not attached.").wait_for(timeout=TIMEOUT_MS)

    assert sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if "tb-events" not in p.parts) == before, \
        "the dashboard wrote into a run it only reads"
    assert_no_console_errors(page)
    assert "Traceback" not in srv.log()


@pytest.mark.integration
def test_the_demo_writing_snapshots_gives_no_watcher_warning(tmp_path, dashboard, page):
    """The demo's case: a real training (``collectors.demo``: tiny GPT-2, Trainer checkpoints, anomaly
    snapshots with a model/ folder each, built under a temporary name and renamed) while the dashboard
    watches. The old recursive watch put inotify watches inside those folders, and watchdog printed a
    multi-KB RuntimeWarning ("Callback with id ... already exists for watch") for them."""
    base = tmp_path / "base"
    base.mkdir()
    srv = dashboard(base)
    page.goto(srv.url + "/snapshots", wait_until="load")
    demo_log = open(tmp_path / "demo.log", "wb")
    demo = subprocess.Popen([sys.executable, "-m", "collectors.demo", "--base-dir", str(base / "demo"),
                             "--max-steps", "60"], cwd=REPO, stdout=demo_log, stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert demo.wait(timeout=DEMO_TIMEOUT_S) == 0, (tmp_path / "demo.log").read_text()[-2000:]
    finally:
        if demo.poll() is None:
            demo.kill()
        demo_log.close()
    snaps = [p for p in (base / "demo" / "snapshots").iterdir() if not p.name.startswith(".")]
    assert snaps and all((p / rf.SNAPSHOT_MODEL_DIR).is_dir() for p in snaps)
    page.locator("#snapshots-table").filter(has_text=snaps[0].name).wait_for(timeout=TIMEOUT_MS)
    time.sleep(2)  # let any late event be handled (and printed) before reading the log
    log = srv.log()
    assert "RuntimeWarning" not in log and "already exists for watch" not in log and "Traceback" not in log, log[-3000:]
    assert_no_console_errors(page)


def test_status_fields_of_the_wrong_type_are_named_and_the_page_works(tmp_path, dashboard, page):
    """Before: throughput/memory/config not objects made every Overview tick an HTTP 500, an error object
    a React error, an updated_at string "NaN h ago"."""
    run = tmp_path / "base"
    write_run(run, 12)
    status = rf.read_json(rf.RunPaths.of(run).status)[0]
    status.update(throughput=[5.0], memory="0.4 GB", config=3, error={"type": "OOM"}, updated_at="yesterday")
    rf.write_json_atomic(rf.RunPaths.of(run).status, status)
    srv = dashboard(run)
    page.goto(srv.url + "/", wait_until="load")
    msg = page.locator("#overview-message .message--problem")
    msg.filter(has_text="'throughput' is a list").wait_for(timeout=TIMEOUT_MS)
    text = msg.inner_text()
    for words in ("'memory' is text", "'config' is a number", "'error' is an object", "'updated_at' is text"):
        assert words in text
    card(page, "step").filter(has_text="12").wait_for(timeout=TIMEOUT_MS)
    wait_loss_points(page, 12)
    assert "NaN" not in page.locator("#overview-updated").inner_text()
    page.locator("#overview-cards").filter(has_text='{"type":"OOM"}').wait_for(timeout=TIMEOUT_MS)  # shown as text
    assert_no_console_errors(page)
    assert "Traceback" not in srv.log()
