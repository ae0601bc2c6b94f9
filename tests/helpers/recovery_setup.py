"""A tiny, fully deterministic Trainer setup for the recovery and resume tests (issue 11).

Token sequences drawn from a fixed Zipf-like unigram distribution, so the eval loss settles near the
distribution's entropy (a stable plateau the tests can compare to within 2 %). Every item carries its
index; the collator records which items were trained on, and turns the items of a ``poison`` set into
garbage (every token the same rare id), the "bad batches" of a data fault. Dropout is off, so a run
resumed from a checkpoint repeats the uninterrupted one exactly.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

VOCAB = 64
SEQ = 16
N_TOKENS = 40
"""Tokens 0..N_TOKENS-1 carry the data; the others never occur in clean data."""
GARBAGE_TOKEN = VOCAB - 1


def item_tokens(i: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + i)
    weights = 1.0 / torch.arange(1, N_TOKENS + 1, dtype=torch.float64)
    return torch.multinomial(weights, SEQ, replacement=True, generator=g).tolist()


class TokenData(torch.utils.data.Dataset):
    """``n`` items ``{"id": i}``; the collator turns ids into token tensors."""

    def __init__(self, n: int, seed: int = 0, ids: Iterable[int] | None = None) -> None:
        self.ids = list(ids) if ids is not None else list(range(n))
        self.seed = seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, int]:
        return {"id": self.ids[i]}


POISON_LR_FACTOR = 30.0
"""A poisoned batch is trained with this many times the learning rate: a bad batch's huge gradient."""


class Collator:
    """Builds input_ids/labels; records the ids seen (``seen``) and poisons the ids in ``poison``
    (``poisoned`` is then True until :class:`PoisonLR` has applied it)."""

    def __init__(self, seed: int = 0, poison: Iterable[int] = ()) -> None:
        self.seed = seed
        self.poison = set(poison)
        self.seen: list[int] = []
        self.poisoned = False

    def __call__(self, items: list[dict[str, int]]) -> dict[str, Any]:
        rows = []
        for it in items:
            self.seen.append(it["id"])
            if it["id"] in self.poison:
                self.poisoned = True
            rows.append([GARBAGE_TOKEN] * SEQ if it["id"] in self.poison else item_tokens(it["id"], self.seed))
        ids = torch.tensor(rows, dtype=torch.long)
        return {"input_ids": ids, "labels": ids.clone()}


class PoisonLR:
    """A callback: the optimizer step of a batch holding poisoned items runs at ``POISON_LR_FACTOR`` × the
    learning rate (the scheduler sets the normal rate back at its next step). Trainer fetches a step's
    batches just before ``on_step_begin`` (no workers), so the flag belongs to the step about to run."""

    def __new__(cls, collator: Collator) -> Any:
        from transformers import TrainerCallback

        class _PoisonLR(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kw: Any) -> None:
                if collator.poisoned and optimizer is not None:
                    for g in optimizer.param_groups:
                        g["lr"] = g["lr"] * POISON_LR_FACTOR
                collator.poisoned = False

        return _PoisonLR()


def build_model(seed: int = 0) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def arguments(output_dir: str, max_steps: int, **extra: Any) -> Any:
    from transformers import TrainingArguments

    kw: dict[str, Any] = dict(output_dir=output_dir, max_steps=max_steps, per_device_train_batch_size=8,
                              per_device_eval_batch_size=32, learning_rate=3e-3, lr_scheduler_type="constant",
                              logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                              disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False,
                              weight_decay=0.0)
    kw.update(extra)
    return TrainingArguments(**kw)


def trainer(output_dir: str, max_steps: int, *, n_train: int = 800, poison: Iterable[int] = (),
            train_ids: Iterable[int] | None = None, callbacks: Iterable[Any] = (), seed: int = 0,
            **extra: Any) -> Any:
    """A Trainer over ``n_train`` items (or exactly ``train_ids``), eval on 64 held-out items."""
    from transformers import Trainer

    collator = Collator(seed, poison)
    t = Trainer(model=build_model(seed), args=arguments(output_dir, max_steps, **extra),
                train_dataset=TokenData(n_train, seed, train_ids),
                eval_dataset=TokenData(64, seed, range(100_000, 100_064)), data_collator=collator)
    if collator.poison:
        t.add_callback(PoisonLR(collator))
    for cb in callbacks:
        t.add_callback(cb)
    t.collator = collator  # type: ignore[attr-defined]
    return t


def eval_loss(t: Any) -> float:
    """The eval loss without touching the training's logs (the collator's ``seen`` list is restored)."""
    seen = list(t.collator.seen)
    out = t.evaluate()["eval_loss"]
    t.collator.seen[:] = seen
    return float(out)
