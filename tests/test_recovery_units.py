"""Pure units of recovery and resume continuity (issue 11): skip ranges, the batch positions they drop,
the plain loop's ``should_skip``, the resume record and how every reader supersedes rolled-back steps,
the suggested range, ``trainboard resume`` (incl. its errors, from a real subprocess), the Recover panel's
component tree, and MonitorCallback's checkpoint state.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collectors import Monitor
from collectors import runformat as rf
from collectors.recovery import (SkippingBatchSampler, SkipRange, epoch_skip_positions, parse_skip_range,
                                 parse_skip_ranges)
from services.model import ResumePoint, drop_rolled_back
from services.readers import open_run
from services.recovery import (RecoveryError, SKIP_MAX_STEPS, panel_data, plan_resume, resume_code,
                               suggest_skip_range)

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- ranges

@pytest.mark.parametrize("text,expected", [
    ("31-40", (31, 40)), (" 31 - 40 ", (31, 40)), ("31..40", (31, 40)), ("31:40", (31, 40)), ("7", (7, 7)),
    ((3, 9), (3, 9)), (range(5, 8), (5, 7)), (12, (12, 12)),
], ids=["dash", "spaces", "dots", "colon", "single", "tuple", "range", "int"])
def test_parse_skip_range(text, expected):
    r = parse_skip_range(text)
    assert (r.first, r.last) == expected and r.count == expected[1] - expected[0] + 1


@pytest.mark.parametrize("text,message", [
    ("40-31", "ends before it starts"), ("0-5", "starts at step 1"), ("abc", "not a step range"),
    ("3-", "not a step range"), ("-3", "not a step range"), (3.5, "not a step range"), (range(5, 5), "non-empty"),
], ids=["reversed", "zero", "words", "open-end", "negative", "float", "empty-range"])
def test_bad_skip_ranges_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse_skip_range(text)


def test_several_ranges_are_sorted_and_merged():
    assert parse_skip_ranges("90-95, 31-40,38-50") == [SkipRange(31, 50), SkipRange(90, 95)]
    assert parse_skip_ranges(None) == []
    with pytest.raises(ValueError, match="empty"):
        parse_skip_ranges(" , ")


@pytest.mark.parametrize("ranges,epoch,batches,accum,expected", [
    ([SkipRange(2, 3)], 0, 10, 1, {1, 2}),
    ([SkipRange(2, 3)], 0, 10, 2, {2, 3, 4, 5}),
    ([SkipRange(5, 6)], 0, 9, 2, {8}),  # 5 steps per epoch (last takes 1 batch): step 5 is batch 8; 6 is epoch 1
    ([SkipRange(5, 6)], 1, 9, 2, {0, 1}),
    ([SkipRange(6, 7)], 1, 9, 2, {0, 1, 2, 3}),
    ([SkipRange(1, 100)], 2, 4, 1, {0, 1, 2, 3}),
], ids=["plain", "accumulation", "remainder-step", "other-epoch", "second-epoch", "whole-epoch"])
def test_epoch_skip_positions_follow_trainers_step_arithmetic(ranges, epoch, batches, accum, expected):
    assert epoch_skip_positions(ranges, epoch, batches, accum) == frozenset(expected)


def test_skipping_batch_sampler_keeps_length_and_delegates():
    class Inner:
        batch_size = 4
        sampler = "the sampler"

        def __len__(self):
            return 6

        def __iter__(self):
            return iter([[i] for i in range(6)])

    s = SkippingBatchSampler(Inner(), [SkipRange(2, 3)])
    assert len(s) == 6 and s.batch_size == 4 and s.sampler == "the sampler"
    assert list(s) == [[0], [3], [4], [5]] and s.skipped == 2
    s.epoch = 1
    assert list(s) == [[i] for i in range(6)]


# --------------------------------------------------------------------------- the plain loop

def test_should_skip_and_the_resume_record_of_a_plain_loop(tmp_path):
    run = tmp_path / "run"
    with Monitor(run, anomaly=False) as m:
        for step in range(1, 11):
            m.log(step, loss=10.0 / step)
        m.log(10, eval_loss=1.5)
    with Monitor(run, anomaly=False, skip_batches="7-8") as m:
        rec = m.resumed(5, checkpoint="ckpt-5")
        trained = [s for s in range(6, 13) if not m.should_skip(s)]
        for step in trained:
            m.log(step, loss=0.5)
    assert trained == [6, 9, 10, 11, 12] and m.skipped_steps == 2
    assert rec["kind"] == "resume" and rec["previous_step"] == 10 and rec["previous_state"] == "finished"
    assert rec["checkpoint"] == "ckpt-5"
    status, _ = rf.read_json(rf.RunPaths.of(run).status)
    assert status["skip_batches"] == "7-8" and status["skipped_steps"] == 2 and status["resumed_from_step"] == 5
    r = open_run(run)
    r.refresh()
    assert list(r.series["train/loss"].steps) == [1, 2, 3, 4, 5, 6, 9, 10, 11, 12]
    assert list(r.series["train/loss"].values)[5:] == [0.5] * 5
    assert "eval/eval_loss" in r.series and len(r.series["eval/eval_loss"]) == 0  # step 10's eval was rolled back
    assert r.resumes == [ResumePoint(5, rec["time"], 10, "finished", rolled_back=6)]
    with pytest.raises(ValueError, match="skip range 9-3 ends before it starts"):
        Monitor(tmp_path / "x", skip_batches="9-3")
    with pytest.raises(ValueError, match="non-negative integer"):
        Monitor(tmp_path / "y").resumed(-1)


def test_resume_read_in_pieces_rolls_back_once(tmp_path):
    """The tailer may deliver the resume record in a later poll than the points it rolls back."""
    run = tmp_path / "run"
    paths = rf.RunPaths.of(run)
    paths.logs_dir.mkdir(parents=True)
    with rf.JsonlWriter(paths.metrics) as w:
        for s in range(1, 9):
            w.append(rf.make_record("train", step=s, time=100.0 + s, loss=1.0))
    r = open_run(run)
    r.refresh()
    assert len(r.series["train/loss"]) == 8
    with rf.JsonlWriter(paths.metrics) as w:
        w.append(rf.make_record("resume", step=4, time=200.0, previous_step=8))
        w.append({"v": 1, "kind": "resume", "step": "bad", "time": 201.0})
    assert r.refresh()
    assert list(r.series["train/loss"].steps) == [1, 2, 3, 4] and r.bad_steps == 1
    with rf.JsonlWriter(paths.metrics) as w:
        w.append(rf.make_record("train", step=5, time=202.0, loss=2.0))
    r.refresh()
    assert list(r.series["train/loss"].steps) == [1, 2, 3, 4, 5]


def test_drop_rolled_back_supersedes_only_earlier_writes_after_the_resume_step():
    resumes = [ResumePoint(20, time=1000.0)]
    alerts = [{"step": 10, "time": 900.0}, {"step": 25, "time": 950.0}, {"step": 25, "time": 1100.0},
              {"step": "x", "time": 950.0}, {"step": 30}]
    assert drop_rolled_back(alerts, resumes) == [alerts[0], alerts[2], alerts[3], alerts[4]]
    assert drop_rolled_back(alerts, [ResumePoint(20)]) == alerts  # no time: nothing provably superseded


def test_resume_markers_sit_on_the_curve():
    from callbacks.overview import resume_points

    resumed, crashed = resume_points([ResumePoint(20, 1.0, 28, "crashed")], [10.0, 20.0, 30.0], [3.0, 2.0, 1.0])
    assert resumed[0] == [20] and resumed[1] == [2.0] and "rolled back" in resumed[2][0]
    assert crashed[0] == [28] and crashed[1] == [2.0] and "crashed" in crashed[2][0]
    resumed, crashed = resume_points([ResumePoint(20, 1.0, None, None)], [10.0], [3.0])
    assert resumed[0] == [20] and crashed is None


# --------------------------------------------------------------------------- the suggestion

@pytest.mark.parametrize("length,interval,expected", [
    (1_000, 1, (100, 101)), (3_000, 5, (96, 105)), (100_000, 10, (91, 227)), (10_000_000, 1, (100, 599)),
], ids=["short", "demo", "long", "huge-capped"])
def test_suggested_range_scales_palm_to_the_run(length, interval, expected):
    s = suggest_skip_range(onset_step=100, restart_step=50, run_length=length, log_interval=interval)
    assert (s.range.first, s.range.last) == expected
    assert s.range.count <= max(SKIP_MAX_STEPS, 2 * interval) and "PaLM" in s.why


def test_suggested_range_covers_the_suspects_and_never_precedes_the_restart():
    s = suggest_skip_range(onset_step=60, restart_step=50, run_length=100, log_interval=20, suspect_steps=[45, 70])
    assert (s.range.first, s.range.last) == (51, 90)
    with pytest.raises(RecoveryError, match="not before the fault's onset"):
        suggest_skip_range(onset_step=50, restart_step=50)


# --------------------------------------------------------------------------- plans, code, the command

def make_run(tmp_path: Path, *, last_good: bool = True, source: str = "checkpoint", trainer: bool = True) -> tuple[Path, str]:
    """A Trainboard run with one anomaly snapshot in the metadata format of issue 11."""
    run = tmp_path / "out" / "trainboard"
    with Monitor(run, anomaly=False, run_config={"output_dir": str(tmp_path / "out"), "max_steps": 1000,
                                                 **({"gradient_accumulation_steps": 1} if trainer else {})}) as m:
        for s in range(5, 201, 5):
            m.log(s, loss=1.0)
    name = "anomaly_20260101_120000_loss_spike"
    snap = rf.RunPaths.of(run).snapshots_dir / name
    (snap / "last_good").mkdir(parents=True)
    if source == "checkpoint":
        rf.write_json_atomic(snap / "last_good" / rf.HF_TRAINER_STATE, {"global_step": 100})
    meta = {"reason": "loss_spike", "step": 150, "onset_step": 150, "suspect_steps": [141, 150],
            "last_good": {"step": 100, "source": source, "path": "last_good", "checkpoint": "checkpoint-100"}
            if last_good else None, "last_good_missing": None if last_good else "no checkpoint before the onset"}
    rf.write_json_atomic(snap / rf.SNAPSHOT_METADATA, meta)
    return run, name


def test_plan_from_a_snapshot_suggests_the_range_and_prints_trainer_code(tmp_path):
    run, name = make_run(tmp_path)
    plan = plan_resume(run, name)
    assert plan.trainer and plan.source_kind == "checkpoint" and plan.step == 100
    assert str(plan.skip) == "141-150" and plan.suggestion is not None
    code = resume_code(plan)
    assert "SkipBatches('141-150')" in code and f"resume_from_checkpoint={str(plan.source)!r}" in code
    assert str(tmp_path / "out") in code  # the run's output_dir, read from its status
    edited = plan_resume(run, name, "141-160")
    assert "SkipBatches('141-160')" in resume_code(edited)


def test_plan_for_weights_only_and_for_a_plain_loop(tmp_path):
    run, name = make_run(tmp_path, source="rolling")
    code = resume_code(plan_resume(run, name))
    assert "from_pretrained" in code and "SkipBatches('1-150')" in code and "optimizer" in code
    run2, name2 = make_run(tmp_path / "plain", trainer=False)
    code2 = resume_code(plan_resume(run2, name2))
    assert "Monitor(" in code2 and "skip_batches='141-150'" in code2 and "monitor.should_skip(step)" in code2
    assert "monitor.resumed(100)" in code2


def test_plan_from_a_checkpoint_dir(tmp_path):
    run, _ = make_run(tmp_path)
    ckpt = tmp_path / "out" / "checkpoint-100"
    ckpt.mkdir()
    rf.write_json_atomic(ckpt / rf.HF_TRAINER_STATE, {"global_step": 100})
    plan = plan_resume(run, "checkpoint-100", "101-120")  # found by name in the run's output_dir
    assert plan.source == ckpt.resolve() and plan.step == 100 and str(plan.skip) == "101-120"
    assert plan_resume(run, str(ckpt)).skip is None


@pytest.mark.parametrize("case,message", [
    ("no-run", "no run directory"), ("not-a-run", "not a Trainboard run directory"),
    ("no-last-good", "holds no last good state: no checkpoint before the onset"),
    ("reversed", "--skip-batches: skip range 150-141 ends before it starts"),
    ("before-resume", "must start after the resume step 100"), ("unknown-source", "neither a snapshot"),
    ("words", "--skip-batches: 'soon' is not a step range"),
], ids=lambda v: v if " " not in v else "")
def test_bad_input_names_the_problem(tmp_path, case, message):
    run, name = make_run(tmp_path, last_good=case != "no-last-good")
    (tmp_path / "empty").mkdir()
    args = {"no-run": (tmp_path / "nope", name, None), "not-a-run": (tmp_path / "empty", name, None),
            "no-last-good": (run, name, None), "reversed": (run, name, "150-141"),
            "before-resume": (run, name, "90-120"), "unknown-source": (run, "checkpoint-7", None),
            "words": (run, name, "soon")}[case]
    with pytest.raises(RecoveryError, match=message.replace("(", r"\(")):
        plan_resume(*args)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainboard", "resume", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_the_resume_command_prints_code_or_a_clear_error(tmp_path):
    run, name = make_run(tmp_path)
    ok = run_cli(str(run), "--from", name)
    assert ok.returncode == 0, ok.stderr
    assert "Suggested skip range 141-150" in ok.stdout and "SkipBatches('141-150')" in ok.stdout
    edited = run_cli(str(run), "--from", name, "--skip-batches", "141-170")
    assert edited.returncode == 0 and "SkipBatches('141-170')" in edited.stdout and "Suggested" not in edited.stdout
    for argv, message in (((str(tmp_path / "nope"), "--from", name), "no run directory"),
                          ((str(run), "--from", name, "--skip-batches", "150-141"), "ends before it starts"),
                          ((str(run), "--from", "manual_x"), "neither a snapshot")):
        bad = run_cli(*argv)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert bad.stderr.startswith("trainboard resume: error: ")
    missing = run_cli(str(run))
    assert missing.returncode == 2 and "--from" in missing.stderr and "Traceback" not in missing.stderr


# --------------------------------------------------------------------------- the Recover panel

def find(node, pred):
    if pred(node):
        yield node
    children = getattr(node, "children", None)
    for c in children if isinstance(children, (list, tuple)) else [children] if children is not None else []:
        if hasattr(c, "children") or hasattr(c, "id"):
            yield from find(c, pred)


def test_panel_data_and_component(tmp_path):
    from components import ids
    from components.recover import build_recover_panel

    run, name = make_run(tmp_path)
    data = panel_data(run, {"name": name, "metadata": json.loads(
        (rf.RunPaths.of(run).snapshots_dir / name / rf.SNAPSHOT_METADATA).read_text())})
    assert data["ok"] and data["last_good_step"] == 100 and data["skip"] == "141-150" and data["suggested"] == "141-150"
    assert "trainboard resume" in data["command"] and "--skip-batches 141-150" in data["command"]
    tree = build_recover_panel(data, name, {"run_id": ".", "snapshot": name, "run_length": None})
    skip = next(find(tree, lambda n: getattr(n, "id", None) == {"type": ids.RECOVER_SKIP_TYPE, "key": name}))
    code = next(find(tree, lambda n: getattr(n, "id", None) == {"type": ids.RECOVER_CODE_TYPE, "key": name}))
    assert skip.value == "141-150" and "SkipBatches('141-150')" in code.children
    assert "step 100" in str(tree)
    none = build_recover_panel({"last_good_step": None, "error": "this snapshot holds no last good state"}, "k", {})
    assert "holds no last good state" in str(none)


def test_edited_range_keeps_the_code_on_bad_input(tmp_path):
    from dash import no_update

    from callbacks.recover import edited_range
    from services.catalog import RunCatalog

    run, name = make_run(tmp_path)
    store = RunCatalog(run)
    code, command, _msg = edited_range(store, {"run_id": ".", "snapshot": name}, "141-145")
    assert "SkipBatches('141-145')" in code and "--skip-batches 141-145" in command
    code, command, msg = edited_range(store, {"run_id": ".", "snapshot": name}, "145-141")
    assert code is no_update and command is no_update and "ends before it starts" in str(msg)
    code, _c, msg = edited_range(store, {"run_id": "gone", "snapshot": name}, "141-145")
    assert code is no_update and "no longer listed" in str(msg)
    code, _c, msg = edited_range(store, {"run_id": ".", "snapshot": "../../etc"}, "141-145")
    assert code is no_update and "invalid snapshot name" in str(msg)


# --------------------------------------------------------------------------- MonitorCallback's checkpoint state

def test_monitor_callback_state_is_plain_json_and_restores_into_the_live_instance(tmp_path):
    pytest.importorskip("transformers")
    from collectors.callback import MonitorCallback, plain_json, saved_state

    cb = MonitorCallback(base_dir=tmp_path / "run")
    st = cb.state()
    assert st["args"]["restore_into"] == cb._index and json.loads(json.dumps(st)) == st
    # Trainer's restore_callback_states_from_checkpoint: type(cb)(**args), then setattr of attributes
    rebuilt = type(cb)(**st["args"])
    assert rebuilt is cb and rebuilt.base_dir == tmp_path / "run"
    setattr(rebuilt, "trainboard_state", {"AnomalyPlugin": {"engine": {}}})
    assert cb._pending_state == {"AnomalyPlugin": {"engine": {}}}
    assert type(cb)(restore_into=10**9) is not cb  # no such instance: a default one
    assert plain_json({"a": (1, 2.5), 3: [None, True]}) == {"a": [1, 2.5], "3": [None, True]}
    with pytest.raises(TypeError):
        plain_json({"x": object()})
    assert saved_state({"MonitorCallback": [{"attributes": {"trainboard_state": {"P": {}}}}]}, "MonitorCallback") == {"P": {}}
    assert saved_state({"MonitorCallback": {"args": {}, "attributes": {}}}, "MonitorCallback") is None
    assert saved_state(None, "MonitorCallback") is None


def test_samples_of_rolled_back_steps_are_superseded(tmp_path):
    from services.samples import SamplesHistory

    paths = rf.RunPaths.of(tmp_path / "run")
    paths.logs_dir.mkdir(parents=True)
    with rf.JsonlWriter(paths.samples) as w:
        for s in (10, 20, 30):
            w.append(rf.make_record("sample", step=s, time=100.0 + s))
        w.append(rf.make_record("sample", step=30, time=300.0))
    hist = SamplesHistory(paths.root)
    hist.refresh()
    version = hist.version
    assert hist.apply_resumes([ResumePoint(20, time=200.0)])
    assert [(r["step"], r["time"]) for r in hist.records] == [(10, 110.0), (20, 120.0), (30, 300.0)]
    assert hist.version > version and not hist.apply_resumes([ResumePoint(20, time=200.0)])
    assert not hist.apply_resumes([])


def test_spectral_measurements_of_rolled_back_steps_are_replaced(tmp_path):
    from services.spectral_store import SpectralRunData

    paths = rf.RunPaths.of(tmp_path / "run")
    paths.logs_dir.mkdir(parents=True)
    with rf.JsonlWriter(paths.spectral) as w:
        for s in (20, 40, 60, 40, 60):  # resumed at step 30: 40 and 60 measured again
            w.append(rf.make_record("spectral", step=s, layer_name="h.0", mode="full", r=None,
                                    principal_alignment=0.9, minor_alignment=0.1 if s < 61 else 0.2,
                                    subspace_angle=0.1, reconstruction_error=0.01, time=float(s)))
    data = SpectralRunData(paths)
    data.refresh()
    assert list(data.layers["h.0"].steps) == [20, 40, 60]  # step 20 from before the resume is kept
