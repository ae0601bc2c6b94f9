"""The Smart Monitor on a real Hugging Face output dir whose trainer_state.json holds a bare NaN loss.

Trainer writes ``trainer_state.json`` with ``json.dumps``, so a NaN loss is the bare token ``NaN`` (not
valid JSON). The monitor must read it as a value and raise the critical non-finite alert, and when there
is nothing to read, say exactly why (absent files vs a file that exists but cannot be parsed).
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

ROOT = Path(__file__).resolve().parents[1]
NAN_STEP = 7
MAX_STEPS = 10
SAVE_STEPS = 5


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _smart_monitor(base: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collectors.anomaly.smart_monitor", "--base-dir", str(base), "--once"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)


def _train_hf_output_dir(out: Path) -> None:
    """A real tiny Trainer run (GPT-2, 2 layers, CPU) saving checkpoint-5 and checkpoint-10, whose logged
    loss at step 7 is NaN in ``log_history``: Trainer itself then writes it into every later
    trainer_state.json, with its own ``json.dumps``."""
    torch = pytest.importorskip("torch")
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=64, n_positions=32))
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (64, 16))]

    class NanLoss(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - Trainer's signature
            last = state.log_history[-1] if state.log_history else {}
            if last.get("step") == NAN_STEP and "loss" in last:
                last["loss"] = float("nan")

    args = TrainingArguments(output_dir=str(out), max_steps=MAX_STEPS, per_device_train_batch_size=4, logging_steps=1,
                             save_strategy="steps", save_steps=SAVE_STEPS, report_to=[], use_cpu=True,
                             disable_tqdm=True, dataloader_num_workers=0, learning_rate=1e-3, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[NanLoss()])
    trainer.train()
    trainer.save_state()


@pytest.fixture(scope="module")
def hf_nan_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf_nan") / "output"
    _train_hf_output_dir(out)
    return out


@pytest.mark.integration
def test_trainer_wrote_a_bare_nan_token(hf_nan_dir: Path) -> None:
    text = (hf_nan_dir / f"{rf.HF_CHECKPOINT_PREFIX}{MAX_STEPS}" / rf.HF_TRAINER_STATE).read_text()
    assert '"loss": NaN' in text  # what json.dumps writes: not JSON, but what every Trainer run holds
    with pytest.raises(ValueError):
        json.loads(text, parse_constant=lambda tok: (_ for _ in ()).throw(ValueError(tok)))


@pytest.mark.integration
def test_smart_monitor_raises_a_critical_non_finite_alert(hf_nan_dir: Path) -> None:
    proc = _smart_monitor(hf_nan_dir)
    assert proc.returncode == 0, proc.stderr
    alerts = list(rf.iter_records(rf.RunPaths.of(hf_nan_dir).alerts))
    nan = [a for a in alerts if a["rule"] == "non_finite_loss" and a["kind"] == "alert"]
    assert len(nan) == 1, [(a["rule"], a["step"]) for a in alerts]
    assert nan[0]["severity"] == "critical" and nan[0]["step"] == NAN_STEP and math.isnan(nan[0]["value"])
    assert nan[0]["source"] == "smart_monitor" and nan[0]["category"] == "loss"
    assert f"ALERT [CRITICAL] non_finite_loss at step {NAN_STEP}" in proc.stderr
    assert "nothing to replay" not in proc.stderr and "Traceback" not in proc.stderr
    # every finite loss of the history was judged too (the NaN did not drop its neighbours)
    assert f"Monitoring: Step {MAX_STEPS}" in proc.stderr


def test_absent_trainer_state_is_named_as_absent(tmp_path: Path) -> None:
    (tmp_path / f"{rf.HF_CHECKPOINT_PREFIX}3").mkdir()  # a checkpoint dir without its state yet
    proc = _smart_monitor(tmp_path)
    assert proc.returncode == 4, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if "nothing to replay" in ln)
    assert f"no {rf.METRICS_LOG} and no {rf.HF_TRAINER_STATE}" in line and str(tmp_path) in line
    assert "Traceback" not in proc.stderr


def test_unreadable_trainer_state_is_named_with_its_problem(tmp_path: Path) -> None:
    state = tmp_path / rf.HF_TRAINER_STATE
    state.write_text('{"global_step": 5, "log_history": [{"step": 1, "loss": 2.0}, {"st')  # cut mid-write
    proc = _smart_monitor(tmp_path)
    assert proc.returncode == 4, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if "nothing to replay" in ln)
    assert str(state) in line and "is not valid JSON" in line
    assert f"no {rf.HF_TRAINER_STATE}" not in line  # the file is there: never claim it is missing
    assert "Traceback" not in proc.stderr
