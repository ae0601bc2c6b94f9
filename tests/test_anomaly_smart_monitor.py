"""The standalone Smart Monitor as a real subprocess: replay with --once, live following of a run dir,
the single-instance lock, clean SIGTERM/SIGINT, thresholds reload, snapshot requests, bad flags."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collectors import runformat as rf
from collectors import control
from collectors import snapshots as S
from collectors.anomaly.smart_monitor import iter_log_lines

ROOT = Path(__file__).resolve().parents[1]
LOSSES = [2.0, 1.8, 1.6, 1.5, 1.45, 1.44, 1.43, 1.42, 1.41, 1.40]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collectors.anomaly.smart_monitor", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "collectors.anomaly.smart_monitor", *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(pred, timeout: float = 60.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _hf_dir(tmp: Path) -> Path:
    """A Hugging Face output dir: trainer_state.json with a spike at step 55 and checkpoints 20 and 50."""
    out = tmp / "hf"
    history = [{"step": 5 * (i + 1), "loss": l, "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": 0.1}
               for i, l in enumerate(LOSSES)]
    history.append({"step": 55, "loss": 2.6, "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": 0.1})
    history.append({"step": 50, "eval_loss": 1.5, "eval_accuracy": 0.75, "epoch": 0.1})
    for step in (20, 50):
        cp = out / f"checkpoint-{step}"
        cp.mkdir(parents=True)
        (cp / "model.safetensors").write_text(f"weights-{step}")
        (cp / "trainer_state.json").write_text(json.dumps({"global_step": step,
                                                            "log_history": [h for h in history if h["step"] <= step]}))
    (out / "trainer_state.json").write_text(json.dumps({"global_step": 55, "log_history": history}))
    return out


def test_records_from_log_history_pure() -> None:
    hist = [{"step": 5, "loss": 1.0}, {"step": 5, "eval_loss": 2.0}, {"step": 10, "loss": 0.9},
            {"step": 10, "train_runtime": 3.0}, {"loss": 1.0}, "junk"]
    recs, bad = rf.records_from_log_history(hist, after_train=5, after_eval=-1)  # moved into runformat
    assert [(r["kind"], r["step"]) for r in recs] == [("eval", 5), ("train", 10), ("summary", 10)]
    assert bad == 2  # the entry without a step and the junk are counted, not dropped silently


@pytest.mark.integration
def test_once_replays_hf_output_dir_then_second_run_adds_nothing(tmp_path: Path) -> None:
    out = _hf_dir(tmp_path)
    proc = _run("--base-dir", str(out), "--once", "--poll-interval", "1")
    assert proc.returncode == 0, proc.stderr
    snaps = S.list_snapshots(out)
    spike = [s for s in snaps if s.reason.startswith("loss_spike")]
    assert len(spike) == 1 and spike[0].step == 55 and spike[0].reason == "loss_spike_83.1pct"
    # the checkpoint at/before the event, copied into model/
    assert (spike[0].path / "model" / "model.safetensors").read_text() == "weights-50"
    status = json.loads((spike[0].path / "training_status.json").read_text())
    assert status["snapshot_source"]["checkpoint_step"] == 50
    meta = json.loads((spike[0].path / "metadata.json").read_text())
    assert meta["weights_step"] == 50 and meta["onset_step"] == 55 and meta["suspect_steps"] == [51, 55]
    assert meta["last_good"] == {"step": 50, "source": "checkpoint", "path": "last_good", "checkpoint": "checkpoint-50"}
    assert (spike[0].path / "last_good" / "model.safetensors").read_text() == "weights-50"
    # best-model snapshots are ranked (keep_best), not pinned, and never hold weights newer than their step
    bests = [s for s in snaps if s.reason.startswith("best_model")]
    assert bests and not any(s.pinned for s in bests) and len(bests) <= 3
    for s in bests:
        m = json.loads((s.path / "metadata.json").read_text())
        assert m["weights_step"] is None or m["weights_step"] <= s.step
        assert (m["weights_step"] is None) == (not (s.path / "model").exists())
    lines = list(iter_log_lines(out))
    assert any("ALERT [HIGH] loss_spike_83.1pct at step 55" in line for line in lines)
    assert any("Monitoring: Step 55" in line for line in lines)
    assert (out / "logs" / f"smart_monitor_{time.strftime('%Y%m%d')}.log").is_file()
    alerts = list(rf.iter_records(rf.RunPaths.of(out).alerts))
    assert {a["source"] for a in alerts} == {"smart_monitor"}
    n_snaps, n_alerts = len(snaps), len(alerts)
    again = _run("--base-dir", str(out), "--once")
    assert again.returncode == 0, again.stderr
    assert len(S.list_snapshots(out)) == n_snaps and len(list(rf.iter_records(rf.RunPaths.of(out).alerts))) == n_alerts


@pytest.mark.integration
def test_live_run_dir_lock_thresholds_request_and_sigterm(tmp_path: Path) -> None:
    run = tmp_path / "run"
    paths = rf.RunPaths.of(run)
    hf = tmp_path / "hf"
    (hf / "checkpoint-10").mkdir(parents=True)
    (hf / "checkpoint-10" / "model.safetensors").write_text("w10")
    rf.write_json_atomic(paths.status, {"state": "training", "step": 0, "updated_at": time.time(), "pid": 1,
                                        "host": "elsewhere", "config": {"output_dir": str(hf)}})
    w = rf.JsonlWriter(paths.metrics)
    for i, loss in enumerate(LOSSES, 1):
        w.append(rf.make_record("train", step=i, loss=loss))
    mon = _spawn("--base-dir", str(run), "--poll-interval", "0.2")
    try:
        _wait_for(lambda: any("Monitoring: Step 10" in x for x in iter_log_lines(run)), what="first heartbeat")
        # a second instance is refused with a clear message
        second = _run("--base-dir", str(run), "--once")
        assert second.returncode == 3
        assert f"another Smart Monitor (pid {mon.pid}) is already watching" in second.stderr
        # live thresholds: 10 % is a spike from now on
        # (the noise gate off too: a 10 % rise on this smooth synthetic log is within its noise)
        rf.write_json_atomic(paths.thresholds, {"smart": {"loss_spike_threshold": 0.05}, "noise": {"enabled": False}})
        _wait_for(lambda: any("Thresholds reloaded" in x for x in iter_log_lines(run)), what="thresholds reload")
        w.append(rf.make_record("train", step=11, loss=1.55))
        _wait_for(lambda: any(a["rule"] == "loss_spike" for a in rf.iter_records(paths.alerts)), what="spike alert")
        # snapshot now: this training's collector has no anomaly plugin, so the monitor copies the checkpoint
        req = control.request_snapshot(run)
        _wait_for(lambda: control.read_result(run, req["id"]) is not None, what="snapshot result")
        res = control.read_result(run, req["id"])
        assert res["ok"] and res["handled_by"] == "smart_monitor"
        assert (run / "snapshots" / res["name"] / "model" / "model.safetensors").read_text() == "w10"
        mon.send_signal(signal.SIGTERM)
        assert mon.wait(timeout=30) == 0
    finally:
        if mon.poll() is None:
            mon.kill()
            mon.wait()
    text = "\n".join(iter_log_lines(run))
    assert "Stopping (SIGTERM)" in text and "Smart Monitor stopped" in text
    # restarted: continues from its saved state (no re-alerting on old records), lock free again
    w.append(rf.make_record("train", step=12, loss=1.45))
    w.close()
    again = _run("--base-dir", str(run), "--once")
    assert again.returncode == 0, again.stderr
    assert "Resuming from saved state: 11 records seen" in again.stderr
    assert [a["step"] for a in rf.iter_records(paths.alerts) if a["rule"] == "loss_spike" and a["kind"] == "alert"] == [11]


@pytest.mark.integration
def test_sigint_stops_cleanly(tmp_path: Path) -> None:
    mon = _spawn("--base-dir", str(tmp_path), "--poll-interval", "30")
    try:
        _wait_for(lambda: any("Monitoring: Step" in x for x in iter_log_lines(tmp_path)), what="heartbeat")
        t0 = time.monotonic()
        mon.send_signal(signal.SIGINT)
        assert mon.wait(timeout=30) == 0
        assert time.monotonic() - t0 < 10  # the 30 s sleep is interrupted
    finally:
        if mon.poll() is None:
            mon.kill()
            mon.wait()
    assert "Traceback" not in mon.stderr.read()


@pytest.mark.parametrize("args,needle", [
    (["--base-dir", "/nonexistent/xyz"], "does not exist"),
    (["--base-dir", "."], None),
    (["--base-dir", ".", "--loss-spike-threshold", "-1"], "--loss-spike-threshold must be > 0"),
    (["--base-dir", ".", "--loss-window", "1"], "--loss-window must be >= 2"),
    (["--base-dir", ".", "--poll-interval", "0"], "--poll-interval must be between"),
    (["--base-dir", ".", "--min-steps-between-saves", "-3"], "--min-steps-between-saves must be >= 0"),
    (["--base-dir", ".", "--accuracy-drop-threshold", "abc"], "invalid float value"),
], ids=["missing-dir", "valid", "negative-spike", "small-window", "zero-poll", "negative-steps", "not-a-number"])
def test_bad_flags_give_clear_errors(args: list[str], needle: str | None, tmp_path: Path) -> None:
    from collectors.anomaly.smart_monitor import parse_args

    args = [str(tmp_path) if a == "." else a for a in args]
    if needle is None:
        assert parse_args(args).config.smart.loss_spike_threshold == 0.3
        return
    proc = _run(*args)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_once_on_empty_dir_says_nothing_to_replay(tmp_path: Path) -> None:
    proc = _run("--base-dir", str(tmp_path), "--once")
    assert proc.returncode == 4 and "nothing to replay" in proc.stderr
