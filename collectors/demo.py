"""The demo training: a tiny GPT-2 learning a procedurally generated chat task on CPU, with Trainboard on.

Nothing comes from a model hub: the tokenizer is trained in-process on the generated corpus and the
model is built from ``GPT2Config``. The task ("reverse the words", "sort the numbers", "repeat the
word") is learnable by a 2-layer model within a few minutes on 2 cores, so eval loss falls visibly and
sample accuracy rises. Tests, benchmarks, ``app.py --demo`` / ``trainboard demo`` and later features all
reuse it. Every feature is on (anomaly rules, samples, spectral metrics), so each dashboard page has data
within a minute.

Run it: ``python -m collectors.demo --base-dir runs/demo --max-steps 400``.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

WORDS = ("apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "candle", "forest", "rocket",
         "violet", "marble", "shadow", "garden", "falcon", "copper", "winter", "harbor", "meadow", "silver")
SYSTEM_PROMPTS = ("You are a precise assistant. Answer with the result only.",
                  "You follow instructions exactly and answer briefly.")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ("<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>")
DEFAULT_SEQ_LEN = 64
DEFAULT_MAX_STEPS = 400
DEMO_SAMPLES_EVERY = 25
"""The demo samples every 25 steps (not the library's 50) so a 400-step demo shows 16 samples."""
DEMO_SVD_INTERVAL = 20
"""The demo measures spectral metrics (on by default, issue 9) every 20 steps: the first within seconds."""
LR_SPIKE_FACTOR = 100.0
LR_SPIKE_STEPS = 3


def make_sample(rng: random.Random) -> list[dict[str, str]]:
    """One chat sample (system, user, assistant) of a randomly chosen task."""
    task = rng.randrange(3)
    if task == 0:
        words = rng.sample(WORDS, rng.randint(3, 5))
        user, answer = "Reverse the words: " + " ".join(words), " ".join(reversed(words))
    elif task == 1:
        nums = [rng.randint(0, 99) for _ in range(rng.randint(3, 5))]
        user, answer = "Sort the numbers: " + " ".join(map(str, nums)), " ".join(map(str, sorted(nums)))
    else:
        word, n = rng.choice(WORDS), rng.randint(2, 4)
        user, answer = f"Repeat {word} {n} times.", " ".join([word] * n)
    return [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer}]


def make_samples(n: int, seed: int) -> list[list[dict[str, str]]]:
    """``n`` chat samples, reproducible from ``seed``."""
    rng = random.Random(seed)
    return [make_sample(rng) for _ in range(n)]


def render(messages: Sequence[dict[str, str]]) -> str:
    """The chat template applied as text (the same string the tokenizer's template produces)."""
    return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)


def build_tokenizer(corpus: Sequence[str], vocab_size: int = 600) -> Any:
    """A byte-level BPE tokenizer trained on ``corpus`` in-process, with the chat template set."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>",
                                   bos_token="<|end|>", unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(vocab_size: int, n_layer: int = 2, n_embd: int = 64, n_head: int = 4,
                seq_len: int = DEFAULT_SEQ_LEN, seed: int = 0) -> Any:
    """A tiny GPT-2 from config (no download)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=seq_len, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                     bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return GPT2LMHeadModel(cfg)


class ChatDataset:
    """Tokenised chat samples padded to a fixed length; loss only on the assistant's answer."""

    def __init__(self, samples: Sequence[list[dict[str, str]]], tokenizer: Any, seq_len: int = DEFAULT_SEQ_LEN) -> None:
        import torch

        self.samples = list(samples)
        self.items: list[dict[str, Any]] = []
        for msgs in self.samples:
            prompt_ids = tokenizer(render(msgs[:-1]) + "<|assistant|>")["input_ids"]
            full_ids = tokenizer(render(msgs))["input_ids"][:seq_len]
            labels = [-100] * min(len(prompt_ids), len(full_ids)) + full_ids[len(prompt_ids):]
            pad = seq_len - len(full_ids)
            self.items.append({
                "input_ids": torch.tensor(full_ids + [tokenizer.pad_token_id] * pad),
                "attention_mask": torch.tensor([1] * len(full_ids) + [0] * pad),
                "labels": torch.tensor(labels + [-100] * pad),
            })

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


@dataclass
class DemoSetup:
    """Everything a demo training needs, built deterministically from a seed."""

    tokenizer: Any
    model: Any
    train: ChatDataset
    eval: ChatDataset
    seq_len: int


