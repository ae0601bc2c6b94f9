"""Collector overhead: the demo training with and without MonitorCallback, and with a TensorBoard
SummaryWriter logging the same scalars, in interleaved runs inside one process.

Prints steps/s of each run, the median per configuration, and the ratios to the bare run
(goal: MonitorCallback ≥ 0.98 with defaults). Wall-clock ratios on a small shared machine move by ±10 %
between identical runs, so the script also times every hook call of each callback and prints that time
as a share of training time: the collector's exact cost, immune to that noise.
Run: ``python bench/bench_overhead.py [--steps 200 --rounds 6 --threads 1]``.

``--plain`` (issue 12) measures a plain PyTorch loop instead: the tiny GPT-2 (2 layers, 64 wide) trained on
CPU, logging loss, grad norm and learning rate at every step, with no monitor, with ``Monitor`` at defaults
(rules on) and with a TensorBoard ``SummaryWriter`` (``add_scalar`` × 3), in interleaved rounds (goal:
Monitor ≥ 0.99 of the bare steps/s, and ≥ TensorBoard's ratio in the same rounds). Every block trains one
model object from the same weights (after ``--pretrain`` steps) with a fresh optimizer, so each kind runs
the same computation in the same memory; two fresh models of one seed differ by ±5 % in speed here. It
also prints the training thread's own time inside each monitor per step, which that noise does not touch,
and the CPU per step of the threads beside the training (each monitor's writer threads). ``--quick`` (a
test runs it) does a few steps once: its figures check the report, not the speed. ``TRAINBOARD_BENCH_CODE=DIR``
imports ``collectors`` from another checkout (the "today" column).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.environ.get("TRAINBOARD_BENCH_CODE") or str(Path(__file__).resolve().parent.parent))
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


PLAIN_GOAL = 0.99


def plain_setup(seed: int = 0, pretrain: int = 0):
    """The tiny GPT-2, its optimizer and 16 batches of random tokens cycled through (no download, no
    tokenizer). Random tokens keep the loss noisy near log(256), as real data does: a fixed batch would
    make every step a new best loss and every step a best-model snapshot. ``pretrain`` steps are trained
    first (past the first steep fall of the loss, which no long training spends its time in)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=256, n_positions=64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [torch.randint(0, 256, (4, 32)) for _ in range(16)]
    for step in range(pretrain):
        batch = batches[step % len(batches)]
        model(batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, opt, batches


BACKGROUND_CPU: dict[str, list[float]] = {}
"""Per kind and block, the CPU seconds per step of the threads other than the training thread (the monitor's
writer and snapshot threads, TensorBoard's event writer): on this small machine they take the GIL and a
core from the training, and their CPU clock does not move with the rounds' wall-clock noise."""


def thread_cpu() -> dict[int, float]:
    """CPU seconds of every live thread but this one, by thread id (Linux and macOS; empty elsewhere)."""
    import threading

    out: dict[int, float] = {}
    me = threading.get_ident()
    for t in threading.enumerate():
        if t.ident is None or t.ident == me:
            continue
        try:
            out[t.ident] = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except (AttributeError, OSError, OverflowError):
            continue
    return out


IN_CALLS: dict[str, list[float]] = {}
"""Per kind, the training thread's time inside the monitor at each step (its log call, and Trainboard's
optimizer-step pre-hook, where the rules' verdicts are applied), in seconds."""


def plain_run(kind: str, steps: int, root: Path, i: int, setup: tuple | None = None) -> float:
    """Steps/s of one plain-loop block logging every step with ``kind`` (bare, trainboard, tensorboard).
    Also appends to ``IN_CALLS[kind]`` the time each step spent inside the monitor's calls.

    With ``setup`` (model, its starting weights, batches) every block trains the *same* model object
    from the same weights with a fresh optimizer: each kind then runs exactly the same computation in
    the same memory (two fresh models of the same seed differ by ±5 % in speed here, more than what is
    measured), and the same losses, so the same alerts and best-model snapshots, in every block."""
    import torch

    from collectors import Monitor

    if setup is None:
        model, opt, batches = plain_setup()
    else:
        model, start, batches = setup
        model.load_state_dict(start)  # copies into the same storages
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = tb = None
    in_calls = IN_CALLS.setdefault(kind, [])
    hook_time = [0.0]
    if kind == "trainboard":
        mon = Monitor(root / f"plain-tb-{i}").watch(model, optimizer=opt)
        mon.start()
        before = getattr(mon, "_before_weights_change", None)
        if before is not None:  # the hook looks the method up at each call: time it (older checkouts too)
            def timed_before() -> None:
                t = time.perf_counter()
                before()
                hook_time[0] += time.perf_counter() - t

            mon._before_weights_change = timed_before
    elif kind == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(root / f"plain-events-{i}"))
    cpu0 = thread_cpu()
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        batch = batches[step % len(batches)]
        loss = model(batch, labels=batch).loss
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()
        t_call = time.perf_counter()
        if mon is not None:
            mon.log(step, loss=value, grad_norm=grad_norm, learning_rate=1e-3)
        elif tb is not None:
            tb.add_scalar("train/loss", value, step)
            tb.add_scalar("train/grad_norm", grad_norm, step)
            tb.add_scalar("train/learning_rate", 1e-3, step)
        if mon is not None or tb is not None:
            in_calls.append(time.perf_counter() - t_call + hook_time[0])
            hook_time[0] = 0.0
    wall = time.perf_counter() - t0
    cpu1 = thread_cpu()  # before close: the final flush is not the steps' cost
    BACKGROUND_CPU.setdefault(kind, []).append(sum(v - cpu0.get(k, 0.0) for k, v in cpu1.items()) / steps)
    if mon is not None:
        mon.close()  # after the clock: what the training waited for is inside it, the final flush is not
    if tb is not None:
        tb.close()
    return steps / wall


