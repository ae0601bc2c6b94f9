"""Resume continuity with real Trainer runs (issue 11): a training that crashed at step 30 and was resumed
from checkpoint-20 into the same output dir is one run: a resume record, no duplicate or rolled-back
points on any series, the monitor's state restored from the checkpoint (so no "new best model" caused by
the resume), and a loss chart (in a real browser) whose x never goes backwards, with the crash and the
resume marked.

Each training is a real process (``tests/helpers/resume_train.py``): the crash is an exception that
kills the process, as in life; the reference is the same training uninterrupted.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collectors import runformat as rf
from services.model import drop_rolled_back
from services.readers import open_run
from tests.conftest import assert_no_console_errors

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "helpers" / "resume_train.py"
pytestmark = pytest.mark.integration


def train(out: Path, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), str(out), mode], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    crashed = train(base / "runs" / "resumed", "crash")
    assert crashed.returncode != 0 and "injected crash at step 30" in crashed.stderr
    resumed = train(base / "runs" / "resumed", "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    clean = train(base / "reference", "clean")
    assert clean.returncode == 0, clean.stderr[-3000:]
    return base / "runs" / "resumed" / "trainboard", base / "reference" / "trainboard"


def best_alerts(run_dir: Path, resumes) -> list[tuple[int, str]]:
    alerts = list(rf.iter_records(rf.RunPaths.of(run_dir).alerts))
    return sorted((a["step"], round(a["value"], 4)) for a in drop_rolled_back(alerts, resumes) if a["rule"] == "best_model")


def test_a_resumed_training_is_one_run(runs):
    run_dir, ref_dir = runs
    records = list(rf.iter_records(rf.RunPaths.of(run_dir).metrics))
    resumes = [r for r in records if r["kind"] == rf.RecordKind.RESUME.value]
    assert len(resumes) == 1
    assert resumes[0]["step"] == 20 and resumes[0]["previous_step"] == 28
    assert resumes[0]["previous_state"] == "crashed" and resumes[0]["restored_state"] is True
    raw_steps = [r["step"] for r in records if r["kind"] == "train" and "loss" in r]
    assert len(raw_steps) != len(set(raw_steps))  # the file does hold steps 22-28 twice: the reader must cope

    run, ref = open_run(run_dir), open_run(ref_dir)
    run.refresh()
    ref.refresh()
    assert [(p.step, p.previous_step, p.rolled_back > 0) for p in run.resumes] == [(20, 28, True)]
    for key in ("train/loss", "eval/eval_loss", "train/learning_rate"):
        steps = list(run.series[key].steps)
        assert steps == sorted(set(steps)), key  # no duplicate, no step going backwards
        assert steps == list(ref.series[key].steps), key  # nothing rolled back survives
        for a, b in zip(run.series[key].values, ref.series[key].values):
            assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-7), key  # the resumed run repeats the reference
    status, _ = rf.read_json(rf.RunPaths.of(run_dir).status)
    assert status["state"] == "finished" and status["step"] == 40 and status["resumed_from_step"] == 20
    assert run.summary().last_step == 40


def test_the_monitor_state_travels_with_the_checkpoint(runs):
    run_dir, ref_dir = runs
    doc = json.loads((run_dir.parent / "checkpoint-20" / rf.HF_TRAINER_STATE).read_text())
    saved = doc["stateful_callbacks"]["MonitorCallback"]["attributes"]["trainboard_state"]
    engine = saved["AnomalyPlugin"]["engine"]
    assert engine["best_loss_step"] == 20 and engine["seen_eval"] is True
    run, ref = open_run(run_dir), open_run(ref_dir)
    run.refresh()
    ref.refresh()
    # after superseding the rolled-back alerts, "new best model" fired exactly where the uninterrupted run
    # fired it: nothing fired because of the resume (a cold monitor would judge step 25 against nothing)
    assert best_alerts(run_dir, run.resumes) == best_alerts(ref_dir, ref.resumes)
    raw = [a for a in rf.iter_records(rf.RunPaths.of(run_dir).alerts) if a["rule"] == "best_model"]
    after = [a for a in raw if a["time"] > run.resumes[0].time]
    assert after and after[0]["step"] == 25
    assert math.isclose(after[0]["metadata"]["previous_best"], engine["best_loss"], rel_tol=1e-9)


@pytest.mark.browser
def test_loss_chart_marks_the_crash_and_the_resume(runs, dashboard, page):
    run_dir, _ = runs
    srv = dashboard(run_dir)
    page.goto(srv.url + "/", wait_until="load")
    page.wait_for_function(
        """() => { const g = document.querySelector('#overview-loss-graph .js-plotly-plot');
                   return g && g.data && g.data.some(t => t.name === 'resumed'); }""", timeout=60_000)
    traces = page.evaluate("""() => document.querySelector('#overview-loss-graph .js-plotly-plot').data
                                    .map(t => ({name: t.name, x: Array.from(t.x || [])}))""")
    by_name = {t["name"]: t["x"] for t in traces}
    train = by_name["train loss"]
    assert train == sorted(set(train)) and train[-1] == 40  # x never goes backwards, no duplicate point
    assert by_name["resumed"] == [20] and by_name["crash (rolled back)"] == [28]
    assert_no_console_errors(page)
