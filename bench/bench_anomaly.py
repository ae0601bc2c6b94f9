"""Benchmark: the cost of anomaly detection per log step, with all rules on.

Prints microseconds per step for
  1. the pure rule engine on a Trainer-like log (loss, grad norm, learning rate, batch size, accuracy
     on every 10th step) and with RLHF inputs added (32 rewards + 32 predicted probabilities per step);
  2. ``Monitor.log`` with the anomaly plugin on vs off, measured side by side in one run (the ratio is
     what the collector adds to each logged step; snapshots excluded: no trigger fires in this stream);
  3. ``AdvancedAnomalyDetector.analyze_training_step`` reading the gradient norm from a small model.

Run: ``python bench/bench_anomaly.py [--steps N]``.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.anomaly.rules import Observation, RuleEngine  # noqa: E402

DEFAULT_STEPS = 20_000
REPEATS = 3


def log_stream(n: int, seed: int = 0, rewards: bool = False) -> list[Observation]:
    """A smooth, noisy training log that fires no snapshot trigger (cosine LR, decaying loss)."""
    rng = random.Random(seed)
    out = []
    for s in range(1, n + 1):
        loss = 2.0 * math.exp(-s / (n / 3)) + 0.5 + rng.gauss(0, 0.01)
        lr = 3e-4 * 0.5 * (1 + math.cos(math.pi * s / n))
        obs = Observation(step=s, loss=loss, grad_norm=1.0 + rng.gauss(0, 0.05), learning_rate=lr, batch_size=32,
                          accuracy=60 + 20 * s / n if s % 10 == 0 else None)
        if rewards:
            obs.rewards = [rng.gauss(0, 1) for _ in range(32)]
            obs.predictions = [rng.random() for _ in range(32)]
        out.append(obs)
    return out


def best_of(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_engine(n: int) -> None:
    for label, rewards in (("Trainer log (loss, grad norm, LR, batch size, accuracy)", False),
                           ("... plus 32 rewards + 32 predictions (RLHF)", True)):
        stream = log_stream(n, rewards=rewards)

        def run() -> None:
            eng = RuleEngine()
            for obs in stream:
                eng.observe(obs)

        t = best_of(run)
        print(f"  rule engine, {label}: {t / n * 1e6:8.1f} µs/step  ({n} steps)")


def bench_monitor(n: int) -> None:
    from collectors import Monitor, runformat as rf
    from collectors.anomaly.plugin import AnomalyPlugin

    stream = log_stream(n)

    def run(anomaly: bool) -> float:
        with tempfile.TemporaryDirectory() as d:
            with Monitor(d, anomaly=anomaly) as mon:
                t0 = time.perf_counter()
                for o in stream:
                    mon.log(o.step, loss=o.loss, grad_norm=o.grad_norm, learning_rate=o.learning_rate)
                return time.perf_counter() - t0

    best = {False: math.inf, True: math.inf}
    for _ in range(REPEATS + 2):  # interleaved, side by side, so disk and CPU drift hit both equally
        for anomaly in (False, True):
            best[anomaly] = min(best[anomaly], run(anomaly))
    off, on = best[False] / n * 1e6, best[True] / n * 1e6
    print(f"  Monitor.log, anomaly off: {off:8.1f} µs/step  (dominated by the atomic status-file rewrite)")
    print(f"  Monitor.log, anomaly on : {on:8.1f} µs/step  (ratio {on / off:.2f}x)")

    # the plugin's own share, timed alone on the same records
    with tempfile.TemporaryDirectory() as d:
        mon = Monitor(d, anomaly=False)
        plugin = AnomalyPlugin()
        mon.add_plugin(plugin)
        mon.start()
        records = [rf.make_record("train", step=o.step, loss=o.loss, grad_norm=o.grad_norm,
                                  learning_rate=o.learning_rate) for o in stream]
        t = best_of(lambda: [plugin.on_record(mon, r) for r in records], 1) / n * 1e6
        mon.close()
    print(f"  AnomalyPlugin.on_record alone (rules + control-file check): {t:8.1f} µs/step")


def bench_detector(n: int) -> None:
    try:
        import torch
    except ImportError:
        print("  (torch not installed: detector benchmark skipped)")
        return
    from collectors.anomaly.detector import AdvancedAnomalyDetector, model_grad_norm

    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model(torch.randn(8, 256)).pow(2).mean().backward()
    det = AdvancedAnomalyDetector(save_alerts=False)
    m = min(n, 5000)
    stream = log_stream(m)
    t_norm = best_of(lambda: [model_grad_norm(model) for _ in range(m)]) / m * 1e6
    t_all = best_of(lambda: [det.analyze_training_step(model=model, optimizer=opt, loss=o.loss, batch_size=32)
                             for o in stream]) / m * 1e6
    n_params = sum(p.numel() for p in model.parameters())
    print(f"  detector, grad norm of a {n_params:,}-parameter model: {t_norm:8.1f} µs")
    print(f"  detector, analyze_training_step (reads model + optimizer, all rules): {t_all:8.1f} µs/step")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="log steps per measurement (default %(default)s)")
    args = p.parse_args(argv)
    if args.steps < 100:
        p.error(f"--steps must be at least 100; got {args.steps}")
    print(f"Anomaly detection cost per log step (best of {REPEATS}; python {sys.version.split()[0]})")
    bench_engine(args.steps)
    bench_monitor(min(args.steps, 5000))
    bench_detector(args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