def plain_main(a: argparse.Namespace) -> int:
    import copy

    kinds = ("bare", "trainboard", "tensorboard")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    model, _, batches = plain_setup(pretrain=a.pretrain)
    setup = (model, copy.deepcopy(model.state_dict()), batches)
    with tempfile.TemporaryDirectory() as tmp:
        for k in kinds:
            plain_run(k, 3, Path(tmp), -1, setup)  # warm-up of each kind's code
        IN_CALLS.clear()
        BACKGROUND_CPU.clear()
        for r in range(a.rounds):
            order = kinds if r % 2 == 0 else tuple(reversed(kinds))
            for k in order:
                rates[k].append(plain_run(k, a.steps, Path(tmp), r, setup))
                print(f"round {r}  {k:<12} {rates[k][-1]:7.2f} steps/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    # per-round ratios (each against the bare run of its own round) are steadier than ratios of medians
    per_round = {k: statistics.median(rates[k][r] / rates["bare"][r] for r in range(a.rounds)) for k in kinds[1:]}
    print(f"\nplain loop, logging every step (one model, the same {a.steps} steps from the same weights in "
          f"every block); median steps/s: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    tb_ratio, tr_ratio = per_round["tensorboard"], per_round["trainboard"]
    print(f"ratio trainboard/bare  = {tr_ratio:.3f}  (median of per-round ratios; goal >= {PLAIN_GOAL})")
    print(f"ratio tensorboard/bare = {tb_ratio:.3f}")
    print(f"trainboard >= tensorboard in the same rounds: {'yes' if tr_ratio >= tb_ratio else 'no'}; "
          f"goal >= {PLAIN_GOAL}: {'met' if tr_ratio >= PLAIN_GOAL else 'NOT met'}")
    # the training thread's own time in the monitor, per step, inside the loop (caches cold after the
    # step's compute: several times a warm microbenchmark's figure), immune to the rounds' ±5 % noise
    per = {k: sorted(IN_CALLS.get(k, [])) for k in ("trainboard", "tensorboard")}
    if all(per.values()):
        def q(v: list[float], f: float) -> float:
            return v[min(len(v) - 1, int(len(v) * f))] * 1e6
        tr, tb = per["trainboard"], per["tensorboard"]
        print(f"training thread inside the monitor per step (log call + pre-step hook), in the loop: "
              f"trainboard median {q(tr, 0.5):.0f} µs / p99 {q(tr, 0.99):.0f} µs; "
              f"tensorboard add_scalar x3 median {q(tb, 0.5):.0f} µs / p99 {q(tb, 0.99):.0f} µs "
              f"(ratio {q(tr, 0.5) / max(q(tb, 0.5), 1e-9):.2f})")
    bg = {k: statistics.median(v) * 1e6 for k, v in BACKGROUND_CPU.items() if v}
    if {"trainboard", "tensorboard"} <= set(bg):
        print(f"background threads' CPU per step (median of the blocks): trainboard {bg['trainboard']:.0f} µs, "
              f"tensorboard {bg['tensorboard']:.0f} µs, bare {bg.get('bare', 0.0):.0f} µs")
        if all(per.values()):  # steadier than the wall-clock ratio: what each monitor spends, on every thread
            both = {k: q(per[k], 0.5) + bg[k] for k in ("trainboard", "tensorboard")}
            print(f"the monitor's time per step, training thread (median) + background threads' CPU: trainboard "
                  f"{both['trainboard']:.0f} µs, tensorboard {both['tensorboard']:.0f} µs "
                  f"(ratio {both['trainboard'] / max(both['tensorboard'], 1e-9):.2f})")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps per run (default 200; with --plain 100 per block)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 6; with --plain 12)")
    p.add_argument("--pretrain", type=int, default=100,
                   help="--plain: steps trained before the blocks start (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s: steadiest timings)")
    p.add_argument("--plain", action="store_true", help="a plain PyTorch loop logging every step (issue 12)")
    p.add_argument("--quick", action="store_true", help="a few steps, one round (correctness check of the report)")
    a = p.parse_args()
    if a.steps is None:
        a.steps = 100 if a.plain else 200
    if a.rounds is None:
        a.rounds = 12 if a.plain else 6
    if a.quick:
        a.steps, a.rounds, a.pretrain = 5, 1, 2
    if a.plain:
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        torch.set_num_threads(a.threads)
        return plain_main(a)
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
