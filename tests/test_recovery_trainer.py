"""Recovery with real Trainer runs on a tiny GPT-2 (issue 11): SkipBatches really skips, leaves the
optimizer untouched, and resuming from the last good state while skipping the bad range recovers the
clean run's eval loss, where resuming without the skip spikes again.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from collectors import runformat as rf
from collectors.skip_batches import SkipBatches
from services.recovery import plan_resume, resume_code
from tests.helpers import recovery_setup as rs

pytestmark = pytest.mark.integration

BATCH = 8
STEPS = 60
BAD = (51, 55)
"""The poisoned steps: their items are garbage trained at 30x the learning rate (a bad-batch fault)."""
CHECKPOINT = 50


def test_skipped_batches_are_never_trained_and_leave_the_optimizer_untouched(tmp_path):
    """A run skipping steps 5-7 under gradient accumulation 2 ends bit-identical (weights and Adam
    moments) to a run whose dataset simply lacks those batches: no zero-gradient step ever ran."""
    per_step = BATCH * 2
    skip = SkipBatches("5-7")
    t1 = rs.trainer(str(tmp_path / "a"), 17, n_train=320, train_sampling_strategy="sequential",
                    gradient_accumulation_steps=2, callbacks=[skip])
    t1.train()
    dropped = set(range(4 * per_step, 7 * per_step))
    assert skip.skipped_batches == 6  # 3 steps x 2 micro-batches
    assert not dropped & set(t1.collator.seen)
    assert t1.collator.seen[: 4 * per_step] == list(range(4 * per_step))
    assert t1.collator.seen[4 * per_step] == 7 * per_step  # the logged step 5 trains on step 8's batch
    t2 = rs.trainer(str(tmp_path / "b"), 17, n_train=320, train_ids=[i for i in range(320) if i not in dropped],
                    train_sampling_strategy="sequential", gradient_accumulation_steps=2)
    t2.train()
    assert t1.state.global_step == t2.state.global_step == 17  # the logged step kept counting
    for a, b in zip(t1.model.parameters(), t2.model.parameters()):
        assert torch.equal(a, b)
    s1, s2 = t1.optimizer.state_dict()["state"], t2.optimizer.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        assert float(s1[k]["step"]) == 17.0
        assert torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"]) and torch.equal(s1[k]["exp_avg_sq"], s2[k]["exp_avg_sq"])


def test_skip_batches_refuses_an_iterable_dataset(tmp_path):
    from transformers import Trainer

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            for i in range(1000):
                yield {"id": i}

    t = Trainer(model=rs.build_model(), args=rs.arguments(str(tmp_path / "s"), 5), train_dataset=Stream(),
                data_collator=rs.Collator(), callbacks=[SkipBatches("2-3")])
    with pytest.raises(ValueError, match="map-style train dataset"):
        t.train()


def make_snapshot(run_dir: Path, checkpoint: Path, *, onset: int, suspect: tuple[int, int]) -> str:
    """A snapshot as the snapshots feature writes it (metadata keys of issue 11): the last good state is
    a hard-linked copy of ``checkpoint``."""
    name = "anomaly_20260101_120000_loss_spike"
    snap = rf.RunPaths.of(run_dir).snapshots_dir / name
    lg = snap / "last_good"
    shutil.copytree(checkpoint, lg, copy_function=os.link)
    step = int(checkpoint.name.split("-")[1])
    meta = {"timestamp": "20260101_120000", "reason": "loss_spike", "step": onset, "loss": 8.5, "accuracy": None,
            "triggers": ["loss_spike"], "loss_history": [], "best_loss": None, "best_loss_step": None,
            "weights_step": None, "onset_step": onset, "suspect_steps": list(suspect), "last_good_missing": None,
            "last_good": {"step": step, "source": "checkpoint", "path": "last_good", "checkpoint": checkpoint.name},
            "rng_state": None, "optimizer_state": None,
            "data_position": {"epoch": 0, "step_in_epoch": step, "sampler_seed": 0}}
    rf.write_json_atomic(snap / rf.SNAPSHOT_METADATA, meta)
    return name


def test_recovery_from_the_last_good_state_skipping_the_bad_range(tmp_path):
    from collectors import MonitorCallback

    clean = rs.trainer(str(tmp_path / "clean"), STEPS)
    clean.train()
    clean_loss = rs.eval_loss(clean)
    order = clean.collator.seen  # the random sampler's order (same seed in every run)
    poison = set(order[(BAD[0] - 1) * BATCH: BAD[1] * BATCH])

    out = tmp_path / "bad"
    bad = rs.trainer(str(out), STEPS, poison=poison, save_strategy="steps", save_steps=10,
                     callbacks=[MonitorCallback(anomaly=False)])
    bad.train()
    losses = {h["step"]: h["loss"] for h in bad.state.log_history if "loss" in h}
    assert max(losses[s] for s in range(BAD[1] + 1, STEPS + 1)) > 2 * losses[CHECKPOINT]  # the fault spiked
    assert rs.eval_loss(bad) > clean_loss * 1.3
    run_dir = out / "trainboard"
    name = make_snapshot(run_dir, out / f"checkpoint-{CHECKPOINT}", onset=BAD[1] + 1, suspect=BAD)

    plan = plan_resume(run_dir, name)  # what the Recover panel and `trainboard resume` suggest
    assert plan.source_kind == "checkpoint" and plan.step == CHECKPOINT and plan.trainer
    assert plan.skip is not None and plan.skip.first == BAD[0] and plan.skip.last >= BAD[1]
    code = resume_code(plan)
    assert f"SkipBatches({str(plan.skip)!r})" in code and f"resume_from_checkpoint={str(plan.source)!r}" in code

    recovered = rs.trainer(str(out), STEPS, poison=poison, callbacks=[SkipBatches(str(plan.skip))])
    recovered.train(resume_from_checkpoint=str(plan.source))
    rec_loss = rs.eval_loss(recovered)
    assert not poison & set(recovered.collator.seen)
    assert recovered.state.global_step == STEPS
    assert abs(rec_loss - clean_loss) / clean_loss < 0.02, (rec_loss, clean_loss)

    control = rs.trainer(str(out), STEPS, poison=poison)  # the same resume without skipping
    control.train(resume_from_checkpoint=str(plan.source))
    ctl_loss = rs.eval_loss(control)
    ctl_train = {h["step"]: h["loss"] for h in control.state.log_history if "loss" in h and h["step"] > CHECKPOINT}
    assert max(ctl_train.values()) > 2 * losses[CHECKPOINT]  # it spikes again
    assert ctl_loss > clean_loss * 1.3, (ctl_loss, clean_loss)
    # the snapshot's hard-linked last good state was only read: Trainer wrote its checkpoints elsewhere
    state = json.loads((plan.source / rf.HF_TRAINER_STATE).read_text())
    assert state["global_step"] == CHECKPOINT
