"""A labelled suite of noisy trainings, with and without injected faults, to judge the alert rules.

Each run is a real training (PyTorch, CPU) of a small MLP classifier on *mixed-difficulty* data: most
examples are easy, clustered classes; a share are hard, overlapping and partly mislabelled. Batches are
small (2-8), so the loss jumps ±50 % from batch to batch at low loss, as it does in real fine-tuning.
Three LR schedules (cosine, linear, constant, all with warm-up) and two log intervals (every step, and
every 5 steps averaged as Transformers' Trainer logs them; the grad norm is then the last step's, as
Trainer's is) make up the conditions.

Faults are injected at a known step, by what really goes wrong in trainings, not by editing the curve:

============== ==================================================================  ==========
fault          how it is injected                                                   must alert
============== ==================================================================  ==========
lr_spike       the learning rate × 50 for 4 steps                                   5 logs
bad_batch      3 batches of corrupt inputs (scaled × 25) with random labels          5 logs
grad_explosion gradients × 2000 before the optimizer step, for 3 steps               5 logs
nan_weights    one weight set to NaN                                                5 logs
divergence     the learning rate × 1.4 per step from the fault on                  20 logs
vanishing      gradients × 1e-9 from the fault on (a dead network)                  5 logs
label_noise    every label random from the fault on (a broken data pipeline)         5 logs
plateau        the optimizer stops stepping (updates lost), the log goes on         20 logs
============== ==================================================================  ==========

A second family (``model="lm"``) trains the demo's tiny GPT-2 (2 layers, 64 wide) on the demo's chat
data, at the demo's learning rate (3e-3), under the same conditions and faults: transformer gradient norms
are heavy-tailed (isolated norms of 5-15x the median at batch sizes 2-8, which the MLP never shows), and a
monitor that alerts on them is muted. The LM's corrupt batch is random token ids; its label noise, random
target tokens.

The suite is data for :mod:`bench.bench_alerts` and its tests (``tests/test_alert_suite_lm.py``,
``tests/test_optimizer_stall.py``); it writes nothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterator, Sequence

FAMILIES = ("mlp", "lm")
"""The MLP classifier on mixed-difficulty data, and the demo's tiny GPT-2 language model."""
LM_BASE_LR = 3e-3
"""The LM family's peak learning rate (the demo's)."""
LM_SEED_OFFSET = 500
"""The LM runs' seeds are the MLP runs' plus this (other data order and weights)."""
FAULTS = ("lr_spike", "bad_batch", "grad_explosion", "nan_weights", "divergence", "vanishing", "label_noise",
          "plateau")
SLOW_FAULTS = frozenset({"divergence", "plateau"})
"""Faults that build up: they must alert within :data:`SLOW_LAG` logged steps, the others within
:data:`ABRUPT_LAG`."""
ABRUPT_LAG = 5
SLOW_LAG = 20
SCHEDULES = ("cosine", "linear", "constant")
STEPS = 900
FAULT_STEP = 520
WARMUP = 40
BASE_LR = 1e-3
N_CLASSES = 16
N_FEATURES = 32
HARD_SHARE = 0.3
HARD_LABEL_NOISE = 0.15


@dataclass(frozen=True)
class Condition:
    """How one run trains: batch size, logging interval, LR schedule and seed."""

    batch_size: int
    log_every: int
    schedule: str
    seed: int
    model: str = "mlp"
    """Which family: ``"mlp"`` (the classifier) or ``"lm"`` (the tiny GPT-2); see :data:`FAMILIES`."""

    @property
    def label(self) -> str:
        kind = "" if self.model == "mlp" else f"{self.model}-"
        return f"{kind}bs{self.batch_size}-log{self.log_every}-{self.schedule}-s{self.seed}"


@dataclass
class RunTrace:
    """One labelled run: what its log would hold, and where its fault (if any) starts."""

    name: str
    fault: str | None
    fault_step: int | None
    condition: Condition
    records: list[dict[str, Any]] = field(default_factory=list)
    """Trainer-like log records: step, loss (mean over the interval), grad_norm (last step's), learning_rate,
    and weights_changed (what the collector's UpdateWatch reads from the model at that logged step)."""

    def lag_limit(self) -> int:
        return SLOW_LAG if self.fault in SLOW_FAULTS else ABRUPT_LAG


