"""Incidents wired into the collector and the Smart Monitor: one incident per lasting fault in
``logs/alerts.jsonl``, one notification per incident, and ack/mute from ``control/incidents.json``
honoured by a running training and by the Smart Monitor (no notification, no snapshot)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from collectors import Monitor
from collectors import runformat as rf
from collectors import snapshots as S
from collectors.anomaly import incidents as inc
from tests.helpers.http_receiver import Receiver

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 1.2
"""A little more than the collector's control poll (1 s)."""


def _records(run: Path) -> list[dict]:
    return list(rf.iter_records(rf.RunPaths.of(run).alerts, known_kinds=None))


def _healthy(step: int) -> dict:
    return {"loss": 2.0 * (0.995 ** step) * (1 + 0.02 * math.sin(step * 1.7)), "grad_norm": 1.0 + 0.05 * math.sin(step),
            "learning_rate": 1e-3}


def test_a_lasting_fault_is_one_incident_and_one_message(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Receiver() as rx:
        with Monitor(run, notify=rx.url("json", "/ok")) as mon:
            model = torch.nn.Linear(4, 4)
            mon.watch(model=model)
            for step in range(1, 121):
                with torch.no_grad():
                    model.weight.add_(1e-3)  # the weights move, as a training's do (a still model is optimizer_stalled)
                m = _healthy(step)
                if 60 <= step < 90:
                    m["grad_norm"] = 80.0  # 30 logged steps of explosion: one incident
                mon.log(step, **m)
        got = rx.wait_for("/ok", 1)
        time.sleep(0.5)
        got = rx.received("/ok")
    recs = _records(run)
    changes = [r for r in recs if r["kind"] == "incident" and r["rule"] == "gradient_explosion"]
    assert [c["state"] for c in changes][0] == "open" and changes[-1]["state"] == "resolved"
    assert changes[-1]["count"] == 30 and changes[-1]["first_step"] == 60 and changes[-1]["last_step"] == 89
    assert changes[-1]["resolved_step"] == 89 + inc.RESOLVE_AFTER
    firings = [r for r in recs if r["kind"] == "alert" and r["rule"] == "gradient_explosion"]
    assert len(firings) == 1 and firings[0]["incident"] == changes[0]["id"]  # the file is not a flood
    assert len([m for m in got if "gradient_explosion" in m.data.get("title", "")]) == 1
    folded = inc.fold_records(recs)
    assert [(i.rule, i.count, i.state) for i in folded] == [("gradient_explosion", 30, "resolved")]


def test_mute_and_ack_reach_a_running_training(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Receiver() as rx:
        with Monitor(run, notify=rx.url("json", "/ok")) as mon:
            mon.watch(model=torch.nn.Linear(4, 4))
            for step in range(1, 41):
                mon.log(step, **_healthy(step))
            _, problem = inc.mute(run, "non_finite_loss", 3600, who="test")
            assert problem is None
            time.sleep(POLL_S)
            mon.log(41, **{**_healthy(41), "loss": math.nan})  # muted: no message, no snapshot
            for step in range(42, 50):
                mon.log(step, **_healthy(step))
            time.sleep(POLL_S)
            mon.log(50, **{**_healthy(50), "grad_norm": 500.0})  # not muted: one message
            mon.flush()  # the writer thread writes within 0.25 s; read what it wrote
            opened = [r for r in _records(run) if r["kind"] == "incident" and r["rule"] == "gradient_explosion"]
            assert opened and opened[0]["state"] == "open"
            _, problem = inc.acknowledge(run, opened[0]["id"], who="test")
            assert problem is None
            time.sleep(POLL_S)
            for step in range(51, 80):
                mon.log(step, **_healthy(step))
        time.sleep(1.0)
        got = rx.received("/ok")
    titles = [m.data.get("title", "") for m in got]
    assert not any("non_finite_loss" in t for t in titles), titles
    assert sum("gradient_explosion" in t for t in titles) == 1, titles
    recs = _records(run)
    nan = [r for r in recs if r["kind"] == "incident" and r["rule"] == "non_finite_loss"]
    assert nan and all(r["muted"] for r in nan)  # written, marked muted: nothing hidden
    assert [r for r in recs if r["kind"] == "alert" and r["rule"] == "non_finite_loss"]
    resolved = [r for r in recs if r["kind"] == "incident" and r["rule"] == "gradient_explosion" and r["state"] == "resolved"]
    assert resolved and resolved[-1]["acked"] is True
    assert not [s for s in S.list_snapshots(run) if "non_finite" in s.reason]
    assert [s for s in S.list_snapshots(run) if s.reason.startswith("best_model")]  # events still snapshot


def _metrics_run(root: Path, spike_at: int = 40) -> Path:
    w = rf.JsonlWriter(rf.RunPaths.of(root).metrics)
    for step in range(1, 61):
        m = _healthy(step)
        if step == spike_at:
            m["loss"] *= 8
        w.append(rf.make_record("train", step=step, **m))
    w.close()
    ckpt = root / "checkpoint-30"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"\0" * 64)
    return root


def _smart_monitor(run: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "collectors.anomaly.smart_monitor", "--base-dir", str(run), "--once"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)


def test_smart_monitor_honours_a_mute(tmp_path: Path) -> None:
    plain = _metrics_run(tmp_path / "plain")
    muted = _metrics_run(tmp_path / "muted")
    inc.mute(muted, "loss_spike", 3600, who="test")
    for run in (plain, muted):
        proc = _smart_monitor(run)
        assert proc.returncode == 0, proc.stderr
    def spike_snaps(run: Path) -> list:
        return [s for s in S.list_snapshots(run) if s.reason.startswith("loss_spike")]
    assert spike_snaps(plain), "control: without the mute the spike saves a snapshot"
    assert not spike_snaps(muted)
    incs = [r for r in _records(muted) if r["kind"] == "incident" and r["rule"] == "loss_spike"]
    assert incs and incs[0]["muted"] is True and incs[0]["source"] == "smart_monitor"
