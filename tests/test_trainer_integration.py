"""Real transformers Trainer runs (tiny GPT-2, CPU) with MonitorCallback: files equal log_history."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from collectors import MonitorCallback
from tests.conftest import free_port
from collectors import runformat as rf

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def run_trainer(base: Path, steps: int = 30, **kw):
    from transformers import Trainer

    from collectors.demo import build_demo, training_arguments

    setup = build_demo(seed=0, n_train=400, n_eval=32)
    args = training_arguments(str(base / "hf"), steps, logging_steps=2, eval_steps=10, **kw)
    trainer = Trainer(model=setup.model, args=args, train_dataset=setup.train, eval_dataset=setup.eval,
                      processing_class=setup.tokenizer)
    trainer.add_callback(MonitorCallback(base_dir=base / "run"))
    trainer.train()
    return trainer


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_trainer_files_match_log_history(tmp_path):
    trainer = run_trainer(tmp_path)
    records = list(rf.iter_records(rf.RunPaths.of(tmp_path / "run").metrics))
    history = trainer.state.log_history
    assert len(records) == len(history) and len(history) > 15
    for rec, hist in zip(records, history):
        for key, value in hist.items():
            assert same(rec[key], value), (key, rec, hist)
        assert rec["kind"] == ("eval" if "eval_loss" in hist else "summary" if "train_runtime" in hist else "train")
        assert rec["v"] == rf.SCHEMA_VERSION
    status, problem = rf.read_json(rf.RunPaths.of(tmp_path / "run").status)
    assert problem is None
    last_train = [h for h in history if "loss" in h][-1]
    last_eval = [h for h in history if "eval_loss" in h][-1]
    assert status["state"] == "finished" and status["step"] == trainer.state.global_step == 30
    assert status["train_loss"] == last_train["loss"] and status["eval_loss"] == last_eval["eval_loss"]
    assert status["learning_rate"] == last_train["learning_rate"] and status["grad_norm"] == last_train["grad_norm"]
    assert status["epoch"] == history[-1]["epoch"]
    assert status["throughput"]["samples_per_second"] > 0 and status["memory"]["rss_gb"] > 0


def test_eval_loss_falls_on_the_demo_task(tmp_path):
    run_trainer(tmp_path, steps=120)
    evals = [r["eval_loss"] for r in rf.iter_records(rf.RunPaths.of(tmp_path / "run").metrics) if r["kind"] == "eval"]
    assert len(evals) >= 10 and evals[-1] < evals[0] * 0.8


def test_training_that_raises_is_marked_crashed(tmp_path):
    script = f"""
import sys; sys.path.insert(0, {str(REPO)!r})
from transformers import Trainer, TrainerCallback
from collectors import MonitorCallback
from tests.conftest import free_port
from collectors.demo import build_demo, training_arguments
class Boom(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 6: raise RuntimeError("exploded at step 6")
s = build_demo(n_train=200, n_eval=16)
t = Trainer(model=s.model, args=training_arguments({str(tmp_path / 'hf')!r}, 20, logging_steps=2, eval_steps=10),
            train_dataset=s.train, eval_dataset=s.eval, callbacks=[MonitorCallback(base_dir={str(tmp_path / 'run')!r}), Boom()])
t.train()
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0 and "exploded at step 6" in proc.stderr
    status, _ = rf.read_json(rf.RunPaths.of(tmp_path / "run").status)
    assert status["state"] == "crashed" and "exploded at step 6" in status["error"]


def test_torchrun_two_processes_write_one_coherent_run(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    proc = subprocess.run([torchrun, "--nproc_per_node=2", "--master_port", str(free_port()),
                           str(REPO / "tests" / "scripts" / "ddp_train.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = rf.RunPaths.of(tmp_path / "run").metrics.read_bytes().splitlines()
    records = [json.loads(line) for line in raw]  # every line is whole JSON: nothing interleaved
    history = json.loads((tmp_path / "log_history.json").read_text())
    assert len(records) == len(history)  # rank 1 wrote nothing: no duplicates
    steps = [(r["kind"], r["step"]) for r in records]
    assert len(steps) == len(set(steps))
    status, _ = rf.read_json(rf.RunPaths.of(tmp_path / "run").status)
    assert status["state"] == "finished" and status["config"]["world_size"] == 2
    # issue 3: anomaly rules are on by default, so rank 0 may also have saved best-model snapshots
    assert set(p.name for p in (tmp_path / "run").iterdir()) <= {"logs", "status", "snapshots", "ranks", "control"}