def clean_conditions(seed_offset: int = 0, model: str = "mlp") -> list[Condition]:
    """The 12 clean runs: every batch size, both log intervals, every schedule, two seeds."""
    if model != "mlp":
        seed_offset += LM_SEED_OFFSET
    out = []
    i = 0
    for bs in (2, 4, 8):
        for log_every in (1, 5):
            for sched in SCHEDULES[:2] if (bs + log_every) % 2 else SCHEDULES[1:]:
                out.append(Condition(bs, log_every, sched, seed=100 + i + seed_offset, model=model))
                i += 1
    return out


def fault_conditions(seed_offset: int = 0, model: str = "mlp") -> list[tuple[str, Condition]]:
    """Each fault under three different conditions (batch size, log interval and schedule rotate)."""
    if model != "mlp":
        seed_offset += LM_SEED_OFFSET
    combos = [(2, 1, "cosine"), (4, 5, "linear"), (8, 1, "constant"), (2, 5, "constant"), (4, 1, "cosine"),
              (8, 5, "linear")]
    out = []
    for fi, fault in enumerate(FAULTS):
        for k in range(3):
            bs, le, sched = combos[(fi + 2 * k) % len(combos)]
            out.append((fault, Condition(bs, le, sched, seed=200 + 3 * fi + k + seed_offset, model=model)))
    return out


def lr_at(step: int, schedule: str, steps: int = STEPS, warmup: int = WARMUP, base: float = BASE_LR) -> float:
    """The scheduled learning rate at ``step`` (1-based), with linear warm-up."""
    if step <= warmup:
        return base * step / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * frac))
    if schedule == "linear":
        return base * (1 - frac)
    return base


def run_one(name: str, cond: Condition, fault: str | None, fault_step: int = FAULT_STEP,
            steps: int = STEPS) -> RunTrace:
    """Train one run for real and return its labelled log."""
    if cond.model == "lm":
        return run_lm(name, cond, fault, fault_step, steps)
    import torch

    torch.manual_seed(cond.seed)
    g = torch.Generator().manual_seed(cond.seed)
    centers = torch.randn(N_CLASSES, N_FEATURES, generator=g) * 0.5
    model = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 64), torch.nn.GELU(), torch.nn.Linear(64, N_CLASSES))

    def forward(step: int, active: bool) -> Any:
        y = torch.randint(0, N_CLASSES, (cond.batch_size,), generator=g)
        hard = torch.rand(cond.batch_size, generator=g) < HARD_SHARE
        noise = torch.where(hard, torch.tensor(1.6), torch.tensor(0.9))[:, None]
        x = centers[y] + torch.randn(cond.batch_size, N_FEATURES, generator=g) * noise
        flip = hard & (torch.rand(cond.batch_size, generator=g) < HARD_LABEL_NOISE)
        y = torch.where(flip, torch.randint(0, N_CLASSES, (cond.batch_size,), generator=g), y)
        if active and fault == "bad_batch" and step < fault_step + 3:
            x = torch.randn(cond.batch_size, N_FEATURES, generator=g) * 25.0
            y = torch.randint(0, N_CLASSES, (cond.batch_size,), generator=g)
        if active and fault == "label_noise":
            y = torch.randint(0, N_CLASSES, (cond.batch_size,), generator=g)
        if active and fault == "nan_weights" and step == fault_step:
            with torch.no_grad():
                model[0].weight[0, 0] = float("nan")
        return torch.nn.functional.cross_entropy(model(x), y)

    return train_trace(name, cond, fault, fault_step, steps, model, BASE_LR, forward)


