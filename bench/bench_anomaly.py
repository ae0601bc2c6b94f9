"""Benchmark: the cost of anomaly detection per log step, with all rules on.

Prints microseconds per step for
  1. the pure rule engine on a Trainer-like log (loss, grad norm, learning rate, batch size, accuracy
     on every 10th step) and with RLHF inputs added (32 rewards + 32 predicted probabilities per step);
  2. ``Monitor.log`` with the anomaly plugin on vs off, measured side by side in one run (the ratio is
     what the collector adds to each logged step; snapshots excluded: no trigger fires in this stream);
  3. ``AdvancedAnomalyDetector.analyze_training_step`` reading the gradient norm from a small model;
  4. (issue 12) what one ``Monitor.log(step, loss=, grad_norm=, learning_rate=)`` costs the training thread,
     median and p99 per call, at defaults (rules on) and with the rules off, beside TensorBoard's
     ``SummaryWriter.add_scalar`` × 3 for the same values, in interleaved repeats of one run; with
     ``--anchor DIR`` the same calls are also timed on the code of another checkout (e.g. main before the
     writer thread) in a subprocess in the same run, and the ratios printed. Goal: ≤ 20 µs / ≤ 200 µs.

Run: ``python bench/bench_anomaly.py [--steps N] [--anchor DIR] [--quick]``. ``--quick`` (a test runs it)
measures a few hundred calls once: its figures are for checking the report, not for reading.
``TRAINBOARD_BENCH_CODE=DIR`` makes the script import ``collectors`` from DIR instead of this checkout.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.environ.get("TRAINBOARD_BENCH_CODE") or str(Path(__file__).resolve().parents[1]))

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
    print(f"  Monitor.log, anomaly off: {off:8.1f} µs/step  (whole loop / calls; the writer thread runs beside it)")
    print(f"  Monitor.log, anomaly on : {on:8.1f} µs/step  (ratio {on / off:.2f}x)")

    # the plugin's own share, timed alone on the same records: the rules (writer thread) and the
    # training thread's part (live inputs, control-file check)
    with tempfile.TemporaryDirectory() as d:
        mon = Monitor(d, anomaly=False)
        plugin = AnomalyPlugin()
        mon.add_plugin(plugin)
        mon.start()
        records = [rf.make_record("train", step=o.step, loss=o.loss, grad_norm=o.grad_norm,
                                  learning_rate=o.learning_rate) for o in stream]
        t_thread = best_of(lambda: [(plugin.on_annotate(mon, r), plugin.on_record(mon, r)) for r in records], 1) / n * 1e6
        t_rules = best_of(lambda: [plugin.on_record_background(mon, r) for r in records], 1) / n * 1e6
        mon.close()
    print(f"  AnomalyPlugin rules (on the writer thread): {t_rules:8.1f} µs/step")
    print(f"  AnomalyPlugin on the training thread (live inputs + control-file check): {t_thread:8.1f} µs/step")


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


LOG_GOAL_MEDIAN_US = 20.0
LOG_GOAL_P99_US = 200.0


def quantiles_us(times: list[float]) -> tuple[float, float]:
    """(median, p99) of per-call times in seconds, as microseconds."""
    xs = sorted(times)
    return statistics.median(xs) * 1e6, xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1e6


def time_monitor_log(n: int, anomaly: bool) -> tuple[float, float]:
    """Per-call cost of ``Monitor.log`` on the calling (training) thread, one fresh run directory."""
    from collectors import Monitor

    stream = log_stream(n)
    times = []
    with tempfile.TemporaryDirectory() as d:
        mon = Monitor(d, anomaly=anomaly)
        mon.start()
        clock = time.perf_counter
        for o in stream:
            t0 = clock()
            mon.log(o.step, loss=o.loss, grad_norm=o.grad_norm, learning_rate=o.learning_rate)
            times.append(clock() - t0)
        mon.close()
    return quantiles_us(times)


def time_callback_on_log(n: int) -> tuple[float, float] | None:
    """Per-call cost of ``MonitorCallback.on_log`` at defaults, with real Trainer state objects (the
    Trainer's own work around the call, e.g. ``log_history``, is not counted); None without transformers."""
    try:
        from transformers import TrainerControl, TrainerState, TrainingArguments

        from collectors import MonitorCallback
    except Exception:  # noqa: BLE001 - an anchor without the callback, or no transformers
        return None
    stream = log_stream(n)
    times = []
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(output_dir=d, report_to=[], logging_steps=1)
        state, control = TrainerState(), TrainerControl()
        state.is_world_process_zero = True
        cb = MonitorCallback(base_dir=Path(d) / "run")
        cb.on_train_begin(args, state, control)
        clock = time.perf_counter
        for o in stream:
            state.global_step = o.step
            logs = {"loss": o.loss, "grad_norm": o.grad_norm, "learning_rate": o.learning_rate}
            state.log_history.append({**logs, "step": o.step})
            t0 = clock()
            cb.on_log(args, state, control, logs=logs)
            times.append(clock() - t0)
        cb.on_train_end(args, state, control)
    return quantiles_us(times)


def time_tensorboard(n: int) -> tuple[float, float] | None:
    """Per-call cost of ``SummaryWriter.add_scalar`` × 3 (loss, grad norm, learning rate); None without it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard missing: the column says so
        return None
    stream = log_stream(n)
    times = []
    with tempfile.TemporaryDirectory() as d:
        w = SummaryWriter(d)
        clock = time.perf_counter
        for o in stream:
            t0 = clock()
            w.add_scalar("train/loss", o.loss, o.step)
            w.add_scalar("train/grad_norm", o.grad_norm, o.step)
            w.add_scalar("train/learning_rate", o.learning_rate, o.step)
            times.append(clock() - t0)
        w.close()
    return quantiles_us(times)


def measure_log_cost(n: int, repeats: int) -> dict[str, list[float] | None]:
    """Interleaved repeats of the three configurations; the median over repeats of each figure."""
    runs: dict[str, list[tuple[float, float]]] = {"defaults": [], "rules off": [], "callback": [], "tensorboard": []}
    for _ in range(repeats):
        runs["defaults"].append(time_monitor_log(n, True))
        runs["rules off"].append(time_monitor_log(n, False))
        cb = time_callback_on_log(n)
        if cb is not None:
            runs["callback"].append(cb)
        tb = time_tensorboard(n)
        if tb is not None:
            runs["tensorboard"].append(tb)
    return {k: ([statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)] if v else None)
            for k, v in runs.items()}


def measure_anchor(anchor: str, n: int, repeats: int) -> dict[str, list[float] | None] | None:
    """The same measurement on another checkout's code, in a subprocess of this run."""
    cmd = [sys.executable, __file__, "--log-cost-json", "--steps", str(n), "--repeats", str(repeats)]
    env = {**os.environ, "TRAINBOARD_BENCH_CODE": str(Path(anchor).resolve()), "PYTHONPATH": str(Path(anchor).resolve())}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        print(f"  anchor {anchor}: failed ({done.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_log_cost(n: int, repeats: int, anchor: str | None) -> dict[str, list[float] | None]:
    figures = measure_log_cost(n, repeats)
    before = measure_anchor(anchor, n, repeats) if anchor else None
    print(f"  Monitor.log cost on the training thread, {n} calls x {repeats} interleaved repeats (median of each):")
    print(f"  {'':<34}{'median µs':>11}{'p99 µs':>10}" + (f"{'anchor median':>15}{'anchor p99':>12}{'ratio':>8}" if before else ""))
    for label, key in (("Monitor.log, defaults (rules on)", "defaults"), ("Monitor.log, anomaly rules off", "rules off"),
                       ("MonitorCallback.on_log, defaults", "callback"), ("TensorBoard add_scalar x 3", "tensorboard")):
        fig = figures.get(key)
        if fig is None:
            print(f"  {label:<34}{'(not available here)':>21}")
            continue
        line = f"  {label:<34}{fig[0]:11.1f}{fig[1]:10.1f}"
        old = before.get(key) if before else None
        if old:
            line += f"{old[0]:15.1f}{old[1]:12.1f}{old[0] / fig[0]:7.1f}x"
        print(line)
    d, tb = figures["defaults"], figures.get("tensorboard")
    if d:
        print(f"  goal <= {LOG_GOAL_MEDIAN_US:.0f} µs median / <= {LOG_GOAL_P99_US:.0f} µs p99 at defaults: "
              f"{'met' if d[0] <= LOG_GOAL_MEDIAN_US and d[1] <= LOG_GOAL_P99_US else 'NOT met'}")
        if tb:
            print(f"  ratio Monitor.log defaults / TensorBoard x3: median {d[0] / tb[0]:.2f}, p99 {d[1] / tb[1]:.2f}")
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="log steps per measurement (default %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats of the log-cost figures (default %(default)s)")
    p.add_argument("--anchor", default=None, help="another checkout whose Monitor.log is timed beside this one")
    p.add_argument("--quick", action="store_true", help="a few hundred calls, once (correctness check of the report)")
    p.add_argument("--log-cost-json", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 300, 1
    if args.steps < 100:
        p.error(f"--steps must be at least 100; got {args.steps}")
    if args.log_cost_json:  # the anchor's half of a side-by-side run
        print(json.dumps(measure_log_cost(args.steps, args.repeats)))
        return 0
    print(f"Anomaly detection cost per log step (best of {REPEATS}; python {sys.version.split()[0]})")
    if not args.quick:
        bench_engine(args.steps)
        bench_monitor(min(args.steps, 5000))
        bench_detector(args.steps)
    bench_log_cost(min(args.steps, 20000), args.repeats, args.anchor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
