"""The plain-loop Monitor and the status file: values written, torn reads, I/O failures, crash marking."""
from __future__ import annotations

import errno
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from collectors import Monitor
from collectors import monitor as monitor_mod
from collectors import runformat as rf

REPO = Path(__file__).resolve().parent.parent


def read_records(run: Path) -> list[dict]:
    return list(rf.iter_records(rf.RunPaths.of(run).metrics))


def test_plain_loop_writes_metrics_and_status(tmp_path):
    run = tmp_path / "run"
    with Monitor(base_dir=run, samples_per_step=8) as mon:
        for step in range(1, 6):
            mon.log(step, loss=1.0 / step, lr=1e-3, grad_norm=0.5, custom=step * 2)
        mon.log(5, eval_loss=0.9)
    recs = read_records(run)
    assert [r["kind"] for r in recs] == ["train"] * 5 + ["eval"]
    assert recs[2]["loss"] == pytest.approx(1 / 3) and recs[2]["learning_rate"] == 1e-3 and recs[2]["custom"] == 6
    status, problem = rf.read_json(rf.RunPaths.of(run).status)
    assert problem is None
    assert status["state"] == "finished" and status["step"] == 5 and status["eval_loss"] == 0.9
    assert status["train_loss"] == pytest.approx(0.2) and status["grad_norm"] == 0.5
    assert status["memory"]["rss_gb"] > 0 and status["throughput"]["steps_per_second"] > 0
    assert status["throughput"]["samples_per_second"] == pytest.approx(status["throughput"]["steps_per_second"] * 8)


def test_nan_and_inf_round_trip_through_monitor(tmp_path):
    with Monitor(base_dir=tmp_path) as mon:
        mon.log(1, loss=math.nan, grad_norm=math.inf)
    rec = read_records(tmp_path)[0]
    assert math.isnan(rec["loss"]) and rec["grad_norm"] == math.inf
    status, _ = rf.read_json(rf.RunPaths.of(tmp_path).status)
    assert math.isnan(status["train_loss"])


def test_exception_inside_context_marks_crashed(tmp_path):
    with pytest.raises(RuntimeError):
        with Monitor(base_dir=tmp_path) as mon:
            mon.log(1, loss=1.0)
            raise RuntimeError("boom")
    status, _ = rf.read_json(rf.RunPaths.of(tmp_path).status)
    assert status["state"] == "crashed" and "boom" in status["error"]


@pytest.mark.parametrize("bad,match", [(dict(step=-1), "non-negative"), (dict(step="x"), "non-negative"),
                                       (dict(step=1, kind="weird"), "must be one of")], ids=["negative", "string", "kind"])
def test_bad_log_arguments_give_clear_errors(tmp_path, bad, match):
    mon = Monitor(base_dir=tmp_path)
    with pytest.raises(ValueError, match=match):
        mon.log(**bad)


@pytest.mark.parametrize("kwargs,match", [(dict(base_dir=""), "needs a directory"),
                                          (dict(base_dir="x", samples_per_step=0), "positive number")],
                         ids=["empty-dir", "zero-samples"])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Monitor(**kwargs)


def test_disk_full_is_reported_once_and_training_goes_on(tmp_path, monkeypatch, caplog):
    calls = {"n": 0}
    real = rf.write_json_atomic

    def full_disk(*a, **k):
        calls["n"] += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rf, "write_json_atomic", full_disk)
    mon = Monitor(base_dir=tmp_path)
    with caplog.at_level("WARNING", logger="trainboard"):
        for step in range(1, 20):
            mon.log(step, loss=1.0)
            mon.set_state(rf.RunState.EVALUATING if step % 2 else rf.RunState.TRAINING)  # each change: a write
        mon.flush()  # the writer thread writes the status (issue 12): wait for it
    warnings = [r for r in caplog.records if "No space left" in r.getMessage()]
    assert len(warnings) == 1 and calls["n"] >= 19
    monkeypatch.setattr(rf, "write_json_atomic", real)
    mon.log(20, loss=0.5)  # disk has space again: the status comes back
    mon.close()
    assert rf.read_json(rf.RunPaths.of(tmp_path).status)[0]["step"] == 20
    assert len(read_records(tmp_path)) == 20


def test_unwritable_base_dir_never_raises(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    mon = Monitor(base_dir=tmp_path / "file" / "run")  # parent is a file: every mkdir fails
    with caplog.at_level("WARNING", logger="trainboard"):
        for step in range(5):
            mon.log(step, loss=1.0)
        mon.close()
    assert any("run directory" in r.getMessage() for r in caplog.records)


def test_failing_plugin_is_reported_once_and_skipped(tmp_path, caplog):
    class Broken:
        def on_record(self, monitor, record):
            raise ZeroDivisionError("plugin bug")

    with caplog.at_level("WARNING", logger="trainboard"):
        with Monitor(base_dir=tmp_path, plugins=[Broken()]) as mon:
            for step in range(10):
                mon.log(step, loss=1.0)
    assert sum("plugin bug" in r.getMessage() for r in caplog.records) == 1
    assert len(read_records(tmp_path)) == 10


def test_non_main_process_writes_nothing(tmp_path):
    with Monitor(base_dir=tmp_path / "r", main_process=False) as mon:
        mon.log(1, loss=1.0)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("ending,state", [("raise SystemExit(0)", "crashed"), ("raise ValueError('died here')", "crashed"),
                                          ("mon.close()", "finished")], ids=["exit-early", "exception", "closed"])
def test_process_death_marks_run(tmp_path, ending, state):
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(REPO)!r})
        from collectors import Monitor
        mon = Monitor(base_dir={str(tmp_path)!r})
        mon.log(1, loss=1.0)
        {ending}
    """)
    subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    status, _ = rf.read_json(rf.RunPaths.of(tmp_path).status)
    assert status["state"] == state
    if "died here" in ending:
        assert "died here" in status["error"]


def test_status_rewritten_thousands_of_times_never_tears(tmp_path):
    """A writer process rewrites the status file 3000 times while this process reads it in a loop."""
    status = rf.RunPaths.of(tmp_path).status
    rf.write_json_atomic(status, {"step": 0, "pad": "x" * 5000})
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(REPO)!r})
        from collectors import runformat as rf
        for i in range(1, 3001):
            rf.write_json_atomic({str(status)!r}, {{"step": i, "pad": "x" * (5000 + i % 97)}})
    """)])
    reads = torn = 0
    last = 0
    while writer.poll() is None or reads == 0:
        raw = status.read_bytes()
        try:
            doc = json.loads(raw)
        except ValueError:
            torn += 1
            continue
        assert doc["step"] >= last
        last = doc["step"]
        reads += 1
    writer.wait(timeout=120)
    assert writer.returncode == 0
    assert torn == 0 and reads > 50
    assert json.loads(status.read_bytes())["step"] == 3000


def test_status_tracker_is_pure_and_derives_rate():
    t = monitor_mod.StatusTracker(samples_per_step=4, started_at=0.0)
    t.update(rf.make_record("train", step=10, loss=2.0), now=100.0)
    t.update(rf.make_record("train", step=20, loss=1.0), now=102.0)
    t.update(rf.make_record("eval", step=20, eval_loss=1.5), now=103.0)
    doc = t.document(now=104.0, memory={"rss_gb": 1.0}, extra={})
    assert doc["throughput"]["steps_per_second"] == 5.0 and doc["throughput"]["samples_per_second"] == 20.0
    assert doc["train_loss"] == 1.0 and doc["eval_loss"] == 1.5 and doc["step"] == 20
