"""End to end: the demo training with an injected learning-rate fault, and kill -9 during snapshots."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collectors import runformat as rf
from collectors import snapshots as S

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "helpers" / "anomaly_snapshot_worker.py"
KILLS = 25


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory) -> Path:
    """One demo training (150 steps, checkpoints every 25) with the learning rate ×100 at steps 100-105.

    The fault comes after the noise gate's warm-up (20 logged steps): the first logs of a training raise
    no loss spike, since they fall fast and jump by design."""
    base = tmp_path_factory.mktemp("fault") / "run"
    proc = subprocess.run([sys.executable, "-m", "collectors.demo", "--base-dir", str(base), "--max-steps", "150",
                           "--eval-steps", "10", "--logging-steps", "5", "--save-steps", "25",
                           "--inject-lr-spike", "100", "--inject-lr-steps", "6", "--samples-every", "0"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base


@pytest.mark.integration
def test_injected_lr_fault_gives_loss_spike_snapshot_that_loads_and_runs(fault_run: Path) -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    alerts = list(rf.iter_records(rf.RunPaths.of(fault_run).alerts))
    rules = {(a["rule"], a["step"]) for a in alerts}
    assert ("lr_sudden_change", 100) in rules, sorted(rules)
    spikes = [a for a in alerts if a["rule"] == "loss_spike"]
    assert spikes and spikes[0]["step"] == 105 and spikes[0]["severity"] == "high"
    snaps = S.list_snapshots(fault_run)
    spike_snaps = [s for s in snaps if s.reason == spikes[0]["reason"]]
    assert len(spike_snaps) == 1
    snap = spike_snaps[0]
    assert snap.name.startswith("anomaly_") and snap.name.endswith(spikes[0]["reason"])
    meta = json.loads((snap.path / "metadata.json").read_text())
    assert list(meta)[:9] == list(S.METADATA_FIELDS) and set(S.RECOVERY_FIELDS) <= set(meta) and meta["step"] == 105
    # the last good state: the newest checkpoint at or before the log before the onset (step 100)
    assert meta["last_good"]["step"] == 100 and meta["last_good"]["source"] == "checkpoint"
    assert meta["weights_step"] == 105 and (snap.path / "last_good" / "model.safetensors").is_file() and meta["triggers"][0] == meta["reason"]
    # the live weights load back and run a forward pass
    model = AutoModelForCausalLM.from_pretrained(snap.path / "model")
    tok = AutoTokenizer.from_pretrained(snap.path / "model")
    ids = tok("<|user|>Repeat apple 2 times.<|end|><|assistant|>", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(ids)
    assert out.logits.shape[-1] == len(tok) and torch.isfinite(out.logits).all()
    assert (snap.path / "model" / "model.safetensors").is_file()


@pytest.mark.integration
def test_best_model_snapshot_history(fault_run: Path) -> None:
    best = sorted((s for s in S.list_snapshots(fault_run) if s.reason.startswith("best_model_loss_")), key=lambda s: s.step)
    assert len(best) == 3 and not any(s.pinned for s in best)  # keep_best=3, ranked, not pinned (issue 11)
    losses = [s.loss for s in best]
    assert losses == sorted(losses, reverse=True)
    for a, b in zip(losses, losses[1:]):
        assert b < a * 0.98  # each new best is more than 2 % better
    assert all(s.reason == f"best_model_loss_{s.loss:.4f}" for s in best)


@pytest.mark.integration
def test_standalone_replay_of_the_same_training_copies_the_checkpoint_before_the_spike(fault_run: Path, tmp_path: Path) -> None:
    hf = fault_run / "hf_output"
    proc = subprocess.run([sys.executable, "-m", "collectors.anomaly.smart_monitor", "--base-dir", str(hf), "--once"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    spikes = [s for s in S.list_snapshots(hf) if s.reason.startswith("loss_spike")]
    assert len(spikes) == 1 and spikes[0].step == 105
    status = json.loads((spikes[0].path / "training_status.json").read_text())
    assert status["snapshot_source"]["checkpoint_step"] == 100
    assert (spikes[0].path / "model" / "model.safetensors").is_file()
    assert "ALERT [HIGH] loss_spike" in proc.stderr


def _check_complete(run: Path) -> list[int]:
    """Every listed snapshot is whole: metadata with exactly the guide's fields, a status file, and
    weights that load with the right shapes."""
    from safetensors.torch import load_file

    pids = []
    for info in S.list_snapshots(run):
        assert info.problem is None, (info.name, info.problem)
        assert list(info.metadata)[:9] == list(S.METADATA_FIELDS) and set(S.RECOVERY_FIELDS) <= set(info.metadata)
        status, problem = rf.read_json(info.path / "training_status.json")
        assert problem is None and isinstance(status, dict)
        pids.append(status["pid"])
        weights = load_file(info.path / "model" / "model.safetensors")
        assert weights["0.weight"].shape == (2048, 1024) and weights["1.weight"].shape == (1024, 2048)
    return pids


@pytest.mark.integration
def test_kill_9_during_snapshots_never_lists_a_partial_one(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    run = tmp_path / "run"
    worker = subprocess.Popen([sys.executable, str(WORKER), str(run)], cwd=ROOT, env=_env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    rng = random.Random(1234)
    mid_snapshot = 0

    def ask(cmd: str) -> str:
        worker.stdin.write(cmd + "\n")
        worker.stdin.flush()
        return worker.stdout.readline().strip()

    try:
        assert worker.stdout.readline().strip() == "ready"
        for _ in range(KILLS):
            pid = int(ask("fork"))
            time.sleep(rng.uniform(0.05, 0.6))
            os.kill(pid, signal.SIGKILL)
            assert ask(f"reap {pid}").startswith("reaped")
            temps = [p.name for p in (run / "snapshots").glob(".tmp-snap-*")] if (run / "snapshots").exists() else []
            mid_snapshot += any(t.startswith(f".tmp-snap-{pid}-") for t in temps)
            _check_complete(run)  # never a partial one, whatever the moment of the kill
        # a restarted monitor continues: cleans what the killed ones left, keeps snapshotting
        pid = int(ask("finite 40"))
        assert ask(f"reap {pid}") == "reaped 0"
        assert _check_complete(run) == [pid] * 3, "the restarted monitor saved (and pruned to keep_last=3)"
        assert not list((run / "snapshots").glob(".tmp-*")), "stale temporary directories were cleaned"
    finally:
        worker.stdin.close()
        worker.wait(timeout=60)
    assert mid_snapshot >= 1, "no kill landed during a snapshot: the test did not test anything"
    print(f"{mid_snapshot}/{KILLS} kills landed while a snapshot was being written")
