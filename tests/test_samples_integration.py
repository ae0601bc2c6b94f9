"""Integration: the samples plugin inside a real transformers Trainer on the demo task (CPU, tiny GPT-2)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collectors import runformat as rf

pytestmark = pytest.mark.integration

MAX_STEPS = 600
"""The demo task starts being learned after ~200 steps (batch 16, lr 3e-3); by 600 accuracy has clearly risen."""
DOCUMENTED = {"status", "step", "epoch", "train_loss", "eval_loss", "learning_rate", "sample_idx", "prompt",
              "golden", "predicted", "comparison", "gpu_memory", "timestamp", "mode", "sample_ms"}


def train(tmp: Path, max_steps: int, samples: Any, *, eval_steps: int = 25, logging_steps: int = 5,
          n_train: int = 1200, batch_size: int = 16, seed: int = 0) -> tuple[Any, list[dict[str, Any]]]:
    """A real Trainer run on the demo task with MonitorCallback; returns the callback and metrics records."""
    import torch
    from transformers import Trainer

    from collectors.callback import MonitorCallback
    from collectors.demo import build_demo, training_arguments

    torch.set_num_threads(1)  # 2 threads on a shared 2-core machine spin-wait: 20x slower per step
    setup = build_demo(seed=seed, n_train=n_train, n_eval=32)
    args = training_arguments(str(tmp / "hf"), max_steps, logging_steps=logging_steps, eval_steps=eval_steps,
                              batch_size=batch_size, seed=seed)
    cb = MonitorCallback(base_dir=tmp / "run", samples=samples)
    trainer = Trainer(model=setup.model, args=args, train_dataset=setup.train, eval_dataset=setup.eval,
                      processing_class=setup.tokenizer, callbacks=[cb])
    trainer.train()
    metrics = rf.read_new(rf.RunPaths.of(tmp / "run").metrics, 0).records
    return cb, metrics


@pytest.mark.timeout(900)
def test_teacher_forced_accuracy_rises_and_files_hold_documented_fields(tmp_path: Path) -> None:
    from collectors.samples import SamplesConfig

    # dataset=None: the plugin learns Trainer's eval dataset at the first evaluation (step 20, which runs
    # after that step's on_step_end), so steps 10 and 20 are skipped with one warning.
    cfg = SamplesConfig(update_frequency=10, num_samples=8, seed=1)
    cb, _ = train(tmp_path, MAX_STEPS, cfg, eval_steps=20, logging_steps=10, n_train=4000)
    paths = rf.RunPaths.of(tmp_path / "run")
    hist = rf.read_new(paths.samples, 0).records
    steps = [r["step"] for r in hist]
    assert steps == list(range(30, MAX_STEPS + 1, 10)), steps
    for rec in hist:
        assert DOCUMENTED <= set(rec), DOCUMENTED - set(rec)
        assert rec["kind"] == "sample" and rec["mode"] == "teacher_forced"
        assert [m["role"] for m in rec["prompt"]["messages"]] == ["system", "user"]
        assert rec["comparison"]["total"] == len(rec["comparison"]["tokens"]) > 0
        assert rec["train_loss"] is not None and rec["learning_rate"] is not None and rec["epoch"] is not None
    assert hist[-1]["eval_loss"] is not None
    # The same 8 samples rotate, so the first and the last rotation compare like with like.
    first, last = hist[:8], hist[-8:]
    assert sorted(r["sample_idx"] for r in first) == sorted(r["sample_idx"] for r in last)
    acc_first = sum(r["comparison"]["accuracy"] for r in first) / 8
    acc_last = sum(r["comparison"]["accuracy"] for r in last) / 8
    print(f"teacher-forced accuracy: first rotation {acc_first:.3f}, last rotation {acc_last:.3f}")
    assert acc_last > acc_first + 0.15, (acc_first, acc_last)
    detail, problem = rf.read_json(paths.detail)
    assert problem is None and detail["step"] == MAX_STEPS and detail["status"] == "finished"
    assert DOCUMENTED <= set(detail)
    plugin = samples_plugin(cb)
    assert plugin.taken == len(hist) and plugin.last_ms is not None and plugin.last_ms < 5000
    assert not cb.monitor.guard.reported.keys() - {"samples: no dataset yet"}, cb.monitor.guard.reported


def samples_plugin(cb):
    from collectors.samples import SamplesPlugin

    return next(p for p in cb.monitor.plugins if isinstance(p, SamplesPlugin))


@pytest.mark.timeout(900)
def test_samples_do_not_change_the_training_rng_stream(tmp_path: Path) -> None:
    from collectors.samples import SamplesConfig

    kw = dict(eval_steps=100, logging_steps=1, n_train=400, batch_size=8)
    _, plain = train(tmp_path / "a", 12, None, **kw)
    cb, sampled = train(tmp_path / "b", 12, SamplesConfig(update_frequency=2, mode="generate", max_new_tokens=4,
                                                         dataset=[[{"role": "user", "content": "Repeat apple 2 times."},
                                                                   {"role": "assistant", "content": "apple apple"}]]),
                        **kw)
    assert samples_plugin(cb).taken == 6
    losses_a = [r["loss"] for r in plain if r["kind"] == "train" and "loss" in r]
    losses_b = [r["loss"] for r in sampled if r["kind"] == "train" and "loss" in r]
    assert len(losses_a) == 12 and losses_a == losses_b  # exact: dropout draws the same random numbers
