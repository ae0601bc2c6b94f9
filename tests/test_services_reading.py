"""The reading layer accepts what real tools write: bare NaN/Infinity tokens, half-written files, fields of
the wrong type, records without a step, resumed runs, symbolic links; and the dashboard detects alerts in
runs without the collector (read-only). One test per case, on real files."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from callbacks import overview as ov
from collectors import runformat as rf
from services import model
from services.catalog import RunCatalog, discover
from services.detection import DASHBOARD_SOURCE, DashboardDetector
from services.model import RunKind, Series, clean_status
from services.readers import HuggingFaceRun, TrainboardRun, detect_kind


def write_lines(path: Path, lines: list[str | bytes], mode: str = "ab") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as fh:
        for line in lines:
            fh.write(line.encode() if isinstance(line, str) else line)


def trainboard_run(root: Path) -> TrainboardRun:
    run = TrainboardRun(".", root)
    run.refresh()
    return run


def hf_state(log_history: list[dict], global_step: int, max_steps: int = 100) -> str:
    """A trainer_state.json as Trainer writes it: json.dumps, so NaN/Infinity are bare tokens."""
    return json.dumps({"global_step": global_step, "max_steps": max_steps, "log_history": log_history}, indent=2)


# --------------------------------------------------------------------------- bare NaN / Infinity

def test_bare_nan_in_our_own_metrics_keeps_the_whole_line(tmp_path: Path) -> None:
    paths = rf.RunPaths.of(tmp_path)
    write_lines(paths.metrics, ['{"v":1,"kind":"train","step":1,"loss":2.0,"learning_rate":0.001}\n',
                                '{"v":1,"kind":"train","step":2,"loss":NaN,"learning_rate":0.001}\n',
                                '{"v":1,"kind":"train","step":3,"loss":Infinity,"grad_norm":-Infinity}\n'])
    run = trainboard_run(tmp_path)
    loss = run.series["train/loss"]
    assert list(loss.steps) == [1, 2, 3] and loss.values[0] == 2.0
    assert math.isnan(loss.values[1]) and loss.values[2] == math.inf
    assert list(run.series["train/learning_rate"].steps) == [1, 2]  # the finite metric of the NaN line is kept
    assert run.series["train/grad_norm"].values[0] == -math.inf and run.bad_lines == 0
    fig, _ = ov.render_chart(run, ov.CHARTS[0], {"log_y": False, "range": None})
    nan_trace = fig["data"][2]  # the non-finite markers of the train loss
    assert nan_trace["x"] == [2, 3] and nan_trace["customdata"] == ["NaN", "+Inf"]


# --------------------------------------------------------------------------- half-written files

def test_half_written_metrics_line_waits_for_its_end(tmp_path: Path) -> None:
    paths = rf.RunPaths.of(tmp_path)
    write_lines(paths.metrics, ['{"v":1,"kind":"train","step":1,"loss":2.0}\n', '{"v":1,"kind":"train","st'])
    run = trainboard_run(tmp_path)
    assert list(run.series["train/loss"].steps) == [1] and run.bad_lines == 0
    write_lines(paths.metrics, ['ep":2,"loss":1.5}\n'])
    assert run.refresh() and list(run.series["train/loss"].values) == [2.0, 1.5]


def test_truncated_metrics_file_is_reread_from_scratch(tmp_path: Path) -> None:
    paths = rf.RunPaths.of(tmp_path)
    write_lines(paths.metrics, [f'{{"v":1,"kind":"train","step":{i},"loss":1.0}}\n' for i in range(1, 6)])
    run = trainboard_run(tmp_path)
    write_lines(paths.metrics, ['{"v":1,"kind":"train","step":1,"loss":9.0}\n'], mode="wb")  # a new run reuses the dir
    assert run.refresh()
    assert list(run.series["train/loss"].steps) == [1] and list(run.series["train/loss"].values) == [9.0]


def test_half_written_trainer_state_falls_back_and_recovers(tmp_path: Path) -> None:
    out = tmp_path / "hf"
    history = [{"loss": 3.0 - i * 0.1, "step": i, "epoch": i / 10} for i in range(1, 5)]
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / rf.HF_TRAINER_STATE).write_text(hf_state(history, 4))
    (out / "checkpoint-8").mkdir()
    full = hf_state(history + [{"loss": 2.4, "step": 8}], 8)
    (out / "checkpoint-8" / rf.HF_TRAINER_STATE).write_text(full[: len(full) // 2])  # Trainer still writing
    run = HuggingFaceRun(".", out)
    run.refresh()
    assert list(run.series["train/loss"].steps) == [1, 2, 3, 4]  # the previous checkpoint's state
    assert any("checkpoint-8" in p and "not valid JSON" in p for p in run.all_problems())
    (out / "checkpoint-8" / rf.HF_TRAINER_STATE).write_text(full)
    assert run.refresh()
    assert list(run.series["train/loss"].steps) == [1, 2, 3, 4, 8] and run.all_problems() == []


# --------------------------------------------------------------------------- fields of the wrong type

@pytest.mark.parametrize("field,value,words", [
    ("throughput", [1, 2], "'throughput' is a list, not an object"),
    ("memory", "12 GB", "'memory' is text, not an object"),
    ("config", 7, "'config' is a number, not an object"),
    ("updated_at", "2026-01-01T00:00:00", "'updated_at' is text, not a number"),
    ("train_loss", {"value": 1}, "'train_loss' is an object, not a number"),
    ("step", "12", "'step' is text, not a whole number"),
    ("state", 3, "'state' is a number, not text"),
], ids=["throughput-list", "memory-text", "config-number", "updated-at-text", "loss-object", "step-text", "state-number"])
def test_status_field_of_the_wrong_type_is_named_and_the_rest_works(field: str, value: object, words: str) -> None:
    doc = {"v": 1, "state": "training", "step": 5, "train_loss": 1.25, "updated_at": 100.0,
           "throughput": {"steps_per_second": 2.0}, "memory": {"rss_gb": 1.0}, "config": {"max_steps": 10}}
    doc[field] = value
    clean, problems = clean_status(doc)
    assert len(problems) == 1 and words in problems[0] and field not in clean
    cards = {c.metric: c for c in ov.overview_cards(clean)}  # no AttributeError, every card present
    assert len(cards) == 9
    if field != "train_loss":
        assert cards["train_loss"].value == "1.25"


def test_error_object_is_shown_as_text(tmp_path: Path) -> None:
    paths = rf.RunPaths.of(tmp_path)
    rf.write_json_atomic(paths.status, {"v": 1, "state": "crashed", "step": 3, "updated_at": time.time(),
                                        "error": {"type": "RuntimeError", "message": "CUDA out of memory"}})
    run = trainboard_run(tmp_path)
    assert isinstance(run.status["error"], str) and "CUDA out of memory" in run.status["error"]
    assert run.field_problems == ["status field 'error' is an object, not text: shown as JSON"]
    state = {c.metric: c for c in ov.overview_cards(ov.effective_status(run))}["state"]
    assert isinstance(state.note, str) and "CUDA out of memory" in state.note


def test_overview_cards_survive_a_raw_status_with_wrong_types() -> None:
    cards = ov.overview_cards({"throughput": "fast", "memory": [1], "config": None, "error": 5, "state": "training"})
    assert [c.metric for c in cards][-1] == "state"


# --------------------------------------------------------------------------- records without a numeric step

def test_records_without_a_numeric_step_are_counted_and_reported(tmp_path: Path) -> None:
    paths = rf.RunPaths.of(tmp_path)
    write_lines(paths.metrics, ['{"v":1,"kind":"train","step":1,"loss":2.0}\n', '{"v":1,"kind":"train","loss":1.0}\n',
                                '{"v":1,"kind":"train","step":"3","loss":1.0}\n', '{"v":1,"kind":"train","step":null}\n',
                                '{"v":1,"kind":"train","step":4,"loss":1.5}\n'])
    run = trainboard_run(tmp_path)
    assert list(run.series["train/loss"].steps) == [1, 4] and run.bad_steps == 3
    assert ov.skipped_note(run.bad_lines, run.unknown_lines, run.bad_steps) == \
        "3 records without a numeric step skipped"


def test_trainer_log_history_entries_without_step_are_counted(tmp_path: Path) -> None:
    out = tmp_path / "hf"
    out.mkdir()
    (out / rf.HF_TRAINER_STATE).write_text(hf_state([{"loss": 1.0, "step": 1}, {"loss": 0.9}, {"loss": 0.8, "step": "x"}], 1))
    run = HuggingFaceRun(".", out)
    run.refresh()
    assert list(run.series["train/loss"].steps) == [1] and run.bad_steps == 2


# --------------------------------------------------------------------------- duplicate / decreasing steps

@pytest.mark.parametrize("steps,values,expected", [
    ([1, 2, 3, 2, 3, 4], [1, 2, 3, 20, 30, 40], ([1, 2, 3, 4], [1, 20, 30, 40])),
    ([1, 2, 2, 3], [1, 2, 22, 3], ([1, 2, 3], [1, 22, 3])),
    ([5, 6, 1], [5, 6, 1], ([1], [1])),
], ids=["resume", "duplicate", "restart"])
def test_series_keeps_one_value_per_step_newest_wins(steps: list[int], values: list[float],
                                                     expected: tuple[list[int], list[float]]) -> None:
    s = Series()
    for st, v in zip(steps, values):
        s.append(float(st), float(v), math.nan)
    assert (list(s.steps), list(s.values)) == (list(map(float, expected[0])), list(map(float, expected[1])))
    bulk = Series()  # the fast path (same-shaped records) gives the same answer
    from array import array

    bulk.extend(array("d", steps), array("d", values), array("d", [math.nan] * len(steps)), False)
    assert (list(bulk.steps), list(bulk.values)) == (list(s.steps), list(s.values))


def test_resumed_run_live_redraws_instead_of_drawing_back(tmp_path: Path) -> None:
    paths = rf.RunPaths.of(tmp_path)
    write_lines(paths.metrics, [f'{{"v":1,"kind":"train","step":{i},"loss":{10 - i / 20}}}\n' for i in range(1, 101)])
    run = trainboard_run(tmp_path)
    _, state = ov.update_charts(run, None, False, {})
    # resumed from the checkpoint at step 50: steps 51.. are written again
    write_lines(paths.metrics, [f'{{"v":1,"kind":"train","step":{i},"loss":1.0}}\n' for i in range(51, 152)])
    run.refresh()
    outs, _ = ov.update_charts(run, state, False, {})
    assert isinstance(outs[0], dict), "a rewound series is redrawn whole, not extended"
    xs = outs[0]["data"][0]["x"]
    assert xs == sorted(xs) and len(xs) == 151 and outs[0]["data"][0]["y"][60] == 1.0


# --------------------------------------------------------------------------- symbolic links

def test_symlinked_run_dir_is_refused_with_a_message(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "run"
    rf.write_json_atomic(rf.RunPaths.of(real).status, {"v": 1, "state": "training", "step": 1})
    base = tmp_path / "base"
    base.mkdir()
    rf.write_json_atomic(rf.RunPaths.of(base / "own").status, {"v": 1, "state": "training", "step": 1})
    os.symlink(real, base / "linked")
    found, _, problems = discover(base)
    assert [rid for rid, _, _ in found] == ["own"]
    assert len(problems) == 1 and "linked is a symbolic link" in problems[0] and "not followed" in problems[0]
    cat = RunCatalog(base, watch=False)
    assert cat.run_ids() == ["own"] and cat.get("linked") is None and cat.problems == problems


# --------------------------------------------------------------------------- detection for runs without the collector

def test_hf_output_dir_with_nan_gets_a_dashboard_detected_critical_alert(tmp_path: Path) -> None:
    out = tmp_path / "hf"
    (out / "checkpoint-6").mkdir(parents=True)
    history = [{"loss": 2.0 - i * 0.1, "grad_norm": 1.0, "learning_rate": 1e-3, "step": i} for i in range(1, 6)]
    history.append({"loss": float("nan"), "grad_norm": float("nan"), "learning_rate": 1e-3, "step": 6})
    (out / "checkpoint-6" / rf.HF_TRAINER_STATE).write_text(hf_state(history, 6))
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert detect_kind(out) is RunKind.HUGGINGFACE
    run = HuggingFaceRun(".", out)
    run.refresh()
    assert not run.has_collector and math.isnan(run.series["train/loss"].values[-1])
    crit = [a for a in run.detected_alerts if a["severity"] == "critical"]
    assert {a["rule"] for a in crit} == {"non_finite_loss", "non_finite_grad_norm"}
    assert all(a["source"] == DASHBOARD_SOURCE and a["step"] == 6 for a in crit)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before  # read-only
    assert run.refresh() is False and len(run.detected_alerts) == len(crit) + sum(
        a["severity"] != "critical" for a in run.detected_alerts)  # unchanged files: nothing re-detected


def test_detector_is_the_collectors_rule_engine() -> None:
    det = DashboardDetector()
    det.feed([{"kind": "train", "step": s, "loss": 0.75} for s in range(1, 6)])
    det.feed([{"kind": "train", "step": 6, "loss": 1.02}])
    assert [a["reason"] for a in det.alerts] == ["loss_spike_36.0pct"]  # the RuleEngine docstring's example


def test_live_and_stale_rule_is_one_constant() -> None:
    now = 1e9
    assert model.live_state(False, now - model.STALE_AFTER_S + 1, now) == "training"
    assert model.live_state(False, now - model.STALE_AFTER_S - 1, now) == "stopped"
    assert model.status_state({"state": "training", "updated_at": now - model.STALE_AFTER_S - 1}, now) == "stale"
    assert ov.STALE_AFTER_S == model.STALE_AFTER_S


# --------------------------------------------------------------------------- what is watched

def test_catalog_watches_status_logs_control_and_snapshot_existence_only(tmp_path: Path) -> None:
    """Non-recursive watches on exactly what the pages read: never inside a snapshot's model/ folder (the
    old recursive watch there made watchdog print a RuntimeWarning per snapshot)."""
    import sys

    from collectors import snapshots as snap

    base = tmp_path / "base"
    run_dir = base / "run"
    write_lines(rf.RunPaths.of(run_dir).metrics, ['{"v":1,"kind":"train","step":1,"loss":2.0}\n'])
    rf.write_json_atomic(rf.RunPaths.of(run_dir).status, {"v": 1, "state": "training", "step": 1})
    (run_dir / rf.CONTROL_DIR).mkdir()

    def model(d: Path) -> None:
        (d / "layer" / "deep").mkdir(parents=True)
        (d / "layer" / "deep" / "w.bin").write_bytes(b"x" * 100)

    assert snap.create_snapshot(run_dir, kind="manual", reason=None, metadata={"step": 1}, status={},
                                write_model=model).ok
    cat = RunCatalog(base)
    try:
        if not cat.watching:
            pytest.skip(f"no inotify here: {cat.watch_problem}")
        run = cat.get("run")
        expected = {str(base), str(run_dir)} | {str(run_dir / d) for d in ("status", "logs", "control", "snapshots")}
        assert set(cat.watched_dirs()) == expected
        v = run.version
        write_lines(rf.RunPaths.of(run_dir).metrics, ['{"v":1,"kind":"train","step":2,"loss":1.5}\n'])
        deadline = time.monotonic() + 10
        while "run" not in cat._dirty and time.monotonic() < deadline:  # the event marks the run dirty
            time.sleep(0.05)
        assert cat.get("run").version > v and list(run.series["train/loss"].steps) == [1, 2]
        for i in range(3):  # new snapshots: seen as entries of snapshots/, never watched inside
            assert snap.create_snapshot(run_dir, kind="anomaly", reason=f"r{i}", metadata={"step": 2}, status={},
                                        write_model=model, now=time.time() + i).ok
        deadline = time.monotonic() + 10
        while "run" not in cat._dirty and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "run" in cat._dirty
        assert cat.get("run").snapshot_count() == 4 and set(cat.watched_dirs()) == expected
        assert "watchdog.observers" not in sys.modules or not any(
            "watchdog" in type(t).__module__ for t in __import__("threading").enumerate())
    finally:
        cat.stop()


def test_trainboard_run_lists_the_checkpoints_of_a_trainer_writing_inside_it(tmp_path: Path) -> None:
    paths = rf.RunPaths.of(tmp_path)
    write_lines(paths.metrics, ['{"v":1,"kind":"train","step":1,"loss":2.0}\n'])
    out = tmp_path / "hf_output"
    out.mkdir()
    run = trainboard_run(tmp_path)
    assert run.checkpoints() == []
    for step in (4, 8):
        (out / f"checkpoint-{step}").mkdir()
        (out / f"checkpoint-{step}" / rf.HF_TRAINER_STATE).write_text(hf_state([{"loss": 1.0, "step": step}], step))
        os.utime(out, ns=(step, step * 10**9))  # a new entry changes the directory's mtime (made explicit here)
        assert run.refresh()
        assert [r.step for r in run.checkpoints()] == [4, 8][: (step // 4)]
    assert not run.refresh()  # unchanged: a few stat calls, nothing re-read
