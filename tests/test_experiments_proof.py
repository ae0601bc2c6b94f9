"""Proof that checkpoints can be trusted: exact resume after a real kill, fallbacks, full disk, kill -9 loops.

These run real processes (tests/helpers/) and kill them with SIGKILL; they are marked integration.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from collectors import CheckpointManager, MetricsLogger
from collectors import runformat as rf
from collectors.experiments import checkpoints as ck


HELPERS = Path(__file__).parent / "helpers"
TRAIN = HELPERS / "experiments_resume_train.py"
SAVER = HELPERS / "experiments_kill_saver.py"
STEPS, SAVE_INTERVAL, PAUSE_AT = 30, 10, 25
PROCESS_TIMEOUT_S = 180


def child_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_training(exp: Path, *extra: str) -> str:
    done = subprocess.run([sys.executable, str(TRAIN), "--exp", str(exp), "--steps", str(STEPS),
                           "--save-interval", str(SAVE_INTERVAL), *extra], capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT_S, env=child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_until_paused_then_kill(exp: Path) -> None:
    """Start the training, wait until it reports step PAUSE_AT, then kill -9 it (a crash)."""
    proc = subprocess.Popen([sys.executable, str(TRAIN), "--exp", str(exp), "--steps", str(STEPS),
                             "--save-interval", str(SAVE_INTERVAL), "--pause-at", str(PAUSE_AT)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        line = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("PAUSED") or not line:
                break
        assert line.strip() == f"PAUSED {PAUSE_AT}", proc.stderr.read()[-3000:] if not line else line
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def losses_by_step(exp: Path) -> dict[int, float]:
    """The last logged loss of every step (a resumed run logs the redone steps again)."""
    out: dict[int, float] = {}
    for rec in MetricsLogger(exp).load_metrics():
        out[rec["step"]] = rec["loss"]
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    exp = tmp_path_factory.mktemp("baseline") / "exp"
    assert "DONE" in run_training(exp)
    losses = losses_by_step(exp)
    assert sorted(losses) == list(range(1, STEPS + 1))
    return losses


@pytest.mark.integration
@pytest.mark.parametrize("damage", ["none", "truncate-latest", "corrupt-latest"])
def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path, uninterrupted: dict[int, float],
                                                     damage: str) -> None:
    exp = tmp_path / "exp"
    run_until_paused_then_kill(exp)
    crashed = losses_by_step(exp)
    assert sorted(crashed) == list(range(1, PAUSE_AT + 1))
    latest = exp / "checkpoints" / "checkpoint_step_20.pt"
    assert os.readlink(exp / "checkpoints" / "checkpoint_latest.pt") == latest.name
    if damage == "truncate-latest":
        latest.write_bytes(latest.read_bytes()[:1000])
    elif damage == "corrupt-latest":
        data = bytearray(latest.read_bytes())
        data[len(data) // 2] ^= 0x55
        latest.write_bytes(bytes(data))
    out = run_training(exp)
    resumed_from = 20 if damage == "none" else 10  # damaged latest: fall back to the previous checkpoint
    assert f"RESUMED {resumed_from}" in out and "DONE" in out
    after = losses_by_step(exp)
    assert sorted(after) == list(range(1, STEPS + 1))
    # the steps redone after the resume and the new ones equal the uninterrupted run's
    for step in range(resumed_from + 1, STEPS + 1):
        assert abs(after[step] - uninterrupted[step]) <= 1e-6, (step, after[step], uninterrupted[step])
    # and the losses logged before the crash agree too (same seeds, same order)
    for step in range(1, PAUSE_AT + 1):
        assert abs(crashed[step] - uninterrupted[step]) <= 1e-6


@pytest.mark.integration
def test_resume_without_rng_restore_would_differ(tmp_path: Path, uninterrupted: dict[int, float]) -> None:
    """Control: the comparison above can fail. A resume that skips the RNG state drifts from the baseline."""
    exp = tmp_path / "exp"
    run_until_paused_then_kill(exp)
    ckpt = CheckpointManager(exp).load_latest_checkpoint()
    assert ckpt is not None and ckpt["step"] == 20
    rng = ckpt["rng_state"]["torch"]
    other = CheckpointManager(exp)
    ckpt["rng_state"]["torch"] = torch.Generator().manual_seed(999).get_state()
    (exp / "checkpoints" / "manifest.json").unlink()  # we rewrite the checkpoint by hand below
    torch.save(ckpt, exp / "checkpoints" / "checkpoint_step_20.pt")
    assert not torch.equal(rng, ckpt["rng_state"]["torch"]) and other.load_checkpoint(20) is not None
    run_training(exp)
    after = losses_by_step(exp)
    assert any(abs(after[s] - uninterrupted[s]) > 1e-6 for s in range(21, STEPS + 1))


def test_disk_full_during_training_saves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """ENOSPC on some saves: the loop runs to the end, no partial file, later saves succeed."""
    real_open = open
    full_at_steps = {10, 15}
    current = {"step": 0}

    class MaybeFull:
        def __init__(self, *a: object, **k: object) -> None:
            self._fh = real_open(*a, **k)
            self._n = 0

        def write(self, data: bytes) -> int:
            if current["step"] in full_at_steps and self._n + len(data) > 2048:
                self._fh.write(data[: 2048 - self._n])
                self._n = 2048
                raise OSError(errno.ENOSPC, "No space left on device")
            self._n += len(data)
            return self._fh.write(data)

        def __getattr__(self, name: str) -> object:
            return getattr(self._fh, name)

        def __enter__(self) -> "MaybeFull":
            return self

        def __exit__(self, *exc: object) -> None:
            self._fh.close()

    monkeypatch.setattr(ck, "open", MaybeFull, raising=False)
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)
    opt = torch.optim.Adam(model.parameters())
    mgr = CheckpointManager(tmp_path, save_interval=5, keep_last_n=None)
    done_steps = []
    with caplog.at_level(logging.WARNING, logger="trainboard"):
        for step in range(1, 26):
            current["step"] = step
            loss = model(torch.randn(4, 64)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if mgr.should_checkpoint(step):
                mgr.save_checkpoint(step, model, opt, [], {})
            done_steps.append(step)
    assert done_steps == list(range(1, 26))
    assert [c["step"] for c in mgr.list_checkpoints()] == [5, 20, 25]
    assert not [n for n in os.listdir(mgr.checkpoint_dir) if n.startswith(rf.TMP_PREFIX)]
    assert mgr.failed_saves == 2 and "disk full while saving checkpoint_step_10.pt" in caplog.text
    assert mgr.load_latest_checkpoint()["step"] == 25


@pytest.mark.integration
def test_kill_9_during_saves_always_leaves_a_valid_latest(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    cycles = 25
    proc = subprocess.Popen([sys.executable, str(SAVER), "--exp", str(exp), "--cycles", str(cycles)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    interrupted_writes = 0
    steps: list[int] = []
    try:
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()[-3000:]
        for i in range(cycles):
            line = proc.stdout.readline().strip()
            assert line.startswith(f"KILLED {i} "), (line, proc.stderr.read()[-3000:] if not line else "")
            names = os.listdir(exp / "checkpoints")
            interrupted_writes += any(n.startswith(rf.TMP_PREFIX) for n in names)
            mgr = CheckpointManager(exp, keep_last_n=2)  # a restarted training: cleans the dead writer's temp
            ckpt = mgr.load_latest_checkpoint()
            assert ckpt is not None, f"cycle {i}: no loadable checkpoint among {sorted(names)}"
            step = ckpt["step"]
            for name, tensor in ckpt["model_state_dict"].items():
                assert torch.all(tensor == float(step)), f"cycle {i}: {name} of step {step} has wrong values"
            assert ckpt["loss_history"] == [float(step)]
            assert not steps or step >= steps[-1], f"cycle {i}: latest went back from {steps[-1]} to {step}"
            steps.append(step)
            assert not [n for n in os.listdir(exp / "checkpoints") if n.startswith(rf.TMP_PREFIX)]
            proc.stdin.write(f"{step}\n")
            proc.stdin.flush()
        assert proc.stdout.readline().strip() == "DONE"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(steps) == cycles and steps[-1] > 0
    print(f"kill -9 cycles: {cycles}, kills that hit a save in progress: {interrupted_writes}, steps: {steps}")
    assert interrupted_writes >= 3, f"only {interrupted_writes} of {cycles} kills hit a save in progress"
