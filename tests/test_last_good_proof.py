"""Issue 11's proof of "the state from before the fault": real Trainer runs of the demo's tiny GPT-2.

* A bad-batch range (random labels) injected at a known step: the anomaly snapshot's ``last_good/``
  weights give the same eval loss, within 1e-6, as an uninterrupted clean run at that step; both the
  rolling CPU copy and a hard-linked ``checkpoint-*`` are checked.
* Weights set to NaN at a known step: the NaN snapshot holds no live weights but a last good state that
  loads with ``from_pretrained`` and gives finite outputs.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from collectors import MonitorCallback
from collectors import runformat as rf
from collectors import snapshots as S

pytestmark = pytest.mark.integration
MAX_STEPS = 70
BAD_STEPS = range(61, 64)
"""Optimizer steps whose batches get random labels (the bad-batch range)."""


def _no_dropout(model: Any) -> Any:
    """Dropout off, so two runs with the same data order give bit-identical weights."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


class Collate:
    """Trainer's default collator, with random labels for the batches of ``bad`` optimizer steps (batch n
    is step n: no gradient accumulation, no workers). Its own generator: the run's RNG is untouched."""

    def __init__(self, bad: range, vocab: int) -> None:
        import torch

        self.bad, self.vocab, self.n = bad, vocab, 0
        self.gen = torch.Generator().manual_seed(1234)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch
        from transformers import default_data_collator

        self.n += 1
        batch = default_data_collator(features)
        if self.n in self.bad:
            labels = batch["labels"]
            noise = torch.randint(0, self.vocab, labels.shape, generator=self.gen)
            batch["labels"] = torch.where(labels == -100, labels, noise)
        return batch


def eval_loss(model: Any, dataset: Any) -> float:
    """Mean loss over the eval set (fixed batches, eval mode, no gradients)."""
    import torch

    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(dataset), 16):
            items = [dataset[j] for j in range(i, min(i + 16, len(dataset)))]
            batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
            total += float(model(**batch).loss) * len(items)
            n += len(items)
    model.train(was_training)
    return total / n


def _train(base: Path, *, bad: range = range(0), record_at: set[int] | None = None, save_steps: int = 0,
           anomaly: Any = True, poison_at: int | None = None, monitor: bool = True) -> dict[int, float]:
    """One demo training; returns the eval loss at the steps in ``record_at`` (a clean run's reference)."""
    import torch
    from transformers import Trainer, TrainerCallback

    from collectors.demo import build_demo, training_arguments

    setup = build_demo(seed=0, n_train=800, n_eval=32)
    _no_dropout(setup.model)
    seen: dict[int, float] = {}

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **_):
            if record_at and state.global_step in record_at:
                seen[state.global_step] = eval_loss(model, setup.eval)
            if poison_at is not None and state.global_step == poison_at - 1:
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(float("nan"))

    extra = {"save_strategy": "steps", "save_steps": save_steps} if save_steps else {}
    args = training_arguments(str(base / "hf"), MAX_STEPS, logging_steps=1, eval_strategy="no", batch_size=8, **extra)
    callbacks: list[Any] = [Probe()]
    if monitor:
        callbacks.append(MonitorCallback(base_dir=base / "run", anomaly=anomaly))
    trainer = Trainer(model=setup.model, args=args, train_dataset=setup.train, data_collator=Collate(bad, len(setup.tokenizer)),
                      processing_class=setup.tokenizer, callbacks=callbacks)
    trainer.train()
    seen["eval_set"] = setup.eval  # type: ignore[assignment]
    return seen


def _anomaly_snapshot(run: Path) -> tuple[S.SnapshotInfo, dict[str, Any]]:
    snaps = [i for i in S.list_snapshots(run) if i.role in (S.store.ROLE_ANOMALY, S.store.ROLE_NAN)]
    assert snaps, [i.name for i in S.list_snapshots(run)]
    first = min(snaps, key=lambda i: i.step or 0)
    return first, json.loads((first.path / "metadata.json").read_text())


@pytest.mark.parametrize("source", ["rolling", "checkpoint"])
def test_last_good_weights_match_a_clean_run(tmp_path: Path, source: str) -> None:
    from transformers import AutoModelForCausalLM

    anomaly = {"snapshots": {"rolling_copy_steps": 10 if source == "rolling" else 0}}
    _train(tmp_path / "bad", bad=BAD_STEPS, anomaly=anomaly, save_steps=15 if source == "checkpoint" else 0)
    run = tmp_path / "bad" / "run"
    alerts = [a for a in rf.iter_records(rf.RunPaths.of(run).alerts) if a["rule"] == "loss_spike"]
    assert alerts and alerts[0]["step"] >= BAD_STEPS[0], alerts
    info, meta = _anomaly_snapshot(run)
    good = meta["last_good"]
    assert good is not None, meta["last_good_missing"]
    assert good["source"] == source and good["path"] == "last_good"
    expected = 60 if source == "rolling" else 60  # rolling every 10, checkpoints every 15: both 60
    assert good["step"] == expected and meta["onset_step"] >= BAD_STEPS[0]
    assert good["checkpoint"] == (f"checkpoint-{expected}" if source == "checkpoint" else None)
    assert meta["suspect_steps"] == [good["step"] + 1, info.step]
    assert meta["weights_step"] == info.step and info.step >= BAD_STEPS[0]
    assert meta["rng_state"] == "last_good/rng_state.pth" and (info.path / meta["rng_state"]).is_file()
    assert meta["optimizer_state"] is None and not (info.path / "last_good" / "optimizer.pt").exists()
    pos = meta["data_position"]
    assert pos["sampler_seed"] == 0 and pos["step_in_epoch"] == good["step"] and 0 < pos["epoch"] < 1
    if source == "checkpoint":  # linked, not copied: the same inode as the training's own checkpoint
        linked = info.path / "last_good" / "model.safetensors"
        assert linked.stat().st_ino == (tmp_path / "bad" / "hf" / "checkpoint-60" / "model.safetensors").stat().st_ino
    clean = _train(tmp_path / "clean", record_at={good["step"]}, monitor=False)
    restored = AutoModelForCausalLM.from_pretrained(info.path / "last_good")
    _no_dropout(restored)
    got = eval_loss(restored, clean["eval_set"])
    assert math.isfinite(got) and abs(got - clean[good["step"]]) < 1e-6, (got, clean[good["step"]])
    # the control: the live weights of the snapshot carry the damage, the clean run's later state does not match
    damaged = AutoModelForCausalLM.from_pretrained(info.path / "model")
    _no_dropout(damaged)
    assert abs(eval_loss(damaged, clean["eval_set"]) - clean[good["step"]]) > 1e-3


def test_nan_event_saves_the_last_good_state(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    poison = 33
    _train(tmp_path, poison_at=poison, anomaly={"snapshots": {"rolling_copy_steps": 5}})
    run = tmp_path / "run"
    nan_alerts = [a for a in rf.iter_records(rf.RunPaths.of(run).alerts) if a["rule"] == "non_finite_loss"]
    assert nan_alerts and nan_alerts[0]["step"] == poison
    info, meta = _anomaly_snapshot(run)
    assert info.role == "nan" and info.step == poison
    assert not (info.path / "model").exists() and meta["weights_step"] is None  # the NaN weights are not saved
    good = meta["last_good"]
    assert good is not None and good["source"] == "rolling" and good["step"] == 30, meta
    assert meta["onset_step"] == poison and meta["suspect_steps"] == [31, poison]
    model = AutoModelForCausalLM.from_pretrained(info.path / "last_good")
    ids = torch.randint(5, 100, (2, 12))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert torch.isfinite(logits).all()
