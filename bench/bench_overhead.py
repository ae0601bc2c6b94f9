"""Collector overhead: the demo training with and without MonitorCallback, and with a TensorBoard
SummaryWriter logging the same scalars, in interleaved runs inside one process.

Prints steps/s of each run, the median per configuration, and the ratios to the bare run
(goal: MonitorCallback ≥ 0.98 with defaults). Run: ``python bench/bench_overhead.py [--steps 300 --rounds 3]``.
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


def one_run(kind: str, steps: int, root: Path, i: int) -> float:
    import torch
    from transformers import Trainer

    from collectors import MonitorCallback
    from collectors.demo import build_demo, training_arguments

    setup = build_demo(seed=0, n_train=2000, n_eval=32)
    callbacks = []
    if kind == "trainboard":
        callbacks = [MonitorCallback(base_dir=root / f"tb-run-{i}")]
    elif kind == "tensorboard":
        callbacks = [make_tb_callback(str(root / f"tb-events-{i}"))]
    args = training_arguments(str(root / f"hf-{kind}-{i}"), steps, logging_steps=5, eval_steps=10**9,
                              eval_strategy="no")
    trainer = Trainer(model=setup.model, args=args, train_dataset=setup.train, processing_class=setup.tokenizer,
                      callbacks=callbacks)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    trainer.train()
    return steps / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per run (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default %(default)s)")
    a = p.parse_args()
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(2)
    kinds = ("bare", "trainboard", "tensorboard")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        one_run("bare", 20, Path(tmp), -1)  # warm-up: first-run costs (imports, allocator) out of the figures
        for r in range(a.rounds):
            order = kinds if r % 2 == 0 else tuple(reversed(kinds))
            for k in order:
                rate = one_run(k, a.steps, Path(tmp), r)
                rates[k].append(rate)
                print(f"round {r}  {k:<12} {rate:7.2f} steps/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print("\nmedian steps/s: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    print(f"ratio trainboard/bare  = {med['trainboard'] / med['bare']:.3f}  (goal >= 0.98)")
    print(f"ratio tensorboard/bare = {med['tensorboard'] / med['bare']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