def build_demo(seed: int = 0, n_train: int = 4000, n_eval: int = 64, seq_len: int = DEFAULT_SEQ_LEN,
               n_layer: int = 2, n_embd: int = 64) -> DemoSetup:
    """Tokenizer, model and datasets of the demo task."""
    train_samples = make_samples(n_train, seed)
    eval_samples = make_samples(n_eval, seed + 10_000)
    tokenizer = build_tokenizer([render(s) for s in train_samples[:2000]])
    model = build_model(len(tokenizer), n_layer=n_layer, n_embd=n_embd, seq_len=seq_len, seed=seed)
    return DemoSetup(tokenizer, model, ChatDataset(train_samples, tokenizer, seq_len),
                     ChatDataset(eval_samples, tokenizer, seq_len), seq_len)


def training_arguments(output_dir: str, max_steps: int, *, logging_steps: int = 5, eval_steps: int = 25,
                       lr: float = 3e-3, batch_size: int = 16, seed: int = 0, **extra: Any) -> Any:
    """The demo's TrainingArguments (CPU, no saving unless asked, no reporting to outside services)."""
    from transformers import TrainingArguments

    kwargs: dict[str, Any] = dict(output_dir=output_dir, max_steps=max_steps, per_device_train_batch_size=batch_size,
                                  per_device_eval_batch_size=32, learning_rate=lr, warmup_steps=max(1, max_steps // 20),
                                  lr_scheduler_type="cosine", logging_steps=logging_steps, eval_strategy="steps",
                                  eval_steps=eval_steps, save_strategy="no", report_to=[], use_cpu=True, seed=seed,
                                  disable_tqdm=True, dataloader_num_workers=0, weight_decay=0.01)
    kwargs.update(extra)
    return TrainingArguments(**kwargs)


def lr_spike_callback(start_step: int, n_steps: int = LR_SPIKE_STEPS, factor: float = LR_SPIKE_FACTOR) -> Any:
    """A fault injector (issue 3): the learning rate × ``factor`` for optimizer steps ``start_step`` ..
    ``start_step + n_steps - 1``. It wraps the scheduler's lambdas, so Trainer's logged learning rate
    shows the spike exactly as a misconfigured schedule would."""
    from transformers import TrainerCallback

    class LRSpikeCallback(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, lr_scheduler: Any = None, **kwargs: Any) -> None:
            lambdas = getattr(lr_scheduler, "lr_lambdas", None)
            if not lambdas:
                raise ValueError("--inject-lr-spike needs a LambdaLR scheduler (the demo's cosine schedule is one)")

            def wrap(fn: Any) -> Any:
                # the scheduler has stepped s times when optimizer step s + 1 runs
                return lambda s: fn(s) * (factor if start_step <= s + 1 < start_step + n_steps else 1.0)

            lr_scheduler.lr_lambdas = [wrap(f) for f in lambdas]

    return LRSpikeCallback()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m collectors.demo",
                                description="Train Trainboard's demo model (tiny GPT-2, CPU) with MonitorCallback on.")
    p.add_argument("--base-dir", required=True, help="run directory to write (created)")
    p.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS, help="optimizer steps (default %(default)s)")
    p.add_argument("--logging-steps", type=int, default=5, help="log every N steps (default %(default)s)")
    p.add_argument("--eval-steps", type=int, default=25, help="evaluate every N steps (default %(default)s)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--no-monitor", action="store_true", help="train without MonitorCallback (for benchmarks)")
    p.add_argument("--spectral", action=argparse.BooleanOptionalAction, default=True,
                   help="record per-layer SVD metrics of the attention projections (logs/spectral.jsonl), so the "
                        "SVD page has data within the first minute; --no-spectral turns them off (default: on)")
    p.add_argument("--svd-interval", type=int, default=DEMO_SVD_INTERVAL,
                   help="spectral metrics every N optimizer steps (default %(default)s)")
    # --- samples (issue 4) ---
    p.add_argument("--samples-every", type=int, default=DEMO_SAMPLES_EVERY,
                   help="golden-vs-predicted sample every N steps; 0 turns samples off (default %(default)s)")
    p.add_argument("--samples-mode", choices=("teacher_forced", "generate"), default="teacher_forced",
                   help="how samples predict (default %(default)s)")
    # --- end samples ---
    p.add_argument("--no-anomaly", action="store_true", help="MonitorCallback without anomaly rules/snapshots")
    p.add_argument("--save-steps", type=int, default=0, help="save checkpoint-* every N steps (default: never)")
    p.add_argument("--save-total-limit", type=int, default=None, help="Trainer's save_total_limit (default: none)")
    # --- snapshot retention and last good state (issue 11): the AnomalyConfig.snapshots settings ---
    for flag, kind, hint in (("keep-best", int, "best-model snapshots kept (default 3; 0: all)"),
                             ("keep-last", int, "anomaly snapshots kept (default 20; 0: all)"),
                             ("max-total-gb", float, "snapshot disk budget (default: min(50 GB, 25%% of free disk); 0: none)"),
                             ("min-free-gb", float, "free-disk floor for snapshots (default 1.0)"),
                             ("min-steps-between-saves", int, "steps between anomaly snapshots (default 500)"),
                             ("rolling-copy-steps", int, "steps between rolling last-good copies (default 50; 0: off)")):
        p.add_argument(f"--{flag}", type=kind, default=None, help=hint)
    p.add_argument("--inject-lr-spike", type=int, default=0, metavar="STEP",
                   help=f"fault injection: learning rate x{LR_SPIKE_FACTOR:g} from optimizer step STEP")
    p.add_argument("--inject-lr-steps", type=int, default=LR_SPIKE_STEPS,
                   help="how many steps the injected spike lasts (default %(default)s)")
    args = p.parse_args(argv)
    for name in ("save_steps", "inject_lr_spike"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be 0 (off) or a positive integer; got {getattr(args, name)}")
    if args.inject_lr_steps <= 0:
        p.error(f"--inject-lr-steps must be a positive integer; got {args.inject_lr_steps}")
    for name in ("max_steps", "logging_steps", "eval_steps", "svd_interval"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(args, name)}")
    if args.samples_every < 0:
        p.error(f"--samples-every must be 0 (off) or a positive integer; got {args.samples_every}")
    if not args.lr > 0:
        p.error(f"--lr must be positive; got {args.lr}")
    if snapshot_settings(args):
        from collectors.anomaly.rules import AnomalyConfig

        try:
            AnomalyConfig.from_dict({"snapshots": snapshot_settings(args)})
        except ValueError as exc:
            p.error(str(exc).replace("snapshots.", "--").replace("_", "-"))
    return args


SNAPSHOT_FLAGS = ("keep_best", "keep_last", "max_total_gb", "min_free_gb", "min_steps_between_saves",
                  "rolling_copy_steps")


def snapshot_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``snapshots`` section for the snapshot flags given (pure; validated by AnomalyConfig)."""
    return {k: getattr(args, k) for k in SNAPSHOT_FLAGS if getattr(args, k, None) is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import Trainer

    from collectors.callback import MonitorCallback

    if "OMP_NUM_THREADS" not in os.environ:  # respect an explicit choice (tests pin 1 thread per process)
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    setup = build_demo(seed=args.seed)
    base = Path(args.base_dir)
    saving = {"save_strategy": "steps", "save_steps": args.save_steps} if args.save_steps else {}
    if args.save_total_limit is not None:
        saving["save_total_limit"] = args.save_total_limit
    targs = training_arguments(str(base / "hf_output"), args.max_steps, logging_steps=args.logging_steps,
                               eval_steps=args.eval_steps, lr=args.lr, seed=args.seed, **saving)
    samples = None
    if args.samples_every:  # issue 4: samples on by default; the eval set is passed so they start at once
        from collectors.samples import SamplesConfig

        samples = SamplesConfig(update_frequency=args.samples_every, mode=args.samples_mode, dataset=setup.eval)
    spectral = {"svd_interval": args.svd_interval} if args.spectral else None  # issue 5
    anomaly: Any = not args.no_anomaly
    snap_cfg = snapshot_settings(args)
    if anomaly and snap_cfg:
        anomaly = {"snapshots": snap_cfg}
    callbacks: list[Any] = [] if args.no_monitor else [
        MonitorCallback(base_dir=base, samples=samples, anomaly=anomaly, spectral=spectral)]
    if args.inject_lr_spike:
        callbacks.append(lr_spike_callback(args.inject_lr_spike, args.inject_lr_steps))
    trainer = Trainer(model=setup.model, args=targs, train_dataset=setup.train, eval_dataset=setup.eval,
                      processing_class=setup.tokenizer, callbacks=callbacks)
    trainer.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())
