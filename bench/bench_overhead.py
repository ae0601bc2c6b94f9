"""Collector overhead: the demo training with and without MonitorCallback, and with a TensorBoard
SummaryWriter logging the same scalars, in interleaved runs inside one process.

Prints steps/s of each run, the median per configuration, and the ratios to the bare run
(goal: MonitorCallback ≥ 0.98 with defaults). Wall-clock ratios on a small shared machine move by ±10 %
between identical runs, so the script also times every hook call of each callback and prints that time
as a share of training time: the collector's exact cost, immune to that noise.
Run: ``python bench/bench_overhead.py [--steps 200 --rounds 6 --threads 1]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_tb_callback(log_dir: str):
    from torch.utils.tensorboard import SummaryWriter
    from transformers import TrainerCallback

    class TBScalars(TrainerCallback):
        """Logs exactly the scalars MonitorCallback records, with SummaryWriter (the peer we compare to)."""

        def __init__(self) -> None:
            self.writer = SummaryWriter(log_dir)

        def on_log(self, args, state, control, logs=None, **kw):
            for k, v in (logs or {}).items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, state.global_step)

        def on_train_end(self, args, state, control, **kw):
            self.writer.close()

    return TBScalars()


HOOK_TIME: dict[str, float] = {}


def timed(cb: object, kind: str) -> object:
    """Wrap every ``on_*`` hook of ``cb`` to add its wall time to ``HOOK_TIME[kind]``."""
    for name in dir(cb):
        if name.startswith("on_") and callable(getattr(cb, name)):
            fn = getattr(cb, name)

            def wrapper(*a, _fn=fn, **k):
                t0 = time.perf_counter()
                try:
                    return _fn(*a, **k)
                finally:
                    HOOK_TIME[kind] = HOOK_TIME.get(kind, 0.0) + time.perf_counter() - t0

            setattr(cb, name, wrapper)
    return cb


def one_run(kind: str, steps: int, root: Path, i: int) -> tuple[float, float]:
    import torch
    from transformers import Trainer

    from collectors import MonitorCallback
    from collectors.demo import build_demo, training_arguments

    setup = build_demo(seed=0, n_train=2000, n_eval=32)
    callbacks = []
    if kind == "trainboard":
        callbacks = [timed(MonitorCallback(base_dir=root / f"tb-run-{i}"), kind)]
    elif kind == "tensorboard":
        callbacks = [timed(make_tb_callback(str(root / f"tb-events-{i}")), kind)]
    args = training_arguments(str(root / f"hf-{kind}-{i}"), steps, logging_steps=5, eval_steps=10**9,
                              eval_strategy="no")
    trainer = Trainer(model=setup.model, args=args, train_dataset=setup.train, processing_class=setup.tokenizer,
                      callbacks=callbacks)
    torch.manual_seed(0)
    HOOK_TIME[kind] = 0.0
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    return steps / wall, HOOK_TIME.get(kind, 0.0) / wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=200, help="optimizer steps per run (default %(default)s)")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s: steadiest timings)")
    a = p.parse_args()
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(a.threads)
    kinds = ("bare", "trainboard", "tensorboard")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    shares: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        one_run("bare", 20, Path(tmp), -1)  # warm-up: first-run costs (imports, allocator) out of the figures
        for r in range(a.rounds):
            order = kinds if r % 2 == 0 else tuple(reversed(kinds))
            for k in order:
                rate, share = one_run(k, a.steps, Path(tmp), r)
                rates[k].append(rate)
                shares[k].append(share)
                print(f"round {r}  {k:<12} {rate:7.2f} steps/s   in hooks {share * 100:5.2f}% of training time", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print("\nmedian steps/s: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    print(f"ratio trainboard/bare  = {med['trainboard'] / med['bare']:.3f}  (goal >= 0.98)")
    print(f"ratio tensorboard/bare = {med['tensorboard'] / med['bare']:.3f}")
    for k in ("trainboard", "tensorboard"):
        share = statistics.median(shares[k])
        print(f"{k}: time inside its hooks = {share * 100:.2f}% of training time "
              f"-> exact steps/s ratio {1 / (1 + share / (1 - share)):.4f}" if share < 1 else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