def train_trace(name: str, cond: Condition, fault: str | None, fault_step: int, steps: int, model: Any,
                base_lr: float, forward: Any) -> RunTrace:
    """The training loop both families share: ``forward(step, active)`` draws the step's batch (with its
    data and weight faults) and returns the loss; the learning-rate and gradient faults, Trainer's
    clipping and its averaged logging are here."""
    import torch

    from collectors.anomaly.updatewatch import UpdateWatch

    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=0.01)
    trace = RunTrace(name, fault, fault_step if fault else None, cond)
    updates = UpdateWatch(model)
    window_losses: list[float] = []
    lr_scale = 1.0
    for step in range(1, steps + 1):
        active = fault is not None and step >= fault_step
        loss = forward(step, active)
        lr = lr_at(step, cond.schedule, steps, base=base_lr)
        if active and fault == "lr_spike" and step < fault_step + 4:
            lr *= 50.0
        if active and fault == "divergence":
            lr_scale = min(lr_scale * 1.4, 1e4)
            lr *= lr_scale
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if active and fault == "grad_explosion" and step < fault_step + 3:
            for p in model.parameters():
                p.grad.mul_(2000.0)
        if active and fault == "vanishing":
            for p in model.parameters():
                p.grad.mul_(1e-9)
        # Trainer's default: clip at 1.0 and log the norm before clipping
        gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        if not (active and fault == "plateau"):
            opt.step()
        window_losses.append(float(loss.detach()))
        if step % cond.log_every == 0:
            trace.records.append({"step": step, "loss": sum(window_losses) / len(window_losses), "grad_norm": gn,
                                  "learning_rate": lr, "weights_changed": updates.collect()})
            window_losses = []
    return trace


def iter_suite(quick: bool = False, seed_offset: int = 0, families: Sequence[str] = FAMILIES) -> Iterator[RunTrace]:
    """Every labelled run of each family: the clean ones, then each fault under three conditions.
    ``quick`` keeps one clean run and one run per fault in three (for tests of the harness, not of the
    rules' quality). ``seed_offset`` draws a held-out suite: same conditions, other data, weights and
    batches (the rules' defaults were chosen on offset 0)."""
    for model in families:
        if model not in FAMILIES:
            raise ValueError(f"unknown suite family {model!r}; expected one of {', '.join(FAMILIES)}")
        clean = clean_conditions(seed_offset, model)
        faults = fault_conditions(seed_offset, model)
        if quick:
            clean = clean[:1]
            faults = faults[::3]
        for cond in clean:
            yield run_one(f"clean-{cond.label}", cond, None)
        for fault, cond in faults:
            yield run_one(f"{fault}-{cond.label}", cond, fault)


@lru_cache(maxsize=1)
def lm_data() -> tuple[Any, Any, Any, int]:
    """The demo's chat training set as stacked tensors (input ids, attention mask, labels) and its
    vocabulary size: built once per process (the tokenizer is trained in-process, nothing downloaded)."""
    import torch

    from collectors.demo import ChatDataset, build_tokenizer, make_samples, render

    samples = make_samples(2000, 0)
    tok = build_tokenizer([render(x) for x in samples])
    ds = ChatDataset(samples, tok)
    return (torch.stack([it["input_ids"] for it in ds.items]), torch.stack([it["attention_mask"] for it in ds.items]),
            torch.stack([it["labels"] for it in ds.items]), len(tok))


def run_lm(name: str, cond: Condition, fault: str | None, fault_step: int = FAULT_STEP,
           steps: int = STEPS) -> RunTrace:
    """Train one run of the LM family for real (see :func:`run_one`; the faults are injected the same
    way, a corrupt batch being random token ids and label noise random target tokens)."""
    import torch

    from collectors.demo import build_model

    ids_all, mask_all, labels_all, vocab = lm_data()
    g = torch.Generator().manual_seed(cond.seed)
    model = build_model(vocab, seed=cond.seed)

    def forward(step: int, active: bool) -> Any:
        idx = torch.randint(0, ids_all.shape[0], (cond.batch_size,), generator=g)
        ids, mask, labels = ids_all[idx], mask_all[idx], labels_all[idx]
        answer = labels != -100
        if active and fault == "bad_batch" and step < fault_step + 3:
            ids = torch.randint(2, vocab, ids.shape, generator=g)
            mask = torch.ones_like(mask)
            labels = ids.clone()
        if active and fault == "label_noise":
            labels = torch.where(answer, torch.randint(2, vocab, labels.shape, generator=g), labels)
        if active and fault == "nan_weights" and step == fault_step:
            with torch.no_grad():
                model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    return train_trace(name, cond, fault, fault_step, steps, model, LM_BASE_LR, forward)
