"""A NaN that Trainer's default ``logging_nan_inf_filter`` hides from its logs is still caught at once.

Real Trainer runs on the demo's tiny GPT-2: its weights are set to NaN right before step 30, so every
loss from step 30 on is NaN, while Trainer logs a finite stand-in (the interval's mean, or 0.0).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from collectors import MonitorCallback
from collectors import runformat as rf

pytestmark = pytest.mark.integration
NAN_STEP = 30
LOGGING_STEPS = 5


def _train(base: Path, **kw) -> None:
    import torch
    from transformers import Trainer, TrainerCallback

    from collectors.demo import build_demo, training_arguments

    class PoisonWeights(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **_):
            if state.global_step == NAN_STEP - 1:
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(float("nan"))

    setup = build_demo(seed=0, n_train=400, n_eval=32)
    args = training_arguments(str(base / "hf"), 40, logging_steps=LOGGING_STEPS, eval_steps=1000, **kw)
    assert args.logging_nan_inf_filter is True  # Trainer's default, kept
    trainer = Trainer(model=setup.model, args=args, train_dataset=setup.train, eval_dataset=setup.eval,
                      processing_class=setup.tokenizer,
                      callbacks=[PoisonWeights(), MonitorCallback(base_dir=base / "run")])
    trainer.train()


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0], ids=["clipping", "no-clipping-no-grad-norm"])
def test_hidden_nan_loss_is_critical_within_one_logged_step(tmp_path: Path, max_grad_norm: float) -> None:
    _train(tmp_path, max_grad_norm=max_grad_norm)
    paths = rf.RunPaths.of(tmp_path / "run")
    train = [r for r in rf.iter_records(paths.metrics) if r["kind"] == "train"]
    at = next(r for r in train if r["step"] >= NAN_STEP)
    assert at["step"] == NAN_STEP and math.isfinite(at["loss"]), "Trainer's filter logged a finite stand-in"
    assert at[rf.LOSS_REPLACED] is True and at[rf.LOSS_NONFINITE_STEP] == NAN_STEP
    assert not any(r.get(rf.LOSS_REPLACED) for r in train if r["step"] < NAN_STEP)
    alerts = list(rf.iter_records(paths.alerts))
    crit = [a for a in alerts if a["severity"] == "critical" and a["step"] <= NAN_STEP + LOGGING_STEPS]
    assert crit, [(a["rule"], a["step"]) for a in alerts]
    nan_loss = [a for a in crit if a["rule"] == "non_finite_loss"]
    assert nan_loss and nan_loss[0]["step"] == NAN_STEP and nan_loss[0]["metadata"]["hidden_by_trainer"] is True
    # no "new best model" from the stand-in losses, and the status shows NaN, not the stand-in
    assert not [a for a in alerts if a["rule"] == "best_model" and a["step"] >= NAN_STEP]
    status, _ = rf.read_json(paths.status)
    assert math.isnan(status["train_loss"])
    # the Overview's loss card: NaN, marked as replaced, never the stand-in as a normal value
    from callbacks.overview import overview_cards

    card = next(c for c in overview_cards(status) if c.metric == "train_loss")
    assert card.value == "NaN" and card.tone == "bad" and "replaced: Trainer logged" in (card.note or "")


def test_replaced_loss_reads_as_nan_on_the_dashboard(tmp_path: Path) -> None:
    from services.readers import open_run

    paths = rf.RunPaths.of(tmp_path)
    w = rf.JsonlWriter(paths.metrics)
    w.append(rf.make_record("train", step=5, loss=2.0))
    w.append(rf.make_record("train", step=10, loss=0.0, **{rf.LOSS_REPLACED: True, rf.LOSS_NONFINITE_STEP: 8}))
    w.close()
    rf.write_json_atomic(paths.status, {"state": "training", "step": 10})
    run = open_run(tmp_path, "run")
    run.refresh()
    steps, values = run.series["train/loss"].arrays()
    assert list(steps) == [5.0, 10.0] and values[0] == 2.0 and math.isnan(values[1])
    assert "train/loss_replaced" not in run.series and "train/loss_nonfinite_step" not in run.series
