"""Benchmark of the spectral (SVD) metrics: seconds per layer measurement, and the cost on the demo training.

Prints:
1. seconds per measurement (``collectors.spectral.measure``: SVD + alignments + angle) for square layers of
   several sizes, full ``torch.linalg.svd`` versus ``torch.svd_lowrank``, on CPU (and CUDA when available),
   which is what justifies ``FULL_SVD_MAX_DIM``;
2. the demo training (tiny GPT-2, Trainer, CPU) with and without ``spectral=True`` (defaults: every 20
   steps, the 4 attention projections), run alternately in one process: the wall-time ratio, and the
   collector's own accounting (measurement seconds / training seconds).

Run: ``python bench/bench_spectral.py`` (about 2-4 minutes on 2 cores; ``--quick`` skips 4096).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from collectors.spectral import FULL_SVD_MAX_DIM, measure  # noqa: E402

SIZES = (256, 512, 768, 1024, 2048, 4096)
QUICK_SIZES = (256, 512, 1024)
DEMO_STEPS = 200
ROUNDS = 3


def best_of(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_sizes(sizes: Sequence[int], device: str, threads: int) -> None:
    torch.set_num_threads(threads)
    print(f"\n## seconds per measurement, {device}, torch threads={threads} (best of N; full SVD at or below "
          f"{FULL_SVD_MAX_DIM} in 'auto')")
    print(f"{'size':>11} {'full (s)':>10} {'lowrank (s)':>12} {'full/lowrank':>13} {'reps':>5}")
    for n in sizes:
        g = torch.Generator().manual_seed(n)
        # a trained-weight-like spectrum (slow decay) rather than a flat random one
        w = (torch.randn(n, n, generator=g) * torch.exp(-torch.arange(n) / (n / 8))).to(device)
        grad = torch.randn(n, n, generator=g).to(device)
        reps = 5 if n <= 1024 else (2 if n <= 2048 else 1)
        measure(w[:64, :64], grad[:64, :64])  # warm LAPACK/cuSOLVER
        full = best_of(lambda: measure(w, grad, method="full"), reps)
        low = best_of(lambda: measure(w, grad, method="lowrank"), reps)
        print(f"{n:>5}x{n:<5} {full:>10.4f} {low:>12.4f} {full / low:>12.1f}x {reps:>5}", flush=True)


def demo_once(setup_fn: Callable[[], Any], steps: int, spectral: bool, out: Path) -> tuple[float, Any]:
    from transformers import Trainer

    from collectors.callback import MonitorCallback
    from collectors.demo import training_arguments

    setup = setup_fn()
    args = training_arguments(str(out / "hf"), steps, logging_steps=10, eval_steps=10**6, eval_strategy="no")
    cb = MonitorCallback(base_dir=out / "run", spectral={"echo": False} if spectral else None)
    trainer = Trainer(model=setup.model, args=args, train_dataset=setup.train, processing_class=setup.tokenizer,
                      callbacks=[cb])
    t0 = time.perf_counter()
    trainer.train()
    return time.perf_counter() - t0, cb.spectral


def bench_demo(steps: int, rounds: int) -> None:
    import copy

    from collectors.demo import build_demo

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    base = build_demo(seed=0, n_train=2000)
    setup_fn = lambda: copy.deepcopy(base)  # noqa: E731 - same tokenizer, data and initial weights each run
    off: list[float] = []
    on: list[float] = []
    plugin_ratio: list[float] = []
    per_measure: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            for spectral in (False, True):
                secs, plugin = demo_once(setup_fn, steps, spectral, Path(tmp) / f"r{i}-{int(spectral)}")
                (on if spectral else off).append(secs)
                if plugin is not None:
                    plugin_ratio.append(plugin.overhead())
                    per_measure.append(plugin.measure_seconds / max(plugin.measurements, 1))
                print(f"  round {i + 1} spectral={'on ' if spectral else 'off'}: {secs:.2f} s for {steps} steps", flush=True)
    ratio = statistics.median(on) / statistics.median(off)
    print(f"\n## demo training ({steps} steps, spectral every 20 steps on 4 attention layers)")
    print(f"wall time median: off {statistics.median(off):.2f} s, on {statistics.median(on):.2f} s, "
          f"ratio on/off {ratio:.3f} (overhead {100 * (ratio - 1):+.1f}%; includes CPU-sharing noise)")
    print(f"collector accounting: measurement time / training time = {100 * statistics.median(plugin_ratio):.2f}% "
          f"(target < 5%); {1000 * statistics.median(per_measure):.1f} ms per measurement of the 4 layers")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="sizes up to 1024 only and one demo round")
    p.add_argument("--skip-demo", action="store_true", help="only the per-size table")
    p.add_argument("--skip-sizes", action="store_true", help="only the demo overhead")
    p.add_argument("--demo-steps", type=int, default=DEMO_STEPS, help="optimizer steps per demo run (default %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the size table (default %(default)s, as the collector uses on CPU)")
    a = p.parse_args(argv)
    if a.demo_steps < 20 or a.threads < 1:
        p.error("--demo-steps must be ≥ 20 and --threads ≥ 1")
    sizes = QUICK_SIZES if a.quick else SIZES
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if not a.skip_sizes:
        bench_sizes(sizes, "cpu", a.threads)
        if torch.cuda.is_available():
            bench_sizes(sizes, "cuda", a.threads)
        else:
            print("(no CUDA device here: GPU timings not measured)")
    if not a.skip_demo:
        bench_demo(a.demo_steps, 1 if a.quick else ROUNDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
