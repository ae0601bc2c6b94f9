"""Snapshots of issue 11: what the last good state costs.

1. The rolling last-good copy at its defaults (every 50 steps) on the demo training: the time it takes
   on the training thread (starting the copy, waiting before the next optimizer step) as a share of the
   training time, goal at most 1 %; also the background thread's copy time, and the wall time of the
   same training without the copy (an A/B that moves by several % on a shared machine: informational).
2. The time to write an anomaly snapshot with its last good state: live weights (``save_pretrained``
   from a CPU copy) plus ``last_good/`` hard-linked from a checkpoint, or written from the rolling copy;
   and the link alone for a large checkpoint.

Run: ``python bench/bench_snapshots.py [--quick] [--steps 300] [--checkpoint-mb 512]``.
``--quick`` (used by the test) trains 60 steps once (no A/B) and links a 32 MB checkpoint.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def train_demo(base: Path, steps: int, rolling: int | None) -> dict[str, Any]:
    """One demo training with MonitorCallback (rolling copy at ``rolling`` steps; None: the default)."""
    from transformers import Trainer

    from collectors import MonitorCallback
    from collectors.anomaly.plugin import AnomalyPlugin
    from collectors.demo import build_demo, training_arguments

    setup = build_demo(seed=0, n_train=2000, n_eval=32)
    anomaly: Any = True if rolling is None else {"snapshots": {"rolling_copy_steps": rolling}}
    cb = MonitorCallback(base_dir=base / "run", anomaly=anomaly, samples=None, spectral=None)
    args = training_arguments(str(base / "hf"), steps, eval_strategy="no", logging_steps=10)
    trainer = Trainer(model=setup.model, args=args, train_dataset=setup.train, processing_class=setup.tokenizer,
                      callbacks=[cb])
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    plugin = next(p for p in cb.monitor.plugins if isinstance(p, AnomalyPlugin))
    rc = plugin.rolling
    return {"wall_s": wall, "copies": rc.copies if rc else 0, "train_thread_s": rc.train_thread_s if rc else 0.0,
            "copy_s": rc.copy_s if rc else 0.0, "bytes": rc.bytes if rc else 0}


def bench_rolling(steps: int, ab: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        on = train_demo(Path(d) / "on", steps, None)
        off = train_demo(Path(d) / "off", steps, 0) if ab else None
    pct = 100.0 * on["train_thread_s"] / on["wall_s"]
    print(f"rolling copy (defaults, every 50 steps, {on['bytes'] / 2**20:.2f} MB of weights): {on['copies']} copies "
          f"in {steps} steps")
    print(f"  training thread: {on['train_thread_s'] * 1000:.1f} ms of {on['wall_s']:.1f} s = {pct:.3f} % of training "
          f"time (goal <= 1 %) -> {'OK' if pct <= 1.0 else 'OVER'}")
    print(f"  background copy thread: {on['copy_s'] * 1000:.1f} ms = {100 * on['copy_s'] / on['wall_s']:.3f} % "
          f"(CPU beside the training)")
    if off is not None:
        print(f"  A/B wall time: with copy {on['wall_s']:.1f} s, without {off['wall_s']:.1f} s "
              f"({100 * (on['wall_s'] / off['wall_s'] - 1):+.1f} %, noisy on a shared machine)")
    return {"pct": pct, **on, "wall_off_s": off["wall_s"] if off else None}


def bench_write(checkpoint_mb: int, reps: int) -> dict[str, Any]:
    import torch

    from collectors import snapshots as S
    from collectors.anomaly.plugin import cpu_state_dict, save_live_model
    from collectors.demo import build_demo
    from collectors.snapshots import last_good as lg

    setup = build_demo(seed=0, n_train=200, n_eval=8)
    model, tok = setup.model, setup.tokenizer
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        cp = root / "hf" / "checkpoint-100"
        cp.mkdir(parents=True)
        model.save_pretrained(cp)
        torch.save({"state": torch.zeros(checkpoint_mb * 2**18)}, cp / "optimizer.pt")  # checkpoint_mb MB
        (cp / "big.bin").write_bytes(os.urandom(checkpoint_mb * 2**20))
        rc = lg.RollingCopy(every=1, say=lambda _m: None)
        rc.start(model, 100)
        rc.before_optimizer_step()
        meta = S.build_metadata(timestamp="", reason="x", step=105, loss=1.0, accuracy=None, triggers=["x"],
                                loss_history=[], best_loss=None, best_loss_step=None)

        def one(kind: str) -> float:
            state = cpu_state_dict(model)
            if kind == "link":
                extra = lambda tmp: lg.link_checkpoint(cp, tmp / "last_good")  # noqa: E731
            else:
                lease = rc.lease(100)

                def extra(tmp: Path) -> dict:
                    try:
                        (tmp / "last_good").mkdir()
                        save_live_model(model, tok, tmp / "last_good", state_dict=lease.state)
                        return {}
                    finally:
                        lease.release()
            t0 = time.perf_counter()
            res = S.create_snapshot(root / "run", kind="anomaly", reason="loss_spike_1pct", metadata=meta, status={},
                                    write_model=lambda m: save_live_model(model, tok, m, state_dict=state),
                                    write_extra=extra)
            dt = time.perf_counter() - t0
            assert res.ok, res.error
            return dt

        for kind in ("link", "rolling"):
            times = [one(kind) for _ in range(reps)]
            out[kind] = statistics.median(times)
            label = (f"last_good/ hard-linked from a checkpoint of {checkpoint_mb * 2 + 1} MB" if kind == "link"
                     else "last_good/ written from the rolling copy")
            print(f"snapshot (live weights + {label}): median {out[kind] * 1000:.1f} ms over {reps}")
        t0 = time.perf_counter()
        lg.link_checkpoint(cp, root / "linked", with_optimizer=True)
        out["link_only"] = time.perf_counter() - t0
        print(f"  the link alone, optimizer included: {out['link_only'] * 1000:.2f} ms (no bytes copied)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run for the test (60 steps, no A/B, 32 MB checkpoint)")
    ap.add_argument("--steps", type=int, default=300, help="training steps of the rolling-copy bench (default 300)")
    ap.add_argument("--checkpoint-mb", type=int, default=512, help="size of the linked checkpoint's payload (default 512)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    steps, mb, reps = (60, 32, 3) if args.quick else (args.steps, args.checkpoint_mb, 5)
    bench_rolling(steps, ab=not args.quick)
    bench_write(mb, reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
