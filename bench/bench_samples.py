"""Benchmark: training slowdown caused by live samples (issue 4) on the demo task, defaults on.

Runs the demo training (real Trainer, tiny GPT-2, CPU) alternately with MonitorCallback alone and with
MonitorCallback(samples=SamplesConfig(dataset=eval set)) (every 50 steps, teacher-forced), interleaved
A/B/A/B so drift in machine load hits both sides alike. Prints each run, the median ratio of the
training times (target < 1.05), and the direct measure: the samples' own recorded cost (``sample_ms``)
as a fraction of the training time, which is immune to the noise of a shared machine.

Run: ``python bench/bench_samples.py [--steps 200] [--pairs 3] [--mode teacher_forced|generate]``
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET_RATIO = 1.05


def run_once(tmp: Path, steps: int, samples: bool, mode: str, every: int) -> tuple[float, float, float, int]:
    """One training; returns (train wall seconds, train CPU seconds, total sample ms, samples taken)."""
    import torch
    from transformers import Trainer
    from transformers.utils import logging as hf_logging

    from collectors.callback import MonitorCallback
    from collectors.demo import build_demo, training_arguments
    from collectors.samples import SamplesConfig

    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)  # on a shared 2-core machine 2 threads spin-wait and swamp any measurement
    setup = build_demo(seed=0, n_train=2000, n_eval=64)
    args = training_arguments(str(tmp / "hf"), steps, logging_steps=5, eval_strategy="no", seed=0)
    cfg = SamplesConfig(update_frequency=every, mode=mode, dataset=setup.eval) if samples else None
    cb = MonitorCallback(base_dir=tmp / "run", samples=cfg)
    trainer = Trainer(model=setup.model, args=args, train_dataset=setup.train, processing_class=setup.tokenizer,
                      callbacks=[cb])
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    from collectors.samples import SamplesPlugin

    plugin = next((p for p in cb.monitor.plugins if isinstance(p, SamplesPlugin)), None) if samples else None
    return elapsed, cpu, (plugin.total_ms if plugin else 0.0), (plugin.taken if plugin else 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="training steps per run (default %(default)s)")
    p.add_argument("--pairs", type=int, default=6,
                   help="interleaved pairs, the order alternating so neither side always runs second (default %(default)s)")
    p.add_argument("--every", type=int, default=50, help="samples update_frequency (default %(default)s)")
    p.add_argument("--mode", choices=("teacher_forced", "generate"), default="teacher_forced")
    args = p.parse_args(argv)
    if args.steps <= 0 or args.pairs <= 0 or args.every <= 0:
        p.error("--steps, --pairs and --every must be positive integers")
    ratios, cpu_ratios, fractions = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-samples-") as d:
        for i in range(args.pairs):
            if i % 2 == 0:
                base, base_cpu, _, _ = run_once(Path(d) / f"a{i}", args.steps, False, args.mode, args.every)
                with_s, with_cpu, ms, n = run_once(Path(d) / f"b{i}", args.steps, True, args.mode, args.every)
            else:
                with_s, with_cpu, ms, n = run_once(Path(d) / f"b{i}", args.steps, True, args.mode, args.every)
                base, base_cpu, _, _ = run_once(Path(d) / f"a{i}", args.steps, False, args.mode, args.every)
            ratios.append(with_s / base)
            cpu_ratios.append(with_cpu / base_cpu)
            fractions.append(ms / 1000.0 / with_s)
            print(f"pair {i + 1}: without {base:7.2f} s ({base_cpu:6.2f} s CPU) | with {with_s:7.2f} s "
                  f"({with_cpu:6.2f} s CPU; {n} samples, {ms / max(n, 1):6.1f} ms each) | "
                  f"ratio wall {with_s / base:.4f}, CPU {with_cpu / base_cpu:.4f}", flush=True)
    direct = statistics.median(fractions)
    print(f"median slowdown ratio, wall clock (with/without, interleaved): {statistics.median(ratios):.4f}  "
          f"(target < {TARGET_RATIO})")
    print(f"median slowdown ratio, process CPU time:                      {statistics.median(cpu_ratios):.4f}")
    print(f"samples' own cost / training time: {direct * 100:.3f}%  (= ratio {1 + direct:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
